//! PostgreSQL write-ahead-log positions (`pg_lsn`).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A PostgreSQL WAL position (`pg_lsn`), printed and parsed in PostgreSQL's `X/Y` hex form.
///
/// Underneath it is a `u64` (`X` is the high 32 bits, `Y` the low 32 bits), so positions compare
/// as integers over the whole 64-bit range. An LSN is also a *causal token*: a caller that wrote
/// at LSN `L` can carry `L.to_string()` in a header or a job and later ask for a replica that has
/// replayed at least `L` ([`crate::Balancer::pick_replica_min_lsn`]).
///
/// ```
/// use dlb::Lsn;
/// let lsn: Lsn = "16/B374D848".parse().unwrap();
/// assert_eq!(lsn.as_u64(), 0x16_B374_D848);
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// assert!("FFFFFFFF/FFFFFF00".parse::<Lsn>().unwrap() < "FFFFFFFF/FFFFFF01".parse().unwrap());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The zero position, `0/0`: older than every real LSN.
    pub const ZERO: Lsn = Lsn(0);

    /// Longest accepted textual form: `FFFFFFFF/FFFFFFFF`.
    pub const MAX_TEXT_LEN: usize = 17;

    /// Builds an LSN from its 64-bit value.
    pub const fn from_u64(v: u64) -> Lsn {
        Lsn(v)
    }

    /// The 64-bit value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Bytes from `older` to `self`, 0 when `older` is not older (PostgreSQL's `pg_wal_lsn_diff`
    /// clamped at zero).
    pub fn bytes_since(self, older: Lsn) -> u64 {
        self.0.saturating_sub(older.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Parses `X/Y` where `X` and `Y` are 1 to 8 hex digits (either case).
    ///
    /// # Errors
    /// [`Error::InvalidLsn`] naming the input and what is wrong with it.
    fn from_str(s: &str) -> Result<Lsn, Error> {
        let bad = |why: &str| Error::InvalidLsn {
            input: truncate_for_message(s),
            reason: why.to_string(),
        };
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| bad("expected the form X/Y, e.g. 16/B374D848"))?;
        let half = |part: &str, name: &str| -> Result<u64, Error> {
            if part.is_empty() || part.len() > 8 {
                return Err(bad(&format!("{name} must be 1 to 8 hex digits")));
            }
            if !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("{name} is not hexadecimal")));
            }
            u64::from_str_radix(part, 16).map_err(|_| bad(&format!("{name} is not hexadecimal")))
        };
        Ok(Lsn(
            (half(hi, "the part before '/'")? << 32) | half(lo, "the part after '/'")?
        ))
    }
}

/// A causal token: the WAL position a write reached, with the cluster (`system_identifier`) and
/// the timeline it was written on, so that a read elsewhere (another process, another
/// request) never compares it with a position of another cluster or of another branch of the
/// cluster's history (after a failover). Made by [`crate::Balancer::record_token`], read by
/// [`crate::Balancer::pick_replica_token`].
///
/// Text form (`Display` / `FromStr`): `v2:X/Y:T:S`, with the LSN as PostgreSQL prints it, the
/// timeline in decimal and the system identifier as 16 lower-case hex digits, e.g.
/// `v2:16/B374D848:3:6b0e5c2f9d1a4e77`: safe in a header, a cookie or a job argument. A bare
/// LSN (`X/Y`, the token of 0.2 and of [`crate::Balancer::record_lsn`]) is read too, with no
/// cluster and no timeline: it is then compared on the primary's current timeline, and sent
/// to the primary while a timeline change is recent (see `docs/concepts.md`).
///
/// ```
/// use dlb::{CausalToken, Lsn};
/// let t: CausalToken = "v2:16/B374D848:3:6b0e5c2f9d1a4e77".parse().unwrap();
/// assert_eq!((t.lsn, t.timeline, t.system_id), ("16/B374D848".parse::<Lsn>().unwrap(), 3, 0x6b0e5c2f9d1a4e77));
/// assert_eq!(t.to_string(), "v2:16/B374D848:3:6b0e5c2f9d1a4e77");
/// let old: CausalToken = "16/B374D848".parse().unwrap();
/// assert_eq!((old.timeline, old.system_id), (0, 0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CausalToken {
    /// The position the write reached.
    pub lsn: Lsn,
    /// The primary's timeline it was written on; 0: unknown (a bare LSN).
    pub timeline: u32,
    /// The cluster's `system_identifier`; 0: unknown (a bare LSN).
    pub system_id: u64,
}

impl CausalToken {
    /// Longest accepted text form.
    pub const MAX_TEXT_LEN: usize = 3 + Lsn::MAX_TEXT_LEN + 1 + 10 + 1 + 16;
}

impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timeline == 0 && self.system_id == 0 {
            return write!(f, "{}", self.lsn);
        }
        write!(
            f,
            "v2:{}:{}:{:016x}",
            self.lsn, self.timeline, self.system_id
        )
    }
}

