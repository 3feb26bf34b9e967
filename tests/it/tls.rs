//! TLS termination over real handshakes: SNI selection, ALPN h2 and
//! http/1.1, protocol versions, the handshake timeout, live certificate
//! reload in the Kubernetes Secret layout, load errors, the HTTP→HTTPS
//! redirect, and upstream TLS with a private CA. Certificates are made at
//! test time (rcgen); clients trust only the test CA.

use std::path::PathBuf;
use std::time::Duration;

use portico::app::{self, Listeners};
use portico::tls::x509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::backend::Backend;
use crate::support::binary::Serve;
use crate::support::certs::{self, Key, Leaf, Sender, TestCa, TlsBackend};
use crate::support::client::get_with;
use crate::support::gateway::{TestGateway, routes_yaml};

/// portico.yaml with plain and TLS listeners serving `pairs` (the first is
/// the default certificate). `listen_extra`/`tls_extra` are extra lines of
/// those blocks, indented two spaces.
fn tls_yaml(pairs: &[(PathBuf, PathBuf)], listen_extra: &str, tls_extra: &str) -> String {
    let mut y = format!(
        "listen:\n  http: 127.0.0.1:0\n  https: 127.0.0.1:0\n{listen_extra}operator:\n  listen: 127.0.0.1:0\nshutdown:\n  drain_delay: 0s\ntls:\n{tls_extra}  certificates:\n"
    );
    for (cert, key) in pairs {
        y.push_str(&format!(
            "    - cert: \"{}\"\n      key: \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    y
}

/// A CA and one `localhost` ECDSA pair written to a fresh directory: where
/// most TLS tests start.
struct Localhost {
    ca: TestCa,
    /// Holds the files; removed when the test ends.
    dir: tempfile::TempDir,
    pairs: [(PathBuf, PathBuf); 1],
}

fn localhost() -> Localhost {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let pairs = [ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "tls")];
    Localhost { ca, dir, pairs }
}

async fn tls_gateway(
    routes: &str,
    pairs: &[(PathBuf, PathBuf)],
    tls_extra: &str,
) -> (TestGateway, std::net::SocketAddr) {
    let gw = TestGateway::start_yaml(routes, &tls_yaml(pairs, "", tls_extra)).await;
    let https = gw.https_addr.expect("https listener");
    (gw, https)
}

/// Waits for a counter to reach `want` (it is bumped just after the
/// connection fails, which may be a moment after the client sees it).
async fn wait_counter(read: impl Fn() -> u64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while read() < want {
        assert!(
            Instant::now() < deadline,
            "counter stuck at {} (want {want})",
            read()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sni_picks_the_right_certificate_of_three() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().unwrap();
    // Three key types as well: ECDSA (default), Ed25519 (wildcard), RSA.
    let a = ca.leaf(&["a.test", "127.0.0.1"], Key::EcdsaP256);
    let b = ca.leaf(&["*.b.test"], Key::Ed25519);
    let c = ca.leaf(&["c.test"], Key::Rsa2048);
    let pairs = [
        a.write(dir.path(), "a"),
        b.write(dir.path(), "b"),
        c.write(dir.path(), "c"),
    ];
    let (gw, https) = tls_gateway("routes: []\n", &pairs, "").await;

    let client = ca.client(&["http/1.1"]);
    let verified: [(&str, &Leaf, &[&str]); 5] = [
        ("a.test", &a, &["a.test"]),
        ("www.b.test", &b, &["*.b.test"]),
        ("API.B.TEST", &b, &["*.b.test"]),
        ("c.test", &c, &["c.test"]),
        // An IP address sends no SNI: the first certificate is the default.
        ("127.0.0.1", &a, &["a.test"]),
    ];
    for (sni, want, names) in verified {
        let s = certs::connect(https, sni, client.clone())
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        let got = certs::peer_leaf(&s);
        assert!(got == want.der, "{sni}: wrong certificate");
        assert_eq!(x509::parse_leaf(&got).unwrap().dns_names, names, "{sni}");
    }
    // Names no certificate covers get the default (which the client then
    // rejects, as it should): unknown names, and two labels under a wildcard.
    for sni in ["unknown.test", "x.y.b.test", "b.test"] {
        assert!(
            certs::served_cert(https, sni).await == a.der,
            "{sni}: expected the default certificate"
        );
        assert!(
            certs::connect(https, sni, client.clone()).await.is_err(),
            "{sni}: verification must fail"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn alpn_h2_and_http1_both_proxy_with_forwarded_proto_https() {
    let Localhost {
        ca,
        dir: _dir,
        pairs,
    } = localhost();
    let api = Backend::start("api").await;
    let (gw, https) = tls_gateway(&routes_yaml(&[("/api", &api)]), &pairs, "").await;

    let cases: [(&[&str], Option<&str>); 4] = [
        (&["h2"], Some("h2")),
        (&["http/1.1"], Some("http/1.1")),
        (&["h2", "http/1.1"], Some("h2")),
        (&[], None),
    ];
    for (offer, want) in cases {
        let s = certs::connect(https, "localhost", ca.client(offer))
            .await
            .unwrap();
        assert_eq!(certs::alpn(&s).as_deref(), want, "{offer:?}");
        let mut tx = Sender::over(s).await;
        for i in 0..3 {
            let r = tx.get("localhost", &format!("/api/x/{i}?q=1")).await;
            assert_eq!(r.status, 200, "{offer:?}: {}", r.text());
            assert_eq!(r.json()["backend"], "api");
            assert_eq!(r.json()["target"], format!("/api/x/{i}?q=1"));
            assert!(r.header("x-request-id").is_some());
            let seen = api.last();
            assert_eq!(seen.headers["x-forwarded-proto"], "https", "{offer:?}");
            assert_eq!(seen.headers["x-forwarded-host"], "localhost", "{offer:?}");
        }
    }
    // The plain listener on the same gateway still says http.
    get_with(gw.addr, "/api/plain", &[]).await;
    assert_eq!(api.last().headers["x-forwarded-proto"], "http");
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served() {
    let Localhost {
        ca,
        dir: _dir,
        pairs,
    } = localhost();
    let (gw, https) = tls_gateway("routes: []\n", &pairs, "").await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let s = certs::connect(https, "localhost", ca.client_versions(&["h2"], &[version]))
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        // Portico's own 404 proves HTTP works on top.
        let r = Sender::over(s).await.get("localhost", "/nowhere").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"], "no_route");
    }
    assert_eq!(gw.metrics.tls_handshake_errors.get(), 0);
    gw.shutdown().await;
}

/// A ClientHello whose highest version is `version` (no supported_versions
/// extension, so it cannot negotiate anything newer). rustls cannot send
/// one below TLS 1.2, so it is built by hand (RFC 5246 §7.4.1.2). It offers
/// TLS 1.2 suites and signature algorithms too, so that with `0x0303` it is
/// a hello rustls accepts: only the version differs between the cases.
fn legacy_client_hello(version: u16, sni: &str) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut body = Vec::new();
    body.extend(version.to_be_bytes());
    body.extend([0x5a; 32]); // random
    body.push(0); // no session id
    // ECDHE-ECDSA/RSA-AES128-GCM-SHA256 (TLS 1.2), then TLS 1.0-era suites:
    // ECDHE-RSA/ECDSA-AES128-SHA, AES128-SHA, AES256-SHA.
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc013, 0xc009, 0x002f, 0x0035];
    body.extend((suites.len() as u16 * 2).to_be_bytes());
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.extend([1, 0]); // compression: null only
    let mut exts = Vec::new();
    let name = sni.as_bytes();
    let mut server_name = Vec::new();
    server_name.extend((name.len() as u16 + 3).to_be_bytes());
    server_name.push(0); // host_name
    server_name.extend((name.len() as u16).to_be_bytes());
    server_name.extend(name);
    ext(&mut exts, 0x0000, &server_name);
    ext(&mut exts, 0x000a, &[0, 2, 0, 0x17]); // supported_groups: secp256r1
    ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext(
        &mut exts,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16]; // handshake record
    record.extend(version.min(0x0301).to_be_bytes());
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn tls_1_1_and_older_are_refused() {
    let Localhost {
        ca: _ca,
        dir: _dir,
        pairs,
    } = localhost();
    let (gw, https) = tls_gateway("routes: []\n", &pairs, "").await;
    let versions = [
        (0x0300, "SSL 3.0"),
        (0x0301, "TLS 1.0"),
        (0x0302, "TLS 1.1"),
    ];
    for (i, (version, name)) in versions.into_iter().enumerate() {
        let mut tcp = TcpStream::connect(https).await.unwrap();
        tcp.write_all(&legacy_client_hello(version, "localhost"))
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{name}: the server neither answered nor closed"))
            .ok();
        // Never a ServerHello (a handshake record): one fatal
        // protocol_version alert (70), then close.
        assert_eq!(
            answer.len(),
            7,
            "{name}: expected one alert record, got {answer:02x?}"
        );
        assert_eq!(
            answer[0], 0x15,
            "{name}: expected an alert record, got {answer:02x?}"
        );
        assert_eq!(
            answer[5], 2,
            "{name}: expected a fatal alert, got {answer:02x?}"
        );
        assert_eq!(
            answer[6], 70,
            "{name}: expected protocol_version, got {answer:02x?}"
        );
        wait_counter(|| gw.metrics.tls_handshake_errors.get(), i as u64 + 1).await;
    }
    assert!(
        gw.metrics
            .render()
            .contains("portico_tls_handshake_errors_total 3")
    );

    // Control: the same hand-built hello saying TLS 1.2 gets a ServerHello,
    // so the refusals above are about the version and nothing else.
    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(&legacy_client_hello(0x0303, "localhost"))
        .await
        .unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        (head[0], head[5]),
        (0x16, 0x02),
        "handshake record holding a ServerHello, got {head:02x?}"
    );
    drop(tcp);
    gw.shutdown().await;
}

#[tokio::test]
async fn stalled_handshake_is_dropped_after_the_handshake_timeout() {
    let Localhost {
        ca: _ca,
        dir: _dir,
        pairs,
    } = localhost();
    let (gw, https) = tls_gateway("routes: []\n", &pairs, "  handshake_timeout: 300ms\n").await;

    let started = Instant::now();
    let mut tcp = TcpStream::connect(https).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("dropped well before 5s")
        .unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "closed too late: {waited:?}"
    );
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 1).await;

    // A client that starts but never finishes is cut off the same way.
    let mut tcp = TcpStream::connect(https).await.unwrap();
    let hello = legacy_client_hello(0x0303, "localhost");
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("dropped")
        .unwrap_or(0);
    assert_eq!(n, 0);
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 2).await;
    gw.shutdown().await;
}

/// A Secret volume as the kubelet writes it: `..<timestamp>/` holds the
/// files, `..data` points at it, and the visible names point into `..data`.
/// An update writes a new timestamped directory, renames a fresh symlink
/// over `..data` (atomic), then deletes the old directory.
struct SecretVolume {
    dir: tempfile::TempDir,
    current: String,
    version: u32,
}

impl SecretVolume {
    fn new(cert_pem: &str, key_pem: &str) -> SecretVolume {
        let dir = tempfile::tempdir().unwrap();
        let mut v = SecretVolume {
            dir,
            current: String::new(),
            version: 0,
        };
        let first = v.write_version(cert_pem, key_pem);
        std::os::unix::fs::symlink(&first, v.path("..data")).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), v.path(f)).unwrap();
        }
        v.current = first;
        v
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pair(&self) -> (PathBuf, PathBuf) {
        (self.path("tls.crt"), self.path("tls.key"))
    }

    fn write_version(&mut self, cert_pem: &str, key_pem: &str) -> String {
        self.version += 1;
        let name = format!(
            "..2026_01_0{}_12_00_00.{}",
            self.version,
            1000 + self.version
        );
        std::fs::create_dir(self.path(&name)).unwrap();
        std::fs::write(self.path(&name).join("tls.crt"), cert_pem).unwrap();
        std::fs::write(self.path(&name).join("tls.key"), key_pem).unwrap();
        name
    }

    fn update(&mut self, cert_pem: &str, key_pem: &str) {
        let next = self.write_version(cert_pem, key_pem);
        std::os::unix::fs::symlink(&next, self.path("..data_tmp")).unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
        std::fs::remove_dir_all(self.path(&self.current)).unwrap();
        self.current = next;
    }
}

