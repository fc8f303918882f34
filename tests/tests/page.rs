//! The dashboard in a real headless Chromium against the real daemon: it loads without console
//! errors, fetches nothing from anywhere else, and its plots show a known workload's calls.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use tests::{pid_of, workload, Daemon, RunningWorkload};

/// Chromium's stderr and, with `--dump-dom`, the page's DOM after its scripts ran.
fn chromium(args: &[&str], url: &str) -> (String, String) {
    // One profile per run: the tests of this file run at once, and Chromium locks its profile.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("spt-chromium-{}-{run}", std::process::id()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            // Scripts run, fetch and redraw for this much (virtual) time before the dump.
            "--virtual-time-budget=6000",
            "--window-size=1400,1700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium (apt-get install chromium; .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Opening tags in the DOM that carry every `attr="value"` given.
fn tags_with<'a>(dom: &'a str, attrs: &[(&str, &str)]) -> Vec<&'a str> {
    dom.split('<')
        .filter_map(|t| t.split('>').next())
        .filter(|t| {
            attrs
                .iter()
                .all(|(k, v)| t.contains(&format!(" {k}=\"{v}\"")))
        })
        .collect()
}

fn attr(tag: &str, name: &str) -> Option<u64> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[at..].split('"').next()?.parse().ok()
}

fn assert_clean(dom: &str, stderr: &str) {
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        !dom.contains("data-errors"),
        "the page caught errors: {dom}"
    );
    let body = tags_with(dom, &[])
        .into_iter()
        .find(|t| t.starts_with("body"));
    let loaded = body.and_then(|b| attr(b, "data-loaded")).unwrap_or(0);
    assert!(loaded >= 1, "the page never finished a refresh:\n{dom}");
}

#[test]
fn dashboard_plots_a_known_workload() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let mut calls = vec!["calls", "getppid=2000", "enoent=300", "ebadf=40", "sleep=5"];
    // i386 getppid: nothing else on the host makes it, so its system-wide count is exact.
    let int80 = cfg!(target_arch = "x86_64");
    if int80 {
        calls.push("int80=777");
    }
    // Held until the first page is read, however long Chromium takes to start (a fixed 8 s
    // was not enough on a loaded machine); the test releases it and waits for it to end
    // (killing the parent would leave its child blocked forever: it holds the pipe's write end).
    let mut blocked = RunningWorkload::start(&["block", "go"]);
    let blocked_child = pid_of(&blocked.next_line(), "child_pid");
    // The blocked read is in flight; the page shows it (first: the read ends after 8 s).
    let (dom, stderr) = chromium(
        &["--dump-dom"],
        &format!("{}/?q={blocked_child}&n=1000", daemon.base),
    );
    assert_clean(&dom, &stderr);
    let waiting = tags_with(
        &dom,
        &[
            ("data-pid", &blocked_child.to_string()),
            ("data-syscall", "read"),
        ],
    );
    assert_eq!(waiting.len(), 1, "the blocked read in flight:\n{dom}");
    assert!(attr(waiting[0], "data-age").unwrap() > 100_000_000);
    blocked.send_line();
    assert_eq!(blocked.next_line()["released"], true);
    blocked.wait_success();

    // Then the known calls: "Errors by errno" shows the last 10 s.
    let lines = workload(&calls);
    let child = pid_of(&lines[0], "child_pid");
    daemon.final_stats(child);

    let url = format!("{}/?q={child}&n=1000", daemon.base);
    let (dom, stderr) = chromium(&["--dump-dom"], &url);
    assert_clean(&dom, &stderr);

    let bars = tags_with(&dom, &[("data-pid", &child.to_string())]);
    assert_eq!(bars.len(), 1, "one process bar for the child:\n{dom}");
    let expected = 2000 + 300 + 40 + 5 + if int80 { 777 } else { 0 };
    assert_eq!(attr(bars[0], "data-count"), Some(expected), "{}", bars[0]);

    if int80 {
        // The heat maps' own class: a finding in the insights panel may name the same syscall
        // (on a busy host 777 i386 calls can be a kernel-bound or CPU-starved share of the
        // workload's short life), and its list item carries `data-syscall` too.
        let heat = tags_with(
            &dom,
            &[("class", "heat"), ("data-syscall", "getppid [i386]")],
        );
        assert_eq!(heat.len(), 1, "a heatmap for i386 getppid:\n{dom}");
        assert_eq!(attr(heat[0], "data-count"), Some(777));
    }
    let getppid = tags_with(&dom, &[("class", "heat"), ("data-syscall", "getppid")]);
    assert!(attr(getppid[0], "data-count").unwrap() >= 2000);
    for (syscall, errno, n) in [("openat", "ENOENT", 300), ("close", "EBADF", 40)] {
        let e = tags_with(
            &dom,
            &[
                ("class", "item"),
                ("data-syscall", syscall),
                ("data-errno", errno),
            ],
        );
        assert_eq!(e.len(), 1, "an error bar for {syscall} {errno}:\n{dom}");
        assert!(attr(e[0], "data-count").unwrap() >= n);
    }

    let shot = std::env::temp_dir().join(format!("spt-dashboard-{}.png", std::process::id()));
    let (_, stderr) = chromium(
        &[&format!("--screenshot={}", shot.display())],
        &format!("{}/", daemon.base),
    );
    assert!(!stderr.contains("CONSOLE"), "{stderr}");
    let png = std::fs::read(&shot).expect("the screenshot");
    let _ = std::fs::remove_file(&shot);
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
}

