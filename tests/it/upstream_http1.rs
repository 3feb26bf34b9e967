//! Portico's HTTP/1.1 client against backends that answer byte for byte
//! as scripted: each framing of a response body (length, chunked with
//! extensions and trailers, read to close), interim answers, `HEAD`, early
//! answers to an upload, pooled connections the backend closed, and the
//! malformed answers that must become a 502 while the gateway keeps
//! serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::backend::Backend;
use crate::support::client::{self, get};
use crate::support::gateway::TestGateway;
use crate::support::wire::{read_more, read_until};

/// What the scripted backend does with a request it has read.
enum Act {
    /// Writes these bytes and waits for the next request.
    Answer(Vec<u8>),
    /// Writes these bytes and closes the connection.
    AnswerAndClose(Vec<u8>),
    /// Writes these bytes before reading the request's body, then reads
    /// nothing more (a backend that refuses an upload at its head).
    AnswerEarly(Vec<u8>),
}

/// A backend that reads each request (head, and body by its framing) and
/// acts as `script` says for the n-th request it has read overall.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Every request as read: head and body bytes, as on the wire.
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    async fn start(script: impl Fn(usize) -> Act + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, script.clone(), r.clone()));
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn request(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.requests.lock()[i]).into_owned()
    }
}

async fn serve(
    mut s: TcpStream,
    script: Arc<dyn Fn(usize) -> Act + Send + Sync>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut s, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let n = {
            let mut seen = requests.lock();
            seen.push(buf[..head_end].to_vec());
            seen.len() - 1
        };
        let act = script(n);
        if let Act::AnswerEarly(bytes) = &act {
            let _ = s.write_all(bytes).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        // The body, by its framing.
        let mut end = head_end;
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while buf.len() < head_end + len {
                if !read_more(&mut s, &mut buf).await {
                    return;
                }
            }
            end = head_end + len;
        } else if head.contains("transfer-encoding: chunked") {
            match read_until(&mut s, &mut buf, b"0\r\n\r\n").await {
                Some(e) => end = e,
                None => return,
            }
        }
        requests.lock()[n] = buf[..end].to_vec();
        buf.drain(..end);
        match act {
            Act::Answer(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::AnswerAndClose(bytes) => {
                let _ = s.write_all(&bytes).await;
                return;
            }
            Act::AnswerEarly(_) => unreachable!(),
        }
    }
}

/// A GET on `client`'s keep-alive connection: the same gateway worker,
/// and so the same pool of upstream connections, serves each.
async fn get_on(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    addr: SocketAddr,
    path: &str,
) -> client::Reply {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client::send(client, req).await
}