/// Polls new handshakes until the server presents `want`; returns how long it took.
async fn wait_for_cert(https: std::net::SocketAddr, want: &Leaf, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if certs::served_cert(https, "localhost").await == want.der {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "new certificate not served within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn certificate_swap_by_symlink_is_picked_up_and_keepalive_survives() {
    let ca = TestCa::new("ca");
    let old = ca.leaf(&["localhost"], Key::EcdsaP256);
    let new = ca.leaf(&["localhost"], Key::EcdsaP384);
    let mut secret = SecretVolume::new(&old.cert_pem, &old.key_pem);
    let api = Backend::start("api").await;
    let (gw, https) = tls_gateway(&routes_yaml(&[("/api", &api)]), &[secret.pair()], "").await;

    // A keep-alive connection (one of each protocol) opened before the swap.
    let mut kept = Vec::new();
    for alpn in ["http/1.1", "h2"] {
        let s = certs::connect(https, "localhost", ca.client(&[alpn]))
            .await
            .unwrap();
        assert!(certs::peer_leaf(&s) == old.der);
        let mut tx = Sender::over(s).await;
        assert_eq!(tx.get("localhost", "/api/before").await.status, 200);
        kept.push(tx);
    }

    secret.update(&new.cert_pem, &new.key_pem);
    let took = wait_for_cert(https, &new, Duration::from_secs(2)).await;
    eprintln!("certificate swap picked up after {took:?}");
    // Verified by the CA-only client too.
    let s = certs::connect(https, "localhost", ca.client(&["h2"]))
        .await
        .unwrap();
    assert!(certs::peer_leaf(&s) == new.der);

    for tx in &mut kept {
        let r = tx.get("localhost", "/api/after").await;
        assert_eq!(
            r.status, 200,
            "the connection opened before the swap keeps working"
        );
    }
    assert_eq!(gw.metrics.tls_handshake_errors.get(), 0);
    gw.shutdown().await;
}

/// Every worker serves the rotated certificate: the certificate store is
/// shared, and new connections land on both workers.
#[tokio::test]
async fn a_certificate_rotation_reaches_every_worker() {
    let ca = TestCa::new("ca");
    let old = ca.leaf(&["localhost"], Key::EcdsaP256);
    let new = ca.leaf(&["localhost"], Key::EcdsaP384);
    let mut secret = SecretVolume::new(&old.cert_pem, &old.key_pem);
    let (gw, https) = tls_gateway("routes: []\n", &[secret.pair()], "").await;
    let accepted = |w: &str| gw.metrics.worker_connections.with_label_values(&[w]).get();
    secret.update(&new.cert_pem, &new.key_pem);
    wait_for_cert(https, &new, Duration::from_secs(2)).await;
    let before = (accepted("1"), accepted("2"));
    // 40 new connections: the chance that one worker gets none is 2^-39.
    for i in 0..40 {
        let s = certs::connect(https, "localhost", ca.client(&["h2"]))
            .await
            .unwrap();
        assert!(
            certs::peer_leaf(&s) == new.der,
            "connection {i} got the old certificate"
        );
    }
    assert!(accepted("1") > before.0 && accepted("2") > before.1);
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_new_certificate_keeps_the_old_one_serving() {
    let ca = TestCa::new("ca");
    let good = ca.leaf(&["localhost"], Key::EcdsaP256);
    let other = ca.leaf(&["localhost"], Key::EcdsaP256);
    let mut secret = SecretVolume::new(&good.cert_pem, &good.key_pem);
    let (gw, https) = tls_gateway("routes: []\n", &[secret.pair()], "").await;
    let client = ca.client(&["h2"]);

    // Each bad update in turn: a key that belongs to another certificate,
    // an empty certificate file (a half-written update), no key at all.
    let bad: [(&str, String, String); 3] = [
        (
            "mismatched key",
            other.cert_pem.clone(),
            good.key_pem.clone(),
        ),
        ("empty certificate", String::new(), good.key_pem.clone()),
        (
            "missing key",
            good.cert_pem.clone(),
            "not a key\n".to_string(),
        ),
    ];
    for (what, cert, key) in bad {
        secret.update(&cert, &key);
        // Two and a half poll intervals: the watcher has seen it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        for _ in 0..3 {
            let s = certs::connect(https, "localhost", client.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                certs::peer_leaf(&s) == good.der,
                "{what}: the old certificate keeps serving"
            );
        }
    }
    // A good update after the bad ones is picked up.
    let fixed = ca.leaf(&["localhost"], Key::Ed25519);
    secret.update(&fixed.cert_pem, &fixed.key_pem);
    wait_for_cert(https, &fixed, Duration::from_secs(2)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn expired_certificate_is_served_with_a_warning() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let expired = ca.leaf_with(&["localhost"], Key::EcdsaP256, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (gw, https) = tls_gateway("routes: []\n", &[expired.write(dir.path(), "old")], "").await;
    assert!(certs::served_cert(https, "localhost").await == expired.der);
    let err = certs::connect(https, "localhost", ca.client(&["h2"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    gw.shutdown().await;
}

/// Every error that stops the start names the file and the problem.
#[tokio::test]
async fn load_errors_are_clear_and_stop_the_start() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = ca.leaf(&["localhost"], Key::EcdsaP256).write(d, "good");
    let (other_cert, _) = ca.leaf(&["localhost"], Key::EcdsaP256).write(d, "other");
    std::fs::write(d.join("empty.crt"), "").unwrap();
    let (ed_cert, _) = ca.leaf(&["ed.test"], Key::Ed25519).write(d, "ed");

    // (what, cert/key pairs, what the error must say)
    type Case<'a> = (&'a str, Vec<(PathBuf, PathBuf)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "missing cert",
            vec![(d.join("nope.crt"), key.clone())],
            vec![format!(
                "{}: certificate file not found",
                d.join("nope.crt").display()
            )],
        ),
        (
            "missing key",
            vec![(cert.clone(), d.join("nope.key"))],
            vec![format!(
                "{}: private key file not found",
                d.join("nope.key").display()
            )],
        ),
        (
            "key of another cert",
            vec![(other_cert.clone(), key.clone())],
            vec![format!(
                "{}: private key does not match the certificate in {}",
                key.display(),
                other_cert.display()
            )],
        ),
        (
            "mismatch in the second pair",
            vec![(cert.clone(), key.clone()), (ed_cert.clone(), key.clone())],
            vec![format!(
                "{}: private key does not match the certificate in {}",
                key.display(),
                ed_cert.display()
            )],
        ),
        (
            "empty cert",
            vec![(d.join("empty.crt"), key.clone())],
            vec![format!(
                "{}: no certificate found",
                d.join("empty.crt").display()
            )],
        ),
        (
            "swapped files",
            vec![(key.clone(), cert.clone())],
            vec![
                format!("{}: no certificate found", key.display()),
                "are cert and key swapped?".into(),
            ],
        ),
        (
            "cert as key",
            vec![(ed_cert.clone(), ed_cert.clone())],
            vec![format!("{}: no private key found", ed_cert.display())],
        ),
    ];
    for (what, pairs, wants) in cases {
        let yaml = tls_yaml(&pairs, "", "");
        let cfg_dir = tempfile::tempdir().unwrap();
        std::fs::write(cfg_dir.path().join("routes.yaml"), "routes: []\n").unwrap();
        let cfg_path = cfg_dir.path().join("portico.yaml");
        std::fs::write(&cfg_path, format!("{yaml}routes_file: routes.yaml\n")).unwrap();
        let cfg = portico::config::load_gateway_config(&cfg_path).unwrap();
        let listeners = Listeners {
            http: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            https: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            operator: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let err = match app::start(cfg, listeners, std::future::pending()).await {
            Ok(_) => panic!("{what}: the gateway started"),
            Err(e) => portico::proxy::error_chain(&e),
        };
        assert!(
            err.starts_with("cannot load TLS certificates: "),
            "{what}: {err}"
        );
        for want in wants {
            assert!(err.contains(&want), "{what}: {err:?} lacks {want:?}");
        }
    }
}

/// PEM flavours seen in the wild: PKCS#8 (rcgen, cert-manager), PKCS#1
/// `RSA PRIVATE KEY` and SEC1 `EC PRIVATE KEY` (older openssl, many CAs).
#[tokio::test]
async fn pkcs8_pkcs1_and_sec1_keys_all_serve() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let rsa = ca.leaf(&["rsa.test"], Key::Rsa2048);
    let ec = ca.leaf(&["ec.test"], Key::EcdsaP384);
    let (rsa_cert, rsa_key) = rsa.write(dir.path(), "rsa");
    let (ec_cert, ec_key) = ec.write(dir.path(), "ec");
    let pkcs1 = certs::openssl(&["rsa", "-traditional"], Some(&rsa.key_pem));
    let sec1 = certs::openssl(&["ec"], Some(&ec.key_pem));
    // Marker split so no committed file holds a key header.
    assert!(pkcs1.starts_with(concat!("-----BEGIN ", "RSA PRIVATE KEY-----")));
    assert!(sec1.starts_with(concat!("-----BEGIN ", "EC PRIVATE KEY-----")));
    std::fs::write(&rsa_key, pkcs1).unwrap();
    std::fs::write(&ec_key, sec1).unwrap();
    let (gw, https) = tls_gateway(
        "routes: []\n",
        &[(rsa_cert, rsa_key), (ec_cert, ec_key)],
        "",
    )
    .await;
    for (sni, leaf) in [("rsa.test", &rsa), ("ec.test", &ec)] {
        let s = certs::connect(https, sni, ca.client(&["http/1.1"]))
            .await
            .unwrap();
        assert!(certs::peer_leaf(&s) == leaf.der, "{sni}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn redirect_to_https_answers_308_with_the_same_host_and_target() {
    let Localhost {
        ca,
        dir: _dir,
        pairs,
    } = localhost();
    let api = Backend::start("api").await;
    let yaml = tls_yaml(&pairs, "  redirect_to_https: true\n", "");
    let gw = TestGateway::start_yaml(&routes_yaml(&[("/api", &api)]), &yaml).await;
    let https = gw.https_addr.unwrap();

    let r = get_with(
        gw.addr,
        "/api/a/b?x=1&y=%2F",
        &[("host", "example.com:8080"), ("x-request-id", "ticket-9")],
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.com:{}/api/a/b?x=1&y=%2F", https.port()).as_str())
    );
    assert_eq!(r.header("x-request-id"), Some("ticket-9"));
    let r = get_with(gw.addr, "/metrics", &[("host", "example.com")]).await;
    assert_eq!(r.status, 308, "every path redirects");
    assert!(api.seen().is_empty(), "nothing is proxied in clear text");

    // Following the redirect works.
    let s = certs::connect(https, "localhost", ca.client(&["h2"]))
        .await
        .unwrap();
    let r = Sender::over(s).await.get("localhost", "/api/a/b?x=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(api.last().headers["x-forwarded-proto"], "https");
    assert!(
        gw.metrics.render().contains("status=\"308\""),
        "redirects are counted"
    );
    gw.shutdown().await;
}

/// Behind a Service that maps 443 to the HTTPS listener's port, clients
/// must be sent to the Service's port, not the pod's.
#[tokio::test]
async fn redirect_port_names_the_port_clients_use() {
    let Localhost {
        ca: _ca,
        dir: _dir,
        pairs,
    } = localhost();
    let api = Backend::start("api").await;
    for (port, want) in [
        ("443", "https://example.com/x?y=1"),
        ("9443", "https://example.com:9443/x?y=1"),
    ] {
        let extra = format!("  redirect_to_https: true\n  redirect_port: {port}\n");
        let yaml = tls_yaml(&pairs, &extra, "");
        let gw = TestGateway::start_yaml(&routes_yaml(&[("/api", &api)]), &yaml).await;
        let r = get_with(gw.addr, "/x?y=1", &[("host", "example.com:8080")]).await;
        assert_eq!(r.status, 308);
        assert_eq!(r.header("location"), Some(want));
        gw.shutdown().await;
    }
}

// Route key `https_redirect` (ingress-nginx's ssl-redirect, per route):
// only that route's plain requests are redirected; others are proxied.
#[tokio::test]
async fn https_redirect_routes_send_plain_requests_to_the_https_listener() {
    let Localhost {
        ca,
        dir: _dir,
        pairs,
    } = localhost();
    let api = Backend::start("api").await;
    let routes = format!(
        "routes:\n  - prefix: /secure\n    backend: {u}\n    https_redirect: true\n  - prefix: /open\n    backend: {u}\n",
        u = api.url()
    );
    let yaml = tls_yaml(&pairs, "", "");
    let gw = TestGateway::start_yaml(&routes, &yaml).await;
    let https = gw.https_addr.unwrap();
    let r = get_with(gw.addr, "/secure/a?x=1", &[("host", "example.com:8080")]).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://example.com:{}/secure/a?x=1", https.port()).as_str())
    );
    assert!(
        api.seen().is_empty(),
        "the redirected request is not proxied"
    );
    let r = get_with(gw.addr, "/open/a", &[("host", "example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(api.last().headers["x-forwarded-proto"], "http");
    // Over HTTPS the route is proxied.
    let s = certs::connect(https, "localhost", ca.client(&["h2"]))
        .await
        .unwrap();
    let r = Sender::over(s).await.get("localhost", "/secure/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(api.last().headers["x-forwarded-proto"], "https");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_backend_with_a_private_ca_needs_its_ca_file() {
    let private_ca = TestCa::new("private backend CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = private_ca.write(dir.path());
    let backend = TlsBackend::start(&private_ca.leaf(&["127.0.0.1"], Key::EcdsaP256)).await;
    let url = format!("https://{}", backend.addr);
    let routes = format!(
        "routes:\n  - prefix: /trusted\n    backend: {url}\n    ca_file: \"{}\"\n  - prefix: /public-roots\n    backend: {url}\n",
        ca_file.display()
    );
    let gw = TestGateway::start(&routes).await;

    let r = get_with(gw.addr, "/trusted/x", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["backend"], "tls");
    assert_eq!(r.json()["path"], "/trusted/x");

    // Without the CA file the backend's certificate is unknown: 502, kind tls.
    let r = get_with(gw.addr, "/public-roots/x", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unavailable");
    let metrics = gw.metrics.render();
    let count = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("portico_upstream_errors_total")
                    && l.contains("route=\"/public-roots\"")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(count("tls").as_deref(), Some("1"), "{metrics}");
    assert_ne!(
        count("connect").as_deref(),
        Some("1"),
        "a certificate error is not a connect error"
    );
    gw.shutdown().await;
}

/// `portico serve` with a bad certificate: exit 1, the problem in the log.
#[test]
fn serve_exits_1_on_a_bad_certificate() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "tls");
    let missing = dir.path().join("missing.key");
    std::fs::write(dir.path().join("routes.yaml"), "routes: []\n").unwrap();
    let cfg = dir.path().join("portico.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}routes_file: routes.yaml\n",
            tls_yaml(&[(cert, missing.clone())], "", "")
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&cfg);
    let line = serve.wait_line("cannot start", |v| v["msg"] == "cannot start");
    let err = line["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains(&format!(
            "{}: private key file not found",
            missing.display()
        )),
        "{line}"
    );
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(1));
}

/// `portico check` loads the certificates too: a key that does not match
/// its certificate fails the check, not the next rollout.
#[test]
fn check_rejects_a_mismatched_key() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "a");
    let (_, other_key) = ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "b");
    std::fs::write(dir.path().join("routes.yaml"), "routes: []\n").unwrap();
    let cfg = dir.path().join("portico.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}routes_file: routes.yaml\n",
            tls_yaml(&[(cert.clone(), other_key)], "", "")
        ),
    )
    .unwrap();
    let out = crate::support::binary::run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls:") && err.contains("does not match"),
        "{err}"
    );
}

/// SIGHUP reloads the certificates at once, not at the next poll. Three
/// rounds, each within 250 ms of the signal, cannot all be the 1 s poll
/// by luck.
#[test]
fn sighup_reloads_certificates_at_once() {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let pair = ca
        .leaf(&["localhost"], Key::EcdsaP256)
        .write(dir.path(), "tls");
    std::fs::write(dir.path().join("routes.yaml"), "routes: []\n").unwrap();
    let cfg = dir.path().join("portico.yaml");
    std::fs::write(
        &cfg,
        format!("{}routes_file: routes.yaml\n", tls_yaml(&[pair], "", "")),
    )
    .unwrap();
    let mut serve = Serve::start(&cfg);
    let _ = serve.listening("https");
    for round in 0..3 {
        // Let the poll see the current files first, then change them.
        std::thread::sleep(Duration::from_millis(1100));
        ca.leaf(&["localhost"], Key::EcdsaP256)
            .write(dir.path(), "tls");
        let signalled = std::time::Instant::now();
        serve.signal("HUP");
        serve.wait_line("certificates reloaded", |v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("TLS certificates reloaded"))
        });
        let took = signalled.elapsed();
        assert!(
            took < Duration::from_millis(250),
            "round {round}: reloaded {took:?} after SIGHUP:\n{}",
            serve.seen.join("\n")
        );
    }
    serve.signal("TERM");
    assert_eq!(serve.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Hostile or confused clients on the TLS port: plain HTTP, random bytes, a
/// client that rejects the certificate, a client that hangs up mid-hello.
/// Each is dropped without reaching a backend and counted as a handshake
/// error; the listener keeps serving well-behaved clients throughout.
#[tokio::test]
async fn hostile_handshakes_are_counted_and_the_listener_keeps_serving() {
    let Localhost {
        ca,
        dir: _dir,
        pairs,
    } = localhost();
    let api = Backend::start("api").await;
    let (gw, https) = tls_gateway(&routes_yaml(&[("/api", &api)]), &pairs, "").await;

    async fn answer(https: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut tcp = TcpStream::connect(https).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
            .await
            .expect("the gateway closes the connection");
        out
    }
    let good = |ca: &TestCa| {
        let config = ca.client(&["http/1.1"]);
        async move {
            let s = certs::connect(https, "localhost", config).await.unwrap();
            Sender::over(s).await.get("localhost", "/api/ok").await
        }
    };

    // Plain HTTP on the TLS port: no HTTP answer, at most a TLS alert.
    let plain = answer(https, b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(
        !String::from_utf8_lossy(&plain).contains("HTTP/1.1"),
        "plain HTTP was answered in clear: {plain:?}"
    );
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 1).await;
    assert_eq!(good(&ca).await.status, 200);

    // Random bytes that are not a TLS record.
    let noise: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    answer(https, &noise).await;
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 2).await;

    // A client that does not trust the certificate aborts the handshake.
    let stranger = TestCa::new("someone else");
    let refused = certs::connect(https, "localhost", stranger.client(&["http/1.1"])).await;
    assert!(refused.is_err(), "a client of another CA must not connect");
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 3).await;

    // Half a ClientHello, then the client hangs up.
    let hello = legacy_client_hello(0x0303, "localhost");
    let mut tcp = TcpStream::connect(https).await.unwrap();
    tcp.write_all(&hello[..hello.len() / 2]).await.unwrap();
    drop(tcp);
    wait_counter(|| gw.metrics.tls_handshake_errors.get(), 4).await;

    assert_eq!(good(&ca).await.status, 200);
    assert_eq!(
        api.seen().len(),
        2,
        "only the well-behaved requests reached the backend"
    );
    gw.shutdown().await;
}

