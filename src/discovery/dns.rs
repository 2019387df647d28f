//! A minimal DNS client for replica discovery: SRV, A and AAAA queries over UDP (falling back
//! to TCP on truncation) or TCP, to one configured nameserver.
//!
//! Kept small on purpose: one question per query, answers and additional records parsed with
//! name compression, the smallest TTL reported so callers can refresh before it expires.
//!
//! Bounded against a hostile or broken server: one deadline per lookup (the configured
//! timeout covers every connect, send, receive and read of a [`Resolver::srv`] or
//! [`Resolver::addresses`] lookup, its target lookups and TCP retries included), so stray
//! datagrams or an answer sent one byte at a time cannot hold the caller longer. Query ids
//! are random ([`query_id`]) and an answer must repeat the question asked ([`Question`]):
//! over UDP anything else is ignored (while the deadline allows), over TCP it is an error.
//! Name expansion is bounded: [`MAX_POINTERS`] compression pointers and [`MAX_NAME_LEN`]
//! bytes per name, [`MAX_EXPANDED`] bytes of names per response; bad input is an error, never
//! a panic (fuzzed in `src/fuzz_tests.rs`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Most SRV targets resolved with queries of their own in one lookup (targets missing from the
/// additional section); the others count as unresolved. They share the lookup's deadline
/// ([`Resolver::srv`]); this bounds the work a large answer can ask for within it.
const MAX_TARGET_LOOKUPS: usize = 16;

/// Most compression pointers followed in one name. Real answers chain two or three (a name
/// ending in a pointer to a suffix that itself ends in one); 16 leaves room, and ends a
/// pointer loop at once.
pub(crate) const MAX_POINTERS: usize = 16;

/// Longest name, in wire bytes (length octets and the final zero included): RFC 1035's 255.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Most bytes of names expanded from one response (wire bytes of the question's name and of
/// the names of the records kept; the others are skipped, not expanded): 512 KiB, 8 times the
/// largest message, room for a thousand SRV records and their addresses with 170-byte names.
/// Without it a 64 KiB answer of pointers to 255-byte names would still expand to 3 MB.
pub(crate) const MAX_EXPANDED: usize = 512 * 1024;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// A resource record we care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    A(String, IpAddr),
    Srv {
        name: String,
        port: u16,
        target: String,
    },
}

/// A parsed response: the records of the answer and additional sections, and the smallest TTL.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub(crate) records: Vec<Record>,
    pub(crate) min_ttl: Option<u32>,
}

/// What one query asked, which its answer must repeat.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Question<'a> {
    pub(crate) id: u16,
    /// The name asked for, without a final dot (compared ignoring ASCII case).
    pub(crate) name: &'a str,
    pub(crate) qtype: u16,
}

/// Where and how to ask.
#[derive(Clone, Debug)]
pub(crate) struct Resolver {
    pub(crate) server: SocketAddr,
    pub(crate) tcp: bool,
    pub(crate) timeout: Duration,
}

/// A discovered replica address with the TTL that bounds how long it is valid.
#[derive(Debug)]
pub(crate) struct Discovery {
    pub(crate) addrs: Vec<(IpAddr, u16)>,
    pub(crate) ttl: Option<u32>,
    /// Targets that did not resolve (partial answers keep the others).
    pub(crate) unresolved: Vec<String>,
}

