//! The commands behind `src/main.rs`, here so they can be tested. Each
//! returns the process exit code: 0 ok, 1 invalid configuration.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{self, ConfigErrors, GatewayConfig, HostPattern, RouteSpec};
use crate::observability::logging;
use crate::observability::metrics::Metrics;
use crate::proxy::upstream::{PoolTimeouts, UpstreamClients};
use crate::routing::host::HostMatch;
use crate::routing::matcher::RouteMatcher;
use crate::routing::path;
use crate::routing::table::{BuildContext, RouteTable};

/// Exit code for a configuration the gateway refuses.
pub const EXIT_INVALID: u8 = 1;

/// `portico serve`: config errors stop the process before any port is bound.
pub fn serve(config_path: &Path) -> u8 {
    let cfg = match config::load_gateway_config(config_path) {
        Ok(c) => c,
        Err(errors) => return report(&errors),
    };
    let _guard = logging::init(cfg.log_level.as_deref());
    crate::lifecycle::fd_limit::raise_and_report(&cfg);
    // Certificates are checked before any port is bound, like the config.
    if let Some(tls) = &cfg.tls
        && let Err(e) = crate::tls::TlsTerminator::load(tls)
    {
        tracing::error!(error = %crate::proxy::error_chain(&e), "cannot start");
        return EXIT_INVALID;
    }
    // The control plane (operator listener, reloads, signals, drain) runs
    // here; the public listeners run on the workers `app::start` spawns.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return EXIT_INVALID;
        }
    };
    rt.block_on(async move {
        let listeners = match crate::app::Listeners::bind(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return EXIT_INVALID;
            }
        };
        let mut signals = crate::lifecycle::signals::Signals::install();
        let shutdown = async move { signals.recv().await };
        match crate::app::start(cfg, listeners, shutdown).await {
            Ok(running) => {
                running.wait().await;
                tracing::info!("stopped");
                0
            }
            Err(e) => {
                tracing::error!(error = %crate::proxy::error_chain(&e), "cannot start");
                EXIT_INVALID
            }
        }
    })
}

/// `portico check`: every error of both files, then exit 1; or a summary and
/// 0. The route file's tests run against the table built as a reload would
/// build it; a failing one is an error like any other. With `lint`, the
/// warnings of [`config::governance::lint`] too (they never fail the check).
pub fn check(config_path: &Path, lint: bool) -> u8 {
    let cfg = match config::load_gateway_config(config_path) {
        Ok(c) => c,
        Err(errors) => return report(&errors),
    };
    // Certificates are part of a valid configuration: a key that does not
    // match its certificate must fail here, not at the next rollout.
    if let Some(tls) = &cfg.tls
        && let Err(e) = crate::tls::TlsTerminator::load(tls)
    {
        eprintln!(
            "{}: tls: {}",
            config_path.display(),
            crate::proxy::error_chain(&e)
        );
        return EXIT_INVALID;
    }
    let mut file = match config::load_route_file(&cfg.routes_file) {
        Ok(f) => f,
        Err(errors) => return report(&errors),
    };
    let warnings = if lint {
        config::governance::lint(&file)
    } else {
        Vec::new()
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    let count = file.routes.len();
    let tests = std::mem::take(&mut file.tests);
    let table = match build_table(&cfg, file) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_INVALID;
        }
    };
    if let Err(failed) = crate::routing::assertions::check(&table, &tests) {
        eprintln!("{failed}");
        return EXIT_INVALID;
    }
    println!(
        "{}: ok\n{}: ok, {count} route(s), {} test(s) passed{}",
        config_path.display(),
        cfg.routes_file.display(),
        tests.len(),
        if lint {
            format!(", {} warning(s)", warnings.len())
        } else {
            String::new()
        }
    );
    0
}

/// The table a reload would build from `file` (no previous table, no
/// runtime: nothing is connected or resolved).
fn build_table(cfg: &GatewayConfig, file: config::RouteFile) -> Result<RouteTable, String> {
    let clients = UpstreamClients::new(PoolTimeouts {
        connect: cfg.limits.upstream_connect_timeout,
        idle: cfg.limits.upstream_idle_timeout,
    })
    .map_err(|e| format!("cannot set up upstream clients: {e}"))?;
    let metrics = Metrics::new();
    let ctx = BuildContext {
        metrics: &metrics,
        clients: &clients,
        default_timeout: cfg.limits.upstream_timeout,
        previous: None,
    };
    RouteTable::build(file, &ctx).map_err(|e| crate::proxy::error_chain(&e))
}

