//! A hostile fake PostgreSQL server on loopback: it refuses TLS and GSS encryption (`N`),
//! answers every StartupMessage with AuthenticationCleartextPassword (`R`, 3), and records
//! the passwords that clients send it (`p`) before failing the login. A client that honours
//! `require_auth=scram-sha-256` (libpq) never sends one.
//!
//! Dropping it stops its thread and waits for it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const PROTOCOL_3: u32 = 196_608;

#[derive(Default)]
struct Seen {
    startups: AtomicUsize,
    passwords: Mutex<Vec<String>>,
    /// Set: answer every StartupMessage with this error message at once (no authentication).
    error: Option<String>,
}

pub struct FakePg {
    port: u16,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakePg {
    pub fn start() -> FakePg {
        FakePg::serving(Seen::default())
    }

    /// A server that answers every StartupMessage with an ErrorResponse carrying `message`
    /// (any size, any bytes: a hostile server's text).
    pub fn failing_with(message: &str) -> FakePg {
        FakePg::serving(Seen {
            error: Some(message.to_string()),
            ..Seen::default()
        })
    }

    fn serving(seen: Seen) -> FakePg {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(seen);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        // One at a time: dlb's connections fail at once here.
                        Ok((s, _)) => {
                            let _ = serve(s, &seen);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakePg {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// StartupMessages received so far.
    pub fn startups(&self) -> usize {
        self.seen.startups.load(Ordering::SeqCst)
    }

    /// The passwords clients sent in clear.
    pub fn passwords(&self) -> Vec<String> {
        self.seen.passwords.lock().clone()
    }
}

impl Drop for FakePg {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_body(s: &mut TcpStream, len: u32) -> std::io::Result<Vec<u8>> {
    let n = (len as usize).checked_sub(4).filter(|&n| n <= 1 << 20);
    let mut body = vec![0; n.ok_or(std::io::ErrorKind::InvalidData)?];
    s.read_exact(&mut body)?;
    Ok(body)
}

fn serve(mut s: TcpStream, seen: &Seen) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    // The untyped first messages: encryption requests (refused), then the StartupMessage.
    loop {
        let len = read_u32(&mut s)?;
        let body = read_body(&mut s, len)?;
        let code = body
            .get(..4)
            .map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap()));
        match code {
            SSL_REQUEST | GSSENC_REQUEST => s.write_all(b"N")?,
            PROTOCOL_3 => break,
            _ => return Ok(()),
        }
    }
    seen.startups.fetch_add(1, Ordering::SeqCst);
    if let Some(message) = &seen.error {
        return error_response(&mut s, message);
    }
    // AuthenticationCleartextPassword.
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])?;
    let mut kind = [0; 1];
    s.read_exact(&mut kind)?;
    let len = read_u32(&mut s)?;
    let body = read_body(&mut s, len)?;
    if kind[0] == b'p' {
        let password = body.strip_suffix(&[0]).unwrap_or(&body);
        seen.passwords
            .lock()
            .push(String::from_utf8_lossy(password).into_owned());
    }
    error_response(&mut s, "password authentication failed")
}

/// An ErrorResponse (FATAL, 28P01) with `message`.
fn error_response(s: &mut TcpStream, message: &str) -> std::io::Result<()> {
    let mut fields = Vec::new();
    for (t, v) in [(b'S', "FATAL"), (b'C', "28P01"), (b'M', message)] {
        fields.push(t);
        fields.extend_from_slice(v.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    s.write_all(b"E")?;
    s.write_all(&(fields.len() as u32 + 4).to_be_bytes())?;
    s.write_all(&fields)
}
