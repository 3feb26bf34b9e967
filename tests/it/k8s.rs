//! The Kubernetes manifests in `k8s/`, held to the gateway's own rules: the
//! shipped ConfigMaps pass `portico check`, the Deployment's grace period,
//! mounts, probes and ports agree with `portico.yaml`, the operator port is
//! never on a public Service, and alerts and the dashboard only use metric
//! names the gateway exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;
use portico::config::duration::parse_duration;
use portico::observability::metrics as names;
use sha2::{Digest, Sha256};

use crate::support::binary::run;

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(k8s_dir().join(rel)).unwrap_or_else(|e| panic!("k8s/{rel}: {e}"))
}

/// The YAML documents of a manifest file (separated by `---` lines), parsed.
/// Documents holding only comments are skipped.
fn documents(rel: &str) -> Vec<Node> {
    let text = read(rel);
    let mut chunks = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    chunks
        .into_iter()
        .filter(|c| {
            c.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|c| marked_yaml::parse_yaml(0, &c).unwrap_or_else(|e| panic!("k8s/{rel}: {e}")))
        .collect()
}

/// The single document of a manifest file.
fn document(rel: &str) -> Node {
    let mut docs = documents(rel);
    assert_eq!(docs.len(), 1, "k8s/{rel} holds one document");
    docs.pop().unwrap()
}

/// The value at `path` (mapping keys), or `None` if any step is missing.
fn lookup<'a>(node: &'a Node, path: &[&str]) -> Option<&'a Node> {
    path.iter()
        .try_fold(node, |n, key| n.as_mapping()?.get_node(key))
}

/// The value at `path`, which must exist.
fn at<'a>(node: &'a Node, path: &[&str]) -> &'a Node {
    lookup(node, path).unwrap_or_else(|| panic!("missing {}", path.join(".")))
}

/// The scalar at `path`, which must exist.
fn text<'a>(node: &'a Node, path: &[&str]) -> &'a str {
    at(node, path)
        .as_scalar()
        .unwrap_or_else(|| panic!("{} is not a scalar", path.join(".")))
        .as_str()
}

fn list<'a>(node: &'a Node, path: &[&str]) -> &'a [Node] {
    at(node, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

/// The entry of a list of mappings whose `key` is `value`.
fn entry<'a>(items: &'a [Node], key: &str, value: &str) -> &'a Node {
    items
        .iter()
        .find(|n| {
            lookup(n, &[key])
                .and_then(Node::as_scalar)
                .map(|s| s.as_str())
                == Some(value)
        })
        .unwrap_or_else(|| panic!("no entry with {key}: {value}"))
}

/// A file held in a ConfigMap manifest.
fn configmap_file(rel: &str, key: &str) -> String {
    let doc = document(rel);
    assert_eq!(text(&doc, &["kind"]), "ConfigMap", "k8s/{rel}");
    text(&doc, &["data", key]).to_owned()
}

fn gateway_config() -> Node {
    let text = configmap_file("configmap-config.yaml", "portico.yaml");
    marked_yaml::parse_yaml(0, text).expect("portico.yaml in the ConfigMap is YAML")
}

fn duration(config: &Node, path: &[&str]) -> Duration {
    let value = text(config, path);
    parse_duration(value).unwrap_or_else(|| panic!("{}: bad duration {value:?}", path.join(".")))
}

/// The port of a `host:port` listen address.
fn listen_port(config: &Node, path: &[&str]) -> u16 {
    let addr = text(config, path);
    let (_, port) = addr.rsplit_once(':').expect("host:port");
    port.parse().expect("numeric port")
}

fn int(node: &Node, path: &[&str]) -> u64 {
    text(node, path)
        .parse()
        .unwrap_or_else(|_| panic!("{} is not an integer", path.join(".")))
}

fn pod_spec(deployment: &Node) -> &Node {
    at(deployment, &["spec", "template", "spec"])
}

