//! `discovery: dns` against a small authoritative DNS server on loopback
//! whose records the tests change: endpoints join and leave without a
//! dropped request, a failed or empty lookup keeps the last good set, and
//! hashing keeps its keys across a refresh that removes another endpoint.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

use crate::support::client::{self, get, get_with};
use crate::support::gateway::TestGateway;
use crate::support::route_file_error;

/// What the DNS server answers for its one name.
#[derive(Clone)]
enum Answer {
    Addresses(Vec<Ipv4Addr>),
    /// NOERROR with no records.
    Empty,
    /// SERVFAIL.
    Failure,
}

/// An authoritative server for `pods.portico.test` (A records, TTL 1 s)
/// on a loopback UDP port.
struct Dns {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    queries: Arc<AtomicUsize>,
}

const NAME: &str = "pods.portico.test";

impl Dns {
    async fn start(answer: Answer) -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let queries = Arc::new(AtomicUsize::new(0));
        let (current, count) = (answer.clone(), queries.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let answer = current.lock().unwrap().clone();
                if let Some(reply) = respond(&buf[..n], &answer) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Dns {
            addr,
            answer,
            queries,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// A reply to one query in DNS wire format (RFC 1035 §4): the question
/// echoed, and A records for [`NAME`] (none for other names or types).
fn respond(query: &[u8], answer: &Answer) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = &query[12..i + 4];
    let ours = labels.join(".") == NAME;
    let (rcode, addrs): (u8, &[Ipv4Addr]) = match answer {
        Answer::Failure => (2, &[]),
        Answer::Empty => (0, &[]),
        Answer::Addresses(a) if ours && qtype == 1 => (0, a),
        Answer::Addresses(_) if ours => (0, &[]),
        Answer::Addresses(_) => (3, &[]), // NXDOMAIN
    };
    let mut out = Vec::with_capacity(64 + 16 * addrs.len());
    out.extend_from_slice(&query[0..2]); // id
    out.push(0x84 | (query[2] & 0x01)); // QR, AA, RD as asked
    out.push(0x80 | rcode); // RA, rcode
    out.extend_from_slice(&1u16.to_be_bytes()); // one question
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    out.extend_from_slice(question);
    for a in addrs {
        out.extend_from_slice(&[0xc0, 12]); // the name, by pointer
        out.extend_from_slice(&1u16.to_be_bytes()); // A
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&a.octets());
    }
    Some(out)
}

/// A backend on `ip:port` answering with its IP, counting requests.
async fn backend(ip: Ipv4Addr, port: u16) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), port))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            ip.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    hits
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A port free on 127.0.0.1 (the others of 127/8 are then tried too).
async fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn gateway(dns: &Dns, port: u16, extra: &str) -> TestGateway {
    let routes = format!(
        "routes:\n  - prefix: /api\n    backend: http://{NAME}:{port}\n    discovery: dns\n    dns_refresh: 200ms\n{extra}"
    );
    TestGateway::start_with(
        &routes,
        &format!("dns:\n  nameservers: [\"{}\"]\n", dns.addr),
    )
    .await
}

