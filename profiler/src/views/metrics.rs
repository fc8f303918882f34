//! The body of `GET /metrics` (scrape.rs answers it): every family of families.rs's table,
//! rendered by one loop in the Prometheus text format (0.0.4) or OpenMetrics 1.0, and kept with
//! its gzip until the next drain. Every metric is documented in docs/metrics.md, whose table
//! of every metric is generated from the same table.

use std::{
    fmt,
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::body::Bytes;
use flate2::{write::GzEncoder, Compression};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

use super::{buckets::BucketSet, exposition::Shown, families::FAMILIES, snapshot::Snapshot};
use crate::{host::procself::ProcSelf, store::shared::SharedStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format 0.0.4, which every scraper reads.
    Text,
    OpenMetrics,
}

/// A body as scraped: rendered once per drain and format, gzipped once when first asked for.
struct Rendered {
    /// The drain it was rendered after.
    drains: u64,
    body: Bytes,
    gzip: Option<Bytes>,
}

/// What /metrics keeps between scrapes: the `le` set it renders, the cost of the scrapes
/// answered so far (reported by the next body: a scrape cannot time itself), and the last body
/// of each format.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    buckets: BucketSet,
    scrapes: AtomicU64,
    /// Seconds spent answering, in all and the last time.
    cost: Mutex<(f64, f64)>,
    /// Per format. The store only changes at a drain, so every scrape between two drains gets
    /// the same bytes: many scrapers (or one impatient dashboard) cost one render and one
    /// compression per drain interval. A scraper that finds the body being rendered waits for
    /// it rather than rendering it again.
    rendered: [Mutex<Option<Rendered>>; 2],
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rendered(drain {}, {} bytes)",
            self.drains,
            self.body.len()
        )
    }
}

impl ScrapeStats {
    pub fn new(buckets: BucketSet) -> Self {
        Self {
            buckets,
            ..Default::default()
        }
    }

    pub fn record(&self, seconds: f64) {
        let mut cost = self.cost.lock().unwrap_or_else(|e| e.into_inner());
        cost.0 += seconds;
        cost.1 = seconds;
        self.scrapes.fetch_add(1, Ordering::Relaxed);
    }

    fn cost(&self) -> (u64, f64, f64) {
        let cost = self.cost.lock().unwrap_or_else(|e| e.into_inner());
        (self.scrapes.load(Ordering::Relaxed), cost.0, cost.1)
    }

    /// The body in `format` as of the store's last drain, gzipped if `gzip`. None only on an
    /// encoder bug (a series that does not fit its row): writing to memory cannot fail.
    pub fn body(&self, store: &Arc<SharedStore>, format: Format, gzip: bool) -> Option<Bytes> {
        let mut slot = self.rendered[format as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let drains = store.read().drains();
        if slot.as_ref().is_none_or(|r| r.drains != drains) {
            let (body, drains) = render(store, self.cost(), format, self.buckets)?;
            *slot = Some(Rendered {
                drains,
                body: Bytes::from(body),
                gzip: None,
            });
        }
        let rendered = slot.as_mut()?;
        if !gzip {
            return Some(rendered.body.clone());
        }
        if rendered.gzip.is_none() {
            rendered.gzip = Some(Bytes::from(compress(&rendered.body)?));
        }
        rendered.gzip.clone()
    }
}

/// Every family this daemon shows, in the table's order, and the drain the store had made when
/// they were read.
fn render(
    store: &Arc<SharedStore>,
    cost: (u64, f64, f64),
    format: Format,
    buckets: BucketSet,
) -> Option<(String, u64)> {
    let drains = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StoreCollector {
        store: store.clone(),
        cost,
        // Read before the store's lock is taken: it needs none.
        process: ProcSelf::read().ok(),
        buckets,
        drains: drains.clone(),
    }));
    let mut body = String::new();
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut body, &registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut body, &registry),
    };
    encoded.ok()?;
    Some((body, drains.load(Ordering::Relaxed)))
}

/// The registry's view of the store: prometheus-client hands a collector the encoder.
#[derive(Debug)]
struct StoreCollector {
    store: Arc<SharedStore>,
    cost: (u64, f64, f64),
    process: Option<ProcSelf>,
    buckets: BucketSet,
    drains: Arc<AtomicU64>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let store = self.store.read();
        self.drains.store(store.drains(), Ordering::Relaxed);
        let per_pid = store.metrics().config.per_pid;
        let snapshot = Snapshot::new(&store, self.cost, self.process);
        for family in FAMILIES {
            if family.shown == Shown::Always || per_pid {
                family.encode(&snapshot, &mut enc, self.buckets)?;
            }
        }
        Ok(())
    }
}

