//! Where the replica list comes from: the fixed `replicas.hosts`, plus DNS service discovery
//! (`replicas.dns`, SRV or A/AAAA) when configured.
//!
//! The refresh schedule and the list arithmetic are pure ([`DnsSchedule`], [`desired`],
//! [`diff`]) and unit-tested with a fake clock; [`ReplicaSource::refresh`] does the one DNS
//! exchange, on the monitor thread.

pub(crate) mod dns;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::warn;

use self::dns::Resolver;
use crate::config::{DnsConfig, DnsRecordType, ReplicasConfig};
use crate::counters::Counters;
use crate::dsn::HostPort;
use crate::redact::bounded;

/// Error-driven DNS refreshes are at least this far apart.
pub(crate) const MIN_DNS_REFRESH_GAP: Duration = Duration::from_secs(1);

/// The fixed list and, with DNS discovery, the last good DNS answer.
pub(crate) struct ReplicaSource {
    fixed: Vec<HostPort>,
    dns: Option<DnsSource>,
}

struct DnsSource {
    cfg: DnsConfig,
    resolver: Resolver,
    schedule: DnsSchedule,
    /// Port of A/AAAA answers (the primary's).
    default_port: u16,
}

impl ReplicaSource {
    /// `fixed` (validated) and, when `dns` is set, discovery through it (`nameserver`
    /// validated as an IP address). A/AAAA answers get `default_port`.
    pub(crate) fn new(
        fixed: Vec<HostPort>,
        dns: Option<DnsConfig>,
        default_port: u16,
        now: Instant,
    ) -> ReplicaSource {
        let dns = dns.and_then(|cfg| {
            let ip: IpAddr = cfg.nameserver.parse().ok()?;
            Some(DnsSource {
                resolver: Resolver {
                    server: SocketAddr::new(ip, cfg.port),
                    tcp: cfg.tcp,
                    timeout: Duration::from_millis(cfg.timeout_ms),
                },
                cfg,
                schedule: DnsSchedule::new(now),
                default_port,
            })
        });
        ReplicaSource { fixed, dns }
    }

    /// Whether replicas may ever exist (a fixed list or DNS discovery): load balancing is on.
    pub(crate) fn configured(&self) -> bool {
        !self.fixed.is_empty() || self.dns.is_some()
    }

    /// Refreshes the DNS list when due (or when `requested`, throttled). Blocks for one DNS
    /// lookup, at most `replicas.dns.timeout_ms` in all: its exchanges, a TCP retry of a UDP
    /// answer truncated, and for SRV targets missing from the additional section, A/AAAA
    /// lookups (at most 16) share that deadline. At most [`ReplicasConfig::LIMIT_HOSTS`] addresses are kept. On a
    /// failure or an empty answer the last good list stays.
    pub(crate) fn refresh(&mut self, requested: bool, now: Instant, counters: &Counters) {
        let Some(d) = self.dns.as_mut() else { return };
        if !d.schedule.due(now, requested) {
            return;
        }
        d.schedule.started(now);
        counters.count(&counters.dns_refreshes);
        let answer = match d.cfg.record_type {
            DnsRecordType::Srv => d.resolver.srv(&d.cfg.record).map(|r| {
                for t in &r.unresolved {
                    warn!(target: "dlb", "DNS: SRV target {} of {} did not resolve; keeping the others", bounded(t), d.cfg.record);
                }
                (r.addrs, r.ttl)
            }),
            DnsRecordType::A => d.resolver.addresses(&d.cfg.record).map(|(ips, ttl)| {
                (
                    ips.into_iter().map(|ip| (ip, d.default_port)).collect(),
                    ttl,
                )
            }),
        };
        let answer = answer.map(|(addrs, ttl)| {
            if addrs.len() > MAX_HOSTS {
                warn!(target: "dlb", "DNS: {} answered {} addresses; keeping the first {MAX_HOSTS}", d.cfg.record, addrs.len());
            }
            let hosts = addrs
                .into_iter()
                .take(MAX_HOSTS)
                .map(|(ip, port)| HostPort {
                    host: ip.to_string(),
                    port,
                })
                .collect();
            (hosts, ttl)
        });
        let interval = Duration::from_millis(d.cfg.refresh_interval_ms);
        let kept = d.schedule.last_good.len();
        match d.schedule.apply(now, answer, interval, jitter_fraction()) {
            DnsOutcome::Updated => {}
            DnsOutcome::Empty => {
                counters.count(&counters.dns_errors);
                warn!(target: "dlb", "DNS: empty answer for {}; keeping the last good list ({kept} hosts)", d.cfg.record);
            }
            DnsOutcome::Failed(e) => {
                counters.count(&counters.dns_errors);
                warn!(target: "dlb", "DNS: cannot resolve {}: {}; keeping the last good list ({kept} hosts)", d.cfg.record, bounded(&e.to_string()));
            }
        }
    }

