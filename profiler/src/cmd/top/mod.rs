//! `syscall-profiler top`: a live terminal view of a running daemon, read over its HTTP API.
//!
//! It shows what the daemon computed (counts, sums, p99 from `histogram.rs` via `/stats`) and
//! derives only plain arithmetic from it: shares of time and calls per second between refreshes.

use std::{
    collections::HashMap,
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context};
use clap::{Args, ValueEnum};
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
    DefaultTerminal, Frame,
};
use serde_json::Value;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Group {
    Process,
    Syscall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Time,
    Calls,
    Errors,
    P99,
}

impl SortBy {
    fn next(self) -> SortBy {
        match self {
            SortBy::Time => SortBy::Calls,
            SortBy::Calls => SortBy::Errors,
            SortBy::Errors => SortBy::P99,
            SortBy::P99 => SortBy::Time,
        }
    }
    fn label(self) -> &'static str {
        match self {
            SortBy::Time => "time",
            SortBy::Calls => "calls",
            SortBy::Errors => "errors",
            SortBy::P99 => "p99",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    Pid(u32),
    Comm(String),
}

impl Filter {
    /// Digits are a pid, anything else a process name; empty clears.
    pub fn parse(s: &str) -> Result<Filter, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Filter::None);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Filter::Pid)
                .map_err(|_| format!("'{s}' is not a process id"));
        }
        if s.len() > 15 {
            return Err("process names (comm) are at most 15 bytes".into());
        }
        Ok(Filter::Comm(s.to_string()))
    }

    fn query(&self) -> String {
        match self {
            Filter::None => String::new(),
            Filter::Pid(p) => format!("&pid={p}"),
            Filter::Comm(c) => format!(
                "&comm={}",
                form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ),
        }
    }

    fn label(&self) -> String {
        match self {
            Filter::None => "none".into(),
            Filter::Pid(p) => format!("pid {p}"),
            Filter::Comm(c) => format!("comm {c}"),
        }
    }
}

/// One line of the table: a process, a syscall, or (filtered, by syscall) a process's syscall.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Identity across refreshes, for calls per second.
    pub id: String,
    pub pid: Option<u32>,
    pub comm: String,
    pub syscall: String,
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub p99_ns: Option<u64>,
    pub rate: Option<f64>,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn syscall_label(s: &Value) -> String {
    let name = s["name"].as_str().unwrap_or("?");
    match s["abi"].as_str() {
        Some(abi) if abi != std::env::consts::ARCH => format!("{name} [{abi}]"),
        _ => name.to_string(),
    }
}

fn syscall_row(id: String, pid: Option<u32>, comm: &str, s: &Value) -> Row {
    Row {
        id,
        pid,
        comm: comm.to_string(),
        syscall: syscall_label(s),
        calls: u(&s["count"]),
        errors: u(&s["errors"]),
        total_ns: u(&s["total_ns"]),
        mean_ns: u(&s["mean_ns"]),
        p99_ns: s["p99_ns"].as_u64(),
        rate: None,
    }
}

