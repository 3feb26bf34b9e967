use std::path::Path;

use super::emit::{comment, quote};
use super::*;

fn ingress_yaml(name: &str, annotations: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n    x: y\n{annotations}spec:\n  rules:\n{rules}"
    )
}

fn rule(host: &str, path: &str, path_type: &str, service: &str) -> String {
    format!(
        "    - host: {host}\n      http:\n        paths:\n          - path: {path}\n            pathType: {path_type}\n            backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
    )
}

#[test]
fn streams_split_on_document_markers_and_keep_positions() {
    let text = "a: 1\n---\nb: 2\n--- # second\n\n...\n---\nc: |\n  x\n  y\n";
    let docs = crate::config::yaml::parse_stream(Path::new("f"), text).unwrap();
    assert_eq!(docs.len(), 3, "an empty document is left out");
    assert_eq!(docs[1].field("b").unwrap().pos.line, 3);
    assert_eq!(docs[2].field("c").unwrap().as_str(), Some("x\ny\n"));
    // An error in the second document points at its line in the file.
    let err = crate::config::yaml::parse_stream(Path::new("f"), "a: 1\n---\nb: [\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("f:3:") || err.starts_with("f:4:"), "{err}");
}

#[test]
fn quoting_keeps_every_value_one_scalar() {
    assert_eq!(quote("/a"), "\"/a\"");
    assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(quote("x\n- prefix: /"), "\"x\\u000A- prefix: /\"");
    assert_eq!(quote("\u{2028}é"), "\"\\u2028\\u00E9\"");
    assert_eq!(quote("🦀"), "\"\\U0001F980\"");
    assert_eq!(comment("a\nb\r\u{85}c"), "a\\u{a}b\\u{d}\\u{85}c");
}

#[test]
fn default_backends_fill_each_host_of_their_ingress_or_every_host() {
    let text = format!(
        "{}  defaultBackend: {{service: {{name: fallback, port: {{number: 8080}}}}}}\n---\n{}  defaultBackend: {{service: {{name: global, port: {{number: 80}}}}}}\n",
        ingress_yaml("a", "", &rule("a.example.com", "/api", "Prefix", "api")),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: g, namespace: infra}\nspec:\n",
    );
    let out = import_text("t", &text, "", false).unwrap();
    let names: Vec<(String, String)> = out
        .routes
        .iter()
        .map(|r| match &r.target {
            Target::Backend { url, .. } => (r.name(), url.clone()),
            Target::Redirect(_) => (r.name(), String::new()),
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "/".to_string(),
                "http://global.infra.svc.cluster.local:80".to_string()
            ),
            (
                "a.example.com/".into(),
                "http://fallback.ns.svc.cluster.local:8080".into()
            ),
            (
                "a.example.com/api".into(),
                "http://api.ns.svc.cluster.local:80".into()
            ),
        ]
    );
}

#[test]
fn an_explicit_root_path_wins_over_a_default_backend() {
    let text = format!(
        "{}  defaultBackend: {{service: {{name: fallback, port: {{number: 80}}}}}}\n",
        ingress_yaml("a", "", &rule("a.example.com", "/", "Prefix", "web")),
    );
    let out = import_text("t", &text, "", false).unwrap();
    assert_eq!(out.routes.len(), 1);
    assert!(matches!(&out.routes[0].target, Target::Backend { url, .. } if url.contains("web.ns")));
    assert!(out.findings.iter().any(|f| f.message.contains("conflicts")));
}

#[test]
fn named_ports_need_their_service() {
    let ing = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a, namespace: ns}\nspec:\n  rules:\n    - http:\n        paths:\n          - path: /a\n            pathType: Prefix\n            backend: {service: {name: svc, port: {name: web}}}\n";
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: ns}\nspec:\n  ports:\n    - {name: web, port: 8081}\n";
    let with = import_text("t", ing, svc, false).unwrap();
    assert!(
        with.text
            .contains("backend: \"http://svc.ns.svc.cluster.local:8081\"")
    );
    let without = import_text("t", ing, "", false).unwrap();
    assert!(without.routes.is_empty());
    assert!(without.text.contains("routes: []"));
    assert!(
        without
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Skipped && f.message.contains("--services"))
    );
    let wrong_port = svc.replace("name: web", "name: http");
    let wrong = import_text("t", ing, &wrong_port, false).unwrap();
    assert!(
        wrong
            .findings
            .iter()
            .any(|f| f.message.contains("has no port named \"web\""))
    );
}

