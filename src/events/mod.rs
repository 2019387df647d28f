//! Host lifecycle events: a replica added to the list, removed (draining), drained (its pool
//! closable), quarantined, re-admitted, or reaching another server than before.
//!
//! Events are derived by routing when the monitor publishes a snapshot, by comparing it with
//! the one it replaces ([`diff`]; the health policy stays pure), and delivered after the
//! publication, outside every lock: to the callback when one is set
//! ([`crate::Balancer::set_event_callback`]), else into a bounded queue that a caller polls
//! ([`crate::Balancer::next_event`]) — for runtimes that cannot take calls from foreign
//! threads. The queue never blocks the monitor: when it is full the oldest event is dropped,
//! and the next event taken says how many were ([`HostEvent::dropped`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::labels::{Health, Role};
use crate::routing::Snapshot;
use crate::sync::queue::Queue;

/// How many events a balancer's queue holds before it drops the oldest.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// What happened to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostEventKind {
    /// The replica joined the list (at start-up too): a pool for it may be opened. It serves
    /// once healthy ([`HostEvent::health`] says how it stands).
    Added,
    /// The replica left the list: it is no longer picked and is being drained.
    Removed,
    /// A removed replica is drained: nothing of dlb's uses it any more, a pool for it may be
    /// closed.
    Drained,
    /// The replica was set aside ([`HostEvent::reason`] says why).
    Quarantined,
    /// A quarantined replica serves again.
    Readmitted,
    /// The replica's address now reaches another server than before (cached positions of the
    /// old one are forgotten; connections opened earlier may reach the old one).
    IdentityChanged,
}

/// One host lifecycle event. Contains no secrets.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HostEvent {
    /// What happened.
    pub event: HostEventKind,
    /// The host's id: stable while the host is known to the balancer, never reused within
    /// the process (the same id as [`crate::Route::host_id`]).
    pub host_id: u64,
    /// `host:port`, as the driver connects.
    pub addr: String,
    /// `replica` (only replicas have events for now).
    pub role: &'static str,
    /// Its health after the event (`unknown`, `healthy`, `quarantined`).
    pub health: &'static str,
    /// Why it is quarantined (for `quarantined`; and `added` when it starts quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Replay lag in bytes at the last check (0 when unknown).
    pub lag_bytes: u64,
    /// Replay lag in seconds at the last check (0 when unknown).
    pub lag_seconds: f64,
    /// The last probe's error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The server the address reaches (`system_identifier` and start time), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Events dropped before this one because the queue was full (0 through a callback).
    pub dropped: u64,
}

impl HostEvent {
    /// The event as one line of JSON (what `lb_next_event()` hands out).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A callback receiving every host event, on the monitor thread.
pub type EventCallback = Box<dyn Fn(&HostEvent) + Send + Sync>;

/// Where a balancer's events go: its callback, else its queue.
pub(crate) struct Events {
    callback: Mutex<Option<Arc<EventCallback>>>,
    queue: Queue<HostEvent>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new() -> Events {
        Events {
            callback: Mutex::new(None),
            queue: Queue::new(EVENT_QUEUE_CAPACITY),
        }
    }

    /// Delivers `events`, in order, to the callback or the queue. Call it holding no lock.
    pub(crate) fn deliver(&self, events: Vec<HostEvent>) {
        if events.is_empty() {
            return;
        }
        let callback = self.callback.lock().clone();
        for e in events {
            match &callback {
                Some(cb) => cb(&e),
                None => self.queue.push(e),
            }
        }
    }

    /// Replaces the callback (`None`: events go to the queue again). A new callback first
    /// receives the events already queued, on the calling thread, before any later one.
    pub(crate) fn set_callback(&self, cb: Option<EventCallback>) {
        let mut slot = self.callback.lock();
        *slot = cb.map(Arc::new);
        if let Some(cb) = slot.as_ref() {
            // Under the lock: `deliver` waits, so the order is kept.
            while let Ok(Some(e)) = self.take(Duration::ZERO, |e| Ok::<_, Infallible>(e.clone())) {
                cb(&e);
            }
        }
    }

    /// The next queued event, waiting up to `timeout`; see [`Queue::take`].
    pub(crate) fn take<R, E>(
        &self,
        timeout: Duration,
        accept: impl FnOnce(&HostEvent) -> Result<R, E>,
    ) -> Result<Option<R>, E> {
        self.queue.take(timeout, |e, dropped| {
            let mut e = e.clone();
            e.dropped = dropped;
            accept(&e)
        })
    }

