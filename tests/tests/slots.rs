//! Histogram slot reuse, alone in its own test binary (cargo runs test binaries one after
//! another) so that no other test's processes hold slots meanwhile.

use serde_json::Value;

use profiler_common::HISTS_MAX_ENTRIES;
use tests::{pid_of, workload, Daemon};

/// More (process, syscall) series over time than HISTS has slots: only slots freed by retired
/// processes and handed out again let every one of them count.
#[test]
fn histogram_slots_of_exited_processes_are_reused() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    const CHILDREN: u64 = 350;
    const NRS: u64 = 100;
    assert!(CHILDREN * NRS > u64::from(HISTS_MAX_ENTRIES));
    let lines = workload(&["series", &CHILDREN.to_string(), &NRS.to_string(), "10"]);
    let comm = lines[0]["comm"].as_str().unwrap().to_string();
    let parent = pid_of(&lines[0], "pid");
    daemon.final_stats(parent);
    let stats = daemon.stats(&format!("?comm={comm}&limit=1000"));
    let children: Vec<&Value> = stats["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] != parent)
        .collect();
    assert_eq!(
        children.len() as u64,
        CHILDREN,
        "one entry per child; kernel maps: {}",
        stats["kernel_maps"]
    );
    for p in &children {
        assert_eq!(p["count"], NRS, "each child's calls: {p}");
        assert_eq!(p["errors"], NRS, "each one ENOSYS: {p}");
    }
    let drops = &stats["kernel_maps"]["drops"];
    assert_eq!(drops["hists_full"], 0, "{drops}");
}