impl Resolver {
    /// SRV lookup of `name`; each target is resolved through the additional section or A/AAAA
    /// queries. Targets that do not resolve are reported, the others kept. The whole lookup,
    /// target lookups (at most [`MAX_TARGET_LOOKUPS`]) included, ends within the timeout:
    /// targets not looked up by then count as unresolved.
    pub(crate) fn srv(&self, name: &str) -> Result<Discovery, String> {
        let deadline = self.deadline();
        let resp = self.query(name, TYPE_SRV, deadline)?;
        let mut ttl = resp.min_ttl;
        let mut addrs = Vec::new();
        let mut unresolved = Vec::new();
        let mut lookups = 0;
        // The additional section's addresses by owner name (lower case): one pass, not one per
        // target.
        let mut additional: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for rec in &resp.records {
            if let Record::A(n, ip) = rec {
                additional
                    .entry(n.to_ascii_lowercase())
                    .or_default()
                    .push(*ip);
            }
        }
        for rec in &resp.records {
            let Record::Srv {
                name: owner,
                port,
                target,
            } = rec
            else {
                continue;
            };
            if !owner.eq_ignore_ascii_case(name.trim_end_matches('.')) {
                continue;
            }
            let mut ips = additional
                .get(&target.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            if ips.is_empty() && lookups < MAX_TARGET_LOOKUPS && self.left(deadline).is_ok() {
                lookups += 1;
                if let Ok((found, t)) = self.addresses_by(target, deadline) {
                    ips = found;
                    ttl = min_opt(ttl, t);
                }
            }
            if ips.is_empty() {
                unresolved.push(target.clone());
            }
            addrs.extend(ips.into_iter().map(|ip| (ip, *port)));
        }
        addrs.sort();
        addrs.dedup();
        Ok(Discovery {
            addrs,
            ttl,
            unresolved,
        })
    }

    /// A and AAAA lookups of `name`, combined; both end within the timeout.
    pub(crate) fn addresses(&self, name: &str) -> Result<(Vec<IpAddr>, Option<u32>), String> {
        self.addresses_by(name, self.deadline())
    }

    /// [`Resolver::addresses`] within a lookup that ends at `deadline`.
    fn addresses_by(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<(Vec<IpAddr>, Option<u32>), String> {
        let mut ips = Vec::new();
        let mut ttl = None;
        let mut errors = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            match self.query(name, qtype, deadline) {
                Ok(r) => {
                    ttl = min_opt(ttl, r.min_ttl);
                    ips.extend(r.records.iter().filter_map(|rec| match rec {
                        Record::A(n, ip) if n.eq_ignore_ascii_case(name.trim_end_matches('.')) => {
                            Some(*ip)
                        }
                        _ => None,
                    }));
                }
                Err(e) => errors.push(e),
            }
        }
        if ips.is_empty() && errors.len() == 2 {
            return Err(errors.remove(0));
        }
        ips.sort();
        ips.dedup();
        Ok((ips, ttl))
    }

    /// The end of a lookup that starts now.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.timeout)
            .unwrap_or(now + Duration::from_secs(3600))
    }

