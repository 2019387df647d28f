//! `include/dlb.h` is what cbindgen renders from `src/ffi/` with `cbindgen.toml`, and its
//! version macros match Cargo.toml.
//!
//! On drift the test fails with a diff hint; `DLB_BLESS=1 cargo test --test header` rewrites
//! the header.

use std::path::{Path, PathBuf};

fn blessing() -> bool {
    std::env::var_os("DLB_BLESS").is_some_and(|v| v == "1")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render() -> String {
    let root = root();
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  committed: {x}\n  rendered:  {y}", i + 1);
        }
    }
    format!(
        "committed has {} lines, rendered has {}",
        a.lines().count(),
        b.lines().count()
    )
}

#[test]
fn header_is_up_to_date() {
    let path = root().join("include/dlb.h");
    let rendered = render();
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is stale ({}); run `DLB_BLESS=1 cargo test --test header` and commit the result",
        path.display(),
        first_difference(&committed, &rendered)
    );
}

fn define(header: &str, name: &str) -> u64 {
    let prefix = format!("#define {name} ");
    let line = header
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name} is not defined in the header"));
    line[prefix.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn check_version(header: &str, what: &Path) {
    for (name, expected) in [
        ("LB_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("LB_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("LB_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert_eq!(
            define(header, name).to_string(),
            expected,
            "{name} in {} does not match Cargo.toml's version {}; update `after_includes` in \
             cbindgen.toml and bless the header",
            what.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
}

#[test]
fn version_macros_match_cargo_toml() {
    check_version(&render(), Path::new("cbindgen.toml"));
    if !blessing() {
        // (While blessing, the other test is rewriting the file.)
        let path = root().join("include/dlb.h");
        check_version(&std::fs::read_to_string(&path).unwrap(), &path);
    }
}

#[test]
fn lb_version_matches_cargo_toml() {
    let v = unsafe { std::ffi::CStr::from_ptr(dlb::ffi::lb_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn status_docs_say_retryable_exactly_for_retryable_codes() {
    let header = std::fs::read_to_string(root().join("include/dlb.h")).unwrap();
    let mut doc = String::new();
    let mut codes = 0;
    for line in header.lines() {
        if let Some(rest) = line.strip_prefix("#define LB_ERR_") {
            let code: u32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(
                doc.contains("Retryable"),
                dlb::ffi::lb_status_is_retryable(code),
                "the comment of LB_ERR_{rest} in include/dlb.h and lb_status_is_retryable() \
                 disagree"
            );
            codes += 1;
        }
        if line.starts_with("/*") {
            doc.clear();
        }
        doc.push_str(line);
    }
    assert!(codes > 10, "{codes} LB_ERR_* codes in include/dlb.h");
}
