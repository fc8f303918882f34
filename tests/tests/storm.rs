//! A fork storm, alone in its own test binary (cargo runs test binaries one after another), so
//! the kernel map occupancy it measures before and after is its own and not other tests'.

use std::time::Duration;

use serde_json::Value;
use tests::{pid_of, workload, Daemon};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_fork_storm_leaves_maps_bounded_and_counts_exact() {
    let daemon = Daemon::start(&["--interval", "250ms", "--max-exited", "50000"]);
    let before = daemon.wait_for("?top=1", WAIT, |s| {
        s["host"]["drains"].as_u64().unwrap() >= 2
    })["kernel_maps"]
        .clone();
    const N: u64 = 20_000;
    let lines = workload(&["storm", &N.to_string()]);
    let comm = lines[0]["comm"].as_str().unwrap().to_string();
    // The parent exits after its last child: once it has, and two more drains have passed,
    // every child has been read for the last time and retired from the kernel maps.
    let parent = daemon.final_stats(pid_of(&lines[0], "pid"));
    let drains = parent["host"]["drains"].as_u64().unwrap();
    let after = daemon.wait_for("?top=1", WAIT, |s| {
        s["host"]["drains"].as_u64().unwrap() > drains + 2
    })["kernel_maps"]
        .clone();
    // More children than one page holds (10,000): walk the pages.
    let mut pages = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = daemon.stats(&format!(
            "?comm={comm}&syscall=getppid&limit=10000&offset={at}&syscalls=0"
        ));
        offset = page["page"]["next_offset"].as_u64();
        pages.push(page);
    }
    let children: Vec<&Value> = pages
        .iter()
        .flat_map(|p| p["processes"].as_array().unwrap())
        .collect();
    assert_eq!(
        children.len() as u64,
        N,
        "one entry per child; kernel maps: {after}"
    );
    assert!(
        children
            .iter()
            .all(|p| p["exited"] == true && p["count"] == 1),
        "each child's one getppid"
    );
    eprintln!("kernel maps before the storm: {before}\nafter: {after}");
    for map in ["starts", "procs", "hists", "errnos"] {
        let (b, a) = (
            before[format!("{map}_entries")].as_u64().unwrap(),
            after[format!("{map}_entries")].as_u64().unwrap(),
        );
        // A leak would leave about one entry per child (20,000, or full-map drops); other
        // processes on the machine come and go by the hundreds.
        assert!(
            a <= b + N / 10,
            "{map} grew from {b} to {a} entries: state leaked"
        );
    }
    for (drop, n) in after["drops"].as_object().unwrap() {
        assert_eq!(n, 0, "{drop}");
    }
}