    /// The time left before `deadline`, or the timeout error when none is.
    fn left(&self, deadline: Instant) -> Result<Duration, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "DNS lookup timed out: no usable answer from {} within {} ms",
                self.server,
                self.timeout.as_millis()
            ));
        }
        Ok(left)
    }

    /// Runs one receive or read, `op`, with the socket's timeout set by `set_timeout` to the
    /// time left before `deadline`: its result, `None` when it timed out or was interrupted
    /// (the caller tries again and the deadline ends it), or the error described by `what`.
    fn timed<T>(
        &self,
        deadline: Instant,
        what: &str,
        set_timeout: impl FnOnce(Option<Duration>) -> io::Result<()>,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<Option<T>, String> {
        set_timeout(Some(self.left(deadline)?)).map_err(|e| format!("{what}: {e}"))?;
        match op() {
            Ok(v) => Ok(Some(v)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    fn query(&self, name: &str, qtype: u16, deadline: Instant) -> Result<Response, String> {
        let q = Question {
            id: query_id(),
            name: name.trim_end_matches('.'),
            qtype,
        };
        let msg = encode_query(q.id, name, qtype)?;
        let raw = if self.tcp {
            self.exchange_tcp(&msg, deadline)?
        } else {
            let raw = self.exchange_udp(&msg, &q, deadline)?;
            if raw.len() > 2 && raw[2] & 0x02 != 0 {
                self.exchange_tcp(&msg, deadline)? // truncated: retry over TCP
            } else {
                raw
            }
        };
        parse_response(&raw, &q)
    }

    /// One UDP exchange: datagrams that do not answer `q` ([`answers`]: stray, late or forged)
    /// are ignored until `deadline`.
    fn exchange_udp(
        &self,
        msg: &[u8],
        q: &Question<'_>,
        deadline: Instant,
    ) -> Result<Vec<u8>, String> {
        let bind: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(bind).map_err(|e| format!("udp bind: {e}"))?;
        sock.connect(self.server)
            .map_err(|e| format!("udp connect {}: {e}", self.server))?;
        sock.send(msg)
            .map_err(|e| format!("udp send to {}: {e}", self.server))?;
        let mut buf = vec![0u8; 4096];
        let what = format!("no answer from {}", self.server);
        loop {
            let got = self.timed(
                deadline,
                &what,
                |t| sock.set_read_timeout(t),
                || sock.recv(&mut buf),
            )?;
            if let Some(n) = got
                && answers(&buf[..n], q, &mut MAX_EXPANDED.clone()).is_ok()
            {
                return Ok(buf[..n].to_vec());
            }
        }
    }

    /// One TCP exchange, every step within `deadline`.
    fn exchange_tcp(&self, msg: &[u8], deadline: Instant) -> Result<Vec<u8>, String> {
        let s = TcpStream::connect_timeout(&self.server, self.left(deadline)?)
            .map_err(|e| format!("tcp connect {}: {e}", self.server))?;
        s.set_write_timeout(Some(self.left(deadline)?))
            .map_err(|e| e.to_string())?;
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(msg);
        (&s).write_all(&framed)
            .map_err(|e| format!("tcp send to {}: {e}", self.server))?;
        let mut len = [0u8; 2];
        self.read_full(&s, &mut len, deadline)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.read_full(&s, &mut buf, deadline)?;
        Ok(buf)
    }

    /// Fills `buf` from `s` by `deadline`, however the bytes are spread over time.
    fn read_full(&self, s: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
        let what = format!("tcp read from {}", self.server);
        let mut filled = 0;
        while filled < buf.len() {
            let got = self.timed(
                deadline,
                &what,
                |t| s.set_read_timeout(t),
                || (&mut &*s).read(&mut buf[filled..]),
            )?;
            match got {
                Some(0) => return Err(format!("{what}: connection closed mid-answer")),
                Some(n) => filled += n,
                None => {}
            }
        }
        Ok(())
    }
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A query id an off-path sender cannot guess: 2 bytes from `/dev/urandom`; where it cannot
/// be read (a sandbox without `/dev`), std's `RandomState` (SipHash keyed from the operating
/// system's random source) over a counter, the time and the process id.
fn query_id() -> u16 {
    let mut b = [0u8; 2];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u16::from_ne_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() as u16
}

pub(crate) fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // recursion desired
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(format!("invalid DNS name {name:?}"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("invalid DNS name {name:?}"));
        }
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(m)
}

fn read_u16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| "truncated DNS message".to_string())
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "truncated DNS message".to_string())
}

/// Reads the possibly compressed name at `at`: its labels joined with dots (bytes that are
/// not UTF-8 replaced), and the offset after it. At most [`MAX_POINTERS`] pointers followed and
/// [`MAX_NAME_LEN`] bytes expanded; those bytes are taken from `budget` (an error once it
/// runs out), so that a response cannot expand to more than [`MAX_EXPANDED`] bytes of names.
fn read_name(b: &[u8], mut at: usize, budget: &mut usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut wire = 1; // the final zero
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *b.get(at).ok_or("truncated DNS name")?;
        match len & 0xC0 {
            0xC0 => {
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(format!(
                        "DNS name with more than {MAX_POINTERS} compression pointers (a loop?)"
                    ));
                }
                let ptr = usize::from(read_u16(b, at)? & 0x3FFF);
                end.get_or_insert(at + 2);
                at = ptr;
            }
            0 if len == 0 => {
                *budget = budget.checked_sub(wire).ok_or_else(|| {
                    format!("DNS answer expands to more than {MAX_EXPANDED} bytes of names")
                })?;
                return Ok((name, end.unwrap_or(at + 1)));
            }
            0 => {
                let len = usize::from(len);
                wire += 1 + len;
                if wire > MAX_NAME_LEN {
                    return Err(format!("DNS name longer than {MAX_NAME_LEN} bytes"));
                }
                let label = b.get(at + 1..at + 1 + len).ok_or("truncated DNS label")?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                at += 1 + len;
            }
            _ => return Err("DNS label of an unknown type".into()),
        }
    }
}

/// The offset after the name at `at`, without expanding it (a pointer ends it).
fn skip_name(b: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *b.get(at).ok_or("truncated DNS name")?;
        match len & 0xC0 {
            0xC0 if at + 1 < b.len() => return Ok(at + 2),
            0xC0 => return Err("truncated DNS name".into()),
            0 if len == 0 => return Ok(at + 1),
            0 => at += 1 + usize::from(len),
            _ => return Err("DNS label of an unknown type".into()),
        }
    }
}

