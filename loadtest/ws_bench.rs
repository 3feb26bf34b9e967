//! The WebSocket side of `loadtest/run.sh`: an echo backend and a load
//! generator (message round trips over many open sockets).
//!
//!   ws_bench echo ADDR
//!       echoes every message on every WebSocket accepted at ADDR (one
//!       thread, like the nginx backend of the HTTP scenarios).
//!   ws_bench load URL ACTIVE IDLE SECONDS SIZE THREADS
//!       opens IDLE sockets that stay quiet and ACTIVE sockets that each send
//!       a SIZE-byte binary message and wait for its echo, again and again,
//!       for 2 s of warm-up and then SECONDS; prints one line:
//!       `round_trips N rps R p50_ms A p99_ms B p999_ms C errors E`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") if args.len() == 2 => runtime(1).block_on(echo(&args[1])),
        Some("load") if args.len() == 7 => {
            let n = |i: usize| -> usize {
                args[i]
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("not a number: {}", args[i])))
            };
            let (active, idle, secs, size, threads) = (n(2), n(3), n(4), n(5), n(6));
            runtime(threads).block_on(load(&args[1], active, idle, secs as u64, size));
        }
        _ => usage("expected echo ADDR or load URL ACTIVE IDLE SECONDS SIZE THREADS"),
    }
}

fn usage(why: &str) -> ! {
    eprintln!("ws_bench: {why}");
    std::process::exit(2)
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("a runtime")
}

async fn echo(addr: &str) {
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the echo address");
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                let echo = match msg {
                    Message::Binary(_) | Message::Text(_) => msg,
                    Message::Close(_) => return,
                    _ => continue,
                };
                if ws.send(echo).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One active socket's round trips: latencies in µs after the warm-up.
async fn active(url: String, size: usize, warm_until: Instant, end: Instant) -> (Vec<u32>, u64) {
    let mut lat = Vec::new();
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        return (lat, 1);
    };
    let payload = bytes::Bytes::from(vec![0x5a; size]);
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            return (lat, 1);
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.len() == size => {}
            _ => return (lat, 1),
        }
        if t >= warm_until {
            lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    let _ = ws.close(None).await;
    (lat, 0)
}

async fn load(url: &str, actives: usize, idle: usize, secs: u64, size: usize) {
    // The quiet sockets first, so the active ones run with all of them open.
    let mut quiet = Vec::with_capacity(idle);
    let mut errors = 0u64;
    for _ in 0..idle {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => quiet.push(ws),
            Err(_) => errors += 1,
        }
    }
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(2);
    let end = warm_until + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..actives)
        .map(|_| tokio::spawn(active(url.to_owned(), size, warm_until, end)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let (lat, e) = t.await.unwrap_or((Vec::new(), 1));
        all.extend(lat);
        errors += e;
    }
    // Every quiet socket must still be open: answer a ping.
    for ws in &mut quiet {
        let alive = ws.send(Message::Ping(bytes::Bytes::new())).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
                Ok(Some(Ok(Message::Pong(_))))
            );
        errors += u64::from(!alive);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        f64::from(all[i]) / 1000.0
    };
    println!(
        "round_trips {} rps {:.0} p50_ms {:.3} p99_ms {:.3} p999_ms {:.3} errors {}",
        all.len(),
        all.len() as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        errors
    );
    for mut ws in quiet {
        let _ = ws.close(None).await;
    }
}
