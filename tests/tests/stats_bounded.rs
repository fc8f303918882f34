//! The unfiltered `/stats` answer stays small whatever the host ran (schema 2): after 3,000
//! short-lived processes it is one page of 50, without histogram buckets unless asked for.

use std::{process::Command, time::Duration};

use serde_json::Value;
use tests::Daemon;

/// The most the default answer may weigh (the bound).
const MAX_BYTES: usize = 256 * 1024;
const PROCESSES: usize = 3_000;

fn body(daemon: &Daemon, query: &str) -> (usize, Value) {
    let r = ureq::get(&format!("{}/stats{query}", daemon.base))
        .call()
        .unwrap();
    let text = r.into_string().unwrap();
    (text.len(), serde_json::from_str(&text).unwrap())
}

/// Every syscall entry of an answer: system-wide and per process.
fn entries(s: &Value) -> Vec<&Value> {
    let mut all: Vec<&Value> = s["syscalls"].as_array().unwrap().iter().collect();
    for p in s["processes"].as_array().unwrap() {
        all.extend(p["syscalls"].as_array().unwrap());
    }
    all
}

#[test]
fn the_default_answer_is_bounded_after_thousands_of_processes() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    for _ in 0..PROCESSES {
        let status = Command::new("sh").args(["-c", "true"]).status().unwrap();
        assert!(status.success());
    }
    // Every one of them exited and was drained: the store holds them all (max_exited 10,000).
    let s = daemon.wait_for(
        "?comm=sh&exited=true&limit=1",
        Duration::from_secs(30),
        |s| s["page"]["total"].as_u64().unwrap() >= PROCESSES as u64,
    );
    let drains = s["host"]["drains"].as_u64().unwrap();
    daemon.wait_for("?pid=1", Duration::from_secs(10), |s| {
        s["host"]["drains"].as_u64().unwrap() > drains + 1
    });

    let (bytes, s) = body(&daemon, "");
    eprintln!(
        "unfiltered /stats: {bytes} B, {} processes held",
        s["store"]["processes"]
    );
    assert_eq!(s["schema_version"], 2);
    assert!(bytes <= MAX_BYTES, "{bytes} B > {MAX_BYTES} B");
    assert!(
        s["page"]["total"].as_u64().unwrap() > PROCESSES as u64,
        "{}",
        s["page"]
    );
    assert_eq!(s["processes"].as_array().unwrap().len(), 50);
    assert_eq!(s["page"]["next_offset"], 50);
    assert!(
        entries(&s).iter().all(|e| e.get("buckets").is_none()),
        "no buckets unless asked for"
    );

    let (with_bytes, with) = body(&daemon, "?buckets=true");
    eprintln!("with buckets=true: {with_bytes} B");
    let with = entries(&with);
    assert!(!with.is_empty());
    for e in with {
        let buckets = e["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("buckets in {e}"));
        let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(
            sum,
            e["count"].as_u64().unwrap(),
            "buckets hold every call: {e}"
        );
    }
    let (_, without) = body(&daemon, "?buckets=false");
    assert!(entries(&without).iter().all(|e| e.get("buckets").is_none()));
}