    /// Ends every wait in [`Events::take`] now.
    pub(crate) fn wake(&self) {
        self.queue.wake();
    }
}

/// The events that turn `old` into `new` (replicas are matched by host id).
pub(crate) fn diff(old: &Snapshot, new: &Snapshot) -> Vec<HostEvent> {
    let mut out = Vec::new();
    for r in &new.replicas {
        let event = |event| HostEvent {
            event,
            host_id: r.host.id,
            addr: r.host.addr.clone(),
            role: Role::Replica.as_str(),
            health: r.health.as_str(),
            reason: match r.health {
                Health::Quarantined(q) => Some(q.as_str()),
                _ => None,
            },
            lag_bytes: r.lag.bytes,
            lag_seconds: r.lag.seconds,
            error: r.last_error.clone(),
            server: r.server.as_ref().map(|(id, _)| id.to_string()),
            dropped: 0,
        };
        let Some(before) = old.replicas.iter().find(|o| o.host.id == r.host.id) else {
            out.push(event(HostEventKind::Added));
            continue;
        };
        if let (Some((a, _)), Some((b, _))) = (&before.server, &r.server)
            && a != b
        {
            out.push(event(HostEventKind::IdentityChanged));
        }
        match (before.health, r.health) {
            (a, Health::Quarantined(q)) if a != Health::Quarantined(q) => {
                out.push(event(HostEventKind::Quarantined));
            }
            (Health::Quarantined(_), Health::Healthy) => out.push(event(HostEventKind::Readmitted)),
            _ => {}
        }
    }
    let gone = |kind, host: &crate::server::host::Host| HostEvent {
        event: kind,
        host_id: host.id,
        addr: host.addr.clone(),
        role: Role::Replica.as_str(),
        health: Health::Unknown.as_str(),
        reason: None,
        lag_bytes: 0,
        lag_seconds: 0.0,
        error: None,
        server: None,
        dropped: 0,
    };
    let listed = |id: u64| new.replicas.iter().any(|n| n.host.id == id);
    let draining = |id: u64| new.draining.iter().any(|n| n.id == id);
    for r in &old.replicas {
        if !listed(r.host.id) {
            out.push(gone(HostEventKind::Removed, &r.host));
            // Nothing held it: drained in the same check.
            if !draining(r.host.id) {
                out.push(gone(HostEventKind::Drained, &r.host));
            }
        }
    }
    for h in &old.draining {
        if !draining(h.id) && !listed(h.id) {
            out.push(gone(HostEventKind::Drained, h));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dsn::Dsn;
    use crate::health::Lag;
    use crate::labels::QuarantineReason;
    use crate::routing::ReplicaState;
    use crate::server::host::Host;
    use crate::server::identity::ServerIdentity;

    /// A host whose pool connects lazily: nothing here touches the network.
    fn host(port: u16) -> Arc<Host> {
        let cfg = Config::from_json(r#"{"primary": "host=127.0.0.1 port=1"}"#).unwrap();
        let dsn = Dsn::parse(&format!("host=127.0.0.1 port={port}"), "replicas").unwrap();
        Arc::new(Host::new(Role::Replica, &dsn, &cfg).unwrap())
    }

    fn state(h: &Arc<Host>, health: Health, server: u64) -> ReplicaState {
        ReplicaState {
            host: h.clone(),
            health,
            lag: Lag::default(),
            last_error: None,
            server: (server != 0).then(|| {
                (
                    ServerIdentity {
                        system_id: 7,
                        server_addr: "127.0.0.1:1".into(),
                        started_us: server as i64,
                    },
                    Some(1),
                )
            }),
        }
    }

    fn snap(replicas: Vec<ReplicaState>, draining: Vec<Arc<Host>>) -> Snapshot {
        Snapshot {
            replicas,
            draining,
            ..Snapshot::default()
        }
    }

    fn kinds(events: &[HostEvent]) -> Vec<(HostEventKind, u64)> {
        events.iter().map(|e| (e.event, e.host_id)).collect()
    }

    #[test]
    fn diff_names_every_transition_once() {
        let (a, b) = (host(5001), host(5002));
        let lag = Health::Quarantined(QuarantineReason::Lag);
        let empty = snap(vec![], vec![]);
        let start = snap(
            vec![state(&a, Health::Unknown, 1), state(&b, lag, 1)],
            vec![],
        );
        assert_eq!(
            kinds(&diff(&empty, &start)),
            [(HostEventKind::Added, a.id), (HostEventKind::Added, b.id)]
        );
        assert_eq!(diff(&empty, &start)[1].reason, Some("lag"));
        assert!(diff(&start, &start).is_empty(), "no change, no event");

        // a quarantined and reaching another server; b re-admitted.
        let next = snap(
            vec![
                state(&a, Health::Quarantined(QuarantineReason::Timeout), 2),
                state(&b, Health::Healthy, 1),
            ],
            vec![],
        );
        assert_eq!(
            kinds(&diff(&start, &next)),
            [
                (HostEventKind::IdentityChanged, a.id),
                (HostEventKind::Quarantined, a.id),
                (HostEventKind::Readmitted, b.id),
            ]
        );

        // a removed while in use (draining), then drained; b removed and drained at once.
        let draining = snap(vec![state(&b, Health::Healthy, 1)], vec![a.clone()]);
        assert_eq!(
            kinds(&diff(&next, &draining)),
            [(HostEventKind::Removed, a.id)]
        );
        assert_eq!(
            kinds(&diff(&draining, &empty)),
            [
                (HostEventKind::Removed, b.id),
                (HostEventKind::Drained, b.id),
                (HostEventKind::Drained, a.id),
            ]
        );
    }
}
