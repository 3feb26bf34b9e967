//! The `nginx.ingress.kubernetes.io/*` annotations of one Ingress, parsed
//! as data into what a Portico route can do. Each annotation is either
//! translated (a typed value), reported as having no equivalent, or refused
//! (snippets, external auth and the like: the Ingress's routes are then not
//! imported at all, because a route imported without its control would be
//! more open than the original).

use std::collections::BTreeMap;

use super::{Finding, FindingKind};

/// The annotation prefix of ingress-nginx.
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// `backend-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
    /// Cleartext HTTP/2 (`h2c://`).
    Grpc,
    /// `https://` with `http2: true`.
    Grpcs,
}

/// `redirect:` of a route: Portico answers it without a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectSpec {
    /// An absolute `http(s)://` URL or a path starting with `/`.
    pub to: String,
    /// 301, 302, 307 or 308.
    pub status: u16,
}

/// `canary*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryAnnotations {
    /// Percent of requests, 0 to 100.
    pub weight: u8,
    /// `canary-by-header`, `canary-by-cookie`: who may ask for it.
    pub asked_by: Option<String>,
}

/// What one Ingress's annotations ask of its routes.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub canary: Option<CanaryAnnotations>,
    pub use_regex: bool,
    pub rewrite_target: Option<String>,
    pub timeout_secs: Option<u64>,
    pub max_body_size: Option<u64>,
    pub protocol: BackendProtocol,
    pub allow_from: Vec<ipnet::IpNet>,
    pub redirect: Option<RedirectSpec>,
    pub app_root: Option<String>,
    pub hash_cookie: Option<String>,
    /// `ssl-redirect` (default: on for TLS hosts).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect: "true"`: redirect even without TLS on the host.
    pub force_ssl_redirect: bool,
    /// `upstream-vhost`: the `Host` the backend gets.
    pub host_header: Option<String>,
    /// Something security-relevant could not be carried over: import none
    /// of the Ingress's routes.
    pub refused: bool,
}

/// Annotations whose meaning is injected configuration or a control
/// Portico does not have; importing the routes without them would open
/// what the original closed.
fn security_refusal(key: &str) -> Option<&'static str> {
    if key.ends_with("-snippet") || key == "configuration-snippet" {
        return Some(
            "snippets are raw nginx configuration; they can do anything (and have been used to read other tenants' secrets, CVE-2021-25742), so they are never translated. Move what it does into the service or an explicit route setting",
        );
    }
    if key.starts_with("auth-") {
        return Some(
            "authentication at the ingress (external auth, basic auth, client certificates) has no Portico equivalent; importing the route without it would expose the service. Authenticate in the service, then import again",
        );
    }
    if key.starts_with("lua-") || key.contains("modsecurity") || key.starts_with("enable-owasp") {
        return Some(
            "a WAF or Lua hook at the ingress has no Portico equivalent; the routes are not imported so that nothing becomes less protected",
        );
    }
    match key {
        "denylist-source-range" | "blacklist-source-range" => Some(
            "a deny-list has no Portico equivalent (allow_from is an allow-list); the routes are not imported so that the denied sources do not get in",
        ),
        "ssl-passthrough" => Some(
            "TLS passthrough hands the connection to the backend undecrypted; Portico terminates TLS. Keep this host on a TCP load balancer",
        ),
        _ => None,
    }
}

