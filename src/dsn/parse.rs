//! libpq's two DSN grammars, read and written: `key=value` pairs and `postgres://` URLs,
//! with percent-encoding.

use super::*;

pub(super) fn push_kv_value(out: &mut String, v: &str) {
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
pub(super) fn parse_key_value(s: &str) -> std::result::Result<Vec<(String, String)>, String> {
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
pub(super) fn parse_url(rest: &str) -> std::result::Result<Vec<(String, String)>, String> {
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
pub(super) fn decode(s: &str, what: &str) -> std::result::Result<String, String> {
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
pub(super) const USERINFO: &str = "-._~!$&'()*+;=";
pub(super) const HOST: &str = "-._~";
// `@`, `/`, `?` and `#` are always encoded: libpq looks for `@` and `/` across the whole URL.
pub(super) const PATH: &str = "-._~!$&'()*+,;=:";
pub(super) const QUERY: &str = "-._~!$'()*+,;:";

pub(super) fn encode(s: &str, keep: &str) -> String {
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
