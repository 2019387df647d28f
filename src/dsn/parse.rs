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

/// The part of a URL after `scheme://`, as parameters, read as libpq reads it
/// (`conninfo_uri_parse_options`), not as RFC 3986 would: the credentials end at the first
/// `@` before any `/`, whatever comes before it (`?`, `#` and `:` included: a raw `?` or `#` in
/// a password is the password's); the user name ends at the first `:`; each host at `:`, `/`,
/// `?` or `,`, its port at `/`, `?` or `,`; the database at `?`. `#` means nothing (there is no
/// fragment). Errors name the component.
pub(super) fn parse_url(rest: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut params = Vec::new();
    // Every delimiter is ASCII: the byte positions below are character boundaries.
    let at = rest
        .find(['@', '/'])
        .filter(|&i| rest.as_bytes()[i] == b'@');
    let netloc = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((user, pw)) => (user, Some(pw)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.push(("user".into(), decode(user, "the user name")?));
            }
            if let Some(pw) = password {
                params.push(("password".into(), decode(pw, "the password")?));
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let b = netloc.as_bytes();
    let ends_host = |c: Option<&u8>| matches!(c, None | Some(b':' | b'/' | b'?' | b','));
    let ends_port = |c: Option<&u8>| matches!(c, None | Some(b'/' | b'?' | b','));
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    let mut i = 0;
    loop {
        let n = hosts.len() + 1;
        let host = if b.get(i) == Some(&b'[') {
            let start = i + 1;
            let end = netloc[start..]
                .find(']')
                .map(|j| start + j)
                .ok_or_else(|| format!("host {n}: missing ']' after an IPv6 address"))?;
            if end == start {
                return Err(format!("host {n}: empty IPv6 address"));
            }
            // libpq would take it as the end of this host and the start of another, with the
            // port of the last one only.
            if netloc[start..end].contains(',') {
                return Err(format!("host {n}: ',' between '[' and ']'"));
            }
            i = end + 1;
            if !ends_host(b.get(i)) {
                return Err(format!("host {n}: expected ':port' after ']'"));
            }
            &netloc[start..end]
        } else {
            let start = i;
            while !ends_host(b.get(i)) {
                i += 1;
            }
            &netloc[start..i]
        };
        // libpq would look the name up and fail; what precedes the '@' is most likely the
        // end of a password holding a raw '@', which a redacted DSN would show as the host.
        if host.contains('@') {
            return Err(format!(
                "host {n}: '@' in a host name (an '@' in the user name or password must be \
                 written %40)"
            ));
        }
        hosts.push(decode(host, "a host")?);
        let mut port = "";
        if b.get(i) == Some(&b':') {
            let start = i + 1;
            i = start;
            while !ends_port(b.get(i)) {
                i += 1;
            }
            port = &netloc[start..i];
        }
        ports.push(decode(port, "a port")?);
        if b.get(i) != Some(&b',') {
            break;
        }
        i += 1;
    }
    if hosts.len() > 1 || !hosts[0].is_empty() {
        params.push(("host".into(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.push(("port".into(), ports.join(",")));
    }
    let mut query = "";
    match b.get(i) {
        Some(b'/') => {
            let path = &netloc[i + 1..];
            let (db, q) = path.split_once('?').unwrap_or((path, ""));
            if at.is_none() && db.contains('@') {
                return Err(
                    "'@' after the host: a '/' in the user name or password must be written %2F"
                        .into(),
                );
            }
            if !db.is_empty() {
                params.push(("dbname".into(), decode(db, "the database name")?));
            }
            query = q;
        }
        Some(b'?') => query = &netloc[i + 1..],
        _ => {}
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
