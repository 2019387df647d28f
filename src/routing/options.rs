//! Per-call options of a pick.

use std::time::{Duration, Instant};

use crate::config::NoCaughtUpPolicy;

/// Options for one pick ([`crate::Balancer::pick_replica_with`]); the default is what
/// [`crate::Balancer::pick_replica`] does.
///
/// Build it with the setters: `PickOptions::default().budget(d).cached_only(true)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PickOptions {
    /// A time budget for the pick's blocking work: the LSN store's read and the live replay
    /// checks end within it (each still within its own limit: the store's `op_timeout_ms`,
    /// `sticky_check_budget_ms`). When it runs out, the read goes where an unprovable read
    /// goes (the primary, or the `"error"` policy's error). `None` (default): only those limits.
    pub budget: Option<Duration>,
    /// Never block: no live replay check, and no read of an LSN store that may block (Redis):
    /// a keyed read is then routed from the cached replay positions only, and goes to the
    /// primary ([`crate::Reason::StoreError`]) when the store would have to be asked.
    /// Default: false.
    pub cached_only: bool,
    /// What a read no replica can serve gets, for this call (default: the configuration's
    /// `no_caught_up_replica`).
    pub no_caught_up: Option<NoCaughtUpPolicy>,
}

impl PickOptions {
    /// Sets [`PickOptions::budget`].
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Sets [`PickOptions::cached_only`].
    pub fn cached_only(mut self, yes: bool) -> Self {
        self.cached_only = yes;
        self
    }

    /// Sets [`PickOptions::no_caught_up`].
    pub fn no_caught_up(mut self, policy: NoCaughtUpPolicy) -> Self {
        self.no_caught_up = Some(policy);
        self
    }

    /// When the budget ends, from now (`None`: no budget, or one too far to represent).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline_from(Instant::now())
    }

    /// The deadline of a call that started at `start`.
    pub(crate) fn deadline_from(&self, start: Instant) -> Option<Instant> {
        self.budget.and_then(|b| start.checked_add(b))
    }
}
