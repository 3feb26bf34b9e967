//! Portico's HTTP/2 client against real h2c backends (hyper servers): a
//! request body larger than every window streams through with
//! backpressure to the client, a body over the limit is a 413 and a reset
//! stream, a request given up resets its stream on the backend, and a
//! backend that sends GOAWAY gets its next request on a new connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use crate::support::client::{self, get};
use crate::support::gateway::TestGateway;

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// An h2c backend (prior knowledge) running `handler` for every request.
/// Counts connections; with `goaway_after_first`, each connection is shut
/// down gracefully (GOAWAY) once its first response has gone out.
struct H2Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl H2Backend {
    async fn start(goaway_after_first: bool, handler: Handler) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let answered = Arc::new(Notify::new());
                    let told = answered.clone();
                    let svc = service_fn(move |req| {
                        let handler = handler.clone();
                        let told = told.clone();
                        async move {
                            let resp = handler(req).await;
                            told.notify_one();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    if goaway_after_first {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = answered.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                });
            }
        });
        H2Backend { addr, connections }
    }
}

fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

fn text(s: String) -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from(s)))
}

/// An HTTP/1.1 connection to the gateway whose request bodies are fed
/// from a channel, chunk by chunk.
async fn streaming_client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<StreamBody<tokio_stream_like::Rx>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A channel receiver as a stream of body frames.
mod tokio_stream_like {
    use super::*;

    pub struct Rx(pub mpsc::Receiver<Bytes>);

    impl futures_util::Stream for Rx {
        type Item = Result<Frame<Bytes>, Infallible>;

        fn poll_next(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }
}

/// The byte at offset `i` of the test uploads: a pattern that catches a
/// chunk lost, repeated or out of order.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// Feeds `total` bytes of the pattern into `tx` in 64 KiB chunks,
/// counting in `sent` what the client has taken.
fn feed(tx: mpsc::Sender<Bytes>, total: u64, sent: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut at = 0u64;
        while at < total {
            let n = (64 * 1024).min(total - at);
            let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            at += n;
            sent.store(at, Ordering::SeqCst);
        }
    });
}

/// Waits until `counter` has not moved for half a second (at most 20 s)
/// and returns where it stopped.
async fn settled(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::SeqCst);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the upload never stopped moving (at {last} bytes)");
}

#[tokio::test]
async fn an_upload_larger_than_every_window_streams_with_backpressure() {
    const TOTAL: u64 = 64 << 20;
    let resume = Arc::new(Notify::new());
    let wake = resume.clone();
    let backend = H2Backend::start(
        false,
        handler(move |req: Request<Incoming>| {
            let wake = wake.clone();
            async move {
                let mut body = req.into_body();
                let (mut n, mut bad) = (0u64, 0u64);
                let mut first = true;
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.unwrap().into_data() else {
                        continue;
                    };
                    for (i, b) in data.iter().enumerate() {
                        if *b != pattern(n + i as u64) {
                            bad += 1;
                        }
                    }
                    n += data.len() as u64;
                    if first {
                        // Stop reading until the test has seen the
                        // client held back.
                        first = false;
                        wake.notified().await;
                    }
                }
                text(format!("{n} {bad}"))
            }
        }),
    )
    .await;
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /up\n    backend: h2c://{}\n",
            backend.addr
        ),
        "workers: 1\nlimits:\n  max_body_size: 1GiB\n",
    )
    .await;
    let mut sender = streaming_client(gw.addr).await;
    let (tx, rx) = mpsc::channel(1);
    let sent = Arc::new(AtomicU64::new(0));
    feed(tx, TOTAL, sent.clone());
    let req = Request::post("/up")
        .header("host", "t")
        .body(StreamBody::new(tokio_stream_like::Rx(rx)))
        .unwrap();
    let answer = tokio::spawn(async move { sender.send_request(req).await });
    // The backend reads nothing: windows, buffers and socket queues fill,
    // then the client is held back, far short of the whole body.
    let held = settled(&sent).await;
    assert!(held > 0, "the upload started");
    assert!(
        held < 24 << 20,
        "the client was held back at {held} bytes of {TOTAL}, not buffered"
    );
    resume.notify_one();
    let resp = answer.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        format!("{TOTAL} 0"),
        "every byte arrived, in order"
    );
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_a_reset_stream() {
    let outcomes = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = outcomes.clone();
    let backend = H2Backend::start(
        false,
        handler(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let outcome = match req.into_body().collect().await {
                    Ok(b) => format!("complete {}", b.to_bytes().len()),
                    Err(_) => "reset".to_string(),
                };
                seen.lock().push(outcome.clone());
                text(outcome)
            }
        }),
    )
    .await;
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /up\n    backend: h2c://{}\n    max_body_size: 1KiB\n",
            backend.addr
        ),
        "workers: 1\n",
    )
    .await;
    // Chunked: the size is known only as the body arrives, after the
    // request head has gone to the backend.
    let chunk = "y".repeat(4096);
    let raw = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = client::raw(gw.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    // The backend saw the stream end in a reset, never a complete body;
    // its connection carries the next request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while outcomes.lock().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*outcomes.lock(), vec!["reset".to_string()]);
    let r = client::send(
        &client::http1(),
        Request::post(format!("http://{}/up", gw.addr))
            .body(Full::new(Bytes::from_static(b"small")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "complete 5");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

/// Counts, when dropped, a backend handler that did not finish.
struct Abandoned(Arc<AtomicUsize>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_request_given_up_resets_its_stream_on_the_backend() {
    let abandoned = Arc::new(AtomicUsize::new(0));
    let count = abandoned.clone();
    let backend = H2Backend::start(
        false,
        handler(move |_req: Request<Incoming>| {
            let guard = Abandoned(count.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                std::mem::forget(guard);
                text("late".into())
            }
        }),
    )
    .await;
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /hang\n    backend: h2c://{}\n    timeout: 300ms\n",
            backend.addr
        ),
        "workers: 1\n",
    )
    .await;
    // Without a body: the gateway's timeout drops the wait for the answer.
    let r = get(gw.addr, "/hang").await;
    assert_eq!(r.status, 504);
    // With a body that an HTTP/2 client keeps open on a connection it
    // keeps using: only the gateway giving up can end the backend's stream.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(1);
    tx.send(Bytes::from_static(b"part of a body"))
        .await
        .unwrap();
    let req = Request::post(format!("http://{}/hang", gw.addr))
        .body(StreamBody::new(tokio_stream_like::Rx(rx)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 504);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while abandoned.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        abandoned.load(Ordering::SeqCst),
        2,
        "both streams were reset on the backend"
    );
    // The client's connection is still there for its next request.
    let resp = sender
        .send_request(
            Request::get(format!("http://{}/nowhere", gw.addr))
                .body(StreamBody::new(tokio_stream_like::Rx(mpsc::channel(1).1)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    drop(tx);
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_sends_goaway_gets_the_next_request_on_a_new_connection() {
    let backend = H2Backend::start(
        true,
        handler(|req: Request<Incoming>| async move { text(req.uri().path().to_string()) }),
    )
    .await;
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n  - prefix: /g\n    backend: h2c://{}\n",
            backend.addr
        ),
        "workers: 1\n",
    )
    .await;
    for i in 1..=4 {
        let r = get(gw.addr, &format!("/g/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), format!("/g/{i}"));
        // Let the GOAWAY arrive before the next request.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while backend.connections.load(Ordering::SeqCst) < i
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        4,
        "each connection carried one request, then went away"
    );
    gw.shutdown().await;
}
