//! Hiding secrets in text that may reach a log, a metric, a status report or an error.
//!
//! DSNs are redacted by [`crate::dsn`] (which knows their syntax); this module handles free text
//! such as a driver's error message that may quote a URL with credentials.

/// Shortest secret that [`redact_text`] replaces wherever it appears. A shorter one (a
/// password `e`, `ab`, `on`) is likely to occur in a message by chance: replacing every
/// occurrence mangled the message, and what went missing showed the password. Such secrets
/// are hidden where credentials stand (see [`redact_text`]), not searched for.
pub(crate) const MIN_SEARCHED_SECRET: usize = 8;

/// `text` (free text such as a driver's error message) without credentials: the user info of
/// every `scheme://user:password@host` (everything up to the last `@` before the next blank
/// or URL), the value of every `pass=`, `password=`, `passwd=` (or `*pass=`, ...: `requirepass`,
/// `sslpassword`), the arguments of an `AUTH` command; and every occurrence of the `secrets`
/// at least [`MIN_SEARCHED_SECRET`] bytes long.
pub(crate) fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out = credential_values(&url_userinfo(text));
    for s in secrets.iter().filter(|s| s.len() >= MIN_SEARCHED_SECRET) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// `text` with the user info of each `scheme://...@` in it replaced by `***`.
fn url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .unwrap_or(tail.len());
        let end = tail[..end].find("://").unwrap_or(end);
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` (a `key` of `key=value`) names a password.
fn is_password_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "password", "passwd"]
        .iter()
        .any(|p| n.ends_with(p))
}

/// `text` with the values of password keys (`pass=...`) and the arguments of `AUTH` (up to
/// two: `AUTH [user] password`) replaced by `***`. A value ends at a blank or `&` (or its
/// closing quote when quoted).
fn credential_values(text: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        // The next `name=` with a password name, or `AUTH` followed by a blank.
        let mut found = None;
        for (i, c) in rest.char_indices() {
            let starts_word = rest[..i].chars().next_back().is_none_or(|p| !word(p));
            if !starts_word || !word(c) {
                continue;
            }
            let len = rest[i..].find(|c: char| !word(c)).unwrap_or(rest.len() - i);
            let name = &rest[i..i + len];
            let after = &rest[i + len..];
            if after.starts_with('=') && is_password_key(name) {
                found = Some((i + len + 1, 1));
                break;
            }
            if name == "AUTH" && after.starts_with([' ', '\t']) {
                found = Some((i + len, 2));
                break;
            }
        }
        let Some((at, values)) = found else { break };
        out.push_str(&rest[..at]);
        let mut tail = &rest[at..];
        let mut hidden = false;
        for _ in 0..values {
            let blanks = if values > 1 {
                tail.len() - tail.trim_start_matches([' ', '\t']).len()
            } else {
                0
            };
            let v = &tail[blanks..];
            let len = match v.chars().next() {
                Some(q @ ('\'' | '"')) => v[1..].find(q).map_or(v.len(), |j| j + 2),
                _ => v
                    .find(|c: char| c.is_whitespace() || c == '&')
                    .unwrap_or(v.len()),
            };
            if len == 0 {
                break;
            }
            if !hidden {
                out.push_str(&tail[..blanks]);
                out.push_str("***");
                hidden = true;
            }
            tail = &v[len..];
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Redis URL query parameters whose values [`redact_url`] shows.
const SHOWN_QUERY_KEYS: &[&str] = &["db", "protocol"];

/// `url` (a configured Redis URL) without its credentials, the rule the Go binding's
/// `redactURL` follows too: everything between `://` and the last `@` becomes `***` (so a
/// password holding `/`, `,`, `@` or spaces is hidden); the query, where `redis+unix://` URLs
/// carry the password (`?pass=...`), keeps only the values of `db` and `protocol`; a fragment
/// becomes `#***`; and when a `?` or `#` comes before that last `@` (a password in the query
/// holding an `@`, or a raw `?` or `#` in the user info), nothing after the scheme is shown.
/// Text without `://` loses everything up to its last `@`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, mut rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = scheme.to_string();
    if let Some(at) = rest.rfind('@') {
        if rest[..at].contains(['?', '#']) {
            out.push_str("***");
            return out;
        }
        out.push_str("***");
        rest = &rest[at..];
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let plain = |k: &str| {
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%'))
            };
            match pair.split_once('=') {
                Some((k, _)) if SHOWN_QUERY_KEYS.contains(&k) => out.push_str(pair),
                Some((k, _)) if plain(k) => {
                    out.push_str(k);
                    out.push_str("=***");
                }
                _ if !pair.is_empty() => out.push_str("***"),
                _ => {}
            }
        }
    }
    if !fragment.is_empty() {
        out.push_str("#***");
    }
    out
}

/// Longest text from a server or a peer that dlb passes on (into an error, the status, an
/// event or a log record), in bytes: longer text is cut at a character boundary and marked.
pub(crate) const MAX_PEER_TEXT: usize = 512;

