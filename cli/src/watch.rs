//! `dlb watch`: a live view of every host, refreshed every check interval: a terminal UI
//! (ratatui over crossterm) on a terminal, plain text lines otherwise.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dlb::{Balancer, Config, Status};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use crate::metrics::{Activity, namespace, scrape};
use crate::verdict::{Verdict, store_reachable, verdict};
use crate::view::{self, HostRow};
use crate::{EXIT_OK, EXIT_UNUSABLE};

/// Lag samples kept per replica for its trend.
const TREND_SAMPLES: usize = 24;
/// Shortest refresh period, whatever the check interval.
const MIN_REFRESH: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM (and SIGINT, which a terminal in raw mode does not send) end the watch cleanly.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// What one refresh shows.
struct Frame {
    status: Status,
    rows: Vec<HostRow>,
    /// Whether the LSN store answered this refresh.
    store: Result<(), String>,
    /// The header's verdict: `dlb check`'s rule.
    verdict: Verdict,
    /// Per second since the previous refresh.
    pick_rates: Vec<(String, f64)>,
    live_checks_per_s: f64,
    store_errors: f64,
    store_errors_per_s: f64,
    /// Where picks come from, or why they are unknown.
    source: String,
    /// What the view cannot show as it should (no dlb metrics at `--metrics URL`), shown
    /// in both views.
    warning: Option<String>,
}

/// The state kept between refreshes: the last counters and the lag history.
struct Watcher {
    lb: Balancer,
    metrics_url: Option<String>,
    /// `--metrics-prefix`: the namespace of dlb's metrics at `metrics_url`.
    given_prefix: Option<String>,
    /// The configuration's `metrics.prefix`, tried before a detected one.
    configured_prefix: String,
    last: Option<(Instant, Activity)>,
    lags: HashMap<String, VecDeque<u64>>,
}

impl Watcher {
    fn refresh(&mut self) -> Frame {
        let status = self.lb.status();
        let now = Instant::now();
        let (activity, source, warning) = match &self.metrics_url {
            None => (
                Activity::from_metrics(&self.lb.metrics()),
                "this process (give --metrics URL for an application's)".to_string(),
                None,
            ),
            Some(url) => match scrape(url) {
                Ok(text) => {
                    let given = self.given_prefix.as_deref();
                    let (prefix, warning) = namespace(&text, url, given, &self.configured_prefix);
                    match prefix {
                        Some(p) => (
                            Activity::from_text(&text, &p),
                            format!("{url} (prefix {p})"),
                            warning,
                        ),
                        None => (Activity::default(), url.clone(), warning),
                    }
                }
                Err(e) => (
                    self.last.as_ref().map(|l| l.1.clone()).unwrap_or_default(),
                    url.clone(),
                    Some(format!("cannot read {url}: {e}")),
                ),
            },
        };
        let (pick_rates, live, errs) = match &self.last {
            Some((t, prev)) => {
                let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
                let rate = |a: f64, b: f64| ((a - b) / dt).max(0.0);
                (
                    activity
                        .picks
                        .iter()
                        .map(|(r, v)| {
                            (
                                r.clone(),
                                rate(*v, prev.picks.get(r).copied().unwrap_or(0.0)),
                            )
                        })
                        .collect(),
                    rate(activity.live_checks, prev.live_checks),
                    rate(activity.store_errors, prev.store_errors),
                )
            }
            None => (
                activity.picks.keys().map(|r| (r.clone(), 0.0)).collect(),
                0.0,
                0.0,
            ),
        };
        let store_errors = activity.store_errors;
        self.last = Some((now, activity));
        let rows = view::rows(&status);
        let store = store_reachable(&self.lb);
        let verdict = verdict(&status, &rows, &store);
        for r in rows.iter().filter(|r| r.role == "replica") {
            let h = self.lags.entry(r.addr.clone()).or_default();
            h.push_back(r.lag_bytes.unwrap_or(0));
            if h.len() > TREND_SAMPLES {
                h.pop_front();
            }
        }
        Frame {
            status,
            rows,
            store,
            verdict,
            pick_rates,
            live_checks_per_s: live,
            store_errors,
            store_errors_per_s: errs,
            source,
            warning,
        }
    }

