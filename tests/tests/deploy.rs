//! The fleet files in deploy/ checked with real tools: promtool for the Prometheus config, the
//! rules and their unit tests (rules.test.yml), kubernetes-validate --strict for the Kubernetes
//! manifests, a YAML parser for what those tools cannot see (the Prometheus Operator's
//! resources, how the manifests fit together), a JSON parser for the Grafana dashboard; every
//! metric they query must have its row in docs/metrics.md's table of every metric, every
//! recording rule the dashboard uses must exist, and every one that exists must be used.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

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

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
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

/// Names in a PromQL expression: the metrics (without the histogram sample suffixes), and the
/// recording rules (`level:metric:operations`, the only names with colons).
fn names(expr: &str) -> (Vec<String>, Vec<String>) {
    let (mut metrics, mut rules) = (Vec::new(), Vec::new());
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for word in expr.split(|c: char| !is_name(c)) {
        if word.contains(':') && word.contains("syscall_profiler_") {
            rules.push(word.to_string());
        } else if let Some(i) = word.find("syscall_profiler_") {
            let name = &word[i..];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            metrics.push(name.to_string());
        }
    }
    (metrics, rules)
}

/// Every metric the expressions query has its row in docs/metrics.md's table of every metric.
fn assert_documented(exprs: &[String], source: &str) {
    let reference = read("docs/metrics.md");
    let mut n = 0;
    for expr in exprs {
        for name in names(expr).0 {
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

/// rules.yml's rules: (recording rule names, every expression).
fn rules() -> (BTreeSet<String>, Vec<String>) {
    let doc = &yaml("deploy/prometheus/rules.yml")[0];
    let (mut recorded, mut exprs) = (BTreeSet::new(), Vec::new());
    for group in doc["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            if let Some(name) = rule["record"].as_str() {
                recorded.insert(name.to_string());
            }
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    (recorded, exprs)
}

#[test]
fn prometheus_config_rules_and_alert_tests_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "rules.yml"]);
    promtool(&["test", "rules", "rules.test.yml"]);
    let (_, exprs) = rules();
    assert_documented(&exprs, "rules.yml");
    // The four alerts exist, and each has unit tests.
    let tests = read("deploy/prometheus/rules.test.yml");
    for alert in [
        "SyscallProfilerTargetDown",
        "SyscallProfilerAbsent",
        "SyscallProfilerDrainsStalled",
        "SyscallProfilerKernelMapFull",
        "SyscallProfilerGroupCapReached",
    ] {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "rules.test.yml never expects {alert} to fire"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")),
            "rules.test.yml never expects {alert} to stay quiet"
        );
    }
}

#[test]
fn kubernetes_scrape_job_parses_and_keeps_only_the_daemonset() {
    let docs = yaml("deploy/prometheus/prometheus-kubernetes.yml");
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
    // The pods serve TLS with basic auth, so the job must too.
    assert_eq!(job["scheme"].as_str(), Some("https"));
    assert!(job["basic_auth"]["password_file"].as_str().is_some());
    assert!(job["tls_config"]["ca_file"].as_str().is_some());
}

/// Every document of every file in deploy/kubernetes, with its file name.
fn manifests() -> Vec<(String, Yaml)> {
    let mut all = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        for doc in yaml(&format!("deploy/kubernetes/{name}")) {
            all.push((name.clone(), doc));
        }
    }
    all
}

/// The Prometheus Operator's kinds: CRDs, which kubernetes-validate has no schema for.
const OPERATOR_KINDS: [&str; 2] = ["ServiceMonitor", "PodMonitor"];

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strict() {
    let files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect(
            "kubernetes-validate is not installed: `pip install kubernetes-validate` \
             (the test runner installs it)",
        );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict:\n{said}"
    );
    // Passing is not enough: a kind or apiVersion it has no schema for is only a warning. Every
    // document must have been validated, except the operator's.
    let docs = manifests();
    let core = docs
        .iter()
        .filter(|(_, d)| !OPERATOR_KINDS.contains(&d["kind"].as_str().unwrap()))
        .count();
    let passed = said
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, core, "every core resource validated:\n{said}");
    for line in said.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            OPERATOR_KINDS.iter().any(|k| line.contains(&format!(
                "kind {k} with api version monitoring.coreos.com/v1"
            ))),
            "unexpected warning: {line}"
        );
    }
}

