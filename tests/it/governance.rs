//! Route governance over real sockets: operator-only and weighted canaries
//! (who reaches them, what never goes upstream, the signed sticky cookie),
//! and route assertions that gate a live reload.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

use crate::support::backend::{Backend, Seen};
use crate::support::client::Reply;
use crate::support::gateway::TestGateway;

/// An operator address: inside `operator.allow`.
const INSIDER: &str = "127.0.0.1";
/// A public client's address: a loopback address outside `operator.allow`.
const OUTSIDER: &str = "127.0.0.2";
const ALLOW: &str = "  allow: [127.0.0.1/32]\n";
const TOKEN: &str = "canary-t0ken";

/// One keep-alive HTTP/1.1 connection whose TCP peer address is `from`.
struct Conn {
    send: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(from: &str, to: SocketAddr) -> Conn {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let tcp = socket.connect(to).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { send }
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::get(path).header("host", "api.example.com");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send.ready().await.expect("connection usable");
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            self.send.send_request(b.body(Full::default()).unwrap()),
        )
        .await
        .expect("response within 30s")
        .expect("request succeeds");
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// The name of the backend that answered `path`.
    async fn backend(&mut self, path: &str, headers: &[(&str, &str)]) -> String {
        let r = self.get(path, headers).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["backend"].as_str().unwrap().to_owned()
    }
}

fn canary_routes(stable: &Backend, canary: &Backend, extra: &str) -> String {
    format!(
        "routes:\n  - prefix: /billing\n    backend: {}\n    canary:\n      backend: {}\n{extra}",
        stable.url(),
        canary.url()
    )
}

