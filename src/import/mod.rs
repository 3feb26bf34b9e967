//! `portico import`: Kubernetes Ingress objects (`networking.k8s.io/v1`,
//! as ingress-nginx serves them) to a Portico route file.
//!
//! This module owns reading the manifests (multi-document YAML, `kind:
//! List` from `kubectl get ingress -A -o yaml`, Services for named ports)
//! into [`Ingress`] values, and turning them into [`OutRoute`]s with a
//! report of everything that could not be carried over.
//!
//! * `annotations.rs`: the `nginx.ingress.kubernetes.io/*` annotations,
//!   parsed as data into what a route can do, or a finding saying why not.
//! * `emit.rs`: the route file text, built from those values (every string
//!   quoted and escaped, comments stripped of line breaks), and the
//!   matcher models the examples are computed with.
//! * `explain.rs`: `--explain` and `--emit-tests`: per host, the requests
//!   that ingress-nginx and Portico route differently.
//!
//! Annotation values and object fields are never spliced into the output:
//! they are validated into typed values (host patterns, paths, CIDRs,
//! URLs, numbers) and the file is written from those. The generated text is
//! parsed back with the route-file parser before it is returned, so an
//! invalid file is never emitted.

mod annotations;
mod emit;
mod explain;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::yaml::{self, Node, Value};
use crate::config::{ConfigErrors, HostPattern};

pub use annotations::{Annotations, BackendProtocol, RedirectSpec};
pub use emit::comment as emit_comment;
pub use explain::Difference;

/// What `portico import` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Manifest files; `-` is standard input.
    pub inputs: Vec<PathBuf>,
    /// Files holding the Services that named ports refer to.
    pub services: Vec<PathBuf>,
    /// Write each behaviour difference as a route assertion under `tests:`,
    /// with a normal request per route.
    pub emit_tests: bool,
}

/// Why an import failed as a whole (a finding about one object is not an
/// error: it goes into the report).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Yaml(#[from] crate::config::ConfigError),
    /// The generated file did not pass the route-file parser: a bug in
    /// the importer, reported instead of writing the file.
    #[error("the generated route file is invalid (please report this): {0}")]
    Generated(ConfigErrors),
}

/// One thing the report tells the user about an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `namespace/name` of the object (`-` for the input as a whole).
    pub object: String,
    /// The annotation, field or path it is about.
    pub subject: String,
    pub kind: FindingKind,
    /// What happened and what to do.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// Refused because it can inject configuration or bypass a control:
    /// the object's routes are not imported (fail-closed).
    Security,
    /// Not imported (a path, a rule, an object).
    Skipped,
    /// An annotation without a Portico equivalent; the route is imported
    /// without it.
    Untranslated,
    /// Translated, with a difference worth knowing.
    Note,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::Security => "refused (security)",
            FindingKind::Skipped => "skipped",
            FindingKind::Untranslated => "not translated",
            FindingKind::Note => "note",
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.object, self.subject, self.kind, self.message
        )
    }
}

/// `pathType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathType {
    Prefix,
    Exact,
    ImplementationSpecific,
}

impl fmt::Display for PathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathType::Prefix => "Prefix",
            PathType::Exact => "Exact",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        })
    }
}

/// A Service port as an Ingress backend names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// `backend.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub name: String,
    pub port: PortRef,
}

/// One `rules[].http.paths[]` entry.
#[derive(Debug, Clone)]
pub struct IngressPath {
    pub path: String,
    pub path_type: PathType,
    pub backend: ServiceRef,
}

/// One `rules[]` entry.
#[derive(Debug, Clone)]
pub struct IngressRule {
    /// `None`: the rule serves every host no other rule names.
    pub host: Option<String>,
    pub paths: Vec<IngressPath>,
}

/// One Ingress object, as far as routing is concerned.
#[derive(Debug, Clone)]
pub struct Ingress {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339): ingress-nginx lets the
    /// oldest Ingress win a conflict.
    pub created: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub default_backend: Option<ServiceRef>,
    pub rules: Vec<IngressRule>,
    /// `(hosts, secretName)` of each `tls[]` entry.
    pub tls: Vec<(Vec<String>, Option<String>)>,
}

