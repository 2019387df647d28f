//! Connection strings: the one place that reads, derives, renders and redacts a DSN.
//!
//! Both of libpq's syntaxes are read with libpq's grammar:
//!
//! * `key=value` pairs: values bare or single-quoted, `\` escaping the next character in both;
//!   keywords must be libpq's ([`KEYWORDS`]);
//! * `postgres://` / `postgresql://` URLs: `[user[:password]@][host[:port][,...]][/dbname]
//!   [?key=value&...]`, every component percent-decoded (query keys included), IPv6 hosts in
//!   brackets.
//!
//! A [`Dsn`] keeps the decoded parameters in order and the syntax, and renders back in that
//! syntax. A replica's DSN is the primary's with exactly its `host`/`hostaddr`/`port` replaced
//! and nothing left that could reach another server or only suits the primary
//! ([`Dsn::with_host`]). Redaction keeps only the values of known-safe keys
//! ([`SAFE_KEYS`]): every other value (passwords, `options`, keys dlb does not know) is
//! replaced by [`REDACTED`]. Parse errors say *where* the text is wrong (a keyword dlb knows,
//! or a byte position), never quote it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::error::{Error, Result};

/// Replacement text for secrets in redacted output.
pub(crate) const REDACTED: &str = "********";

/// libpq's connection keywords (PostgreSQL 16), the only ones accepted.
pub(crate) const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "require_auth",
];

/// Keys whose values may be shown in logs, status and errors. Every other value is hidden.
pub(crate) const SAFE_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "load_balance_hosts",
    "require_auth",
];

/// Keys a replica DSN leaves out: they name the server to reach (replaced by the replica's
/// own), or only make sense for the primary (`target_session_attrs=read-write` would make
/// every replica connection fail), or could lead elsewhere (`service`, `load_balance_hosts`).
pub(crate) const NOT_INHERITED: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "target_session_attrs",
    "load_balance_hosts",
    "service",
];

/// Which syntax a DSN was written in (it is rendered back in the same one).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Syntax {
    KeyValue,
    /// `postgres` or `postgresql`.
    Url(String),
}

/// A parsed connection string: its decoded parameters, in order, and its syntax.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Dsn {
    syntax: Syntax,
    /// Decoded `(keyword, value)` pairs. From a URL: `user`, `password`, `host`, `port`,
    /// `dbname`, then the query's parameters.
    params: Vec<(String, String)>,
}