/// Parses every annotation of `id`; findings go to `findings`.
pub fn parse(id: &str, map: &BTreeMap<String, String>, findings: &mut Vec<Finding>) -> Annotations {
    let mut a = Annotations::default();
    let mut report = |key: &str, kind: FindingKind, message: String| {
        findings.push(Finding {
            object: id.to_string(),
            subject: format!("{NGINX}{key}"),
            kind,
            message,
        });
    };
    let get = |k: &str| map.get(&format!("{NGINX}{k}")).map(|v| v.trim());
    let is_canary = get("canary") == Some("true");
    for (full, value) in map {
        let Some(key) = full.strip_prefix(NGINX) else {
            continue;
        };
        let value = value.trim();
        if let Some(why) = security_refusal(key) {
            a.refused = true;
            report(key, FindingKind::Security, why.to_string());
            continue;
        }
        // Canary Ingresses take only their canary settings from
        // ingress-nginx as well; the rest comes from the stable Ingress.
        if is_canary && !key.starts_with("canary") {
            report(
                key,
                FindingKind::Note,
                "ignored on a canary Ingress (ingress-nginx applies the stable Ingress's settings to both sides, as Portico does)".into(),
            );
            continue;
        }
        match key {
            "canary" => match value {
                "true" => {
                    let weight = canary_weight(get("canary-weight"), get("canary-weight-total"));
                    let weight = match weight {
                        Ok(w) => w,
                        Err(m) => {
                            report("canary-weight", FindingKind::Untranslated, m);
                            0
                        }
                    };
                    let asked_by = get("canary-by-header")
                        .map(|h| format!("header {h:?}"))
                        .or_else(|| get("canary-by-cookie").map(|c| format!("cookie {c:?}")));
                    a.canary = Some(CanaryAnnotations { weight, asked_by });
                }
                "false" => {}
                other => report(key, FindingKind::Untranslated, format!("expected \"true\" or \"false\", got {other:?}; not treated as a canary")),
            },
            "canary-weight" | "canary-weight-total" => {}
            "canary-by-header" | "canary-by-cookie" | "canary-by-header-value" | "canary-by-header-pattern" => {
                if is_canary {
                    report(
                        key,
                        FindingKind::Note,
                        format!("Portico's canary is asked for with x-portico-canary: 1 (or the cookie portico-canary=1), and only operators who ask reach it (a TCP peer in operator.allow, or the operator token); a public client sending {value:?} now gets the stable backend"),
                    );
                }
            }
            "use-regex" => match value {
                "true" => a.use_regex = true,
                "false" => {}
                other => report(key, FindingKind::Untranslated, format!("expected \"true\" or \"false\", got {other:?}")),
            },
            "rewrite-target" => a.rewrite_target = Some(value.to_string()),
            "proxy-read-timeout" | "proxy-send-timeout" => match seconds(value) {
                Ok(s) => {
                    a.timeout_secs = Some(a.timeout_secs.map_or(s, |t| t.max(s)));
                    report(key, FindingKind::Note, format!("translated to timeout: {s}s (the longest of proxy-read-timeout and proxy-send-timeout): Portico's timeout runs until the backend's response head, then the body streams without a cut-off, while nginx's timeouts apply between two reads or writes"));
                }
                Err(m) => report(key, FindingKind::Untranslated, m),
            },
            "proxy-connect-timeout" => report(
                key,
                FindingKind::Untranslated,
                format!("Portico's connect timeout is gateway-wide: set limits.upstream_connect_timeout: {}s in portico.yaml if every route may wait that long", value.parse::<u64>().unwrap_or(5)),
            ),
            "proxy-body-size" => match nginx_size(value) {
                Ok(0) => report(key, FindingKind::Untranslated, "0 (no limit) has no per-route equivalent: Portico always caps bodies; the route keeps limits.max_body_size from portico.yaml (raise that, or set max_body_size on the route)".into()),
                Ok(n) => a.max_body_size = Some(n),
                Err(m) => report(key, FindingKind::Untranslated, m),
            },
            "backend-protocol" => match value.to_ascii_uppercase().as_str() {
                "HTTP" | "AUTO_HTTP" => a.protocol = BackendProtocol::Http,
                "HTTPS" => a.protocol = BackendProtocol::Https,
                "GRPC" => a.protocol = BackendProtocol::Grpc,
                "GRPCS" => a.protocol = BackendProtocol::Grpcs,
                other => {
                    a.refused = true;
                    report(key, FindingKind::Skipped, format!("backend protocol {other:?} has no Portico equivalent (HTTP, HTTPS, GRPC, GRPCS); the routes are not imported, since the backend would not understand plain HTTP"));
                }
            },
            "whitelist-source-range" | "allowlist-source-range" => match cidrs(value) {
                Ok(list) => a.allow_from = list,
                Err(m) => {
                    // Fail-closed: an allow-list we cannot read must not
                    // turn into "everyone".
                    a.refused = true;
                    report(key, FindingKind::Security, format!("{m}; the routes are not imported, so that the service does not become reachable from everywhere"));
                }
            },
            "permanent-redirect" | "temporal-redirect" => {
                let permanent = key == "permanent-redirect";
                let code_key = if permanent { "permanent-redirect-code" } else { "temporal-redirect-code" };
                let default = if permanent { 301 } else { 302 };
                let status = match get(code_key) {
                    None => Ok(default),
                    Some(c) => match c.parse::<u16>() {
                        Ok(s @ (301 | 302 | 307 | 308)) => Ok(s),
                        _ => Err(format!("{code_key} must be 301, 302, 307 or 308, got {c:?}")),
                    },
                };
                match (redirect_url(value), status) {
                    (Ok(to), Ok(status)) => a.redirect = Some(RedirectSpec { to, status }),
                    (Err(m), _) | (_, Err(m)) => {
                        a.refused = true;
                        report(key, FindingKind::Skipped, format!("{m}; the routes are not imported (they would proxy instead of redirecting)"));
                    }
                }
            }
            "permanent-redirect-code" | "temporal-redirect-code" => {}
            "app-root" => match redirect_url(value) {
                Ok(to) if to.starts_with('/') && to != "/" => a.app_root = Some(to),
                Ok(_) => report(key, FindingKind::Untranslated, format!("app-root must be a path other than /, got {value:?}")),
                Err(m) => report(key, FindingKind::Untranslated, m),
            },
            "affinity" => match value {
                "cookie" => {
                    let name = get("session-cookie-name").unwrap_or("INGRESSCOOKIE");
                    if cookie_name(name) {
                        a.hash_cookie = Some(name.to_string());
                        report(key, FindingKind::Note, format!("translated to balance: {{hash_cookie: {name}}}: Portico hashes the client's cookie onto a backend but does not issue it (ingress-nginx sets it on the first answer), and with one Service URL the pods behind it are chosen by kube-proxy: for affinity to pods use a headless Service with discovery: dns"));
                    } else {
                        report("session-cookie-name", FindingKind::Untranslated, format!("{name:?} is not a cookie name"));
                    }
                }
                other => report(key, FindingKind::Untranslated, format!("only affinity: cookie translates, got {other:?}")),
            },
            "session-cookie-name" => {}
            "ssl-redirect" | "force-ssl-redirect" => match value {
                "true" | "false" => {
                    let on = value == "true";
                    if key == "ssl-redirect" {
                        a.ssl_redirect = Some(on);
                    } else {
                        a.force_ssl_redirect = on;
                    }
                    if on {
                        report(key, FindingKind::Note, "translated to https_redirect: true, which Portico honours only with its own HTTPS listener (listen.https): behind a load balancer that terminates TLS, plain requests arrive from it and must not be redirected, so remove the key there".into());
                    }
                }
                other => report(key, FindingKind::Untranslated, format!("expected \"true\" or \"false\", got {other:?}")),
            },
            "upstream-vhost" => {
                let valid = !value.is_empty()
                    && !value.contains('@')
                    && value.bytes().all(|b| b.is_ascii_graphic())
                    && value.parse::<http::uri::Authority>().is_ok();
                if valid {
                    a.host_header = Some(value.to_ascii_lowercase());
                } else {
                    report(key, FindingKind::Untranslated, format!("{value:?} is not a host name (with an optional port); the backend gets the client's Host"));
                }
            }
            "limit-rps" | "limit-rpm" | "limit-connections" | "limit-burst-multiplier" => report(
                key,
                FindingKind::Untranslated,
                "Portico has no per-client rate limit; max_inflight caps a route's concurrent requests (for every client together), which is not the same: rate-limit in front of Portico or in the service".into(),
            ),
            other => report(
                other,
                FindingKind::Untranslated,
                "no Portico equivalent; the route is imported without it: check that the service does not depend on it".into(),
            ),
        }
    }
    a
}

