//! TLS to PostgreSQL with libpq's `sslmode` semantics, for every connection dlb makes (pooled
//! connections, monitoring connections, live checks).
//!
//! [`TlsSettings`] reads libpq's keys from a [`Dsn`]: `sslmode` (`disable`, `allow`, `prefer`
//! (the default), `require`, `verify-ca`, `verify-full`), `sslrootcert` (a PEM file, or
//! `system`), `sslcert`/`sslkey`, `sslcrl`, `sslsni`, `ssl_min_protocol_version`,
//! `ssl_max_protocol_version`, `sslcertmode` and the old `requiressl`. [`TlsSettings::connector`]
//! reads the files and builds a [`PgTls`], which opens connections:
//!
//! * `disable`: plain TCP only; `allow`: plain first, TLS when the server refuses the plain
//!   connection; `prefer`: TLS when the server offers it, plain when it does not or when the
//!   TLS connection fails; `require` and stronger: TLS or nothing.
//! * What is verified: nothing under `require` without `sslrootcert` (as libpq: encryption
//!   only); the certificate chain up to `sslrootcert` under `verify-ca`, and under `allow`,
//!   `prefer` and `require` when `sslrootcert` is given (as libpq does when it has a root
//!   file); the chain and the host name (or IP address) under `verify-full`.
//!
//! The PostgreSQL driver's own `SslMode` has only disable/prefer/require: `allow`, the
//! fallbacks and the verification are done here, with rustls (ring provider).
//!
//! Every TLS connection gives the driver its `tls-server-end-point` channel binding
//! ([`tls_server_end_point`]), so SCRAM runs as SCRAM-SHA-256-PLUS when the server offers it:
//! `channel_binding` (`disable`, `prefer` (the default), `require`) has libpq's meaning.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::config::SslMode as DriverMode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::dsn::Dsn;
use crate::error::{Error, Result};

mod connector;
mod stream;
mod verify;

pub(crate) use self::connector::*;
use self::stream::*;
use self::verify::*;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What a TLS connection verifies of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Nothing (encryption only): `require` without `sslrootcert`; `allow`/`prefer` without it.
    Nothing,
    /// The chain up to a trusted root, not the name: `verify-ca`, or a weaker mode with
    /// `sslrootcert`.
    Chain,
    /// The chain and the host name (or IP address): `verify-full`.
    Full,
}

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Roots {
    File(String),
    /// `sslrootcert=system`: the operating system's trusted roots.
    System,
}

/// The TLS keys of a DSN, checked (no file read yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    pub(crate) verify: Verify,
    pub(crate) roots: Option<Roots>,
    /// `sslcert` and `sslkey`.
    pub(crate) client_cert: Option<(String, String)>,
    pub(crate) crl: Option<String>,
    pub(crate) sni: bool,
    /// Allowed protocol versions: (TLS 1.2, TLS 1.3).
    pub(crate) versions: (bool, bool),
}

fn bad(field: &str, key: &str, message: impl std::fmt::Display) -> Error {
    Error::config(field, format!("`{key}`: {message}"))
}

