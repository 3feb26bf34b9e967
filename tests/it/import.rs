//! `portico import` on the Ingress corpus in `tests/data/ingress/`, with
//! the real binary: every output passes `portico check` (which also runs
//! the route assertions `--emit-tests` wrote: a normal request per route
//! and every difference `--explain` reports), and a table per file of
//! requests that must route as ingress-nginx routed them, run as route
//! assertions by `portico check` on the gateway's own matcher.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::binary::{bin, write_config};

/// One corpus file and what its import must do.
struct Case {
    file: &'static str,
    services: Option<&'static str>,
    /// `(host, path, expected)`: requests ingress-nginx and Portico route
    /// alike. `expected` is `none`, or a route name with optional
    /// ` => BACKEND` and ` @ UPSTREAM_PATH`.
    same: &'static [(Option<&'static str>, &'static str, &'static str)],
    /// `(host, path)` that `--explain` must list as routed differently.
    explained: &'static [(&'static str, &'static str)],
    /// Text stderr (the report) must hold.
    report: &'static [&'static str],
    /// Text the route file must hold (routes or comments).
    has: &'static [&'static str],
    /// Text no line outside a comment may hold.
    lacks: &'static [&'static str],
}

const CORPUS: &[Case] = &[
    Case {
        file: "01-single-host-prefix.yaml",
        services: None,
        same: &[
            (
                Some("api.example.com"),
                "/billing",
                "api.example.com/billing => http://billing.shop.svc.cluster.local:8080",
            ),
            (
                Some("API.example.com:8443"),
                "/billing/reports/2024",
                "api.example.com/billing/reports => http://billing-reports.shop.svc.cluster.local:8080",
            ),
            (
                Some("api.example.com"),
                "/billing/reportsX",
                "api.example.com/billing",
            ),
            (
                Some("api.example.com"),
                "/orders/42",
                "api.example.com/orders => http://orders.shop.svc.cluster.local:80",
            ),
            (Some("api.example.com"), "/other", "none"),
            (Some("other.example.com"), "/billing", "none"),
        ],
        explained: &[],
        report: &["3 route(s), 0 finding(s), 0 request(s)"],
        has: &["prefix: \"/billing/reports\"\n"],
        lacks: &["/billing/reports/\"", "https_redirect"],
    },
    Case {
        file: "02-multi-host.yaml",
        services: None,
        same: &[
            (
                Some("www.example.com"),
                "/anything",
                "www.example.com/ => http://storefront.web.svc.cluster.local:80",
            ),
            (
                Some("www.example.com"),
                "/search/q",
                "www.example.com/search => http://search.web.svc.cluster.local:9200",
            ),
            (
                Some("partners.example.com"),
                "/api/v1",
                "partners.example.com/api",
            ),
            (Some("partners.example.com"), "/status", "none"),
            (Some("unknown.example.com"), "/status", "=/status"),
            (
                None,
                "/status",
                "=/status => http://status-page.web.svc.cluster.local:80",
            ),
            (None, "/status/x", "none"),
        ],
        explained: &[],
        report: &[],
        has: &[],
        lacks: &["WWW.Example"],
    },
    Case {
        file: "03-wildcard-host.yaml",
        services: None,
        same: &[
            (
                Some("a.tenants.example.com"),
                "/",
                "*.tenants.example.com/ => http://tenant-app.saas.svc.cluster.local:8080",
            ),
            (
                Some("acme.tenants.example.com"),
                "/x",
                "acme.tenants.example.com/ => http://acme-app.saas.svc.cluster.local:8080",
            ),
            (Some("tenants.example.com"), "/", "none"),
        ],
        explained: &[("a.b.tenants.example.com", "/")],
        report: &[],
        has: &["host: \"*.tenants.example.com\""],
        lacks: &[],
    },
    Case {
        file: "04-tls.yaml",
        services: None,
        same: &[
            (
                Some("pay.example.com"),
                "/v1/charges",
                "pay.example.com/v1 => http://payments-api.payments.svc.cluster.local:8443",
            ),
            (
                Some("checkout.example.com"),
                "/cart",
                "checkout.example.com/",
            ),
            (Some("pay.example.com"), "/", "none"),
        ],
        explained: &[],
        report: &[
            "payments/secure: spec.tls: note: the certificates go in portico.yaml (tls.certificates)",
        ],
        has: &[
            "    https_redirect: true\n",
            "#   pay.example.com: Secret payments/pay-example-com-tls (Ingress payments/secure)",
            "#   checkout.example.com: Secret payments/checkout-tls",
        ],
        lacks: &["tls:"],
    },
    Case {
        file: "05-exact-and-prefix.yaml",
        services: None,
        same: &[
            (
                Some("foo.bar.com"),
                "/foo",
                "foo.bar.com=/foo => http://foo-exact.default.svc.cluster.local:80",
            ),
            (
                Some("foo.bar.com"),
                "/foo/",
                "foo.bar.com/foo => http://foo-prefix.default.svc.cluster.local:80",
            ),
            (Some("foo.bar.com"), "/foo/x", "foo.bar.com/foo"),
            (Some("foo.bar.com"), "/bar", "none"),
            (
                Some("foo.bar.com"),
                "/healthcheck",
                "foo.bar.com=/healthcheck",
            ),
            (Some("foo.bar.com"), "/healthcheck/", "none"),
        ],
        explained: &[],
        report: &[],
        has: &["exact: \"/foo\""],
        lacks: &[],
    },
    Case {
        file: "06-implementation-specific.yaml",
        services: None,
        same: &[
            (
                Some("billing.example.com"),
                "/billing/reports/q1",
                "billing.example.com/billing/reports => http://reports.billing.svc.cluster.local:8080",
            ),
            (
                Some("billing.example.com"),
                "/billing/x",
                "billing.example.com/billing",
            ),
            (
                Some("billing.example.com"),
                "/static/app.js",
                "billing.example.com/static",
            ),
        ],
        explained: &[
            ("billing.example.com", "/billing/reportsX"),
            ("billing.example.com", "/billingX"),
            ("billing.example.com", "/static"),
        ],
        report: &[],
        has: &["ImplementationSpecific: ingress-nginx reads it as a string prefix"],
        lacks: &[],
    },
    Case {
        file: "07-default-backend-global.yaml",
        services: None,
        same: &[
            (
                Some("random.example.net"),
                "/",
                "/ => http://default-http-backend.infra.svc.cluster.local:80",
            ),
            (None, "/any/path", "/"),
            (
                Some("docs.example.com"),
                "/guide",
                "docs.example.com/ => http://docs.docs.svc.cluster.local:80",
            ),
        ],
        explained: &[],
        report: &[],
        has: &["spec.defaultBackend"],
        lacks: &[],
    },
    Case {
        file: "08-default-backend-host.yaml",
        services: None,
        same: &[
            (
                Some("portal.example.com"),
                "/api/users",
                "portal.example.com/api => http://portal-api.portal.svc.cluster.local:8080",
            ),
            (
                Some("portal.example.com"),
                "/home",
                "portal.example.com/ => http://portal-web.portal.svc.cluster.local:3000",
            ),
            (Some("elsewhere.example.com"), "/home", "none"),
        ],
        explained: &[],
        report: &[],
        has: &[],
        lacks: &[],
    },
    Case {
        file: "09-named-port-with-service.yaml",
        services: Some("09-named-port-with-service.services.yaml"),
        same: &[
            (
                Some("inventory.example.com"),
                "/items/7",
                "inventory.example.com/items => http://inventory.warehouse.svc.cluster.local:8080",
            ),
            (
                Some("inventory.example.com"),
                "/admin",
                "inventory.example.com/admin => http://inventory.warehouse.svc.cluster.local:9090",
            ),
        ],
        explained: &[],
        report: &["2 route(s), 0 finding(s)"],
        has: &[],
        lacks: &[],
    },
    Case {
        file: "10-named-port-without-service.yaml",
        services: None,
        same: &[
            (
                Some("catalog.example.com"),
                "/images/1.png",
                "catalog.example.com/images => http://images.shop.svc.cluster.local:8080",
            ),
            (Some("catalog.example.com"), "/products", "none"),
        ],
        explained: &[],
        report: &[
            "shop/catalog: path \"/products\" (Prefix): skipped: not imported: backend port \"http\" of Service shop/catalog is named; pass the Service manifest with --services FILE",
        ],
        has: &["#   shop/catalog: path \"/products\" (Prefix): skipped"],
        lacks: &[],
    },
    Case {
        file: "11-kubectl-list.yaml",
        services: None,
        same: &[
            (
                Some("accounts.example.com"),
                "/login/sso",
                "accounts.example.com/login => http://login.identity.svc.cluster.local:8080",
            ),
            (
                Some("accounts.example.com"),
                "/profile",
                "accounts.example.com/ => http://accounts.identity.svc.cluster.local:8080",
            ),
        ],
        explained: &[],
        report: &[],
        has: &[
            "max_body_size: 4MiB",
            "accounts.example.com: Secret identity/accounts-tls",
        ],
        lacks: &["last-applied", "203.0.113.10"],
    },
    Case {
        file: "12-rewrite-target-idiom.yaml",
        services: None,
        same: &[
            (
                Some("platform.example.com"),
                "/users/42",
                "platform.example.com/users => http://users.platform.svc.cluster.local:8080 @ /42",
            ),
            (
                Some("platform.example.com"),
                "/users",
                "platform.example.com/users @ /",
            ),
            (
                Some("platform.example.com"),
                "/teams/a/b?x=1",
                "platform.example.com/teams @ /a/b?x=1",
            ),
            (Some("platform.example.com"), "/usersX", "none"),
        ],
        explained: &[
            ("platform.example.com", "/USERS"),
            ("platform.example.com", "/TEAMS"),
        ],
        report: &[],
        has: &["strip_prefix: true"],
        lacks: &["(/|$)(.*)\""],
    },
    Case {
        file: "13-rewrite-refused.yaml",
        services: None,
        same: &[
            (
                Some("legacy.example.com"),
                "/home/x",
                "legacy.example.com/home",
            ),
            (Some("legacy.example.com"), "/v1/users", "none"),
        ],
        explained: &[
            ("legacy.example.com", "/HOME"),
            ("legacy.example.com", "/homeX"),
        ],
        report: &[
            "legacy/old-api: path \"/v1/(.*)\" (ImplementationSpecific): skipped: rewrite-target \"/internal/v2/$1\"",
        ],
        has: &[],
        lacks: &["/internal/v2"],
    },
    Case {
        file: "14-regex-host.yaml",
        services: None,
        same: &[
            (
                Some("analytics.example.com"),
                "/reports/2024",
                "analytics.example.com/reports => http://reports.analytics.svc.cluster.local:8080",
            ),
            (
                Some("analytics.example.com"),
                "/reports/archive/x",
                "analytics.example.com/reports/archive",
            ),
            (
                Some("analytics.example.com"),
                "/exports/csv",
                "analytics.example.com/exports",
            ),
        ],
        explained: &[
            ("analytics.example.com", "/REPORTS"),
            ("analytics.example.com", "/reportsX"),
            ("analytics.example.com", "/reports/archiveX"),
            ("analytics.example.com", "/EXPORTS"),
        ],
        report: &["\"/dashboards/[0-9]+\" is a regular expression"],
        has: &["case-insensitive regex prefixes (because of analytics/reports-regex)"],
        lacks: &["[0-9]"],
    },
    Case {
        file: "15-timeouts-body-size.yaml",
        services: None,
        same: &[
            (
                Some("media.example.com"),
                "/upload/big",
                "media.example.com/upload",
            ),
            (
                Some("media.example.com"),
                "/stream/live",
                "media.example.com/stream",
            ),
        ],
        explained: &[],
        report: &[
            "proxy-connect-timeout: not translated: Portico's connect timeout is gateway-wide: set limits.upstream_connect_timeout: 10s",
            "media/unlimited: nginx.ingress.kubernetes.io/proxy-body-size: not translated: 0 (no limit)",
        ],
        has: &["timeout: 300s", "max_body_size: 512MiB"],
        lacks: &["timeout: 120s"],
    },
    Case {
        file: "16-backend-protocol.yaml",
        services: None,
        same: &[
            (
                Some("vault.example.com"),
                "/v1/secret",
                "vault.example.com/ => https://vault.vault.svc.cluster.local:8200",
            ),
            (
                Some("grpc.example.com"),
                "/billing.v1.Reports/Get",
                "grpc.example.com/billing.v1.Reports => h2c://reports-grpc.billing.svc.cluster.local:50051",
            ),
            (
                Some("grpc.example.com"),
                "/billing.v1.Ledger/Post",
                "grpc.example.com/billing.v1.Ledger => https://ledger.billing.svc.cluster.local:8443",
            ),
            (Some("php.example.com"), "/index.php", "none"),
        ],
        explained: &[],
        report: &[
            "php/fastcgi: nginx.ingress.kubernetes.io/backend-protocol: skipped: backend protocol \"FCGI\"",
        ],
        has: &["http2: true"],
        lacks: &["php-fpm"],
    },
    Case {
        file: "17-allowlist.yaml",
        services: None,
        same: &[
            (
                Some("ops.example.com"),
                "/admin/users",
                "ops.example.com/admin",
            ),
            (Some("ops.example.com"), "/grafana", "none"),
        ],
        explained: &[],
        report: &[
            "ops/broken-allowlist: nginx.ingress.kubernetes.io/whitelist-source-range: refused (security): \"office\" is not a CIDR",
        ],
        has: &["allow_from: [\"10.0.0.0/8\", \"192.168.10.0/24\", \"2001:db8::/32\"]"],
        lacks: &["grafana"],
    },
    Case {
        file: "18-canary-weight.yaml",
        services: None,
        same: &[(
            Some("shop.example.com"),
            "/checkout/pay",
            "shop.example.com/checkout => http://checkout-v1.shop.svc.cluster.local:8080",
        )],
        explained: &[],
        report: &[],
        has: &["canary: {backend: \"http://checkout-v2.shop.svc.cluster.local:8080\", weight: 20}"],
        lacks: &[],
    },
    Case {
        file: "19-canary-by-header.yaml",
        services: None,
        same: &[
            (
                Some("search.example.com"),
                "/q",
                "search.example.com/ => http://search-v1.discovery.svc.cluster.local:80",
            ),
            (
                Some("search.example.com"),
                "/suggest",
                "search.example.com/ => http://search-v1.discovery.svc.cluster.local:80",
            ),
        ],
        explained: &[],
        report: &[
            "discovery/orphan-canary: path \"/suggest\" (Prefix) canary: skipped: no stable Ingress",
            "canary-by-header: note: Portico's canary is asked for with x-portico-canary: 1",
        ],
        has: &["canary: {backend: \"http://search-v2.discovery.svc.cluster.local:80\", weight: 0}"],
        lacks: &["suggest-v2"],
    },
    Case {
        file: "20-redirects.yaml",
        services: None,
        same: &[
            (
                Some("www.example.org"),
                "/blog/2024/post",
                "www.example.org/blog",
            ),
            (Some("www.example.org"), "/shop", "www.example.org/shop"),
            (Some("dash.example.org"), "/", "dash.example.org=/"),
            (
                Some("dash.example.org"),
                "/app/home",
                "dash.example.org/ => http://dashboard.marketing.svc.cluster.local:8080",
            ),
        ],
        explained: &[],
        report: &[],
        has: &[
            "redirect: {to: \"https://blog.example.com/\", status: 301}",
            "redirect: {to: \"https://status.example.com/maintenance\", status: 302}",
            "redirect: {to: \"/app\", status: 302}",
            "    host: \"www.example.org\"\n    expect: {route: \"www.example.org/blog\", status: 301}",
        ],
        lacks: &["unused"],
    },
    Case {
        file: "21-affinity-and-untranslated.yaml",
        services: None,
        same: &[(Some("cart.example.com"), "/cart", "cart.example.com/cart")],
        explained: &[],
        report: &[
            "limit-rps: not translated",
            "force-ssl-redirect: note: translated to https_redirect: true",
            "enable-cors: not translated",
        ],
        has: &[
            "balance: {hash_cookie: \"cart-route\"}",
            "host_header: \"cart.internal\"",
        ],
        lacks: &[],
    },
    Case {
        file: "22-conflicting.yaml",
        services: None,
        same: &[
            (
                Some("shared.example.com"),
                "/profile",
                "shared.example.com/profile => http://profile-a.team-a.svc.cluster.local:8080",
            ),
            (
                Some("shared.example.com"),
                "/settings",
                "shared.example.com/settings => http://settings-b.team-b.svc.cluster.local:8080",
            ),
        ],
        explained: &[],
        report: &[
            "team-b/newer-claim: path \"/profile\" (Prefix): skipped: conflicts with team-a/older-claim",
        ],
        has: &[],
        lacks: &["profile-b"],
    },
    Case {
        file: "23-hostile-snippets.yaml",
        services: None,
        same: &[
            (
                Some("tenant-x.example.com"),
                "/public/x",
                "tenant-x.example.com/public",
            ),
            (Some("tenant-x.example.com"), "/", "none"),
            (Some("tenant-x.example.com"), "/admin", "none"),
        ],
        explained: &[],
        report: &[
            "tenant-x/snippet: nginx.ingress.kubernetes.io/configuration-snippet: refused (security)",
            "tenant-x/snippet: nginx.ingress.kubernetes.io/server-snippet: refused (security)",
            "tenant-x/oauth-protected: nginx.ingress.kubernetes.io/auth-url: refused (security)",
            "tenant-x/oauth-protected: nginx.ingress.kubernetes.io/auth-signin: refused (security)",
        ],
        has: &[],
        lacks: &["tenant-x-admin", "pwned", "secrets", "more_set_headers"],
    },
    Case {
        file: "24-hostile-injection.yaml",
        services: None,
        same: &[
            (
                Some("app.attacker.example.com"),
                "/app",
                "app.attacker.example.com/app => http://app.attacker.svc.cluster.local:8080",
            ),
            (Some("app.attacker.example.com"), "/owned", "none"),
            (Some("app.attacker.example.com"), "/go", "none"),
            (Some("evil.example.com"), "/", "none"),
        ],
        explained: &[],
        report: &[
            "is not a cookie name",
            "is not a valid Kubernetes name",
            "must be a host name only",
            "must be a URL of printable ASCII",
        ],
        has: &[],
        lacks: &["owned", "evil", "hash_cookie"],
    },
    Case {
        file: "25-mixed-kinds.yaml",
        services: None,
        same: &[(
            Some("notify.example.com"),
            "/notify",
            "notify.example.com/notify => http://notifications.comms.svc.cluster.local:8080",
        )],
        explained: &[],
        report: &[
            "comms/notifications-old: apiVersion extensions/v1beta1: skipped",
            "comms/notifications: kind Deployment: skipped",
        ],
        has: &[],
        lacks: &["/old"],
    },
];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ingress")
        .join(name)
}