fn portico_container(deployment: &Node) -> &Node {
    entry(
        list(pod_spec(deployment), &["containers"]),
        "name",
        "portico",
    )
}

/// A probe's or Service's port, by number or by the container port's name.
fn container_port(container: &Node, port: &str) -> u16 {
    if let Ok(n) = port.parse() {
        return n;
    }
    let p = entry(list(container, &["ports"]), "name", port);
    int(p, &["containerPort"]) as u16
}

/// The mount of the volume that holds ConfigMap `configmap`.
fn configmap_mount<'a>(deployment: &'a Node, configmap: &str) -> (&'a Node, &'a Node) {
    let volume = list(pod_spec(deployment), &["volumes"])
        .iter()
        .find(|v| {
            lookup(v, &["configMap", "name"])
                .and_then(Node::as_scalar)
                .map(|s| s.as_str())
                == Some(configmap)
        })
        .unwrap_or_else(|| panic!("no volume for ConfigMap {configmap}"));
    let name = text(volume, &["name"]);
    let mount = entry(
        list(portico_container(deployment), &["volumeMounts"]),
        "name",
        name,
    );
    (volume, mount)
}

#[test]
fn shipped_configmaps_pass_portico_check() {
    let config = configmap_file("configmap-config.yaml", "portico.yaml");
    let routes = configmap_file("configmap-routes.yaml", "routes.yaml");
    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.yaml");
    std::fs::write(&routes_path, routes).unwrap();

    let mut rewritten = 0;
    let config: String = config
        .lines()
        .map(|line| {
            if line.starts_with("routes_file:") {
                rewritten += 1;
                format!("routes_file: {}\n", routes_path.display())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(rewritten, 1, "one top-level routes_file line:\n{config}");
    let config_path = dir.path().join("portico.yaml");
    std::fs::write(&config_path, config).unwrap();
    let c = config_path.to_str().unwrap();

    let out = run(&["check", "--config", c]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 route(s)"), "{stdout}");

    let out = run(&["routes", "--config", c, "--match", "/billing/reports/2024"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("route:   /billing/reports ("), "{stdout}");
}

#[test]
fn grace_period_outlasts_the_drain() {
    let config = gateway_config();
    let drain = duration(&config, &["shutdown", "drain_delay"])
        + duration(&config, &["shutdown", "timeout"]);
    let deployment = document("deployment.yaml");
    let grace = Duration::from_secs(int(
        pod_spec(&deployment),
        &["terminationGracePeriodSeconds"],
    ));
    assert!(
        grace > drain,
        "terminationGracePeriodSeconds ({grace:?}) must exceed shutdown.drain_delay + shutdown.timeout ({drain:?})"
    );
}

#[test]
fn deployment_mounts_probes_and_ports_match_the_config() {
    let config = gateway_config();
    let deployment = document("deployment.yaml");
    let container = portico_container(&deployment);

    // The route file: a directory mount (a subPath mount never sees updates),
    // the whole ConfigMap, at the directory `routes_file` points into.
    let (volume, mount) = configmap_mount(&deployment, "portico-routes");
    for key in ["subPath", "subPathExpr"] {
        assert!(
            lookup(mount, &[key]).is_none(),
            "routes volume mounted with {key}"
        );
    }
    assert!(
        lookup(volume, &["configMap", "items"]).is_none(),
        "routes ConfigMap keys are not remapped"
    );
    assert_eq!(
        format!("{}/routes.yaml", text(mount, &["mountPath"])),
        text(&config, &["routes_file"]),
        "routes_file must be routes.yaml in the routes mount"
    );

    // portico.yaml: where `--config` says.
    let (_, mount) = configmap_mount(&deployment, "portico-config");
    let args: Vec<&str> = list(container, &["args"])
        .iter()
        .map(|a| a.as_scalar().unwrap().as_str())
        .collect();
    assert_eq!(args[0], "serve");
    let flag = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    assert_eq!(
        args[flag + 1],
        format!("{}/portico.yaml", text(mount, &["mountPath"]))
    );

    // Ports and probes: on the listeners portico.yaml configures.
    let operator = listen_port(&config, &["operator", "listen"]);
    assert_eq!(container_port(container, "operator"), operator);
    assert_eq!(
        container_port(container, "http"),
        listen_port(&config, &["listen", "http"])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            text(container, &[probe, "httpGet", "path"]),
            path,
            "{probe}"
        );
        let port = text(container, &[probe, "httpGet", "port"]);
        assert_eq!(container_port(container, port), operator, "{probe} port");
    }
    assert!(int(container, &["readinessProbe", "periodSeconds"]) <= 5);

    // Changing portico.yaml needs a rollout: the annotation tracks its file.
    let expected = hex::encode(Sha256::digest(read("configmap-config.yaml").as_bytes()));
    let annotation = text(
        &deployment,
        &[
            "spec",
            "template",
            "metadata",
            "annotations",
            "checksum/config",
        ],
    );
    assert_eq!(
        annotation, expected,
        "k8s/configmap-config.yaml changed: set checksum/config in k8s/deployment.yaml to {expected}"
    );
}

#[test]
fn operator_port_is_never_on_a_public_service() {
    let deployment = document("deployment.yaml");
    let container = portico_container(&deployment);
    let operator = container_port(container, "operator");
    let services = documents("service.yaml");
    let mut scraped = false;
    for svc in &services {
        assert_eq!(text(svc, &["kind"]), "Service");
        let name = text(svc, &["metadata", "name"]);
        let kind = lookup(svc, &["spec", "type"])
            .and_then(Node::as_scalar)
            .map_or("ClusterIP", |s| s.as_str());
        for port in list(svc, &["spec", "ports"]) {
            let target = lookup(port, &["targetPort"]).unwrap_or_else(|| at(port, &["port"]));
            let target = container_port(container, target.as_scalar().unwrap().as_str());
            if target == operator {
                assert_eq!(
                    kind, "ClusterIP",
                    "Service {name} exposes the operator port"
                );
                scraped = true;
            }
        }
    }
    assert!(
        scraped,
        "a ClusterIP Service for scraping the operator port"
    );
}

#[test]
fn every_manifest_parses_and_kustomization_lists_them_all() {
    let kustomization = document("kustomization.yaml");
    let listed: BTreeSet<String> = list(&kustomization, &["resources"])
        .iter()
        .map(|r| r.as_scalar().unwrap().as_str().to_owned())
        .collect();
    let mut found = BTreeSet::new();
    for sub in ["", "monitoring/"] {
        for e in std::fs::read_dir(k8s_dir().join(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                found.insert(format!("{sub}{name}"));
            }
        }
    }
    assert_eq!(
        listed, found,
        "kustomization.yaml resources vs files in k8s/"
    );
    for rel in &found {
        for doc in documents(rel) {
            let kind = text(&doc, &["kind"]);
            assert!(text(&doc, &["apiVersion"]).contains('v'), "{rel}: {kind}");
            if kind != "Namespace" {
                assert_eq!(
                    text(&doc, &["metadata", "namespace"]),
                    "portico",
                    "{rel}: {kind}"
                );
            }
        }
    }
}

/// Every `portico_*` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("portico_") {
        let preceded = rest[..i].chars().next_back().is_some_and(is_name);
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !preceded {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The exported family a series name belongs to, if any.
fn family(token: &str) -> Option<&'static str> {
    const EXPORTED: &[&str] = &[
        names::REQUESTS_TOTAL,
        names::REQUEST_DURATION_SECONDS,
        names::UPSTREAM_ERRORS_TOTAL,
        names::INFLIGHT_REQUESTS,
        names::CONNECTIONS_OPEN,
        names::CONFIG_RELOADS_TOTAL,
        names::CONFIG_GENERATION,
        names::TLS_HANDSHAKE_ERRORS_TOTAL,
        names::BUILD_INFO,
        names::LOG_LINES_DROPPED_TOTAL,
        names::CONNECTIONS_PARKED,
        names::WORKER_CONNECTIONS_TOTAL,
        names::UPSTREAM_ENDPOINTS,
        names::UPSTREAM_RETRIES_TOTAL,
        names::UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL,
        names::UPSTREAM_EJECTIONS_TOTAL,
        names::CIRCUIT_OPEN_TOTAL,
        names::CONFIG_INFO,
        names::TLS_CERTIFICATE_EXPIRY,
        names::TRACE_SPANS_EXPORTED_TOTAL,
        names::TRACE_SPANS_DROPPED_TOTAL,
    ];
    const HISTOGRAMS: &[&str] = &[names::REQUEST_DURATION_SECONDS];
    if let Some(name) = EXPORTED.iter().find(|n| **n == token) {
        return Some(name);
    }
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| token.strip_suffix(s))?;
    HISTOGRAMS.iter().find(|n| **n == base).copied()
}

/// Parentheses, brackets and braces in a PromQL expression pair up.
fn assert_balanced(expr: &str) {
    let mut stack = Vec::new();
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = stack.pop();
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                assert_eq!(open, Some(want), "unbalanced {c} in {expr}");
            }
            _ => {}
        }
    }
    assert!(stack.is_empty() && !in_string, "unclosed in {expr}");
}

fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn alerts_and_dashboard_use_only_exported_metric_names() {
    let rules_text = read("monitoring/prometheusrule.yaml");
    let dashboard_text = read("monitoring/dashboard.json");

    // Structure: every rule is a complete alert with a sane expression.
    let rules = document("monitoring/prometheusrule.yaml");
    assert_eq!(text(&rules, &["kind"]), "PrometheusRule");
    let mut alerts = 0;
    for group in list(&rules, &["spec", "groups"]) {
        for rule in list(group, &["rules"]) {
            let alert = text(rule, &["alert"]);
            text(rule, &["labels", "severity"]);
            text(rule, &["annotations", "summary"]);
            let expr = text(rule, &["expr"]);
            assert_balanced(expr);
            assert!(expr.contains("portico_"), "{alert}: {expr}");
            alerts += 1;
        }
    }
    assert!(alerts >= 7, "{alerts} alerts");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard.json is JSON");
    let mut exprs = Vec::new();
    json_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{} panel queries", exprs.len());
    exprs.iter().for_each(|e| assert_balanced(e));

    // Names: only exported families, and the ones each file is meant to cover.
    for (file, body, must_use) in [
        (
            "prometheusrule.yaml",
            &rules_text,
            &[
                names::REQUESTS_TOTAL,
                names::REQUEST_DURATION_SECONDS,
                names::UPSTREAM_ERRORS_TOTAL,
                names::INFLIGHT_REQUESTS,
                names::CONFIG_RELOADS_TOTAL,
                // Drift is the route file's hash (PorticoConfigDrift), not
                // the generation, which differs after every restart.
                names::TLS_HANDSHAKE_ERRORS_TOTAL,
                names::UPSTREAM_ENDPOINTS,
                names::UPSTREAM_RETRY_BUDGET_EXHAUSTED_TOTAL,
                names::CONFIG_INFO,
                names::TLS_CERTIFICATE_EXPIRY,
                names::TRACE_SPANS_DROPPED_TOTAL,
            ][..],
        ),
        (
            "dashboard.json",
            &dashboard_text,
            &[
                names::REQUESTS_TOTAL,
                names::REQUEST_DURATION_SECONDS,
                names::UPSTREAM_ERRORS_TOTAL,
                names::INFLIGHT_REQUESTS,
                names::CONNECTIONS_OPEN,
                names::CONFIG_RELOADS_TOTAL,
                names::CONFIG_GENERATION,
                names::UPSTREAM_ENDPOINTS,
                names::UPSTREAM_RETRIES_TOTAL,
                names::UPSTREAM_EJECTIONS_TOTAL,
            ],
        ),
    ] {
        let mut used = BTreeSet::new();
        for token in metric_tokens(body) {
            let name = family(&token)
                .unwrap_or_else(|| panic!("{file}: {token} is not a metric Portico exports"));
            used.insert(name);
        }
        for name in must_use {
            assert!(used.contains(name), "{file} does not use {name}");
        }
    }
}

