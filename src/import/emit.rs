//! From Ingress objects to [`OutRoute`]s ([`plan`]), and from those to the
//! route file text ([`render`]). The text is written from typed values
//! only: every string is double-quoted with everything outside printable
//! ASCII escaped, and comments are single lines with control characters
//! escaped, so no value from a manifest can add a key, a route or a line.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use super::annotations::{self, Annotations, BackendProtocol, RedirectSpec};
use super::explain::{self, Difference};
use super::{
    Finding, FindingKind, Ingress, OutRoute, PathType, ServiceRef, Services, Target, host_pattern,
};
use crate::config::routes::path_problem;

/// Everything the output file is written from.
pub struct Plan {
    /// Sorted: routes without host first, then by host, path, exact.
    pub routes: Vec<OutRoute>,
    /// Hosts (`None`: the routes without host) on which ingress-nginx
    /// matches every path as a case-insensitive regex, and the Ingress
    /// that made it so.
    pub regex_hosts: HashMap<Option<String>, String>,
    /// `(host, secret, ingress)`.
    pub tls: Vec<(String, String, String)>,
}

type Key = (Option<String>, bool, String);

struct Builder<'a> {
    services: &'a Services,
    findings: &'a mut Vec<Finding>,
    routes: Vec<OutRoute>,
    index: HashMap<Key, usize>,
}

impl Builder<'_> {
    fn finding(&mut self, object: &str, subject: String, kind: FindingKind, message: String) {
        self.findings.push(Finding {
            object: object.to_string(),
            subject,
            kind,
            message,
        });
    }

    /// `http://SERVICE.NAMESPACE.svc.cluster.local:PORT` (or https, h2c).
    fn backend_url(
        &mut self,
        ing: &Ingress,
        subject: &str,
        svc: &ServiceRef,
        scheme: &str,
    ) -> Option<String> {
        let id = ing.id();
        if !dns_label(&svc.name) || !dns_label(&ing.namespace) {
            self.finding(
                &id,
                subject.to_string(),
                FindingKind::Skipped,
                format!(
                    "service {:?} in namespace {:?} is not a valid Kubernetes name",
                    svc.name, ing.namespace
                ),
            );
            return None;
        }
        match self.services.resolve(&ing.namespace, &svc.name, &svc.port) {
            Ok(port) => Some(format!(
                "{scheme}://{}.{}.svc.cluster.local:{port}",
                svc.name, ing.namespace
            )),
            Err(m) => {
                self.finding(
                    &id,
                    subject.to_string(),
                    FindingKind::Skipped,
                    format!("not imported: {m}"),
                );
                None
            }
        }
    }

    fn add(&mut self, route: OutRoute, subject: &str) -> bool {
        let key = (route.host.clone(), route.exact, route.path.clone());
        if let Some(&first) = self.index.get(&key) {
            let other = self.routes[first].origin.clone();
            let name = route.name();
            self.finding(
                &route.origin,
                subject.to_string(),
                FindingKind::Skipped,
                format!(
                    "conflicts with {other}, which also routes {name}; ingress-nginx lets the oldest Ingress win, and so does this import (by creationTimestamp, then namespace/name): merge the two or remove one"
                ),
            );
            return false;
        }
        self.index.insert(key, self.routes.len());
        self.routes.push(route);
        true
    }
}

/// A DNS-1123 label: what Service and namespace names are.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn scheme(p: BackendProtocol) -> (&'static str, bool) {
    match p {
        BackendProtocol::Http => ("http", false),
        BackendProtocol::Https => ("https", false),
        BackendProtocol::Grpc => ("h2c", false),
        BackendProtocol::Grpcs => ("https", true),
    }
}

/// The rule's hosts of an Ingress, validated (`None`: no host).
fn rule_host(
    b: &mut Builder<'_>,
    ing: &Ingress,
    host: Option<&str>,
    subject: &str,
) -> Option<Option<String>> {
    match host {
        None => Some(None),
        Some(h) => match host_pattern(h) {
            Ok(h) => Some(Some(h)),
            Err(m) => {
                b.finding(
                    &ing.id(),
                    subject.to_string(),
                    FindingKind::Skipped,
                    format!("host {h:?} {m}"),
                );
                None
            }
        },
    }
}