#[test]
fn nginx_wildcards_cover_any_depth_portico_one_label() {
    let text = ingress_yaml("w", "", &rule("\"*.foo.com\"", "/", "Prefix", "w"));
    let out = import_text("t", &text, "", true).unwrap();
    assert_eq!(out.differences.len(), 1);
    let d = &out.differences[0];
    assert_eq!(d.host.as_deref(), Some("a.b.foo.com"));
    assert_eq!(d.portico, "404");
    assert!(d.nginx.starts_with("*.foo.com/"));
    assert!(
        out.text
            .contains("host: \"a.b.foo.com\"\n    expect: {route: none, status: 404}")
    );
}

#[test]
fn rewrite_on_one_ingress_makes_the_host_regex_for_all() {
    let text = format!(
        "{}---\n{}",
        ingress_yaml(
            "rx",
            "    nginx.ingress.kubernetes.io/rewrite-target: /$2\n",
            &rule(
                "h.example.com",
                "\"/api(/|$)(.*)\"",
                "ImplementationSpecific",
                "api"
            )
        ),
        ingress_yaml(
            "plain",
            "",
            &rule("h.example.com", "/docs", "Prefix", "docs")
        ),
    );
    let out = import_text("t", &text, "", false).unwrap();
    let paths: Vec<&str> = out.differences.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/API", "/DOCS", "/docsX"]);
    let api = out.routes.iter().find(|r| r.path == "/api").unwrap();
    assert!(api.strip_prefix);
}

#[test]
fn refused_annotations_leave_the_ingress_out() {
    let text = ingress_yaml(
        "s",
        "    nginx.ingress.kubernetes.io/server-snippet: \"return 200;\"\n",
        &rule("h.example.com", "/", "Prefix", "web"),
    );
    let out = import_text("t", &text, "", false).unwrap();
    assert!(out.routes.is_empty());
    assert!(out.findings.iter().any(|f| f.kind == FindingKind::Security
        && f.subject == "nginx.ingress.kubernetes.io/server-snippet"));
    assert!(!out.text.contains("return 200"));
}

#[test]
fn another_controllers_class_is_noted() {
    let text = ingress_yaml("t", "", &rule("h.example.com", "/", "Prefix", "web"))
        .replace("spec:\n", "spec:\n  ingressClassName: traefik\n");
    let out = import_text("t", &text, "", false).unwrap();
    assert_eq!(out.routes.len(), 1);
    assert!(out.findings.iter().any(|f| f.subject == "ingress class"
        && f.kind == FindingKind::Note
        && f.message.contains("\"traefik\"")));
    let nginx = ingress_yaml("t", "", &rule("h.example.com", "/", "Prefix", "web"))
        .replace("spec:\n", "spec:\n  ingressClassName: nginx-internal\n");
    let out = import_text("t", &nginx, "", false).unwrap();
    assert!(out.findings.iter().all(|f| f.subject != "ingress class"));
}

#[test]
fn a_canary_with_a_refused_annotation_is_not_merged() {
    let stable = ingress_yaml("web", "", &rule("h.example.com", "/", "Prefix", "v1"));
    let canary = ingress_yaml(
        "web-canary",
        "    nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/configuration-snippet: \"x\"\n",
        &rule("h.example.com", "/", "Prefix", "v2"),
    );
    let out = import_text("t", &format!("{stable}---\n{canary}"), "", false).unwrap();
    assert_eq!(out.routes.len(), 1);
    assert!(out.routes[0].canary.is_none());
    assert!(
        out.findings
            .iter()
            .any(|f| f.object == "ns/web-canary" && f.kind == FindingKind::Security)
    );
}