/// `canary-weight` scaled to percent by `canary-weight-total` (default 100).
fn canary_weight(weight: Option<&str>, total: Option<&str>) -> Result<u8, String> {
    let Some(w) = weight else { return Ok(0) };
    let w: u64 = w
        .parse()
        .map_err(|_| format!("canary-weight must be a whole number, got {w:?}; the canary gets weight 0 (operators only)"))?;
    let total: u64 = match total {
        None => 100,
        Some(t) => t.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
            format!("canary-weight-total must be a positive whole number, got {t:?}")
        })?,
    };
    if w > total {
        return Err(format!(
            "canary-weight {w} is more than canary-weight-total {total}"
        ));
    }
    if !(w * 100).is_multiple_of(total) {
        return Err(format!(
            "canary-weight {w} of {total} is not a whole percent; Portico's weight is a percent: set it by hand"
        ));
    }
    Ok((w * 100 / total) as u8)
}

/// A whole number of seconds, more than 0 (nginx's timeout annotations).
pub fn seconds(value: &str) -> Result<u64, String> {
    let digits = value.strip_suffix('s').unwrap_or(value);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && n <= 86_400 => Ok(n),
        _ => Err(format!(
            "expected a whole number of seconds from 1 to 86400, got {value:?}"
        )),
    }
}

