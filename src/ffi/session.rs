//! What a borrower may leave on a pooled connection: the rule the bindings' own pools use to
//! tell a statement that leaves the session as it found it.

use std::ffi::c_char;

use crate::server::session::is_plain_read_text;

/// True when `sql` (`len` bytes, in any encoding PostgreSQL accepts; no NUL needed) is one
/// plain read: a `SELECT`, `VALUES`, `TABLE`, `WITH` or `SHOW` that names none of the built-in
/// ways a statement changes its session (`set_config`, `nextval`, advisory locks, `SELECT ...
/// INTO`, a data-modifying `WITH`, `FOR UPDATE`...), with nothing after a `;` but white space.
/// Errs on the side of false: such a word anywhere in the text (a string, a comment, a quoted
/// name), or a `;` inside it, counts. What it cannot see: a function, view, rule or trigger
/// of your own that changes the session. The rule dlb's own pools use: a connection on which
/// only plain reads ran (outside a transaction) needs no reset before its next borrower.
///
/// `sql` NULL gives false. Needs no balancer. Never blocks, never fails.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lb_is_plain_read(sql: *const c_char, len: usize) -> bool {
    ffi_boundary!("lb_is_plain_read", bool, {
        if sql.is_null() {
            return false;
        }
        // SAFETY: the caller passes `len` readable bytes at `sql`.
        let text = unsafe { std::slice::from_raw_parts(sql.cast::<u8>(), len) };
        is_plain_read_text(text)
    })
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;

    fn plain(sql: &[u8]) -> bool {
        // SAFETY: the slice holds sql.len() bytes.
        unsafe { lb_is_plain_read(sql.as_ptr().cast(), sql.len()) }
    }

    #[test]
    fn reads_the_given_bytes_only() {
        assert!(plain(b"SELECT 1"));
        assert!(plain(b"SHOW search_path;"));
        assert!(!plain(b"SET search_path = nowhere"));
        assert!(!plain(b"SELECT 1; LISTEN c"));
        // Bytes past `len` are never read: "SELECT 1" of "SELECT 1; DISCARD ALL".
        assert!(plain(&b"SELECT 1; DISCARD ALL"[..8]));
        assert!(!plain(b""));
        // SAFETY: NULL is allowed.
        assert!(!unsafe { lb_is_plain_read(ptr::null(), 3) });
    }
}