    /// The replicas that should be members now: the fixed list, then the DNS list.
    pub(crate) fn desired(&self) -> Vec<HostPort> {
        let dns = self.dns.as_ref().map_or(&[][..], |d| &d.schedule.last_good);
        desired(&self.fixed, dns)
    }
}

/// What one DNS refresh did to the list.
#[derive(Debug, PartialEq)]
pub(crate) enum DnsOutcome {
    /// A non-empty answer replaced the list.
    Updated,
    /// An empty answer: the last good list stays.
    Empty,
    /// The query failed: the last good list stays.
    Failed(String),
}

/// When to ask DNS next, and the last good answer.
#[derive(Debug)]
pub(crate) struct DnsSchedule {
    next_refresh: Instant,
    last_refresh: Option<Instant>,
    pub(crate) last_good: Vec<HostPort>,
}

impl DnsSchedule {
    /// Due at once.
    pub(crate) fn new(now: Instant) -> DnsSchedule {
        DnsSchedule {
            next_refresh: now,
            last_refresh: None,
            last_good: Vec::new(),
        }
    }

    /// Whether to refresh at `now`: when the scheduled time has come, or when a caller
    /// `requested` it (a reported failure) and the last refresh is at least
    /// [`MIN_DNS_REFRESH_GAP`] old.
    pub(crate) fn due(&self, now: Instant, requested: bool) -> bool {
        let requested = requested
            && self
                .last_refresh
                .is_none_or(|t| now.saturating_duration_since(t) >= MIN_DNS_REFRESH_GAP);
        now >= self.next_refresh || requested
    }

    /// Notes that a refresh starts at `now`.
    pub(crate) fn started(&mut self, now: Instant) {
        self.last_refresh = Some(now);
    }

    /// Applies an answer (addresses and the smallest TTL, or an error). A non-empty answer
    /// (possibly partial: SRV targets that did not resolve are left out by the resolver)
    /// replaces the list, and the next refresh comes after the refresh interval or the TTL
    /// (at least 1 s), whichever is shorter, shortened by `jitter` (a fraction in 0..0.1) so
    /// that a fleet does not refresh in lockstep. An empty answer or an error keeps the last
    /// good list and retries after the interval, at most 1 s.
    pub(crate) fn apply(
        &mut self,
        now: Instant,
        answer: Result<(Vec<HostPort>, Option<u32>), String>,
        interval: Duration,
        jitter: f64,
    ) -> DnsOutcome {
        let retry = interval.min(Duration::from_secs(1));
        match answer {
            Ok((hosts, _)) if hosts.is_empty() => {
                self.next_refresh = now + retry;
                DnsOutcome::Empty
            }
            Ok((hosts, ttl)) => {
                self.last_good = hosts;
                let mut base = interval;
                if let Some(ttl) = ttl {
                    base = base.min(Duration::from_secs(u64::from(ttl.max(1))));
                }
                self.next_refresh = now + base.mul_f64(1.0 - jitter.clamp(0.0, 0.1));
                DnsOutcome::Updated
            }
            Err(e) => {
                self.next_refresh = now + retry;
                DnsOutcome::Failed(e)
            }
        }
    }
}

/// A fraction in 0..0.1 from the clock's nanoseconds (no RNG dependency).
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    f64::from(nanos % 1000) / 10_000.0
}

/// Most replicas a balancer keeps: [`ReplicasConfig::LIMIT_HOSTS`].
const MAX_HOSTS: usize = ReplicasConfig::LIMIT_HOSTS;

/// The fixed list followed by the DNS hosts not already in it, at most [`MAX_HOSTS`] in all
/// (the fixed list, bounded by the configuration, first). Linear in the lengths.
pub(crate) fn desired(fixed: &[HostPort], dns: &[HostPort]) -> Vec<HostPort> {
    let mut seen: HashSet<&HostPort> = fixed.iter().collect();
    let mut all = fixed.to_vec();
    for hp in dns {
        if all.len() >= MAX_HOSTS {
            break;
        }
        if seen.insert(hp) {
            all.push(hp.clone());
        }
    }
    all
}