impl Ingress {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Named ports of the Services read: `(namespace, service, port name)` →
/// port number.
#[derive(Debug, Default)]
pub struct Services {
    ports: HashMap<(String, String, String), u16>,
    /// Services seen at all, to tell "no such port" from "no manifest".
    known: std::collections::HashSet<(String, String)>,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Backend {
        /// `http://svc.ns.svc.cluster.local:PORT`, `https://`, `h2c://`.
        url: String,
        /// `http2: true` (GRPCS).
        http2: bool,
    },
    Redirect(RedirectSpec),
}

/// A route of the output file.
#[derive(Debug, Clone)]
pub struct OutRoute {
    /// Lowercased host pattern (`*.example.com`), or `None` for the routes
    /// without host.
    pub host: Option<String>,
    pub path: String,
    pub exact: bool,
    pub target: Target,
    pub strip_prefix: bool,
    pub timeout_secs: Option<u64>,
    pub hash_cookie: Option<String>,
    /// `(backend URL, weight)`.
    pub canary: Option<(String, u8)>,
    pub allow_from: Vec<ipnet::IpNet>,
    pub max_body_size: Option<u64>,
    /// `host_header` (from `upstream-vhost`).
    pub host_header: Option<String>,
    /// `https_redirect: true` (`ssl-redirect` on a TLS host, or
    /// `force-ssl-redirect`).
    pub https_redirect: bool,
    /// The Ingress it came from (`namespace/name`).
    pub origin: String,
    /// As written in the Ingress, for comments and `--explain`.
    pub written_path: String,
    pub path_type: PathType,
    /// Comments written above the route.
    pub notes: Vec<String>,
}

impl OutRoute {
    /// The route's name as `tests:` and `portico routes` write it.
    pub fn name(&self) -> String {
        let label = if self.exact {
            format!("={}", self.path)
        } else {
            self.path.clone()
        };
        match &self.host {
            Some(h) => format!("{h}{label}"),
            None => label,
        }
    }
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    /// The route file text (valid: it was parsed back).
    pub text: String,
    pub routes: Vec<OutRoute>,
    /// Sorted by object, then subject.
    pub findings: Vec<Finding>,
    /// `--explain`: per host, the requests routed differently.
    pub differences: Vec<Difference>,
    /// `(host or *, secret namespace/name, ingress)` from `tls:` entries.
    pub tls: Vec<(String, String, String)>,
    /// The `--explain` text.
    pub explanation: String,
}

/// Reads manifests from `text` (the content of `name`) as `portico import`
/// does, for tests and callers that hold the text already.
pub fn import_text(
    name: &str,
    text: &str,
    services: &str,
    emit_tests: bool,
) -> Result<Imported, ImportError> {
    let mut ingresses = Vec::new();
    let mut known = Services::default();
    let mut findings = Vec::new();
    for doc in yaml::parse_stream(Path::new(name), text)? {
        collect(&doc, &mut ingresses, &mut known, &mut findings);
    }
    for doc in yaml::parse_stream(Path::new("services"), services)? {
        collect(&doc, &mut Vec::new(), &mut known, &mut findings);
    }
    build(ingresses, &known, findings, emit_tests)
}

/// Reads every input and returns the route file and its report.
pub fn import(opts: &ImportOptions) -> Result<Imported, ImportError> {
    let mut ingresses = Vec::new();
    let mut services = Services::default();
    let mut findings = Vec::new();
    for input in &opts.inputs {
        let (name, text) = read_input(input)?;
        for doc in yaml::parse_stream(Path::new(&name), &text)? {
            collect(&doc, &mut ingresses, &mut services, &mut findings);
        }
    }
    for file in &opts.services {
        let (name, text) = read_input(file)?;
        let mut ignored = Vec::new();
        for doc in yaml::parse_stream(Path::new(&name), &text)? {
            collect(&doc, &mut ignored, &mut services, &mut findings);
        }
        if !ignored.is_empty() {
            findings.push(Finding {
                object: "-".into(),
                subject: name.clone(),
                kind: FindingKind::Note,
                message: format!(
                    "{} Ingress object(s) in a --services file were not imported; pass them as inputs",
                    ignored.len()
                ),
            });
        }
    }
    build(ingresses, &services, findings, opts.emit_tests)
}

/// Builds the output from objects already read (the unit tests' entry).
pub fn build(
    mut ingresses: Vec<Ingress>,
    services: &Services,
    mut findings: Vec<Finding>,
    emit_tests: bool,
) -> Result<Imported, ImportError> {
    // ingress-nginx lets the oldest Ingress win a conflict; without
    // timestamps, namespace and name decide, so the output is stable.
    ingresses.sort_by(|a, b| {
        (a.created.is_none(), &a.created, &a.namespace, &a.name).cmp(&(
            b.created.is_none(),
            &b.created,
            &b.namespace,
            &b.name,
        ))
    });
    let plan = emit::plan(&ingresses, services, &mut findings);
    let differences = explain::differences(&plan.routes, &plan.regex_hosts);
    let text = emit::render(&plan, &findings, &differences, emit_tests);
    let explanation = explain::render(&plan.routes, &plan.regex_hosts, &differences);
    // Never hand out a file Portico would refuse.
    crate::config::parse_route_file(Path::new("imported-routes.yaml"), &text)
        .map_err(ImportError::Generated)?;
    findings.sort();
    findings.dedup();
    Ok(Imported {
        text,
        routes: plan.routes,
        findings,
        differences,
        tls: plan.tls,
        explanation,
    })
}

fn read_input(path: &Path) -> Result<(String, String), ImportError> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ImportError::Io {
                path: "-".into(),
                source,
            }
        })?;
        return Ok(("<stdin>".into(), text));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: name.clone(),
        source,
    })?;
    Ok((name, text))
}

