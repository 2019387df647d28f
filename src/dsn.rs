//! Connection strings: libpq `key=value` and `postgres://` URLs.
//!
//! dlb hands out connection strings in the syntax the caller configured: a replica's DSN is the
//! primary's with host and port replaced. The [`Dsn`] type keeps the original syntax so that it
//! can be re-rendered, and renders a redacted form (password hidden) for logs, metrics, status
//! and errors.

use std::fmt;

use crate::error::{Error, Result};

/// Replacement text for secrets in redacted output.
pub(crate) const REDACTED: &str = "********";

/// A parsed connection string in one of libpq's two syntaxes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Dsn {
    /// `host=... port=... user=...`: pairs in their original order, values unescaped.
    KeyValue(Vec<(String, String)>),
    /// `postgres://user:pass@host:port/db?params`.
    Url {
        /// `postgres` or `postgresql`.
        scheme: String,
        /// Raw (percent-encoded) `user[:password]`, without the `@`.
        userinfo: Option<String>,
        /// Raw host spec (`host`, `host:port`, `[v6]:port`, or several comma-separated).
        hostspec: String,
        /// Raw remainder starting at `/` or `?`, or empty.
        rest: String,
    },
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
    /// when none is given.
    ///
    /// # Errors
    /// A message saying what is wrong (the caller adds the field name).
    pub fn parse(s: &str, default_port: u16) -> std::result::Result<HostPort, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty host".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after IPv6 address"))?;
            match after {
                "" => (h, None),
                p if p.starts_with(':') => (h, Some(&p[1..])),
                _ => return Err(format!("{s:?}: expected ':port' after ']'")),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // bare IPv6 address
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h, Some(p))
        } else {
            (s, None)
        };
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == ',' || c == '@')
        {
            return Err(format!("{s:?}: invalid character in host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("{s:?}: port must be 1-65535")),
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
    pub(crate) fn parse(s: &str, field: &str) -> Result<Dsn> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Error::config(field, "empty connection string"));
        }
        let dsn = if let Some((scheme, rest)) = t.split_once("://") {
            if scheme != "postgres" && scheme != "postgresql" {
                return Err(Error::config(
                    field,
                    format!("unsupported URL scheme {scheme:?} (use postgres:// or postgresql://)"),
                ));
            }
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let (userinfo, hostspec) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_string()), h.to_string()),
                None => (None, authority.to_string()),
            };
            Dsn::Url {
                scheme: scheme.to_string(),
                userinfo,
                hostspec,
                rest: tail.to_string(),
            }
        } else {
            Dsn::KeyValue(parse_key_value(t).map_err(|m| Error::config(field, m))?)
        };
        // Let the driver validate the rest (unknown options, bad ports...). Its messages name
        // options, never their values.
        dsn.to_string()
            .parse::<postgres::Config>()
            .map_err(|e| Error::config(field, format!("not a valid connection string: {e}")))?;
        Ok(dsn)
    }

    /// The primary's first host and port, for display and as the default replica port.
    pub(crate) fn host_port(&self) -> HostPort {
        let (host, port) = match self {
            Dsn::KeyValue(pairs) => {
                let get = |k: &str| pairs.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v);
                let host = get("host")
                    .or_else(|| get("hostaddr"))
                    .map(|h| h.split(',').next().unwrap_or_default().to_string())
                    .unwrap_or_else(|| "localhost".into());
                let port = get("port").and_then(|p| p.split(',').next()?.parse().ok());
                (host, port)
            }
            Dsn::Url { hostspec, .. } => {
                let first = hostspec.split(',').next().unwrap_or_default();
                match HostPort::parse(first, 5432) {
                    Ok(hp) => (hp.host, Some(hp.port)),
                    Err(_) => ("localhost".into(), None),
                }
            }
        };
        HostPort {
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port: port.unwrap_or(5432),
        }
    }

    /// The same DSN pointing at another host and port, in the same syntax, without the
    /// settings that only make sense for the primary ([`PRIMARY_ONLY_KEYS`]: a replica
    /// connection asking for `target_session_attrs=read-write` would always fail).
    pub(crate) fn with_host(&self, hp: &HostPort) -> Dsn {
        match self {
            Dsn::KeyValue(pairs) => {
                let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len() + 2);
                let mut placed = false;
                for (k, v) in pairs {
                    match k.as_str() {
                        "host" | "port" | "hostaddr" => {
                            if !placed {
                                out.push(("host".into(), hp.host.clone()));
                                out.push(("port".into(), hp.port.to_string()));
                                placed = true;
                            }
                        }
                        k if PRIMARY_ONLY_KEYS.contains(&k) => {}
                        _ => out.push((k.clone(), v.clone())),
                    }
                }
                if !placed {
                    out.insert(0, ("port".into(), hp.port.to_string()));
                    out.insert(0, ("host".into(), hp.host.clone()));
                }
                Dsn::KeyValue(out)
            }
            Dsn::Url {
                scheme,
                userinfo,
                rest,
                ..
            } => Dsn::Url {
                scheme: scheme.clone(),
                userinfo: userinfo.clone(),
                hostspec: hp.to_string(),
                rest: without_primary_only_params(rest),
            },
        }
    }

    /// The DSN with any password replaced by `********`: safe for logs, metrics and errors.
    pub(crate) fn redacted(&self) -> String {
        match self {
            Dsn::KeyValue(pairs) => render_pairs(pairs.iter().map(|(k, v)| {
                if k == "password" {
                    (k.as_str(), REDACTED)
                } else {
                    (k.as_str(), v.as_str())
                }
            })),
            Dsn::Url {
                scheme,
                userinfo,
                hostspec,
                rest,
            } => {
                let user = userinfo.as_ref().map(|u| match u.split_once(':') {
                    Some((name, _)) => format!("{name}:{REDACTED}@"),
                    None => format!("{u}@"),
                });
                format!(
                    "{scheme}://{}{hostspec}{}",
                    user.unwrap_or_default(),
                    redact_query(rest)
                )
            }
        }
    }
}