/// Asserts that nothing Portico reads for the canary reached a backend:
/// no canary header, no token, no canary or sticky cookie; other cookies kept.
fn assert_clean(seen: &[Seen], cookie: Option<&str>) {
    // An empty list would pass every check below without checking anything.
    assert!(!seen.is_empty(), "no request reached this backend");
    for s in seen {
        for name in ["x-portico-canary", "x-portico-canary-token"] {
            assert!(s.headers.get(name).is_none(), "{name} went upstream: {s:?}");
        }
        let cookies: Vec<&str> = s
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            cookies.iter().all(|c| !c.contains("portico-")),
            "a canary cookie went upstream: {cookies:?}"
        );
        if let Some(want) = cookie {
            assert_eq!(cookies, [want], "the other cookies are kept");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_canary_is_reached_only_by_operators_who_ask() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let secrets = tempfile::tempdir().unwrap();
    let token_path = secrets.path().join("token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).unwrap();
    let gw = TestGateway::start_with_operator(
        &canary_routes(&stable, &canary, ""),
        &format!("{ALLOW}  token_file: {}\n", token_path.display()),
        "",
    )
    .await;

    // An operator who asks, by header or by cookie, gets the canary.
    let mut op = Conn::open(INSIDER, gw.addr).await;
    assert_eq!(
        op.backend("/billing/x", &[("x-portico-canary", "1")]).await,
        "canary"
    );
    assert_eq!(
        op.backend("/billing/x", &[("cookie", "a=1; portico-canary=1; b=2")])
            .await,
        "canary"
    );
    assert_clean(&canary.seen(), None);
    assert_eq!(canary.last().headers.get("cookie").unwrap(), "a=1; b=2");
    // An operator who does not ask, or asks for something else, does not.
    assert_eq!(op.backend("/billing/x", &[]).await, "stable");
    assert_eq!(
        op.backend("/billing/x", &[("x-portico-canary", "0")]).await,
        "stable"
    );

    // A public client with the same header and cookie: 1,000 tries, no leak.
    let before = canary.seen().len();
    let mut public = Conn::open(OUTSIDER, gw.addr).await;
    for _ in 0..1000 {
        let b = public
            .backend(
                "/billing/x",
                &[
                    ("x-portico-canary", "1"),
                    ("cookie", "a=1; portico-canary=1; b=2"),
                ],
            )
            .await;
        assert_eq!(b, "stable");
    }
    assert_eq!(
        canary.seen().len(),
        before,
        "no public request reached the canary"
    );
    let seen = stable.seen();
    assert_eq!(seen.len(), 1002);
    assert_clean(&seen[2..], Some("a=1; b=2"));
    // x-forwarded-for proves the peer really was the outsider.
    assert_eq!(seen.last().unwrap().headers["x-forwarded-for"], OUTSIDER);

    // The operator token makes an outsider an operator; a wrong one does not.
    assert_eq!(
        public
            .backend(
                "/billing/x",
                &[("x-portico-canary", "1"), ("x-portico-canary-token", TOKEN)]
            )
            .await,
        "canary"
    );
    assert_eq!(
        public
            .backend(
                "/billing/x",
                &[
                    ("x-portico-canary", "1"),
                    ("x-portico-canary-token", "guess")
                ]
            )
            .await,
        "stable"
    );
    // The token alone does not ask.
    assert_eq!(
        public
            .backend("/billing/x", &[("x-portico-canary-token", TOKEN)])
            .await,
        "stable"
    );
    assert_clean(&canary.seen(), None);
    assert_clean(&stable.seen(), None);

    // Operators see the canary in /routes.
    let auth = format!("Bearer {TOKEN}");
    let routes = crate::support::client::get_with(
        gw.operator_addr,
        "/routes",
        &[("authorization", auth.as_str())],
    )
    .await
    .json();
    let c = &routes["routes"][0]["canary"];
    assert_eq!(c["backends"][0], canary.url(), "{routes}");
    assert_eq!(c["weight"], 0);

    // Metrics tell canary traffic apart, on the route's own label.
    let text = gw.metrics.render();
    assert!(
        text.contains(
            r#"portico_requests_total{canary="true",host="*",method="GET",route="/billing",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"portico_requests_total{canary="false",host="*",method="GET",route="/billing",status="200"} 1004"#
        ),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn routes_without_a_canary_strip_the_canary_signals_too() {
    let stable = Backend::start("stable").await;
    let gw = TestGateway::start_with_operator(
        &format!("routes:\n  - prefix: /\n    backend: {}\n", stable.url()),
        ALLOW,
        "",
    )
    .await;
    let mut op = Conn::open(INSIDER, gw.addr).await;
    let headers = [
        ("x-portico-canary", "1"),
        ("x-portico-canary-token", TOKEN),
        (
            "cookie",
            "portico-canary=1; session=abc; portico-sticky-00000000=c00",
        ),
    ];
    assert_eq!(op.backend("/x", &headers).await, "stable");
    assert_clean(&stable.seen(), Some("session=abc"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_canary_takes_its_share_of_public_traffic() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let gw = TestGateway::start_with_operator(
        &canary_routes(&stable, &canary, "      weight: 10\n"),
        ALLOW,
        "",
    )
    .await;
    // 10,000 public requests over four keep-alive connections.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(OUTSIDER, addr).await;
            let mut on_canary = 0u32;
            for _ in 0..2500 {
                let r = c.get("/billing/x", &[]).await;
                assert_eq!(r.status, 200);
                assert!(r.header("set-cookie").is_none(), "not sticky: no cookie");
                if r.json()["backend"] == "canary" {
                    on_canary += 1;
                }
            }
            on_canary
        }));
    }
    let mut on_canary = 0;
    for t in tasks {
        on_canary += t.await.unwrap();
    }
    // 10% ± 1.5%: more than 5 standard deviations (30) either way.
    assert!(
        (850..=1150).contains(&on_canary),
        "{on_canary} of 10000 on the canary"
    );
    assert_eq!(canary.seen().len() as u32, on_canary);
    gw.shutdown().await;
}

/// The sticky cookie a response sets: `(name, value)`.
fn sticky_cookie(r: &Reply) -> (String, String) {
    let set = r.header("set-cookie").expect("a sticky cookie is set");
    assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    let pair = set.split(';').next().unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert!(name.starts_with("portico-sticky-"), "{set}");
    (name.to_owned(), value.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_canary_keeps_each_client_on_its_side_and_ignores_forged_cookies() {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let gw = TestGateway::start_with_operator(
        &canary_routes(&stable, &canary, "      weight: 10\n      sticky: cookie\n"),
        ALLOW,
        "",
    )
    .await;
    let mut c = Conn::open(OUTSIDER, gw.addr).await;

    // Each new client is dealt a side and keeps it with its cookie.
    let mut dealt = [0u32; 2];
    let mut forged_from = None;
    for _ in 0..40 {
        let first = c.get("/billing/x", &[]).await;
        let side = first.json()["backend"].as_str().unwrap().to_owned();
        let (name, value) = sticky_cookie(&first);
        dealt[usize::from(side == "canary")] += 1;
        let cookie = format!("{name}={value}; other=1");
        for _ in 0..5 {
            let again = c.get("/billing/x", &[("cookie", &cookie)]).await;
            assert_eq!(again.json()["backend"], side.as_str(), "sticky");
            assert!(
                again.header("set-cookie").is_none(),
                "a valid cookie is kept"
            );
        }
        if side == "stable" {
            forged_from = Some((name, value));
        }
    }
    assert!(dealt[0] > 0, "{dealt:?}");

    // A client that turns its stable cookie into a canary one, or makes
    // one up, is dealt again like a new client: mostly stable, new cookie.
    let (name, value) = forged_from.expect("some client was dealt stable");
    let flipped = format!("{name}=c{}", &value[1..]);
    let made_up = format!("{name}=c{}", "0".repeat(32));
    let before = canary.seen().len();
    let mut forged_on_canary = 0;
    for i in 0..200 {
        let cookie = if i % 2 == 0 { &flipped } else { &made_up };
        let r = c.get("/billing/x", &[("cookie", cookie)]).await;
        let (again, _) = sticky_cookie(&r);
        assert_eq!(again, name, "a forged cookie is replaced");
        if r.json()["backend"] == "canary" {
            forged_on_canary += 1;
        }
    }
    assert_eq!(canary.seen().len() - before, forged_on_canary);
    // Honoured, the forged cookie would send all 200 to the canary; dealt
    // again, about 20 go (60 is over 6 standard deviations away).
    assert!(forged_on_canary < 60, "{forged_on_canary} of 200 forged");
    assert_clean(&stable.seen(), None);
    assert_clean(&canary.seen(), None);
    gw.shutdown().await;
}

/// A route file sending /svc to `backend`, whose test expects `expected`.
fn svc_with_test(backend: &Backend, expected: &Backend) -> String {
    format!(
        "routes:\n  - prefix: /svc\n    backend: {}\ntests:\n  - path: /svc/x\n    expect:\n      route: /svc\n      backend: {}\n",
        backend.url(),
        expected.url()
    )
}

#[tokio::test]
async fn a_reload_whose_assertion_fails_is_rejected_and_a_passing_one_is_taken() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (gw, mut cm) = TestGateway::on_configmap(&svc_with_test(&a, &a)).await;
    assert_eq!(gw.live.generation(), 1, "{:?}", gw.live.status().last_error);
    assert_eq!(
        crate::support::client::get(gw.addr, "/svc/x").await.json()["backend"],
        "a"
    );

    // The team moves /svc to b but its test still says a: rejected.
    cm.swap(&svc_with_test(&b, &a));
    let err = gw.rejected_reload(Duration::from_secs(5)).await;
    let file = cm.file().display().to_string();
    assert!(
        err.starts_with(&format!(
            "{file}:8:16: tests[0]: GET /svc/x: expected backend {}, chosen {}",
            a.url(),
            b.url()
        )),
        "{err}"
    );
    assert_eq!(gw.live.generation(), 1);
    assert_eq!(
        crate::support::client::get(gw.addr, "/svc/x").await.json()["backend"],
        "a",
        "the old table serves"
    );
    let text = gw.metrics.render();
    assert!(
        text.contains("portico_config_reloads_total{result=\"failure\"} 1"),
        "{text}"
    );
    let routes = crate::support::client::get(gw.operator_addr, "/routes")
        .await
        .json();
    assert!(
        routes["last_error"]
            .as_str()
            .unwrap()
            .contains("expected backend"),
        "{routes}"
    );

    // The test is fixed with the route: taken.
    cm.swap(&svc_with_test(&b, &b));
    let started = std::time::Instant::now();
    while gw.live.generation() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the fixed file was not taken: {:?}",
            gw.live.status().last_error
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        crate::support::client::get(gw.addr, "/svc/x").await.json()["backend"],
        "b"
    );
    assert!(gw.live.status().last_error.is_none());
    gw.shutdown().await;
}

/// `portico check [--lint]` on `routes` (with a minimal portico.yaml):
/// exit code, stdout, stderr and the route file's path as printed.
fn check(routes: &str, lint: bool) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::binary::write_config(dir.path(), routes, "");
    let mut args = vec!["check", "--config", cfg.to_str().unwrap()];
    if lint {
        args.push("--lint");
    }
    let out = crate::support::binary::run(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir.path().join("routes.yaml").display().to_string(),
    )
}

#[test]
fn check_runs_the_route_files_tests_and_prints_failures_with_positions() {
    let routes = "routes:
  - prefix: /billing
    backend: http://billing:8080
  - prefix: /billing/reports
    backend: http://reports:8080
    canary: {backend: http://reports-v2:8080}
tests:
  - path: /billing/reports/q1
    from_operator: true
    canary: true
    expect: {route: /billing/reports, backend: http://reports-v2:8080}
  - path: /billing/reportsX
    expect:
      route: /billing/reports
";
    let (code, _, err, file) = check(routes, false);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "{file}:14:14: tests[1]: GET /billing/reportsX: expected route /billing/reports, chosen /billing (line 2)"
        )
    );
    let passing = routes.replace("route: /billing/reports\n", "route: /billing\n");
    let (code, out, err, _) = check(&passing, false);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 route(s), 2 test(s) passed"), "{out}");
}

#[test]
fn lint_warns_with_positions_and_exits_0() {
    let routes = "routes:
  - prefix: /billing
    backend: http://billing:8080
    owner: billing
  - prefix: /billing/admin
    backend: http://admin:8080
    owner: platform
  - prefix: /billing/old
    backend: http://billing:8080
    owner: billing
  - prefix: /orders
    backend: http://orders:8080
    owner: orders
  - prefix: /orders/shared
    backend: http://platform:8080
    owner: platform
    shared: true
";
    let (code, out, err, file) = check(routes, true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("warning(s)"), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        format!(
            "{file}:2:13: warning: route \"/billing\": first segment \"billing\" is not a declared function; declare the business functions (functions: [billing, orders])"
        ),
        format!(
            "{file}:5:13: warning: route \"/billing/admin\" (owner platform) lies under \"/billing\" (owner billing, line 2): two owners share this subtree"
        ),
        format!(
            "{file}:8:13: warning: route \"/billing/old\" is shadowed by \"/billing\" (line 2)"
        ),
        format!(
            "{file}:11:13: warning: route \"/orders\": first segment \"orders\" is not a declared function"
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "{line}\nwanted {want}");
    }
    // Without --lint: no warnings.
    let (code, _, err, _) = check(routes, false);
    assert_eq!((code, err.as_str()), (0, ""));
    // With functions declared, the first-segment warnings go, and a path
    // outside them is an error with its position.
    let declared = format!("functions: [billing, orders]\n{routes}");
    let (code, _, err, _) = check(&declared, true);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    let outside = format!("{declared}  - prefix: /payments\n    backend: http://p:8080\n");
    let (code, _, err, file) = check(&outside, true);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{file}:19:13: route \"/payments\": first segment \"payments\" is not a function; functions: billing, orders")),
        "{err}"
    );
}

