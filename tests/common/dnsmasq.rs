//! A real DNS server for discovery tests: dnsmasq on a loopback port, serving SRV and A
//! records from a configuration file the test rewrites (each change restarts the server).

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dnsmasq {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dnsmasq {
    /// Starts dnsmasq serving `records` (dnsmasq config lines such as
    /// `srv-host=replica.pg.test,r1.pg.test,55433` and `host-record=r1.pg.test,127.0.0.1`).
    /// A port that turns out to be taken (dnsmasq also binds TCP on it) is replaced by another.
    pub fn start(records: &[String]) -> Dnsmasq {
        let dir = std::env::temp_dir().join(format!(
            "dlb-dns-{}-{}",
            std::process::id(),
            free_udp_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Dnsmasq {
            port: free_udp_port(),
            dir,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..5 {
            match d.try_set_records(records) {
                Ok(()) => return d,
                Err(e) => last = e,
            }
            d.port = free_udp_port();
        }
        panic!("dnsmasq did not start: {last}");
    }

    /// Replaces the records and restarts the server on the same port; returns once it
    /// answers.
    pub fn set_records(&mut self, records: &[String]) {
        let mut last = String::new();
        for _ in 0..5 {
            match self.try_set_records(records) {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not restart: {last}");
    }

    fn try_set_records(&mut self, records: &[String]) -> Result<(), String> {
        self.stop();
        let conf = self.dir.join("dnsmasq.conf");
        let mut text = String::from("no-resolv\nno-hosts\nno-poll\nlocal-ttl=1\nauth-ttl=1\n");
        for r in records {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        let bin = ["/usr/sbin/dnsmasq", "dnsmasq"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("dnsmasq");
        let log = self.dir.join("dnsmasq.log");
        let child = Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--user=root")
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start dnsmasq (installed by scripts/bootstrap.sh)");
        self.child = Some(child);
        self.wait_ready().map_err(|e| {
            self.stop();
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            format!("port {}: {e}; dnsmasq said: {}", self.port, stderr.trim())
        })
    }

    /// Waits until the server answers (bounded); fails at once if it exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        // A bare query for the root SOA; any answer means the server is up.
        let end = Instant::now() + Duration::from_secs(10);
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
        loop {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let _ = s.send_to(&q, ("127.0.0.1", self.port));
            let mut buf = [0u8; 512];
            if s.recv(&mut buf).is_ok() {
                return Ok(());
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited ({st})"));
            }
            if Instant::now() >= end {
                return Err("no answer within 10 s".into());
            }
        }
    }

    /// Stops the server (queries then fail).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