async fn endpoints(gw: &TestGateway) -> Vec<String> {
    let v = client::get(gw.operator_addr, "/routes").await.json();
    let mut out: Vec<String> = v["routes"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["backend"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn wait_endpoints(gw: &TestGateway, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = endpoints(gw).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn urls(port: u16, lasts: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = lasts
        .iter()
        .map(|l| format!("http://{}:{port}", ip(*l)))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn dns_changes_add_and_remove_endpoints_without_a_dropped_request() {
    let port = port().await;
    let hits: Vec<_> = [ip(1), ip(2), ip(3)]
        .into_iter()
        .map(|a| backend(a, port))
        .collect();
    let mut counts = Vec::new();
    for h in hits {
        counts.push(h.await);
    }
    let dns = Dns::start(Answer::Addresses(vec![ip(1), ip(2)])).await;
    let gw = gateway(&dns, port, "").await;
    wait_endpoints(&gw, &urls(port, &[1, 2])).await;

    // Requests flow all along, from four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, errors, sent, addr) = (stop.clone(), errors.clone(), sent.clone(), gw.addr);
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = get(addr, "/api/x").await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(counts[0].load(Ordering::SeqCst) > 0 && counts[1].load(Ordering::SeqCst) > 0);
    assert_eq!(
        counts[2].load(Ordering::SeqCst),
        0,
        "127.0.0.3 is not in DNS yet"
    );

    // 127.0.0.3 joins, 127.0.0.1 leaves.
    dns.set(Answer::Addresses(vec![ip(2), ip(3)]));
    wait_endpoints(&gw, &urls(port, &[2, 3])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first_after = counts[0].load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        counts[2].load(Ordering::SeqCst) > 0,
        "the new endpoint took traffic"
    );
    assert_eq!(
        counts[0].load(Ordering::SeqCst),
        first_after,
        "the removed endpoint got no more"
    );
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "of {} requests",
        sent.load(Ordering::SeqCst)
    );
    let changed = gw
        .metrics
        .dns_refresh
        .with_label_values(&["*", "/api", "changed"])
        .get();
    assert!(changed >= 2, "first answer and the change: {changed}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failed_or_empty_lookup_keeps_the_last_good_endpoints() {
    let port = port().await;
    let one = backend(ip(1), port).await;
    let dns = Dns::start(Answer::Addresses(vec![ip(1)])).await;
    let gw = gateway(&dns, port, "").await;
    let want = urls(port, &[1]);
    wait_endpoints(&gw, &want).await;
    for (answer, result) in [(Answer::Empty, "empty"), (Answer::Failure, "failure")] {
        dns.set(answer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gw
            .metrics
            .dns_refresh
            .with_label_values(&["*", "/api", result])
            .get()
            < 2
        {
            assert!(Instant::now() < deadline, "no {result} lookups counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            endpoints(&gw).await,
            want,
            "{result}: the last good set stays"
        );
        for _ in 0..20 {
            assert_eq!(get(gw.addr, "/api/x").await.status, 200, "{result}");
        }
    }
    assert!(one.load(Ordering::SeqCst) >= 40);
    assert!(
        dns.queries.load(Ordering::SeqCst) > 4,
        "re-resolved every dns_refresh"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn hashing_keeps_each_key_when_a_refresh_removes_another_endpoint() {
    let port = port().await;
    for last in [1, 2, 3] {
        backend(ip(last), port).await;
    }
    let dns = Dns::start(Answer::Addresses(vec![ip(1), ip(2), ip(3)])).await;
    let gw = gateway(&dns, port, "    balance: {hash_header: x-user}\n").await;
    wait_endpoints(&gw, &urls(port, &[1, 2, 3])).await;
    let mut owners = Vec::new();
    for user in 0..30 {
        let name = format!("user-{user}");
        owners.push(
            get_with(gw.addr, "/api/x", &[("x-user", &name)])
                .await
                .text(),
        );
    }
    let removed = ip(3).to_string();
    assert!(
        owners.contains(&removed),
        "some users were on 127.0.0.3: {owners:?}"
    );
    dns.set(Answer::Addresses(vec![ip(1), ip(2)]));
    wait_endpoints(&gw, &urls(port, &[1, 2])).await;
    for (user, before) in owners.iter().enumerate() {
        let name = format!("user-{user}");
        let now = get_with(gw.addr, "/api/x", &[("x-user", &name)])
            .await
            .text();
        if *before == removed {
            assert_ne!(now, removed, "{name} moved off the removed endpoint");
        } else {
            assert_eq!(&now, before, "{name} kept its endpoint");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_discovery_settings_are_refused() {
    let cases = [
        (
            "    discovery: consul\n",
            "discovery: expected dns or static",
        ),
        (
            "    dns_refresh: 5s\n",
            "dns_refresh is set but discovery is not dns",
        ),
        ("    discovery: dns\n    dns_refresh: 0s\n", "dns_refresh"),
    ];
    for (extra, want) in cases {
        let text = format!("routes:\n  - prefix: /api\n    backend: http://pods.test:80\n{extra}");
        let err = route_file_error(&text, extra);
        assert!(err.contains(want), "{extra}: {err}");
    }
    for backend in ["https://pods.test:443", "http://10.0.0.1:80"] {
        let text =
            format!("routes:\n  - prefix: /api\n    backend: {backend}\n    discovery: dns\n");
        let err = route_file_error(&text, backend);
        assert!(err.contains("discovery: dns"), "{backend}: {err}");
    }
    let bad = portico::config::parse_gateway_config(
        std::path::Path::new("portico.yaml"),
        "routes_file: r.yaml\ndns:\n  nameservers: [\"not-an-address\"]\n",
    )
    .expect_err("bad nameserver")
    .to_string();
    assert!(bad.contains("dns.nameservers[0]"), "{bad}");
}