/// Gzip at the fastest level: metrics text shrinks about tenfold even so, and a body of
/// megabytes compresses in milliseconds, once per drain.
fn compress(body: &[u8]) -> Option<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    gz.write_all(body).ok()?;
    gz.finish().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        fmt::Write as _,
        io::Read,
        time::{Duration, Instant, SystemTime},
    };

    use profiler_common::bucket_index;

    use super::*;
    use crate::{
        host::cgroups::{Cgroup, Pod, QosClass},
        store::{
            aggregates::MetricsConfig,
            histogram::{Delta, TimeSplit},
            telemetry::{BpfProgram, CheckpointCost},
            Gain, ProcKey, Store, StoreConfig, SyscallKey,
        },
        syscalls::Abi,
        views::exposition::{Family, Kind, Unit},
    };

    /// A store with something in every family: a process in a pod's container that opened
    /// files (3 failing with ENOENT) in 3 µs each, a drain, a BPF program's run time.
    fn store(per_pid: bool) -> Arc<SharedStore> {
        let mut s = Store::new(StoreConfig {
            retention: Duration::from_secs(60),
            max_exited: 100,
            latency: true,
            metrics: MetricsConfig {
                per_pid,
                ..MetricsConfig::default()
            },
            bpf_stats_enabled: true,
            time_split: true,
        });
        let key = ProcKey {
            pid: 4242,
            incarnation: 1,
        };
        let pod = Pod {
            uid: "0f9a".into(),
            qos_class: QosClass::Burstable,
        };
        s.add_cgroup_labels([(
            42,
            Cgroup {
                label: Arc::from("container:0123456789ab"),
                pod: Some(Arc::new(pod)),
            },
        )]);
        s.identify(key, "work", 42);
        // As with pin_path: the checkpoint families have their series.
        s.record_checkpoint(CheckpointCost {
            committed: true,
            bytes: 4096,
            took: Duration::from_micros(150),
        });
        let delta = Delta {
            errors: 3,
            total_ns: 9000,
            split: TimeSplit {
                runq_ns: 1000,
                blocked_ns: 5000,
                blocked_calls: 1,
            },
            buckets: vec![(bucket_index(3000), 3)],
        };
        s.add_batch([Gain {
            proc: key,
            sc: SyscallKey {
                abi: Abi::Native,
                nr: 257,
            },
            delta: delta.view(),
            errnos: &[(2, 3)],
        }]);
        let sys_exit = BpfProgram {
            name: "sys_exit".into(),
            run_time_ns: 1000,
            run_count: 10,
        };
        let cpu = [1, 2, 3, 4].map(Duration::from_millis);
        s.record_drain(Duration::from_millis(2), &cpu, vec![sys_exit]);
        s.finish_drain((Instant::now(), SystemTime::now()));
        Arc::new(SharedStore::new(s))
    }

    fn text(stats: &ScrapeStats, store: &Arc<SharedStore>, format: Format) -> String {
        let body = stats.body(store, format, false).expect("renders");
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The name a family's `# HELP` line gives: OpenMetrics names the family without the
    /// `_total` and `_info` of its samples.
    fn described(f: &Family, format: Format) -> String {
        let name = f.exposed_name();
        match format {
            Format::Text => name,
            Format::OpenMetrics => ["_total", "_info"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string(),
        }
    }

    #[test]
    fn every_family_renders_its_series_in_the_tables_order() {
        let store = store(true);
        for format in [Format::Text, Format::OpenMetrics] {
            let body = text(&ScrapeStats::default(), &store, format);
            let mut last = 0;
            for f in FAMILIES {
                let name = f.exposed_name();
                let at = body
                    .find(&format!("# HELP {} ", described(f, format)))
                    .unwrap_or_else(|| panic!("{format:?}: no {name}:\n{body}"));
                assert!(at >= last, "{name} out of order");
                last = at;
                let sample = match f.kind {
                    Kind::Histogram => format!("{name}_bucket{{"),
                    _ => name.clone(),
                };
                let series = body.lines().filter(|l| l.starts_with(&sample)).count();
                assert!(series > 0, "{format:?}: {name} has no series:\n{body}");
            }
            assert_eq!(format == Format::OpenMetrics, body.ends_with("# EOF\n"));
        }
        // The daemon's process, under the standard names.
        let body = text(&ScrapeStats::default(), &store, Format::Text);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(body.contains(&format!("\n{name}")), "{name}");
        }
    }

    /// The split's three counters are the parts of the histogram's _sum, per series.
    #[test]
    fn the_split_counters_add_up_to_the_duration_sum() {
        let body = text(&ScrapeStats::default(), &store(true), Format::Text);
        let value = |prefix: &str| -> f64 {
            let line = body
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix}:\n{body}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        for family in [
            "syscall_profiler_syscall",
            "syscall_profiler_process_syscall",
        ] {
            let sum = value(&format!("{family}_duration_seconds_sum{{"));
            let cpu = value(&format!("{family}_cpu_seconds_total{{"));
            let runq = value(&format!("{family}_runqueue_seconds_total{{"));
            let blocked = value(&format!("{family}_blocked_seconds_total{{"));
            assert_eq!((cpu, runq, blocked), (3e-6, 1e-6, 5e-6), "{family}");
            assert!((cpu + runq + blocked - sum).abs() < 1e-12, "{family}");
        }
    }

    #[test]
    fn the_drain_cpu_is_reported_by_phase() {
        let body = text(&ScrapeStats::default(), &store(false), Format::Text);
        // The fixture's one drain: 1, 2, 3 and 4 ms in the four phases.
        for (phase, want) in [
            ("slots", 0.001),
            ("maps", 0.002),
            ("store", 0.003),
            ("finish", 0.004),
        ] {
            let line =
                format!("syscall_profiler_drain_cpu_seconds_total{{phase=\"{phase}\"}} {want}\n");
            assert!(body.contains(&line), "{line} in:\n{body}");
        }
    }

    #[test]
    fn per_pid_families_only_with_metrics_per_pid() {
        let body = text(&ScrapeStats::default(), &store(false), Format::Text);
        for f in FAMILIES {
            assert_eq!(
                body.contains(&format!("# HELP {} ", f.exposed_name())),
                f.shown == Shown::Always,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn the_default_histograms_have_the_power_of_two_bounds_and_the_fine_ones_more() {
        let store = store(false);
        let les = |set: BucketSet| -> Vec<String> {
            text(&ScrapeStats::new(set), &store, Format::Text)
                .lines()
                .filter(|l| l.starts_with("syscall_profiler_syscall_duration_seconds_bucket{"))
                .map(|l| {
                    l.split("le=\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let coarse = les(BucketSet::PowersOfTwo);
        assert_eq!(coarse.len(), 31, "{coarse:?}");
        assert_eq!(coarse.first().map(String::as_str), Some("1.27e-07"));
        assert!(!coarse.contains(&"3.071e-06".to_string()));
        // 3 µs is in the kernel bucket [2816, 3072) ns.
        let fine = les(BucketSet::Fine);
        assert!(
            fine.contains(&"3.071e-06".to_string()) && fine.contains(&"2.815e-06".to_string()),
            "{fine:?}"
        );
        assert_eq!(fine.len(), 33);
    }

    #[test]
    fn bodies_are_rendered_and_gzipped_once_per_drain() {
        let store = store(false);
        let stats = ScrapeStats::default();
        let plain = stats.body(&store, Format::Text, false).unwrap();
        let gzip = stats.body(&store, Format::Text, true).unwrap();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
        assert!(
            gzip.len() * 3 < plain.len(),
            "{} vs {}",
            gzip.len(),
            plain.len()
        );
        // The same bytes until the next drain, each format its own.
        stats.record(0.5);
        assert_eq!(
            stats.body(&store, Format::Text, true).unwrap().as_ptr(),
            gzip.as_ptr()
        );
        assert_eq!(
            stats.body(&store, Format::Text, false).unwrap().as_ptr(),
            plain.as_ptr()
        );
        let om = stats.body(&store, Format::OpenMetrics, false).unwrap();
        assert!(om.ends_with(b"# EOF\n"));
        store
            .write()
            .finish_drain((Instant::now(), SystemTime::now()));
        let next = stats.body(&store, Format::Text, false).unwrap();
        let next = String::from_utf8(next.to_vec()).unwrap();
        assert!(
            next.contains("\nsyscall_profiler_scrapes_total 1\n"),
            "{next}"
        );
    }

    /// docs/metrics.md's table of every metric, as FAMILIES says it.
    fn docs_table() -> String {
        let mut t = String::from(
            "| metric | type | unit | labels | meaning |\n| --- | --- | --- | --- | --- |\n",
        );
        for f in FAMILIES {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
                Kind::Info => "info (gauge in 0.0.4)",
            };
            let unit = match f.unit {
                Some(Unit::Seconds) => "seconds",
                Some(Unit::Bytes) => "bytes",
                None => "",
            };
            let le: &[&str] = if f.kind == Kind::Histogram {
                &["le"]
            } else {
                &[]
            };
            let labels: Vec<String> = f
                .labels
                .iter()
                .chain(le)
                .map(|l| format!("`{l}`"))
                .collect();
            let only = match f.shown {
                Shown::Always => "",
                Shown::PerPid => " Only with `--metrics-per-pid`.",
            };
            let _ = writeln!(
                t,
                "| `{}` | {kind} | {unit} | {} | {}.{only} |",
                f.exposed_name(),
                labels.join(", "),
                f.help
            );
        }
        t
    }

    /// `UPDATE_DOCS=1 cargo test -p profiler --bins every_metric` rewrites the table.
    #[test]
    fn docs_every_metric_table_is_the_families_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc
            .find("\n| metric | type |")
            .expect("docs/metrics.md has the table of every metric")
            + 1;
        let len = doc[start..]
            .split_inclusive('\n')
            .take_while(|l| l.starts_with('|'))
            .map(str::len)
            .sum::<usize>();
        let want = docs_table();
        if doc[start..start + len] == want {
            return;
        }
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let updated = format!("{}{want}{}", &doc[..start], &doc[start + len..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "docs/metrics.md's table of every metric differs from views/families.rs's FAMILIES \
             (UPDATE_DOCS=1 cargo test -p profiler --bins every_metric rewrites it); it should \
             be:\n{want}"
        );
    }
}
