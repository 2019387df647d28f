//! Property tests ("fuzzing" with proptest) of the C ABI, called as C would call it: random
//! bytes (invalid UTF-8, NUL inside, huge), NULL pointers and random buffer capacities.
//! Every call returns a status and never `LB_ERR_PANIC`; output buffers follow the rules of
//! `include/dlb.h` (nothing written past `cap`, the text and its NUL only when they fit,
//! `*len` set on success and on `LB_ERR_BUFFER_TOO_SMALL` only); the thread's last error never
//! holds the configuration's secret.
//!
//! Balancers are made on 127.0.0.1:1 (refused at once) with tiny timeouts, every address on
//! the loopback. `PROPTEST_CASES` sets the case count (`make fuzz` runs them long).

mod fuzz_common;

use std::ffi::{CStr, c_char};
use std::ptr;

use dlb::ffi::*;
use fuzz_common::{MARK, config, pct, primary_with_secret, secret};
use proptest::prelude::*;
use serde_json::json;

/// Cases per property under `cargo test`: balancer cases start a balancer each.
const CASES: u32 = 512;
const BALANCER_CASES: u32 = 128;

/// Filler of output buffers, to see what a call wrote.
const GUARD: u8 = 0xA5;
/// Bytes checked past `cap`.
const SLACK: usize = 32;
/// What `*len` holds before a call.
const UNSET: usize = usize::MAX - 7;

/// The thread's last error.
fn last_error() -> String {
    let n = lb_last_error_length();
    let mut buf = vec![GUARD; n + 1 + SLACK];
    // SAFETY: the buffer holds n + 1 bytes (and more).
    let m = unsafe { lb_last_error_message(buf.as_mut_ptr().cast(), n + 1) };
    assert_eq!(m, n);
    assert_eq!(buf[n], 0);
    assert!(buf[n + 1..].iter().all(|&b| b == GUARD));
    String::from_utf8(buf[..n].to_vec()).expect("the last error is UTF-8")
}

/// A C string argument: the bytes and a NUL (C sees them up to the first NUL), or NULL.
#[derive(Debug, Clone)]
struct CArg(Option<Vec<u8>>);

impl CArg {
    fn ptr(&self) -> *const c_char {
        self.0.as_ref().map_or(ptr::null(), |b| b.as_ptr().cast())
    }
}

/// Bytes of every kind, often near what the argument expects (`like`).
fn c_arg(like: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = CArg> {
    let bytes = prop_oneof![
        4 => like.prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => (1usize..200_000).prop_map(|n| vec![b'A'; n]),
        1 => Just(b"16/B3\xff74D848".to_vec()),
    ]
    .prop_map(|mut v| {
        // C stops at the first NUL: one is added at the end.
        v.push(0);
        Some(v)
    });
    prop_oneof![1 => Just(None), 9 => bytes].prop_map(CArg)
}

fn lsn_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| dlb::Lsn::from_u64(v).to_string()),
        "[0-9A-Fa-f]{0,9}/[0-9A-Fa-f]{0,9}",
    ]
}

/// An output buffer: its capacity, whether `buf` and `len` are NULL.
#[derive(Debug, Clone, Copy)]
struct OutSpec {
    cap: usize,
    null_buf: bool,
    null_len: bool,
}

fn out_spec() -> impl Strategy<Value = OutSpec> {
    (
        prop_oneof![0usize..4, 0usize..300, Just(4096usize), Just(65536usize)],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(cap, null_buf, null_len)| OutSpec {
            cap,
            null_buf,
            null_len,
        })
}