/// The Portico path of an Ingress path: `(path, exact, strip_prefix)`.
fn translate_path(
    written: &str,
    path_type: PathType,
    ann: &Annotations,
    regex_host: bool,
) -> Result<(String, bool, bool, Vec<String>), String> {
    let mut notes = Vec::new();
    if let Some(target) = &ann.rewrite_target {
        let prefix = annotations::strip_idiom(written, target)?;
        notes.push(format!(
            "rewrite-target {target:?} on {written:?}: strip_prefix (the backend gets the path after {prefix})"
        ));
        return Ok((prefix, false, true, notes));
    }
    if annotations::has_regex(written) {
        return Err(if regex_host {
            format!(
                "{written:?} is a regular expression; Portico matches literal paths only: list the literal prefixes it stands for as separate paths"
            )
        } else {
            format!(
                "{written:?} holds regex characters but use-regex is not set; write the literal path"
            )
        });
    }
    let exact = path_type == PathType::Exact;
    let mut path = written.to_string();
    if !exact {
        while path.len() > 1 && path.ends_with('/') {
            path.pop();
        }
        if path.is_empty() {
            path.push('/');
        }
    }
    if let Some(problem) = path_problem(&path, exact) {
        return Err(format!("path {path:?} {problem}"));
    }
    if path_type == PathType::ImplementationSpecific {
        notes.push(
            "pathType ImplementationSpecific: ingress-nginx reads it as a string prefix; Portico as Prefix (whole segments)"
                .into(),
        );
    }
    Ok((path, exact, false, notes))
}

