//! The result of a routing decision.

use std::fmt;
use std::sync::Arc;

use crate::freshness::Requirement;
use crate::labels::{Reason, Role};
use crate::server::host::HostHandle;

/// Where to send a query, and why. Cheap to clone.
///
/// `Debug` and `Display` show the redacted DSN; [`Route::dsn`] gives the full one.
#[derive(Clone)]
pub struct Route {
    pub(crate) host: Arc<HostHandle>,
    pub(crate) reason: Reason,
    /// For a sticky pick, the LSN the read needs (a connection to the host is checked against
    /// it when it reached another server than the one the monitor probed).
    pub(crate) requirement: Option<Requirement>,
}

impl Route {
    /// The connection string to use, in the configured syntax, **password included**: hand it
    /// to a driver, never to a log.
    pub fn dsn(&self) -> &str {
        &self.host.dsn
    }

    /// The DSN with its password hidden.
    pub fn redacted_dsn(&self) -> &str {
        &self.host.redacted
    }

    /// `host:port` of the target.
    pub fn addr(&self) -> &str {
        &self.host.addr
    }

    /// The host's id: the same for every route to this host while the balancer knows it,
    /// never reused within the process (key a per-host connection pool on it; host events
    /// carry it too).
    pub fn host_id(&self) -> u64 {
        self.host.id
    }

    /// Primary or replica.
    pub fn role(&self) -> Role {
        self.host.role
    }

    /// Why this target was chosen.
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("dsn", &self.host.redacted)
            .field("role", &self.host.role)
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.host.role.as_str(),
            self.host.addr,
            self.reason
        )
    }
}
