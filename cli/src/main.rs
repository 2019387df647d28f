//! `dlb`: check and watch the hosts of a dlb configuration, with the library's own engine.
//!
//! ```text
//! dlb check [--json] [CONFIG]    one check of every host; exit 0 ok, 1 degraded, 2 unusable
//! dlb watch [--metrics URL [--metrics-prefix NAME]] [CONFIG]   a live view
//! dlb --help | -h | help          the usage, on standard output (exit 0)
//! dlb --version | -V              the version, on standard output (exit 0)
//! ```
//!
//! CONFIG is the JSON configuration file the bindings read; `-` reads standard input; without
//! it, `DLB_CONFIG` holds the JSON itself or the path of the file. A UTF-8 byte-order mark is
//! skipped; `DLB_CONFIG`'s value and a file's text are never quoted in an error.
#![warn(missing_docs)]

mod check;
mod metrics;
mod verdict;
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
       dlb watch [--metrics URL [--metrics-prefix NAME]] [CONFIG]
       dlb --help | --version

CONFIG: the JSON configuration file (as the bindings read it); `-`: standard input;
absent: $DLB_CONFIG (the JSON itself, or a file's path).

check   connects to every host (TLS included) once: identity, recovery state, lag, the LSN
        store, a verdict per host. Exit 0 ok, 1 degraded (a replica out or the store
        unreachable: reads still served), 2 unusable (bad configuration, primary down).
watch   a live view refreshed every check interval (q or Ctrl-C quits); plain lines when
        standard output is not a terminal (stops on SIGTERM or SIGINT). --metrics URL reads
        picks, live checks and store errors from an application's Prometheus endpoint
        (http://host:port/path); without it they are this process's own. dlb's
        metrics there are found by their names' endings (picks_total, store_errors_total,
        ...) under any namespace; --metrics-prefix NAME names it (e.g. registry_db_).";

/// What the command line asked for.
enum Command {
    /// `--help`, `-h` or `help`: the usage on standard output, exit 0.
    Help,
    /// `--version` or `-V`: the version on standard output, exit 0.
    Version,
    /// `check` or `watch`.
    Run(Args),
}

/// The arguments of `check` and `watch`.
struct Args {
    command: String,
    json: bool,
    metrics_url: Option<String>,
    metrics_prefix: Option<String>,
    config: Option<String>,
}

/// Reads the command line. `Err` is a usage error (stderr, exit 2); asking for help or the
/// version anywhere on the line is not one.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let args: Vec<String> = args.collect();
    // `--` and what follows are not options (CONFIG may be a file named `-V`).
    let options = args.iter().take_while(|a| *a != "--");
    for a in options {
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
    }
    let mut it = args.into_iter();
    let command = it.next().ok_or("no command")?;
    if command == "help" {
        return Ok(Command::Help);
    }
    if command != "check" && command != "watch" {
        return Err(format!("unknown command {command:?}"));
    }
    let mut args = Args {
        command,
        json: false,
        metrics_url: None,
        metrics_prefix: None,
        config: None,
    };
    let mut only_config = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" if !only_config => only_config = true,
            "--json" if !only_config && args.command == "check" => args.json = true,
            "--metrics" if !only_config && args.command == "watch" => {
                let url = it.next().ok_or("--metrics needs a URL")?;
                metrics::http_target(&url)?;
                args.metrics_url = Some(url);
            }
            "--metrics-prefix" if !only_config && args.command == "watch" => {
                args.metrics_prefix = Some(it.next().ok_or("--metrics-prefix needs a NAME")?);
            }
            s if !only_config && s.starts_with('-') && s != "-" => {
                return Err(format!("unknown option {s}"));
            }
            _ if args.config.is_some() => return Err("more than one CONFIG".into()),
            _ => args.config = Some(a),
        }
    }
    if args.metrics_prefix.is_some() && args.metrics_url.is_none() {
        return Err("--metrics-prefix names the namespace at --metrics URL: give both".into());
    }
    Ok(Command::Run(args))
}

/// The configuration text: from the file named, standard input (`-`) or `DLB_CONFIG`, without
/// a UTF-8 byte-order mark. Errors never quote `DLB_CONFIG` nor a file's text (a pasted DSN
/// or JSON holds a password); a path on the command line is named unless it looks like a
/// connection string.
fn config_text(arg: Option<&str>) -> Result<String, String> {
    let text = match arg {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            s
        }
        Some(path) if looks_like_dsn(path) => {
            return Err(
                "CONFIG looks like a connection string; CONFIG is the path of a JSON file \
                 (the value is not shown: it may hold a password)"
                    .into(),
            );
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        None => match std::env::var_os("DLB_CONFIG") {
            Some(v) if !v.is_empty() => match v.to_str().map(without_bom) {
                Some(json) if json.trim_start().starts_with('{') => json.to_string(),
                Some(dsn) if looks_like_dsn(dsn) => {
                    return Err(
                        "DLB_CONFIG looks like a connection string; DLB_CONFIG takes JSON or \
                         a path (the value is not shown: it may hold a password)"
                            .into(),
                    );
                }
                _ => std::fs::read_to_string(&v)
                    .map_err(|e| format!("cannot read the file DLB_CONFIG names: {e}"))?,
            },
            _ => {
                return Err(
                    "no configuration: give CONFIG, `-` (standard input) or DLB_CONFIG".into(),
                );
            }
        },
    };
    let json = without_bom(&text);
    if !json.trim_start().starts_with('{') && looks_like_dsn(json) {
        return Err(
            "the configuration looks like a connection string; it must be JSON: \
             {\"primary\": \"...\"} (the text is not shown: it may hold a password)"
                .into(),
        );
    }
    Ok(json.to_string())
}

/// `s` without a leading UTF-8 byte-order mark (editors on Windows write one).
fn without_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// Whether `s` looks like a connection string rather than JSON or a path: a URL
/// (`postgres://`, `redis://`, ...) or libpq `keyword=value` pairs.
fn looks_like_dsn(s: &str) -> bool {
    let s = s.trim_start();
    let scheme = s.find("://").map(|i| &s[..i]);
    if scheme.is_some_and(|sc| {
        !sc.is_empty()
            && sc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    }) {
        return true;
    }
    let word_end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(s.len());
    word_end > 0 && s[word_end..].trim_start().starts_with('=')
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::from(EXIT_OK);
        }
        Ok(Command::Version) => {
            println!("dlb {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::from(EXIT_OK);
        }
        Err(e) => {
            eprintln!("dlb: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_UNUSABLE);
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
        _ => watch::run(
            config,
            args.metrics_url.as_deref(),
            args.metrics_prefix.as_deref(),
        ),
    })
}