/// Whether a GET gets a whole response: the head, and a body that ends as
/// framed. A response broken off after its head fails in the body; one
/// broken off before hyper flushed its head fails as a request.
async fn completes(addr: SocketAddr, path: &str) -> bool {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let exchange = async {
        match client::http1().request(req).await {
            Ok(resp) => resp.into_body().collect().await.is_ok(),
            Err(_) => false,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the exchange ends in time")
}

fn route(prefix: &str, addr: SocketAddr) -> String {
    format!("  - prefix: {prefix}\n    backend: http://{addr}\n")
}

fn protocol_errors(gw: &TestGateway, route: &str) -> u64 {
    gw.metrics
        .upstream_errors
        .with_label_values(&["*", route, "protocol"])
        .get()
}

#[tokio::test]
async fn chunked_answers_with_extensions_and_trailers_arrive_whole_on_one_connection() {
    let backend = Scripted::start(|_| {
        Act::Answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 1\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let c = client::http1();
    let gw = TestGateway::start(&format!("routes:\n{}", route("/c", backend.addr))).await;
    for _ in 0..3 {
        let r = get_on(&c, gw.addr, "/c/x").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello world"));
    }
    assert_eq!(backend.connections(), 1, "the connection was reused");
    // The trailer section goes on as trailers: an HTTP/2 client gets them.
    let resp = client::h2c()
        .request(
            Request::get(format!("http://{}/c/x", gw.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers passed on");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(&collected.to_bytes()[..], b"hello world");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_read_to_close_arrives_whole_and_its_connection_is_not_reused() {
    let backend = Scripted::start(|_| {
        Act::AnswerAndClose(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close".to_vec(),
        )
    })
    .await;
    let c = client::http1();
    let gw = TestGateway::start(&format!("routes:\n{}", route("/c", backend.addr))).await;
    for _ in 0..2 {
        let r = get_on(&c, gw.addr, "/c/x").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "until-close"));
    }
    assert_eq!(backend.connections(), 2, "one connection per answer");
    gw.shutdown().await;
}

#[tokio::test]
async fn interim_answers_are_read_past() {
    let backend = Scripted::start(|_| {
        Act::Answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
              HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    })
    .await;
    let c = client::http1();
    let gw = TestGateway::start(&format!("routes:\n{}", route("/i", backend.addr))).await;
    let r = get_on(&c, gw.addr, "/i").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(get_on(&c, gw.addr, "/i").await.status, 200);
    assert_eq!(backend.connections(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn head_answers_are_not_read_for_a_body_and_keep_the_connection() {
    let backend = Scripted::start(|n| {
        Act::Answer(if n == 0 {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()
        })
    })
    .await;
    let gw = TestGateway::start(&format!("routes:\n{}", route("/h", backend.addr))).await;
    let c = client::http1();
    let head = client::send(
        &c,
        Request::head(format!("http://{}/h", gw.addr))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(head.body.is_empty());
    let r = get_on(&c, gw.addr, "/h").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    assert_eq!(
        backend.connections(),
        1,
        "the HEAD left the connection reusable"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn uploads_reach_the_backend_framed_as_declared_or_chunked() {
    let backend = Scripted::start(|_| {
        Act::Answer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec())
    })
    .await;
    let gw = TestGateway::start(&format!("routes:\n{}", route("/u", backend.addr))).await;
    // A declared length goes as it is.
    let r = client::send(
        &client::http1(),
        Request::post(format!("http://{}/u/len", gw.addr))
            .body(Full::new(Bytes::from_static(b"0123456789")))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201);
    let first = backend.request(0);
    assert!(
        first.to_lowercase().contains("content-length: 10\r\n"),
        "{first}"
    );
    assert!(first.ends_with("\r\n\r\n0123456789"), "{first}");
    // A chunked upload of unknown length goes chunked.
    let text = client::raw(
        gw.addr,
        b"POST /u/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    let second = backend.request(1).to_lowercase();
    assert!(
        second.contains("transfer-encoding: chunked\r\n"),
        "{second}"
    );
    let body = second.split_once("\r\n\r\n").unwrap().1;
    let decoded: String = body
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| pair.get(1).copied())
        .collect();
    assert_eq!(decoded, "abcdefg", "raw: {body:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_answer_before_the_whole_upload_is_passed_on_and_its_connection_dropped() {
    let backend = Scripted::start(|n| {
        if n == 0 {
            Act::AnswerEarly(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!".to_vec(),
            )
        } else {
            Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        }
    })
    .await;
    let c = client::http1();
    // One worker: the GET after the upload meets the pool the upload's
    // connection would have gone back to.
    let gw = TestGateway::start_with(
        &format!(
            "routes:\n{}    max_body_size: 64MiB\n",
            route("/e", backend.addr)
        ),
        "workers: 1\n",
    )
    .await;
    // 32 MiB: more than the sockets between the gateway and the backend
    // hold, so the gateway is still writing it when the answer comes.
    // Written from a task of its own, so the answer is read meanwhile.
    let s = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    tokio::spawn(async move {
        let head = format!(
            "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            32 << 20
        );
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&vec![b'x'; 32 << 20]).await;
        // Not half-closed: the gateway would take that for the client leaving.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.ends_with(b"big!") {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            other => panic!(
                "no answer: {other:?}, read {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let r = get_on(&c, gw.addr, "/e").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(
        backend.connections(),
        2,
        "the connection in the middle of the upload was not reused"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_again() {
    // Each answer says the connection stays open, then the backend closes
    // it anyway, as a backend's idle timeout does.
    let backend = Scripted::start(|_| {
        Act::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    })
    .await;
    let c = client::http1();
    let gw = TestGateway::start(&format!("routes:\n{}", route("/p", backend.addr))).await;
    for i in 0..5 {
        let r = get_on(&c, gw.addr, "/p").await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend.connections(), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_cut_off_by_the_backend_fails_on_the_client_and_nothing_else() {
    let backend = Scripted::start(|n| {
        if n == 0 {
            Act::AnswerAndClose(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b".to_vec(),
            )
        } else {
            Act::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        }
    })
    .await;
    let gw = TestGateway::start(&format!("routes:\n{}", route("/t", backend.addr))).await;
    assert!(
        !completes(gw.addr, "/t").await,
        "a truncated body must not look complete"
    );
    let r = get(gw.addr, "/t").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_are_502_and_the_gateway_keeps_serving() {
    let huge_head = {
        let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            h.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        h.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        (
            "two lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec(),
        ),
        (
            "negative length",
            b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok".to_vec(),
        ),
        ("status out of range", b"HTTP/1.1 1000 Huh\r\n\r\n".to_vec()),
        (
            "header without colon",
            b"HTTP/1.1 200 OK\r\nbroken header\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("head over 64 KiB", huge_head),
    ];
    let healthy = Backend::start("healthy").await;
    for (name, answer) in cases {
        let backend = Scripted::start(move |_| Act::AnswerAndClose(answer.clone())).await;
        let routes = format!(
            "routes:\n{}  - prefix: /ok\n    backend: {}\n",
            route("/bad", backend.addr),
            healthy.url()
        );
        let gw = TestGateway::start(&routes).await;
        let r = get(gw.addr, "/bad").await;
        assert_eq!(r.status, 502, "{name}: {}", r.text());
        assert_eq!(r.json()["error"], "upstream_unavailable", "{name}");
        assert_eq!(
            protocol_errors(&gw, "/bad"),
            1,
            "{name}: counted as a protocol error"
        );
        assert_eq!(
            get(gw.addr, "/ok").await.status,
            200,
            "{name}: others unaffected"
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_cuts_the_response_off() {
    let cases: Vec<(&str, &'static [u8])> = vec![
        (
            "bad size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "no CRLF after data",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        ),
        (
            "closed mid-body",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ),
    ];
    for (name, answer) in cases {
        let backend = Scripted::start(move |_| Act::AnswerAndClose(answer.to_vec())).await;
        let gw = TestGateway::start(&format!("routes:\n{}", route("/m", backend.addr))).await;
        assert!(
            !completes(gw.addr, "/m").await,
            "{name}: a broken body must not look complete"
        );
        gw.shutdown().await;
    }
}

/// A backend that writes its answer `step` bytes at a time.
async fn trickling(answer: &'static [u8], step: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if read_until(&mut s, &mut buf, b"\r\n\r\n").await.is_none() {
                    return;
                }
                for piece in answer.chunks(step) {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_head_arriving_a_few_bytes_at_a_time_is_read_whole() {
    // Longer than the part of a head that is parsed on every read.
    let long = "a".repeat(1500);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Long: {long}\r\n\
         Content-Length: 5\r\n\r\nslow!"
    );
    let addr = trickling(Box::leak(answer.into_bytes().into_boxed_slice()), 7).await;
    let gw = TestGateway::start(&format!("routes:\n{}", route("/s", addr))).await;
    let r = get(gw.addr, "/s").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "slow!"));
    assert_eq!(r.header("x-long"), Some(long.as_str()));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_is_not_http_is_refused_for_what_it_sent_not_timed_out() {
    // An SSH server's banner: one line, then it waits for the client.
    let addr = trickling(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", 64).await;
    let gw = TestGateway::start(&format!(
        "routes:\n{}    timeout: 30s\n",
        route("/ssh", addr)
    ))
    .await;
    // A 502 for what it sent, not the 504 of waiting for the rest.
    let r = get(gw.addr, "/ssh").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(protocol_errors(&gw, "/ssh"), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_long_trailer_section_arriving_a_few_bytes_at_a_time_ends_the_body() {
    let long = "t".repeat(1500);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
         4\r\nbody\r\n0\r\nx-trailer: {long}\r\n\r\n"
    );
    let addr = trickling(Box::leak(answer.into_bytes().into_boxed_slice()), 7).await;
    let gw = TestGateway::start(&format!("routes:\n{}", route("/t", addr))).await;
    let r = get(gw.addr, "/t").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "body"));
    gw.shutdown().await;
}