/// Routes for two hosts, each with its own certificate, plus a wildcard
/// certificate: what the 421 tests connect to.
async fn two_host_gateway(
    tls_extra: &str,
) -> (
    TestGateway,
    std::net::SocketAddr,
    TestCa,
    [Backend; 3],
    tempfile::TempDir,
) {
    let ca = TestCa::new("ca");
    let dir = tempfile::tempdir().unwrap();
    let pairs = [
        ca.leaf(&["a.test"], Key::EcdsaP256).write(dir.path(), "a"),
        ca.leaf(&["b.test"], Key::EcdsaP256).write(dir.path(), "b"),
        ca.leaf(&["*.w.test"], Key::EcdsaP256)
            .write(dir.path(), "w"),
    ];
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("w").await,
    ];
    let routes = format!(
        "routes:\n  - host: a.test\n    prefix: /\n    backend: {}\n  - host: b.test\n    prefix: /\n    backend: {}\n  - host: '*.w.test'\n    prefix: /\n    backend: {}\n",
        backends[0].url(),
        backends[1].url(),
        backends[2].url()
    );
    let (gw, https) = tls_gateway(&routes, &pairs, tls_extra).await;
    (gw, https, ca, backends, dir)
}

// An HTTP/2 connection opened (and authenticated) for a.test must not be
// reused to reach b.test's routes: RFC 9110 §15.5.20.
#[tokio::test]
async fn a_connection_reused_for_a_host_its_certificate_does_not_cover_is_421() {
    let (gw, https, ca, [a, b, w], _dir) = two_host_gateway("").await;
    for alpn in ["h2", "http/1.1"] {
        let s = certs::connect(https, "a.test", ca.client(&[alpn]))
            .await
            .unwrap();
        assert_eq!(certs::alpn(&s).as_deref(), Some(alpn));
        let mut tx = Sender::over(s).await;
        let r = tx.get("a.test", "/x").await;
        assert_eq!(
            (r.status.as_u16(), r.json()["backend"].as_str()),
            (200, Some("a"))
        );
        for host in ["b.test", "B.TEST:443", "x.w.test", "unknown.test"] {
            let r = tx.get(host, "/x").await;
            assert_eq!(r.status, 421, "{alpn} {host}: {}", r.text());
            assert_eq!(r.json()["error"], "misdirected_request");
            assert!(r.header("x-request-id").is_some());
        }
        // The connection is still good for its own host.
        let r = tx.get("A.test:443", "/y").await;
        assert_eq!(r.status, 200, "{alpn}");
    }
    assert!(b.seen().is_empty() && w.seen().is_empty());
    assert_eq!(a.seen().len(), 4);

    // A connection of its own reaches b.test; a wildcard certificate covers
    // every name under it, so reusing its connection there is fine.
    let s = certs::connect(https, "b.test", ca.client(&["h2"]))
        .await
        .unwrap();
    assert_eq!(Sender::over(s).await.get("b.test", "/").await.status, 200);
    let s = certs::connect(https, "one.w.test", ca.client(&["h2"]))
        .await
        .unwrap();
    let mut tx = Sender::over(s).await;
    for host in ["one.w.test", "two.w.test"] {
        let r = tx.get(host, "/").await;
        assert_eq!(
            (r.status.as_u16(), r.json()["backend"].as_str()),
            (200, Some("w"))
        );
    }
    assert_eq!(tx.get("a.w.w.test", "/").await.status, 421);
    let text = gw.metrics.render();
    assert!(
        text.contains(
            r#"portico_requests_total{canary="false",host="*",method="GET",route="none",status="421"} 9"#
        ),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn reject_misdirected_false_lets_a_shared_connection_reach_any_host() {
    let (gw, https, ca, [_a, b, _w], _dir) =
        two_host_gateway("  reject_misdirected: false\n").await;
    let s = certs::connect(https, "a.test", ca.client(&["h2"]))
        .await
        .unwrap();
    let mut tx = Sender::over(s).await;
    let r = tx.get("b.test", "/x").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["backend"].as_str()),
        (200, Some("b"))
    );
    assert_eq!(b.seen().len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn certificate_expiry_is_exported_and_follows_a_rotation() {
    let ca = TestCa::new("ca");
    let old = ca.leaf(&["old.example.test"], Key::EcdsaP256);
    let new = ca.leaf(&["new.example.test"], Key::EcdsaP256);
    let mut secret = SecretVolume::new(&old.cert_pem, &old.key_pem);
    let (gw, _https) = tls_gateway("routes: []\n", &[secret.pair()], "").await;
    let expiry = |name: &str| {
        let text = gw.metrics.render();
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "portico_tls_certificate_expiry_timestamp_seconds{{name=\"{name}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
    };
    let not_after = |der: &[u8]| x509::parse_leaf(der).unwrap().not_after;
    assert_eq!(expiry("old.example.test"), Some(not_after(&old.der)));
    secret.update(&new.cert_pem, &new.key_pem);
    let deadline = Instant::now() + Duration::from_secs(5);
    while expiry("new.example.test").is_none() {
        assert!(Instant::now() < deadline, "rotation not reflected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(expiry("new.example.test"), Some(not_after(&new.der)));
    assert_eq!(
        expiry("old.example.test"),
        None,
        "the replaced certificate drops out"
    );
    gw.shutdown().await;
}
