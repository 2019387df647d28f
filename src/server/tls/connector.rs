//! [`PgTls`]: opens every connection dlb makes with the DSN's `sslmode`, with libpq's
//! `allow`/`prefer` fallbacks, and describes TLS failures.

use super::*;
use crate::redact::bounded;

/// A connection failure, with a message that names the cause (no secrets: the driver's
/// messages do not quote passwords, and certificate errors name hosts only).
#[derive(Debug)]
pub(crate) struct ConnectError(pub(crate) String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

/// Opens PostgreSQL connections with one DSN's TLS settings. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PgTls {
    pub(super) mode: SslMode,
    /// `None` for `disable`.
    pub(super) config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgTls {
    /// Connects with `config` (whose own `sslmode` is ignored) the way libpq's `sslmode` says.
    ///
    /// # Errors
    /// The failure, naming the TLS cause when there is one.
    pub(crate) fn connect(
        &self,
        config: &postgres::Config,
    ) -> std::result::Result<postgres::Client, ConnectError> {
        // libpq does not use TLS over Unix sockets, whatever sslmode says.
        let unix = matches!(
            config.get_hosts().first(),
            Some(postgres::config::Host::Unix(_))
        );
        self.connect_with(unix, |mode, tls| {
            let mut c = config.clone();
            c.ssl_mode(mode);
            match tls {
                Some(tls) => c.connect(tls),
                None => c.connect(postgres::NoTls),
            }
            .map_err(Attempt::Driver)
        })
    }

    /// The `sslmode` logic (which attempts, in which order, with which fallback) around
    /// `attempt`, which makes one connection attempt in the driver's mode, through `tls` when
    /// given. `unix`: the host is a Unix socket (no TLS, as libpq).
    ///
    /// # Errors
    /// The failure, naming the TLS cause when there is one.
    pub(crate) fn connect_with<C>(
        &self,
        unix: bool,
        mut attempt: impl FnMut(DriverMode, Option<MakeRustls>) -> std::result::Result<C, Attempt>,
    ) -> std::result::Result<C, ConnectError> {
        let mut attempt = |mode, tls: Option<&Arc<ClientConfig>>| {
            attempt(mode, tls.map(|c| MakeRustls { config: c.clone() })).map_err(|e| match e {
                Attempt::Driver(e) => {
                    let retry = e.as_db_error().is_some() || tls_cause(&e).is_some();
                    (ConnectError(bounded(&self.describe(&e))), retry)
                }
                Attempt::Failed(m) => (ConnectError(m), false),
            })
        };
        let tls = match (&self.config, unix) {
            (Some(c), false) => c,
            _ => return attempt(DriverMode::Disable, None).map_err(|e| e.0),
        };
        match self.mode {
            SslMode::Disable => attempt(DriverMode::Disable, None).map_err(|e| e.0),
            SslMode::Allow => match attempt(DriverMode::Disable, None) {
                // The server answered with an error (e.g. pg_hba.conf wants hostssl): again
                // over TLS, as libpq.
                Err((plain, true)) => attempt(DriverMode::Require, Some(tls)).map_err(|(e, _)| {
                    ConnectError(bounded(&format!("{e} (and without TLS: {plain})")))
                }),
                other => other.map_err(|e| e.0),
            },
            SslMode::Prefer => match attempt(DriverMode::Prefer, Some(tls)) {
                // TLS failed, or the server refused the TLS connection: again without, as
                // libpq (prefer promises no encryption).
                Err((over_tls, true)) => attempt(DriverMode::Disable, None).map_err(|(e, _)| {
                    ConnectError(bounded(&format!("{e} (and over TLS: {over_tls})")))
                }),
                other => other.map_err(|e| e.0),
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                attempt(DriverMode::Require, Some(tls)).map_err(|e| e.0)
            }
        }
    }

    /// The driver's error, with TLS causes in libpq's words.
    fn describe(&self, e: &postgres::Error) -> String {
        use std::error::Error as _;
        if let Some(t) = tls_cause(e) {
            return format!("TLS: {t} (sslmode={})", self.mode.as_str());
        }
        if let Some(src) = e.source() {
            if src.to_string() == "server does not support TLS" {
                return format!(
                    "server does not support SSL, but sslmode={}",
                    self.mode.as_str()
                );
            }
        }
        match (e.as_db_error(), e.source()) {
            // The driver's text is only "db error": the server's own words, as libpq shows them.
            (Some(db), _) => format!("{}: {}", db.severity(), db.message()),
            // The driver's kind ("authentication error") and its cause ("server did not use
            // channel binding").
            (None, Some(src)) => format!("{e}: {src}"),
            (None, None) => e.to_string(),
        }
    }
}

/// Our own TLS failure inside a driver error, if that is what it is.
pub(super) fn tls_cause(e: &postgres::Error) -> Option<&TlsError> {
    use std::error::Error as _;
    e.source().and_then(|s| s.downcast_ref::<TlsError>())
}

/// Why one connection attempt of [`PgTls::connect_with`] failed.
pub(crate) enum Attempt {
    /// The driver's error: another attempt in the other mode may follow (see `sslmode`).
    Driver(postgres::Error),
    /// Given up for another reason (a deadline): no other attempt.
    Failed(String),
}

/// A TLS failure, in libpq's words where it has some.
#[derive(Debug)]
pub(crate) struct TlsError(pub(super) String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Describes a rustls error as libpq (OpenSSL) would.
pub(super) fn describe_rustls(e: &rustls::Error, host: &str) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "certificate verify failed: unknown issuer".into(),
            C::Expired | C::ExpiredContext { .. } => {
                "certificate verify failed: certificate has expired".into()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "certificate verify failed: certificate is not yet valid".into()
            }
            C::Revoked => "certificate verify failed: certificate revoked".into(),
            C::UnknownRevocationStatus => {
                "certificate verify failed: unable to get certificate CRL".into()
            }
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                "certificate verify failed: CRL has expired".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("server certificate does not match host name \"{host}\"")
            }
            C::BadSignature => "certificate verify failed: certificate signature failure".into(),
            other => format!("certificate verify failed: {other:?}"),
        },
        rustls::Error::AlertReceived(a) => format!("the server sent a TLS alert: {a:?}"),
        other => other.to_string(),
    }
}
