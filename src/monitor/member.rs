//! A replica the monitor tracks, and what a probe's answer tells of the server behind its
//! address.

use super::*;

/// A replica the monitor tracks.
pub(super) struct Member {
    pub(super) addr: HostPort,
    pub(super) host: Arc<Host>,
    /// The host's per-stripe handles, for the round-robin ring.
    pub(super) handles: Arc<StripedHost>,
    pub(super) state: ReplicaHealth,
    /// Who answered the last probe, and its timeline.
    pub(super) server: Option<(ServerIdentity, Option<u32>)>,
    /// When it was last probed successfully.
    pub(super) last_probe: Option<Instant>,
}

impl Member {
    /// Takes in the identity a probe at `now` saw: a new monitoring connection is a sample of
    /// who the address reaches; a change of server forgets what was known of the old one.
    pub(super) fn identity_seen(
        &mut self,
        id: ServerIdentity,
        timeline: Option<u32>,
        fresh_conn: bool,
        now: Instant,
    ) {
        let tag = id.tag();
        let since = self.last_probe.replace(now);
        if fresh_conn {
            self.host.identity_log.record(tag, now);
        }
        let before = self.host.identity_tag();
        if self.host.set_identity(tag) {
            self.state.forget_progress();
            if before != 0 {
                info!(target: "dlb", "replica {} now reaches {id}: its cached replay position is forgotten", self.addr);
            }
        }
        // New pooled connections reached another server since the last probe: connect the
        // probe anew, so that the next check sees where the address leads now.
        if let Some(since) = since
            && self
                .host
                .identity_log
                .since(since)
                .iter()
                .any(|t| *t != tag)
        {
            self.host.reconnect_probe();
        }
        self.server = Some((id, timeline));
    }
}