/// How `portico routes --match` should take the request to explain.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsRequest {
    /// From an operator: a TCP peer inside `operator.allow`, or carrying
    /// the operator token (`--operator`).
    pub operator: bool,
    /// Asking for the canary, by header or cookie (`--canary`).
    pub canary: bool,
}

/// `portico routes`: the table, or the route a request picks and why.
pub fn routes(
    config_path: &Path,
    request_path: Option<&str>,
    host: Option<&str>,
    how: AsRequest,
) -> u8 {
    let (cfg, file) = match load_both(config_path) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match request_path {
        None => print_table(&cfg, &file),
        Some(raw) => explain(&cfg, &file, raw, host, how),
    }
    0
}

/// `portico routes --match PATH [--host HOST]`: each step of the request
/// path that decides the route, in the gateway's order and with its code
/// (the same matcher the live table uses).
fn explain(
    cfg: &GatewayConfig,
    file: &config::RouteFile,
    raw: &str,
    host: Option<&str>,
    how: AsRequest,
) {
    println!("request: {raw}");
    let (raw_path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    let normalized = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => {
            println!("result:  400 bad_request ({e})");
            return;
        }
    };
    if normalized != raw_path {
        println!("normalized: {normalized}");
    }
    let matching = path::without_params(&normalized);
    if matching != normalized {
        println!(
            "matched as: {matching} (path parameters after ';' are ignored for matching and kept upstream)"
        );
    }
    if crate::routing::reserved::is_reserved(&matching) {
        println!(
            "result:  404 no_route (reserved operator path; served only on the operator listener)"
        );
        return;
    }
    let mut matcher = RouteMatcher::new();
    for spec in &file.routes {
        // Paths were validated by the loader; insertion cannot fail here.
        let _ = matcher.insert(spec.host.as_ref(), spec.exact, &spec.path, spec, || ());
    }
    let Some(found) = matcher.lookup(host, &matching) else {
        println!(
            "host:    {} -> no host rule covers it, and there are no routes without host",
            host.unwrap_or("(none)")
        );
        println!("result:  404 no_route");
        return;
    };
    println!(
        "host:    {}",
        describe_host(host, found.host, found.pattern)
    );
    let Some((spec, exact)) = found.route else {
        println!(
            "result:  404 no_route (no route of this host table matches; other host tables are not consulted)"
        );
        let table = found.pattern.cloned();
        near_misses(file, table.as_ref(), None, &matching);
        return;
    };
    let candidates: Vec<String> = file
        .routes
        .iter()
        .filter(|r| r.host == spec.host && r.key() != spec.key())
        .filter(|r| route_matches(r, &matching))
        .map(RouteSpec::label)
        .collect();
    println!("route:   {} (line {})", spec.label(), spec.line);
    let why = match (exact, candidates.is_empty()) {
        (true, true) => "exact path".to_string(),
        (true, false) => format!("exact path, preferred over: {}", candidates.join(", ")),
        (false, true) => "the only prefix that matches segment-wise".to_string(),
        (false, false) => format!(
            "longest matching prefix; also matched: {}",
            candidates.join(", ")
        ),
    };
    println!("why:     {why}");
    near_misses(file, spec.host.as_ref(), Some(spec), &matching);
    let listed = |urls: &[config::BackendUrl]| {
        urls.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !spec.allow_from.is_empty() {
        let nets: Vec<String> = spec.allow_from.iter().map(ToString::to_string).collect();
        println!(
            "allowed: TCP peers in {} (others get 403 forbidden)",
            nets.join(", ")
        );
    }
    if spec.https_redirect {
        println!(
            "https redirect: on the plain listener, 308 to the same host and target on the HTTPS listener"
        );
    }
    if let Some(r) = &spec.redirect {
        println!(
            "redirect: {} to {} (answered by Portico, no backend)",
            r.status.as_u16(),
            r.location.to_str().unwrap_or_default()
        );
        return;
    }
    let stable = listed(&spec.backends);
    match &spec.canary {
        None => {
            println!("canary:  none on this route");
            println!("backend: {stable}");
        }
        Some(k) => {
            let canary = listed(&k.backends);
            let share = match (k.weight, k.sticky) {
                (0, _) => "operator-only (weight 0)".to_string(),
                (w, false) => format!("weight {w}%"),
                (w, true) => format!("weight {w}%, sticky cookie"),
            };
            println!("canary:  {canary} ({share})");
            let taken = crate::routing::canary::operator_choice(how.operator, how.canary);
            let why = match (how.operator, how.canary) {
                (true, true) => "taken: an operator (--operator) asks for it (--canary)",
                (false, true) => {
                    "not taken for asking: it asks (--canary) but is not from an operator (a TCP peer in operator.allow, or the operator token in x-portico-canary-token; --operator); asking alone never reaches the canary"
                }
                (true, false) => {
                    "not taken: from an operator, but it does not ask (x-portico-canary: 1 or the cookie portico-canary=1; --canary)"
                }
                (false, false) => {
                    "not taken: neither from an operator (--operator) nor asking (--canary)"
                }
            };
            println!("canary decision: {why}");
            if taken {
                println!("backend: {canary} (the canary)");
            } else if k.weight > 0 {
                let sticky = if k.sticky {
                    "; the client keeps its side with a signed cookie"
                } else {
                    ""
                };
                println!(
                    "by weight: {}% of such requests go to the canary by chance{sticky}",
                    k.weight
                );
                println!(
                    "backend: {stable} ({}%), or the canary {canary} ({}%)",
                    100 - u32::from(k.weight),
                    k.weight
                );
            } else {
                println!("backend: {stable}");
            }
        }
    }
    let segments = path::segments(&spec.path);
    let mut upstream = if spec.strip_prefix {
        path::strip_segments(&normalized, segments).to_string()
    } else {
        normalized.to_string()
    };
    if let Some(q) = query {
        upstream.push('?');
        upstream.push_str(q);
    }
    println!("upstream path: {upstream}");
    if let Some(h) = &spec.host_header {
        println!("upstream host: {}", h.to_str().unwrap_or_default());
    }
    if let Some(n) = spec.max_body_size {
        println!("max body: {n} bytes (the route's max_body_size)");
    }
    let timeout = spec.timeout.unwrap_or(cfg.limits.upstream_timeout);
    println!("timeout: {}", humantime::format_duration(timeout));
}

/// The routes of the host table that come nearest to `path` without
/// matching it, each with the segment that ruled it out: those longer
/// than the chosen route (under it), or, with none chosen, those sharing
/// the path's first segment. At most ten, nearest first.
fn near_misses(
    file: &config::RouteFile,
    table: Option<&HostPattern>,
    chosen: Option<&RouteSpec>,
    path: &str,
) {
    let request: Vec<&str> = path.split('/').skip(1).collect();
    let mut misses: Vec<(usize, String)> = file
        .routes
        .iter()
        .filter(|r| r.host.as_ref() == table)
        .filter(|r| !route_matches(r, path))
        .filter(|r| match chosen {
            Some(c) => r.path.len() > c.path.len() && config::governance::under(&c.path, &r.path),
            // Same first segment, or one spelled as the start of the
            // other (/billing for /billingX).
            None => match (
                config::governance::first_segment(&r.path),
                config::governance::first_segment(path),
            ) {
                (Some(a), Some(b)) => a.starts_with(b) || b.starts_with(a),
                _ => false,
            },
        })
        .map(|r| {
            let wanted: Vec<&str> = r.path.split('/').skip(1).collect();
            let same = wanted
                .iter()
                .zip(&request)
                .take_while(|(a, b)| a == b)
                .count();
            let reason = if r.exact {
                format!("exact: matches only {} itself", r.path)
            } else if same >= request.len() {
                format!(
                    "the path ends before segment {} ({:?}) of the prefix",
                    same + 1,
                    wanted.get(same).copied().unwrap_or_default()
                )
            } else {
                format!(
                    "segment {} is {:?}, the prefix wants {:?} (prefixes match whole segments)",
                    same + 1,
                    request[same],
                    wanted.get(same).copied().unwrap_or_default()
                )
            };
            (same, format!("{} (line {}): {reason}", r.label(), r.line))
        })
        .collect();
    misses.sort_by_key(|m| std::cmp::Reverse(m.0));
    let total = misses.len();
    for (i, (_, line)) in misses.into_iter().take(10).enumerate() {
        let head = if i == 0 {
            "not matched:"
        } else {
            "            "
        };
        println!("{head} {line}");
    }
    if total > 10 {
        println!("             ... and {} more", total - 10);
    }
}

fn describe_host(host: Option<&str>, how: HostMatch, rule: Option<&HostPattern>) -> String {
    let asked = host.unwrap_or("(none)");
    match (how, rule) {
        (HostMatch::Exact, Some(rule)) => format!("{asked} -> host table {rule} (exact host rule)"),
        (HostMatch::Wildcard, Some(rule)) => {
            format!("{asked} -> host table {rule} (wildcard rule; no exact host rule for it)")
        }
        _ => format!("{asked} -> the routes without host (no host rule covers it)"),
    }
}

/// Whether a route would match the path on its own (for "also matched").
fn route_matches(spec: &RouteSpec, path: &str) -> bool {
    if spec.exact {
        return spec.path == path;
    }
    spec.path == "/"
        || path
            .strip_prefix(spec.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn print_table(cfg: &GatewayConfig, file: &config::RouteFile) {
    println!("# {} ({} routes)", file.source.display(), file.routes.len());
    println!(
        "{:<24} {:<32} {:<6} {:<9} BACKENDS",
        "HOST", "ROUTE", "STRIP", "TIMEOUT"
    );
    for r in &file.routes {
        let mut backends: Vec<String> = r.backends.iter().map(|b| b.to_string()).collect();
        if let Some(rd) = &r.redirect {
            backends.push(format!(
                "redirect {} {}",
                rd.status.as_u16(),
                rd.location.to_str().unwrap_or_default()
            ));
        }
        let timeout = r.timeout.unwrap_or(cfg.limits.upstream_timeout);
        println!(
            "{:<24} {:<32} {:<6} {:<9} {}",
            r.host_label(),
            r.label(),
            r.strip_prefix,
            humantime::format_duration(timeout).to_string(),
            backends.join(", ")
        );
    }
}

fn load_both(config_path: &Path) -> Result<(GatewayConfig, config::RouteFile), u8> {
    let cfg = config::load_gateway_config(config_path).map_err(|e| report(&e))?;
    let file = config::load_route_file(&cfg.routes_file).map_err(|e| report(&e))?;
    Ok((cfg, file))
}

/// Prints every error on stderr, one per line, and returns exit code 1.
fn report(errors: &ConfigErrors) -> u8 {
    eprintln!("{errors}");
    EXIT_INVALID
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portico-worker")
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            EXIT_INVALID
        })
}

/// `portico demo`.
pub fn demo(listen: SocketAddr, listen_https: SocketAddr) -> u8 {
    let _guard = logging::init(Some("info"));
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(crate::demo::run(listen, listen_https))
}

/// `portico import`: the route file on stdout (or `output`), every finding
/// on stderr; with `explain`, the behaviour differences on stdout. Exit 1
/// when an input cannot be read or parsed.
pub fn import(opts: &crate::import::ImportOptions, output: Option<&Path>, explain: bool) -> u8 {
    let imported = match crate::import::import(opts) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("portico import: {e}");
            return EXIT_INVALID;
        }
    };
    for f in &imported.findings {
        eprintln!(
            "portico import: {}",
            crate::import::emit_comment(&f.to_string())
        );
    }
    eprintln!(
        "portico import: {} route(s), {} finding(s), {} request(s) routed differently from ingress-nginx{}",
        imported.routes.len(),
        imported.findings.len(),
        imported.differences.len(),
        if explain { "" } else { " (see --explain)" }
    );
    if let Some(path) = output
        && let Err(e) = std::fs::write(path, &imported.text)
    {
        eprintln!("portico import: {}: cannot write: {e}", path.display());
        return EXIT_INVALID;
    }
    if explain {
        print!("{}", imported.explanation);
    } else if output.is_none() {
        print!("{}", imported.text);
    }
    0
}
