//! `dlb`: check and watch the hosts of a dlb configuration, with the library's own engine.
//!
//! ```text
//! dlb check [--json] [CONFIG]    one check of every host; exit 0 ok, 1 degraded, 2 unusable
//! dlb watch [--metrics URL] [CONFIG]   a live view, refreshed every check interval
//! ```
//!
//! CONFIG is the JSON configuration file the bindings read; `-` reads standard input; without
//! it, `DLB_CONFIG` holds the JSON itself or the path of the file.
#![warn(missing_docs)]

mod check;
mod view;
mod watch;

use std::io::Read as _;
use std::process::ExitCode;

/// Exit status: every host as configured.
const EXIT_OK: u8 = 0;
/// Exit status: reads and writes are served, not as configured (a replica out, the store
/// unreachable).
const EXIT_DEGRADED: u8 = 1;
/// Exit status: unusable (a configuration error, the primary unreachable) or a usage error.
const EXIT_UNUSABLE: u8 = 2;

const USAGE: &str = "usage: dlb check [--json] [CONFIG]
       dlb watch [--metrics URL] [CONFIG]

CONFIG: the JSON configuration file (as the bindings read it); `-`: standard input;
absent: $DLB_CONFIG (the JSON itself, or a file's path).

check   connects to every host (TLS included) once: identity, recovery state, lag, the LSN
        store, a verdict per host. Exit 0 ok, 1 degraded (a replica out or the store
        unreachable: reads still served), 2 unusable (bad configuration, primary down).
watch   a live view refreshed every check interval (q or Ctrl-C quits); plain lines when
        standard output is not a terminal (stops on SIGTERM or SIGINT). --metrics URL reads
        picks, live checks and store errors from an application's Prometheus endpoint
        (http://host:port/path); without it they are this process's own.";

/// What the command line asked for.
struct Args {
    command: String,
    json: bool,
    metrics_url: Option<String>,
    config: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = it.next().ok_or("no command")?;
    if command != "check" && command != "watch" {
        return Err(format!("unknown command {command:?}"));
    }
    let mut args = Args {
        command,
        json: false,
        metrics_url: None,
        config: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" if args.command == "check" => args.json = true,
            "--metrics" if args.command == "watch" => {
                args.metrics_url = Some(it.next().ok_or("--metrics needs a URL")?);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ if args.config.is_some() => return Err("more than one CONFIG".into()),
            _ => args.config = Some(a),
        }
    }
    Ok(args)
}

/// The configuration text: from the file named, standard input (`-`) or `DLB_CONFIG`.
fn config_text(arg: Option<&str>) -> Result<String, String> {
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    match arg {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(s)
        }
        Some(path) => read(path),
        None => match std::env::var("DLB_CONFIG") {
            Ok(v) if v.trim_start().starts_with('{') => Ok(v),
            Ok(path) if !path.is_empty() => read(&path),
            _ => Err("no configuration: give CONFIG, `-` (standard input) or DLB_CONFIG".into()),
        },
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("dlb: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { EXIT_OK } else { EXIT_UNUSABLE });
        }
    };
    let config = match config_text(args.config.as_deref())
        .and_then(|t| dlb::Config::from_json(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            // Library errors name the field and never quote a DSN or a password.
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "verdict": "unusable", "error": e })
                );
            }
            eprintln!("dlb: {e}");
            return ExitCode::from(EXIT_UNUSABLE);
        }
    };
    ExitCode::from(match args.command.as_str() {
        "check" => check::run(config, args.json),
        _ => watch::run(config, args.metrics_url.as_deref()),
    })
}