/// `text` from a server or a peer, made safe to pass on: at most [`MAX_PEER_TEXT`] bytes (then
/// `…[cut]`), control characters (ESC, newlines, …) escaped as `\u{..}`, so that a hostile
/// server can neither flood a log nor forge its lines or drive a terminal.
pub(crate) fn bounded(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PEER_TEXT) + 8);
    for c in text.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
        if out.len() > MAX_PEER_TEXT {
            out.truncate(before);
            out.push_str("…[cut]");
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_whatever_they_hold() {
        for (url, want) in [
            ("redis://h:6379/0", "redis://h:6379/0"),
            ("redis://:pw@h:6379", "redis://***@h:6379"),
            ("rediss://user:pw@h:1/2", "rediss://***@h:1/2"),
            ("redis://:p/a,s w@rd@h:1", "redis://***@h:1"),
            // A '?' or '#' before the last '@': nothing after the scheme.
            ("redis://:p/a?s#s, w@rd@h:1", "redis://***"),
            (
                "redis+unix:///run/r.sock?pass=SECRET@PART&db=1",
                "redis+unix://***",
            ),
            // The query: only `db` and `protocol` shown (redis+unix:// carries `pass` there).
            (
                "redis+unix:///run/redis.sock?db=1&pass=SECRET&protocol=resp3",
                "redis+unix:///run/redis.sock?db=1&pass=***&protocol=resp3",
            ),
            (
                "unix:///run/redis.sock?pass=SECRET?PART#x&db=2",
                "unix:///run/redis.sock?pass=***#***",
            ),
            (
                "redis://h:1/0?user=u&pass=SECRET",
                "redis://h:1/0?user=***&pass=***",
            ),
            ("redis://h/0?SEC<RET=1&&x", "redis://h/0?***&&***"),
            ("not a url :pw@h", "***@h"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn peer_text_is_bounded_and_control_characters_escaped() {
        assert_eq!(bounded("plain"), "plain");
        assert_eq!(bounded("a\nb\x1b[31mc"), "a\\u{a}b\\u{1b}[31mc");
        let long = "é".repeat(4 * MAX_PEER_TEXT);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_PEER_TEXT + "…[cut]".len(), "{}", cut.len());
        assert!(cut.ends_with("…[cut]"));
        assert!(cut.starts_with("éé"));
    }

    /// A short password is not searched for in free text: replaced everywhere it mangled the
    /// message, and the gaps showed it (`e` in "WRONGPASS invalid username-password pair"
    /// became "WRONGPASS invalid us***rnam***-password pair"). It is hidden where credentials
    /// stand: URL user info, password keys, `AUTH` arguments.
    #[test]
    fn short_secrets_are_hidden_by_position_not_searched_for() {
        let message =
            "redis get on h:1: WRONGPASS invalid username-password pair or user is disabled.";
        for pw in ["e", "on", "pai", "disabl"] {
            assert_eq!(redact_text(message, &[pw.to_string()]), message, "{pw}");
        }
        for (text, want) in [
            ("failed: redis://:e@h:1/0", "failed: redis://***@h:1/0"),
            ("failed: rediss://u:a b@h:1", "failed: rediss://u:a b@h:1"),
            (
                "redis+unix:///run/r.sock?db=1&pass=e&user=u",
                "redis+unix:///run/r.sock?db=1&pass=***&user=u",
            ),
            ("host=h password=e port=1", "host=h password=*** port=1"),
            ("x sslpassword='a b' y", "x sslpassword=*** y"),
            (
                "requirepass \"on\"; PASS=ab",
                "requirepass \"on\"; PASS=***",
            ),
            ("sent AUTH default e\nthen", "sent AUTH ***\nthen"),
            ("sent AUTH e", "sent AUTH ***"),
            (
                "HELLO 3 AUTH app on SETNAME x",
                "HELLO 3 AUTH *** SETNAME x",
            ),
            (
                "NOAUTH Authentication required.",
                "NOAUTH Authentication required.",
            ),
            ("auth failed", "auth failed"),
            ("pass= empty", "pass= empty"),
        ] {
            assert_eq!(
                redact_text(text, &["e".into(), "on".into()]),
                want,
                "{text}"
            );
        }
        // Long enough not to occur by chance: replaced wherever it is.
        assert_eq!(
            redact_text("echo s3cretpass at s3cretpass!", &["s3cretpass".into()]),
            "echo *** at ***!"
        );
    }

    #[test]
    fn urls_and_secrets() {
        let s = redact_text(
            "failed: redis://user:s3cret@h:1/0 and redis://:pw@h2:2, redis://h3:3 x://a@b",
            &[],
        );
        assert_eq!(
            s,
            "failed: redis://***@h:1/0 and redis://***@h2:2, redis://h3:3 x://***@b"
        );
        assert_eq!(
            redact_text("bad s3cretpw here", &["s3cretpw".into()]),
            "bad *** here"
        );
        assert_eq!(redact_text("nothing", &[String::new()]), "nothing");
    }
}
