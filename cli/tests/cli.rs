//! The `dlb` command against the real test cluster: `dlb check` (healthy, a paused replica,
//! the primary stopped, bad configuration, no password printed) and `dlb watch` (piped: plain
//! lines, SIGTERM; in a terminal: driven in tmux).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const DLB: &str = env!("CARGO_BIN_EXE_dlb");
const SECRET: &str = "s3cretpw";

/// A file of this test run, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> TempFile {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempFile(
            std::env::temp_dir().join(format!("dlb-cli-test-{}-{n}-{what}", std::process::id())),
        )
    }

    /// A configuration file holding `json`.
    fn config(json: &str) -> TempFile {
        let f = TempFile::new("config.json");
        std::fs::write(&f.0, json).unwrap();
        f
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The test cluster's configuration (the primary's DSN with a password, which the
/// trust-authenticated cluster ignores; low lag thresholds; Redis when there is one), with
/// `extra` JSON fields (an `lsn_store` there replaces the test Redis).
fn config_json(extra: &str) -> String {
    let e = env();
    let primary = format!("{} password={SECRET}", e.primary);
    let mut fields = vec![
        format!("\"primary\": {}", serde_json::to_string(&primary).unwrap()),
        format!(
            "\"replicas\": {{\"hosts\": {}}}",
            serde_json::to_string(&e.replicas).unwrap()
        ),
        "\"replica_check_interval_ms\": 100".into(),
        "\"probe_timeout_ms\": 1000".into(),
        "\"max_lag_bytes\": 65536".into(),
        "\"max_lag_ms\": 200".into(),
    ];
    if !e.redis.is_empty() && !extra.contains("\"lsn_store\"") {
        fields.push(format!(
            "\"lsn_store\": {{\"redis\": {{\"url\": {}}}}}",
            serde_json::to_string(&e.redis).unwrap()
        ));
    }
    if !extra.is_empty() {
        fields.push(extra.to_string());
    }
    format!("{{{}}}", fields.join(", "))
}

fn dlb(args: &[&str]) -> Output {
    Command::new(DLB).args(args).output().expect("run dlb")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_secret(o: &Output) {
    assert!(!text(o).contains(SECRET), "password printed:\n{}", text(o));
}

#[test]
fn check_all_healthy_exits_0() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json(""));
    let o = dlb(&["check", cfg.path()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_no_secret(&o);
    for r in &env().replicas {
        let line = out.lines().find(|l| l.contains(r.as_str())).expect(r);
        assert!(
            line.contains("healthy") && line.contains("in recovery"),
            "{line}"
        );
        assert!(line.contains("cluster ") && line.ends_with("ok"), "{line}");
    }
    assert!(out.contains("verdict: ok"), "{out}");
    assert!(out.contains("not in recovery"), "the primary: {out}");

    let o = dlb(&["check", "--json", cfg.path()]);
    assert_eq!(o.status.code(), Some(0));
    assert_no_secret(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["hosts"].as_array().unwrap().len(), 3);
    assert_eq!(v["hosts"][1]["in_recovery"], true);
    assert_eq!(v["store"]["reachable"], true);
    assert_eq!(v["status"]["status"], "ok");

    // The same configuration from standard input and from DLB_CONFIG (text or path).
    let mut child = Command::new(DLB)
        .args(["check", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config_json("").as_bytes())
        .unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    for value in [config_json(""), cfg.path().to_string()] {
        let o = Command::new(DLB)
            .arg("check")
            .env("DLB_CONFIG", value)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
}

#[test]
fn check_a_paused_replica_exits_1_with_the_reason() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json(""));
    let lagging = replica_addr(2);
    pause_replay(2);
    let mut last = None;
    wait_until("dlb check reports the paused replica out", WAIT, || {
        generate_wal(128);
        let o = dlb(&["check", cfg.path()]);
        let done = o.status.code() == Some(1);
        last = Some(o);
        done
    });
    let o = last.unwrap();
    let out = text(&o);
    assert_no_secret(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("replica") && l.contains(lagging))
        .unwrap();
    assert!(
        line.contains("quarantined (lag)") && line.ends_with("out"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "verdict: degraded (replica {lagging} is out: lag)"
        )),
        "{out}"
    );
    let other = out.lines().find(|l| l.contains(replica_addr(1))).unwrap();
    assert!(other.contains("healthy"), "{out}");
}

/// Starts the primary again when dropped (also when the test fails).
struct PrimaryBack;

impl Drop for PrimaryBack {
    fn drop(&mut self) {
        if !start_primary() {
            eprintln!("warning: cannot start the primary again");
        }
    }
}

#[test]
fn check_with_the_primary_stopped_exits_2_with_a_clear_message() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json("\"pool\": {\"connect_timeout_ms\": 500}"));
    let _back = PrimaryBack;
    stop_primary();
    let o = dlb(&["check", cfg.path()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert_no_secret(&o);
    let primary = out.lines().find(|l| l.starts_with("primary")).unwrap();
    assert!(
        primary.contains(" down ") && primary.ends_with("down"),
        "{out}"
    );
    assert!(
        out.contains("verdict: unusable (primary 127.0.0.1:") && out.contains("is down: "),
        "{out}"
    );
    let o = dlb(&["check", "--json", cfg.path()]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "unusable");
    assert_eq!(v["status"]["primary_state"], "down");
    assert!(
        v["hosts"][0]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

#[test]
fn check_a_bad_configuration_exits_2_naming_the_field() {
    let cases = [
        (config_json("\"pool\": {\"max_size\": 0}"), "pool.max_size"),
        (
            config_json("\"metrics\": {\"prefix\": \"9x\"}"),
            "metrics.prefix",
        ),
        (
            format!("{{\"primary\": \"host=h port=nope password={SECRET}\"}}"),
            "primary",
        ),
        ("{\"primary\": ".to_string(), ""),
    ];
    for (json, field) in cases {
        let cfg = TempFile::config(&json);
        for args in [
            vec!["check", cfg.path()],
            vec!["check", "--json", cfg.path()],
        ] {
            let o = dlb(&args);
            assert_eq!(o.status.code(), Some(2), "{json}: {}", text(&o));
            assert_no_secret(&o);
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            assert!(
                err.starts_with(&format!("dlb: invalid configuration: {field}")),
                "{json}: {err}"
            );
        }
    }
    let o = dlb(&["check", "/nonexistent/dlb.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("cannot read /nonexistent/dlb.json"));
    let o = Command::new(DLB)
        .arg("check")
        .env_remove("DLB_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no configuration"), "{}", text(&o));
    assert_eq!(dlb(&["frobnicate"]).status.code(), Some(2));
}

/// `--help`, `-h` and `help` print the usage, `--version` and `-V` the version, on standard
/// output with exit status 0 (they printed the usage to standard error with 2, as a usage
/// error, so `dlb --help | less` showed nothing). Usage errors keep standard error and 2. No
/// cluster needed.
#[test]
fn help_and_version_go_to_stdout_with_exit_0() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["help"],
        vec!["check", "--help"],
        vec!["watch", "--metrics", "http://127.0.0.1:1/", "-h"],
    ] {
        let o = dlb(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert!(out.starts_with("usage: dlb check"), "{args:?}: {out}");
        assert!(out.contains("dlb watch [--metrics URL"), "{args:?}: {out}");
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
    for args in [vec!["--version"], vec!["-V"], vec!["check", "-V"]] {
        let o = dlb(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("dlb {}\n", env!("CARGO_PKG_VERSION")),
            "{args:?}"
        );
        assert!(o.stderr.is_empty(), "{args:?}: {}", text(&o));
    }
    for (args, want) in [
        (vec![], "dlb: no command"),
        (vec!["frobnicate"], "dlb: unknown command \"frobnicate\""),
        (vec!["check", "--bogus"], "dlb: unknown option --bogus"),
        (vec!["check", "-x"], "dlb: unknown option -x"),
        (vec!["watch", "--metrics"], "dlb: --metrics needs a URL"),
        (vec!["check", "a", "b"], "dlb: more than one CONFIG"),
    ] {
        let o = dlb(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert!(err.contains("usage: dlb check"), "{args:?}: {err}");
    }
    // After `--`, `-V` is CONFIG (a file of that name), not the version.
    let o = dlb(&["check", "--", "-V"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot read -V"), "{}", text(&o));
}

/// `dlb check` with `DLB_CONFIG` set to `value` (and `args`), standard input `stdin`.
fn dlb_env(args: &[&str], value: &str, stdin: &str) -> Output {
    let mut child = Command::new(DLB)
        .args(args)
        .env("DLB_CONFIG", value)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // dlb may exit before reading (a broken pipe then).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A configuration value is never echoed: `DLB_CONFIG` holding a pasted DSN (either syntax)
/// or naming a missing file, a file or a CONFIG argument holding a DSN. dlb used to take any
/// `DLB_CONFIG` not starting with `{` as a path and print it whole ("cannot read
/// postgres://app:PASSWORD@..."). No cluster needed: each fails before connecting.
#[test]
fn config_values_are_never_echoed() {
    let url = format!("postgres://app:{SECRET}@db1/app");
    let kv = format!("host=db1 password={SECRET}");
    let dsn_file = TempFile::config(&url);
    for (args, value, want) in [
        (
            vec!["check"],
            url.clone(),
            "DLB_CONFIG looks like a connection string",
        ),
        (
            vec!["check"],
            format!("  {kv}"),
            "DLB_CONFIG looks like a connection string",
        ),
        (
            vec!["check", "--json"],
            kv.clone(),
            "DLB_CONFIG looks like a connection string",
        ),
        (
            vec!["watch"],
            url.clone(),
            "DLB_CONFIG looks like a connection string",
        ),
        (
            vec!["check"],
            format!("/nonexistent/{SECRET}.json"),
            "cannot read the file DLB_CONFIG names",
        ),
        (
            vec!["check", url.as_str()],
            String::new(),
            "CONFIG looks like a connection string",
        ),
        (
            vec!["check", dsn_file.path()],
            String::new(),
            "the configuration looks like a connection string",
        ),
        (
            vec!["check", "-"],
            String::new(),
            "the configuration looks like a connection string",
        ),
    ] {
        let o = dlb_env(&args, &value, &kv);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert_no_secret(&o);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(err.starts_with(&format!("dlb: {want}")), "{args:?}: {err}");
    }
}

/// A UTF-8 byte-order mark before the JSON (a file saved by a Windows editor, or pasted into
/// `DLB_CONFIG`) is skipped: the configuration is read, and its error names the field. dlb
/// used to take such a `DLB_CONFIG` as a path and print it, password included.
#[test]
fn a_byte_order_mark_is_skipped() {
    let json = format!(
        "\u{feff}{{\"primary\": \"host=127.0.0.1 port=1 password={SECRET}\", \
         \"pool\": {{\"max_size\": 0}}}}"
    );
    let file = TempFile::config(&json);
    for (args, value, stdin) in [
        (vec!["check"], json.as_str(), ""),
        (vec!["check"], file.path(), ""),
        (vec!["check", file.path()], "", ""),
        (vec!["check", "--json", "-"], "", json.as_str()),
    ] {
        let o = dlb_env(&args, value, stdin);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert_no_secret(&o);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            err.starts_with("dlb: invalid configuration: pool.max_size"),
            "{args:?}: {err}"
        );
    }
}

/// Reads `child`'s stdout lines on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `dlb watch ARGS` with its standard output piped, and its lines.
fn watch_piped(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(DLB)
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    (child, rx)
}

/// Waits (bounded) for `child` to exit.
fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("dlb did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_piped_prints_plain_lines_and_stops_on_sigterm() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json(""));
    let (mut child, rx) = watch_piped(&[cfg.path()]);
    let mut seen = Vec::new();
    let end = Instant::now() + WAIT;
    let both = |seen: &[String]| {
        env().replicas.iter().all(|r| {
            seen.iter()
                .any(|l| l.contains(r.as_str()) && l.contains("healthy"))
        }) && seen.iter().filter(|l| l.contains(" verdict=ok ")).count() >= 2
    };
    while !both(&seen) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no two refreshes with both replicas healthy: {seen:#?}");
            }
        }
    }
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exits cleanly on SIGTERM");
    seen.extend(rx.iter());
    let all = seen.join("\n");
    assert!(
        !all.contains('\u{1b}'),
        "no escape sequences when piped:\n{all}"
    );
    assert!(!all.contains(SECRET));
    assert!(all.contains("picks/s"), "{all}");
}

/// Reads lines from `rx` into `seen` until one satisfies `cond` (bounded by [`WAIT`]);
/// kills `child` and panics with the lines seen when none does.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    child: &mut Child,
    seen: &mut Vec<String>,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + WAIT;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if cond(&l) => {
                seen.push(l.clone());
                return l;
            }
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                let tail = &seen[seen.len().saturating_sub(12)..];
                panic!(
                    "timed out waiting until {what}; last lines:\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}

/// An LSN-store outage makes `dlb watch`'s header `degraded`, as `dlb check`'s verdict (exit
/// 1), and it is `ok` again once the store answers. The header showed the library's status,
/// which ignores the store: `status=ok` through the outage while `dlb check` said degraded.
#[test]
fn watch_follows_an_lsn_store_outage_as_check_does() {
    let _l = lock_cluster();
    assert!(!env().redis.is_empty(), "the test environment has a Redis");
    let cfg = TempFile::config(&config_json(""));
    let (mut child, rx) = watch_piped(&[cfg.path()]);
    let mut seen = Vec::new();
    wait_line(&rx, &mut child, &mut seen, "the header says ok", |l| {
        l.contains(" verdict=ok ") && l.contains(" store=redis ")
    });
    stop_redis();
    wait_line(
        &rx,
        &mut child,
        &mut seen,
        "the header says degraded",
        |l| l.contains(" verdict=degraded ") && l.contains(" store=redis:unreachable "),
    );
    let why = wait_line(&rx, &mut child, &mut seen, "the reason follows", |l| {
        l.starts_with("  why: ")
    });
    assert!(why.contains("the LSN store is unreachable: "), "{why}");
    let o = dlb(&["check", cfg.path()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("verdict: degraded (the LSN store is unreachable: "),
        "{}",
        text(&o)
    );
    start_redis();
    wait_line(
        &rx,
        &mut child,
        &mut seen,
        "the header says ok again",
        |l| l.contains(" verdict=ok ") && l.contains(" store=redis "),
    );
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)).code(),
        Some(0)
    );
    assert!(!seen.join("\n").contains(SECRET));
}

/// An application's `/metrics` endpoint: serves `body(n)` to the `n`th request (from 1), for
/// as long as the test process lives. Returns its URL.
fn serve_metrics(body: fn(usize) -> String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut conn, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let body = body(i + 1);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}"
            );
        }
    });
    url
}