fn find<'a>(docs: &'a [(String, Yaml)], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn the_daemonset_is_least_privilege_and_its_parts_fit_together() {
    let docs = manifests();
    let ns = find(&docs, "Namespace", "syscall-profiler");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("privileged")
    );
    for (file, d) in &docs {
        if d["kind"].as_str() != Some("Namespace") {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some("syscall-profiler"),
                "{file}: {:?}",
                d["metadata"]["name"]
            );
        }
    }

    let ds = find(&docs, "DaemonSet", "syscall-profiler");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod["hostNetwork"].is_badvalue(), "no host network");
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"].as_i64(),
        Some(0),
        "two daemons must not share one node's pinned maps"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&sc["capabilities"]["add"]), ["BPF", "PERFMON"]);
    assert!(sc["seccompProfile"]["type"].as_str().is_some());
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe}");
        assert_eq!(get["scheme"].as_str(), Some("HTTPS"), "{probe}");
    }

    // Arguments name paths inside the mounts that carry them.
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve");
    let arg = |flag: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{flag}=")))
            .unwrap_or_else(|| panic!("no --{flag}= in {args:?}"))
    };
    let mounts = c["volumeMounts"].as_vec().unwrap();
    let volumes = pod["volumes"].as_vec().unwrap();
    let volume_of = |path: &str| -> &Yaml {
        let m = mounts
            .iter()
            .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("{path} is in no mount"));
        volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {:?}", m["name"]))
    };
    assert_eq!(
        volume_of("/sys/fs/cgroup")["hostPath"]["path"].as_str(),
        Some("/sys/fs/cgroup")
    );
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"].as_str() == Some("/sys/fs/cgroup")
            && m["readOnly"].as_bool() == Some(true)));
    assert_eq!(
        volume_of(arg("pin-path"))["hostPath"]["path"].as_str(),
        Some("/sys/fs/bpf"),
        "pin_path on the host's bpffs"
    );
    let web_config = arg("web-config");
    let web_secret = volume_of(web_config)["secret"]["secretName"]
        .as_str()
        .unwrap();
    let key = web_config.rsplit('/').next().unwrap();
    let web_toml = find(&docs, "Secret", web_secret)["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {web_secret} has no {key}"));
    for file in ["cert_file", "key_file"] {
        let path = web_toml
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{file} = \"")))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {file} in {key}"));
        assert!(volume_of(path)["secret"]["secretName"].as_str().is_some());
    }
    assert!(web_toml.contains("[basic_auth_users]"), "{key}: auth on");
    let tls_secret = volume_of("/etc/syscall-profiler/tls/tls.crt")["secret"]["secretName"]
        .as_str()
        .unwrap();

    // The Service, the NetworkPolicy and both monitors select the pods and name their port.
    let label = "app.kubernetes.io/name";
    let pod_label = &ds["spec"]["template"]["metadata"]["labels"][label];
    assert_eq!(pod_label.as_str(), Some("syscall-profiler"));
    assert_eq!(&ds["spec"]["selector"]["matchLabels"][label], pod_label);
    assert_eq!(c["ports"][0]["name"].as_str(), Some("metrics"));
    let svc = find(&docs, "Service", "syscall-profiler");
    assert_eq!(&svc["spec"]["selector"][label], pod_label);
    assert_eq!(
        svc["spec"]["clusterIP"].as_str(),
        Some("None"),
        "one endpoint per node"
    );
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"].as_str(),
        Some("metrics")
    );
    let np = find(&docs, "NetworkPolicy", "syscall-profiler");
    assert_eq!(&np["spec"]["podSelector"]["matchLabels"][label], pod_label);
    assert_eq!(strings(&np["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    assert_eq!(np["spec"]["ingress"].as_vec().unwrap().len(), 1);
    assert_eq!(
        np["spec"]["ingress"][0]["ports"][0]["port"].as_str(),
        Some("metrics")
    );
    for (kind, endpoints) in [
        ("ServiceMonitor", "endpoints"),
        ("PodMonitor", "podMetricsEndpoints"),
    ] {
        let m = find(&docs, kind, "syscall-profiler");
        assert_eq!(
            &m["spec"]["selector"]["matchLabels"][label], pod_label,
            "{kind}"
        );
        let e = &m["spec"][endpoints][0];
        assert_eq!(e["port"].as_str(), Some("metrics"), "{kind}");
        assert_eq!(e["scheme"].as_str(), Some("https"), "{kind}");
        assert_eq!(
            e["tlsConfig"]["ca"]["secret"]["name"].as_str(),
            Some(tls_secret)
        );
        for part in ["username", "password"] {
            let r = &e["basicAuth"][part];
            let secret = find(&docs, "Secret", r["name"].as_str().unwrap());
            assert!(
                secret["stringData"][r["key"].as_str().unwrap()]
                    .as_str()
                    .is_some(),
                "{kind}: basicAuth {part}"
            );
        }
    }
}

/// The dashboard's panels that show the profiler's own BPF run time.
fn needs_bpf_stats(p: &Value) -> bool {
    p["targets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["expr"].as_str().unwrap().contains("bpf_program"))
}

#[test]
fn grafana_dashboard_uses_its_variables_and_the_recording_rules() {
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/syscall-profiler.json")).expect("valid JSON");
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert_documented(&exprs, "the Grafana dashboard");

    // Every variable is used by a panel, and comm and cgroup are there to choose.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for required in ["comm", "cgroup"] {
        assert!(vars.contains(&required), "no {required} variable");
    }
    let panels_text = serde_json::to_string(panels).unwrap();
    for v in &vars {
        assert!(
            panels_text.contains(&format!("${v}")) || panels_text.contains(&format!("${{{v}}}")),
            "variable {v} is used by no panel"
        );
    }
    for v in ["comm", "cgroup"] {
        let filtered = exprs
            .iter()
            .filter(|e| e.contains(&format!("{v}=~\"${v}\"")))
            .count();
        assert!(filtered >= 4, "only {filtered} queries filter by ${v}");
    }

    // Every recording rule the dashboard queries exists, and every one that exists is used.
    let (recorded, _) = rules();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| names(e).1).collect();
    for r in &used {
        assert!(
            recorded.contains(r),
            "the dashboard queries {r}, which rules.yml does not record"
        );
    }
    for r in &recorded {
        assert!(
            used.contains(r),
            "rules.yml records {r}, which the dashboard never queries"
        );
    }

    // Panels that need --bpf-stats say so, instead of showing nothing or NaN.
    let bpf: Vec<&Value> = panels.iter().filter(|p| needs_bpf_stats(p)).collect();
    assert!(!bpf.is_empty());
    for p in bpf {
        assert!(
            p["description"].as_str().unwrap().contains("--bpf-stats"),
            "{}: the description names --bpf-stats",
            p["title"]
        );
        assert_eq!(
            p["fieldConfig"]["defaults"]["noValue"].as_str(),
            Some("no data: needs --bpf-stats"),
            "{}",
            p["title"]
        );
    }

    let heatmap = panels.iter().find(|p| p["type"] == "heatmap").unwrap();
    assert_eq!(heatmap["repeat"], "syscall", "one heatmap per syscall");
    assert_eq!(heatmap["targets"][0]["format"], "heatmap");
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
}