fn import(args: &[&str]) -> Output {
    bin()
        .arg("import")
        .args(args)
        .output()
        .expect("portico runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Route assertions for `same`, to append to a file whose last key is
/// `tests:` (or that has none).
fn assertions(text: &str, same: &[(Option<&str>, &str, &str)]) -> String {
    let mut out = String::new();
    if !text.contains("\ntests:\n") {
        out.push_str("tests:\n");
    }
    for (host, path, expected) in same {
        out.push_str(&format!("  - path: {path:?}\n"));
        if let Some(h) = host {
            out.push_str(&format!("    host: {h:?}\n"));
        }
        let (rest, upstream) = match expected.split_once(" @ ") {
            Some((r, u)) => (r, Some(u)),
            None => (*expected, None),
        };
        let (route, backend) = match rest.split_once(" => ") {
            Some((r, b)) => (r, Some(b)),
            None => (rest, None),
        };
        if route == "none" {
            out.push_str("    expect: {route: none, status: 404}\n");
            continue;
        }
        out.push_str(&format!("    expect:\n      route: {route:?}\n"));
        if let Some(b) = backend {
            out.push_str(&format!("      backend: {b:?}\n"));
        }
        if let Some(u) = upstream {
            out.push_str(&format!("      upstream_path: {u:?}\n"));
        }
    }
    out
}

/// `portico check` on `routes` next to a minimal portico.yaml.
fn check(routes: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), routes, "");
    bin()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .expect("portico check runs")
}