/// Calls `f` with an output buffer as `spec` says and checks the buffer rules. Returns the
/// status and, on success, the text.
fn with_out(
    spec: OutSpec,
    f: impl FnOnce(*mut c_char, usize, *mut usize) -> lb_status,
) -> Result<(lb_status, Option<String>), TestCaseError> {
    let mut buf = vec![GUARD; spec.cap + SLACK];
    let mut len = UNSET;
    let bp = if spec.null_buf {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let lp = if spec.null_len {
        ptr::null_mut()
    } else {
        &mut len as *mut usize
    };
    let st = f(bp, spec.cap, lp);
    prop_assert!(st != LB_ERR_PANIC, "panic: {}", last_error());
    prop_assert!(st <= LB_ERR_LOGGER_UNAVAILABLE, "unknown status {}", st);
    if spec.null_buf && spec.cap > 0 {
        prop_assert!(st != LB_OK && st != LB_ERR_BUFFER_TOO_SMALL, "{}", st);
    }
    let untouched = |from: usize| buf[from..].iter().all(|&b| b == GUARD);
    match st {
        LB_OK => {
            let n = buf.iter().position(|&b| b == 0);
            prop_assert!(n.is_some_and(|n| n < spec.cap), "no NUL within cap");
            let n = n.unwrap();
            if !spec.null_len {
                prop_assert_eq!(len, n, "*len is the text's length");
            }
            prop_assert!(untouched(n + 1), "written past the NUL");
            let text = String::from_utf8(buf[..n].to_vec());
            prop_assert!(text.is_ok(), "output is not UTF-8");
            Ok((st, Some(text.unwrap())))
        }
        LB_ERR_BUFFER_TOO_SMALL => {
            prop_assert!(untouched(0), "written on LB_ERR_BUFFER_TOO_SMALL");
            if !spec.null_len {
                prop_assert!(
                    len != UNSET && len >= spec.cap,
                    "*len {} with cap {}",
                    len,
                    spec.cap
                );
            }
            Ok((st, None))
        }
        _ => {
            prop_assert!(untouched(0), "written on status {}", st);
            prop_assert_eq!(len, UNSET, "*len set on status {}", st);
            Ok((st, None))
        }
    }
}

/// The last error after a failed call holds no secret.
fn check_error(st: lb_status) -> Result<(), TestCaseError> {
    if st != LB_OK {
        let e = last_error();
        prop_assert!(!e.contains(MARK), "last error: {}", e);
        prop_assert!(!e.is_empty(), "status {} without a message", st);
    }
    Ok(())
}

/// A configuration whose every address is on the loopback (nothing listens on the ports):
/// the primary with the secret, tiny timeouts, and now and then a field of the wrong type
/// holding a DSN with the secret.
fn balancer_config() -> impl Strategy<Value = String> {
    (
        primary_with_secret(),
        prop::sample::subsequence(vec!["127.0.0.1:2", "127.0.0.1:3", "[::1]:4"], 0..=3),
        (1u64..30, 1u64..50, 1u64..50, 0u64..20),
        prop::bool::ANY,
        prop::option::weighted(0.2, 1u64..50),
        prop::option::weighted(
            0.2,
            (
                prop::sample::select(vec!["probe_timeout_ms", "pool", "replicas", "sticky_ttl_s"]),
                secret(),
            ),
        ),
    )
        .prop_map(
            |(primary, hosts, (probe, connect, checkout, budget), error, redis, wrong)| {
                let mut c = json!({
                    "primary": primary,
                    "replicas": {"hosts": hosts},
                    "probe_timeout_ms": probe,
                    "replica_check_interval_ms": 1000,
                    "sticky_check_budget_ms": budget,
                    "no_caught_up_replica": if error { "error" } else { "primary" },
                    "pool": {"connect_timeout_ms": connect, "checkout_timeout_ms": checkout},
                });
                if let Some(op) = redis {
                    c["lsn_store"] =
                        json!({"redis": {"url": "redis://127.0.0.1:1", "op_timeout_ms": op}});
                }
                if let Some((field, s)) = wrong {
                    c[field] = json!(format!("postgres://u:{}@127.0.0.1:1/db", pct(&s)));
                }
                c.to_string()
            },
        )
}

/// One call on a live balancer.
#[derive(Debug, Clone)]
enum Op {
    PickReplica(Option<CArg>, OutSpec, bool),
    PickMinLsn(CArg, OutSpec, bool),
    RecordLsnValue(CArg, CArg),
    ForcePrimary(CArg, u64),
    ReportFailure(CArg),
    PrimaryDsn(OutSpec),
    StatusJson(OutSpec),
    MetricsText(OutSpec),
}

fn key() -> impl Strategy<Value = CArg> {
    c_arg(prop_oneof![
        "[a-z0-9:_-]{1,20}",
        Just("k".repeat(1025)),
        Just(String::new())
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (prop::option::of(key()), out_spec(), any::<bool>())
            .prop_map(|(k, o, r)| Op::PickReplica(k, o, r)),
        (c_arg(lsn_text()), out_spec(), any::<bool>())
            .prop_map(|(l, o, r)| Op::PickMinLsn(l, o, r)),
        (key(), c_arg(lsn_text())).prop_map(|(k, l)| Op::RecordLsnValue(k, l)),
        (key(), any::<u64>()).prop_map(|(k, t)| Op::ForcePrimary(k, t)),
        c_arg(prop_oneof![
            Just("127.0.0.1:2".to_string()),
            Just("127.0.0.1:1".to_string()),
            primary_with_secret()
        ])
        .prop_map(Op::ReportFailure),
        out_spec().prop_map(Op::PrimaryDsn),
        out_spec().prop_map(Op::StatusJson),
        out_spec().prop_map(Op::MetricsText),
    ]
}

/// A route the call must not write unless it succeeds.
const NO_ROUTE: lb_route = lb_route {
    role: 77,
    reason: 77,
};

/// Runs `op` on `lb` and checks the status, the buffers and the last error.
fn run(lb: *const lb_balancer, op: &Op) -> Result<(), TestCaseError> {
    let mut route = NO_ROUTE;
    let rp = |want: bool, route: &mut lb_route| {
        if want {
            route as *mut lb_route
        } else {
            ptr::null_mut()
        }
    };
    // SAFETY (all calls): every pointer is NULL or valid as the header says.
    let (st, secret_free_output) = match op {
        Op::PickReplica(k, o, r) => {
            let kp = k.as_ref().map_or(ptr::null(), CArg::ptr);
            let rp = rp(*r, &mut route);
            (
                with_out(*o, |b, c, l| unsafe {
                    lb_pick_replica(lb, kp, b, c, l, rp)
                })?
                .0,
                None,
            )
        }
        Op::PickMinLsn(m, o, r) => {
            let rp = rp(*r, &mut route);
            let st = with_out(*o, |b, c, l| unsafe {
                lb_pick_replica_min_lsn(lb, m.ptr(), b, c, l, rp)
            })?
            .0;
            (st, None)
        }
        Op::RecordLsnValue(k, l) => (unsafe { lb_record_lsn_value(lb, k.ptr(), l.ptr()) }, None),
        Op::ForcePrimary(k, t) => (unsafe { lb_force_primary(lb, k.ptr(), *t) }, None),
        Op::ReportFailure(d) => (unsafe { lb_report_failure(lb, d.ptr()) }, None),
        Op::PrimaryDsn(o) => (
            with_out(*o, |b, c, l| unsafe { lb_primary_dsn(lb, b, c, l) })?.0,
            None,
        ),
        Op::StatusJson(o) => with_out(*o, |b, c, l| unsafe { lb_status_json(lb, b, c, l) })?,
        Op::MetricsText(o) => with_out(*o, |b, c, l| unsafe { lb_metrics_text(lb, b, c, l) })?,
    };
    prop_assert!(st != LB_ERR_PANIC, "panic in {:?}: {}", op, last_error());
    prop_assert!(st <= LB_ERR_LOGGER_UNAVAILABLE, "unknown status {}", st);
    if st != LB_OK {
        prop_assert_eq!(route, NO_ROUTE, "route written on status {}", st);
    }
    if let Some(text) = secret_free_output {
        prop_assert!(!text.contains(MARK), "{:?} shows the secret", op);
    }
    check_error(st)
}

proptest! {
    #![proptest_config(config(BALANCER_CASES))]

    /// `lb_balancer_new` with configurations on the loopback, then random calls on it.
    #[test]
    fn balancer_calls(json in balancer_config(), ops in prop::collection::vec(op(), 0..12), null_out in prop::bool::weighted(0.05)) {
        let mut text = json.into_bytes();
        text.push(0);
        let mut lb: *mut lb_balancer = ptr::null_mut();
        let out = if null_out { ptr::null_mut() } else { &mut lb as *mut *mut lb_balancer };
        // SAFETY: a C string and an out pointer (or NULL).
        let st = unsafe { lb_balancer_new(text.as_ptr().cast(), out) };
        prop_assert!(st != LB_ERR_PANIC, "panic: {}", last_error());
        check_error(st)?;
        if st != LB_OK {
            prop_assert!(lb.is_null(), "*out written on status {}", st);
            return Ok(());
        }
        prop_assert!(!lb.is_null());
        let result = ops.iter().try_for_each(|op| run(lb, op));
        // SAFETY: made by lb_balancer_new, freed once.
        unsafe { lb_balancer_free(lb) };
        result?;
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// `lb_balancer_new` with bytes that are no valid configuration (checked first with
    /// `Config::from_json`, so no balancer is ever started on an address of chance).
    #[test]
    fn balancer_new_rejects_garbage(arg in c_arg(prop_oneof![
        primary_with_secret().prop_map(|p| json!({"primary": p, "bogus": 1}).to_string()),
        primary_with_secret().prop_map(|p| format!(r#"{{"primary": "{p}""#)),
        "[{}\\[\\]\":, a-z0-9]{0,40}",
    ])) {
        let valid = arg.0.as_ref().is_some_and(|b| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            std::str::from_utf8(&b[..end]).is_ok_and(|s| dlb::Config::from_json(s).is_ok())
        });
        prop_assume!(!valid);
        let mut lb: *mut lb_balancer = ptr::null_mut();
        // SAFETY: a C string or NULL, and an out pointer.
        let st = unsafe { lb_balancer_new(arg.ptr(), &mut lb) };
        prop_assert!(st == LB_ERR_INVALID_ARGUMENT || st == LB_ERR_INVALID_CONFIG, "status {}", st);
        prop_assert!(lb.is_null());
        check_error(st)?;
    }

    /// `lb_dsn_redact`: DSNs with the secret in a hidden value, and any bytes; the secret is
    /// never in the output nor in the last error.
    #[test]
    fn dsn_redact(arg in c_arg(primary_with_secret()), o in out_spec()) {
        let from_generator = arg.0.as_ref().is_some_and(|b| {
            let s = String::from_utf8_lossy(b);
            s.contains(MARK) && s.contains("127.0.0.1:1") || s.contains("host=127.0.0.1 port=1")
        });
        // SAFETY: a C string or NULL, and a buffer as `o` says.
        let (st, text) = with_out(o, |b, c, l| unsafe { lb_dsn_redact(arg.ptr(), b, c, l) })?;
        prop_assert!(matches!(st, LB_OK | LB_ERR_BUFFER_TOO_SMALL | LB_ERR_INVALID_ARGUMENT), "{}", st);
        if from_generator {
            prop_assert!(!text.unwrap_or_default().contains(MARK));
        }
        check_error(st)?;
    }

    /// The static names: never NULL, UTF-8, short, whatever the number.
    #[test]
    fn names_of_any_number(n in prop_oneof![0u32..32, any::<u32>()]) {
        for p in [lb_status_str(n), lb_reason_str(n), lb_role_str(n)] {
            prop_assert!(!p.is_null());
            // SAFETY: the functions return static NUL-terminated strings.
            let s = unsafe { CStr::from_ptr(p) }.to_str();
            prop_assert!(s.is_ok_and(|s| !s.is_empty() && s.len() < 100));
        }
        let _ = lb_status_is_retryable(n);
    }

    /// `lb_last_error_message` into any buffer: the full length back, a NUL-terminated prefix
    /// cut at a character boundary, nothing past `cap`.
    #[test]
    fn last_error_into_any_buffer(cap in 0usize..80, multibyte in any::<bool>()) {
        // A failure whose message has multi-byte characters (a name with `é`... is not
        // quoted: use the UTF-8 error, whose message is ASCII, or a key error).
        let bad: &[u8] = if multibyte { b"\xff\0" } else { b"{\0" };
        let mut lb = ptr::null_mut();
        // SAFETY: a C string and an out pointer.
        unsafe { lb_balancer_new(bad.as_ptr().cast(), &mut lb) };
        let full = last_error();
        let mut buf = vec![GUARD; cap + SLACK];
        // SAFETY: the buffer holds cap bytes.
        let n = unsafe { lb_last_error_message(buf.as_mut_ptr().cast(), cap) };
        prop_assert_eq!(n, full.len());
        if cap > 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap();
            prop_assert!(end < cap);
            prop_assert!(full.as_bytes().starts_with(&buf[..end]));
            prop_assert!(buf[end + 1..].iter().all(|&b| b == GUARD));
        } else {
            prop_assert!(buf.iter().all(|&b| b == GUARD));
        }
    }
}
