//! Connection strings: the one place that reads, derives, renders and redacts a DSN.
//!
//! Both of libpq's syntaxes are read with libpq's grammar:
//!
//! * `key=value` pairs: values bare or single-quoted, `\` escaping the next character in both;
//!   keywords must be libpq's ([`KEYWORDS`]);
//! * `postgres://` / `postgresql://` URLs: `[user[:password]@][host[:port][,...]][/dbname]
//!   [?key=value&...]`, every component percent-decoded (query keys included), IPv6 hosts in
//!   brackets. As in libpq (not RFC 3986), the credentials run to the first `@` before any
//!   `/`, so a raw `?` or `#` in a password belongs to it, and `#` starts no fragment; a raw
//!   `@` left in a host is refused.
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

mod driver;
mod parse;

use self::parse::*;

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
        dsn.validate_params().map_err(|m| Error::config(field, m))?;
        Ok(dsn)
    }

    /// Checks keywords and the values dlb reads itself.
    fn validate_params(&self) -> std::result::Result<(), String> {
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
                let mut ports: Vec<&str> = ports.map_or_else(Vec::new, |p| p.split(',').collect());
                // A port per host, or one for a single host, goes with its host; any other
                // list (one port for several hosts, counts that differ: a `%2C` decoded in a
                // host or port, `?host=a,b&port=5`) goes as it is into the query, where it
                // means the same, before any later `port`.
                if ports.len() != hosts.len() && (ports.len() > 1 || hosts.len() > 1) {
                    query.insert(0, ("port", ports.join(",")));
                    ports.clear();
                }
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

/// `s`, a connection string in either syntax, with every value that is not known to be safe
/// replaced by `********`: the text of `lb_dsn_redact()`. Text that does not parse as a DSN
/// gives [`REDACTED`] alone: a password may stand anywhere in it, so none of it is echoed.
pub(crate) fn redact_dsn(s: &str) -> String {
    match Dsn::parse(s, "dsn") {
        Ok(dsn) => dsn.redacted(),
        Err(_) => REDACTED.to_string(),
    }
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

    /// libpq's URL grammar (`conninfo_uri_parse_options`): the credentials run to the first
    /// `@` before any `/`, past a raw `?` or `#`; `#` starts no fragment. dlb used to cut the
    /// query and the fragment off first: the rest of such a password became the host, the
    /// port or a shown query parameter, and dlb monitored another server than libpq reaches.
    #[test]
    fn url_passwords_with_query_or_fragment_characters_read_as_libpq() {
        for (url, password, host, db) in [
            (
                "postgres://app:5433?application_name=SECRET@db1:6000/app",
                "5433?application_name=SECRET",
                "db1:6000",
                Some("app"),
            ),
            (
                "postgres://app:5433#SECRET@db1/app",
                "5433#SECRET",
                "db1:5432",
                Some("app"),
            ),
            ("postgres://app:#SECRET@db1", "#SECRET", "db1:5432", None),
            (
                "postgres://app:S?E#C:R@[::1]:7/d",
                "S?E#C:R",
                "[::1]:7",
                Some("d"),
            ),
            (
                "postgresql://app:SEC%40x@db1/app#x",
                "SEC@x",
                "db1:5432",
                Some("app#x"),
            ),
        ] {
            let d = Dsn::parse(url, "primary").unwrap();
            assert_eq!(d.get("user"), Some("app"), "{url}");
            assert_eq!(d.get("password"), Some(password), "{url}");
            assert_eq!(d.host_port().to_string(), host, "{url}");
            assert_eq!(d.get("dbname"), db, "{url}");
            assert!(d.get("application_name").is_none(), "{url}");
            let red = d.redacted();
            assert!(
                !red.contains("SEC") && !red.contains("5433"),
                "{url}: {red}"
            );
            assert_eq!(redact_dsn(url), red);
            // The driver dlb builds gets the same password and server, and the rendered
            // text means the same again.
            let driver = d.driver_config().unwrap();
            assert_eq!(driver.get_password(), Some(password.as_bytes()), "{url}");
            assert_eq!(Dsn::parse(&d.to_string(), "primary").unwrap(), d, "{url}");
        }
        // Without credentials a '?' ends the host, and the query is read as before.
        let d = Dsn::parse("postgres://db1?sslmode=require", "primary").unwrap();
        assert_eq!(d.host_port().to_string(), "db1:5432");
        assert_eq!(d.get("sslmode"), Some("require"));
    }

    /// A raw `@` in a password: libpq ends the credentials at the first `@` and takes the
    /// rest of the password as part of the host, which no lookup resolves. dlb refuses it
    /// (the redacted DSN would show that part as the host), without quoting it.
    #[test]
    fn url_host_with_at_sign_is_refused_without_echo() {
        for url in [
            "postgres://app:SEC@RET@db1/app",
            "postgres://app@SECRET@db1",
            "postgres://app:x@h1,SEC@RET:5/db",
            "postgres://app:x@[SEC@RET]:5/db",
        ] {
            let e = Dsn::parse(url, "primary").unwrap_err().to_string();
            assert!(e.contains("%40") && !e.contains("SEC"), "{url}: {e}");
            assert_eq!(redact_dsn(url), REDACTED);
        }
        // An '@' in the database name after credentials is the database's, as in libpq.
        let d = Dsn::parse("postgres://u:p@h/d@b", "primary").unwrap();
        assert_eq!(d.get("dbname"), Some("d@b"));
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
