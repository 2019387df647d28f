//! The monotonic record script and the fixed-width LSN encoding it relies on.

use redis::{Cmd, ConnectionLike, ErrorKind, RedisResult, ServerErrorKind, Value};

use crate::lsn::Lsn;

/// The monotonic update, run atomically by Redis. `KEYS[1]`: the key; `ARGV[1]`: the LSN as
/// exactly 16 uppercase hex digits; `ARGV[2]`: the TTL in milliseconds. Returns the LSN now
/// stored.
///
/// Equal-width uppercase hex strings order like the numbers they spell, so the script compares
/// bytes. It does so with `string.byte` rather than Lua's `<` on strings, which calls `strcoll`
/// and so depends on the server's `LC_COLLATE`. A stored value that is not 16 uppercase hex
/// digits (written by something else) is replaced.
pub const RECORD_SCRIPT: &str = r#"
local new = ARGV[1]
local cur = redis.call('GET', KEYS[1])
if cur and string.len(cur) == 16 and not string.find(cur, '[^0-9A-F]') then
  local keep = (cur == new)
  if not keep then
    local i = 1
    while string.byte(cur, i) == string.byte(new, i) do i = i + 1 end
    keep = string.byte(cur, i) > string.byte(new, i)
  end
  if keep then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
end
redis.call('SET', KEYS[1], new, 'PX', ARGV[2])
return new
"#;

/// The fixed-width form stored in Redis: 16 uppercase hex digits (`%016X`).
pub(crate) fn encode_lsn(lsn: Lsn) -> String {
    format!("{:016X}", lsn.as_u64())
}

/// Inverse of [`encode_lsn`]; `None` for anything else (lowercase included).
pub(crate) fn decode_lsn(v: &[u8]) -> Option<Lsn> {
    if v.len() != 16 || !v.iter().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    let s = std::str::from_utf8(v).ok()?;
    u64::from_str_radix(s, 16).ok().map(Lsn::from_u64)
}

/// `EVALSHA`, or `EVAL` when the server does not have the script cached (after a restart or a
/// `SCRIPT FLUSH`, or on a Cluster node that has not run it yet).
pub(super) fn run_record(
    conn: &mut dyn ConnectionLike,
    sha: &str,
    key: &str,
    lsn: &str,
    ttl_ms: u64,
) -> RedisResult<Value> {
    let mut evalsha = Cmd::new();
    evalsha
        .arg("EVALSHA")
        .arg(sha)
        .arg(1)
        .arg(key)
        .arg(lsn)
        .arg(ttl_ms);
    match request(conn, &evalsha) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let mut eval = Cmd::new();
            eval.arg("EVAL")
                .arg(RECORD_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(lsn)
                .arg(ttl_ms);
            request(conn, &eval)
        }
        r => r,
    }
}

/// Sends `cmd` and turns an error reply into an `Err`: a standalone connection hands error
/// replies back as `Ok(Value::ServerError)`, a cluster connection as `Err`.
pub(super) fn request(conn: &mut dyn ConnectionLike, cmd: &Cmd) -> RedisResult<Value> {
    conn.req_command(cmd).and_then(Value::extract_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_fixed_width_and_ordered() {
        let cases = [
            0u64,
            1,
            0xF,
            0x10,
            0x16_B374_D848,
            (1 << 53) - 1,
            1 << 53,
            (1 << 53) + 1,
            0xFFFF_FFFF_FFFF_FF00,
            0xFFFF_FFFF_FFFF_FF01,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in cases.windows(2) {
            let (a, b) = (
                encode_lsn(Lsn::from_u64(w[0])),
                encode_lsn(Lsn::from_u64(w[1])),
            );
            assert_eq!((a.len(), b.len()), (16, 16));
            assert!(a < b, "{a} < {b}: byte order is numeric order");
        }
        for v in cases {
            let e = encode_lsn(Lsn::from_u64(v));
            assert_eq!(decode_lsn(e.as_bytes()), Some(Lsn::from_u64(v)), "{e}");
        }
        assert_eq!(encode_lsn(Lsn::from_u64(u64::MAX)), "FFFFFFFFFFFFFFFF");
        assert_eq!(
            encode_lsn("16/B374D848".parse().unwrap()),
            "00000016B374D848"
        );
        for bad in [
            "",
            "0",
            "00000016b374d848",
            "00000016B374D84G",
            "100000016B374D848",
        ] {
            assert_eq!(decode_lsn(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