/// Turns the Ingresses (oldest first) into routes.
pub fn plan(ingresses: &[Ingress], services: &Services, findings: &mut Vec<Finding>) -> Plan {
    let parsed: Vec<Annotations> = ingresses
        .iter()
        .map(|i| annotations::parse(&i.id(), &i.annotations, findings))
        .collect();
    let mut b = Builder {
        services,
        findings,
        routes: Vec::new(),
        index: HashMap::new(),
    };
    // ingress-nginx switches a whole server (host) to regex locations as
    // soon as one Ingress on it asks for regex or a rewrite.
    let mut regex_hosts: HashMap<Option<String>, String> = HashMap::new();
    for (ing, ann) in ingresses.iter().zip(&parsed) {
        if ann.canary.is_some() || !(ann.use_regex || ann.rewrite_target.is_some()) {
            continue;
        }
        for rule in &ing.rules {
            let host = match rule.host.as_deref() {
                Some(h) => match host_pattern(h) {
                    Ok(h) => Some(h),
                    Err(_) => continue,
                },
                None => None,
            };
            regex_hosts.entry(host).or_insert_with(|| ing.id());
        }
    }
    // Hosts with TLS in any Ingress: ingress-nginx redirects their plain
    // requests by default (ssl-redirect).
    let tls_hosts: BTreeSet<String> = ingresses
        .iter()
        .zip(&parsed)
        .filter(|(_, a)| a.canary.is_none())
        .flat_map(|(i, _)| i.tls.iter().flat_map(|(hosts, _)| hosts.iter()))
        .filter_map(|h| host_pattern(h).ok())
        .collect();
    let mut tls = Vec::new();
    // Stable Ingresses first: their paths, then (once every explicit path
    // is known) their default backends and app roots.
    for (ing, ann) in ingresses.iter().zip(&parsed) {
        let id = ing.id();
        if ann.canary.is_some() {
            continue;
        }
        for (hosts, secret) in &ing.tls {
            let secret = secret.as_deref().map_or_else(
                || "no secretName (the controller's default certificate)".to_string(),
                |s| format!("Secret {}/{s}", ing.namespace),
            );
            for h in hosts {
                tls.push((h.to_ascii_lowercase(), secret.clone(), id.clone()));
            }
        }
        if !ing.tls.is_empty() && !ann.refused {
            b.finding(&id, "spec.tls".into(), FindingKind::Note, "the certificates go in portico.yaml (tls.certificates); ingress-nginx redirects plain HTTP to HTTPS on TLS hosts by default, so their routes get https_redirect: true (honoured with Portico's own listen.https; remove it behind a load balancer that terminates TLS)".into());
        }
        if ann.refused {
            b.finding(&id, "Ingress".into(), FindingKind::Skipped, "no route of this Ingress is imported, because of the refused annotation listed with it; fix that and import again".into());
            continue;
        }
        let (scheme, http2) = scheme(ann.protocol);
        for (ri, rule) in ing.rules.iter().enumerate() {
            let subject = format!("spec.rules[{ri}]");
            let Some(host) = rule_host(&mut b, ing, rule.host.as_deref(), &subject) else {
                continue;
            };
            let regex = regex_hosts.contains_key(&host);
            for p in &rule.paths {
                let subject = format!("path {:?} ({})", p.path, p.path_type);
                let (path, exact, strip, mut notes) =
                    match translate_path(&p.path, p.path_type, ann, regex) {
                        Ok(t) => t,
                        Err(m) => {
                            b.finding(&id, subject, FindingKind::Skipped, m);
                            continue;
                        }
                    };
                let target = match &ann.redirect {
                    Some(r) => Target::Redirect(r.clone()),
                    None => {
                        let Some(url) = b.backend_url(ing, &subject, &p.backend, scheme) else {
                            continue;
                        };
                        Target::Backend { url, http2 }
                    }
                };
                if regex {
                    notes.push(format!(
                        "ingress-nginx matched this host's paths as case-insensitive regex prefixes (because of {}); see --explain",
                        regex_hosts[&host]
                    ));
                }
                let written = (p.path.as_str(), p.path_type);
                let mut route = route(
                    ing,
                    ann,
                    host.clone(),
                    path,
                    exact,
                    strip,
                    target,
                    written,
                    notes,
                );
                route.https_redirect = ann.force_ssl_redirect
                    || (ann.ssl_redirect != Some(false)
                        && host.as_ref().is_some_and(|h| tls_hosts.contains(h)));
                b.add(route, &subject);
            }
        }
    }
    for (ing, ann) in ingresses.iter().zip(&parsed) {
        if ann.canary.is_some() || ann.refused {
            continue;
        }
        let mut hosts: BTreeSet<Option<String>> = BTreeSet::new();
        for rule in &ing.rules {
            if let Some(h) = rule.host.as_deref() {
                if let Ok(h) = host_pattern(h) {
                    hosts.insert(Some(h));
                }
            } else {
                hosts.insert(None);
            }
        }
        if hosts.is_empty() {
            hosts.insert(None);
        }
        let (scheme, http2) = scheme(ann.protocol);
        if let Some(svc) = &ing.default_backend {
            let subject = "spec.defaultBackend".to_string();
            if let Some(url) = b.backend_url(ing, &subject, svc, scheme) {
                for host in &hosts {
                    let notes = vec![
                        "spec.defaultBackend: every path of this host no other route takes".into(),
                    ];
                    let target = Target::Backend {
                        url: url.clone(),
                        http2,
                    };
                    let mut r = route(
                        ing,
                        ann,
                        host.clone(),
                        "/".into(),
                        false,
                        false,
                        target,
                        ("/", PathType::Prefix),
                        notes,
                    );
                    r.https_redirect = ann.force_ssl_redirect
                        || (ann.ssl_redirect != Some(false)
                            && host.as_ref().is_some_and(|h| tls_hosts.contains(h)));
                    b.add(r, &subject);
                }
            }
        }
        if let Some(root) = &ann.app_root {
            let subject = format!("{}app-root", annotations::NGINX);
            for host in &hosts {
                let target = Target::Redirect(RedirectSpec {
                    to: root.clone(),
                    status: 302,
                });
                let notes = vec![format!("app-root: / answers 302 to {root}")];
                let mut r = route(
                    ing,
                    ann,
                    host.clone(),
                    "/".into(),
                    true,
                    false,
                    target,
                    ("/", PathType::Exact),
                    notes,
                );
                r.timeout_secs = None;
                r.hash_cookie = None;
                b.add(r, &subject);
            }
        }
    }
    for (ing, ann) in ingresses.iter().zip(&parsed) {
        match &ann.canary {
            Some(_) if ann.refused => b.finding(&ing.id(), "Ingress".into(), FindingKind::Skipped, "this canary is not merged, because of the refused annotation listed with it; fix that and import again".into()),
            Some(c) => canary(&mut b, ing, c),
            None => {}
        }
    }
    let mut routes = b.routes;
    routes.sort_by(|x, y| {
        (x.host.is_some(), &x.host, &x.path, x.exact).cmp(&(
            y.host.is_some(),
            &y.host,
            &y.path,
            y.exact,
        ))
    });
    tls.sort();
    tls.dedup();
    Plan {
        routes,
        regex_hosts,
        tls,
    }
}

