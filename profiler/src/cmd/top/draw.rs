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
        "group: {} [g]  sort: {} [s u b t c e p]  filter: {} [/]  quit [q]",
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
    f.render_widget(table(s, area.width), area);
    f.render_widget(Paragraph::new(Line::from(s.foot.as_str())), foot);
}

/// The lines around the table: header, keys, insight, the table's header row, status.
pub const CHROME_LINES: usize = 5;

/// A duration in at most 6 characters: 850ns, 12.3us, 123ms, 1.2s, 12.3m, 4.0h, 12.3d.
pub fn duration_ns(ns: u64) -> String {
    const UNITS: [(&str, f64); 6] = [
        ("us", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
        ("d", 86400e9),
    ];
    if ns < 1000 {
        return format!("{ns}ns");
    }
    let ns = ns as f64;
    // The largest unit the value is at least one of (a minute from 60 s on); a value that
    // would round to 1000 of one is 1.0 of the next.
    let mut at = UNITS
        .iter()
        .rposition(|&(_, scale)| ns >= scale)
        .unwrap_or(0);
    if at + 1 < UNITS.len() && ns / UNITS[at].1 >= 999.5 {
        at += 1;
    }
    scaled(ns / UNITS[at].1, UNITS[at].0)
}

/// One decimal below 100 (12.3), none above (123); 999.96 rounds up to "1000", so units
/// step at 999.5.
fn scaled(x: f64, unit: &str) -> String {
    if x < 99.95 {
        format!("{x:.1}{unit}")
    } else {
        format!("{x:.0}{unit}")
    }
}

/// A count exact below 10,000 (as `strace -c` prints it), then 12.3k, 123k, 1.2M, …
pub fn count(n: u64) -> String {
    if n < 10_000 {
        return n.to_string();
    }
    let x = n as f64;
    let units = [("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15)];
    let mut at = 0;
    while at + 1 < units.len() && x / units[at].1 >= 999.5 {
        at += 1;
    }
    scaled(x / units[at].1, units[at].0)
}

/// Calls per second: one decimal below 10 (0.5 a call every two seconds), then as a count.
fn rate(r: f64) -> String {
    if r > 0.0 && r < 9.95 {
        format!("{r:.1}")
    } else {
        count(r.round() as u64)
    }
}

/// A column: its header, how readily it gives way on a narrow terminal (0 never), its cell.
struct Column {
    header: &'static str,
    drop_order: u8,
    left: bool,
    cell: fn(&Row) -> String,
}

const PID: Column = Column {
    header: "PID",
    drop_order: 0,
    left: false,
    cell: |r| r.pid.map_or(String::new(), |p| p.to_string()),
};
const COMM: Column = Column {
    header: "COMM",
    drop_order: 0,
    left: true,
    cell: |r| r.comm.clone(),
};
/// The columns between the process's and the syscall's, in screen order.
const NUMBERS: [Column; 9] = [
    Column {
        header: "ON-CPU",
        drop_order: 0,
        left: false,
        cell: |r| r.on_cpu_ns.map_or("-".into(), duration_ns),
    },
    Column {
        header: "BLOCKED",
        drop_order: 1,
        left: false,
        cell: |r| r.blocked_ns.map_or("-".into(), duration_ns),
    },
    Column {
        header: "TIME",
        drop_order: 5,
        left: false,
        cell: |r| duration_ns(r.total_ns),
    },
    Column {
        header: "CALLS/S",
        drop_order: 1,
        left: false,
        cell: |r| rate(r.rate.unwrap_or(0.0)),
    },
    Column {
        header: "CALLS",
        drop_order: 4,
        left: false,
        cell: |r| count(r.calls),
    },
    Column {
        header: "ERRORS",
        drop_order: 2,
        left: false,
        cell: |r| match r.errors {
            0 => String::new(),
            n => count(n),
        },
    },
    Column {
        header: "ERRNO",
        drop_order: 2,
        left: true,
        cell: |r| r.errno.clone().unwrap_or_default(),
    },
    Column {
        header: "P99",
        drop_order: 3,
        left: false,
        cell: |r| r.p99_ns.map_or(String::new(), duration_ns),
    },
    Column {
        header: "MEAN",
        drop_order: 6,
        left: false,
        cell: |r| duration_ns(r.mean_ns),
    },
];

/// The table: by process, the process columns; the syscall last, in what width is left.
/// Columns are as wide as their widest cell, so no header or number is ever cut; on a narrow
/// terminal the least needed columns give way, whole.
fn table<'a>(s: &Screen<'a>, width: u16) -> Table<'a> {
    let by_process = s.group == Group::Process;
    let pairs = !by_process && *s.filter != Filter::None;
    let mut columns: Vec<&Column> = Vec::new();
    if by_process || pairs {
        columns.extend([&PID, &COMM]);
    }
    columns.extend(NUMBERS.iter());
    let last = if by_process { "TOP SYSCALL" } else { "SYSCALL" };
    let cells: Vec<Vec<String>> = s
        .rows
        .iter()
        .map(|r| columns.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([c.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Every column and the syscall's header, one space between.
    let needed = |widths: &[usize], shown: &[bool]| {
        widths
            .iter()
            .zip(shown)
            .filter(|(_, &on)| on)
            .map(|(w, _)| w + 1)
            .sum::<usize>()
            + last.len()
    };
    let mut shown = vec![true; columns.len()];
    while needed(&widths, &shown) > usize::from(width) {
        let Some(drop) = (0..columns.len())
            .filter(|&i| shown[i] && columns[i].drop_order > 0)
            .max_by_key(|&i| (columns[i].drop_order, i))
        else {
            break;
        };
        shown[drop] = false;
    }
    let keep = |i: &usize| shown[*i];
    let header = (0..columns.len())
        .filter(keep)
        .map(|i| pad(columns[i].header, widths[i], columns[i].left))
        .chain([last.to_string()]);
    let rows = s.rows.iter().zip(&cells).map(|(r, row)| {
        let cells = (0..columns.len())
            .filter(keep)
            .map(|i| pad(&row[i], widths[i], columns[i].left))
            .chain([r.syscall.clone()]);
        TableRow::new(cells.map(Cell::from))
    });
    let mut constraints: Vec<Constraint> = (0..columns.len())
        .filter(keep)
        .map(|i| Constraint::Length(widths[i] as u16))
        .collect();
    constraints.push(Constraint::Fill(1));
    Table::new(rows, constraints).header(
        TableRow::new(header.map(Cell::from)).style(Style::new().add_modifier(Modifier::REVERSED)),
    )
}

/// Numbers right-aligned, names left; by padding, which keeps a cell's text whole.
fn pad(text: &str, width: usize, left: bool) -> String {
    if left {
        format!("{text:<width$}")
    } else {
        format!("{text:>width$}")
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;

    #[test]
    fn compact_units() {
        assert_eq!(duration_ns(850), "850ns");
        assert_eq!(duration_ns(12_345), "12.3us");
        assert_eq!(duration_ns(123_456_789), "123ms");
        assert_eq!(duration_ns(999_960_000), "1.0s");
        assert_eq!(duration_ns(1_234_000_000), "1.2s");
        assert_eq!(duration_ns(754_000_000_000), "12.6m");
        assert_eq!(duration_ns(4 * 3_600_000_000_000), "4.0h");
        assert_eq!(count(1290), "1290");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(999_600), "1.0M");
        assert_eq!(count(u64::MAX), "18447P");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(12_345.0), "12.3k");
    }

    /// The widest plausible row at 80×24: every header whole, the essential columns there.
    #[test]
    fn an_80_by_24_frame_keeps_headers_whole() {
        let row = Row {
            id: "p1".into(),
            pid: Some(4_194_303),
            comm: "a-15-byte-comm!".into(),
            syscall: "clock_nanosleep".into(),
            calls: 123_456_789,
            errors: 12_345_678,
            errno: Some("ETIMEDOUT".into()),
            total_ns: 7_000_000_000_000,
            on_cpu_ns: Some(123_456_789_000),
            blocked_ns: Some(6_000_000_000_000),
            mean_ns: 56_700,
            p99_ns: Some(1_234_567),
            first_seen_ms: None,
            rate: Some(123_456.0),
        };
        let rows = vec![row; 30];
        let screen = Screen {
            header: "h",
            group: Group::Process,
            sort: SortBy::Cpu,
            filter: &Filter::None,
            insight: None,
            rows: &rows,
            foot: String::new(),
        };
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, &screen)).unwrap();
        let buf = t.backend().buffer();
        let line = |y: u16| -> String { (0..80).map(|x| buf[(x, y)].symbol()).collect() };
        let head = line(3);
        let fields: Vec<&str> = head.split_whitespace().collect();
        for h in ["PID", "COMM", "ON-CPU", "BLOCKED", "CALLS/S", "ERRNO"] {
            assert!(fields.contains(&h), "{h} in {head:?}");
        }
        assert!(head.contains("TOP SYSCALL"), "{head:?}");
        let first = line(4);
        for v in [
            "4194303",
            "a-15-byte-comm!",
            "2.1m",
            "1.7h",
            "123k",
            "ETIMEDOUT",
        ] {
            assert!(first.split_whitespace().any(|f| f == v), "{v} in {first:?}");
        }
        // 21 lines: the table's header and 19 rows fit between the chrome lines.
        assert_eq!(line(23).trim(), "");
        assert!(line(22).contains("4194303"));
    }
}
