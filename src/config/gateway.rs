//! `portico.yaml`, the gateway's own config (owned by the platform team,
//! read once at start): the validated [`GatewayConfig`] types, their
//! defaults, and the walk from the YAML tree to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::check::{Checker, Map};
use super::error::ConfigErrors;
use super::yaml::{self, Node, Pos};

/// The validated `portico.yaml`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file this was loaded from, for messages and for `portico check`.
    pub source: PathBuf,
    /// Public listeners.
    pub listen: Listen,
    /// Certificates for `listen.https`; `Some` exactly when `https` is set.
    pub tls: Option<TlsSettings>,
    /// The operator listener (`/healthz`, `/readyz`, `/metrics`, `/routes`).
    pub operator: OperatorSettings,
    /// The route file (live-reloaded), resolved against the config file's
    /// directory so the gateway does not depend on its working directory.
    pub routes_file: PathBuf,
    /// `log_level`, lowercased; `RUST_LOG` may override it.
    pub log_level: Option<String>,
    pub limits: Limits,
    pub shutdown: ShutdownSettings,
    /// `workers`: event loops serving the public listeners, each a
    /// single-threaded runtime on its own thread.
    pub workers: Workers,
    /// `dns.nameservers`: where routes with `discovery: dns` resolve their
    /// backends; empty means `/etc/resolv.conf` (search domains, ndots).
    pub dns_nameservers: Vec<SocketAddr>,
    /// `tracing.otlp`: span export; `None` exports nothing.
    pub otlp: Option<super::telemetry::OtlpSettings>,
}

/// How many event loops serve the public listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU the process may use (`std::thread::available_parallelism`,
    /// which honours cgroup CPU quotas and affinity masks).
    Auto,
    Fixed(usize),
}

impl Workers {
    /// The most `workers` may say: more threads than this only add switches.
    pub const MAX: usize = 256;

    /// The number of workers to start.
    pub fn count(self) -> usize {
        match self {
            Workers::Fixed(n) => n,
            Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Public listeners. At least one of `http` and `https` is set.
#[derive(Debug, Clone)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// Answer plain HTTP with a redirect to HTTPS instead of proxying it.
    /// Only `true` when both listeners are set.
    pub redirect_to_https: bool,
    /// The port clients use for HTTPS, when it is not the HTTPS listener's
    /// own (behind a Service mapping 443 to 8443, say). 443 is left out of
    /// the redirect URL.
    pub redirect_port: Option<u16>,
}

/// TLS for the public HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Never empty. SNI picks by the certificates' names; the first is the
    /// default for clients that send no (or an unknown) server name.
    pub certificates: Vec<CertificatePaths>,
    /// A client that has not finished its handshake by then is dropped, so
    /// half-open TLS connections cannot pin connection permits.
    pub handshake_timeout: Duration,
    /// Answer `421 misdirected_request` when a request's host is not covered
    /// by the certificate its connection was served with (default on). Off
    /// is for setups where clients are known to reuse connections across
    /// names the certificate does not list.
    pub reject_misdirected: bool,
}

/// One PEM certificate chain and its private key, resolved against the
/// config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The operator listener: the only place `/healthz`, `/readyz`, `/metrics`
/// and `/routes` are served.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    pub listen: SocketAddr,
    /// TCP peers allowed in; everyone else gets 403. Never empty.
    pub allow: Vec<IpNet>,
    /// When set, `/metrics` and `/routes` need `Authorization: Bearer <token>`
    /// with the file's content. Resolved against the config file's directory.
    pub token_file: Option<PathBuf>,
}

/// Resource limits: each has a safe default, so a minimal config is safe.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed to receive a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// Largest request head accepted; beyond it, 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted; beyond it, 413.
    pub max_body_bytes: u64,
    /// Keep-alive connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Open public connections; further accepts wait.
    pub max_connections: usize,
    /// Requests being proxied at once; beyond it, 503 with `Retry-After`.
    pub max_inflight: usize,
    /// Time allowed to open a connection to a backend (502 after).
    pub upstream_connect_timeout: Duration,
    /// Time allowed for a backend's response head when the route sets no
    /// `timeout` (504 after).
    pub upstream_timeout: Duration,
    /// Pooled upstream connections idle this long are closed. Shorter than
    /// the backends' own keep-alive timeout, so Portico closes first and never
    /// sends on a connection the backend is closing.
    pub upstream_idle_timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this
    /// long is closed.
    pub upgrade_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_inflight: 5_000,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(50),
            upstream_timeout: Duration::from_secs(30),
            upgrade_idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Graceful shutdown on SIGTERM.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// Keep serving this long after SIGTERM (with `/readyz` at 503), because
    /// Kubernetes removes the pod from Service endpoints with a lag. May be 0.
    pub drain_delay: Duration,
    /// After the drain delay, how long in-flight requests get to finish.
    pub timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_delay: Duration::from_secs(5),
            timeout: Duration::from_secs(25),
        }
    }
}

