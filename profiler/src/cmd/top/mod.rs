//! `syscall-profiler top`: a live terminal view of a running daemon, read over its HTTP API.
//!
//! It shows what the daemon computed (counts, sums, on-CPU and blocked time, p99 from
//! `histogram.rs` via `/stats`) and derives only plain arithmetic from it: calls per second
//! between drains. It asks only for the rows that fit the screen (query.rs), so its cost does
//! not grow with the host's processes. client.rs reads the daemon (TLS, basic auth), rows.rs
//! turns `/stats` into rows, draw.rs draws them.

mod client;
mod draw;
mod query;
mod rows;

use std::{
    collections::HashMap,
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context};
use clap::Args;
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    DefaultTerminal,
};
use serde_json::Value;

use client::{Client, FetchError};
use draw::{draw, Screen, CHROME_LINES};
use query::{stats_query, Schema, V2_ONLY_PARAMS};
use rows::{rows, sort, u, Filter, Group, Row, SortBy};

use crate::{cmd::exit::Fatal, config::parse::parse_duration};

#[derive(Args, Clone, Debug)]
pub struct TopArgs {
    /// The daemon's base URL: http://HOST:PORT, or https://HOST:PORT for a daemon with TLS
    /// (never with credentials in it: see --credentials-file).
    #[arg(long, default_value = "http://127.0.0.1:9760")]
    pub url: String,

    /// Basic-auth credentials: a file of one line user:password (else the environment's
    /// SYSCALL_PROFILER_USER and SYSCALL_PROFILER_PASSWORD; never the command line).
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,

    /// Trust only this CA (PEM) for an https:// --url: a private CA or a self-signed daemon
    /// certificate. Without it, the public web's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Refresh period (e.g. 1s, 500ms; at least 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_refresh)]
    pub interval: Duration,

    /// Group rows by process or by syscall (key g toggles).
    #[arg(long, value_enum, default_value_t = Group::Process)]
    pub group: Group,

    /// Sort key: cpu (time on a CPU inside syscalls), blocked, time (both and the runqueue),
    /// calls, errors, p99 (keys u b t c e p, or s to cycle).
    #[arg(long, value_enum, default_value_t = SortBy::Cpu)]
    pub sort: SortBy,

    /// Only this process (key / edits the filter).
    #[arg(long, conflicts_with = "comm")]
    pub pid: Option<u32>,

    /// Only processes with this name (exact, at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,
}

fn parse_refresh(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("'{s}' is too short: at least 100ms"));
    }
    Ok(d)
}

/// A row's last counted sample: its calls at a drain (the daemon's clock), and the rate then.
#[derive(Clone, Copy)]
struct Sample {
    calls: u64,
    drain_ms: u64,
    rate: f64,
}

/// How often the insight line is refreshed.
const INSIGHT_EVERY: Duration = Duration::from_secs(5);