/// A configuration needing no server: the primary at a port nothing listens on.
fn serverless_config() -> TempFile {
    TempFile::config(&format!(
        "{{\"primary\": \"host=127.0.0.1 port=1 password={SECRET}\", \
         \"replica_check_interval_ms\": 100}}"
    ))
}

/// A Go service's `dlbprom` with `Namespace: "registry_db"`: 10 more picks at every scrape,
/// beside the service's own metrics (one of which also ends in `picks_total`).
fn renamed_metrics(n: usize) -> String {
    format!(
        "# HELP registry_db_picks_total Routing decisions.\n\
         # TYPE registry_db_picks_total counter\n\
         registry_db_picks_total{{reason=\"round_robin\",role=\"replica\"}} {}\n\
         registry_db_store_errors_total 0\n\
         registry_db_live_lsn_checks_total 0\n\
         registry_db_healthy_replicas 2\n\
         cache_picks_total 3\n\
         http_requests_total{{code=\"200\"}} {n}\n",
        10 * n
    )
}

/// `dlb watch --metrics` finds dlb's metrics under the namespace the application gave them
/// (`registry_db_` here, the configuration saying `dlb_`), or under `--metrics-prefix`. It
/// showed `picks/s: none` with no word about it.
#[test]
fn watch_finds_dlb_metrics_under_a_renamed_namespace() {
    let url = serve_metrics(renamed_metrics);
    let cfg = serverless_config();
    for extra in [vec![], vec!["--metrics-prefix", "registry_db_"]] {
        let mut args = vec!["--metrics", url.as_str()];
        args.extend(&extra);
        args.push(cfg.path());
        let (mut child, rx) = watch_piped(&args);
        let mut seen = Vec::new();
        wait_line(&rx, &mut child, &mut seen, "picks are counted", |l| {
            l.contains(" picks/s: round_robin=")
        });
        let _ = child.kill();
        let _ = child.wait();
        let all = seen.join("\n");
        assert!(!all.contains("warning:"), "{extra:?}: {all}");
        assert!(!all.contains(SECRET), "{all}");
    }
}

