//! How `read_conn` gets its connection: a decided route checked out (and, for a replica,
//! verified on the connection that will serve the read: the primary's cluster, and for a
//! sticky read its replay position with `freshness::proves`), live checks on the candidates'
//! own connections, and the fall-backs to the primary.

use super::*;

impl Balancer {
    /// `read_conn` on a decided route; a replica that cannot hand out a connection is reported
    /// and the read goes to the primary. `retry`: a check that fails on a statement error (not
    /// the host's) is tried once more, on another connection.
    pub(super) fn read_on(&self, route: Route, retry: bool) -> Result<Conn> {
        if route.role() == Role::Primary {
            return self.checkout(route, self.checkout_timeout());
        }
        let addr = route.addr().to_string();
        // A sticky read's check (`verified`) resets the connection if needed.
        let check_follows = route.requirement.is_some();
        match route.host.checkout(self.replica_timeout(), check_follows) {
            Ok(client) => self.verified(self.conn(route, client), retry),
            Err(u) => self.replica_unavailable(&addr, &u.error, u.host_failed),
        }
    }

    /// `read_conn` for a sticky read no cached position can serve: the live check runs on the
    /// very connection that will serve the read (one round trip), on the round-robin candidate
    /// first, then on the others, within `sticky_check_budget_ms`; then the primary (or the
    /// error, under the `"error"` policy).
    pub(super) fn read_live(
        &self,
        req: Requirement,
        candidates: &[Arc<StripedHost>],
    ) -> Result<Conn> {
        let deadline = Instant::now() + self.router.sticky_check_budget();
        'candidates: for host in candidates {
            // A check that fails on a statement error (not the host's) is tried once more.
            let mut retry = true;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break 'candidates;
                }
                let mut client = match host.checkout(self.replica_timeout().min(left), true) {
                    Ok(c) => c,
                    Err(u) => {
                        warn!(target: "dlb", "{}; trying another replica", u.error);
                        if u.host_failed {
                            self.report_failure(&host.addr);
                        }
                        continue 'candidates;
                    }
                };
                if !self.in_primary_cluster(host, &client) {
                    client.discard = true;
                    continue 'candidates;
                }
                self.router.count_live_check();
                let checked = counters::timed(&self.counters.live_check_latency, || {
                    ping_replay(&mut client)
                });
                match checked {
                    Ok(Some(pos)) if freshness::proves(pos, req) => {
                        host.observe_replay(client.identity_tag(), pos);
                        let route =
                            self.router
                                .sticky_route(host.handle(), Reason::CaughtUpLive, req);
                        return Ok(self.conn(route, client));
                    }
                    Ok(Some(pos)) => {
                        host.observe_replay(client.identity_tag(), pos);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        client.discard = true;
                        drop(client);
                        if is_host_failure(&e) {
                            warn!(target: "dlb", "live check on replica {} failed: {}", host.addr, crate::redact::bounded(&e.to_string()));
                            self.report_failure(&host.addr);
                        } else if retry {
                            debug!(target: "dlb", "live check on replica {} failed: {}; on another connection", host.addr, crate::redact::bounded(&e.to_string()));
                            retry = false;
                            continue;
                        } else {
                            warn!(target: "dlb", "live check on replica {} failed: {}", host.addr, crate::redact::bounded(&e.to_string()));
                        }
                    }
                }
                continue 'candidates;
            }
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
    /// only when that very connection has replayed the LSN the read needs, reset first if a
    /// borrower may have changed it ([`ping_replay`]: one round trip for all of it).
    /// Otherwise the read goes to the primary (or, for a sticky read under the `"error"`
    /// policy, the error). A check that fails on a statement error is no host failure: with
    /// `retry`, the read starts over on another connection; without, it goes to the primary,
    /// and the replica is not reported.
    ///
    /// # Errors
    /// [`Error::PrimaryUnavailable`]; [`Error::NoCaughtUpReplica`] under the `"error"` policy.
    pub(super) fn verified(&self, mut conn: Conn, retry: bool) -> Result<Conn> {
        if !self.in_primary_cluster(&conn.route.host, &conn.client) {
            warn!(target: "dlb", "a connection to replica {} reached a server outside the primary's cluster: discarded; reading from the primary", conn.route.addr());
            conn.client.discard = true;
            drop(conn);
            let route = self.router.primary_route(Reason::ReplicaUnavailable);
            return self.checkout(route, self.checkout_timeout());
        }
        let Some(req) = conn.route.requirement else {
            return Ok(conn);
        };
        if self.cache_proves(&conn, req) {
            return Ok(conn);
        }
        match ping_replay(&mut conn.client) {
            Ok(Some(pos)) if freshness::proves(pos, req) => {
                conn.route
                    .host
                    .observe_replay(conn.client.identity_tag(), pos);
                Ok(conn)
            }
            Ok(_) => {
                drop(conn);
                let route = self.router.not_caught_up(req.lsn)?;
                self.checkout(route, self.checkout_timeout())
            }
            Err(e) => {
                conn.client.discard = true;
                let route = conn.route.clone();
                drop(conn);
                if !is_host_failure(&e) && retry {
                    debug!(target: "dlb", "the check of a connection to replica {} failed: {}; on another connection", route.addr(), crate::redact::bounded(&e.to_string()));
                    return self.read_on(route, false);
                }
                self.replica_unavailable(route.addr(), &e, is_host_failure(&e))
            }
        }
    }

    /// Whether the host's cached position proves `req` for this very connection, so that no
    /// round trip is needed: the connection is clean and recently checked, it reached the
    /// server the cache describes (a server's replay position only moves forward on its
    /// timeline), and that position proves the read ([`freshness::proves`]). The position is
    /// read before the identity: the monitor writes a new identity before the position that
    /// goes with it, so a position read under the connection's identity is that server's. No
    /// I/O.
    fn cache_proves(&self, conn: &Conn, req: Requirement) -> bool {
        let host = &conn.route.host;
        let client = &conn.client;
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