#[test]
fn routes_match_explains_near_misses_and_the_canary_decision() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::binary::write_config(
        dir.path(),
        "routes:
  - prefix: /billing
    backend: http://billing:8080
  - prefix: /billing/reports
    backend: http://reports:8080
    strip_prefix: true
    canary: {backend: http://reports-v2:8080, weight: 5, sticky: cookie}
  - prefix: /billing/reports/archive
    backend: http://archive:8080
",
        "",
    );
    let explain = |args: &[&str]| {
        let mut all = vec!["routes", "--config", cfg.to_str().unwrap(), "--match"];
        all.extend_from_slice(args);
        let out = crate::support::binary::run(&all);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let text = explain(&["/billing/reportsX"]);
    assert!(text.contains("route:   /billing (line 2)"), "{text}");
    assert!(
        text.contains("not matched: /billing/reports (line 4): segment 2 is \"reportsX\", the prefix wants \"reports\""),
        "{text}"
    );
    assert!(text.contains("canary:  none on this route"), "{text}");

    let text = explain(&["/billing/reports/2024", "--canary"]);
    assert!(
        text.contains("not matched: /billing/reports/archive (line 8): segment 3 is \"2024\", the prefix wants \"archive\""),
        "{text}"
    );
    assert!(
        text.contains("canary:  http://reports-v2:8080 (weight 5%, sticky cookie)"),
        "{text}"
    );
    assert!(
        text.contains(
            "canary decision: not taken for asking: it asks (--canary) but is not from an operator"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "backend: http://reports:8080 (95%), or the canary http://reports-v2:8080 (5%)"
        ),
        "{text}"
    );
    assert!(text.contains("upstream path: /2024"), "{text}");

    let text = explain(&["/billing/reports/2024", "--canary", "--operator"]);
    assert!(
        text.contains("canary decision: taken: an operator (--operator) asks for it (--canary)"),
        "{text}"
    );
    assert!(
        text.contains("backend: http://reports-v2:8080 (the canary)"),
        "{text}"
    );

    let text = explain(&["/billing/reports/2024", "--operator"]);
    assert!(
        text.contains("canary decision: not taken: from an operator, but it does not ask"),
        "{text}"
    );
}

#[tokio::test]
async fn the_access_log_marks_canary_traffic() {
    use crate::support::binary::Serve;
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    // The default operator.allow is loopback: this client is an operator.
    let mut gw = Serve::with_routes(
        dir.path(),
        &canary_routes(&stable, &canary, ""),
        "shutdown:\n  drain_delay: 0s\n",
    );
    let addr = gw.listening("http");
    let mut op = Conn::open(INSIDER, addr).await;
    assert_eq!(
        op.backend("/billing/c", &[("x-portico-canary", "1")]).await,
        "canary"
    );
    assert_eq!(op.backend("/billing/s", &[]).await, "stable");
    let line = gw.wait_line("the canary request", |v| v["path"] == "/billing/c");
    assert_eq!(line["canary"], true, "{line}");
    assert_eq!(line["route"], "/billing");
    assert_eq!(line["upstream"], canary.addr.to_string());
    let line = gw.wait_line("the stable request", |v| v["path"] == "/billing/s");
    assert!(line.get("canary").is_none(), "{line}");
    assert_eq!(line["upstream"], stable.addr.to_string());
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}