impl TlsSettings {
    /// Reads the TLS keys of `dsn`. `field` names the configuration field in errors, which name
    /// the key and never quote a secret.
    ///
    /// # Errors
    /// [`Error::Config`] for a value libpq would refuse, or one dlb does not support.
    pub(crate) fn from_dsn(dsn: &Dsn, field: &str) -> Result<TlsSettings> {
        let nonempty = |k: &str| dsn.get(k).filter(|v| !v.is_empty());
        let roots = nonempty("sslrootcert").map(|v| match v {
            "system" => Roots::System,
            f => Roots::File(f.to_string()),
        });
        let mode = match nonempty("sslmode") {
            Some(m) => SslMode::parse(m).ok_or_else(|| {
                bad(
                    field,
                    "sslmode",
                    "must be disable, allow, prefer, require, verify-ca or verify-full",
                )
            })?,
            None => match nonempty("requiressl") {
                Some("1") => SslMode::Require,
                Some("0") | None => {
                    // libpq: sslrootcert=system makes verify-full the default.
                    if roots == Some(Roots::System) {
                        SslMode::VerifyFull
                    } else {
                        SslMode::Prefer
                    }
                }
                Some(_) => return Err(bad(field, "requiressl", "must be 0 or 1")),
            },
        };
        if roots == Some(Roots::System) && mode != SslMode::VerifyFull {
            return Err(bad(
                field,
                "sslmode",
                format!(
                    "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                    mode.as_str()
                ),
            ));
        }
        let verify = match mode {
            SslMode::VerifyFull => Verify::Full,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::Disable => Verify::Nothing,
            _ if roots.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };
        if verify != Verify::Nothing && roots.is_none() {
            return Err(bad(
                field,
                "sslrootcert",
                format!(
                    "sslmode={} needs the trusted roots: a PEM file of CA certificates, or `system` \
                     (dlb does not read ~/.postgresql/root.crt)",
                    mode.as_str()
                ),
            ));
        }
        let client_cert = match (nonempty("sslcert"), nonempty("sslkey")) {
            (Some(c), Some(k)) => Some((c.to_string(), k.to_string())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    field,
                    "sslkey",
                    "`sslcert` needs `sslkey` (dlb does not read ~/.postgresql/postgresql.key)",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    field,
                    "sslcert",
                    "`sslkey` needs `sslcert` (dlb does not read ~/.postgresql/postgresql.crt)",
                ));
            }
        };
        let client_cert = match nonempty("sslcertmode") {
            None | Some("allow") => client_cert,
            Some("disable") => None,
            Some("require") => {
                return Err(bad(
                    field,
                    "sslcertmode",
                    "`require` is not supported by dlb (use allow or disable)",
                ));
            }
            Some(_) => return Err(bad(field, "sslcertmode", "must be allow or disable")),
        };
        if nonempty("sslcrldir").is_some() {
            return Err(bad(
                field,
                "sslcrldir",
                "not supported by dlb (name one PEM file of CRLs with `sslcrl`)",
            ));
        }
        let sni = match nonempty("sslsni") {
            None | Some("1") => true,
            Some("0") => false,
            Some(_) => return Err(bad(field, "sslsni", "must be 0 or 1")),
        };
        let version = |key: &str, default: u8| -> Result<u8> {
            match nonempty(key) {
                None => Ok(default),
                Some("TLSv1") => Ok(0),
                Some("TLSv1.1") => Ok(1),
                Some("TLSv1.2") => Ok(2),
                Some("TLSv1.3") => Ok(3),
                Some(_) => Err(bad(
                    field,
                    key,
                    "must be TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3",
                )),
            }
        };
        let (min, max) = (
            version("ssl_min_protocol_version", 2)?,
            version("ssl_max_protocol_version", 3)?,
        );
        if max < min {
            return Err(bad(
                field,
                "ssl_max_protocol_version",
                "lower than ssl_min_protocol_version",
            ));
        }
        if max < 2 {
            return Err(bad(
                field,
                "ssl_max_protocol_version",
                "dlb speaks TLSv1.2 and TLSv1.3 only",
            ));
        }
        let crl = nonempty("sslcrl").map(String::from);
        if crl.is_some() && verify == Verify::Nothing && mode != SslMode::Disable {
            // libpq ignores it then (no verification, nothing to check against): refused, as
            // every protection dlb would not give.
            return Err(bad(
                field,
                "sslcrl",
                format!(
                    "revocation is only checked with certificate verification, and \
                     sslmode={} without sslrootcert verifies nothing (give sslrootcert)",
                    mode.as_str()
                ),
            ));
        }
        Ok(TlsSettings {
            mode,
            verify,
            roots,
            client_cert,
            crl,
            sni,
            versions: (min <= 2, max >= 3),
        })
    }

    /// Reads the files and builds the connector.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` and the key of a file that cannot be read or used.
    pub(crate) fn connector(&self, field: &str) -> Result<PgTls> {
        let config = if self.mode == SslMode::Disable {
            None
        } else {
            Some(Arc::new(self.client_config(field)?))
        };
        Ok(PgTls {
            mode: self.mode,
            config,
        })
    }

    fn client_config(&self, field: &str) -> Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
        if self.versions.1 {
            versions.push(&rustls::version::TLS13);
        }
        if self.versions.0 {
            versions.push(&rustls::version::TLS12);
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| bad(field, "ssl_min_protocol_version", e))?;
        let algs = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match self.verify {
            Verify::Nothing => Arc::new(NoVerification(algs)),
            Verify::Chain | Verify::Full => {
                let roots = Arc::new(self.root_store(field)?);
                let mut b = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
                if let Some(path) = &self.crl {
                    let crls = read_pem_all::<CertificateRevocationListDer<'static>>(path)
                        .map_err(|m| bad(field, "sslcrl", format!("{path}: {m}")))?;
                    if crls.is_empty() {
                        return Err(bad(field, "sslcrl", format!("{path}: no CRL in the file")));
                    }
                    // As libpq (OpenSSL's X509_V_FLAG_CRL_CHECK): the server's certificate
                    // only, a CRL of its issuer must be there, and one past its nextUpdate
                    // fails ("CRL has expired").
                    b = b
                        .with_crls(crls)
                        .only_check_end_entity_revocation()
                        .enforce_revocation_expiration();
                }
                let inner = b.build().map_err(|e| bad(field, "sslrootcert", e))?;
                Arc::new(WebPki {
                    inner,
                    check_name: self.verify == Verify::Full,
                })
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = read_pem_all::<CertificateDer<'static>>(cert)
                    .map_err(|m| bad(field, "sslcert", format!("{cert}: {m}")))?;
                if certs.is_empty() {
                    return Err(bad(
                        field,
                        "sslcert",
                        format!("{cert}: no certificate in the file"),
                    ));
                }
                let key_der =
                    read_key(key).map_err(|m| bad(field, "sslkey", format!("{key}: {m}")))?;
                builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| bad(field, "sslkey", format!("{key}: {e}")))?
            }
        };
        config.enable_sni = self.sni;
        // What libpq 17 sends; servers before 17 ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(config)
    }

    fn root_store(&self, field: &str) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            None => {}
            Some(Roots::File(path)) => {
                let certs = read_pem_all::<CertificateDer<'static>>(path)
                    .map_err(|m| bad(field, "sslrootcert", format!("{path}: {m}")))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(bad(
                        field,
                        "sslrootcert",
                        format!("{path}: no usable certificate in the file"),
                    ));
                }
            }
            Some(Roots::System) => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(bad(
                        field,
                        "sslrootcert",
                        "`system`: no trusted root certificate found on this system",
                    ));
                }
            }
        }
        Ok(store)
    }
}