/// Turns a `/stats` answer into rows for a grouping. Without a filter, "by syscall" is the
/// daemon's system-wide list; with one it lists each matching process's syscalls (the daemon
/// does not merge histograms across processes for us, and we do not re-derive p99).
pub fn rows(stats: &Value, group: Group, filter: &Filter) -> Vec<Row> {
    let empty = Vec::new();
    let procs = stats["processes"].as_array().unwrap_or(&empty);
    match (group, filter) {
        (Group::Process, _) => procs
            .iter()
            .map(|p| {
                let pid = u(&p["pid"]) as u32;
                let calls = p["syscalls"].as_array().unwrap_or(&empty);
                let top = calls
                    .iter()
                    .max_by_key(|s| u(&s["total_ns"]))
                    .map(syscall_label)
                    .unwrap_or_default();
                let count = u(&p["count"]);
                Row {
                    id: format!("p{pid}.{}", u(&p["first_seen_unix_ms"])),
                    pid: Some(pid),
                    comm: p["comm"].as_str().unwrap_or("").to_string(),
                    syscall: top,
                    calls: count,
                    errors: u(&p["errors"]),
                    total_ns: u(&p["total_ns"]),
                    mean_ns: u(&p["total_ns"]).checked_div(count).unwrap_or(0),
                    p99_ns: calls.iter().filter_map(|s| s["p99_ns"].as_u64()).max(),
                    rate: None,
                }
            })
            .collect(),
        (Group::Syscall, Filter::None) => stats["syscalls"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|s| syscall_row(format!("s{}", syscall_label(s)), None, "", s))
            .collect(),
        (Group::Syscall, _) => procs
            .iter()
            .flat_map(|p| {
                let pid = u(&p["pid"]) as u32;
                let comm = p["comm"].as_str().unwrap_or("");
                let seen = u(&p["first_seen_unix_ms"]);
                p["syscalls"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .map(move |s| {
                        syscall_row(
                            format!("p{pid}.{seen}.{}", syscall_label(s)),
                            Some(pid),
                            comm,
                            s,
                        )
                    })
            })
            .collect(),
    }
}

pub fn sort(rows: &mut [Row], by: SortBy) {
    rows.sort_by(|a, b| {
        let key = |r: &Row| match by {
            SortBy::Time => r.total_ns,
            SortBy::Calls => r.calls,
            SortBy::Errors => r.errors,
            SortBy::P99 => r.p99_ns.unwrap_or(0),
        };
        key(b)
            .cmp(&key(a))
            .then(a.pid.cmp(&b.pid))
            .then(a.syscall.cmp(&b.syscall))
    });
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

    fn draw(&self, f: &mut Frame) {
        let [head, keys, insight, table, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(Paragraph::new(self.header.as_str()), head);
        let keys_line = format!(
            "group: {} [g]   sort: {} [s t c e p]   filter: {} [/]   quit [q]",
            match self.group {
                Group::Process => "process",
                Group::Syscall => "syscall",
            },
            self.sort.label(),
            self.filter.label(),
        );
        f.render_widget(
            Paragraph::new(keys_line).style(Style::new().add_modifier(Modifier::BOLD)),
            keys,
        );
        let insight_line = match &self.insight {
            Some(s) => format!("insight: {s}"),
            None => "insight: none".into(),
        };
        f.render_widget(Paragraph::new(insight_line), insight);

        let all_ns: u64 = self.rows.iter().map(|r| r.total_ns).sum();
        let by_process = self.group == Group::Process;
        let pairs = !by_process && self.filter != Filter::None;
        let mut header = vec![
            "% TIME",
            "SECONDS",
            "USECS/CALL",
            "CALLS",
            "CALLS/S",
            "ERRORS",
        ];
        header.push(if by_process { "MAX P99 us" } else { "P99 us" });
        if by_process || pairs {
            header.extend(["PID", "COMM"]);
        }
        header.push(if by_process { "TOP SYSCALL" } else { "SYSCALL" });
        let rows = self.rows.iter().map(|r| {
            let pct = if all_ns == 0 {
                0.0
            } else {
                r.total_ns as f64 * 100.0 / all_ns as f64
            };
            let mut cells = vec![
                format!("{pct:6.2}"),
                format!("{:.6}", r.total_ns as f64 / 1e9),
                (r.mean_ns / 1000).to_string(),
                r.calls.to_string(),
                r.rate.map_or("-".into(), |x| format!("{x:.0}")),
                if r.errors == 0 {
                    String::new()
                } else {
                    r.errors.to_string()
                },
                r.p99_ns
                    .map_or(String::new(), |ns| format!("{:.1}", ns as f64 / 1000.0)),
            ];
            if by_process || pairs {
                cells.push(r.pid.map_or(String::new(), |p| p.to_string()));
                cells.push(r.comm.clone());
            }
            cells.push(r.syscall.clone());
            TableRow::new(cells.into_iter().map(Cell::from))
        });
        let mut widths = vec![
            Constraint::Length(6),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(11),
        ];
        if by_process || pairs {
            widths.extend([Constraint::Length(8), Constraint::Length(16)]);
        }
        widths.push(Constraint::Min(12));
        let widget = Table::new(rows, widths).header(
            TableRow::new(header.into_iter().map(Cell::from))
                .style(Style::new().add_modifier(Modifier::REVERSED)),
        );
        f.render_widget(widget, table);
        let foot_line = match &self.editing {
            Some(text) => format!("filter (pid or comm, Enter applies, Esc cancels): {text}_"),
            None => self.status.clone(),
        };
        f.render_widget(Paragraph::new(Line::from(foot_line)), foot);
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
        terminal.draw(|f| app.draw(f)).context("drawing")?;
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
    use serde_json::json;

    fn stats() -> Value {
        json!({
            "syscalls": [
                {"name": "getppid", "abi": std::env::consts::ARCH, "count": 10, "errors": 0,
                 "total_ns": 500, "mean_ns": 50, "p99_ns": 60},
                {"name": "openat", "abi": std::env::consts::ARCH, "count": 4, "errors": 4,
                 "total_ns": 2000, "mean_ns": 500, "p99_ns": 900},
                {"name": "getppid", "abi": "i386", "count": 1, "errors": 0,
                 "total_ns": 70, "mean_ns": 70, "p99_ns": 70}
            ],
            "processes": [
                {"pid": 7, "comm": "a", "first_seen_unix_ms": 1, "count": 10, "errors": 0,
                 "total_ns": 500, "syscalls": [
                    {"name": "getppid", "abi": std::env::consts::ARCH, "count": 10, "errors": 0,
                     "total_ns": 500, "mean_ns": 50, "p99_ns": 60}]},
                {"pid": 9, "comm": "b", "first_seen_unix_ms": 2, "count": 5, "errors": 4,
                 "total_ns": 2070, "syscalls": [
                    {"name": "openat", "abi": std::env::consts::ARCH, "count": 4, "errors": 4,
                     "total_ns": 2000, "mean_ns": 500, "p99_ns": 900},
                    {"name": "getppid", "abi": "i386", "count": 1, "errors": 0,
                     "total_ns": 70, "mean_ns": 70, "p99_ns": 70}]}
            ]
        })
    }

    #[test]
    fn by_process_rows_use_the_daemons_numbers() {
        let mut r = rows(&stats(), Group::Process, &Filter::None);
        sort(&mut r, SortBy::Time);
        assert_eq!(r[0].pid, Some(9));
        assert_eq!((r[0].calls, r[0].errors, r[0].total_ns), (5, 4, 2070));
        assert_eq!(r[0].p99_ns, Some(900), "the highest per-syscall p99");
        assert_eq!(r[0].syscall, "openat");
        sort(&mut r, SortBy::Calls);
        assert_eq!(r[0].pid, Some(7));
    }

    #[test]
    fn by_syscall_is_system_wide_unless_filtered() {
        let mut r = rows(&stats(), Group::Syscall, &Filter::None);
        sort(&mut r, SortBy::Errors);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].syscall, "openat");
        assert!(r.iter().any(|x| x.syscall == "getppid [i386]"));
        let r = rows(&stats(), Group::Syscall, &Filter::Pid(9));
        assert_eq!(r.len(), 2 + 1, "every listed process's syscalls");
        assert!(r.iter().all(|x| x.pid.is_some()));
    }

    #[test]
    fn filters_parse() {
        assert_eq!(Filter::parse(" 42 "), Ok(Filter::Pid(42)));
        assert_eq!(Filter::parse("nginx"), Ok(Filter::Comm("nginx".into())));
        assert_eq!(Filter::parse(""), Ok(Filter::None));
        assert!(Filter::parse("99999999999").is_err());
        assert!(Filter::parse("a-very-long-process-name").is_err());
        assert_eq!(Filter::Comm("a b".into()).query(), "&comm=a+b");
    }

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
