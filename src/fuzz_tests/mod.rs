//! Property tests ("fuzzing" on stable Rust, with proptest) of the crate-private DSN layer
//! (`src/dsn/`): parsing, replica DSN derivation, rendering and redaction; and of the DNS
//! response parser (`src/discovery/dns.rs`), at the end. The public
//! routes to the same code (`Config::from_json`, `lb_dsn_redact`) are fuzzed in
//! `tests/fuzz_*.rs`.
//!
//! Case counts: proptest's `PROPTEST_CASES` (default here: [`CASES`], a few seconds in all);
//! `make fuzz` runs them long. A failure prints the minimal input: add it as a plain
//! `#[test]` below.

// The marker secret and proptest's settings, shared with tests/fuzz_*.rs.
#[path = "../../tests/fuzz_common/mod.rs"]
mod common;

/// Cases per property when `PROPTEST_CASES` is not set.
const CASES: u32 = 1024;

fn config() -> proptest::test_runner::Config {
    common::config(CASES)
}

mod dns;
mod dsn;
