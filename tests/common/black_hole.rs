//! Dropped packets on loopback (iptables, root only): a host that vanishes without refusing
//! anything. Every rule carries the comment [`TAG`], so that rules a run left behind (a killed
//! test or soak) can be found and removed ([`clear`]).

use std::process::Command;

/// The comment on every rule made here.
pub const TAG: &str = "dlb-black-hole";

/// Adds (`-I`) or deletes (`-D`) the rules that drop every TCP and UDP packet to loopback
/// `port`; `Err` with iptables' words when it cannot be used (not root, not installed).
pub fn rule(op: &str, port: &str) -> Result<(), String> {
    for proto in ["tcp", "udp"] {
        let args = [
            "-w",
            op,
            "INPUT",
            "-i",
            "lo",
            "-p",
            proto,
            "-d",
            "127.0.0.1",
            "--dport",
            port,
            "-m",
            "comment",
            "--comment",
            TAG,
            "-j",
            "DROP",
        ];
        let out = Command::new("iptables")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run iptables: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
    }
    Ok(())
}

/// Deletes every rule made here still in place (nothing when iptables cannot be used).
pub fn clear() {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(spec) = line.strip_prefix("-A INPUT ")
            && line.contains(TAG)
        {
            let mut args = vec!["-w", "-D", "INPUT"];
            args.extend(spec.split_whitespace());
            let _ = Command::new("iptables").args(&args).output();
        }
    }
}