impl Default for OperatorSettings {
    fn default() -> Self {
        OperatorSettings {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9901),
            allow: vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8)
                    .expect("valid prefix length"),
                IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).expect("valid prefix length"),
            ],
            token_file: None,
        }
    }
}

/// Default for `tls.handshake_timeout`.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const TOP_KEYS: &[&str] = &[
    "listen",
    "tls",
    "operator",
    "routes_file",
    "log_level",
    "limits",
    "shutdown",
    "workers",
    "dns",
    "tracing",
];
const LISTEN_KEYS: &[&str] = &["http", "https", "redirect_to_https", "redirect_port"];
const TLS_KEYS: &[&str] = &["certificates", "handshake_timeout", "reject_misdirected"];
const CERT_KEYS: &[&str] = &["cert", "key"];
const OPERATOR_KEYS: &[&str] = &["listen", "allow", "token_file"];
const LIMITS_KEYS: &[&str] = &[
    "header_read_timeout",
    "max_header_size",
    "max_body_size",
    "idle_timeout",
    "max_connections",
    "max_inflight",
    "upstream_connect_timeout",
    "upstream_timeout",
    "upstream_idle_timeout",
    "upgrade_idle_timeout",
];
const SHUTDOWN_KEYS: &[&str] = &["drain_delay", "timeout"];
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Parses and validates `portico.yaml`; `source` names the file in errors
/// and is the base for relative paths.
pub fn parse_gateway_config(source: &Path, text: &str) -> Result<GatewayConfig, ConfigErrors> {
    let root = yaml::parse(source, text)?;
    let mut c = Checker::new(source);
    let base = source.parent().unwrap_or(Path::new(""));
    let Some(top) = c.mapping(&root, "portico.yaml", TOP_KEYS) else {
        return c.finish(None);
    };

    let listen = listen(&mut c, &top);
    let tls = top.get("tls").and_then(|node| tls(&mut c, node, base));
    let operator = operator(&mut c, &top, base);
    let routes_file = c
        .required(
            &top,
            "routes_file",
            "",
            "name the route file, e.g. routes_file: routes/routes.yaml",
        )
        .and_then(|entry| c.path(&entry.value, "routes_file", base));
    let log_level = top
        .get("log_level")
        .and_then(|node| log_level(&mut c, node));
    let limits = limits(&mut c, &top);
    let shutdown = shutdown(&mut c, &top);
    let workers = match top.get("workers") {
        None => Some(Workers::Auto),
        Some(node) => workers(&mut c, node),
    };
    let dns_nameservers = match top.get("dns") {
        None => Some(Vec::new()),
        Some(node) => dns(&mut c, node),
    };
    let otlp = super::telemetry::tracing(&mut c, &top);

    // Cross-field rules, checked only when both sides were written, so one
    // mistake gives one error.
    if let Some(listen) = &listen {
        match (listen.https_at, top.entry("tls").filter(|e| !e.value.is_null())) {
            (Some(https_pos), None) => c.error(
                https_pos,
                "listen.https needs certificates: add a tls section, e.g. tls: {certificates: [{cert: tls.crt, key: tls.key}]}",
            ),
            (None, Some(entry)) => c.error(
                entry.key_pos,
                "tls is set but listen.https is not; add listen.https (e.g. \"0.0.0.0:8443\") or remove tls",
            ),
            _ => {}
        }
        // The operator goes first so that a clash with its default address
        // is reported at the public listener, which the user did write.
        let mut addresses: Vec<(&str, SocketAddr, Pos)> = Vec::new();
        if let Some(op) = &operator {
            let name = if op.listen_pos.is_some() {
                "operator.listen"
            } else {
                "the default operator.listen"
            };
            addresses.push((name, op.settings.listen, op.listen_pos.unwrap_or(top.pos)));
        }
        addresses.extend(listen.http.map(|(a, p)| ("listen.http", a, p)));
        addresses.extend(listen.https.map(|(a, p)| ("listen.https", a, p)));
        check_address_clashes(&mut c, &addresses);
    }

    let config = (|| {
        let listen = listen?;
        let operator = operator?;
        Some(GatewayConfig {
            source: source.to_path_buf(),
            listen: Listen {
                http: listen.http.map(|(a, _)| a),
                https: listen.https.map(|(a, _)| a),
                redirect_to_https: listen.redirect_to_https,
                redirect_port: listen.redirect_port,
            },
            tls,
            operator: operator.settings,
            routes_file: routes_file?,
            log_level,
            limits,
            shutdown,
            workers: workers?,
            dns_nameservers: dns_nameservers?,
            otlp: otlp?,
        })
    })();
    c.finish(config)
}