    /// The lag trend of `addr` as a sparkline (`▁▂▅█`), oldest first.
    fn sparkline(&self, addr: &str) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let Some(h) = self.lags.get(addr) else {
            return String::new();
        };
        let max = h.iter().copied().max().unwrap_or(0);
        h.iter()
            .map(|&v| {
                if max == 0 {
                    BARS[0]
                } else {
                    BARS[((v as f64 / max as f64) * 7.0).round() as usize]
                }
            })
            .collect()
    }

    /// `rising`, `falling` or `flat`: the last lag against the one before.
    fn trend_word(&self, addr: &str) -> &'static str {
        let Some(h) = self.lags.get(addr) else {
            return "flat";
        };
        match (h.iter().rev().nth(1), h.back()) {
            (Some(a), Some(b)) if b > a => "rising",
            (Some(a), Some(b)) if b < a => "falling",
            _ => "flat",
        }
    }
}

/// Runs the watch until `q`/Ctrl-C (terminal) or SIGTERM/SIGINT; returns the exit status.
pub(crate) fn run(config: Config, metrics_url: Option<&str>, metrics_prefix: Option<&str>) -> u8 {
    let refresh = Duration::from_millis(config.replica_check_interval_ms).max(MIN_REFRESH);
    let configured_prefix = config.metrics.prefix.clone();
    let lb = match Balancer::new(config) {
        Ok(lb) => lb,
        Err(e) => {
            eprintln!("dlb: {e}");
            return EXIT_UNUSABLE;
        }
    };
    install_signal_handlers();
    let mut w = Watcher {
        lb,
        metrics_url: metrics_url.map(str::to_string),
        given_prefix: metrics_prefix.map(str::to_string),
        configured_prefix,
        last: None,
        lags: HashMap::new(),
    };
    if std::io::stdout().is_terminal() {
        run_terminal(&mut w, refresh)
    } else {
        run_plain(&mut w, refresh)
    }
}

/// The reasons picked since the last refresh with their rates (`round_robin=12.0 ...`), or
/// `none`.
fn pick_rates_text(rates: &[(String, f64)], sep: &str) -> String {
    let moving: Vec<String> = rates
        .iter()
        .filter(|(_, r)| *r > 0.0)
        .map(|(reason, r)| format!("{reason}{sep}{r:.1}"))
        .collect();
    if moving.is_empty() {
        "none".into()
    } else {
        moving.join("  ")
    }
}

/// Plain lines, one block per refresh, until a signal.
fn run_plain(w: &mut Watcher, refresh: Duration) -> u8 {
    let mut out = std::io::stdout().lock();
    while !STOP.load(Ordering::SeqCst) {
        let f = w.refresh();
        let st = &f.status;
        let picks = pick_rates_text(&f.pick_rates, "=");
        let line = format!(
            "{} verdict={} primary={} healthy={}/{} store={}{} picks/s: {} live_checks/s={:.1} store_errors={} ({:.1}/s)",
            st.last_check_at.as_deref().unwrap_or("-"),
            f.verdict.word,
            st.primary_state,
            st.healthy_replicas,
            st.replicas.len(),
            st.lsn_store,
            if f.store.is_ok() { "" } else { ":unreachable" },
            picks,
            f.live_checks_per_s,
            f.store_errors,
            f.store_errors_per_s,
        );
        if writeln!(out, "{line}").is_err() {
            return EXIT_OK; // the reader went away
        }
        if !f.verdict.why.is_empty() {
            let _ = writeln!(out, "  why: {}", f.verdict.why.join("; "));
        }
        if let Some(w) = &f.warning {
            let _ = writeln!(out, "  warning: {w}");
        }
        for r in &f.rows {
            let trend = if r.role == "replica" {
                format!(" trend={}", w.trend_word(&r.addr))
            } else {
                String::new()
            };
            let err = r.error.as_deref().filter(|_| r.verdict != "ok");
            let _ = writeln!(
                out,
                "  {} {} {} lag={}{trend}{}",
                r.role,
                r.addr,
                r.state_text(),
                r.lag_text(),
                err.map_or(String::new(), |e| format!(" error={e}"))
            );
        }
        let _ = out.flush();
        let until = Instant::now() + refresh;
        while !STOP.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(refresh));
        }
    }
    EXIT_OK
}

