//! `/stats` pages (schema 2): walking `offset` over many processes yields each exactly once, in
//! the order of one big page, with the same totals; the `exited` filter and the `page` object.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;
use tests::{pid_of, workload, Daemon};

/// The processes of one answer as (pid, count, total_ns).
fn rows(stats: &Value) -> Vec<(u64, u64, u64)> {
    stats["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k} in {p}"));
            (n("pid"), n("count"), n("total_ns"))
        })
        .collect()
}

#[test]
fn walking_the_pages_yields_every_process_once() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    const CHILDREN: usize = 400;
    let lines = workload(&["storm", &CHILDREN.to_string()]);
    let comm = lines[0]["comm"].as_str().unwrap().to_string();
    // The parent exits after its last child: two drains later, every one of them is exited and
    // read for the last time, so the pages below read a store that no longer changes for them.
    daemon.final_stats(pid_of(&lines[0], "pid"));

    let query = format!("?comm={comm}&exited=true&syscalls=0");
    let whole = daemon.stats(&format!("{query}&limit=10000"));
    let all = rows(&whole);
    let total = whole["page"]["total"].as_u64().unwrap() as usize;
    // The children, and their parent if the drain named it after its rename.
    assert!(
        (CHILDREN..=CHILDREN + 1).contains(&total),
        "the children: {}",
        whole["page"]
    );
    assert_eq!(all.len(), total);
    assert_eq!(
        whole["page"]["next_offset"],
        Value::Null,
        "{}",
        whole["page"]
    );
    assert!(
        all.windows(2).all(|w| w[0].2 >= w[1].2),
        "sorted by total_ns, descending"
    );

    const LIMIT: usize = 37;
    let mut walked = Vec::new();
    let mut offset = Some(0u64);
    let mut pages = 0;
    while let Some(at) = offset {
        let page = daemon.stats(&format!("{query}&limit={LIMIT}&offset={at}"));
        let p = &page["page"];
        assert_eq!(
            (p["offset"].as_u64(), p["limit"].as_u64()),
            (Some(at), Some(LIMIT as u64))
        );
        assert_eq!(
            p["total"].as_u64(),
            Some(total as u64),
            "every page counts them all"
        );
        let got = rows(&page);
        assert!(got.len() <= LIMIT);
        offset = p["next_offset"].as_u64();
        match offset {
            Some(next) => {
                assert_eq!(next, at + LIMIT as u64);
                assert_eq!(got.len(), LIMIT, "a page before the last is full");
            }
            None => assert_eq!(
                at as usize + got.len(),
                total,
                "the last page ends the list"
            ),
        }
        walked.extend(got);
        pages += 1;
    }
    assert_eq!(pages, total.div_ceil(LIMIT));
    let pids: BTreeSet<u64> = walked.iter().map(|r| r.0).collect();
    assert_eq!(pids.len(), walked.len(), "no process on two pages");
    assert_eq!(walked, all, "the pages, end to end, are the one big page");
    let sum = |rs: &[(u64, u64, u64)]| {
        rs.iter()
            .map(|r| (r.1, r.2))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(sum(&walked), sum(&all));

    // Past the end: an empty page that says so.
    let past = daemon.stats(&format!("{query}&offset={}", total + 5));
    assert_eq!(rows(&past), vec![]);
    assert_eq!(past["page"]["next_offset"], Value::Null);
    assert_eq!(past["page"]["total"].as_u64(), Some(total as u64));

    // None of them is running; all of them have exited.
    let running = daemon.stats(&format!("?comm={comm}&exited=false"));
    assert_eq!(running["page"]["total"], 0, "{}", running["page"]);
    let either = daemon.stats(&format!("?comm={comm}&exited=all&limit=1"));
    assert_eq!(either["page"]["total"].as_u64(), Some(total as u64));
    assert_eq!(either["page"]["next_offset"], 1);
}

/// The default page: 50 processes, 10 syscalls each; `top` is `limit` under its schema 1 name.
#[test]
fn defaults_and_the_top_alias() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let lines = workload(&["storm", "80"]);
    let comm = lines[0]["comm"].as_str().unwrap().to_string();
    let s = daemon.wait_for(&format!("?comm={comm}"), Duration::from_secs(30), |s| {
        s["page"]["total"].as_u64() >= Some(80)
    });
    assert_eq!(s["schema_version"], 2);
    assert_eq!(rows(&s).len(), 50, "50 processes a page by default");
    assert_eq!(s["page"]["limit"], 50);
    assert_eq!(s["page"]["next_offset"], 50);
    let top = daemon.stats(&format!("?comm={comm}&top=7"));
    assert_eq!(rows(&top).len(), 7);
    assert_eq!(top["page"]["limit"], 7);
    let all = daemon.stats("?pid=1");
    let listed = all["syscalls"].as_array().unwrap().len() as u64;
    let total = all["syscalls_total"].as_u64().unwrap();
    assert_eq!(listed, total.min(10), "10 system-wide syscalls by default");
    for p in all["processes"].as_array().unwrap() {
        let listed = p["syscalls"].as_array().unwrap().len() as u64;
        assert_eq!(listed, p["syscalls_total"].as_u64().unwrap().min(10), "{p}");
    }
}