/// How to go from `current` to `desired`: the indexes in `current` to remove (ascending) and
/// the addresses to add (in `desired`'s order). Linear in the lengths.
pub(crate) fn diff(current: &[HostPort], desired: &[HostPort]) -> (Vec<usize>, Vec<HostPort>) {
    let wanted: HashSet<&HostPort> = desired.iter().collect();
    let present: HashSet<&HostPort> = current.iter().collect();
    let removed = (0..current.len())
        .filter(|&i| !wanted.contains(&current[i]))
        .collect();
    let added = desired
        .iter()
        .filter(|hp| !present.contains(hp))
        .cloned()
        .collect();
    (removed, added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPort {
        HostPort::parse(s, 5432).unwrap()
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn ttl_shortens_the_refresh_interval() {
        let t0 = Instant::now();
        let mut s = DnsSchedule::new(t0);
        assert!(s.due(t0, false), "due at once");
        s.started(t0);
        let out = s.apply(t0, Ok((vec![hp("10.0.0.1")], Some(5))), INTERVAL, 0.0);
        assert_eq!(out, DnsOutcome::Updated);
        assert!(!s.due(secs(t0, 4), false));
        assert!(
            s.due(secs(t0, 5), false),
            "the TTL (5 s) is shorter than 30 s"
        );
        // A TTL of 0 still waits 1 s; a long TTL is capped by the interval.
        s.apply(t0, Ok((vec![hp("10.0.0.1")], Some(0))), INTERVAL, 0.0);
        assert!(!s.due(t0 + Duration::from_millis(999), false));
        assert!(s.due(secs(t0, 1), false));
        s.apply(t0, Ok((vec![hp("10.0.0.1")], Some(3600))), INTERVAL, 0.0);
        assert!(!s.due(secs(t0, 29), false));
        assert!(s.due(secs(t0, 30), false));
        // Jitter shortens the wait by at most 10%.
        s.apply(t0, Ok((vec![hp("10.0.0.1")], None)), INTERVAL, 0.5);
        assert!(!s.due(secs(t0, 26), false));
        assert!(s.due(secs(t0, 27), false));
    }

    #[test]
    fn failures_and_empty_answers_keep_the_last_good_list() {
        let t0 = Instant::now();
        let mut s = DnsSchedule::new(t0);
        let good = vec![hp("10.0.0.1"), hp("10.0.0.2:5433")];
        s.apply(t0, Ok((good.clone(), None)), INTERVAL, 0.0);
        assert_eq!(
            s.apply(t0, Ok((vec![], Some(60))), INTERVAL, 0.0),
            DnsOutcome::Empty
        );
        assert_eq!(s.last_good, good);
        assert!(s.due(secs(t0, 1), false), "retried after 1 s");
        let out = s.apply(secs(t0, 1), Err("timed out".into()), INTERVAL, 0.0);
        assert_eq!(out, DnsOutcome::Failed("timed out".into()));
        assert_eq!(s.last_good, good);
        assert!(!s.due(t0 + Duration::from_millis(1999), false));
        assert!(s.due(secs(t0, 2), false));
        // A partial answer (one SRV target did not resolve) replaces the list.
        s.apply(
            secs(t0, 2),
            Ok((vec![hp("10.0.0.2:5433")], None)),
            INTERVAL,
            0.0,
        );
        assert_eq!(s.last_good, vec![hp("10.0.0.2:5433")]);
    }

    #[test]
    fn requested_refreshes_are_throttled() {
        let t0 = Instant::now();
        let mut s = DnsSchedule::new(t0);
        s.started(t0);
        s.apply(t0, Ok((vec![hp("10.0.0.1")], None)), INTERVAL, 0.0);
        assert!(!s.due(t0 + Duration::from_millis(500), true), "within 1 s");
        assert!(s.due(secs(t0, 1), true), "a second later");
        assert!(!s.due(secs(t0, 1), false), "not without the request");
    }

    #[test]
    fn desired_list_and_diff() {
        let fixed = [hp("a"), hp("b")];
        let dns = [hp("b"), hp("c")];
        let want = desired(&fixed, &dns);
        assert_eq!(want, [hp("a"), hp("b"), hp("c")]);
        let current = [hp("x"), hp("b"), hp("y")];
        let (removed, added) = diff(&current, &want);
        assert_eq!(removed, [0, 2]);
        assert_eq!(added, [hp("a"), hp("c")]);
        assert_eq!(diff(&want, &want), (vec![], vec![]));
    }

    fn many(n: usize, port: u16) -> Vec<HostPort> {
        (0..n)
            .map(|i| HostPort {
                host: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                port,
            })
            .collect()
    }

    #[test]
    fn large_lists_are_capped_and_merged_in_linear_time() {
        let started = Instant::now();
        // 50,000 hosts took 2.8 s with the quadratic merge and diff.
        let fixed = many(10, 1);
        let dns = many(50_000, 2);
        let want = desired(&fixed, &dns);
        assert_eq!(
            want.len(),
            MAX_HOSTS,
            "the fixed list first, DNS cut to fit"
        );
        assert_eq!(want[..10], fixed[..]);
        assert_eq!(want[10], dns[0]);
        let current = many(50_000, 2);
        let (removed, added) = diff(&current, &want);
        assert_eq!(removed.len(), 50_000 - (MAX_HOSTS - 10));
        assert_eq!(added, fixed);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Duplicates within the DNS list count once.
        let dup = [hp("c"), hp("c"), hp("a")];
        assert_eq!(desired(&[hp("a")], &dup), [hp("a"), hp("c")]);
    }
}
