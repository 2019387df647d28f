//! Connection-string helpers that need no balancer.

use std::ffi::c_char;

use super::boundary::{OutStr, arg_str};
use super::error::Failure;
use super::status::lb_status;
use crate::dsn::{Dsn, redact_dsn};

/// Writes `dsn` (a libpq `key=value` connection string or a `postgres://` URL) with its
/// password replaced by `********` into `buf` (output string rules: see the top of dlb.h):
/// safe for logs. The DSN is parsed and re-rendered, as the redacted DSNs of
/// `lb_status_json()` are. Text that dlb cannot parse as a DSN gives `********` alone (a
/// password may stand anywhere in it, so none of it is echoed); that is not an error.
///
/// Needs no balancer. Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT`, `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_dsn_redact(
    dsn: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_dsn_redact", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let dsn = unsafe { arg_str(dsn, "dsn") }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        out.put(&redact_dsn(dsn))
    })
}

/// Writes the `host:port` that `dsn` connects to (its first host; `hostaddr` wins over
/// `host`; IPv6 in brackets; port 5432 when none is given; `localhost` when no host is) into
/// `buf` (output string rules: see the top of dlb.h): the label dlb uses in logs, metrics and
/// status, read with the same parser that derives replica DSNs.
///
/// Needs no balancer. Never blocks.
///
/// Errors: `LB_ERR_INVALID_ARGUMENT` (also when `dsn` is not a DSN: the message says where,
/// never quoting it), `LB_ERR_BUFFER_TOO_SMALL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_dsn_address(
    dsn: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> lb_status {
    ffi_boundary!("lb_dsn_address", Result<(), Failure>, {
        // SAFETY (all blocks): pointer arguments follow the module contract.
        let dsn = unsafe { arg_str(dsn, "dsn") }?;
        let out = unsafe { OutStr::new(buf, cap, len, "buf") }?;
        let parsed = Dsn::parse(dsn, "dsn").map_err(|e| {
            Failure::new(
                super::status::LB_ERR_INVALID_ARGUMENT,
                format!("argument `dsn`: {e}"),
            )
        })?;
        out.put(&parsed.host_port().to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::ptr;

    use super::*;
    use crate::ffi::{
        LB_ERR_BUFFER_TOO_SMALL, LB_ERR_INVALID_ARGUMENT, LB_OK, lb_last_error_length,
        lb_last_error_message,
    };

    fn last_error() -> String {
        let mut buf = vec![0u8; lb_last_error_length() + 1];
        // SAFETY: the buffer holds buf.len() bytes.
        let n = unsafe { lb_last_error_message(buf.as_mut_ptr().cast(), buf.len()) };
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// `lb_dsn_redact` into a buffer of `cap` bytes: the status, the length and the text.
    fn redact(dsn: *const c_char, cap: usize) -> (lb_status, usize, String) {
        let mut buf = vec![b'#'; cap];
        let mut len = usize::MAX;
        let p = if cap == 0 {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: `buf` holds `cap` bytes; `dsn` is NULL or a C string.
        let st = unsafe { lb_dsn_redact(dsn, p, cap, &mut len) };
        let text = buf
            .iter()
            .position(|&b| b == 0)
            .map_or_else(String::new, |n| {
                String::from_utf8(buf[..n].to_vec()).unwrap()
            });
        (st, len, text)
    }

    #[test]
    fn redacts_and_follows_the_buffer_rules() {
        let dsn = CString::new("host=db1 user=app password=hunter2 dbname=app").unwrap();
        let want = "host=db1 user=app password=******** dbname=app";
        assert_eq!(redact(dsn.as_ptr(), 256), (LB_OK, want.len(), want.into()));
        // A size query, then a buffer one byte short: the length only, no text.
        for cap in [0, want.len()] {
            let (st, len, text) = redact(dsn.as_ptr(), cap);
            assert_eq!(
                (st, len, text.as_str()),
                (LB_ERR_BUFFER_TOO_SMALL, want.len(), "")
            );
            assert!(!last_error().contains("hunter2"));
        }
        assert_eq!(
            redact(dsn.as_ptr(), want.len() + 1),
            (LB_OK, want.len(), want.into())
        );
        let bad = CString::new("host=db1 password=hunter2 port=x").unwrap();
        assert_eq!(redact(bad.as_ptr(), 64), (LB_OK, 8, "********".into()));
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let (st, len, _) = redact(ptr::null(), 64);
        assert_eq!((st, len), (LB_ERR_INVALID_ARGUMENT, usize::MAX));
        assert_eq!(last_error(), "lb_dsn_redact: argument `dsn` is NULL");
        let dsn = CString::new("host=db1").unwrap();
        let mut len = 0;
        // SAFETY: a NULL buffer with a capacity is rejected before any write.
        let st = unsafe { lb_dsn_redact(dsn.as_ptr(), ptr::null_mut(), 8, &mut len) };
        assert_eq!(st, LB_ERR_INVALID_ARGUMENT);
        assert_eq!(
            last_error(),
            "lb_dsn_redact: argument `buf` is NULL but its capacity is 8"
        );
        let latin1 = CString::new(b"host=db1 password=caf\xe9".to_vec()).unwrap();
        assert_eq!(redact(latin1.as_ptr(), 64).0, LB_ERR_INVALID_ARGUMENT);
        assert_eq!(
            last_error(),
            "lb_dsn_redact: argument `dsn` is not valid UTF-8 (at byte 21)"
        );
    }

    #[test]
    fn address_of_both_syntaxes() {
        for (dsn, want) in [
            ("host=db1 port=5433 password=SECRET", "db1:5433"),
            ("postgres://u:SECRET@[::1]:6432/app", "[::1]:6432"),
            ("postgresql://h%2Dx/app", "h-x:5432"),
            ("dbname=app", "localhost:5432"),
        ] {
            let dsn = CString::new(dsn).unwrap();
            let mut buf = vec![0u8; 64];
            let mut len = 0usize;
            // SAFETY: valid string, buffer of buf.len() bytes.
            let st = unsafe {
                lb_dsn_address(dsn.as_ptr(), buf.as_mut_ptr().cast(), buf.len(), &mut len)
            };
            assert_eq!(st, LB_OK);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), want);
        }
        let bad = CString::new("host=h password=SECRET bogus=1").unwrap();
        let mut buf = vec![0u8; 64];
        // SAFETY: as above.
        let st = unsafe {
            lb_dsn_address(
                bad.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                ptr::null_mut(),
            )
        };
        assert_eq!(st, LB_ERR_INVALID_ARGUMENT);
        assert!(!last_error().contains("SECRET"), "{}", last_error());
    }
}
