//! The Lua scripts that keep a key's entry (atomically, on the Redis server) and the
//! fixed-width LSN encoding they rely on.
//!
//! # The entry
//!
//! One Redis hash per sticking key, every command on that one key (a Cluster needs no hash
//! tags):
//!
//! * field `lsn`: the recorded LSN as exactly 16 uppercase hex digits ([`encode_lsn`]);
//!   absent when only a force was set;
//! * field `forced_until`: the end of the force, in milliseconds since the epoch on the Redis
//!   server's clock (`TIME`), in decimal; absent when never forced. Every instance of a fleet
//!   compares it with the same clock, whatever the skew between their own clocks;
//! * the key's expiry (`PEXPIRE`): the entry's life, only ever extended.
//!
//! Equal-width uppercase hex strings order like the numbers they spell, so the scripts compare
//! LSNs byte by byte (`string.byte`; Lua's `<` on strings calls `strcoll` and so depends on
//! the server's `LC_COLLATE`) and never turn one into a Lua number (a double, exact only up
//! to 2^53). Times are Lua numbers: milliseconds since the epoch plus at most
//! [`crate::MAX_TTL`] stay far below 2^53.
//!
//! A value of the previous format (a plain string of 16 hex digits: an LSN) is read as that
//! LSN, not forced, and turned into a hash (keeping its remaining life) by the next record or
//! force. Anything else found at the key (written by something else) is replaced by a record
//! or a force, and read as an error (the read goes to the primary).

use redis::{Cmd, ConnectionLike, ErrorKind, RedisResult, ServerErrorKind, Value};

use crate::lsn::Lsn;

/// Helpers shared by the scripts (prepended to each). `KEYS[1]` is the entry's key.
macro_rules! prelude {
    () => {
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local key = KEYS[1]
local function is_lsn(v)
  return type(v) == 'string' and string.len(v) == 16 and not string.find(v, '[^0-9A-F]')
end
local function newer(a, b)
  if a == b then return false end
  local i = 1
  while string.byte(a, i) == string.byte(b, i) do i = i + 1 end
  return string.byte(a, i) > string.byte(b, i)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function as_hash()
  local t = redis.call('TYPE', key)['ok']
  if t == 'hash' or t == 'none' then return end
  local old, left = false, -1
  if t == 'string' then
    old = redis.call('GET', key)
    left = redis.call('PTTL', key)
  end
  redis.call('DEL', key)
  if is_lsn(old) then
    redis.call('HSET', key, 'lsn', old)
    if left > 0 then redis.call('PEXPIRE', key, left) end
  end
end
local function epoch()
  local ok, id = pcall(redis.call, 'CLUSTER', 'MYID')
  if not ok or type(id) ~= 'string' then id = '' end
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  local ev = string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)') or ''
  local cs = redis.call('INFO', 'commandstats')
  local fa = string.match(cs, 'cmdstat_flushall:calls=(%d+)') or '0'
  local fd = string.match(cs, 'cmdstat_flushdb:calls=(%d+)') or '0'
  return id, run .. ' ' .. ev .. ' ' .. fa .. ' ' .. fd
end
local function extend(ttl)
  ttl = math.max(ttl, 1)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
"#
    };
}

/// Records an LSN. `ARGV[1]`: the LSN ([`encode_lsn`]); `ARGV[2]`: the TTL in milliseconds
/// (0 lets the entry live 1 ms: `PEXPIRE` needs a positive time). Keeps the newer of the stored
/// and the given LSN, leaves `forced_until` alone, extends the key's life to at least the TTL.
/// Returns `[the LSN now stored, node, epoch]` (see [`EPOCH_SCRIPT`]).
pub(crate) const RECORD_SCRIPT: &str = concat!(
    prelude!(),
    r#"
local new = ARGV[1]
as_hash()
local cur = redis.call('HGET', key, 'lsn')
if not is_lsn(cur) or newer(new, cur) then
  redis.call('HSET', key, 'lsn', new)
  cur = new
end
extend(tonumber(ARGV[2]))
local node, ep = epoch()
return {cur, node, ep}
"#
);

