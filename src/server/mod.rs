//! One PostgreSQL server, as dlb talks to it: a [`host::Host`] (its pool, monitoring
//! connection, cached replay position and identity), the pooled connections that know which
//! server they reached and come back clean ([`connection`]), the references dlb's own threads
//! hold for one piece of I/O ([`io_ref`]), the deadline-bounded probe
//! connection ([`probe_conn`]), the live replay checker of DSN handoffs ([`checker`]), server
//! identity ([`identity`]) and TLS with libpq's `sslmode` ([`tls`]).
//!
//! What this part deliberately does not do: decide. Whether a host is in or out is
//! `health`'s, where a read goes is `routing`'s, when to probe is the monitor's; this part
//! only connects, asks and remembers the answers. `tests/architecture.rs` fails if a module
//! here imports routing, the monitor, sticking or the balancer.

pub(crate) mod checker;
pub(crate) mod connection;
pub(crate) mod host;
pub(crate) mod identity;
pub(crate) mod io_ref;
pub(crate) mod probe_conn;
pub(crate) mod session;
pub(crate) mod tls;
