//! Hostile DNS servers on 127.0.0.1, for the DNS client's bounds (issue 24): each serves on a
//! thread of its own until dropped. Shared by `tests/discovery.rs` (through a balancer) and
//! the unit tests of `src/discovery/dns.rs` (which include this file with `#[path]`), so it
//! uses std only.
#![allow(dead_code)] // each user takes its part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A hostile server: its port (UDP or TCP), stopped and joined on drop.
pub struct HostileDns {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostileDns {
    fn spawn(port: u16, serve: impl FnOnce(&AtomicBool) + Send + 'static) -> HostileDns {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hostile-dns".into())
            .spawn(move || serve(&flag))
            .unwrap();
        HostileDns {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Over UDP, answers every query with a datagram whose id is not the query's, every
    /// `every`, for ever (the last 8 clients, each with its own query's wrong id).
    pub fn udp_wrong_ids(every: Duration) -> HostileDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(every)).unwrap();
        let port = sock.local_addr().unwrap().port();
        HostileDns::spawn(port, move |stop| {
            let mut clients = Vec::new();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let mut stray = reply(&buf[..n], 0);
                    stray[0] ^= 0x5A; // another id
                    clients.push((peer, stray));
                    if clients.len() > 8 {
                        clients.remove(0);
                    }
                }
                for (peer, stray) in &clients {
                    let _ = sock.send_to(stray, peer);
                }
            }
        })
    }

    /// Over UDP, answers each query with the datagrams `answer(query)`, in order.
    pub fn udp(answer: fn(&[u8]) -> Vec<Vec<u8>>) -> HostileDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        HostileDns::spawn(port, move |stop| {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    for d in answer(&buf[..n]) {
                        let _ = sock.send_to(&d, peer);
                    }
                }
            }
        })
    }

    /// Over TCP, answers each query with `answer(query)`, framed with its length. With
    /// `drip`, the frame announces 65535 bytes and goes one byte per `drip`, the answer then
    /// zeros, until the client hangs up: each read gets a byte well within any timeout.
    pub fn tcp(answer: fn(&[u8]) -> Vec<u8>, drip: Option<Duration>) -> HostileDns {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        HostileDns::spawn(port, move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => serve_tcp(s, answer, drip, stop),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }
}

impl Drop for HostileDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_tcp(
    mut s: TcpStream,
    answer: fn(&[u8]) -> Vec<u8>,
    drip: Option<Duration>,
    stop: &AtomicBool,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut len = [0u8; 2];
    if s.read_exact(&mut len).is_err() {
        return;
    }
    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if s.read_exact(&mut query).is_err() {
        return;
    }
    let msg = answer(&query);
    let Some(gap) = drip else {
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        let _ = s.write_all(&framed);
        return;
    };
    let bytes = [0xFF, 0xFF]
        .into_iter()
        .chain(msg)
        .chain(std::iter::repeat(0));
    for b in bytes {
        if stop.load(Ordering::Relaxed) || s.write_all(&[b]).is_err() {
            return;
        }
        std::thread::sleep(gap);
    }
}

/// The header and question of an answer to `query` (a query carries nothing else): its id,
/// QR, RD and RA set, no error, `ancount` answers to follow.
pub fn reply(query: &[u8], ancount: u16) -> Vec<u8> {
    let mut m = query.to_vec();
    m[2] = 0x81;
    m[3] = 0x80;
    m[6..8].copy_from_slice(&ancount.to_be_bytes());
    m[8..12].fill(0);
    m
}

/// Appends an A record `ip` whose owner is the question's name (a pointer to offset 12).
pub fn push_a(m: &mut Vec<u8>, ip: [u8; 4]) {
    m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
    m.extend_from_slice(&ip);
}

/// A correct answer to `query`: one A record, 127.0.0.1.
pub fn a_answer(query: &[u8]) -> Vec<u8> {
    let mut m = reply(query, 1);
    push_a(&mut m, [127, 0, 0, 1]);
    m
}

/// An answer to `query` of nearly 64 KiB whose A records all have one owner name that
/// expands, through `depth` chained compression pointers, to `depth` labels of `label` bytes
/// (depth × (label + 1) + 1 bytes): a parser without bounds expands it once per record.
pub fn pointer_bomb(query: &[u8], depth: usize, label: usize) -> Vec<u8> {
    let mut m = reply(query, 0);
    // First record: an unknown type (99) with the root as owner, whose data holds the chain:
    // the root name, then `depth` nodes `label bytes, pointer to the node before`.
    let chain_len = 1 + depth * (label + 3);
    m.extend_from_slice(&[0, 0, 99, 0, 1, 0, 0, 0, 30]);
    m.extend_from_slice(&(chain_len as u16).to_be_bytes());
    let mut prev = m.len();
    m.push(0);
    for _ in 0..depth {
        let at = m.len();
        m.push(label as u8);
        m.extend(std::iter::repeat_n(b'a', label));
        m.extend_from_slice(&(0xC000 | prev as u16).to_be_bytes());
        prev = at;
    }
    // Then A records named by a pointer to the last node, as many as fit.
    let mut count: u16 = 1;
    while m.len() + 16 <= usize::from(u16::MAX) {
        m.extend_from_slice(&(0xC000 | prev as u16).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
        count += 1;
    }
    m[6..8].copy_from_slice(&count.to_be_bytes());
    m
}
