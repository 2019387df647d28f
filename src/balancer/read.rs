//! How `read_conn` gets its connection: a decided route checked out (and, for a replica,
//! verified on the connection that will serve the read: the primary's cluster, and for a
//! sticky read its replay position), live checks on the candidates' own connections, and the
//! fall-backs to the primary. Every replay check runs in [`freshness::prove`], with the pooled
//! connections as its [`Prover`] ([`Pooled`]).

use std::cell::Cell;
use std::marker::PhantomData;

use super::*;
use crate::freshness::{Answer, Position, Prover};
use crate::server::host::HostHandle;

impl Balancer {
    /// `read_conn` on a decided route; a replica that cannot hand out a connection is reported
    /// and the read goes to the primary.
    pub(super) fn read_on(&self, route: Route) -> Result<Conn> {
        if route.role() == Role::Primary {
            return self.checkout(route, self.checkout_timeout());
        }
        let addr = route.addr().to_string();
        // A sticky read's check (`verified`) resets the connection if needed.
        let check_follows = route.requirement.is_some();
        match route.host.checkout(self.replica_timeout(), check_follows) {
            Ok(client) => self.verified(route, client),
            Err(u) => self.replica_unavailable(&addr, &u.error, u.host_failed),
        }
    }

    /// `read_conn` for a sticky read no cached position can serve: the live check runs on the
    /// very connection that will serve the read (one round trip), on the round-robin candidate
    /// first, then on the others in turn, by the pick's `deadline` and within
    /// `sticky_check_budget_ms` ([`Router::live_deadline`], [`freshness::prove`]); then the
    /// primary (or the error, under the `"error"` policy).
    pub(super) fn read_live(
        &self,
        req: Requirement,
        candidates: &[Arc<StripedHost>],
        deadline: Option<Instant>,
    ) -> Result<Conn> {
        let deadline = self.router.live_deadline(deadline);
        let prover = Pooled::new(self, None);
        if let Some((i, client)) =
            freshness::prove(&prover, candidates, req, deadline, &self.counters)
        {
            let route = self
                .router
                .sticky_route(candidates[i].handle(), Reason::CaughtUpLive, req);
            return Ok(self.conn(route, client));
        }
        let route = self.router.not_caught_up(req.lsn)?;
        self.checkout(route, self.checkout_timeout())
    }

    /// A replica could not serve a read: reported when it failed (`host_failed`; not when a
    /// statement of a check did), and the read goes to the primary.
    pub(super) fn replica_unavailable(
        &self,
        addr: &str,
        e: &dyn std::fmt::Display,
        host_failed: bool,
    ) -> Result<Conn> {
        warn!(target: "dlb", "{}; reading from the primary", crate::redact::bounded(&e.to_string()));
        if host_failed {
            self.report_failure(addr);
        }
        let route = self.router.primary_route(Reason::ReplicaUnavailable);
        self.checkout(route, self.checkout_timeout())
    }

    pub(super) fn replica_timeout(&self) -> Duration {
        let pool = &self.config.pool;
        Duration::from_millis(pool.connect_timeout_ms.min(pool.checkout_timeout_ms))
    }

    /// Hands out a replica connection only when it reached a server of the primary's cluster
    /// (the one the monitor probed, or another behind the same address); for a sticky read,
    /// only when the host's cached position proves that very connection (no round trip), or
    /// the connection's own check does ([`freshness::prove`] on this one replica, starting with
    /// this connection: its replay position, read in one round trip that also resets it if a
    /// borrower may have changed it). Otherwise the read goes to the primary: after a failed
    /// check as [`Reason::ReplicaUnavailable`] (the replica reported when the host failed),
    /// else as a read no replica has caught up with (or the error, under the `"error"` policy).
    ///
    /// # Errors
    /// [`Error::PrimaryUnavailable`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(super) fn verified(&self, route: Route, mut client: PooledClient) -> Result<Conn> {
        if !self.in_primary_cluster(&route.host, &client) {
            warn!(target: "dlb", "a connection to replica {} reached a server outside the primary's cluster: discarded; reading from the primary", route.addr());
            client.discard = true;
            drop(client);
            let route = self.router.primary_route(Reason::ReplicaUnavailable);
            return self.checkout(route, self.checkout_timeout());
        }
        let Some(req) = route.requirement else {
            return Ok(self.conn(route, client));
        };
        if self.cache_proves(&route.host, &client, req) {
            return Ok(self.conn(route, client));
        }
        let deadline = Instant::now() + self.replica_timeout();
        let prover = Pooled::new(self, Some(client));
        let one = std::slice::from_ref(&route.host);
        if let Some((_, client)) = freshness::prove(&prover, one, req, deadline, &self.counters) {
            return Ok(self.conn(route, client));
        }
        if prover.failed.get() {
            warn!(target: "dlb", "the check of a connection to replica {} failed; reading from the primary", route.addr());
            let route = self.router.primary_route(Reason::ReplicaUnavailable);
            return self.checkout(route, self.checkout_timeout());
        }
        let route = self.router.not_caught_up(req.lsn)?;
        self.checkout(route, self.checkout_timeout())
    }

    /// Whether the host's cached position proves `req` for this very connection, so that no
    /// round trip is needed: the connection is clean and recently checked, it reached the
    /// server the cache describes (a server's replay position only moves forward on its
    /// timeline), and that position proves the read ([`freshness::proves`]). The position is
    /// read before the identity: the monitor writes a new identity before the position that
    /// goes with it, so a position read under the connection's identity is that server's. No
    /// I/O.
    fn cache_proves(&self, host: &Host, client: &PooledClient, req: Requirement) -> bool {
        if host.needs_check(client, Instant::now()) {
            return false;
        }
        let position = host.replay_position();
        let tag = client.identity_tag();
        tag != 0
            && host.identity_tag() == tag
            && position.is_some_and(|p| freshness::proves(p, req))
    }

    /// Whether `client` (a connection to `host`) reached the server the monitor probed, or
    /// another server of the primary's cluster. No I/O.
    pub(super) fn in_primary_cluster(&self, host: &Host, client: &PooledClient) -> bool {
        let probed = host.identity_tag();
        (probed != 0 && client.identity_tag() == probed)
            || client.identity.as_ref().is_some_and(|i| {
                let primary = self.router.primary_system();
                primary != 0 && i.system_id == primary
            })
    }

    pub(super) fn checkout_timeout(&self) -> Duration {
        Duration::from_millis(self.config.pool.checkout_timeout_ms)
    }

    pub(super) fn checkout(&self, route: Route, timeout: Duration) -> Result<Conn> {
        let client = route.host.checkout(timeout, false)?;
        Ok(self.conn(route, client))
    }

    pub(super) fn conn(&self, route: Route, client: PooledClient) -> Conn {
        Conn {
            route,
            client: ManuallyDrop::new(client),
            forks: self.forks,
            router: Arc::downgrade(&*self.router),
        }
    }
}

