//! The commands behind `src/main.rs`, here so they can be tested. Each
//! returns the process exit code: 0 ok, 1 invalid configuration.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{self, ConfigErrors, GatewayConfig};
use crate::observability::logging;
use crate::routing::path;

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
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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

/// `portico check`: every error of both files, then exit 1; or a summary and 0.
pub fn check(config_path: &Path) -> u8 {
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
    match config::load_route_file(&cfg.routes_file) {
        Ok(routes) => {
            println!(
                "{}: ok\n{}: ok, {} route(s)",
                config_path.display(),
                cfg.routes_file.display(),
                routes.routes.len()
            );
            0
        }
        Err(errors) => report(&errors),
    }
}

/// `portico routes`: the table, or the route a path picks and why.
pub fn routes(config_path: &Path, request_path: Option<&str>, host: Option<&str>) -> u8 {
    let (cfg, file) = match load_both(config_path) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let Some(raw) = request_path else {
        print_table(&cfg, &file);
        return 0;
    };
    if let Some(h) = host {
        println!("host:    {h} (routes match on the path only; every host shares one table)");
    }
    println!("request: {raw}");
    let (raw_path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    let normalized = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => {
            println!("result:  400 bad_request ({e})");
            return 0;
        }
    };
    if normalized != raw_path {
        println!("normalized: {normalized}");
    }
    if crate::operator::is_operator_path(&normalized) {
        println!(
            "result:  404 no_route (reserved operator path; served only on the operator listener)"
        );
        return 0;
    }
    let mut router = crate::routing::prefix::PrefixRouter::new();
    for spec in &file.routes {
        // Prefixes were validated by the loader; insertion cannot fail here.
        let _ = router.insert(&spec.prefix, spec);
    }
    match router.lookup(&normalized) {
        None => {
            println!("result:  404 no_route (no prefix matches segment-wise)");
        }
        Some(spec) => {
            let others: Vec<&str> = file
                .routes
                .iter()
                .filter(|r| r.prefix != spec.prefix && prefix_matches(&r.prefix, &normalized))
                .map(|r| r.prefix.as_str())
                .collect();
            println!("route:   {} (line {})", spec.prefix, spec.line);
            let why = if others.is_empty() {
                "the only prefix that matches segment-wise".to_string()
            } else {
                format!(
                    "longest matching prefix; also matched: {}",
                    others.join(", ")
                )
            };
            println!("why:     {why}");
            let backends: Vec<String> = spec.backends.iter().map(|b| b.to_string()).collect();
            println!("backend: {}", backends.join(", "));
            let mut upstream = if spec.strip_prefix && spec.prefix != "/" {
                let rest = &normalized[spec.prefix.len()..];
                if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    "/".to_string()
                }
            } else {
                normalized.to_string()
            };
            if let Some(q) = query {
                upstream.push('?');
                upstream.push_str(q);
            }
            println!("upstream path: {upstream}");
            let timeout = spec.timeout.unwrap_or(cfg.limits.upstream_timeout);
            println!("timeout: {}", humantime::format_duration(timeout));
        }
    }
    0
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn print_table(cfg: &GatewayConfig, file: &config::RouteFile) {
    println!("# {} ({} routes)", file.source.display(), file.routes.len());
    println!("{:<32} {:<6} {:<9} BACKENDS", "PREFIX", "STRIP", "TIMEOUT");
    for r in &file.routes {
        let backends: Vec<String> = r.backends.iter().map(|b| b.to_string()).collect();
        let timeout = r.timeout.unwrap_or(cfg.limits.upstream_timeout);
        println!(
            "{:<32} {:<6} {:<9} {}",
            r.prefix,
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