#[test]
fn metric_tokens_are_found_and_stripped() {
    let tokens = metric_tokens(
        "rate(portico_request_duration_seconds_bucket{x=\"a\"}[5m]) / xportico_no portico_build_info",
    );
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_eq!(
        tokens,
        [
            "portico_build_info",
            "portico_request_duration_seconds_bucket"
        ]
    );
    assert_eq!(
        family("portico_request_duration_seconds_count"),
        Some(names::REQUEST_DURATION_SECONDS)
    );
    assert_eq!(family("portico_requests_total_count"), None);
    assert_eq!(family("portico_requests"), None);
}

#[test]
fn the_overlays_say_what_they_promise() {
    // prod: the base, with the image pinned by digest under the name the
    // base uses.
    let prod = document("overlays/prod/kustomization.yaml");
    let resources = list(&prod, &["resources"]);
    assert_eq!(resources[0].as_scalar().unwrap().as_str(), "../..");
    let images = list(&prod, &["images"]);
    assert_eq!(images.len(), 1);
    let deployment = document("deployment.yaml");
    let container = &list(&deployment, &["spec", "template", "spec", "containers"])[0];
    let base_image = text(container, &["image"]);
    assert_eq!(
        base_image.split(':').next().unwrap(),
        text(&images[0], &["name"]),
        "the images: entry names the base's image"
    );
    let digest = text(&images[0], &["digest"]);
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(text(container, &["imagePullPolicy"]), "Always");

    // dev: one replica (and an HPA that agrees), debug logging, HTTPS
    // with the certificate's Secret mounted where portico.yaml looks.
    let dev = document("overlays/dev/kustomization.yaml");
    let replicas = &list(&dev, &["replicas"])[0];
    assert_eq!(text(replicas, &["count"]), "1");
    let patches = list(&dev, &["patches"]);
    let patch_text: String = patches
        .iter()
        .map(|p| text(p, &["patch"]).to_owned())
        .collect();
    assert!(
        patch_text.contains("/spec/minReplicas\n  value: 1"),
        "{patch_text}"
    );
    let config_text = read("overlays/dev/portico.yaml");
    let config = portico::config::parse_gateway_config(Path::new("portico.yaml"), &config_text)
        .unwrap_or_else(|e| panic!("overlays/dev/portico.yaml: {e}"));
    assert_eq!(config.log_level.as_deref(), Some("debug"));
    assert!(config.listen.https.is_some());
    let cert = &config.tls.as_ref().unwrap().certificates[0];
    assert!(cert.cert.starts_with("/etc/portico/tls"), "{cert:?}");
    assert!(
        patch_text.contains("mountPath: /etc/portico/tls"),
        "the Secret is mounted where portico.yaml reads it"
    );
    let certificate = documents("overlays/dev/certificate.yaml")
        .into_iter()
        .find(|d| text(d, &["kind"]) == "Certificate")
        .expect("a cert-manager Certificate");
    assert_eq!(
        text(&certificate, &["spec", "secretName"]),
        "portico-dev-tls"
    );
    assert!(patch_text.contains("secretName: portico-dev-tls"));
    let generator = &list(&dev, &["configMapGenerator"])[0];
    assert_eq!(text(generator, &["name"]), "portico-config");
    assert_eq!(text(generator, &["behavior"]), "replace");
}