/// nginx's size syntax: digits with an optional `k`, `m` or `g` (1024-based).
pub fn nginx_size(value: &str) -> Result<u64, String> {
    let fail = || format!("expected a size like 8m, 512k or 1g, got {value:?}");
    let (digits, mult) = match value.chars().last() {
        Some('k' | 'K') => (&value[..value.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&value[..value.len() - 1], 1 << 20),
        Some('g' | 'G') => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(fail)
}

/// A comma-separated list of CIDRs or addresses.
pub fn cidrs(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let mut out: Vec<ipnet::IpNet> = Vec::new();
    for part in value.split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let net = crate::config::parse_net(part)
            .ok_or_else(|| format!("{part:?} is not a CIDR (like 10.0.0.0/8) or an IP address"))?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    if out.is_empty() {
        return Err("the allow-list is empty".into());
    }
    Ok(out)
}

/// A redirect target: an absolute `http(s)://` URL or a path, printable
/// ASCII without spaces (a line break here is an injection attempt).
pub fn redirect_url(value: &str) -> Result<String, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{value:?} must be a URL of printable ASCII without spaces or line breaks"
        ));
    }
    if value.starts_with('/') && !value.starts_with("//") {
        return value
            .parse::<http::uri::PathAndQuery>()
            .map(|_| value.to_string())
            .map_err(|_| format!("{value:?} is not a valid path"));
    }
    match value.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.as_str().contains('@')) =>
        {
            Ok(value.to_string())
        }
        _ => Err(format!(
            "{value:?} must be an absolute http:// or https:// URL (without user info) or a path"
        )),
    }
}