struct App {
    client: Client,
    schema: Schema,
    interval: Duration,
    group: Group,
    sort: SortBy,
    filter: Filter,
    /// Table lines that fit the terminal: what the daemon is asked for.
    fit: usize,
    /// The filter being typed, while the prompt is open.
    editing: Option<String>,
    rows: Vec<Row>,
    header: String,
    status: String,
    insight: Option<String>,
    /// When the insight line was last asked for.
    insight_at: Option<Instant>,
    previous: HashMap<String, Sample>,
    /// The daemon's drain interval, from its last answer.
    drain_interval_ms: Option<u64>,
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl App {
    fn new(client: Client, args: &TopArgs, filter: Filter) -> App {
        App {
            client,
            schema: Schema::V2,
            interval: args.interval,
            group: args.group,
            sort: args.sort,
            filter,
            fit: 20,
            editing: None,
            rows: Vec::new(),
            header: String::new(),
            status: String::new(),
            insight: None,
            insight_at: None,
            previous: HashMap::new(),
            drain_interval_ms: None,
        }
    }

    /// `/stats` for the current view; a schema-1 daemon is asked again its way.
    fn fetch(&mut self) -> Result<Value, FetchError> {
        let q = stats_query(self.schema, self.group, &self.filter, self.sort, self.fit);
        match self.client.get(&q) {
            Err(FetchError::Status {
                code: 400,
                param: Some(p),
                ..
            }) if self.schema == Schema::V2 && V2_ONLY_PARAMS.contains(&p.as_str()) => {
                self.schema = Schema::V1;
                self.fetch()
            }
            r => r,
        }
    }

    /// Reads the daemon; an error is shown in the status line (and returned, for the start).
    fn refresh(&mut self) -> Result<(), FetchError> {
        let stats = match self.fetch() {
            Ok(s) => s,
            Err(e) => {
                self.status = e.to_string();
                return Err(e);
            }
        };
        let h = &stats["host"];
        let drain_ms = h["last_drain_unix_ms"].as_u64().unwrap_or_else(unix_ms_now);
        let uptime_s = h["daemon_uptime_seconds"].as_f64().unwrap_or(0.0);
        self.drain_interval_ms = h["interval_ms"].as_u64();
        let mut rows = rows(&stats, self.group, &self.filter, self.sort);
        let mut seen = HashMap::with_capacity(rows.len());
        for r in &mut rows {
            let sample = match self.previous.get(&r.id) {
                // Counts move once a drain: between two drains the rate is the last one.
                Some(&p) if drain_ms <= p.drain_ms => p,
                Some(&p) => Sample {
                    calls: r.calls,
                    drain_ms,
                    rate: r.calls.saturating_sub(p.calls) as f64 * 1000.0
                        / (drain_ms - p.drain_ms) as f64,
                },
                // A row not seen before: its average since the daemon first saw it (or since
                // the daemon started), until the next drain gives a difference.
                None => {
                    let since_s = match r.first_seen_ms {
                        Some(first) => drain_ms.saturating_sub(first) as f64 / 1000.0,
                        None => uptime_s,
                    };
                    Sample {
                        calls: r.calls,
                        drain_ms,
                        rate: if since_s > 0.0 {
                            r.calls as f64 / since_s
                        } else {
                            0.0
                        },
                    }
                }
            };
            r.rate = Some(sample.rate);
            seen.insert(r.id.clone(), sample);
        }
        self.previous = seen;
        sort(&mut rows, self.sort);
        self.rows = rows;
        self.header = format!(
            "{} {} ({}) up {} drains {}ms",
            self.client.base(),
            h["hostname"].as_str().unwrap_or("?"),
            h["kernel"].as_str().unwrap_or("?"),
            draw::duration_ns((uptime_s * 1e9) as u64),
            u(&h["interval_ms"]),
        );
        self.status = match self.schema {
            Schema::V2 => format!("{} rows", self.rows.len()),
            Schema::V1 => format!(
                "{} rows (a schema-1 daemon: cpu and blocked rank among the top by time)",
                self.rows.len()
            ),
        };
        // Insights are optional: a daemon without /insights just shows none. Asked for every
        // INSIGHT_EVERY, not each refresh: their rates are over the last 5 to 10 s, and the
        // daemon walks every process to answer (30-45 ms of its CPU on a host of 5,000).
        if self.insight_at.is_none_or(|t| t.elapsed() >= INSIGHT_EVERY) {
            self.insight_at = Some(Instant::now());
            self.insight = self
                .client
                .get("/insights?top=1")
                .ok()
                .and_then(|v| v["findings"][0]["summary"].as_str().map(str::to_string));
        }
        Ok(())
    }

    /// A refresh whose failure the status line already shows (top keeps running).
    fn reload(&mut self) {
        let _ = self.refresh();
    }

    /// Handles a key; returns false to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if let Some(text) = self.editing.as_mut() {
            match code {
                KeyCode::Enter => {
                    match Filter::parse(text) {
                        Ok(f) => self.filter = f,
                        Err(e) => self.status = format!("filter not applied: {e}"),
                    }
                    self.editing = None;
                    self.reload();
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Esc if self.filter == Filter::None => return false,
            KeyCode::Esc => {
                self.filter = Filter::None;
                self.reload();
            }
            KeyCode::Char('g') => {
                self.group = match self.group {
                    Group::Process => Group::Syscall,
                    Group::Syscall => Group::Process,
                };
                self.reload();
            }
            KeyCode::Char('s') => self.resort(self.sort.next()),
            KeyCode::Char('u') => self.resort(SortBy::Cpu),
            KeyCode::Char('b') => self.resort(SortBy::Blocked),
            KeyCode::Char('t') => self.resort(SortBy::Time),
            KeyCode::Char('c') => self.resort(SortBy::Calls),
            KeyCode::Char('e') => self.resort(SortBy::Errors),
            KeyCode::Char('p') => self.resort(SortBy::P99),
            KeyCode::Char('/') => self.editing = Some(String::new()),
            _ => {}
        }
        true
    }

    /// Sorts what is shown at once, then asks the daemon for the rows first by the new key.
    fn resort(&mut self, by: SortBy) {
        self.sort = by;
        sort(&mut self.rows, by);
        self.reload();
    }

    fn screen(&self) -> Screen<'_> {
        Screen {
            header: &self.header,
            group: self.group,
            sort: self.sort,
            filter: &self.filter,
            insight: self.insight.as_deref(),
            rows: &self.rows,
            foot: match &self.editing {
                Some(text) => format!("filter (pid or comm, Enter applies, Esc cancels): {text}_"),
                None => self.status.clone(),
            },
        }
    }
}