#[allow(clippy::too_many_arguments)]
fn route(
    ing: &Ingress,
    ann: &Annotations,
    host: Option<String>,
    path: String,
    exact: bool,
    strip_prefix: bool,
    target: Target,
    (written_path, path_type): (&str, PathType),
    notes: Vec<String>,
) -> OutRoute {
    let redirect = matches!(target, Target::Redirect(_));
    OutRoute {
        host,
        path,
        exact,
        strip_prefix: strip_prefix && !redirect,
        timeout_secs: ann.timeout_secs.filter(|_| !redirect),
        hash_cookie: ann.hash_cookie.clone().filter(|_| !redirect),
        canary: None,
        allow_from: ann.allow_from.clone(),
        max_body_size: ann.max_body_size,
        host_header: ann.host_header.clone().filter(|_| !redirect),
        https_redirect: false,
        origin: ing.id(),
        written_path: written_path.to_string(),
        path_type,
        notes,
        target,
    }
}

/// Merges a canary Ingress into the stable routes with the same host and
/// path.
fn canary(b: &mut Builder<'_>, ing: &Ingress, c: &annotations::CanaryAnnotations) {
    let id = ing.id();
    if ing.default_backend.is_some() {
        b.finding(
            &id,
            "spec.defaultBackend".into(),
            FindingKind::Untranslated,
            "a canary Ingress's default backend is not imported; give the canary a path".into(),
        );
    }
    for (ri, rule) in ing.rules.iter().enumerate() {
        let Some(host) = rule_host(b, ing, rule.host.as_deref(), &format!("spec.rules[{ri}]"))
        else {
            continue;
        };
        for p in &rule.paths {
            let subject = format!("path {:?} ({}) canary", p.path, p.path_type);
            let stable = b
                .routes
                .iter()
                .position(|r| r.host == host && r.written_path == p.path);
            let Some(si) = stable else {
                b.finding(&id, subject, FindingKind::Skipped, "no stable Ingress routes this host and path, so there is nothing to be a canary of (ingress-nginx ignores it too)".into());
                continue;
            };
            let stable_url = match &b.routes[si].target {
                Target::Backend { url, .. } => url.clone(),
                Target::Redirect(_) => {
                    b.finding(
                        &id,
                        subject,
                        FindingKind::Skipped,
                        "the stable route redirects; a redirect has no canary".into(),
                    );
                    continue;
                }
            };
            if let Some(other) = &b.routes[si].canary {
                let other = other.0.clone();
                b.finding(
                    &id,
                    subject,
                    FindingKind::Skipped,
                    format!("the route already has the canary {other}; a route has one canary"),
                );
                continue;
            }
            let scheme = stable_url.split("://").next().unwrap_or("http").to_string();
            let Some(url) = b.backend_url(ing, &subject, &p.backend, &scheme) else {
                continue;
            };
            if url == stable_url {
                b.finding(
                    &id,
                    subject,
                    FindingKind::Skipped,
                    format!("the canary's backend {url} is the stable backend"),
                );
                continue;
            }
            let r = &mut b.routes[si];
            r.canary = Some((url, c.weight));
            r.notes.push(format!(
                "canary from {id}: weight {}% of public requests; operators reach it by asking (x-portico-canary: 1){}",
                c.weight,
                match &c.asked_by {
                    Some(by) => format!(", where ingress-nginx let anyone ask by {by}"),
                    None => String::new(),
                }
            ));
        }
    }
}

/// A YAML double-quoted scalar holding exactly `s`: printable ASCII as is,
/// `"` and `\` escaped, everything else as a `\u`/`\U` escape.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' ' => out.push(' '),
            c if c.is_ascii_graphic() => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// One comment line: control characters and line breaks escaped.
pub fn comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\u{85}' {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (m, u) in UNITS {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{u}", n / m);
        }
    }
    n.to_string()
}

