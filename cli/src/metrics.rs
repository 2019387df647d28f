//! What `dlb watch --metrics URL` reads of an application: its Prometheus text, the
//! namespace (name prefix) its dlb metrics carry, and the counters the view shows as rates.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use dlb::Metrics;

/// How long a scrape of `--metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Endings of dlb's metric names that every dlb exposition has (the library's
/// `metrics_text()`, Go's `dlbprom` under any `Namespace`), whatever the prefix: a namespace is
/// recognised by them.
const DLB_SUFFIXES: [&str; 8] = [
    "picks_total",
    "live_lsn_checks_total",
    "store_errors_total",
    "lsn_recorded_total",
    "primary_check_errors_total",
    "replica_check_errors_total",
    "healthy_replicas",
    "primary_up",
];

/// How many of [`DLB_SUFFIXES`] each prefix of `text`'s metric names carries (from samples
/// and `# HELP`/`# TYPE` lines).
fn prefix_scores(text: &str) -> HashMap<String, usize> {
    let mut seen: HashMap<String, Vec<&str>> = HashMap::new();
    for line in text.lines() {
        let name = match line.strip_prefix('#') {
            Some(meta) => {
                let mut words = meta.split_whitespace();
                match words.next() {
                    Some("HELP" | "TYPE") => words.next().unwrap_or_default(),
                    _ => continue,
                }
            }
            None => line
                .split(|c: char| c == '{' || c.is_whitespace())
                .next()
                .unwrap_or_default(),
        };
        for suffix in DLB_SUFFIXES {
            if let Some(prefix) = name.strip_suffix(suffix) {
                let s = seen.entry(prefix.to_string()).or_default();
                if !s.contains(&suffix) {
                    s.push(suffix);
                }
            }
        }
    }
    seen.into_iter().map(|(p, s)| (p, s.len())).collect()
}

/// The namespaces of dlb metrics in `text`, the likeliest first: prefixes carrying at least
/// two of dlb's families (an application's own `cache_picks_total` alone is not one).
pub(crate) fn dlb_prefixes(text: &str) -> Vec<String> {
    let mut found: Vec<(String, usize)> = prefix_scores(text)
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    found.into_iter().map(|(p, _)| p).collect()
}

/// Which prefix to read dlb's metrics of `url` with, and a warning when it is a guess or
/// there are none: `given` (`--metrics-prefix`, with or without its final `_`) when it names
/// a dlb family, else the configuration's `metrics.prefix` when it does, else the one found
/// in the text.
pub(crate) fn namespace(
    text: &str,
    url: &str,
    given: Option<&str>,
    configured: &str,
) -> (Option<String>, Option<String>) {
    let scores = prefix_scores(text);
    let has = |p: &str| scores.get(p).is_some_and(|n| *n > 0);
    let found = dlb_prefixes(text);
    let elsewhere = match found.as_slice() {
        [] => String::new(),
        f => format!(" (dlb metrics found under {})", f.join(", ")),
    };
    // Go's `dlbprom` joins its `Namespace` with `_`: `registry_db` names `registry_db_`.
    let given = given.map(|p| match format!("{p}_") {
        joined if !has(p) && has(&joined) => joined,
        _ => p.to_string(),
    });
    match given.as_deref() {
        Some(p) if has(p) => (Some(p.to_string()), None),
        Some(p) => (
            None,
            Some(format!(
                "no dlb metrics named {p}picks_total, {p}store_errors_total, ... at {url}{elsewhere}"
            )),
        ),
        None if has(configured) => (Some(configured.to_string()), None),
        None => match found.as_slice() {
            [] => (
                None,
                Some(format!(
                    "no dlb metrics at {url}: no name ends in {}, ... (is it the \
                     application's endpoint? --metrics-prefix NAME names dlb's namespace)",
                    DLB_SUFFIXES[..3].join(", ")
                )),
            ),
            [only] => (Some(only.clone()), None),
            [first, ..] => (
                Some(first.clone()),
                Some(format!(
                    "several dlb namespaces at {url}: {}; showing {first} (give \
                     --metrics-prefix NAME)",
                    found.join(", ")
                )),
            ),
        },
    }
}

/// The activity counters the view shows as rates.
#[derive(Clone, Default)]
pub(crate) struct Activity {
    pub(crate) picks: BTreeMap<String, f64>,
    pub(crate) live_checks: f64,
    pub(crate) store_errors: f64,
}

impl Activity {
    pub(crate) fn from_metrics(m: &Metrics) -> Activity {
        Activity {
            picks: m
                .picks
                .iter()
                .map(|p| (p.reason.to_string(), p.count as f64))
                .collect(),
            live_checks: m.counters.live_lsn_checks as f64,
            store_errors: m.counters.store_errors as f64,
        }
    }

    /// The same counters from an application's Prometheus text (its series summed over their
    /// other labels), named with `prefix` (see [`namespace`]).
    pub(crate) fn from_text(text: &str, prefix: &str) -> Activity {
        let mut a = Activity::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(prefix) else {
                continue;
            };
            let (series, value) = match rest.rsplit_once(' ') {
                Some((s, v)) => (s, v.parse::<f64>().unwrap_or(0.0)),
                None => continue,
            };
            let name = series.split('{').next().unwrap_or_default();
            match name {
                "picks_total" => {
                    if let Some(reason) = label(series, "reason") {
                        *a.picks.entry(reason).or_default() += value;
                    }
                }
                "live_lsn_checks_total" => a.live_checks += value,
                "store_errors_total" => a.store_errors += value,
                _ => {}
            }
        }
        a
    }
}