pub fn run(args: TopArgs) -> Result<(), Fatal> {
    let client = Client::new(
        &args.url,
        args.credentials_file.as_deref(),
        args.ca_file.as_deref(),
    )
    .map_err(|e| Fatal::Other(e.into()))?;
    let filter = match (args.pid, &args.comm) {
        (Some(p), _) => Filter::Pid(p),
        (None, Some(c)) => Filter::parse(c).map_err(|e| Fatal::Other(anyhow!("--comm: {e}")))?,
        (None, None) => Filter::None,
    };
    if !std::io::stdout().is_terminal() {
        return Err(Fatal::Other(anyhow!(
            "top needs a terminal on stdout; for scripts, use `curl '{}/stats?limit=10'`",
            client.base()
        )));
    }
    let mut app = App::new(client, &args, filter);
    app.fit = fit(ratatui::crossterm::terminal::size().map_or(24, |(_, h)| h));
    // The first frame already has rates: two samples a drain apart. A daemon that cannot be
    // read (down, refusing the credentials, TLS) is one line and exit 1, before the screen
    // is taken over; later failures show in the status line while top retries.
    app.refresh().map_err(|e| Fatal::Other(e.into()))?;
    let drain = Duration::from_millis(app.previous_drain_gap());
    std::thread::sleep(drain);
    app.refresh().map_err(|e| Fatal::Other(e.into()))?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = ui_loop(&mut terminal, &mut app);
    ratatui::restore();
    result.map_err(Fatal::Other)
}

/// Table lines in a terminal `height` lines high.
fn fit(height: u16) -> usize {
    usize::from(height).saturating_sub(CHROME_LINES).max(1)
}

impl App {
    /// How long until the daemon's next drain has surely happened: its interval and a margin,
    /// at most 2 s (a slower daemon's first frame shows averages since each row appeared).
    fn previous_drain_gap(&self) -> u64 {
        let interval_ms = self.drain_interval_ms.unwrap_or(1000);
        (interval_ms + 50).min(2000)
    }
}

fn ui_loop(terminal: &mut DefaultTerminal, app: &mut App) -> anyhow::Result<()> {
    let mut next = Instant::now() + app.interval;
    loop {
        terminal
            .draw(|f| draw(f, &app.screen()))
            .context("drawing")?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(k) if k.kind == KeyEventKind::Press && !app.key(k.code, k.modifiers) => {
                    return Ok(());
                }
                Event::Resize(_, h) if fit(h) > app.fit => {
                    // More lines than asked for: ask now rather than show a short table.
                    app.fit = fit(h);
                    app.reload();
                }
                Event::Resize(_, h) => app.fit = fit(h),
                _ => {}
            }
        }
        if Instant::now() >= next {
            app.reload();
            next = Instant::now() + app.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_toggle_and_quit() {
        let client = Client::new("http://127.0.0.1:1", None, None).unwrap();
        let args = TopArgs {
            url: String::new(),
            credentials_file: None,
            ca_file: None,
            interval: Duration::from_secs(1),
            group: Group::Process,
            sort: SortBy::Time,
            pid: None,
            comm: None,
        };
        let mut app = App::new(client, &args, Filter::None);
        let none = KeyModifiers::NONE;
        assert!(app.key(KeyCode::Char('s'), none));
        assert_eq!(app.sort, SortBy::Calls);
        assert!(app.key(KeyCode::Char('g'), none));
        assert_eq!(app.group, Group::Syscall);
        assert!(app.status.starts_with("cannot reach"), "{}", app.status);
        for c in ['/', '4', '2'] {
            app.key(KeyCode::Char(c), none);
        }
        app.key(KeyCode::Enter, none);
        assert_eq!(app.filter, Filter::Pid(42));
        assert!(app.key(KeyCode::Esc, none), "Esc first clears the filter");
        assert_eq!(app.filter, Filter::None);
        assert!(!app.key(KeyCode::Char('q'), none));
    }
}