impl fmt::Display for Dsn {
    /// The full DSN, password included: only for handing to a driver.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dsn::KeyValue(pairs) => f.write_str(&render_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )),
            Dsn::Url {
                scheme,
                userinfo,
                hostspec,
                rest,
            } => {
                let user = userinfo
                    .as_ref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                write!(f, "{scheme}://{user}{hostspec}{rest}")
            }
        }
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({:?})", self.redacted())
    }
}

/// Connection settings a replica DSN leaves out: they only make sense for the primary.
pub(crate) const PRIMARY_ONLY_KEYS: [&str; 1] = ["target_session_attrs"];

/// `rest` of a URL (`/db?query#fragment`) without the [`PRIMARY_ONLY_KEYS`] query parameters.
fn without_primary_only_params(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else {
        return rest.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !PRIMARY_ONLY_KEYS.contains(&key)
        })
        .collect();
    let mut out = path.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `s`, a connection string in either syntax, with any password replaced by `********`: the
/// text of `lb_dsn_redact()`. The DSN is parsed and re-rendered (as [`Dsn::redacted`] renders
/// the hosts' DSNs). Text that does not parse as a DSN gives [`REDACTED`] alone: a password may
/// stand anywhere in it, so none of it is echoed.
pub(crate) fn redact_dsn(s: &str) -> String {
    match Dsn::parse(s, "dsn") {
        Ok(dsn) => dsn.redacted(),
        Err(_) => REDACTED.to_string(),
    }
}

fn redact_query(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else {
        return rest.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some(("password", _)) => format!("password={REDACTED}"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

fn render_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        let plain = !v.is_empty()
            && !v
                .chars()
                .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
        if plain {
            out.push_str(v);
        } else {
            out.push('\'');
            for c in v.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
    }
    out
}

/// libpq's `keyword = value` syntax: values are bare words or single-quoted strings, with `\`
/// escaping the next character in both.
fn parse_key_value(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(format!(
                "expected '=' after {key:?} (use key=value pairs or a postgres:// URL)"
            ));
        }
        if key.is_empty() {
            return Err("empty keyword before '='".into());
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    None => return Err(format!("unterminated quoted value for {key:?}")),
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for {key:?}")),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
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
}
