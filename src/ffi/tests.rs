//! Unit tests of the C ABI that need no database (the primary is an unreachable address).
//! The end-to-end tests against the test cluster are the C programs in `ffi-tests/`.

use std::ffi::{CStr, CString, c_char};
use std::ptr;

use super::boundary::run;
use super::error::Failure;
use super::status::{STATUSES, status_of};
use super::*;
use crate::Reason;

/// Nothing listens on port 1: start-up fails its first check quickly, without failing.
const CONFIG: &str = r#"{"primary": "host=127.0.0.1 port=1 user=app password=secretpw dbname=app connect_timeout=1",
    "replicas": {"hosts": ["127.0.0.1:2", "127.0.0.1:3"]}, "probe_timeout_ms": 50}"#;

fn last_error() -> String {
    let n = lb_last_error_length();
    let mut buf = vec![0u8; n + 1];
    // SAFETY: the buffer holds n + 1 bytes.
    let m = unsafe { lb_last_error_message(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(m, n);
    assert_eq!(buf[n], 0);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn static_str(p: *const c_char) -> &'static str {
    assert!(!p.is_null());
    // SAFETY: the functions under test return static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap()
}

struct Lb(*mut lb_balancer);

impl Lb {
    fn new(json: &str) -> Lb {
        let json = CString::new(json).unwrap();
        let mut lb = ptr::null_mut();
        // SAFETY: valid string and out pointer.
        let st = unsafe { lb_balancer_new(json.as_ptr(), &mut lb) };
        assert_eq!(st, LB_OK, "{}", last_error());
        assert!(!lb.is_null());
        Lb(lb)
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        // SAFETY: created by lb_balancer_new, freed once.
        unsafe { lb_balancer_free(self.0) };
    }
}

#[test]
fn reason_constants_match_reason_all() {
    assert_eq!(REASONS.len(), Reason::ALL.len());
    for (i, r) in Reason::ALL.into_iter().enumerate() {
        let (reason, code) = REASONS[i];
        assert_eq!(reason, r);
        assert_eq!(code, r as u32, "{r:?}");
        assert_eq!(static_str(lb_reason_str(code)), r.as_str());
    }
    let named = [
        LB_REASON_ROUND_ROBIN,
        LB_REASON_CAUGHT_UP_CACHED,
        LB_REASON_CAUGHT_UP_LIVE,
        LB_REASON_NO_LSN_RECORDED,
        LB_REASON_NO_REPLICAS_CONFIGURED,
        LB_REASON_NO_HEALTHY_REPLICA,
        LB_REASON_NOT_CAUGHT_UP,
        LB_REASON_STORE_ERROR,
        LB_REASON_FORCED_PRIMARY,
        LB_REASON_WRITE,
        LB_REASON_REPLICA_UNAVAILABLE,
    ];
    let all: Vec<u32> = Reason::ALL.iter().map(|r| *r as u32).collect();
    assert_eq!(named.to_vec(), all);
    assert_eq!(static_str(lb_reason_str(999)), "unknown");
    assert_eq!(static_str(lb_role_str(LB_ROLE_PRIMARY)), "primary");
    assert_eq!(static_str(lb_role_str(LB_ROLE_REPLICA)), "replica");
    assert_eq!(static_str(lb_role_str(2)), "unknown");
}

#[test]
fn status_table_round_trips() {
    let codes = [
        LB_OK,
        LB_ERR_INVALID_ARGUMENT,
        LB_ERR_INVALID_CONFIG,
        LB_ERR_BUFFER_TOO_SMALL,
        LB_ERR_PRIMARY_UNAVAILABLE,
        LB_ERR_NO_CAUGHT_UP_REPLICA,
        LB_ERR_STORE,
        LB_ERR_PANIC,
        LB_ERR_INVALID_LSN,
        LB_ERR_INVALID_KEY,
        LB_ERR_REPLICA_UNAVAILABLE,
        LB_ERR_QUERY,
        LB_ERR_UNKNOWN_HOST,
        LB_ERR_INTERNAL,
        LB_ERR_LOGGER_UNAVAILABLE,
        LB_ERR_FORKED,
    ];
    assert_eq!(
        STATUSES.map(|s| s.code),
        codes,
        "every LB_* code, once, in order"
    );
    let mut texts = std::collections::HashSet::new();
    for s in STATUSES {
        let text = static_str(lb_status_str(s.code));
        assert_eq!(text, s.text.to_str().unwrap());
        assert!(texts.insert(text), "{text:?} describes two codes");
        assert_eq!(lb_status_is_retryable(s.code), s.retryable, "{text}");
    }
    let unknown = codes.len() as lb_status;
    assert_eq!(static_str(lb_status_str(unknown)), "unknown status");
    assert_eq!(static_str(lb_status_str(lb_status::MAX)), "unknown status");
    assert!(!lb_status_is_retryable(unknown));
}

/// One error of each variant.
fn one_error_of_each_variant() -> Vec<crate::Error> {
    use crate::Error;
    let host = || "h:1".to_string();
    let message = || "x".to_string();
    let all = vec![
        Error::config("pool.max_size", "x"),
        "zz".parse::<crate::Lsn>().unwrap_err(),
        Error::InvalidKey { reason: message() },
        Error::PrimaryUnavailable {
            host: host(),
            message: message(),
        },
        Error::ReplicaUnavailable {
            host: host(),
            message: message(),
        },
        Error::NoCaughtUpReplica {
            min_lsn: crate::Lsn::ZERO,
        },
        Error::Store {
            message: message(),
            lsn: Some(crate::Lsn::ZERO),
        },
        Error::Query {
            host: host(),
            message: message(),
        },
        Error::Forked { created_by: 1 },
    ];
    // No wildcard: a new variant does not compile until it is listed here (and above).
    let variants: std::collections::HashSet<&str> = all
        .iter()
        .map(|e| match e {
            Error::Config { .. } => "Config",
            Error::InvalidLsn { .. } => "InvalidLsn",
            Error::InvalidKey { .. } => "InvalidKey",
            Error::PrimaryUnavailable { .. } => "PrimaryUnavailable",
            Error::ReplicaUnavailable { .. } => "ReplicaUnavailable",
            Error::NoCaughtUpReplica { .. } => "NoCaughtUpReplica",
            Error::Store { .. } => "Store",
            Error::Query { .. } => "Query",
            Error::Forked { .. } => "Forked",
        })
        .collect();
    assert_eq!(variants.len(), all.len(), "one of each");
    all
}

#[test]
fn error_variants_map_to_codes_that_agree_on_retrying() {
    let mut seen = std::collections::HashMap::new();
    for e in one_error_of_each_variant() {
        let (code, retryable, what) = (status_of(&e), e.is_retryable(), format!("{e:?}"));
        assert_eq!(lb_status_is_retryable(code), retryable, "{what}");
        assert!(
            seen.insert(code, retryable).is_none(),
            "{what}: code reused"
        );
        assert_eq!(Failure::from(e).status, code, "{what}");
    }
    // The table's retryable codes are exactly those of retryable errors.
    for s in STATUSES {
        assert_eq!(
            seen.get(&s.code).copied().unwrap_or(false),
            s.retryable,
            "{:?}",
            s.text
        );
    }
}

#[test]
fn panic_becomes_status_and_message() {
    let st = run("lb_test", || -> Result<(), Failure> {
        panic!("boom {}", 42)
    });
    assert_eq!(st, LB_ERR_PANIC);
    assert_eq!(last_error(), "lb_test: panic: boom 42");
    let p = run("lb_test", || -> *const c_char { panic!("static") });
    assert_eq!(static_str(p), "");
    assert_eq!(last_error(), "lb_test: panic: static");
    assert_eq!(run("lb_test", || -> usize { panic!() }), 0);
}

#[test]
fn last_error_copies_truncate_and_are_per_thread() {
    // SAFETY (all blocks): NULL where allowed, buffers of the stated size.
    let st = unsafe { lb_balancer_new(ptr::null(), ptr::null_mut()) };
    assert_eq!(st, LB_ERR_INVALID_ARGUMENT);
    let msg = last_error();
    assert_eq!(msg, "lb_balancer_new: argument `config_json` is NULL");
    assert_eq!(
        unsafe { lb_last_error_message(ptr::null_mut(), 0) },
        msg.len()
    );
    let mut small = [0x7fu8; 5];
    let n = unsafe { lb_last_error_message(small.as_mut_ptr().cast(), small.len()) };
    assert_eq!(n, msg.len());
    assert_eq!(&small, b"lb_b\0");
    std::thread::spawn(|| assert_eq!(lb_last_error_length(), 0))
        .join()
        .unwrap();
    // Successful calls leave it.
    assert_eq!(static_str(lb_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(last_error(), msg);
}

#[test]
fn invalid_utf8_and_config_errors_name_the_argument() {
    let mut lb = ptr::null_mut();
    let bad = b"{\"primary\": \"\xff\"}\0";
    // SAFETY: NUL-terminated bytes, valid out pointer.
    let st = unsafe { lb_balancer_new(bad.as_ptr().cast(), &mut lb) };
    assert_eq!(st, LB_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("`config_json` is not valid UTF-8 (at byte 13)"));
    assert!(lb.is_null());

    let json = CString::new(r#"{"primary": "host=x", "pool": {"max_size": 0}}"#).unwrap();
    // SAFETY: as above.
    let st = unsafe { lb_balancer_new(json.as_ptr(), &mut lb) };
    assert_eq!(st, LB_ERR_INVALID_CONFIG);
    assert!(last_error().contains("pool.max_size"), "{}", last_error());
    assert!(lb.is_null());

    let json = CString::new(r#"{"primary": "host=x\u0000y"}"#).unwrap();
    // SAFETY: as above.
    let st = unsafe { lb_balancer_new(json.as_ptr(), &mut lb) };
    assert_eq!(st, LB_ERR_INVALID_CONFIG, "{}", last_error());
    assert!(lb.is_null());
}

#[test]
fn buffers_follow_the_rules_and_secrets_stay_out() {
    let lb = Lb::new(CONFIG);
    let mut len = usize::MAX;
    // SAFETY (all blocks below): live handle, buffers of the stated size, NULL where allowed.
    let st = unsafe { lb_primary_dsn(lb.0, ptr::null_mut(), 0, &mut len) };
    assert_eq!(st, LB_ERR_BUFFER_TOO_SMALL);
    assert!(len > 0 && len != usize::MAX);
    assert!(!last_error().contains("secretpw"));
    let st = unsafe { lb_primary_dsn(lb.0, ptr::null_mut(), 1, &mut len) };
    assert_eq!(st, LB_ERR_INVALID_ARGUMENT);
    let mut buf = vec![0x55u8; len];
    let st = unsafe { lb_primary_dsn(lb.0, buf.as_mut_ptr().cast(), len, &mut len) };
    assert_eq!(st, LB_ERR_BUFFER_TOO_SMALL);
    assert!(buf.iter().all(|&b| b == 0x55), "nothing written");
    let mut buf = vec![0x55u8; len + 1];
    let mut got = 0;
    let st = unsafe { lb_primary_dsn(lb.0, buf.as_mut_ptr().cast(), len + 1, &mut got) };
    assert_eq!(st, LB_OK);
    assert_eq!(got, len);
    let dsn = CStr::from_bytes_with_nul(&buf).unwrap().to_str().unwrap();
    assert!(
        dsn.contains("password=secretpw"),
        "the real DSN is handed out"
    );

    // No healthy replica: the primary, with the reason.
    let mut route = lb_route {
        role: 77,
        reason: 77,
    };
    let st = unsafe {
        lb_pick_replica(
            lb.0,
            ptr::null(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            ptr::null_mut(),
            &mut route,
        )
    };
    assert_eq!(st, LB_OK);
    assert_eq!(
        route,
        lb_route {
            role: LB_ROLE_PRIMARY,
            reason: LB_REASON_NO_HEALTHY_REPLICA
        }
    );
    // A too-small buffer writes neither the text nor the route.
    let mut route = lb_route {
        role: 77,
        reason: 77,
    };
    let st = unsafe {
        lb_pick_replica(
            lb.0,
            ptr::null(),
            buf.as_mut_ptr().cast(),
            1,
            ptr::null_mut(),
            &mut route,
        )
    };
    assert_eq!(st, LB_ERR_BUFFER_TOO_SMALL);
    assert_eq!(route.role, 77);

    for f in [lb_status_json, lb_metrics_text] {
        let mut len = 0;
        let st = unsafe { f(lb.0, ptr::null_mut(), 0, &mut len) };
        assert_eq!(st, LB_ERR_BUFFER_TOO_SMALL);
        let mut buf = vec![0u8; len + 4096];
        let st = unsafe { f(lb.0, buf.as_mut_ptr().cast(), buf.len(), &mut len) };
        assert_eq!(st, LB_OK, "{}", last_error());
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(!text.contains("secretpw"), "{text}");
        assert!(text.contains("127.0.0.1:2"), "{text}");
    }
}

#[test]
fn report_failure_and_sticky_argument_errors() {
    let lb = Lb::new(CONFIG);
    let c = |s: &str| CString::new(s).unwrap();
    let mut dsn = vec![0u8; 512];
    let mut len = 0;
    // SAFETY (all blocks below): live handle, valid strings and buffers, NULL where allowed.
    unsafe { lb_primary_dsn(lb.0, dsn.as_mut_ptr().cast(), dsn.len(), &mut len) };
    assert_eq!(
        unsafe { lb_report_failure(lb.0, dsn.as_ptr().cast()) },
        LB_OK
    );
    assert_eq!(
        unsafe { lb_report_failure(lb.0, c("127.0.0.1:2").as_ptr()) },
        LB_OK
    );
    let secret = c("host=10.9.9.9 password=hunter2");
    assert_eq!(
        unsafe { lb_report_failure(lb.0, secret.as_ptr()) },
        LB_ERR_UNKNOWN_HOST
    );
    assert!(!last_error().contains("hunter2"));
    assert_eq!(
        unsafe { lb_report_failure(ptr::null(), secret.as_ptr()) },
        LB_ERR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "lb_report_failure: argument `lb` is NULL");

    assert_eq!(
        unsafe { lb_record_lsn_value(lb.0, c("k").as_ptr(), c("nope").as_ptr()) },
        LB_ERR_INVALID_LSN
    );
    assert_eq!(
        unsafe { lb_record_lsn_value(lb.0, c("").as_ptr(), c("0/1").as_ptr()) },
        LB_ERR_INVALID_KEY
    );
    assert_eq!(
        unsafe { lb_record_lsn_value(lb.0, ptr::null(), c("0/1").as_ptr()) },
        LB_ERR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "lb_record_lsn_value: argument `key` is NULL");
    assert_eq!(
        unsafe { lb_record_lsn_value(lb.0, c("k").as_ptr(), c("16/B374D848").as_ptr()) },
        LB_OK
    );
    // No healthy replica has replayed it: the primary.
    let mut route = lb_route::default();
    let st = unsafe {
        lb_pick_replica(
            lb.0,
            c("k").as_ptr(),
            dsn.as_mut_ptr().cast(),
            dsn.len(),
            &mut len,
            &mut route,
        )
    };
    assert_eq!(st, LB_OK);
    assert_eq!(route.role, LB_ROLE_PRIMARY);
    assert_eq!(
        unsafe { lb_force_primary(lb.0, c("k2").as_ptr(), 0) },
        LB_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        unsafe { lb_force_primary(lb.0, c("k2").as_ptr(), 60_000) },
        LB_OK
    );
    let st = unsafe {
        lb_pick_replica(
            lb.0,
            c("k2").as_ptr(),
            dsn.as_mut_ptr().cast(),
            dsn.len(),
            &mut len,
            &mut route,
        )
    };
    assert_eq!(st, LB_OK);
    assert_eq!(route.reason, LB_REASON_FORCED_PRIMARY);
    let st = unsafe {
        lb_pick_replica_min_lsn(
            lb.0,
            c("1/x").as_ptr(),
            dsn.as_mut_ptr().cast(),
            dsn.len(),
            &mut len,
            &mut route,
        )
    };
    assert_eq!(st, LB_ERR_INVALID_LSN);
    assert!(last_error().starts_with("lb_pick_replica_min_lsn: invalid LSN"));
    // SAFETY: NULL is a no-op.
    unsafe { lb_balancer_free(ptr::null_mut()) };
}

/// Two pages: the first readable, the second not. [`Guarded::at_end`] puts bytes at the very
/// end of the first, so reading one byte past them faults.
struct Guarded {
    base: *mut u8,
    page: usize,
}

impl Guarded {
    fn new() -> Guarded {
        // SAFETY: plain libc calls; the mapping is checked and unmapped on drop.
        unsafe {
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap();
            let base = libc::mmap(
                ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let base = base.cast::<u8>();
            assert_eq!(
                libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE),
                0
            );
            Guarded { base, page }
        }
    }

    /// `bytes` as the last bytes before the inaccessible page, as a `lb_pick_opts` pointer.
    fn at_end(&self, bytes: &[u8]) -> *const lb_pick_opts {
        assert!(bytes.len() <= self.page);
        // SAFETY: the destination is within the first (writable) page.
        unsafe {
            let at = self.base.add(self.page - bytes.len());
            ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
            at.cast()
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: mapped by `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
    }
}

/// `lb_pick_opts` as a C caller lays it out, `size` bytes long (zeros past the fields), with
/// `struct_size` = `size`.
fn opts_bytes(size: usize, flags: u32, no_caught_up: u32) -> Vec<u8> {
    let mut b = vec![0u8; size.max(24)];
    b[0..4].copy_from_slice(&u32::try_from(size).unwrap().to_ne_bytes());
    b[4..8].copy_from_slice(&flags.to_ne_bytes());
    b[16..20].copy_from_slice(&no_caught_up.to_ne_bytes());
    b.truncate(size);
    b
}

/// `lb_pick_replica_opts` reads `struct_size` alone, refuses a size too small without reading
/// further, and reads no more than `struct_size` bytes: a struct from a smaller header, at the
/// end of its memory, is never read past (a read past it faults here), and a newer header's
/// fields it does not know are refused unless zero. It made a reference to a whole struct
/// before checking `struct_size` (undefined behaviour with a smaller one, though the builds
/// tried only loaded the field), and ignored a newer header's fields: that part fails on it.
#[test]
fn pick_opts_are_read_within_struct_size() {
    let lb = Lb::new(CONFIG);
    let mem = Guarded::new();
    let mut dsn = vec![0u8; 512];
    let mut len = 0;
    let pick = |opts: *const lb_pick_opts, dsn: &mut Vec<u8>, len: &mut usize| {
        // SAFETY: live handle, a DSN buffer, `opts` readable for its `struct_size` bytes.
        unsafe {
            lb_pick_replica_opts(
                lb.0,
                ptr::null(),
                ptr::null(),
                opts,
                dsn.as_mut_ptr().cast(),
                dsn.len(),
                len,
                ptr::null_mut(),
            )
        }
    };
    // Too small: refused, reading only `struct_size` (4 bytes, then the unmapped page).
    for size in [0u32, 4] {
        let opts = mem.at_end(&size.to_ne_bytes());
        assert_eq!(pick(opts, &mut dsn, &mut len), LB_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains(&format!("struct_size is {size}")),
            "{}",
            last_error()
        );
    }
    for size in [8, 16, 23] {
        let opts = mem.at_end(&opts_bytes(size, 0, 0));
        assert_eq!(pick(opts, &mut dsn, &mut len), LB_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains(&format!("struct_size is {size}")),
            "{}",
            last_error()
        );
    }
    // This header's size, at the end of the memory: read, fields honoured.
    let opts = mem.at_end(&opts_bytes(
        24,
        LB_PICK_CACHED_ONLY,
        LB_NO_CAUGHT_UP_PRIMARY,
    ));
    assert_eq!(pick(opts, &mut dsn, &mut len), LB_OK, "{}", last_error());
    let opts = mem.at_end(&opts_bytes(24, 0, 7));
    assert_eq!(pick(opts, &mut dsn, &mut len), LB_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("no_caught_up is 7"),
        "{}",
        last_error()
    );
    // A newer header's struct: its unknown fields zero, taken; set, refused (never ignored).
    let opts = mem.at_end(&opts_bytes(40, LB_PICK_CACHED_ONLY, 0));
    assert_eq!(pick(opts, &mut dsn, &mut len), LB_OK, "{}", last_error());
    let mut newer = opts_bytes(40, 0, 0);
    newer[33] = 1;
    assert_eq!(
        pick(mem.at_end(&newer), &mut dsn, &mut len),
        LB_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("byte 33 is set"), "{}", last_error());
    // A garbage size: refused without reading that far.
    let opts = mem.at_end(&opts_bytes(24, 0, 0));
    // SAFETY: the first 4 bytes are struct_size.
    unsafe { opts.cast_mut().cast::<u32>().write_unaligned(u32::MAX) };
    assert_eq!(pick(opts, &mut dsn, &mut len), LB_ERR_INVALID_ARGUMENT);
    assert!(
        last_error().contains("struct_size is 4294967295"),
        "{}",
        last_error()
    );
}

#[test]
fn the_token_length_in_the_header_is_the_token_types() {
    assert_eq!(
        crate::ffi::LB_TOKEN_MAX_LEN,
        crate::CausalToken::MAX_TEXT_LEN
    );
}
