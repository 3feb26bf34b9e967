//! A backend that reads request paths the way servlet containers (Tomcat,
//! Jetty, Spring on them) and Windows-style servers do, and serves its own
//! operator endpoints: the backend a path-reading disagreement would hurt.
//!
//! Its reading, in Tomcat's order: cut every segment at its first raw `;`
//! (path parameters), percent-decode, drop empty and `.` segments, resolve
//! `..`. Then, as IIS would, compare the first segment ignoring case and
//! trailing dots and spaces. When that lands on `/healthz`, `/readyz`,
//! `/livez` or `/metrics` it answers `200 LEAKED` and records the leak.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the servlet backend saw for one request.
#[derive(Debug, Clone)]
pub struct ServletSeen {
    /// The request target exactly as received.
    pub target: String,
    /// The path as the servlet container dispatches it.
    pub servlet_path: String,
    /// Whether that path is one of the backend's own operator endpoints.
    pub leaked: bool,
}

pub struct ServletBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<ServletSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServletBackend {
    pub async fn start() -> ServletBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        ServletBackend { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<ServletSeen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ServletBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Vec<ServletSeen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let servlet_path = servlet_path(req.uri().path());
    let leaked = is_operator_endpoint(&servlet_path);
    log.lock().unwrap().push(ServletSeen {
        target,
        servlet_path: servlet_path.clone(),
        leaked,
    });
    let body = if leaked {
        "LEAKED".to_string()
    } else {
        serde_json::json!({"servlet_path": servlet_path}).to_string()
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Tomcat's reading of a request path.
pub fn servlet_path(raw: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for segment in raw.split('/').skip(1) {
        let name = segment.split(';').next().unwrap_or_default();
        match percent_decode(name).as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other.to_owned()),
        }
    }
    format!("/{}", out.join("/"))
}

/// The backend's own endpoints, matched as a case-insensitive Windows-style
/// server would (`/METRICS`, `/metrics.`, `/metrics ` all open `/metrics`).
fn is_operator_endpoint(path: &str) -> bool {
    let first = path[1..].split('/').next().unwrap_or_default();
    let first = first.trim_end_matches(['.', ' ']).to_ascii_lowercase();
    matches!(first.as_str(), "healthz" | "readyz" | "livez" | "metrics")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