/// An HTTP token (RFC 6265 cookie-name).
pub fn cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The ingress-nginx idiom for "strip this prefix": path `/x(/|$)(.*)`
/// with `rewrite-target: /$2` (or `/x/?(.*)` with `/$1`) sends `/x/a` as
/// `/a`. Returns the literal prefix `/x`, or why this rewrite cannot be
/// carried over.
pub fn strip_idiom(path: &str, target: &str) -> Result<String, String> {
    let prefix = match target {
        "/$2" => path.strip_suffix("(/|$)(.*)"),
        "/$1" => path
            .strip_suffix("/?(.*)")
            .or_else(|| path.strip_suffix("/(.*)")),
        _ => None,
    };
    match prefix {
        Some(p) if !p.is_empty() && !has_regex(p) => Ok(p.to_string()),
        Some("") => Ok("/".to_string()),
        _ if !target.contains('$') => Err(format!(
            "rewrite-target {target:?} replaces every path with a fixed one; Portico can only strip the route's prefix (strip_prefix: true)"
        )),
        _ => Err(format!(
            "rewrite-target {target:?} with path {path:?} is not the strip-a-prefix idiom (/x(/|$)(.*) with /$2); Portico has no regex rewrites: make the service accept the full path, or use a literal prefix with strip_prefix"
        )),
    }
}