/// `dns: {nameservers: ["10.96.0.10:53", ...]}`.
fn dns(c: &mut Checker<'_>, node: &Node) -> Option<Vec<SocketAddr>> {
    let m = c.mapping(node, "dns", &["nameservers"])?;
    let Some(entry) = m.entry("nameservers") else {
        return Some(Vec::new());
    };
    let items = c.list(&entry.value, "dns.nameservers", "IP:PORT addresses")?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match c.socket_addr(item, &format!("dns.nameservers[{i}]")) {
            Some(a) => out.push(a),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `workers: auto` or a whole number from 1 to [`Workers::MAX`].
fn workers(c: &mut Checker<'_>, node: &Node) -> Option<Workers> {
    if node.as_plain() == Some("auto") {
        return Some(Workers::Auto);
    }
    let number = node
        .as_plain()
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<usize>().ok());
    match number {
        Some(n) if (1..=Workers::MAX).contains(&n) => Some(Workers::Fixed(n)),
        _ => {
            c.error(
                node.pos,
                format!(
                    "workers: expected auto (one per CPU) or a whole number from 1 to {}, got {}",
                    Workers::MAX,
                    node.describe()
                ),
            );
            None
        }
    }
}

/// `listen` with the position of each address, for cross-field messages.
struct ListenAt {
    http: Option<(SocketAddr, Pos)>,
    https: Option<(SocketAddr, Pos)>,
    /// Where `https` was written, even if its address was invalid: a typo
    /// in the address must not also produce "tls is set but https is not".
    https_at: Option<Pos>,
    redirect_to_https: bool,
    redirect_port: Option<u16>,
}

fn listen(c: &mut Checker<'_>, top: &Map<'_>) -> Option<ListenAt> {
    let Some(node) = top.get("listen") else {
        c.error(
            top.entry("listen").map_or(top.pos, |e| e.key_pos),
            "listen is required: set listen.http and/or listen.https, e.g. listen: {http: \"0.0.0.0:8080\"}",
        );
        return None;
    };
    let m = c.mapping(node, "listen", LISTEN_KEYS)?;
    let address = |c: &mut Checker<'_>, key: &str| {
        let node = m.get(key)?;
        c.socket_addr(node, &format!("listen.{key}"))
            .map(|addr| (addr, node.pos))
    };
    let http = address(c, "http");
    let https = address(c, "https");
    let redirect = m.get("redirect_to_https");
    let redirect_to_https = redirect
        .and_then(|n| c.boolean(n, "listen.redirect_to_https"))
        .unwrap_or(false);

    if m.get("http").is_none() && m.get("https").is_none() {
        c.error(
            m.pos,
            "listen: set at least one of listen.http or listen.https, e.g. http: \"0.0.0.0:8080\"",
        );
        return None;
    }
    if let Some(node) = redirect.filter(|_| redirect_to_https)
        && (m.get("http").is_none() || m.get("https").is_none())
    {
        c.error(
            node.pos,
            "listen.redirect_to_https needs both listen.http and listen.https (it redirects plain HTTP to the HTTPS listener)",
        );
    }
    let redirect_port = m.get("redirect_port").and_then(|node| {
        let port = c.count(node, "listen.redirect_port")?;
        if !redirect_to_https {
            c.error(
                node.pos,
                "listen.redirect_port only applies with redirect_to_https: true (set it, or remove redirect_port)",
            );
            return None;
        }
        match u16::try_from(port) {
            Ok(p) => Some(p),
            Err(_) => {
                c.error(
                    node.pos,
                    format!("listen.redirect_port must be a port from 1 to 65535, got {port}"),
                );
                None
            }
        }
    });
    // An invalid address was reported above; keep going so the cross-field
    // checks still see the listener as "written".
    Some(ListenAt {
        http,
        https,
        https_at: m.get("https").map(|n| n.pos),
        redirect_to_https,
        redirect_port,
    })
}