/// A replica address from configuration: `host`, `host:port` or `[v6addr]:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host`, `host:port`, `[v6]:port` or a bare IPv6 address; `default_port` is used
    /// when none is given. A host is a DNS name (letters, digits, `-`, `_`, `.`) or an IP
    /// address: no Unix socket paths, no percent-encoding, nothing a connection string would
    /// read as syntax.
    ///
    /// # Errors
    /// A message saying what is wrong (the caller adds the field name); it does not quote the
    /// input.
    pub fn parse(s: &str, default_port: u16) -> std::result::Result<HostPort, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or("missing ']' after an IPv6 address")?;
            if h.parse::<Ipv6Addr>().is_err() {
                return Err("not an IPv6 address between '[' and ']'".into());
            }
            match after {
                "" => (h, None),
                p if p.starts_with(':') => (h, Some(&p[1..])),
                _ => return Err("expected ':port' after ']'".into()),
            }
        } else if s.matches(':').count() > 1 {
            if s.parse::<Ipv6Addr>().is_err() {
                return Err(
                    "several ':' but not an IPv6 address (write [v6addr]:port for a port)".into(),
                );
            }
            (s, None)
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };
        if host.is_empty() {
            return Err("empty host".into());
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(
                "a host is a DNS name (letters, digits, '-', '_', '.') or an IP address".into(),
            );
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("port must be 1-65535".into()),
                Ok(p) => p,
            },
        };
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Dsn {
    /// Parses a DSN in either syntax. `field` names the configuration field for errors.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` and where the text is wrong, never quoting it.
    pub(crate) fn parse(s: &str, field: &str) -> Result<Dsn> {
        // Leading blanks only: a trailing one may be an escaped part of the last value.
        let t = s.trim_start();
        if t.trim_end().is_empty() {
            return Err(Error::config(field, "empty connection string"));
        }
        let scheme_end = t.find("://").filter(|&i| {
            t[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        });
        let dsn = match scheme_end {
            Some(i) => {
                let scheme = &t[..i];
                if scheme != "postgres" && scheme != "postgresql" {
                    return Err(Error::config(
                        field,
                        "unsupported URL scheme (use postgres:// or postgresql://)",
                    ));
                }
                Dsn {
                    syntax: Syntax::Url(scheme.to_string()),
                    params: parse_url(t[i + 3..].trim_end())
                        .map_err(|m| Error::config(field, m))?,
                }
            }
            None => Dsn {
                syntax: Syntax::KeyValue,
                params: parse_key_value(t).map_err(|m| Error::config(field, m))?,
            },
        };
        dsn.check().map_err(|m| Error::config(field, m))?;
        Ok(dsn)
    }

    /// Checks keywords and the values dlb reads itself.
    fn check(&self) -> std::result::Result<(), String> {
        for (k, v) in &self.params {
            if !KEYWORDS.contains(&k.as_str()) {
                return Err(match self.syntax {
                    Syntax::KeyValue => "unknown keyword (not a libpq connection option)".into(),
                    Syntax::Url(_) => {
                        "unknown query parameter (not a libpq connection option)".into()
                    }
                });
            }
            if v.contains('\0') {
                return Err(format!("the value of `{k}` contains a NUL byte"));
            }
        }
        if let Some(p) = self.get("port") {
            for part in p.split(',') {
                if !part.is_empty() && !matches!(part.parse::<u16>(), Ok(1..)) {
                    return Err("`port` must be 1-65535".into());
                }
            }
        }
        Ok(())
    }

    /// The last value of `key` (libpq: a later setting wins).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter, decoded, in order.
    pub(crate) fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The hosts this DSN names (`hostaddr` wins over `host`, as in libpq), with their ports;
    /// `localhost:5432` when it names none.
    pub(crate) fn hosts(&self) -> Vec<HostPort> {
        let hosts: Vec<&str> = self
            .get("hostaddr")
            .filter(|h| !h.is_empty())
            .or_else(|| self.get("host").filter(|h| !h.is_empty()))
            .map_or_else(|| vec!["localhost"], |h| h.split(',').collect());
        let ports: Vec<&str> = self
            .get("port")
            .map_or_else(Vec::new, |p| p.split(',').collect());
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = match ports.len() {
                    0 => None,
                    1 => Some(ports[0]),
                    _ => ports.get(i).copied(),
                };
                HostPort {
                    host: if h.is_empty() { "localhost" } else { h }.to_string(),
                    port: port.and_then(|p| p.parse().ok()).unwrap_or(5432),
                }
            })
            .collect()
    }

    /// The first host and its port: where the driver connects (for a single-host DSN, the
    /// only one); the label in logs, metrics and status.
    pub(crate) fn host_port(&self) -> HostPort {
        self.hosts().into_iter().next().unwrap_or_else(|| HostPort {
            host: "localhost".into(),
            port: 5432,
        })
    }

    /// The same DSN pointing at `hp`, in the same syntax: `host`, `hostaddr` and `port`
    /// replaced wherever they were, and the [`NOT_INHERITED`] keys left out.
    pub(crate) fn with_host(&self, hp: &HostPort) -> Dsn {
        let mut params: Vec<(String, String)> = Vec::with_capacity(self.params.len() + 2);
        let mut placed = false;
        for (k, v) in &self.params {
            if NOT_INHERITED.contains(&k.as_str()) {
                if !placed && matches!(k.as_str(), "host" | "hostaddr" | "port") {
                    params.push(("host".into(), hp.host.clone()));
                    params.push(("port".into(), hp.port.to_string()));
                    placed = true;
                }
            } else {
                params.push((k.clone(), v.clone()));
            }
        }
        if !placed {
            params.insert(0, ("port".into(), hp.port.to_string()));
            params.insert(0, ("host".into(), hp.host.clone()));
        }
        Dsn {
            syntax: self.syntax.clone(),
            params,
        }
    }

    /// The DSN with every value that is not known to be safe replaced by `********`: for logs,
    /// metrics, status and errors.
    pub(crate) fn redacted(&self) -> String {
        self.render(true)
    }

    /// A driver configuration for this DSN's first host (TCP or Unix socket), with every
    /// setting the driver knows: tokio-postgres's, which the sync `postgres` driver's converts
    /// from (`postgres::Config::from`). TLS settings (`ssl*`) are not the driver's: see
    /// [`crate::server::tls`] where supported.
    ///
    /// Fails closed: a key that asks for a protection is enforced or refused here, never
    /// accepted and ignored.
    /// * `channel_binding` (`disable`, `prefer` (libpq's default, the driver's too), `require`)
    ///   is the driver's; dlb's TLS stream gives it `tls-server-end-point`, so `require`
    ///   accepts only SCRAM-SHA-256-PLUS, over TLS. `require` with `sslmode=disable` is
    ///   refused: it could never connect.
    /// * `require_auth`: the driver answers whichever authentication the server asks for, so
    ///   dlb cannot enforce a list of methods; the value is refused unless every outcome the
    ///   driver allows satisfies it ([`require_auth_satisfied`]).
    /// * `gssencmode`: `disable` and `prefer` (dlb never uses GSS encryption, as libpq without
    ///   GSS support); `require` is refused.
    /// * `requirepeer`: refused (dlb does not check a Unix socket server's user).
    ///
    /// # Errors
    /// A message naming the keyword whose value the driver cannot take, or that dlb cannot
    /// enforce.
    pub(crate) fn driver_config(&self) -> std::result::Result<tokio_postgres::Config, String> {
        self.refuse_unenforced()?;
        let mut c = tokio_postgres::Config::new();
        let hp = self.host_port();
        let host = self
            .get("host")
            .and_then(|h| h.split(',').next())
            .filter(|h| !h.is_empty());
        match self.get("hostaddr").and_then(|h| h.split(',').next()) {
            Some(addr) if !addr.is_empty() => {
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| "`hostaddr` must be an IP address".to_string())?;
                c.hostaddr(ip);
                // The name, for TLS verification, when one is given.
                c.host(host.unwrap_or(addr));
            }
            _ => {
                c.host(&hp.host);
            }
        }
        c.port(hp.port);
        let number = |k: &str, v: &str| -> std::result::Result<u64, String> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{k}` must be a number"))
        };
        for (k, v) in &self.params {
            match k.as_str() {
                "user" => {
                    c.user(v);
                }
                "password" => {
                    c.password(v.as_bytes());
                }
                "dbname" => {
                    c.dbname(v);
                }
                "options" => {
                    c.options(v);
                }
                "application_name" => {
                    c.application_name(v);
                }
                "connect_timeout" => {
                    let s = number(k, v)?;
                    if s > 0 {
                        c.connect_timeout(std::time::Duration::from_secs(s.min(86_400)));
                    }
                }
                "keepalives" => {
                    c.keepalives(number(k, v)? != 0);
                }
                "keepalives_idle" => {
                    c.keepalives_idle(std::time::Duration::from_secs(number(k, v)?.min(86_400)));
                }
                "keepalives_interval" => {
                    c.keepalives_interval(std::time::Duration::from_secs(
                        number(k, v)?.min(86_400),
                    ));
                }
                "keepalives_count" => {
                    c.keepalives_retries(u32::try_from(number(k, v)?).unwrap_or(u32::MAX));
                }
                "tcp_user_timeout" => {
                    c.tcp_user_timeout(std::time::Duration::from_millis(
                        number(k, v)?.min(86_400_000),
                    ));
                }
                "target_session_attrs" => {
                    c.target_session_attrs(match v.as_str() {
                        "any" => postgres::config::TargetSessionAttrs::Any,
                        "read-write" => postgres::config::TargetSessionAttrs::ReadWrite,
                        _ => {
                            return Err(
                                "`target_session_attrs` must be `any` or `read-write`".into()
                            );
                        }
                    });
                }
                "channel_binding" => {
                    c.channel_binding(match v.as_str() {
                        "disable" => postgres::config::ChannelBinding::Disable,
                        "prefer" => postgres::config::ChannelBinding::Prefer,
                        "require" => postgres::config::ChannelBinding::Require,
                        _ => {
                            return Err(
                                "`channel_binding` must be disable, prefer or require".into()
                            );
                        }
                    });
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The protection keys of [`Dsn::driver_config`] that dlb cannot enforce, refused (their
    /// last values, as libpq: a later setting wins; an empty value is no setting).
    fn refuse_unenforced(&self) -> std::result::Result<(), String> {
        let nonempty = |k: &str| self.get(k).filter(|v| !v.is_empty());
        let binding = nonempty("channel_binding") == Some("require");
        if binding && nonempty("sslmode") == Some("disable") {
            return Err(
                "`channel_binding`: `require` needs TLS, but sslmode=disable (the \
                        binding is to the TLS connection)"
                    .into(),
            );
        }
        if let Some(v) = nonempty("require_auth") {
            if !require_auth_satisfied(v, binding)? {
                return Err(format!(
                    "`require_auth`: dlb cannot enforce it (its PostgreSQL driver answers \
                     whichever authentication the server asks for){}; use \
                     channel_binding=require (only SCRAM-SHA-256 with channel binding, which \
                     satisfies require_auth=scram-sha-256) and sslmode=verify-full to \
                     authenticate the server",
                    if binding {
                        ", and with channel_binding=require the driver completes only \
                         SCRAM-SHA-256"
                    } else {
                        ""
                    }
                ));
            }
        }
        match nonempty("gssencmode") {
            // dlb never uses GSS encryption: `prefer` goes without, as libpq built without GSS.
            None | Some("disable" | "prefer") => {}
            Some("require") => {
                return Err(
                    "`gssencmode`: `require` is not supported: dlb does not use GSSAPI \
                            encryption (use sslmode=verify-full for an encrypted, \
                            authenticated connection)"
                        .into(),
                );
            }
            Some(_) => return Err("`gssencmode` must be disable, prefer or require".into()),
        }
        if nonempty("requirepeer").is_some() {
            return Err(
                "`requirepeer` is not supported: dlb does not check the operating \
                        system user of a server on a Unix socket (leave it out; over TCP, \
                        sslmode=verify-full authenticates the server)"
                    .into(),
            );
        }
        Ok(())
    }

    fn render(&self, redact: bool) -> String {
        let shown = |k: &str, v: &str| -> String {
            if redact && !SAFE_KEYS.contains(&k) {
                REDACTED.to_string()
            } else {
                v.to_string()
            }
        };
        match &self.syntax {
            Syntax::KeyValue => {
                let mut out = String::new();
                for (k, v) in &self.params {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push('=');
                    push_kv_value(&mut out, &shown(k, v));
                }
                out
            }
            Syntax::Url(scheme) => {
                let mut out = format!("{scheme}://");
                let mut query: Vec<(&str, String)> = Vec::new();
                let (mut user, mut password, mut hosts, mut ports, mut dbname) =
                    (None, None, None, None, None);
                for (k, v) in &self.params {
                    match k.as_str() {
                        "user" if user.is_none() => user = Some(v.as_str()),
                        "password" if password.is_none() => password = Some(v.as_str()),
                        "host" if hosts.is_none() => hosts = Some(v.as_str()),
                        "port" if ports.is_none() => ports = Some(v.as_str()),
                        "dbname" if dbname.is_none() => dbname = Some(v.as_str()),
                        _ => query.push((k, shown(k, v))),
                    }
                }
                if user.is_some() || password.is_some() {
                    out.push_str(&encode(user.unwrap_or_default(), USERINFO));
                    if let Some(p) = password {
                        out.push(':');
                        out.push_str(&encode(&shown("password", p), USERINFO));
                    }
                    out.push('@');
                }
                let hosts: Vec<&str> = hosts.map_or_else(Vec::new, |h| h.split(',').collect());
                let ports: Vec<&str> = ports.map_or_else(Vec::new, |p| p.split(',').collect());
                let n = hosts.len().max(ports.len());
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    let h = hosts.get(i).copied().unwrap_or_default();
                    if h.parse::<Ipv6Addr>().is_ok() {
                        out.push('[');
                        out.push_str(h);
                        out.push(']');
                    } else {
                        out.push_str(&encode(h, HOST));
                    }
                    let p = match ports.len() {
                        1 => ports[0],
                        _ => ports.get(i).copied().unwrap_or_default(),
                    };
                    if !p.is_empty() {
                        out.push(':');
                        out.push_str(&encode(p, HOST));
                    }
                }
                if let Some(db) = dbname {
                    out.push('/');
                    out.push_str(&encode(db, PATH));
                } else if !query.is_empty() {
                    out.push('/');
                }
                for (i, (k, v)) in query.iter().enumerate() {
                    out.push(if i == 0 { '?' } else { '&' });
                    out.push_str(&encode(k, QUERY));
                    out.push('=');
                    out.push_str(&encode(v, QUERY));
                }
                out
            }
        }
    }
}

impl fmt::Display for Dsn {
    /// The full DSN, password included: only for handing to a driver.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({:?})", self.redacted())
    }
}

/// Whether libpq's `require_auth` list `value` holds for every authentication dlb's driver
/// (tokio-postgres) can complete: it answers a server's request for no authentication
/// (`none`), a cleartext password (`password`), an MD5 hash (`md5`) and SCRAM-SHA-256
/// (`scram-sha-256`), and refuses GSSAPI, SSPI and Kerberos. With `channel_binding=require`
/// (`binding`) it completes only SCRAM-SHA-256-PLUS: it refuses a server that asks for no
/// authentication, a password, an MD5 hash or SCRAM without channel binding. So
/// `require_auth=scram-sha-256` (or a list with it, or negations without it) holds with
/// `channel_binding=require`, and only `!gss`/`!sspi` hold without.
///
/// # Errors
/// libpq's grammar: methods separated by commas, all negated (`!`) or none, each once.
pub(crate) fn require_auth_satisfied(
    value: &str,
    binding: bool,
) -> std::result::Result<bool, String> {
    const METHODS: &[&str] = &["password", "md5", "gss", "sspi", "scram-sha-256", "none"];
    let mut listed: Vec<&str> = Vec::new();
    let mut negated = None;
    for item in value.split(',') {
        let (neg, method) = match item.strip_prefix('!') {
            Some(m) => (true, m),
            None => (false, item),
        };
        if !METHODS.contains(&method) {
            return Err(
                "`require_auth`: each method must be password, md5, gss, sspi, \
                        scram-sha-256 or none, optionally negated with '!'"
                    .into(),
            );
        }
        if *negated.get_or_insert(neg) != neg {
            return Err(
                "`require_auth`: negated methods cannot be mixed with non-negated ones".into(),
            );
        }
        if listed.contains(&method) {
            return Err("`require_auth`: a method is given more than once".into());
        }
        listed.push(method);
    }
    let possible: &[&str] = if binding {
        &["scram-sha-256"]
    } else {
        &["none", "password", "md5", "scram-sha-256"]
    };
    let allowed = |m: &&str| listed.contains(m) != negated.unwrap_or(false);
    Ok(possible.iter().all(allowed))
}

/// `s`, a connection string in either syntax, with every value that is not known to be safe
/// replaced by `********`: the text of `lb_dsn_redact()`. Text that does not parse as a DSN
/// gives [`REDACTED`] alone: a password may stand anywhere in it, so none of it is echoed.
pub(crate) fn redact_dsn(s: &str) -> String {
    match Dsn::parse(s, "dsn") {
        Ok(dsn) => dsn.redacted(),
        Err(_) => REDACTED.to_string(),
    }
}

fn push_kv_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if plain {
        out.push_str(v);
        return;
    }
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
}

/// libpq's `keyword = value` syntax: values are bare words or single-quoted strings, with `\`
/// escaping the next character in both. Errors give byte positions, never the text.
fn parse_key_value(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            it.next();
        }
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some(&(_, c)) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        skip_ws(&mut it);
        let known = KEYWORDS.contains(&key.as_str());
        if it.next().map(|(_, c)| c) != Some('=') {
            return Err(if known {
                format!("expected '=' after `{key}`")
            } else {
                format!(
                    "expected keyword=value at byte {start} (a value with spaces must be quoted: 'a b')"
                )
            });
        }
        if key.is_empty() {
            return Err(format!("missing keyword before '=' at byte {start}"));
        }
        if !known {
            return Err(format!(
                "unknown keyword at byte {start} (not a libpq connection option)"
            ));
        }
        skip_ws(&mut it);
        let mut value = String::new();
        if it.peek().is_some_and(|&(_, c)| c == '\'') {
            it.next();
            loop {
                match it.next().map(|(_, c)| c) {
                    None => return Err(format!("unterminated quoted value of `{key}`")),
                    Some('\\') => match it.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("unterminated quoted value of `{key}`")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
            if it.peek().is_some_and(|(_, c)| !c.is_whitespace()) {
                return Err(format!(
                    "expected a space after the quoted value of `{key}`"
                ));
            }
        } else {
            while let Some(&(_, c)) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some((_, n)) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
    if pairs.is_empty() {
        return Err("empty connection string".into());
    }
    Ok(pairs)
}

/// The part of a URL after `scheme://`, as parameters. Errors name the component.
fn parse_url(rest: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let (rest, _fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    let (userinfo, hostspec) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if userinfo.is_none() && path.is_some_and(|p| p.contains('@')) {
        return Err(
            "'@' after the host: a '/' in the user name or password must be written %2F".into(),
        );
    }
    let mut params = Vec::new();
    if let Some(u) = userinfo {
        let (user, password) = match u.split_once(':') {
            Some((user, pw)) => (user, Some(pw)),
            None => (u, None),
        };
        if !user.is_empty() {
            params.push(("user".into(), decode(user, "the user name")?));
        }
        if let Some(pw) = password {
            params.push(("password".into(), decode(pw, "the password")?));
        }
    }
    if !hostspec.is_empty() {
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for (i, spec) in hostspec.split(',').enumerate() {
            let (h, p) = if let Some(v6) = spec.strip_prefix('[') {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("host {}: missing ']' after an IPv6 address", i + 1))?;
                let p = match after {
                    "" => "",
                    p if p.starts_with(':') => &p[1..],
                    _ => return Err(format!("host {}: expected ':port' after ']'", i + 1)),
                };
                (h.to_string(), p)
            } else {
                let (h, p) = spec.rsplit_once(':').unwrap_or((spec, ""));
                (decode(h, "a host")?, p)
            };
            hosts.push(h);
            ports.push(decode(p, "a port")?);
        }
        params.push(("host".into(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            params.push(("port".into(), ports.join(",")));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.push(("dbname".into(), decode(db, "the database name")?));
    }
    for (i, pair) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("query parameter {}: expected key=value", i + 1))?;
        let k = decode(k, "a query parameter name")?;
        let v = decode(v, "a query parameter value")?;
        // libpq's compatibility spelling.
        if k == "ssl" && v == "true" {
            params.push(("sslmode".into(), "require".into()));
        } else {
            params.push((k, v));
        }
    }
    Ok(params)
}

/// Percent-decodes one URL component (`what` names it in errors).
fn decode(s: &str, what: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {what}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 once decoded"))
}

/// Characters left as they are in each URL component (RFC 3986 unreserved, plus what the
/// component allows).
const USERINFO: &str = "-._~!$&'()*+;=";
const HOST: &str = "-._~";
// `@`, `/`, `?` and `#` are always encoded: libpq looks for `@` and `/` across the whole URL.
const PATH: &str = "-._~!$&'()*+,;=:";
const QUERY: &str = "-._~!$'()*+,;:";

fn encode(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_replaces_host_and_port() {
        let d = Dsn::parse(
            "host=10.0.0.1 port=5432 user=app password='s3 cr\\'t' dbname=app",
            "primary",
        )
        .unwrap();
        assert_eq!(d.host_port().to_string(), "10.0.0.1:5432");
        let r = d.with_host(&HostPort::parse("127.0.0.1:5433", 5432).unwrap());
        assert_eq!(
            r.to_string(),
            "host=127.0.0.1 port=5433 user=app password='s3 cr\\'t' dbname=app"
        );
        assert_eq!(
            r.redacted(),
            "host=127.0.0.1 port=5433 user=app password=******** dbname=app"
        );
        let cfg: postgres::Config = r.to_string().parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"s3 cr't"[..]));
    }

    #[test]
    fn key_value_without_host_gets_one() {
        let d = Dsn::parse("user=app dbname=app", "primary").unwrap();
        assert_eq!(d.host_port().to_string(), "localhost:5432");
        let r = d.with_host(&HostPort::parse("db2", 5432).unwrap());
        assert_eq!(r.to_string(), "host=db2 port=5432 user=app dbname=app");
    }

    #[test]
    fn url_replaces_host_and_port() {
        let d = Dsn::parse(
            "postgres://app:pa%40ss@db1:5432/app?sslmode=disable&password=x",
            "primary",
        )
        .unwrap();
        assert_eq!(d.host_port().to_string(), "db1:5432");
        let r = d.with_host(&HostPort::parse("[::1]:5434", 5432).unwrap());
        assert_eq!(
            r.to_string(),
            "postgres://app:pa%40ss@[::1]:5434/app?sslmode=disable&password=x"
        );
        assert_eq!(
            r.redacted(),
            "postgres://app:********@[::1]:5434/app?sslmode=disable&password=********"
        );
        let plain = Dsn::parse("postgresql://db1", "primary").unwrap();
        assert_eq!(
            plain
                .with_host(&HostPort::parse("db2:6000", 1).unwrap())
                .to_string(),
            "postgresql://db2:6000"
        );
    }

    #[test]
    fn bad_dsns_name_the_field() {
        for bad in [
            "",
            "   ",
            "host",
            "host=a port",
            "mysql://x",
            "port=notanumber",
            "host='unterminated",
            "=x",
        ] {
            let e = Dsn::parse(bad, "primary").unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("invalid configuration: primary: "),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn secrets_never_in_bad_dsn_errors() {
        let e = Dsn::parse("host=a password=hunter2 port=x", "primary").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn redact_dsn_hides_passwords_in_both_syntaxes() {
        for (dsn, want) in [
            (
                "host=db1 port=5433 user=app password='s3 cr\\'t' dbname=app",
                "host=db1 port=5433 user=app password=******** dbname=app",
            ),
            ("  host=db1 user=app ", "host=db1 user=app"),
            (
                "postgres://app:hunter2@[::1]:5434/app?sslmode=disable&password=hunter2",
                "postgres://app:********@[::1]:5434/app?sslmode=disable&password=********",
            ),
            (
                "postgresql://app@db1,db2:5433/app",
                "postgresql://app@db1,db2:5433/app",
            ),
            ("postgres://db1", "postgres://db1"),
        ] {
            assert_eq!(redact_dsn(dsn), want, "{dsn:?}");
        }
    }

    #[test]
    fn redact_dsn_echoes_nothing_it_cannot_parse() {
        for bad in [
            "",
            "hunter2",
            "host=a password=hunter2 port=x",
            "host=a password='hunter2",
            "password=hunter2 bogus_option=1",
            "mysql://app:hunter2@db1/app",
            "host=a password=hunter2 port",
        ] {
            assert_eq!(redact_dsn(bad), REDACTED, "{bad:?}");
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            HostPort::parse("a:1", 9).unwrap(),
            HostPort {
                host: "a".into(),
                port: 1
            }
        );
        assert_eq!(HostPort::parse("a", 9).unwrap().port, 9);
        assert_eq!(HostPort::parse("::1", 9).unwrap().host, "::1");
        assert_eq!(
            HostPort::parse("[::1]:7", 9).unwrap().to_string(),
            "[::1]:7"
        );
        for bad in ["", "a:0", "a:70000", "a:x", "[::1", "[::1]x", ":5", "a b:1"] {
            assert!(HostPort::parse(bad, 9).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replica_dsns_drop_primary_only_settings() {
        let hp = HostPort::parse("r1:5433", 5432).unwrap();
        let kv = Dsn::parse(
            "host=p port=5432 target_session_attrs=read-write dbname=app",
            "primary",
        )
        .unwrap();
        assert_eq!(
            kv.with_host(&hp).to_string(),
            "host=r1 port=5433 dbname=app"
        );
        for (url, want) in [
            (
                "postgres://u@p:5432/app?target_session_attrs=read-write&sslmode=require",
                "postgres://u@r1:5433/app?sslmode=require",
            ),
            (
                "postgres://u@p/app?target_session_attrs=read-write",
                "postgres://u@r1:5433/app",
            ),
            ("postgres://u@p/app", "postgres://u@r1:5433/app"),
        ] {
            let d = Dsn::parse(url, "primary").unwrap();
            assert_eq!(d.with_host(&hp).to_string(), want, "{url}");
        }
    }

    /// The defects found by fuzzing, each as a DSN with the secret `SEC`: it must appear in no
    /// error, no redacted form, and replica DSNs must reach the replica only.
    #[test]
    fn secrets_never_leak_from_bad_or_odd_dsns() {
        for dsn in [
            "postgres://app:SEC/RET@h/app",
            "postgres://app@h/app?pass%77ord=SECRET",
            "host=h options='-c x=postgres://u:SECRET@x' password=SECRET",
            "host=h password=my SECRET",
            "host=h password=SECRET bogus=1",
            "host=h sslpassword=SECRET",
            "postgres://u:SECRET@h/db?options=SECRET",
            "host=h password='SECRET",
        ] {
            match Dsn::parse(dsn, "primary") {
                Ok(d) => {
                    assert!(!d.redacted().contains("SEC"), "{dsn}: {}", d.redacted());
                    assert!(!format!("{d:?}").contains("SEC"), "{dsn}");
                }
                Err(e) => assert!(!e.to_string().contains("SEC"), "{dsn}: {e}"),
            }
            assert!(!redact_dsn(dsn).contains("SEC"), "{dsn}");
        }
        let e = Dsn::parse("postgres://app:SEC/RET@h/app", "primary").unwrap_err();
        assert!(e.to_string().contains("%2F"), "{e}");
    }

    #[test]
    fn replica_dsns_reach_exactly_the_replica() {
        let replica = HostPort::parse("10.1.2.3:6432", 5432).unwrap();
        for primary in [
            "host=db1 hostaddr=10.0.0.1 port=5432 dbname=app sslmode=require",
            "postgres://u@db1:5432/app?hostaddr=10.0.0.1&sslmode=require",
            "postgres://u@db1/app?host=db9&port=7777",
            "postgres://u@%64b1:5432/app",
            "dbname=app port=5432 service=x",
        ] {
            let d = Dsn::parse(primary, "primary").unwrap();
            let r = d.with_host(&replica);
            assert_eq!(r.hosts(), vec![replica.clone()], "{primary} -> {r}");
            for k in ["hostaddr", "service"] {
                assert!(r.get(k).is_none(), "{primary} -> {r}");
            }
            // What a driver makes of the rendered text: the replica, and only it.
            let text = r.to_string();
            let driver = r.driver_config().unwrap();
            assert_eq!(driver.get_ports(), [6432], "{text}");
            assert!(
                matches!(driver.get_hosts(), [postgres::config::Host::Tcp(h)] if h == "10.1.2.3"),
                "{text}"
            );
            if !text.contains("sslmode") {
                let parsed: postgres::Config = text.parse().unwrap();
                assert_eq!(parsed.get_ports(), [6432], "{text}");
            }
            assert!(text.contains("10.1.2.3") && text.contains("6432"), "{text}");
        }
    }

    #[test]
    fn urls_are_percent_decoded_everywhere() {
        let d = Dsn::parse(
            "postgres://us%65r:p%40ss@db%2Dx:5433/my%20db?application_name=a%26b&sslmode=verify-full",
            "primary",
        )
        .unwrap();
        assert_eq!(d.get("user"), Some("user"));
        assert_eq!(d.get("password"), Some("p@ss"));
        assert_eq!(d.get("dbname"), Some("my db"));
        assert_eq!(d.get("application_name"), Some("a&b"));
        assert_eq!(d.host_port().to_string(), "db-x:5433");
        // Rendered back in the same syntax, every key kept.
        let again = Dsn::parse(&d.to_string(), "primary").unwrap();
        assert_eq!(again, d);
        assert_eq!(
            d.redacted(),
            "postgres://user:********@db-x:5433/my%20db?application_name=a%26b&sslmode=verify-full"
        );
        assert!(Dsn::parse("postgres://h/db?x%zz=1", "primary").is_err());
        assert!(Dsn::parse("host=h bogus=1", "primary").is_err());
        assert!(Dsn::parse("host=h port=0", "primary").is_err());
    }

    /// Fail closed: each protection key dlb cannot enforce is a configuration error naming
    /// it; what is enforced, or trivially holds, is accepted.
    #[test]
    fn protection_keys_are_enforced_or_refused() {
        let driver = |extra: &str| {
            Dsn::parse(&format!("host=h {extra}"), "primary")
                .unwrap()
                .driver_config()
        };
        for (extra, key) in [
            ("require_auth=scram-sha-256", "require_auth"),
            ("require_auth=password", "require_auth"),
            ("require_auth=none", "require_auth"),
            ("require_auth=md5,scram-sha-256", "require_auth"),
            ("require_auth=!password", "require_auth"),
            ("require_auth=!none,!md5,!password", "require_auth"),
            (
                "require_auth=password channel_binding=require",
                "require_auth",
            ),
            (
                "require_auth=!scram-sha-256 channel_binding=require",
                "require_auth",
            ),
            (
                "require_auth=scram-sha-256 channel_binding=prefer",
                "require_auth",
            ),
            ("require_auth=bogus channel_binding=require", "require_auth"),
            (
                "require_auth=md5,!gss channel_binding=require",
                "require_auth",
            ),
            (
                "require_auth=md5,md5 channel_binding=require",
                "require_auth",
            ),
            ("require_auth=, channel_binding=require", "require_auth"),
            ("gssencmode=require", "gssencmode"),
            ("gssencmode=yes", "gssencmode"),
            ("requirepeer=postgres", "requirepeer"),
            ("sslmode=disable channel_binding=require", "channel_binding"),
            ("channel_binding=maybe", "channel_binding"),
        ] {
            let e = driver(extra).unwrap_err();
            assert!(e.starts_with(&format!("`{key}`")), "{extra}: {e}");
        }
        let e = driver("require_auth=scram-sha-256").unwrap_err();
        assert!(
            e.contains("cannot enforce") && e.contains("channel_binding=require"),
            "{e}"
        );
        for extra in [
            "require_auth=scram-sha-256 channel_binding=require",
            "require_auth=scram-sha-256,password channel_binding=require",
            "require_auth=!password,!md5,!none channel_binding=require",
            "require_auth=!gss,!sspi",
            "require_auth=!sspi",
            "require_auth=",
            "gssencmode=disable gssencmode=prefer",
            "gssencmode=require gssencmode=disable",
            "requirepeer=",
            "channel_binding=require",
            "channel_binding=require sslmode=prefer",
            "channel_binding=require sslmode=disable sslmode=require",
            "channel_binding=disable sslmode=disable",
        ] {
            assert!(driver(extra).is_ok(), "{extra}: {:?}", driver(extra).err());
        }
    }

    #[test]
    fn replica_hosts_are_only_addresses() {
        for bad in [
            "r1?options=x",
            "%2Ftmp",
            "/tmp",
            "a:b:c",
            "h=1",
            "h'x",
            "postgres://u:SEC@h/db",
        ] {
            let e = HostPort::parse(bad, 5432).unwrap_err();
            assert!(!e.contains("SEC") && !e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(HostPort::parse("fe80::1", 1).unwrap().host, "fe80::1");
        assert_eq!(HostPort::parse("db_2.internal", 1).unwrap().port, 1);
    }
}