/// The string at a path of mapping keys.
fn text<'n>(node: &'n Node, keys: &[&str]) -> Option<&'n str> {
    at(node, keys).and_then(Node::as_str)
}

fn at<'n>(node: &'n Node, keys: &[&str]) -> Option<&'n Node> {
    let mut n = node;
    for k in keys {
        n = n.field(k)?;
    }
    Some(n)
}

fn items(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.value) {
        Some(Value::Sequence(items)) => items,
        _ => &[],
    }
}

/// Sorts one manifest into Ingresses and Services; anything else is
/// reported and left out.
fn collect(
    doc: &Node,
    ingresses: &mut Vec<Ingress>,
    services: &mut Services,
    findings: &mut Vec<Finding>,
) {
    let kind = text(doc, &["kind"]).unwrap_or("");
    let api = text(doc, &["apiVersion"]).unwrap_or("");
    let name = text(doc, &["metadata", "name"]).unwrap_or("?");
    let namespace = text(doc, &["metadata", "namespace"]).unwrap_or("default");
    let id = format!("{namespace}/{name}");
    match kind {
        "List" | "IngressList" | "ServiceList" => {
            for item in items(doc.field("items")) {
                collect(item, ingresses, services, findings);
            }
        }
        "Ingress" if api == "networking.k8s.io/v1" => match ingress(doc, findings) {
            Some(i) => ingresses.push(i),
            None => findings.push(Finding {
                object: id,
                subject: "Ingress".into(),
                kind: FindingKind::Skipped,
                message: "not a readable Ingress (metadata.name and spec are required)".into(),
            }),
        },
        "Ingress" => findings.push(Finding {
            object: id,
            subject: format!("apiVersion {api}"),
            kind: FindingKind::Skipped,
            message: "only networking.k8s.io/v1 Ingress objects are read; convert it with `kubectl convert` or re-read it from the cluster (`kubectl get ingress -A -o yaml`)".into(),
        }),
        "Service" if api == "v1" => {
            services.known.insert((namespace.to_string(), name.to_string()));
            for port in items(at(doc, &["spec", "ports"])) {
                let (Some(pname), Some(number)) = (
                    text(port, &["name"]),
                    text(port, &["port"]).and_then(|p| p.parse::<u16>().ok()),
                ) else {
                    continue;
                };
                services.ports.insert(
                    (namespace.to_string(), name.to_string(), pname.to_string()),
                    number,
                );
            }
        }
        "" if doc.field("apiVersion").is_none() && matches!(&doc.value, Value::Mapping(e) if e.is_empty()) => {}
        other => findings.push(Finding {
            object: id,
            subject: format!("kind {other}"),
            kind: FindingKind::Skipped,
            message: "not an Ingress or Service; left out".into(),
        }),
    }
}

fn service_ref(node: &Node) -> Option<ServiceRef> {
    let svc = node.field("service")?;
    let name = text(svc, &["name"])?.to_string();
    let port = if let Some(n) = text(svc, &["port", "number"]) {
        PortRef::Number(n.parse().ok().filter(|p| *p != 0)?)
    } else {
        PortRef::Name(text(svc, &["port", "name"])?.to_string())
    };
    Some(ServiceRef { name, port })
}

