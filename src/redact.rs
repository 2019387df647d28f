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

#[cfg(test)]
mod tests {
    use super::*;

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