impl FromStr for CausalToken {
    type Err = Error;

    /// Parses `v2:X/Y:T:S` or a bare LSN `X/Y`.
    ///
    /// # Errors
    /// [`Error::InvalidLsn`] naming the input and what is wrong with it.
    fn from_str(s: &str) -> Result<CausalToken, Error> {
        let Some(rest) = s.strip_prefix("v2:") else {
            return Ok(CausalToken {
                lsn: s.parse()?,
                timeline: 0,
                system_id: 0,
            });
        };
        let bad = |why: &str| Error::InvalidLsn {
            input: truncate_for_message(s),
            reason: why.to_string(),
        };
        let mut parts = rest.split(':');
        let (Some(lsn), Some(timeline), Some(system), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected a causal token v2:X/Y:TIMELINE:SYSTEM_ID"));
        };
        let lsn: Lsn = lsn.parse().map_err(|_| bad("its LSN is not X/Y"))?;
        let timeline = timeline
            .parse::<u32>()
            .ok()
            .filter(|t| *t > 0 && timeline.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("its timeline is not a positive decimal number"))?;
        if system.len() != 16 || !system.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("its system identifier is not 16 hex digits"));
        }
        let system_id =
            u64::from_str_radix(system, 16).map_err(|_| bad("its system identifier is not hex"))?;
        Ok(CausalToken {
            lsn,
            timeline,
            system_id,
        })
    }
}

/// What a standby was seen to have replayed: its replay LSN and the timeline it receives (or,
/// with no WAL receiver running, the timeline of its last restart point). Positions of two
/// timelines are not comparable: after a failover, a standby left on the old timeline may have
/// replayed past every position of the new one (see `crate::freshness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    /// `pg_last_wal_replay_lsn()`.
    pub(crate) lsn: Lsn,
    /// The timeline of that WAL; 0 when unknown.
    pub(crate) timeline: u32,
}

/// Keeps error messages bounded when a caller hands us a huge string.
pub(crate) fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let t = CausalToken {
            lsn: Lsn::from_u64(0x16_B374_D848),
            timeline: 3,
            system_id: 0x6b0e_5c2f_9d1a_4e77,
        };
        let text = t.to_string();
        assert!(text.len() <= CausalToken::MAX_TEXT_LEN);
        assert_eq!(text.parse::<CausalToken>().unwrap(), t);
        let max = CausalToken {
            lsn: Lsn::from_u64(u64::MAX),
            timeline: u32::MAX,
            system_id: u64::MAX,
        };
        assert_eq!(max.to_string().len(), CausalToken::MAX_TEXT_LEN);
        let bare: CausalToken = "0/1".parse().unwrap();
        assert_eq!(
            (bare.lsn, bare.timeline, bare.system_id),
            (Lsn::from_u64(1), 0, 0)
        );
        assert_eq!(bare.to_string(), "0/1");
        for bad in [
            "v2:",
            "v2:0/1",
            "v2:0/1:3",
            "v2:0/1:0:6b0e5c2f9d1a4e77",
            "v2:0/1:-3:6b0e5c2f9d1a4e77",
            "v2:0/1:+3:6b0e5c2f9d1a4e77",
            "v2:0/1:3:6b0e5c2f9d1a4e7",
            "v2:0/1:3:6b0e5c2f9d1a4e77:x",
            "v2:zz:3:6b0e5c2f9d1a4e77",
            "v3:0/1:3:6b0e5c2f9d1a4e77",
        ] {
            assert!(
                matches!(bad.parse::<CausalToken>(), Err(Error::InvalidLsn { .. })),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["0/0", "0/1", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/0"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!(
            "16/b374d848".parse::<Lsn>().unwrap().to_string(),
            "16/B374D848"
        );
        assert_eq!(
            "0000016/00000001".parse::<Lsn>().unwrap(),
            Lsn(0x16_0000_0001)
        );
    }

    #[test]
    fn orders_full_range() {
        let a: Lsn = "FFFFFFFF/FFFFFF00".parse().unwrap();
        let b: Lsn = "FFFFFFFF/FFFFFF01".parse().unwrap();
        assert!(a < b);
        assert!("1/0".parse::<Lsn>().unwrap() > "0/FFFFFFFF".parse().unwrap());
        assert_eq!(b.bytes_since(a), 1);
        assert_eq!(a.bytes_since(b), 0);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "/",
            "0/",
            "/0",
            "12",
            "G/0",
            "0/-1",
            "123456789/0",
            "0/0/0",
            " 0/0",
            "0x1/0",
        ] {
            let err = s.parse::<Lsn>().unwrap_err();
            assert!(matches!(err, Error::InvalidLsn { .. }), "{s:?}: {err}");
            assert!(err.to_string().contains("LSN"), "{err}");
        }
    }

    #[test]
    fn long_input_is_truncated_in_message() {
        let s = "A".repeat(10_000);
        let msg = s.parse::<Lsn>().unwrap_err().to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
