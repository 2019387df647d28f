//! A small blocking pool of Redis connections: at most `pool_size` in use, idle ones reused,
//! every wait bounded by a deadline.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::cluster::ClusterConnection;
use redis::{ConnectionLike, IntoConnectionInfo, RedisResult, Value};

/// A connection the pool can hand out.
pub(super) trait Link: ConnectionLike + Send + 'static {
    /// Sets the read and write timeouts of every socket of the connection.
    fn set_io_timeout(&self, d: Duration) -> RedisResult<()>;
}

impl Link for redis::Connection {
    fn set_io_timeout(&self, d: Duration) -> RedisResult<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Link for ClusterConnection<NodeConn> {
    fn set_io_timeout(&self, d: Duration) -> RedisResult<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

/// A connection to one Cluster node, with two changes to what redis-rs's cluster client does
/// with it:
///
/// * **No `READONLY`.** The client sends `READONLY` on every new node connection (replicas
///   included: it connects to every node of its slot map). On such a connection a replica
///   answers reads (`GET`, and scripts not flagged as writing, which ours are not: flags need
///   Redis 7) for its master's slots itself, with data that may lag, instead of redirecting
///   them. Our calls are routed to the slot's master, but a stale slot map (the old master is
///   a replica after a failover) or the client's random-node fallback (a slot it does not
///   know) would reach a replica. This wrapper answers `READONLY` with `OK` without sending
///   it, so a replica answers `MOVED` and the call follows it to the master: an LSN is never
///   read from a Redis replica.
/// * **Bounded from the start.** The client sends `READONLY` before it applies its response
///   timeout; this wrapper applies the connect timeout to reads and writes at once, so a node
///   that accepts connections but does not answer cannot block a caller.
pub(super) struct NodeConn(redis::Connection);

/// `READONLY` as redis-rs packs it (`cmd("READONLY")`).
const READONLY: &[u8] = b"*1\r\n$8\r\nREADONLY\r\n";

impl redis::cluster::Connect for NodeConn {
    fn connect<T: IntoConnectionInfo>(info: T, timeout: Option<Duration>) -> RedisResult<Self> {
        let conn = <redis::Connection as redis::cluster::Connect>::connect(info, timeout)?;
        conn.set_read_timeout(timeout)?;
        conn.set_write_timeout(timeout)?;
        Ok(NodeConn(conn))
    }
    fn send_packed_command(&mut self, cmd: &[u8]) -> RedisResult<()> {
        self.0.send_packed_command(cmd)
    }
    fn set_write_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_write_timeout(dur)
    }
    fn set_read_timeout(&self, dur: Option<Duration>) -> RedisResult<()> {
        self.0.set_read_timeout(dur)
    }
    fn recv_response(&mut self) -> RedisResult<Value> {
        self.0.recv_response()
    }
}

impl ConnectionLike for NodeConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if cmd.eq_ignore_ascii_case(READONLY) {
            return Ok(Value::Okay);
        }
        self.0.req_packed_command(cmd)
    }
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }
    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
    fn supports_pipelining(&self) -> bool {
        self.0.supports_pipelining()
    }
    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }
    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// A pooled connection and the socket timeout currently set on it.
pub(super) struct Pooled<C> {
    pub(super) conn: C,
    pub(super) timeout: Duration,
}

/// At most `size` connections in use at once; idle ones are kept for reuse.
pub(super) struct Pool<C> {
    state: Mutex<PoolState<C>>,
    freed: Condvar,
    pub(super) size: usize,
}

struct PoolState<C> {
    idle: Vec<Pooled<C>>,
    busy: usize,
}

impl<C> Pool<C> {
    /// A pool of at most `size` connections. Allocates nothing per slot: idle connections are
    /// kept as they come back.
    pub(super) fn new(size: usize) -> Pool<C> {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                busy: 0,
            }),
            freed: Condvar::new(),
            size,
        }
    }

    /// A slot (with an idle connection when there is one), or `None` at `deadline`.
    pub(super) fn acquire(&self, deadline: Instant) -> Option<Lease<'_, C>> {
        let mut st = self.state.lock();
        while st.busy >= self.size {
            if self.freed.wait_until(&mut st, deadline).timed_out() && st.busy >= self.size {
                return None;
            }
        }
        st.busy += 1;
        let conn = st.idle.pop();
        Some(Lease { pool: self, conn })
    }

    /// Drops every idle connection (after a connection failure they are likely dead too).
    pub(super) fn clear_idle(&self) {
        let idle = std::mem::take(&mut self.state.lock().idle);
        drop(idle);
    }
}

/// A slot in the pool; gives its connection (if still held) back on drop.
pub(super) struct Lease<'a, C> {
    pool: &'a Pool<C>,
    pub(super) conn: Option<Pooled<C>>,
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock();
        st.busy -= 1;
        if let Some(c) = self.conn.take() {
            st.idle.push(c);
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}
