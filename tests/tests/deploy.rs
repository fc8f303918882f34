//! The fleet files in deploy/ checked with real tools: promtool for the Prometheus config and
//! rules, a YAML parser for the Kubernetes manifests, a JSON parser for the Grafana dashboard;
//! and every metric they query must have its row in docs/metrics.md's table of every metric.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .expect("promtool is not installed: `apt-get install -y prometheus` (.ci/run does it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names in a PromQL expression, without the histogram sample suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("syscall_profiler_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(name.to_string());
        rest = &tail[end..];
    }
    names
}

fn assert_documented(exprs: &[String], source: &str) {
    let reference = read("docs/metrics.md");
    let mut n = 0;
    for expr in exprs {
        for name in metric_names(expr) {
            let row = format!("| `{name}` |");
            assert!(
                reference.lines().any(|l| l.starts_with(&row)),
                "{source} queries {name}, which docs/metrics.md's table of every metric lacks"
            );
            n += 1;
        }
    }
    assert!(n > 0, "{source} queries no syscall_profiler metric");
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "rules.yml"]);
    let rules = &YamlLoader::load_from_str(&read("deploy/prometheus/rules.yml")).unwrap()[0];
    let exprs: Vec<String> = rules["groups"][0]["rules"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    assert_documented(&exprs, "rules.yml");
}

#[test]
fn kubernetes_scrape_job_parses_and_keeps_only_the_daemonset() {
    let docs = YamlLoader::load_from_str(&read("deploy/prometheus/prometheus-kubernetes.yml"))
        .expect("valid YAML");
    let job = &docs[0]["scrape_configs"][0];
    assert_eq!(
        job["kubernetes_sd_configs"][0]["role"].as_str(),
        Some("pod")
    );
    let keep: Vec<&str> = job["relabel_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str() == Some("keep"))
        .map(|r| r["regex"].as_str().unwrap())
        .collect();
    assert_eq!(keep, ["syscall-profiler", "metrics"]);
}

#[test]
fn daemonset_asks_for_bpf_and_perfmon_and_no_more() {
    let docs =
        YamlLoader::load_from_str(&read("deploy/kubernetes/daemonset.yaml")).expect("valid YAML");
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod["hostNetwork"].is_badvalue(), "no host network");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    let caps = |k: &str| -> Vec<&str> {
        sc["capabilities"][k]
            .as_vec()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    };
    assert_eq!(caps("drop"), ["ALL"]);
    assert_eq!(caps("add"), ["BPF", "PERFMON"]);
    let mounts = c["volumeMounts"].as_vec().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0]["mountPath"].as_str(), Some("/sys/fs/cgroup"));
    assert_eq!(mounts[0]["readOnly"].as_bool(), Some(true));
    // The selector matches the pods, and the scrape job's label and port name match them.
    let label = "app.kubernetes.io/name";
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"][label],
        ds["spec"]["template"]["metadata"]["labels"][label]
    );
    assert_eq!(
        ds["spec"]["template"]["metadata"]["labels"][label].as_str(),
        Some("syscall-profiler")
    );
    assert_eq!(c["ports"][0]["name"].as_str(), Some("metrics"));
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args[0], "serve");
}

#[test]
fn grafana_dashboard_parses_and_queries_documented_metrics() {
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/syscall-profiler.json")).expect("valid JSON");
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert_documented(&exprs, "the Grafana dashboard");
    let kinds: Vec<&str> = panels.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"heatmap"));
    let heatmap = panels.iter().find(|p| p["type"] == "heatmap").unwrap();
    assert_eq!(heatmap["repeat"], "syscall", "one heatmap per syscall");
    assert_eq!(heatmap["targets"][0]["format"], "heatmap");
    let ids: std::collections::BTreeSet<u64> =
        panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}
