//! A real hyper backend that records what it received and answers with a
//! JSON description of it. Query parameters change its behaviour:
//! `sleep_ms=N` waits before answering, `download_bytes=N` streams N bytes,
//! `status=N` answers with that status. Request bodies are counted as they
//! stream, never buffered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the backend saw for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body_bytes: u64,
}

#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far (to see pooling at work).
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections open right now (to see idle ones closed).
    open: Arc<std::sync::atomic::AtomicUsize>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        Self::serve(name, TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// On a given address (e.g. the port of a backend that was down).
    pub async fn start_at(name: &'static str, addr: SocketAddr) -> Backend {
        Self::serve(name, TcpListener::bind(addr).await.unwrap())
    }

    fn serve(name: &'static str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open_now = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open_now.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let log = log.clone();
                let open_now = open_now.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, name, log.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    open_now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Backend {
            name,
            addr,
            seen,
            accepted,
            open,
            task: Arc::new(task),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections the backend has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// TCP connections open right now.
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the backend received a request")
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

fn query_param(query: Option<&str>, key: &str) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    name: &'static str,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_bytes += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_bytes,
    });
    let query = parts.uri.query();
    if let Some(ms) = query_param(query, "sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = query_param(query, "download_bytes") {
        return Ok(Response::new(download(n)));
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let json = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "target": target,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from(json.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    if let Some(s) = query_param(query, "status") {
        *resp.status_mut() = http::StatusCode::from_u16(s as u16).unwrap();
    }
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    // A hop-by-hop header the gateway must not pass on to the client.
    resp.headers_mut()
        .insert("keep-alive", "timeout=30".parse().unwrap());
    Ok(resp)
}

/// `n` bytes in 64 KiB chunks, generated as they are sent.
fn download(n: u64) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64);
            let data = chunk.slice(..take as usize);
            Some((Ok::<_, Infallible>(Frame::data(data)), left - take))
        }
    });
    StreamBody::new(stream).boxed()
}
