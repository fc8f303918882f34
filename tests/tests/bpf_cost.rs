//! The kernel side's cost per path, against its budgets (xtask/src/bpfcost/mod.rs, BUDGETS):
//! BPF instructions executed and calls into the kernel, counted by running the daemon's
//! programs as the kernel verified them against a modelled kernel. A path that gains a helper
//! call or grows past its instruction budget fails here, whatever the CPU. Loads the daemon
//! in three configurations: run as root, under the kernel lock.

use tests::{daemon_bin, require_root};

#[test]
fn every_counted_path_is_within_its_budget() {
    require_root();
    let costs = xtask::bpfcost::measure(&daemon_bin()).expect("counting the programs' paths");
    assert!(
        costs.len() >= xtask::bpfcost::BUDGETS.len(),
        "fewer paths counted than budgeted: {costs:#?}"
    );
    let over = xtask::bpfcost::budget_violations(&costs);
    assert!(
        over.is_empty(),
        "over budget (see docs/performance.md, \"Instructions and calls per path\"):\n{}",
        over.join("\n")
    );
}