fn tls(c: &mut Checker<'_>, node: &Node, base: &Path) -> Option<TlsSettings> {
    let m = c.mapping(node, "tls", TLS_KEYS)?;
    let handshake_timeout = m
        .get("handshake_timeout")
        .map_or(Some(DEFAULT_HANDSHAKE_TIMEOUT), |n| {
            c.duration(n, "tls.handshake_timeout", false)
        });
    let reject_misdirected = m
        .get("reject_misdirected")
        .map_or(Some(true), |n| c.boolean(n, "tls.reject_misdirected"));
    let hint = "list cert/key pairs, e.g. certificates: [{cert: tls.crt, key: tls.key}]";
    let entry = c.required(&m, "certificates", "tls", hint)?;
    let items = c.list(&entry.value, "tls.certificates", "{cert, key} pairs")?;
    if items.is_empty() {
        c.error(
            entry.value.pos,
            format!("tls.certificates: must not be empty; {hint}"),
        );
        return None;
    }
    let mut certificates = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, item) in items.iter().enumerate() {
        let name = format!("tls.certificates[{i}]");
        let pair = c.mapping(item, &name, CERT_KEYS).and_then(|pair| {
            let path = |c: &mut Checker<'_>, key: &str| {
                let hint = format!(
                    "the PEM file with the {}",
                    if key == "cert" {
                        "certificate chain"
                    } else {
                        "private key"
                    }
                );
                let entry = c.required(&pair, key, &name, &hint)?;
                c.path(&entry.value, &format!("{name}.{key}"), base)
            };
            let cert = path(c, "cert");
            let key = path(c, "key");
            Some(CertificatePaths {
                cert: cert?,
                key: key?,
            })
        });
        match pair {
            Some(pair) => certificates.push(pair),
            None => complete = false,
        }
    }
    if !complete {
        return None;
    }
    Some(TlsSettings {
        certificates,
        handshake_timeout: handshake_timeout?,
        reject_misdirected: reject_misdirected?,
    })
}

/// `operator`, with where its listen address was written (`None`: default).
struct OperatorAt {
    settings: OperatorSettings,
    listen_pos: Option<Pos>,
}

fn operator(c: &mut Checker<'_>, top: &Map<'_>, base: &Path) -> Option<OperatorAt> {
    let defaults = OperatorSettings::default();
    let Some(node) = top.get("operator") else {
        return Some(OperatorAt {
            settings: defaults,
            listen_pos: None,
        });
    };
    let m = c.mapping(node, "operator", OPERATOR_KEYS)?;
    let listen_node = m.get("listen");
    let listen = match listen_node {
        Some(n) => c.socket_addr(n, "operator.listen"),
        None => Some(defaults.listen),
    };
    let allow = match m.get("allow") {
        Some(n) => allow_list(c, n),
        None => Some(defaults.allow),
    };
    let token_file = match m.get("token_file") {
        Some(n) => c.path(n, "operator.token_file", base).map(Some),
        None => Some(None),
    };
    Some(OperatorAt {
        settings: OperatorSettings {
            listen: listen?,
            allow: allow?,
            token_file: token_file?,
        },
        listen_pos: listen_node.map(|n| n.pos),
    })
}

fn allow_list(c: &mut Checker<'_>, node: &Node) -> Option<Vec<IpNet>> {
    let items = c.list(
        node,
        "operator.allow",
        "CIDRs like 10.0.0.0/8 or addresses like 127.0.0.1",
    )?;
    if items.is_empty() {
        // Fail-closed would lock out the kubelet's probes too; almost surely
        // a mistake, so say so rather than start a gateway nobody can probe.
        c.error(
            node.pos,
            "operator.allow: must not be empty (nothing could reach /healthz); list CIDRs, e.g. [127.0.0.0/8, 10.0.0.0/8], or remove the key for the default (loopback only)",
        );
        return None;
    }
    let mut nets = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, item) in items.iter().enumerate() {
        let name = format!("operator.allow[{i}]");
        match item.as_str().map(parse_cidr) {
            Some(Ok(net)) => nets.push(net),
            Some(Err(message)) => {
                c.error(item.pos, format!("{name}: {message}"));
                complete = false;
            }
            None => {
                c.error(
                    item.pos,
                    format!(
                        "{name}: expected a CIDR like \"10.0.0.0/8\" or an IP address, got {}",
                        item.describe()
                    ),
                );
                complete = false;
            }
        }
    }
    complete.then_some(nets)
}