/// The opening tag of the element with this id.
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let tags = tags_with(dom, &[("id", id)]);
    assert_eq!(tags.len(), 1, "one #{id}:\n{dom}");
    tags[0]
}

/// A filter no process name can match (comm is at most 15 bytes): /stats and /insights refuse
/// it with 400. The panels that use them say so; the system-wide ones, whose queries do not
/// take the filter, still plot.
#[test]
fn a_panel_whose_query_fails_says_so_and_the_others_keep_working() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let child = pid_of(
        &workload(&["calls", "getppid=2000", "enoent=300"])[0],
        "child_pid",
    );
    daemon.final_stats(child);
    let (dom, _stderr) = chromium(
        &["--dump-dom"],
        &format!("{}/?q=a-name-longer-than-comm&n=1000", daemon.base),
    );
    assert!(
        !dom.contains("data-errors"),
        "the page caught errors: {dom}"
    );
    for id in ["processes-panel", "inflight-panel", "insights-panel"] {
        let panel = by_id(&dom, id);
        assert!(
            panel.contains("data-error=\"HTTP 400: invalid query parameter 'comm'"),
            "{id}: {panel}"
        );
    }
    for id in ["errors-panel", "heatmap-panel"] {
        assert!(!by_id(&dom, id).contains("data-error"), "{id}:\n{dom}");
    }
    // The message is shown in the panel, not only kept in an attribute.
    assert!(
        dom.contains(">HTTP 400: invalid query parameter 'comm'"),
        "{dom}"
    );
    let e = tags_with(
        &dom,
        &[("data-syscall", "openat"), ("data-errno", "ENOENT")],
    );
    assert_eq!(e.len(), 1, "the errors panel still plots:\n{dom}");
    assert!(attr(e[0], "data-count").unwrap() >= 300);
    let heat = tags_with(&dom, &[("class", "heat"), ("data-syscall", "getppid")]);
    assert!(attr(heat[0], "data-count").unwrap() >= 2000, "{dom}");
}

/// Processes rank by time on a CPU in syscalls, not by time in them: a sleeper's long
/// nanosleeps (blocked) put it below a getrandom burner however long it sleeps.
#[test]
fn top_processes_rank_by_on_cpu_time_with_blocked_time_beside_it() {
    let daemon = Daemon::start(&["--interval", "100ms"]);
    let burner = pid_of(&workload(&["compute", "100", "1048576"])[0], "child_pid");
    let sleeper = pid_of(&workload(&["calls", "sleep=300"])[0], "child_pid");
    daemon.final_stats(burner);
    daemon.final_stats(sleeper);
    let (dom, stderr) = chromium(
        &["--dump-dom"],
        &format!("{}/?q=workload&n=1000", daemon.base),
    );
    assert_clean(&dom, &stderr);
    let bars = tags_with(&dom, &[("data-comm", "workload")]);
    let at = |pid: u32| {
        bars.iter()
            .position(|t| t.contains(&format!(" data-pid=\"{pid}\"")))
            .unwrap_or_else(|| panic!("no bar for {pid}:\n{dom}"))
    };
    assert!(at(burner) < at(sleeper), "{bars:#?}");
    let sleeping = bars[at(sleeper)];
    assert!(
        attr(sleeping, "data-blocked-ns").unwrap() > 300 * 1_500_000,
        "300 sleeps of 2 ms are blocked: {sleeping}"
    );
    assert!(
        attr(sleeping, "data-on-cpu-ns").unwrap()
            < attr(bars[at(burner)], "data-on-cpu-ns").unwrap()
    );
}

#[test]
fn page_and_assets_are_embedded_and_self_contained() {
    let daemon = Daemon::start(&[]);
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
    ] {
        let r = ureq::get(&format!("{}{path}", daemon.base))
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap();
        assert!(r.content_type().starts_with(kind), "{path}");
        let body = r.into_string().unwrap();
        // Nothing may load from another host (the SVG namespace URI is a name, not a fetch).
        for outside in [
            "https://",
            "src=\"http",
            "href=\"http",
            "url(",
            "@import",
            "fetch(\"http",
        ] {
            assert!(
                !body.contains(outside),
                "{path} refers to another host: {outside}"
            );
        }
        assert_eq!(
            body,
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../profiler/assets")
                    .join(if path == "/" {
                        "index.html"
                    } else {
                        &path[8..]
                    })
            )
            .unwrap(),
            "{path} is the embedded asset"
        );
    }
    let (status, body) = daemon.get("/history?top=0");
    assert_eq!(status, 400);
    assert_eq!(body["param"], "top");
    let (status, body) = daemon.get("/history?seconds=301");
    assert_eq!((status, body["param"].as_str()), (400, Some("seconds")));
    let (status, body) = daemon.get("/history");
    assert_eq!(status, 200);
    assert_eq!(body["schema_version"], 1);
    let (status, body) = daemon.get("/history?seconds=10&sort=errors&top=3");
    assert_eq!(status, 200, "{body}");
}