#[test]
fn the_corpus_has_at_least_twenty_ingress_manifests_and_each_is_tested() {
    let files: Vec<String> = std::fs::read_dir(data(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.ends_with(".services.yaml"))
        .collect();
    assert!(files.len() >= 20, "{files:?}");
    for f in &files {
        assert!(
            CORPUS.iter().any(|c| c.file == f),
            "{f} has no case in CORPUS"
        );
    }
}

#[test]
fn every_corpus_import_passes_check_and_routes_as_ingress_nginx_did() {
    for case in CORPUS {
        let file = data(case.file);
        let services = case.services.map(data);
        let mut args = vec![file.to_str().unwrap(), "--emit-tests"];
        if let Some(s) = &services {
            args.extend(["--services", s.to_str().unwrap()]);
        }
        let out = import(&args);
        let (text, report) = (stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{}: {report}", case.file);
        assert!(text.contains("routes:"), "{}", case.file);
        for want in case.report {
            assert!(
                report.contains(want),
                "{}: report lacks {want:?}:\n{report}",
                case.file
            );
        }
        for want in case.has {
            assert!(
                text.contains(want),
                "{}: output lacks {want:?}:\n{text}",
                case.file
            );
        }
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for bad in case.lacks {
                assert!(
                    !line.contains(bad),
                    "{}: {bad:?} in {line:?}:\n{text}",
                    case.file
                );
            }
        }
        // The file as written, with its emitted tests.
        let checked = check(&text);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{}: portico check failed:\n{}\n{text}",
            case.file,
            stderr(&checked)
        );
        // The table: what ingress-nginx did, and Portico must do too.
        let with_table = format!("{text}{}", assertions(&text, case.same));
        let checked = check(&with_table);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{}: a request routes differently:\n{}\n{with_table}",
            case.file,
            stderr(&checked)
        );
        // --explain lists each expected difference, and none of the
        // requests that route alike.
        args.retain(|a| *a != "--emit-tests");
        args.push("--explain");
        let explained = stdout(&import(&args));
        for (host, path) in case.explained {
            assert!(
                explained.contains(&format!("  GET {path} (Host: {host})\n")),
                "{}: --explain lacks {host}{path}:\n{explained}",
                case.file
            );
        }
        for (host, path, _) in case.same {
            let line = format!("  GET {path} (Host: {})\n", host.unwrap_or(""));
            assert!(
                !explained.contains(&line),
                "{}: {line} is explained:\n{explained}",
                case.file
            );
        }
        let differences = explained.matches("  GET ").count();
        assert_eq!(
            differences,
            text.matches("# differs from ingress-nginx").count(),
            "{}: each difference is an emitted test",
            case.file
        );
    }
}

