//! Gives the shared library its SONAME (`libdlb.so.<major>`), so that programs linked against
//! an installed `libdlb.so` load `libdlb.so.0` at run time and a later incompatible major
//! version can be installed beside it (`make install`, scripts/install.sh).
//!
//! cargo-c would do this (and the install) too; it is not packaged for this environment and
//! building it from source costs more than these lines.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    match os.as_str() {
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libdlb.{major}.dylib")
        }
        "windows" => {}
        // ELF linkers (GNU ld, gold, lld, mold) all take -soname.
        _ => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdlb.so.{major}");
            link_soname_in_target_dir(&major);
        }
    }
}

/// Programs linked against `target/<profile>/libdlb.so` (the C tests' shared variant, the Go
/// binding's `dlb_shared` mode, an rpath to that directory) ask the loader for the SONAME:
/// `libdlb.so.<major>` is made there as a link to `libdlb.so`, as an install makes it. Best
/// effort: the directory is found from OUT_DIR (`target/<profile>/build/dlb-*/out`).
fn link_soname_in_target_dir(major: &str) {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let Some(profile_dir) = std::path::Path::new(&out).ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join(format!("libdlb.so.{major}"));
    if std::fs::symlink_metadata(&link).is_err() {
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink("libdlb.so", &link);
    }
}