/// Checks that `b` answers `q`: the same id, the QR bit set, exactly one question, whose name
/// (ignoring ASCII case), type and class are `q`'s. Returns the offset after the question.
/// The question's name is expanded within `budget` (see [`read_name`]).
fn answers(b: &[u8], q: &Question<'_>, budget: &mut usize) -> Result<usize, String> {
    if read_u16(b, 0)? != q.id {
        return Err("DNS answer id does not match the query".into());
    }
    if read_u16(b, 2)? & 0x8000 == 0 {
        return Err("DNS message is not an answer (QR bit clear)".into());
    }
    if read_u16(b, 4)? != 1 {
        return Err("DNS answer does not carry exactly the one question asked".into());
    }
    let (name, next) = read_name(b, 12, budget)?;
    if !name.eq_ignore_ascii_case(q.name)
        || read_u16(b, next)? != q.qtype
        || read_u16(b, next + 2)? != CLASS_IN
    {
        return Err("DNS answer is for another question than the one asked".into());
    }
    Ok(next + 4)
}

/// Parses an answer to `q` (see [`answers`]): its records and smallest TTL, or the error
/// its response code names.
///
/// Bounded whatever `b` holds: at most `b.len() / 11` records (a record takes 11 bytes at
/// least), names of at most [`MAX_NAME_LEN`] bytes and [`MAX_EXPANDED`] bytes in all (up to
/// 3 times that as text, where bytes that are not UTF-8 become U+FFFD), time linear in those;
/// malformed input is an error, never a panic.
pub(crate) fn parse_response(b: &[u8], q: &Question<'_>) -> Result<Response, String> {
    let mut budget = MAX_EXPANDED;
    let mut at = answers(b, q, &mut budget)?;
    let flags = read_u16(b, 2)?;
    match flags & 0x000F {
        0 => {}
        3 => return Err("name does not exist (NXDOMAIN)".into()),
        2 => return Err("server failure (SERVFAIL)".into()),
        5 => return Err("query refused (REFUSED)".into()),
        rc => return Err(format!("DNS error rcode {rc}")),
    }
    let counts = [read_u16(b, 6)?, read_u16(b, 8)?, read_u16(b, 10)?];
    let mut resp = Response::default();
    for (section, count) in counts.iter().enumerate() {
        for _ in 0..*count {
            let owner = at;
            let next = skip_name(b, at)?;
            let rtype = read_u16(b, next)?;
            let class = read_u16(b, next + 2)?;
            let ttl = read_u32(b, next + 4)?;
            let rdlen = read_u16(b, next + 8)? as usize;
            let rdata = next + 10;
            if rdata + rdlen > b.len() {
                return Err("truncated DNS record".into());
            }
            at = rdata + rdlen;
            if class != CLASS_IN || section == 1 {
                continue; // authority section: nothing for us
            }
            let name = |budget: &mut usize| read_name(b, owner, budget).map(|n| n.0);
            let rec = match (rtype, rdlen) {
                (TYPE_A, 4) => Record::A(
                    name(&mut budget)?,
                    IpAddr::from([b[rdata], b[rdata + 1], b[rdata + 2], b[rdata + 3]]),
                ),
                (TYPE_AAAA, 16) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&b[rdata..rdata + 16]);
                    Record::A(name(&mut budget)?, IpAddr::from(o))
                }
                (TYPE_SRV, n) if n >= 7 => Record::Srv {
                    name: name(&mut budget)?,
                    port: read_u16(b, rdata + 4)?,
                    target: read_name(b, rdata + 6, &mut budget)?.0,
                },
                _ => continue,
            };
            if section == 0 {
                resp.min_ttl = min_opt(resp.min_ttl, Some(ttl));
            }
            resp.records.push(rec);
        }
    }
    Ok(resp)
}