// The route assertions are what decides: one that states ingress-nginx's
// answer for an explained difference makes `portico check` fail.
#[test]
fn an_explained_difference_stated_as_ingress_nginx_routed_it_fails_check() {
    let out = import(&[data("06-implementation-specific.yaml").to_str().unwrap()]);
    let text = stdout(&out);
    let wrong = assertions(
        &text,
        &[(
            Some("billing.example.com"),
            "/billing/reportsX",
            "billing.example.com/billing/reports",
        )],
    );
    let checked = check(&format!("{text}{wrong}"));
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        stderr(&checked).contains(
            "expected route billing.example.com/billing/reports, chosen billing.example.com/billing"
        ),
        "{}",
        stderr(&checked)
    );
}

#[test]
fn output_is_deterministic_whatever_the_input_order_and_stdin_works() {
    let a = data("01-single-host-prefix.yaml");
    let b = data("22-conflicting.yaml");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let one = stdout(&import(&[a, b, "--emit-tests"]));
    let two = stdout(&import(&[b, a, "--emit-tests"]));
    assert_eq!(one, two);
    let mut child = bin()
        .args(["import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        &std::fs::read(data("05-exact-and-prefix.yaml")).unwrap(),
    )
    .unwrap();
    drop(child.stdin.take());
    let piped = child.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), Some(0));
    assert_eq!(
        stdout(&piped),
        stdout(&import(&[data("05-exact-and-prefix.yaml")
            .to_str()
            .unwrap()]))
    );
}

#[test]
fn output_flag_writes_the_file_and_explain_goes_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    let out = import(&[
        data("06-implementation-specific.yaml").to_str().unwrap(),
        "--output",
        path.to_str().unwrap(),
        "--explain",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("prefix: \"/billing/reports\""));
    let text = stdout(&out);
    assert!(text.starts_with("host billing.example.com\n"), "{text}");
    assert!(text.contains("    ingress-nginx: billing.example.com/billing/reports (billing/legacy)\n    portico:       billing.example.com/billing (billing/legacy)\n"), "{text}");
    assert!(text.contains("  GET /static (Host: billing.example.com)\n    ingress-nginx: 301 to the path with a trailing slash\n"), "{text}");
}

#[test]
fn unreadable_input_is_exit_1_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\n---\nkind: Ingress\nmetadata: [\n").unwrap();
    let out = import(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("invalid YAML"), "{err}");
    assert!(stdout(&out).is_empty());
    let missing = import(&["/nonexistent/ingress.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    let usage = import(&[]);
    assert_eq!(usage.status.code(), Some(2));
}
