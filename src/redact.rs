//! Hiding secrets in text that may reach a log, a metric, a status report or an error.
//!
//! DSNs are redacted by [`crate::dsn`] (which knows their syntax); this module handles free text
//! such as a driver's error message that may quote a URL with credentials.

/// Removes the `user:password@` part of every `scheme://user:password@host` in `text`, and
/// every occurrence of the given secrets.
pub(crate) fn redact_text(text: &str, secrets: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == ',')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// `url` (a configured Redis URL) without its credentials: everything between `://` and the
/// last `@` becomes `***`. Unlike [`redact_text`], which must find URLs inside prose, this
/// knows the whole text is one URL, so a password holding `/`, `?`, `#`, `,`, `@` or spaces
/// is hidden too. Text without `://` loses everything up to its last `@`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
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
            ("redis://:p/a?s#s, w@rd@h:1", "redis://***@h:1"),
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
            redact_text("bad s3cret here", &["s3cret".into()]),
            "bad *** here"
        );
        assert_eq!(redact_text("nothing", &[String::new()]), "nothing");
    }
}