/// Forces the key to the primary. `ARGV[1]`: the TTL in milliseconds (0 does nothing). Moves
/// `forced_until` to the server's now + TTL unless it is later already, leaves `lsn` alone,
/// extends the key's life to at least the TTL. Returns 1.
pub(crate) const FORCE_SCRIPT: &str = concat!(
    prelude!(),
    r#"
local ttl = tonumber(ARGV[1])
local untl = now_ms() + ttl
as_hash()
local cur = tonumber(redis.call('HGET', key, 'forced_until'))
if ttl > 0 and (not cur or cur < untl) then
  redis.call('HSET', key, 'forced_until', string.format('%.0f', untl))
end
extend(ttl)
return 1
"#
);

/// Reads the entry: `[lsn or nil, 1 if forced now (server clock) else 0]`, and when there is
/// none, `[nil, 0, node, epoch]` (see [`EPOCH_SCRIPT`]: a key with nothing may have been
/// lost). Writes nothing. For a value of another type than a hash or a string, the LSN slot
/// holds `type:<type>` (which is no LSN: the caller reports it).
pub(crate) const GET_SCRIPT: &str = concat!(
    prelude!(),
    r#"
local t = redis.call('TYPE', key)['ok']
if t == 'none' then
  local node, ep = epoch()
  return {false, 0, node, ep}
end
if t == 'string' then return {redis.call('GET', key), 0} end
if t ~= 'hash' then return {'type:' .. t, 0} end
local v = redis.call('HMGET', key, 'lsn', 'forced_until')
local untl = tonumber(v[2])
if untl and untl > now_ms() then return {v[1], 1} end
return {v[1], 0}
"#
);

/// The server's loss epoch: `[node, epoch]`. `node` is the Cluster node's id (stable across
/// its restarts; empty on a standalone server); `epoch` changes whenever the server may have
/// lost keys: its `run_id` (a restart, a failover to a replica), its `evicted_keys`, and its
/// `FLUSHALL` / `FLUSHDB` counts. Runs on no key (a Cluster runs it on any node). Writes
/// nothing.
pub(crate) const EPOCH_SCRIPT: &str = concat!(
    prelude!(),
    r#"
local node, ep = epoch()
return {node, ep}
"#
);

/// A script and its SHA-1, for `EVALSHA`.
pub(crate) struct Script {
    pub(crate) source: &'static str,
    pub(crate) sha: String,
}

impl Script {
    pub(crate) fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: redis::Script::new(source).get_hash().to_string(),
        }
    }
}

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

/// Runs `script` on `key` (or on none) with `args`: `EVALSHA`, or `EVAL` when the server does not have the
/// script cached (after a restart or a `SCRIPT FLUSH`, or on a Cluster node that has not run
/// it yet).
pub(super) fn run_script(
    conn: &mut dyn ConnectionLike,
    script: &Script,
    key: Option<&str>,
    args: &[&str],
) -> RedisResult<Value> {
    let call = |verb: &str, body: &str| {
        let mut c = Cmd::new();
        c.arg(verb).arg(body);
        match key {
            Some(key) => c.arg(1).arg(key),
            None => c.arg(0),
        };
        for a in args {
            c.arg(*a);
        }
        c
    };
    match request(conn, &call("EVALSHA", &script.sha)) {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            request(conn, &call("EVAL", script.source))
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

    /// Every command of every script is on `KEYS[1]` (or `TIME`): one key, so a Cluster needs
    /// no hash tags. And no LSN is ever made a Lua number: `tonumber` only sees times and TTLs.
    #[test]
    fn scripts_touch_one_key_and_never_make_an_lsn_a_number() {
        for (name, script, ttl_arg) in [
            ("record", RECORD_SCRIPT, "ARGV[2]"),
            ("force", FORCE_SCRIPT, "ARGV[1]"),
            ("get", GET_SCRIPT, "-"),
        ] {
            assert!(script.contains("local key = KEYS[1]"), "{name}");
            assert!(!script.contains("KEYS[2]"), "{name}");
            for call in script.split("redis.call(").skip(1) {
                let args = call.split(')').next().unwrap();
                let mut args = args.split(',').map(str::trim);
                let cmd = args.next().unwrap();
                if !["'TIME'", "'INFO'"].contains(&cmd) {
                    assert_eq!(args.next(), Some("key"), "{name}: redis.call({call:.40}");
                }
            }
            for arg in script.split("tonumber(").skip(1) {
                let arg = arg.split(')').next().unwrap();
                assert!(
                    ["t[1]", "t[2]", "v[2]", ttl_arg].contains(&arg)
                        || arg == "redis.call('HGET', key, 'forced_until'",
                    "{name}: tonumber({arg})"
                );
            }
        }
    }

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
