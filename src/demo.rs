//! `portico demo`: the real gateway on loopback in front of three built-in
//! backends that answer with JSON describing what they received, so a
//! newcomer can see routing, normalization and request ids with curl alone.
//! It serves HTTPS too, with a self-signed certificate made at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config;

/// The demo route file, embedded so the demo also works outside a checkout.
const DEMO_ROUTES: &str = include_str!("../routes/demo.yaml");

/// The built-in backends: name and loopback port (as in `routes/demo.yaml`).
pub const DEMO_BACKENDS: [(&str, u16); 3] = [
    ("billing-reports", 18081),
    ("billing", 18082),
    ("orders", 18083),
];

/// Runs the demo with plain HTTP on `listen` and HTTPS on `listen_https`
/// until Ctrl-C / SIGTERM. Returns the exit code.
pub async fn run(listen: SocketAddr, listen_https: SocketAddr) -> u8 {
    let routes_file = match demo_routes_file() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot prepare the demo route file: {e}");
            return 1;
        }
    };
    for (name, port) in DEMO_BACKENDS {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tokio::spawn(serve_backend(l, name));
            }
            Err(e) => {
                eprintln!("cannot start demo backend {name} on {addr}: {e}");
                return 1;
            }
        }
    }
    // Removed again when the demo stops (the guard drops).
    let cert = match DemoCert::create() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot make the demo TLS certificate: {e}");
            return 1;
        }
    };
    let yaml = format!(
        "listen:\n  http: {listen}\n  https: {listen_https}\ntls:\n  certificates:\n    - cert: \"{}\"\n      key: \"{}\"\noperator:\n  listen: 127.0.0.1:0\nroutes_file: {}\nshutdown:\n  drain_delay: 0s\n",
        cert.cert.display(),
        cert.key.display(),
        routes_file.display()
    );
    let cfg = match config::parse_gateway_config(Path::new("<demo>"), &yaml) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let listeners = match crate::app::Listeners::bind(&cfg).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let running = match crate::app::start(cfg, listeners, {
        let mut signals = crate::lifecycle::signals::Signals::install();
        async move { signals.recv().await }
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let addr = running.http_addr.unwrap_or(listen);
    print_instructions(addr, &routes_file);
    print_tls_instructions(running.https_addr.unwrap_or(listen_https), &cert.cert);
    if let Some(op) = running.operator_addr {
        print_operator_instructions(op);
    }
    running.wait().await;
    0
}

/// `routes/demo.yaml` when run from a checkout; otherwise the embedded copy
/// written to a temporary directory.
fn demo_routes_file() -> std::io::Result<PathBuf> {
    let local = Path::new("routes/demo.yaml");
    if local.is_file() {
        return std::path::absolute(local);
    }
    let dir = std::env::temp_dir().join(format!("portico-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("demo.yaml");
    std::fs::write(&path, DEMO_ROUTES)?;
    Ok(path)
}

fn print_instructions(addr: SocketAddr, routes_file: &Path) {
    let base = format!("http://{addr}");
    println!(
        "\nPortico demo is running: gateway on {base}, routes from {}\n\
         Try:\n\
         \x20 curl -s {base}/billing/reports/2024/q1?format=csv      # longest prefix: /billing/reports\n\
         \x20 curl -s {base}/billing/reportsX                        # segment-wise: /billing, not /billing/reports\n\
         \x20 curl -s {base}/orders/42                               # strip_prefix: backend sees /42\n\
         \x20 curl -s '{base}/billing/./a//b/../c'                   # normalized to /billing/a/c before routing\n\
         \x20 curl -s -H 'x-request-id: my-ticket-123' {base}/billing # your request id is kept\n\
         \x20 curl -si {base}/metrics                                # 404: operator paths are never public\n\
         \x20 curl -si {base}/nowhere                                # 404 no_route, JSON with the request id\n\
         Press Ctrl-C to stop.\n",
        routes_file.display()
    );
}

fn print_tls_instructions(addr: SocketAddr, cert: &Path) {
    let port = addr.port();
    println!(
        "HTTPS on https://localhost:{port} (self-signed certificate for localhost, 127.0.0.1 and ::1, made at start):\n\
         \x20 curl -s --cacert {cert} https://localhost:{port}/billing          # trusts just this certificate\n\
         \x20 curl -s --http2 --cacert {cert} https://localhost:{port}/orders/7 # HTTP/2 over ALPN\n\
         \x20 curl -sk https://localhost:{port}/billing                          # -k: skip verification (demo only)\n\
         \x20 openssl s_client -connect 127.0.0.1:{port} -servername localhost -alpn h2 </dev/null\n",
        cert = cert.display()
    );
}

fn print_operator_instructions(addr: SocketAddr) {
    let base = format!("http://{addr}");
    println!(
        "Operator listener on {base} (loopback only; on the public port these paths answer 404):\n\
         \x20 curl -s {base}/readyz                    # 200 while a route table is loaded, 503 when draining\n\
         \x20 curl -s {base}/routes                    # the live table, its generation, SHA-256 and last reload error\n\
         \x20 curl -s {base}/metrics | grep ^portico_  # Prometheus metrics\n"
    );
}

/// The demo's self-signed certificate and key, written to a private
/// temporary directory (the gateway loads certificates from files) and
/// removed when dropped. ECDSA P-256 via rcgen; its own trust anchor, so
/// `curl --cacert` can verify it.
struct DemoCert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl DemoCert {
    fn create() -> Result<DemoCert, Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portico demo (self-signed)");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key)?;

        let dir = std::env::temp_dir().join(format!("portico-demo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let guard = DemoCert {
            cert: dir.join("demo.crt"),
            key: dir.join("demo.key"),
            dir,
        };
        std::fs::write(&guard.cert, cert.pem())?;
        write_private(&guard.key, key.serialize_pem().as_bytes())?;
        Ok(guard)
    }
}

impl Drop for DemoCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a file only its owner can read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A demo backend: answers every request with a JSON description of it.
async fn serve_backend(listener: TcpListener, name: &'static str) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(backend = name, error = %e, "demo backend accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| describe(req, name));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn describe(req: Request<Incoming>, name: &str) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let answer = serde_json::json!({
        "service": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_string_pretty(&answer).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