/// The value of label `name` in a series `name{a="x",b="y"}` (escapes left as they are).
fn label(series: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = series
        .match_indices(&needle)
        .find(|(i, _)| matches!(series.as_bytes().get(i.wrapping_sub(1)), Some(b'{' | b',')))?
        .0
        + needle.len();
    let rest = &series[start..];
    let mut end = 0;
    let bytes = rest.as_bytes();
    while end < bytes.len() && bytes[end] != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    Some(rest[..end.min(rest.len())].to_string())
}

/// The `host:port` and path of an `http://host:port/path` URL. A URL with credentials is
/// refused without being quoted (the view and its warnings show the URL).
pub(crate) fn http_target(url: &str) -> Result<(&str, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("--metrics: only http://host:port/path URLs")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    if authority.contains('@') {
        return Err("--metrics: no credentials in the URL (the URL is not shown)".into());
    }
    Ok((authority, path))
}

/// GET `url` (`http://host:port/path`), the body as text. Every address of the host is
/// tried; an error keeps each address's cause (`127.0.0.1:9100: Connection refused (os error
/// 111)`).
pub(crate) fn scrape(url: &str) -> Result<String, String> {
    let (authority, path) = http_target(url)?;
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| format!("{authority}: {e}"))?;
    let mut failures = Vec::new();
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    let mut s = match stream {
        Some(s) => s,
        None if failures.is_empty() => return Err(format!("{authority}: no address")),
        None => return Err(format!("cannot connect: {}", failures.join("; "))),
    };
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n"
    )
    .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let (head, body) = body.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1).is_none_or(|c| c != "200") {
        let status: String = head
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(80)
            .collect();
        return Err(format!("HTTP: {}", status.escape_debug()));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_from_an_applications_text() {
        let text = "# HELP app_picks_total x\n\
            app_picks_total{svc=\"a\",role=\"replica\",reason=\"round_robin\"} 7\n\
            app_picks_total{svc=\"b\",role=\"replica\",reason=\"round_robin\"} 3\n\
            app_picks_total{svc=\"a\",role=\"primary\",reason=\"not_caught_up\"} 2\n\
            app_live_lsn_checks_total{svc=\"a\"} 5\n\
            other_store_errors_total 9\n\
            app_store_errors_total 1\n";
        let a = Activity::from_text(text, "app_");
        assert_eq!(a.picks["round_robin"], 10.0);
        assert_eq!(a.picks["not_caught_up"], 2.0);
        assert_eq!((a.live_checks, a.store_errors), (5.0, 1.0));
        assert_eq!(
            label("x{areason=\"n\",reason=\"y\"}", "reason").as_deref(),
            Some("y")
        );
    }

    /// A Go service's `dlbprom` with `Namespace: "registry_db"`, beside its own metrics (one
    /// of which also ends in `picks_total`).
    const RENAMED: &str = "# HELP registry_db_picks_total Routing decisions.\n\
        # TYPE registry_db_picks_total counter\n\
        registry_db_picks_total{reason=\"round_robin\",role=\"replica\"} 4\n\
        registry_db_store_errors_total 0\n\
        registry_db_live_lsn_checks_total 1\n\
        registry_db_healthy_replicas 2\n\
        cache_picks_total 9\n\
        http_requests_total{code=\"200\"} 12\n";

    #[test]
    fn the_namespace_is_found_given_or_missing() {
        let url = "http://app/metrics";
        assert_eq!(dlb_prefixes(RENAMED), ["registry_db_"]);
        assert_eq!(
            namespace(RENAMED, url, None, "dlb_"),
            (Some("registry_db_".into()), None)
        );
        for given in ["registry_db_", "registry_db"] {
            assert_eq!(
                namespace(RENAMED, url, Some(given), "dlb_"),
                (Some("registry_db_".into()), None)
            );
        }
        let (p, w) = namespace(RENAMED, url, Some("app_"), "dlb_");
        assert_eq!(p, None);
        let w = w.unwrap();
        assert!(w.starts_with("no dlb metrics named app_picks_total"), "{w}");
        assert!(w.ends_with("(dlb metrics found under registry_db_)"), "{w}");
        let (p, w) = namespace(
            "http_requests_total 1\ncache_picks_total 2\n",
            url,
            None,
            "dlb_",
        );
        assert_eq!(p, None);
        let w = w.unwrap();
        assert!(w.starts_with("no dlb metrics at http://app/metrics"), "{w}");
        // Before any pick a family may have no sample: its HELP and TYPE lines count.
        let quiet = "# HELP dlb_picks_total x\n# TYPE dlb_picks_total counter\n\
            dlb_store_errors_total 0\n";
        assert_eq!(
            namespace(quiet, url, None, "dlb_"),
            (Some("dlb_".into()), None)
        );
        let two = format!("{RENAMED}a_picks_total 1\na_primary_up 1\n");
        let (p, w) = namespace(&two, url, None, "dlb_");
        assert_eq!(p.as_deref(), Some("registry_db_"));
        assert!(w.unwrap().contains("registry_db_, a_"));
        assert_eq!(
            Activity::from_text(RENAMED, "registry_db_").picks["round_robin"],
            4.0
        );
    }
}