/// A CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3` = `/32`, `::1` =
/// `/128`). Host bits must be zero: `10.1.2.3/8` is ambiguous in an access
/// list (one host or the whole /8?), so it is an error that shows both.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{text:?} has host bits set; write {:?} for the network or \"{}\" for the single address",
                net.trunc().to_string(),
                net.addr()
            ));
        }
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "expected a CIDR like \"10.0.0.0/8\" or an IP address like \"127.0.0.1\", got {text:?}"
    ))
}

fn log_level(c: &mut Checker<'_>, node: &Node) -> Option<String> {
    let text = c.string(node, "log_level", "a log level")?;
    let level = text.to_ascii_lowercase();
    if LOG_LEVELS.contains(&level.as_str()) {
        Some(level)
    } else {
        c.error(
            node.pos,
            format!(
                "log_level: expected one of {}, got {text:?}",
                LOG_LEVELS.join(", ")
            ),
        );
        None
    }
}

/// Every limit has a default, so an invalid one is reported and the default
/// stands in (the config fails anyway; this keeps the walk simple).
fn limits(c: &mut Checker<'_>, top: &Map<'_>) -> Limits {
    let mut limits = Limits::default();
    let Some(m) = top
        .get("limits")
        .and_then(|node| c.mapping(node, "limits", LIMITS_KEYS))
    else {
        return limits;
    };
    let duration = |c: &mut Checker<'_>, key: &str, slot: &mut Duration| {
        if let Some(d) = m
            .get(key)
            .and_then(|n| c.duration(n, &format!("limits.{key}"), false))
        {
            *slot = d;
        }
    };
    duration(c, "header_read_timeout", &mut limits.header_read_timeout);
    duration(c, "idle_timeout", &mut limits.idle_timeout);
    duration(
        c,
        "upstream_connect_timeout",
        &mut limits.upstream_connect_timeout,
    );
    duration(c, "upstream_timeout", &mut limits.upstream_timeout);
    duration(
        c,
        "upstream_idle_timeout",
        &mut limits.upstream_idle_timeout,
    );
    duration(c, "upgrade_idle_timeout", &mut limits.upgrade_idle_timeout);
    if let Some(n) = m.get("max_header_size")
        && let Some(bytes) = c.size(n, "limits.max_header_size")
    {
        match usize::try_from(bytes) {
            Ok(bytes) => limits.max_header_bytes = bytes,
            Err(_) => c.error(
                n.pos,
                format!("limits.max_header_size: {} is too large", n.describe()),
            ),
        }
    }
    if let Some(bytes) = m
        .get("max_body_size")
        .and_then(|n| c.size(n, "limits.max_body_size"))
    {
        limits.max_body_bytes = bytes;
    }
    if let Some(n) = m
        .get("max_connections")
        .and_then(|n| c.count(n, "limits.max_connections"))
    {
        limits.max_connections = n;
    }
    if let Some(n) = m
        .get("max_inflight")
        .and_then(|n| c.count(n, "limits.max_inflight"))
    {
        limits.max_inflight = n;
    }
    limits
}

fn shutdown(c: &mut Checker<'_>, top: &Map<'_>) -> ShutdownSettings {
    let mut settings = ShutdownSettings::default();
    let Some(m) = top
        .get("shutdown")
        .and_then(|node| c.mapping(node, "shutdown", SHUTDOWN_KEYS))
    else {
        return settings;
    };
    // A zero drain delay is legitimate outside Kubernetes (nothing to wait for).
    if let Some(d) = m
        .get("drain_delay")
        .and_then(|n| c.duration(n, "shutdown.drain_delay", true))
    {
        settings.drain_delay = d;
    }
    if let Some(d) = m
        .get("timeout")
        .and_then(|n| c.duration(n, "shutdown.timeout", false))
    {
        settings.timeout = d;
    }
    settings
}

/// Two listeners on one port would fail at bind time with a bare "address in
/// use"; say which keys collide instead. Port 0 (ephemeral) never collides.
fn check_address_clashes(c: &mut Checker<'_>, addresses: &[(&str, SocketAddr, Pos)]) {
    for (i, (name, addr, pos)) in addresses.iter().enumerate() {
        let clash = addresses[..i].iter().find(|(_, other, _)| {
            addr.port() != 0
                && addr.port() == other.port()
                && (addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified())
        });
        if let Some((other_name, other, _)) = clash {
            c.error(
                *pos,
                format!("{name}: {addr} uses the same port as {other_name} ({other}); each listener needs its own port"),
            );
        }
    }
}