/// The terminal UI until `q`, Esc, Ctrl-C or a signal; the terminal is restored on the way
/// out (ratatui's panic hook restores it on a panic too).
fn run_terminal(w: &mut Watcher, refresh: Duration) -> u8 {
    let mut terminal = ratatui::init();
    let mut frame = w.refresh();
    let mut next = Instant::now() + refresh;
    let result = loop {
        if let Err(e) = terminal.draw(|f| draw(f, w, &frame)) {
            break Err(e);
        }
        let wait = next.saturating_duration_since(Instant::now());
        match event::poll(wait.min(Duration::from_millis(100))) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        break Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            },
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        if STOP.load(Ordering::SeqCst) {
            break Ok(());
        }
        if Instant::now() >= next {
            frame = w.refresh();
            next = Instant::now() + refresh;
        }
    };
    ratatui::restore();
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("dlb: terminal: {e}");
            EXIT_UNUSABLE
        }
    }
}

fn draw(f: &mut ratatui::Frame<'_>, w: &Watcher, fr: &Frame) {
    let st = &fr.status;
    let colour = match fr.verdict.word {
        "ok" => Color::Green,
        "degraded" => Color::Yellow,
        _ => Color::Red,
    };
    let age = st
        .last_check_age_ms
        .map_or("-".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0));
    let header = Line::from(vec![
        ratatui::text::Span::styled(
            format!(" {} ", fr.verdict.word.to_uppercase()),
            Style::default().fg(Color::Black).bg(colour),
        ),
        ratatui::text::Span::raw(format!(
            "  primary {} {}  healthy replicas {}/{}  checks {}  last check {}  store {}{}",
            st.primary.addr,
            st.primary_state,
            st.healthy_replicas,
            st.replicas.len(),
            st.checks,
            age,
            st.lsn_store,
            if fr.store.is_ok() { "" } else { " UNREACHABLE" },
        )),
    ]);
    let why = Line::styled(fr.verdict.why.join("; "), Style::default().fg(colour));
    let header = Paragraph::new(vec![header, why])
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" dlb watch (q quits) "));
    let activity = activity_panel(fr);
    // The header and the activity as tall as their wrapped lines; the hosts the rest.
    // (`line_count` counts the block's borders in the height, not in the width.)
    let inner = f.area().width.saturating_sub(2);
    let height = |p: &Paragraph<'_>| p.line_count(inner).min(u16::MAX.into()) as u16;
    let [head, hosts, activity_area] = Layout::vertical([
        Constraint::Length(height(&header)),
        Constraint::Min(4),
        Constraint::Length(height(&activity)),
    ])
    .areas(f.area());
    f.render_widget(header, head);
    let rows = fr.rows.iter().map(|r| {
        let style = match r.verdict {
            "ok" => Style::default(),
            "out" => Style::default().fg(Color::Yellow),
            _ => Style::default().fg(Color::Red),
        };
        Row::new(vec![
            r.role.to_string(),
            r.addr.clone(),
            r.state_text(),
            r.lag_text(),
            if r.role == "replica" {
                w.sparkline(&r.addr)
            } else {
                String::new()
            },
            r.identity_text(),
            r.error
                .clone()
                .filter(|_| r.verdict != "ok")
                .unwrap_or_default(),
        ])
        .style(style)
    });
    // Each column as wide as its widest cell (or its title).
    let width = |cell: fn(&HostRow) -> String| {
        let w = fr.rows.iter().map(|r| cell(r).chars().count()).max();
        Constraint::Length(w.unwrap_or(0).max(6) as u16)
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            width(HostRow::addr_text),
            width(HostRow::state_text),
            width(HostRow::lag_text),
            Constraint::Length(TREND_SAMPLES as u16),
            width(HostRow::identity_text),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new([
            "ROLE", "ADDRESS", "STATE", "LAG", "TREND", "SERVER", "ERROR",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" hosts "));
    f.render_widget(table, hosts);
    f.render_widget(activity, activity_area);
}

/// The activity panel: picks per second, live checks, store errors, where they come from,
/// and the warning.
fn activity_panel(fr: &Frame) -> Paragraph<'static> {
    let picks = pick_rates_text(&fr.pick_rates, " ");
    let mut text = vec![
        Line::raw(format!("picks/s  {picks}")),
        Line::raw(format!(
            "live checks/s {:.1}   store errors {} ({:.1}/s)   from {}",
            fr.live_checks_per_s, fr.store_errors, fr.store_errors_per_s, fr.source
        )),
    ];
    if let Some(w) = &fr.warning {
        text.push(Line::styled(
            format!("warning: {w}"),
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    Paragraph::new(text)
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(" activity "))
}
