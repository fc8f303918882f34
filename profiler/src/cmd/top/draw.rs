//! top's screen: a header, the keys, the top insight, the table and a status line.

use ratatui::{
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
    Frame,
};

use super::rows::{Filter, Group, Row, SortBy};

/// What one frame shows.
pub struct Screen<'a> {
    pub header: &'a str,
    pub group: Group,
    pub sort: SortBy,
    pub filter: &'a Filter,
    pub insight: Option<&'a str>,
    pub rows: &'a [Row],
    /// The status, or the filter being typed.
    pub foot: String,
}

pub fn draw(f: &mut Frame, s: &Screen) {
    let [head, keys, insight, area, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(s.header), head);
    let keys_line = format!(
        "group: {} [g]   sort: {} [s t c e p]   filter: {} [/]   quit [q]",
        match s.group {
            Group::Process => "process",
            Group::Syscall => "syscall",
        },
        s.sort.label(),
        s.filter.label(),
    );
    f.render_widget(
        Paragraph::new(keys_line).style(Style::new().add_modifier(Modifier::BOLD)),
        keys,
    );
    let insight_line = match s.insight {
        Some(text) => format!("insight: {text}"),
        None => "insight: none".into(),
    };
    f.render_widget(Paragraph::new(insight_line), insight);
    f.render_widget(table(s), area);
    f.render_widget(Paragraph::new(Line::from(s.foot.as_str())), foot);
}

/// The rows with shares of time and calls per second; by process, the process columns.
fn table<'a>(s: &Screen<'a>) -> Table<'a> {
    let all_ns: u64 = s.rows.iter().map(|r| r.total_ns).sum();
    let by_process = s.group == Group::Process;
    let pairs = !by_process && *s.filter != Filter::None;
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
    let rows = s.rows.iter().map(|r| {
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
    Table::new(rows, widths).header(
        TableRow::new(header.into_iter().map(Cell::from))
            .style(Style::new().add_modifier(Modifier::REVERSED)),
    )
}