/// Whether a path uses regex syntax (a `.` alone is read as itself).
pub fn has_regex(path: &str) -> bool {
    path.contains([
        '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_map(pairs: &[(&str, &str)]) -> (Annotations, Vec<Finding>) {
        let map = pairs
            .iter()
            .map(|(k, v)| (format!("{NGINX}{k}"), v.to_string()))
            .collect();
        let mut findings = Vec::new();
        let a = parse("ns/web", &map, &mut findings);
        (a, findings)
    }

    #[test]
    fn strip_idiom_table() {
        let cases = [
            ("/billing(/|$)(.*)", "/$2", Ok("/billing")),
            ("/api/v1(/|$)(.*)", "/$2", Ok("/api/v1")),
            ("/shop/?(.*)", "/$1", Ok("/shop")),
            ("/shop/(.*)", "/$1", Ok("/shop")),
            ("/(.*)", "/$1", Ok("/")),
            ("/x(/|$)(.*)", "/$1", Err(())),
            ("/a.+(/|$)(.*)", "/$2", Err(())),
            ("/x", "/", Err(())),
            ("/x(/|$)(.*)", "/new/$2", Err(())),
        ];
        for (path, target, want) in cases {
            let got = strip_idiom(path, target);
            match want {
                Ok(p) => assert_eq!(got.as_deref(), Ok(p), "{path} {target}"),
                Err(()) => assert!(got.is_err(), "{path} {target}: {got:?}"),
            }
        }
    }

    #[test]
    fn sizes_seconds_and_cidrs() {
        assert_eq!(nginx_size("8m"), Ok(8 << 20));
        assert_eq!(nginx_size("512K"), Ok(512 << 10));
        assert_eq!(nginx_size("1g"), Ok(1 << 30));
        assert_eq!(nginx_size("100"), Ok(100));
        assert!(nginx_size("8mb").is_err());
        assert!(nginx_size("-1").is_err());
        assert!(nginx_size("m").is_err());
        assert!(nginx_size("99999999999999999999g").is_err());
        assert_eq!(seconds("120"), Ok(120));
        assert_eq!(seconds("30s"), Ok(30));
        assert!(seconds("0").is_err());
        assert!(seconds("1.5").is_err());
        let list = cidrs("10.0.0.0/8, 192.168.1.7 ,2001:db8::/32,10.0.0.0/8").unwrap();
        let text: Vec<String> = list.iter().map(|n| n.to_string()).collect();
        assert_eq!(text, ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]);
        // Host bits are dropped, as nginx's allow reads them.
        assert_eq!(cidrs("10.1.2.3/8").unwrap()[0].to_string(), "10.0.0.0/8");
        assert!(cidrs("10.0.0.0/8\nallow all").is_err());
        assert!(cidrs(" , ").is_err());
    }

    #[test]
    fn redirect_urls_are_data() {
        assert!(redirect_url("https://new.example.com/x?y=1").is_ok());
        assert!(redirect_url("/app").is_ok());
        assert!(redirect_url("https://a.example.com\n  backend: http://evil").is_err());
        assert!(redirect_url("https://a.example.com/ x").is_err());
        assert!(redirect_url("javascript:alert(1)").is_err());
        assert!(redirect_url("//evil.example.com").is_err());
        assert!(redirect_url("https://user@evil.example.com/").is_err());
    }

    #[test]
    fn canary_weights() {
        assert_eq!(canary_weight(Some("25"), None), Ok(25));
        assert_eq!(canary_weight(Some("1"), Some("4")), Ok(25));
        assert!(canary_weight(Some("1"), Some("3")).is_err());
        assert!(canary_weight(Some("101"), None).is_err());
        assert!(canary_weight(Some("ten"), None).is_err());
        assert_eq!(canary_weight(None, None), Ok(0));
    }

    #[test]
    fn snippets_and_auth_refuse_the_ingress() {
        for key in [
            "configuration-snippet",
            "server-snippet",
            "auth-snippet",
            "auth-url",
            "auth-signin",
            "auth-type",
            "enable-modsecurity",
            "denylist-source-range",
        ] {
            let (a, findings) = parse_map(&[(key, "x")]);
            assert!(a.refused, "{key}");
            assert_eq!(findings[0].kind, FindingKind::Security, "{key}");
            assert_eq!(findings[0].subject, format!("{NGINX}{key}"));
        }
    }

    #[test]
    fn translated_values() {
        let (a, _) = parse_map(&[
            ("backend-protocol", "grpcs"),
            ("proxy-read-timeout", "120"),
            ("proxy-send-timeout", "30"),
            ("proxy-body-size", "16m"),
            ("whitelist-source-range", "10.0.0.0/8"),
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("upstream-vhost", "Billing.Internal:8080"),
        ]);
        assert!(!a.refused);
        assert_eq!(a.protocol, BackendProtocol::Grpcs);
        assert_eq!(a.timeout_secs, Some(120));
        assert_eq!(a.max_body_size, Some(16 << 20));
        assert_eq!(a.allow_from.len(), 1);
        assert_eq!(a.hash_cookie.as_deref(), Some("route"));
        assert_eq!(a.host_header.as_deref(), Some("billing.internal:8080"));
        let (a, _) = parse_map(&[("upstream-vhost", "a.example\nhost: b")]);
        assert!(a.host_header.is_none());
        // An unreadable allow-list closes, it does not open.
        let (a, f) = parse_map(&[("whitelist-source-range", "10.0.0.0/8,everyone")]);
        assert!(a.refused);
        assert_eq!(f[0].kind, FindingKind::Security);
        // A hostile redirect is refused, not spliced.
        let (a, _) = parse_map(&[("permanent-redirect", "https://x.example\n- prefix: /")]);
        assert!(a.redirect.is_none() && a.refused);
        let (a, _) = parse_map(&[
            ("temporal-redirect", "https://x.example/"),
            ("temporal-redirect-code", "307"),
        ]);
        assert_eq!(
            a.redirect,
            Some(RedirectSpec {
                to: "https://x.example/".into(),
                status: 307
            })
        );
        let (a, f) = parse_map(&[("affinity", "cookie"), ("session-cookie-name", "a b")]);
        assert!(a.hash_cookie.is_none());
        assert!(f.iter().any(|f| f.kind == FindingKind::Untranslated));
    }

    #[test]
    fn canary_annotations() {
        let (a, f) = parse_map(&[
            ("canary", "true"),
            ("canary-weight", "10"),
            ("canary-by-header", "X-Canary"),
            ("proxy-body-size", "1m"),
        ]);
        assert_eq!(
            a.canary,
            Some(CanaryAnnotations {
                weight: 10,
                asked_by: Some("header \"X-Canary\"".into())
            })
        );
        // Only canary settings count on a canary Ingress.
        assert_eq!(a.max_body_size, None);
        assert!(f.iter().any(|f| f.subject.ends_with("canary-by-header")));
    }
}
