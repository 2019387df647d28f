//! TCP proxies on loopback in front of real servers:
//! * [`Proxy::start`]: one upstream; can delay every reply ([`Proxy::set_delay`]), which makes
//!   a replica slow-but-alive without touching it;
//! * [`Proxy::switch_to`]: re-points it at run time (new connections go to the new upstream,
//!   existing ones keep theirs), like a DNS name or a Service re-pointed at another server;
//! * [`Proxy::alternating`]: each new connection goes to the next upstream in turn, like a
//!   load balancer (a Kubernetes read Service, an HAProxy port) in front of several servers;
//! * [`Proxy::set_stalled`]: stops forwarding in both directions while every socket stays open
//!   and new connections are still accepted (the kernel acknowledges everything): a black hole
//!   that neither `tcp_user_timeout` nor keepalives notice, like a hung proxy or middlebox.
//!
//! Dropping a proxy stops every thread it started (the accept loop and both pipes of every
//! connection: their sockets are shut down) and waits for them.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

/// One proxied connection: both sockets (to shut them down) and its two pipe threads.
struct Piped {
    sockets: [TcpStream; 2],
    threads: Vec<JoinHandle<()>>,
}

/// What the proxy's threads share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    delay_ms: AtomicU64,
    /// Nothing is forwarded while set.
    stalled: AtomicBool,
    /// New connections go to `upstreams[next % len]`, `next` then advances.
    upstreams: Mutex<Vec<String>>,
    next: AtomicUsize,
    connections: Mutex<Vec<Piped>>,
    accepted: AtomicUsize,
}

impl Shared {
    fn next_upstream(&self) -> String {
        let ups = self.upstreams.lock();
        ups[self.next.fetch_add(1, Ordering::Relaxed) % ups.len()].clone()
    }
}

pub struct Proxy {
    /// `127.0.0.1:port` to connect to.
    pub addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        Proxy::alternating(&[upstream])
    }

    /// Listens on a free loopback port and forwards each new connection to the next of
    /// `upstreams` in turn (the first connection to the first).
    pub fn alternating(upstreams: &[&str]) -> Proxy {
        assert!(!upstreams.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        *shared.upstreams.lock() = upstreams.iter().map(|s| s.to_string()).collect();
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("test-proxy-accept".into())
            .spawn(move || accept_loop(listener, &s))
            .unwrap();
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Delays every chunk from the server by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops (`true`) or resumes forwarding, in both directions and on every connection, open
    /// or new. While stalled, what was read is held back, and sockets stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::Relaxed);
    }

    /// From now on new connections go to `upstream` only; open ones keep their server.
    pub fn switch_to(&self, upstream: &str) {
        *self.shared.upstreams.lock() = vec![upstream.to_string()];
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

/// Accepts until told to stop (polling: the listener is non-blocking), and starts the two pipes
/// of every connection.
fn accept_loop(listener: TcpListener, s: &Arc<Shared>) {
    while !s.stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        s.accepted.fetch_add(1, Ordering::Relaxed);
        client.set_nonblocking(false).unwrap();
        let up: SocketAddr = s.next_upstream().parse().expect("upstream host:port");
        let Ok(server) = TcpStream::connect_timeout(&up, Duration::from_secs(2)) else {
            continue; // the client sees the connection closed
        };
        let piped = Piped {
            threads: vec![
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    false,
                    s.clone(),
                ),
                pipe(
                    server.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                    true,
                    s.clone(),
                ),
            ],
            sockets: [client, server],
        };
        let mut conns = s.connections.lock();
        conns.retain(|p| !p.threads.iter().all(JoinHandle::is_finished));
        conns.push(piped);
    }
}

/// Copies `from` to `to` until either side closes (or the proxy stops and shuts them down),
/// delaying every chunk by the proxy's delay when `delayed`, and holding it back while the proxy
/// is stalled.
fn pipe(mut from: TcpStream, mut to: TcpStream, delayed: bool, s: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("test-proxy-pipe".into())
        .spawn(move || {
            let mut buf = [0u8; 16384];
            while !s.stop.load(Ordering::Relaxed) {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let ms = s.delay_ms.load(Ordering::Relaxed);
                if delayed && ms > 0 {
                    std::thread::sleep(Duration::from_millis(ms));
                }
                while s.stalled.load(Ordering::Relaxed) && !s.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        })
        .unwrap()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join(); // at most one poll interval, or one upstream connect
        }
        // No new connection now: end the open ones (a blocked read returns at the shutdown).
        let conns = std::mem::take(&mut *self.shared.connections.lock());
        for p in &conns {
            for sock in &p.sockets {
                let _ = sock.shutdown(Shutdown::Both);
            }
        }
        for p in conns {
            for t in p.threads {
                let _ = t.join();
            }
        }
    }
}
