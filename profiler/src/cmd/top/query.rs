//! The one `/stats` query top sends: ranked by the daemon, cut to the rows that fit the screen,
//! never the unfiltered answer (on a busy host that was hundreds of MB parsed every refresh).
//!
//! top speaks `/stats` schema 2 (`sort=cpu|blocked|…`, `limit`, `syscalls`, no buckets). A
//! schema-1 daemon answers 400 naming one of those parameters; top then asks it the schema-1
//! way (`top=N`, `sort=total|count|errors|p99`) from then on, and ranks by CPU itself among the
//! rows it got.

use super::rows::{Filter, Group, SortBy};

/// How a daemon is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// `/stats` schema 2: `sort=cpu&limit=N&syscalls=M`.
    V2,
    /// A daemon from before schema 2: `sort=total&top=N`.
    V1,
}

/// The parameters a schema-1 daemon refuses, by which its 400 is told from a bad query.
pub const V2_ONLY_PARAMS: &[&str] = &["sort", "limit", "syscalls", "buckets"];

/// Syscalls listed per process in the process view: enough for its top syscall and errno.
const SYSCALLS_PER_PROCESS: usize = 8;

/// The `/stats` path and query for a view of `rows` lines.
pub fn stats_query(
    schema: Schema,
    group: Group,
    filter: &Filter,
    by: SortBy,
    rows: usize,
) -> String {
    let rows = rows.max(1);
    let filter = filter.query();
    match schema {
        Schema::V2 => {
            let sort = match by {
                SortBy::Cpu => "cpu",
                SortBy::Blocked => "blocked",
                SortBy::Time => "total",
                SortBy::Calls => "count",
                SortBy::Errors => "errors",
                SortBy::P99 => "p99",
            };
            let (limit, syscalls) = match (group, filter.is_empty()) {
                (Group::Process, _) => (rows, SYSCALLS_PER_PROCESS),
                // The system-wide list; the one process listed is not shown.
                (Group::Syscall, true) => (1, rows),
                // Each matching process's syscalls.
                (Group::Syscall, false) => (rows, rows),
            };
            format!("/stats?sort={sort}&limit={limit}&syscalls={syscalls}&buckets=false{filter}")
        }
        Schema::V1 => {
            // Schema 1 cannot rank by CPU or blocked time: total time contains both, so the
            // rows ranked by CPU are among those of most total time.
            let sort = match by {
                SortBy::Cpu | SortBy::Blocked | SortBy::Time => "total",
                SortBy::Calls => "count",
                SortBy::Errors => "errors",
                SortBy::P99 => "p99",
            };
            format!("/stats?sort={sort}&top={rows}{filter}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_narrow() {
        let q = stats_query(Schema::V2, Group::Process, &Filter::None, SortBy::Cpu, 19);
        assert_eq!(q, "/stats?sort=cpu&limit=19&syscalls=8&buckets=false");
        let q = stats_query(
            Schema::V2,
            Group::Syscall,
            &Filter::None,
            SortBy::Blocked,
            0,
        );
        assert_eq!(q, "/stats?sort=blocked&limit=1&syscalls=1&buckets=false");
        let q = stats_query(Schema::V2, Group::Syscall, &Filter::Pid(4), SortBy::P99, 9);
        assert_eq!(q, "/stats?sort=p99&limit=9&syscalls=9&buckets=false&pid=4");
        let q = stats_query(Schema::V1, Group::Process, &Filter::None, SortBy::Cpu, 19);
        assert_eq!(q, "/stats?sort=total&top=19");
    }
}
