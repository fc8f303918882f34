//! `syscall-profiler top`: a live terminal view of a running daemon, read over its HTTP API.
//!
//! It shows what the daemon computed (counts, sums, p99 from `histogram.rs` via `/stats`) and
//! derives only plain arithmetic from it: shares of time and calls per second between refreshes.
//! rows.rs turns `/stats` into rows, draw.rs draws them.

mod draw;
mod rows;

use std::{
    collections::HashMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::Args;
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    DefaultTerminal,
};
use serde_json::Value;

use draw::{draw, Screen};
use rows::{rows, sort, u, Filter, Group, Row, SortBy};

use crate::{cmd::exit::Fatal, config::parse::parse_duration};

#[derive(Args, Clone, Debug)]
pub struct TopArgs {
    /// The daemon's base URL (plain http; the daemon listens on loopback by default).
    #[arg(long, default_value = "http://127.0.0.1:9760")]
    pub url: String,

    /// Refresh period (e.g. 1s, 500ms; at least 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_refresh)]
    pub interval: Duration,

    /// Group rows by process or by syscall (key g toggles).
    #[arg(long, value_enum, default_value_t = Group::Process)]
    pub group: Group,

    /// Sort key (keys t, c, e, p, or s to cycle).
    #[arg(long, value_enum, default_value_t = SortBy::Time)]
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

struct App {
    base: String,
    interval: Duration,
    group: Group,
    sort: SortBy,
    filter: Filter,
    /// The filter being typed, while the prompt is open.
    editing: Option<String>,
    rows: Vec<Row>,
    header: String,
    status: String,
    insight: Option<String>,
    previous: HashMap<String, (u64, Instant)>,
}

fn get_json(url: &str) -> anyhow::Result<Value> {
    match ureq::get(url).timeout(Duration::from_secs(2)).call() {
        Ok(r) => r.into_json().context("reading the answer"),
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap_or(Value::Null);
            Err(anyhow!(
                "HTTP {code}: {}",
                body["error"].as_str().unwrap_or("error")
            ))
        }
        Err(e) => Err(anyhow!("{e}")),
    }
}

impl App {
    fn refresh(&mut self) {
        let url = format!("{}/stats?sort=total{}", self.base, self.filter.query());
        match get_json(&url) {
            Ok(stats) => {
                let now = Instant::now();
                let mut rows = rows(&stats, self.group, &self.filter);
                for r in &mut rows {
                    if let Some(&(calls, at)) = self.previous.get(&r.id) {
                        let dt = now.duration_since(at).as_secs_f64();
                        if dt > 0.0 {
                            r.rate = Some(r.calls.saturating_sub(calls) as f64 / dt);
                        }
                    }
                }
                self.previous = rows
                    .iter()
                    .map(|r| (r.id.clone(), (r.calls, now)))
                    .collect();
                sort(&mut rows, self.sort);
                self.rows = rows;
                let h = &stats["host"];
                self.header = format!(
                    "{} on {} ({}) — daemon up {:.0}s, {} drains every {} ms",
                    self.base,
                    h["hostname"].as_str().unwrap_or("?"),
                    h["kernel"].as_str().unwrap_or("?"),
                    h["daemon_uptime_seconds"].as_f64().unwrap_or(0.0),
                    u(&h["drains"]),
                    u(&h["interval_ms"]),
                );
                self.status = format!("{} rows", self.rows.len());
            }
            Err(e) => self.status = format!("cannot read {url}: {e:#}"),
        }
        // Insights are optional: an older daemon without /insights just shows none.
        self.insight = get_json(&format!("{}/insights", self.base))
            .ok()
            .and_then(|v| v["findings"][0]["summary"].as_str().map(str::to_string));
    }

    /// Handles a key; returns false to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if let Some(text) = self.editing.as_mut() {
            match code {
                KeyCode::Enter => {
                    match Filter::parse(text) {
                        Ok(f) => {
                            self.filter = f;
                            self.previous.clear();
                        }
                        Err(e) => self.status = format!("filter not applied: {e}"),
                    }
                    self.editing = None;
                    self.refresh();
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
                self.refresh();
            }
            KeyCode::Char('g') => {
                self.group = match self.group {
                    Group::Process => Group::Syscall,
                    Group::Syscall => Group::Process,
                };
                self.previous.clear();
                self.refresh();
            }
            KeyCode::Char('s') => self.resort(self.sort.next()),
            KeyCode::Char('t') => self.resort(SortBy::Time),
            KeyCode::Char('c') => self.resort(SortBy::Calls),
            KeyCode::Char('e') => self.resort(SortBy::Errors),
            KeyCode::Char('p') => self.resort(SortBy::P99),
            KeyCode::Char('/') => self.editing = Some(String::new()),
            _ => {}
        }
        true
    }

    fn resort(&mut self, by: SortBy) {
        self.sort = by;
        sort(&mut self.rows, by);
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
    let base = args.url.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        return Err(Fatal::Other(anyhow!(
            "--url '{}': only http:// URLs are supported",
            args.url
        )));
    }
    let filter = match (args.pid, &args.comm) {
        (Some(p), _) => Filter::Pid(p),
        (None, Some(c)) => Filter::parse(c).map_err(|e| Fatal::Other(anyhow!("--comm: {e}")))?,
        (None, None) => Filter::None,
    };
    if !std::io::stdout().is_terminal() {
        return Err(Fatal::Other(anyhow!(
            "top needs a terminal on stdout; for scripts, use `curl {base}/stats`"
        )));
    }
    let mut app = App {
        base,
        interval: args.interval,
        group: args.group,
        sort: args.sort,
        filter,
        editing: None,
        rows: Vec::new(),
        header: String::new(),
        status: String::new(),
        insight: None,
        previous: HashMap::new(),
    };
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = ui_loop(&mut terminal, &mut app);
    ratatui::restore();
    result.map_err(Fatal::Other)
}

fn ui_loop(terminal: &mut DefaultTerminal, app: &mut App) -> anyhow::Result<()> {
    app.refresh();
    let mut next = Instant::now() + app.interval;
    loop {
        terminal
            .draw(|f| draw(f, &app.screen()))
            .context("drawing")?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).context("reading the terminal")? {
            if let Event::Key(k) = event::read().context("reading the terminal")? {
                if k.kind == KeyEventKind::Press && !app.key(k.code, k.modifiers) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= next {
            app.refresh();
            next = Instant::now() + app.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_toggle_and_quit() {
        let mut app = App {
            base: "http://127.0.0.1:1".into(),
            interval: Duration::from_secs(1),
            group: Group::Process,
            sort: SortBy::Time,
            filter: Filter::None,
            editing: None,
            rows: Vec::new(),
            header: String::new(),
            status: String::new(),
            insight: None,
            previous: HashMap::new(),
        };
        let none = KeyModifiers::NONE;
        assert!(app.key(KeyCode::Char('s'), none));
        assert_eq!(app.sort, SortBy::Calls);
        assert!(app.key(KeyCode::Char('g'), none));
        assert_eq!(app.group, Group::Syscall);
        assert!(app.status.starts_with("cannot read"), "{}", app.status);
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