/// An endpoint with no dlb metrics (or none under `--metrics-prefix`) gets a warning line in
/// the view, not a silent `picks/s: none`.
#[test]
fn watch_warns_when_the_endpoint_has_no_dlb_metrics() {
    let plain = serve_metrics(|n| format!("http_requests_total {n}\ncache_picks_total 1\n"));
    let renamed = serve_metrics(renamed_metrics);
    let cfg = serverless_config();
    for (args, want) in [
        (
            vec!["--metrics", plain.as_str()],
            format!(
                "  warning: no dlb metrics at {plain}: no name ends in picks_total, \
                 live_lsn_checks_total, store_errors_total, ... (is it the application's \
                 endpoint? --metrics-prefix NAME names dlb's namespace)"
            ),
        ),
        (
            vec!["--metrics", renamed.as_str(), "--metrics-prefix", "app_"],
            format!(
                "  warning: no dlb metrics named app_picks_total, app_store_errors_total, ... \
                 at {renamed} (dlb metrics found under registry_db_)"
            ),
        ),
    ] {
        let mut all = args.clone();
        all.push(cfg.path());
        let (mut child, rx) = watch_piped(&all);
        let mut seen = Vec::new();
        let line = wait_line(&rx, &mut child, &mut seen, "a warning", |l| {
            l.contains("warning:")
        });
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line, want, "{args:?}");
        assert!(
            seen.iter().any(|l| l.contains(" picks/s: none ")),
            "{seen:#?}"
        );
    }
    // In a terminal too, wrapped whole into a narrow one.
    let tmux = Tmux::start(80, 30);
    tmux.send(&[
        &format!("{DLB} watch --metrics {plain} {}", cfg.path()),
        "Enter",
    ]);
    tmux.wait_screen("the warning is shown whole", |s| {
        s.contains("warning: no dlb metrics at") && s.contains("names dlb's namespace)")
    });
    tmux.send(&["q"]);
    let o = dlb(&["watch", "--metrics-prefix", "x_", cfg.path()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// `dlb watch --metrics` names why the endpoint cannot be read, with the OS cause, in the
/// plain view too (it showed the error in the terminal view only: piped, a refused endpoint
/// was a silent `picks/s: none`); a URL with credentials is refused without being shown.
#[test]
fn watch_names_why_the_metrics_endpoint_cannot_be_read() {
    let cfg = serverless_config();
    let url = "http://127.0.0.1:1/metrics";
    let (mut child, rx) = watch_piped(&["--metrics", url, cfg.path()]);
    let mut seen = Vec::new();
    let line = wait_line(&rx, &mut child, &mut seen, "a warning", |l| {
        l.contains("warning:")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line,
        format!(
            "  warning: cannot read {url}: cannot connect: 127.0.0.1:1: Connection refused \
             (os error 111)"
        )
    );
    let secret_url = format!("http://app:{SECRET}@127.0.0.1:1/metrics");
    let o = dlb(&["watch", "--metrics", &secret_url, cfg.path()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_no_secret(&o);
    assert!(
        text(&o).starts_with("dlb: --metrics: no credentials in the URL"),
        "{}",
        text(&o)
    );
}

/// A host dlb cannot connect to is shown with the OS's cause (`Connection refused`, `No
/// such file or directory` for a Unix socket), in the text, the reasons and the JSON, never
/// with the password. The driver's errors used to be shown by their kind alone ("error
/// connecting to server").
#[test]
fn check_names_the_os_cause_of_a_connect_error() {
    let cfg = TempFile::config(&format!(
        "{{\"primary\": \"host=/nonexistent/dlb-sock port=5432 password={SECRET}\", \
         \"replicas\": {{\"hosts\": [\"127.0.0.1:1\"]}}, \"replica_check_interval_ms\": 100}}"
    ));
    let o = dlb(&["check", cfg.path()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert_no_secret(&o);
    let missing = "No such file or directory (os error 2)";
    assert!(
        out.contains(&format!(
            "  primary /nonexistent/dlb-sock:5432: connect: error connecting to server: {missing}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("(primary /nonexistent/dlb-sock:5432 is down: connect: error connecting to server: {missing}")),
        "{out}"
    );
    assert!(
        out.contains("  replica 127.0.0.1:1: connect: error connecting to server: Connection refused (os error 111)"),
        "{out}"
    );
    let o = dlb(&["check", "--json", cfg.path()]);
    assert_no_secret(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["hosts"][0]["error"].as_str().unwrap().ends_with(missing),
        "{v}"
    );
    assert!(
        v["hosts"][1]["error"]
            .as_str()
            .unwrap()
            .ends_with("Connection refused (os error 111)"),
        "{v}"
    );
}

/// A tmux server of this test only (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cols: u16, rows: u16) -> Tmux {
        // One server per Tmux: tests in this process run side by side.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("dlb-cli-test-{}-{n}", std::process::id()),
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let o = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            &cols,
            "-y",
            &rows,
            "bash --norc --noprofile",
        ]);
        assert!(o.status.success(), "tmux new-session: {}", text(&o));
        t
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux (scripts/bootstrap.sh installs it)")
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "w"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "w"]).stdout).into_owned()
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting until {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn watch_in_a_terminal_shows_the_replicas_a_lagging_one_and_quits_on_q() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json(""));
    let (before, after) = (TempFile::new("stty-before"), TempFile::new("stty-after"));
    let tmux = Tmux::start(200, 40);
    tmux.send(&[&format!("stty -g > {}", before.path()), "Enter"]);
    tmux.send(&[&format!("{DLB} watch {}", cfg.path()), "Enter"]);
    let lagging = replica_addr(2);
    tmux.wait_screen("both replicas are shown healthy", |s| {
        s.contains("dlb watch (q quits)")
            && env().replicas.iter().all(|r| {
                s.lines()
                    .any(|l| l.contains(r.as_str()) && l.contains("healthy"))
            })
    });
    pause_replay(2);
    let end = Instant::now() + WAIT;
    let screen = loop {
        generate_wal(128);
        let s = tmux.screen();
        if s.lines()
            .any(|l| l.contains(lagging) && l.contains("quarantined (lag)"))
        {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the paused replica never showed `lag`:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(screen.contains("DEGRADED"), "{screen}");
    assert!(!screen.contains(SECRET));
    tmux.send(&["q"]);
    tmux.wait_screen("the view is gone after q", |s| {
        !s.contains("dlb watch (q quits)")
    });
    tmux.send(&[
        &format!(
            "echo dlb-watch-exit=$?; stty -g > {}; echo stty-$((1+1))",
            after.path()
        ),
        "Enter",
    ]);
    tmux.wait_screen("the shell answers after q", |s| {
        s.contains("dlb-watch-exit=0") && s.contains("stty-2")
    });
    let alt = tmux.cmd(&["display-message", "-p", "-t", "w", "#{alternate_on}"]);
    assert_eq!(String::from_utf8_lossy(&alt.stdout).trim(), "0");
    let (b, a) = (
        std::fs::read_to_string(&before.0).unwrap(),
        std::fs::read_to_string(&after.0).unwrap(),
    );
    assert_eq!(a, b, "terminal settings restored");
}

/// In a terminal the header shows `dlb check`'s verdict: `DEGRADED` with the store named
/// unreachable and why, for an LSN store that does not answer (here a Redis URL nothing
/// listens on) while every host is healthy. It showed ` OK `.
#[test]
fn watch_in_a_terminal_says_degraded_when_the_store_is_unreachable() {
    let _l = lock_cluster();
    let cfg = TempFile::config(&config_json(&format!(
        "\"lsn_store\": {{\"redis\": {{\"url\": \"redis://:{SECRET}@127.0.0.1:1\"}}}}"
    )));
    let o = dlb(&["check", cfg.path()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_no_secret(&o);
    let tmux = Tmux::start(200, 40);
    tmux.send(&[&format!("{DLB} watch {}", cfg.path()), "Enter"]);
    let screen = tmux.wait_screen("the header says degraded", |s| {
        s.contains(" DEGRADED ")
            && env().replicas.iter().all(|r| {
                s.lines()
                    .any(|l| l.contains(r.as_str()) && l.contains("healthy"))
            })
    });
    assert!(screen.contains("store redis UNREACHABLE"), "{screen}");
    assert!(
        screen.contains("the LSN store is unreachable: "),
        "{screen}"
    );
    assert!(!screen.contains(" OK "), "{screen}");
    assert!(!screen.contains(SECRET), "{screen}");
    tmux.send(&["q"]);
    tmux.wait_screen("the view is gone after q", |s| {
        !s.contains("dlb watch (q quits)")
    });
}

#[test]
fn check_connects_over_tls_and_names_a_certificate_failure() {
    let _l = lock_cluster();
    let Some(tls) = env().tls.as_ref() else {
        panic!("the test environment has no TLS cluster (scripts/testenv.sh up makes one)");
    };
    let config = |ca: &str| {
        let primary = format!(
            "{} sslmode=verify-ca sslrootcert={ca} password={SECRET}",
            tls.primary
        );
        TempFile::config(&format!(
            "{{\"primary\": {}, \"replicas\": {{\"hosts\": {}}}, \"probe_timeout_ms\": 2000}}",
            serde_json::to_string(&primary).unwrap(),
            serde_json::to_string(&tls.replicas).unwrap()
        ))
    };
    let ok = config(&tls.ca);
    let o = dlb(&["check", ok.path()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(text(&o).matches(" healthy ").count(), 2, "{}", text(&o));
    let wrong = config(&tls.wrong_ca);
    let o = dlb(&["check", wrong.path()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_no_secret(&o);
    assert!(
        text(&o).contains("certificate verify failed"),
        "{}",
        text(&o)
    );
}
