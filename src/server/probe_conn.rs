//! The monitor's probe connections: tokio-postgres on a current-thread runtime of their own, so
//! that every exchange has a deadline.
//!
//! The sync `postgres::Client` (the pools' driver) has no per-query timeout. A host behind a
//! proxy, load balancer or NAT that stops forwarding without closing anything never answers
//! and never fails: the kernel acknowledges every segment, so neither `tcp_user_timeout` nor
//! keepalives fire, and a probe blocked on it held its thread and its monitoring connection for
//! as long as the stall lasted (the host was then never probed again: "previous probe still
//! running"). A cancel request (`CancelToken`) would travel through the same black hole. Here
//! the connect and every query are futures raced against `tokio::time::timeout`: at the
//! deadline the exchange is abandoned, the probe fails, and dropping the connection closes the
//! socket without waiting for anything.

use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::server::tls::{Attempt, PgTls};

/// A monitoring connection. Every call blocks at most for its timeout.
pub(crate) struct ProbeConn {
    client: Client,
    /// Drives the connection, only while a call runs (`None` once shut down).
    rt: Option<Runtime>,
    /// The bound of each query.
    timeout: Duration,
}

/// "no answer within N ms".
fn no_answer(d: Duration) -> String {
    format!("no answer within {} ms", d.as_millis())
}

impl ProbeConn {
    /// Connects with `config` the way `tls` says (libpq's `sslmode`), giving up after
    /// `connect_timeout` (every attempt of the `sslmode` fallback included). Each later query
    /// is bounded by `query_timeout`.
    ///
    /// # Errors
    /// The connection failure or the timeout, as text.
    pub(crate) fn connect(
        config: &tokio_postgres::Config,
        tls: &PgTls,
        connect_timeout: Duration,
        query_timeout: Duration,
    ) -> Result<ProbeConn, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let deadline = tokio::time::Instant::from_std(Instant::now() + connect_timeout);
        // libpq does not use TLS over Unix sockets, whatever sslmode says.
        let unix = matches!(
            config.get_hosts().first(),
            Some(tokio_postgres::config::Host::Unix(_))
        );
        let connected = tls.connect_with(unix, |mode, make| {
            let mut c = config.clone();
            c.ssl_mode(mode);
            rt.block_on(async {
                // The connection task runs on this runtime, whenever a call drives it.
                let connect = async {
                    match make {
                        Some(make) => c.connect(make).await.map(|(client, conn)| {
                            tokio::spawn(conn);
                            client
                        }),
                        None => c
                            .connect(tokio_postgres::NoTls)
                            .await
                            .map(|(client, conn)| {
                                tokio::spawn(conn);
                                client
                            }),
                    }
                };
                match tokio::time::timeout_at(deadline, connect).await {
                    Ok(r) => r.map_err(Attempt::Driver),
                    Err(_) => Err(Attempt::Failed(no_answer(connect_timeout))),
                }
            })
        });
        match connected {
            Ok(client) => Ok(ProbeConn {
                client,
                rt: Some(rt),
                timeout: query_timeout,
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e.0)
            }
        }
    }

    /// Runs `sql` (simple protocol: one round trip) and returns its rows, waiting at most the
    /// query timeout. After an error the connection is not to be used again.
    ///
    /// # Errors
    /// The server's or the driver's error, or the timeout, as text.
    pub(crate) fn query(&mut self, sql: &str) -> Result<Vec<SimpleQueryRow>, String> {
        self.query_by(sql, None)
    }

    /// [`ProbeConn::query`], giving up at `deadline` too when it comes before the query
    /// timeout.
    ///
    /// # Errors
    /// The server's or the driver's error, or the timeout, as text.
    pub(crate) fn query_by(
        &mut self,
        sql: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<SimpleQueryRow>, String> {
        let rt = self.rt.as_ref().ok_or("connection closed")?;
        let wait = deadline.map_or(self.timeout, |d| {
            self.timeout
                .min(d.saturating_duration_since(Instant::now()))
        });
        // The timer is made inside the runtime: it needs its time driver.
        let messages = rt
            .block_on(async { tokio::time::timeout(wait, self.client.simple_query(sql)).await })
            .map_err(|_| no_answer(wait))?
            .map_err(|e| match e.as_db_error() {
                Some(db) => format!("{}: {}", db.severity(), db.message()),
                None => crate::error::with_causes(&e),
            })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Whether the connection is known to be closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Drop for ProbeConn {
    /// Stops the connection task where it stands and closes the socket: nothing is awaited
    /// (a peer that stopped answering cannot hold the dropping thread), and it is safe inside
    /// an async context.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
