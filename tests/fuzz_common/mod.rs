//! What the property tests (`tests/fuzz_*.rs`) share: the marker secret, the case count, and
//! generators of DSNs that hide the marker.
#![allow(dead_code)] // each test file uses its part

use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;

/// The secret the generated inputs hide: it must never come out of an error, a `Debug`, a
/// redacted DSN or the C ABI's last error.
pub const MARK: &str = "SeKr1tMark";

/// proptest's settings: `PROPTEST_CASES` cases (`make fuzz` sets it), else `default_cases`,
/// chosen so that the whole fuzz suite stays within seconds under `cargo test`. Failures are
/// kept as plain `#[test]`s, not in files beside the sources.
pub fn config(default_cases: u32) -> PropConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    }
}

/// Characters and pieces that mean something in a DSN, a URL or JSON.
pub const TRICKY: &[&str] = &[
    "://", "@", "/", " ", "'", "\"", "\\", "=", ":", ",", "?", "&", "#", "%", "%2F", "[", "]",
    "\t", "é", "💥", "{", "}", "\0", "x", "''", "\\'", "+",
];

/// A secret: the marker among tricky pieces.
pub fn secret() -> impl Strategy<Value = String> {
    let piece = prop::collection::vec(prop::sample::select(TRICKY), 0..4).prop_map(|p| p.concat());
    (piece.clone(), piece).prop_map(|(a, b)| format!("{a}{MARK}{b}"))
}

/// `v` as a libpq single-quoted value.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Every byte but ASCII letters and digits percent-encoded.
pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A primary DSN on 127.0.0.1:1 (nothing listens: connections are refused at once) with the
/// secret in a value that redaction hides (`password`, `sslpassword`, `options`), in either
/// syntax, without NUL bytes.
pub fn primary_with_secret() -> impl Strategy<Value = String> {
    (secret(), 0..6u8).prop_map(|(s, form)| {
        let s = s.replace('\0', "");
        match form {
            0 => format!(
                "host=127.0.0.1 port=1 user=app password={} dbname=app",
                quote(&s)
            ),
            1 => format!(
                "host=127.0.0.1 port=1 sslpassword={} connect_timeout=1",
                quote(&s)
            ),
            2 => format!("options={} host=127.0.0.1 port=1", quote(&s)),
            3 => format!("postgres://app:{}@127.0.0.1:1/app", pct(&s)),
            4 => format!(
                "postgresql://127.0.0.1:1/app?password={}&sslmode=disable",
                pct(&s)
            ),
            _ => format!("postgres://app@127.0.0.1:1?options={}", pct(&s)),
        }
    })
}