fn ingress(doc: &Node, findings: &mut Vec<Finding>) -> Option<Ingress> {
    let name = text(doc, &["metadata", "name"])?.to_string();
    let namespace = text(doc, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_string();
    let id = format!("{namespace}/{name}");
    let spec = doc.field("spec")?;
    let mut annotations = BTreeMap::new();
    if let Some(Node {
        value: Value::Mapping(entries),
        ..
    }) = at(doc, &["metadata", "annotations"])
    {
        for e in entries {
            // Kubernetes annotation values are strings; a number or boolean
            // written unquoted in the file reads as its text.
            if let Some(v) = e.value.as_str() {
                annotations.insert(e.key.clone(), v.to_string());
            }
        }
    }
    let mut skipped = |subject: String, message: &str| {
        findings.push(Finding {
            object: id.clone(),
            subject,
            kind: FindingKind::Skipped,
            message: message.into(),
        })
    };
    let default_backend = match spec.field("defaultBackend") {
        Some(b) => {
            let r = service_ref(b);
            if r.is_none() {
                skipped(
                    "spec.defaultBackend".into(),
                    "only a service backend (name and port) can be imported; a resource backend has no Portico equivalent",
                );
            }
            r
        }
        None => None,
    };
    let mut rules = Vec::new();
    for (ri, rule) in items(spec.field("rules")).iter().enumerate() {
        let host = text(rule, &["host"]).map(str::to_string);
        let mut paths = Vec::new();
        for (pi, p) in items(at(rule, &["http", "paths"])).iter().enumerate() {
            let subject = format!("spec.rules[{ri}].http.paths[{pi}]");
            let path = text(p, &["path"]).unwrap_or("/").to_string();
            let path_type = match text(p, &["pathType"]) {
                Some("Prefix") => PathType::Prefix,
                Some("Exact") => PathType::Exact,
                Some("ImplementationSpecific") => PathType::ImplementationSpecific,
                other => {
                    skipped(
                        subject,
                        &format!(
                            "pathType must be Prefix, Exact or ImplementationSpecific, got {other:?}"
                        ),
                    );
                    continue;
                }
            };
            let Some(backend) = p.field("backend").and_then(service_ref) else {
                skipped(
                    subject,
                    "only a service backend (name and a port number or name) can be imported",
                );
                continue;
            };
            paths.push(IngressPath {
                path,
                path_type,
                backend,
            });
        }
        rules.push(IngressRule { host, paths });
    }
    // ingress-nginx serves its own class only; another controller's
    // Ingress is imported (class names are configurable) but said so.
    let class = text(spec, &["ingressClassName"]).or_else(|| {
        text(
            doc,
            &["metadata", "annotations", "kubernetes.io/ingress.class"],
        )
    });
    if let Some(class) = class.filter(|c| !c.contains("nginx")) {
        findings.push(Finding {
            object: id.clone(),
            subject: "ingress class".into(),
            kind: FindingKind::Note,
            message: format!(
                "class {class:?} is not nginx: imported all the same; if ingress-nginx did not serve this Ingress, leave it out"
            ),
        });
    }
    let tls = items(spec.field("tls"))
        .iter()
        .map(|t| {
            let hosts = items(t.field("hosts"))
                .iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            (hosts, text(t, &["secretName"]).map(str::to_string))
        })
        .collect();
    Some(Ingress {
        namespace,
        name,
        created: text(doc, &["metadata", "creationTimestamp"]).map(str::to_string),
        annotations,
        default_backend,
        rules,
        tls,
    })
}

impl Services {
    /// The number behind a port of `namespace/service`.
    pub fn resolve(&self, namespace: &str, service: &str, port: &PortRef) -> Result<u16, String> {
        match port {
            PortRef::Number(n) => Ok(*n),
            PortRef::Name(pname) => {
                if let Some(n) =
                    self.ports
                        .get(&(namespace.to_string(), service.to_string(), pname.clone()))
                {
                    Ok(*n)
                } else if self
                    .known
                    .contains(&(namespace.to_string(), service.to_string()))
                {
                    Err(format!(
                        "Service {namespace}/{service} has no port named {pname:?}; fix the Ingress or the Service"
                    ))
                } else {
                    Err(format!(
                        "backend port {pname:?} of Service {namespace}/{service} is named; pass the Service manifest with --services FILE (kubectl get service -n {namespace} {service} -o yaml), or use port.number"
                    ))
                }
            }
        }
    }
}

/// Whether `host` is a host pattern Portico accepts, lowercased.
pub(crate) fn host_pattern(host: &str) -> Result<String, String> {
    host.parse::<HostPattern>()
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