// Hostile servers, shared with tests/discovery.rs.
#[cfg(test)]
#[path = "../../tests/common/hostile_dns.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::hostile::{self, HostileDns};
    use super::*;

    /// A resolver of 127.0.0.1:`port` with a 200 ms timeout.
    fn resolver(port: u16, tcp: bool) -> Resolver {
        Resolver {
            server: ([127, 0, 0, 1], port).into(),
            tcp,
            timeout: Duration::from_millis(200),
        }
    }

    /// What `lookup` returns, on a thread of its own; panics if it has not returned within
    /// 20 times the resolver's timeout (a hang, not a slow machine).
    fn returns<T: Send + 'static>(lookup: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(lookup());
        });
        rx.recv_timeout(Duration::from_secs(4))
            .expect("the lookup did not return within 20 times its timeout")
    }

    #[test]
    fn stray_datagrams_cannot_extend_a_lookup() {
        let server = HostileDns::udp_wrong_ids(Duration::from_millis(5));
        let r = resolver(server.port, false);
        let e = returns(move || r.srv("replica.pg.test")).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        let r = resolver(server.port, false);
        let e = returns(move || r.addresses("a.pg.test")).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn an_answer_sent_one_byte_at_a_time_cannot_extend_a_lookup() {
        let server = HostileDns::tcp(hostile::a_answer, Some(Duration::from_millis(10)));
        let r = resolver(server.port, true);
        let e = returns(move || r.addresses("a.pg.test")).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn a_well_behaved_server_is_still_answered() {
        let server = HostileDns::tcp(hostile::a_answer, None);
        let r = resolver(server.port, true);
        let (ips, ttl) = returns(move || r.addresses("a.pg.test")).unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(ttl, Some(30));
    }

    /// A hand-built SRV answer with compression pointers and an additional A record.
    fn srv_answer(id: u16) -> Vec<u8> {
        let mut m = encode_query(id, "replica.pg.test", TYPE_SRV).unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // ancount
        m[11] = 1; // arcount
        // answer: name = pointer to the question name (offset 12)
        m.extend_from_slice(&[0xC0, 12]);
        m.extend_from_slice(&TYPE_SRV.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&30u32.to_be_bytes());
        let target = [2, b'r', b'1', 0xC0, 12 + 8]; // "r1" + pointer to "pg.test"
        m.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 1]); // priority, weight
        m.extend_from_slice(&5433u16.to_be_bytes());
        let target_at = m.len();
        m.extend_from_slice(&target);
        // additional: r1.pg.test A 127.0.0.1
        m.extend_from_slice(&[0xC0, target_at as u8]);
        m.extend_from_slice(&TYPE_A.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&10u32.to_be_bytes());
        m.extend_from_slice(&4u16.to_be_bytes());
        m.extend_from_slice(&[127, 0, 0, 1]);
        m
    }

    /// The question of [`srv_answer`].
    fn srv_question(id: u16) -> Question<'static> {
        Question {
            id,
            name: "replica.pg.test",
            qtype: TYPE_SRV,
        }
    }

    #[test]
    fn parses_srv_with_compression_and_additional() {
        let r = parse_response(&srv_answer(7), &srv_question(7)).unwrap();
        assert_eq!(
            r.records,
            vec![
                Record::Srv {
                    name: "replica.pg.test".into(),
                    port: 5433,
                    target: "r1.pg.test".into()
                },
                Record::A("r1.pg.test".into(), "127.0.0.1".parse().unwrap()),
            ]
        );
        assert_eq!(r.min_ttl, Some(30));
    }

    #[test]
    fn rejects_bad_messages() {
        let a = srv_answer(7);
        let q = srv_question(7);
        assert!(
            parse_response(&a, &srv_question(8))
                .unwrap_err()
                .contains("id")
        );
        for cut in [3, 13, 40, a.len() - 1] {
            assert!(parse_response(&a[..cut], &q).is_err(), "cut at {cut}");
        }
        let mut nx = a.clone();
        nx[3] = 0x83;
        assert!(parse_response(&nx, &q).unwrap_err().contains("NXDOMAIN"));
        let mut lp = encode_query(1, "x", TYPE_A).unwrap();
        lp[2] |= 0x80;
        lp[7] = 1;
        lp.extend_from_slice(&[0xC0, lp.len() as u8]); // points at itself
        lp.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 1, 2, 3, 4]);
        let x = Question {
            id: 1,
            name: "x",
            qtype: TYPE_A,
        };
        assert!(parse_response(&lp, &x).unwrap_err().contains("loop"));
    }

    /// [`hostile::pointer_bomb`] answering an A query for `bomb.pg.test`, and the question.
    fn bomb(depth: usize, label: usize) -> (Vec<u8>, Question<'static>) {
        let q = Question {
            id: 9,
            name: "bomb.pg.test",
            qtype: TYPE_A,
        };
        let query = encode_query(q.id, q.name, q.qtype).unwrap();
        (hostile::pointer_bomb(&query, depth, label), q)
    }

    /// The error parsing `m` gives (a panic naming the record count if it is accepted).
    fn rejected(m: &[u8], q: &Question<'_>) -> String {
        match parse_response(m, q) {
            Ok(r) => panic!("accepted, {} records", r.records.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn name_expansion_is_bounded() {
        // The owner's pointer and 15 in the chain: 16 pointers, a 31-byte name, in ~4000
        // records (~124 KB expanded): accepted.
        let (m, q) = bomb(MAX_POINTERS - 1, 1);
        let r = parse_response(&m, &q).unwrap();
        assert!(r.records.len() > 3000, "{}", r.records.len());
        assert_eq!(
            r.records[0],
            Record::A(["a"; 15].join("."), [10, 0, 0, 1].into())
        );
        // One pointer more.
        let (m, q) = bomb(MAX_POINTERS, 1);
        let e = rejected(&m, &q);
        assert!(e.contains("more than 16 compression pointers"), "{e}");
        // Four 63-byte labels: 257 bytes.
        let (m, q) = bomb(4, 63);
        let e = rejected(&m, &q);
        assert!(e.contains("longer than 255 bytes"), "{e}");
        // Three: 193 bytes, valid, but ~4000 of them are ~770 KB.
        let (m, q) = bomb(3, 63);
        let e = rejected(&m, &q);
        assert!(e.contains("more than 524288 bytes of names"), "{e}");
        // The old bound (64 pointers, no length limit) let this one expand to ~16 MB.
        let (m, q) = bomb(62, 63);
        assert!(parse_response(&m, &q).is_err());
        // Labels of the reserved types (0x40, 0x80) are errors too.
        let mut m = srv_answer(7);
        m[12] = 0x47;
        assert!(parse_response(&m, &srv_question(7)).is_err());
    }

    #[test]
    fn an_answer_must_repeat_the_question() {
        let q = srv_question(7);
        let a = srv_answer(7);
        // "replica.pg.test" at 12..29, then its type (29..31) and class (31..33).
        let mut upper = a.clone();
        upper[13..20].copy_from_slice(b"REPLICA");
        assert!(parse_response(&upper, &q).is_ok(), "case is ignored");
        // (what, offset, new byte)
        let bad = [
            ("QR bit clear", 2, 0x01),
            ("no question", 5, 0),
            ("two questions", 5, 2),
            ("another name", 13, b'x'),
            ("another type", 30, TYPE_A as u8),
            ("another class", 32, 3),
        ];
        for (what, at, byte) in bad {
            let mut m = a.clone();
            m[at] = byte;
            assert!(parse_response(&m, &q).is_err(), "{what}: accepted");
        }
    }

    /// Three datagrams that do not answer the query (the query itself, an answer to another
    /// name, an answer of another type, each with the query's id), then the answer.
    fn forgeries_then_the_answer(query: &[u8]) -> Vec<Vec<u8>> {
        let mut other_name = hostile::reply(query, 1);
        other_name[13] = b'z';
        hostile::push_a(&mut other_name, [6, 6, 6, 6]);
        let mut other_type = hostile::reply(query, 1);
        let at = query.len() - 4;
        other_type[at..at + 2].copy_from_slice(&5u16.to_be_bytes()); // CNAME
        hostile::push_a(&mut other_type, [6, 6, 6, 6]);
        vec![
            query.to_vec(),
            other_name,
            other_type,
            hostile::a_answer(query),
        ]
    }

    #[test]
    fn datagrams_that_do_not_answer_the_question_are_ignored() {
        let server = HostileDns::udp(forgeries_then_the_answer);
        let r = resolver(server.port, false);
        let (ips, _) = returns(move || r.addresses("a.pg.test")).unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
    }

    #[test]
    fn encodes_names() {
        let q = encode_query(0x1234, "a.bc.", TYPE_A).unwrap();
        assert_eq!(&q[12..], &[1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]);
        assert!(encode_query(1, "", TYPE_A).is_err());
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
    }
}