/// The pooled connections of `read_conn`'s candidates, as a [`Prover`]: a check is a
/// connection checked out of the candidate's pool (or the one given first) and
/// [`ping_replay`] on it, one round trip on the caller's thread; a proof hands that very
/// connection to the read. Candidates are checked in turn (a connection is not asked for in
/// parallel: the read needs one).
struct Pooled<'a, C> {
    lb: &'a Balancer,
    /// A connection checked out already, for the first check.
    first: Cell<Option<PooledClient>>,
    /// Whether the last check failed (by the host, or on a statement).
    failed: Cell<bool>,
    /// The kind of candidate (see [`Candidate`]).
    candidates: PhantomData<fn(&C)>,
}

impl<'a, C> Pooled<'a, C> {
    fn new(lb: &'a Balancer, first: Option<PooledClient>) -> Pooled<'a, C> {
        Pooled {
            lb,
            first: Cell::new(first),
            failed: Cell::new(false),
            candidates: PhantomData,
        }
    }

    /// One check of `host`: a connection, its cluster, its replay position.
    fn check(&self, host: &Host, deadline: Instant) -> Answer<PooledClient> {
        let mut client = match self.first.take() {
            Some(client) => client,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match host.checkout(self.lb.replica_timeout().min(left), true) {
                    Ok(client) => client,
                    Err(u) => {
                        warn!(target: "dlb", "{}; no live check of it", u.error);
                        return failure(u.host_failed);
                    }
                }
            }
        };
        if !self.lb.in_primary_cluster(host, &client) {
            warn!(target: "dlb", "a connection to replica {} reached a server outside the primary's cluster: discarded", host.addr);
            client.discard = true;
            return Answer::Nothing;
        }
        match ping_replay(&mut client) {
            Ok(Some(pos)) => Answer::Read(pos, client),
            Ok(None) => Answer::Nothing,
            Err(e) => {
                client.discard = true;
                let host_failed = is_host_failure(&e);
                let e = crate::redact::bounded(&crate::error::with_causes(&e));
                if host_failed {
                    warn!(target: "dlb", "live check on replica {} failed: {e}", host.addr);
                } else {
                    debug!(target: "dlb", "live check on replica {} failed: {e}", host.addr);
                }
                failure(host_failed)
            }
        }
    }
}

/// A failed check: by the host, or on a statement.
fn failure(host_failed: bool) -> Answer<PooledClient> {
    if host_failed {
        Answer::HostFailed
    } else {
        Answer::StatementFailed
    }
}

/// What the pooled prover needs of a candidate: its host, whether the candidate is one of a
/// snapshot's replicas (`read_live`) or the host a route chose (`verified`).
trait Candidate {
    fn host(&self) -> &Host;
}

impl Candidate for Arc<StripedHost> {
    fn host(&self) -> &Host {
        self
    }
}

impl Candidate for Arc<HostHandle> {
    fn host(&self) -> &Host {
        self
    }
}

impl<C: Candidate> Prover for Pooled<'_, C> {
    type Candidate = C;
    type Served = PooledClient;
    const PARALLEL: bool = false;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn check_here(&self, c: &C, deadline: Instant) -> Option<Answer<PooledClient>> {
        let answer = self.check(c.host(), deadline);
        self.failed.set(matches!(
            answer,
            Answer::HostFailed | Answer::StatementFailed
        ));
        Some(answer)
    }

    fn raise(&self, c: &C, client: &PooledClient, pos: Position) {
        c.host().observe_replay(client.identity_tag(), pos);
    }

    fn report(&self, c: &C) {
        self.lb.report_failure(&c.host().addr);
    }
}