/// The route file text.
pub fn render(
    plan: &Plan,
    findings: &[Finding],
    differences: &[Difference],
    emit_tests: bool,
) -> String {
    let mut o = String::new();
    o.push_str(
        "# Portico route file written by `portico import` from Kubernetes Ingress objects.\n",
    );
    o.push_str("# Review the comments, then run `portico check`; `portico import --explain`\n");
    o.push_str("# lists the requests that Portico routes differently from ingress-nginx.\n");
    if !plan.tls.is_empty() {
        o.push_str(
            "#\n# TLS: certificates are configured in portico.yaml (tls.certificates), not here.\n",
        );
        for (host, secret, ing) in &plan.tls {
            let _ = writeln!(
                o,
                "{}",
                comment(&format!("#   {host}: {secret} (Ingress {ing})"))
            );
        }
    }
    let mut sorted: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.kind != FindingKind::Note)
        .collect();
    sorted.sort();
    sorted.dedup();
    if !sorted.is_empty() {
        o.push_str("#\n# Not imported or not translated (also printed on stderr):\n");
        for f in sorted {
            let _ = writeln!(o, "{}", comment(&format!("#   {f}")));
        }
    }
    if plan.routes.is_empty() {
        o.push_str("routes: []\n");
    } else {
        o.push_str("routes:\n");
    }
    for r in &plan.routes {
        let _ = writeln!(
            o,
            "{}",
            comment(&format!(
                "  # {}: {} {:?} ({})",
                r.origin,
                r.host.as_deref().unwrap_or("any host"),
                r.written_path,
                r.path_type
            ))
        );
        for n in &r.notes {
            let _ = writeln!(o, "{}", comment(&format!("  #   {n}")));
        }
        let mut first = true;
        let mut key = |o: &mut String, k: &str, v: String| {
            let lead = if first { "  - " } else { "    " };
            first = false;
            let _ = writeln!(o, "{lead}{k}: {v}");
        };
        if let Some(h) = &r.host {
            key(&mut o, "host", quote(h));
        }
        key(
            &mut o,
            if r.exact { "exact" } else { "prefix" },
            quote(&r.path),
        );
        match &r.target {
            Target::Backend { url, http2 } => {
                key(&mut o, "backend", quote(url));
                if *http2 {
                    key(&mut o, "http2", "true".into());
                }
            }
            Target::Redirect(rd) => key(
                &mut o,
                "redirect",
                format!("{{to: {}, status: {}}}", quote(&rd.to), rd.status),
            ),
        }
        if r.strip_prefix {
            key(&mut o, "strip_prefix", "true".into());
        }
        if let Some(t) = r.timeout_secs {
            key(&mut o, "timeout", format!("{t}s"));
        }
        if let Some(c) = &r.hash_cookie {
            key(&mut o, "balance", format!("{{hash_cookie: {}}}", quote(c)));
        }
        if !r.allow_from.is_empty() {
            let list: Vec<String> = r.allow_from.iter().map(|n| quote(&n.to_string())).collect();
            key(&mut o, "allow_from", format!("[{}]", list.join(", ")));
        }
        if let Some(n) = r.max_body_size {
            key(&mut o, "max_body_size", size(n));
        }
        if let Some(h) = &r.host_header {
            key(&mut o, "host_header", quote(h));
        }
        if r.https_redirect {
            key(&mut o, "https_redirect", "true".into());
        }
        if let Some((url, weight)) = &r.canary {
            key(
                &mut o,
                "canary",
                format!("{{backend: {}, weight: {weight}}}", quote(url)),
            );
        }
    }
    if emit_tests {
        let tests = explain::tests(&plan.routes, differences);
        if !tests.is_empty() {
            o.push_str("tests:\n");
        }
        for t in tests {
            let _ = writeln!(o, "{}", comment(&format!("  # {}", t.why)));
            let _ = writeln!(o, "  - path: {}", quote(&t.path));
            if let Some(h) = &t.host {
                let _ = writeln!(o, "    host: {}", quote(h));
            }
            match (&t.route, &t.backend) {
                (None, _) => o.push_str("    expect: {route: none, status: 404}\n"),
                (Some(name), Some(b)) => {
                    let _ = writeln!(
                        o,
                        "    expect: {{route: {}, backend: {}}}",
                        quote(name),
                        quote(b)
                    );
                }
                (Some(name), None) => match t.status {
                    Some(status) => {
                        let _ = writeln!(
                            o,
                            "    expect: {{route: {}, status: {status}}}",
                            quote(name)
                        );
                    }
                    None => {
                        let _ = writeln!(o, "    expect: {{route: {}}}", quote(name));
                    }
                },
            }
        }
    }
    o
}