/// Every PEM object of type `T` in the file at `path`.
fn read_pem_all<T: PemObject>(path: &str) -> std::result::Result<Vec<T>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read the file ({e})"))?;
    T::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<T>, _>>()
        .map_err(|e| format!("not a PEM file ({e})"))
}

/// The private key at `path`: unencrypted, and (as libpq) not readable by group or others.
fn read_key(path: &str) -> std::result::Result<PrivateKeyDer<'static>, String> {
    check_key_permissions(Path::new(path))?;
    let text = std::fs::read(path).map_err(|e| format!("cannot read the file ({e})"))?;
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(
            "encrypted private keys are not supported (dlb does not use sslpassword): \
             give an unencrypted key file"
                .into(),
        );
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("no private key in the file ({e})"))
}

/// libpq's rule: a key file owned by the current user has no group or other access (0600 or
/// less); one owned by root may be group-readable (0640 or less).
fn check_key_permissions(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.mode() & 0o777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let too_open =
        (meta.uid() == me && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o137 != 0);
    let ok = !too_open;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "has group or world access (mode {mode:o}); permissions must be u=rw (0600) or less \
             if owned by the current user, or u=rw,g=r (0640) or less if owned by root"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dsn: &str) -> Result<TlsSettings> {
        TlsSettings::from_dsn(&Dsn::parse(dsn, "primary").unwrap(), "primary")
    }

    #[test]
    fn modes_and_what_they_verify() {
        for (dsn, mode, verify) in [
            ("host=h", SslMode::Prefer, Verify::Nothing),
            ("host=h requiressl=1", SslMode::Require, Verify::Nothing),
            (
                "host=h sslmode=disable sslrootcert=/x",
                SslMode::Disable,
                Verify::Nothing,
            ),
            ("host=h sslmode=allow", SslMode::Allow, Verify::Nothing),
            ("host=h sslmode=require", SslMode::Require, Verify::Nothing),
            (
                "host=h sslmode=require sslrootcert=/x",
                SslMode::Require,
                Verify::Chain,
            ),
            ("host=h sslrootcert=/x", SslMode::Prefer, Verify::Chain),
            (
                "host=h sslmode=verify-ca sslrootcert=/x",
                SslMode::VerifyCa,
                Verify::Chain,
            ),
            (
                "host=h sslmode=verify-full sslrootcert=/x",
                SslMode::VerifyFull,
                Verify::Full,
            ),
            (
                "postgres://h/db?sslrootcert=system",
                SslMode::VerifyFull,
                Verify::Full,
            ),
            (
                "postgres://h/db?ssl=true",
                SslMode::Require,
                Verify::Nothing,
            ),
        ] {
            let s = settings(dsn).unwrap();
            assert_eq!((s.mode, s.verify), (mode, verify), "{dsn}");
        }
        let s = settings("host=h sslsni=0 ssl_min_protocol_version=TLSv1.3").unwrap();
        assert!(!s.sni);
        assert_eq!(s.versions, (false, true));
    }

    #[test]
    fn bad_settings_name_the_field_and_the_key() {
        for (dsn, key) in [
            ("host=h sslmode=verify", "sslmode"),
            ("host=h sslmode=verify-ca", "sslrootcert"),
            ("host=h sslmode=verify-full", "sslrootcert"),
            ("host=h sslmode=require sslrootcert=system", "sslmode"),
            ("host=h sslcert=/c", "sslkey"),
            ("host=h sslkey=/k", "sslcert"),
            ("host=h sslsni=yes", "sslsni"),
            ("host=h sslcrldir=/d", "sslcrldir"),
            ("host=h sslcrl=/c", "sslcrl"),
            ("host=h sslmode=require sslcrl=/c", "sslcrl"),
            (
                "host=h ssl_max_protocol_version=TLSv1.1",
                "ssl_max_protocol_version",
            ),
            ("host=h requiressl=2", "requiressl"),
        ] {
            let e = settings(dsn).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid configuration: primary: ")
                    && e.contains(&format!("`{key}`")),
                "{dsn}: {e}"
            );
        }
    }

    /// A DER element: `tag`, its length (long form past 127 bytes) and `content`.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n @ 0..=127 => out.push(n as u8),
            n => {
                let bytes = (n as u32).to_be_bytes();
                let skip = bytes.iter().take_while(|&&b| b == 0).count();
                out.push(0x80 | (4 - skip) as u8);
                out.extend_from_slice(&bytes[skip..]);
            }
        }
        out.extend_from_slice(content);
        out
    }

    /// A certificate-shaped DER with `oid` as its signature algorithm.
    fn cert_signed_with(oid: &[u8]) -> Vec<u8> {
        let tbs = der(0x30, &[0x5a; 300]);
        let algorithm = der(0x30, &[der(0x06, oid), vec![0x05, 0x00]].concat());
        let signature = der(0x03, &[0x00, 1, 2, 3]);
        der(0x30, &[tbs, algorithm, signature].concat())
    }

    #[test]
    fn tls_server_end_point_hashes_with_the_signature_hash() {
        use ring::digest::{SHA256, SHA384, SHA512, digest};
        let rsa = |n: u8| vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n];
        let ecdsa = |n: &[u8]| [&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04][..], n].concat();
        for (oid, want) in [
            (rsa(0x04), Some(&SHA256)), // MD5: SHA-256
            (rsa(0x05), Some(&SHA256)), // SHA-1: SHA-256
            (rsa(0x0b), Some(&SHA256)),
            (rsa(0x0c), Some(&SHA384)),
            (rsa(0x0d), Some(&SHA512)),
            (ecdsa(&[0x01]), Some(&SHA256)),
            (ecdsa(&[0x03, 0x02]), Some(&SHA256)),
            (ecdsa(&[0x03, 0x03]), Some(&SHA384)),
            (ecdsa(&[0x03, 0x04]), Some(&SHA512)),
            (rsa(0x0a), None),              // RSASSA-PSS
            (rsa(0x0e), None),              // SHA-224
            (vec![0x2b, 0x65, 0x70], None), // Ed25519
        ] {
            let cert = cert_signed_with(&oid);
            let got = tls_server_end_point(&cert);
            let want = want.map(|alg| digest(alg, &cert).as_ref().to_vec());
            assert_eq!(got, want, "{oid:02x?}");
        }
        // Not a certificate, or cut short: no binding (never a hash of something else).
        let good = cert_signed_with(&rsa(0x0b));
        for bad in [
            &[][..],
            &[0x30],
            &good[..good.len() / 2],
            &[0x04, 0x00],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
        ] {
            assert_eq!(tls_server_end_point(bad), None, "{bad:02x?}");
        }
    }

    #[test]
    fn unreadable_files_are_config_errors_at_construction() {
        let dir = std::env::temp_dir().join(format!("dlb-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let enc = dir.join("enc.key");
        std::fs::write(
            &enc,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&enc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let open = dir.join("open.key");
        std::fs::write(&open, "x").unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let (m, n, e, o) = (
            missing.display(),
            not_pem.display(),
            enc.display(),
            open.display(),
        );
        for (dsn, key, what) in [
            (
                format!("host=h sslrootcert={m}"),
                "sslrootcert",
                "cannot read",
            ),
            (
                format!("host=h sslrootcert={n}"),
                "sslrootcert",
                "no usable certificate",
            ),
            (
                format!("host=h sslcert={m} sslkey={m}"),
                "sslcert",
                "cannot read",
            ),
            (
                format!("host=h sslcert={n} sslkey={m}"),
                "sslcert",
                "no certificate",
            ),
            (
                format!("host=h sslmode=require sslrootcert={n} sslcrl={m}"),
                "sslrootcert",
                "no usable",
            ),
        ] {
            let err = settings(&dsn)
                .unwrap()
                .connector("primary")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("invalid configuration: primary: ")
                    && err.contains(&format!("`{key}`"))
                    && err.contains(what),
                "{dsn}: {err}"
            );
        }
        assert!(
            read_key(&e.to_string())
                .unwrap_err()
                .contains("encrypted private keys are not supported")
        );
        assert!(
            read_key(&o.to_string())
                .unwrap_err()
                .contains("group or world access")
        );
        // sslpassword is a secret: never in an error.
        let err = settings("host=h sslmode=verify-ca sslpassword=hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
