//! One event loop per core (`workers` in `portico.yaml`): each worker is a
//! thread running a single-threaded tokio runtime with its own listening
//! sockets, so a connection, its requests and its upstream connections stay
//! on one core, as in nginx and HAProxy. Tokio's work-stealing scheduler
//! moved tasks and sockets between cores and paid for it in wake-ups.
//!
//! What workers share is read-mostly (route table, certificates, metrics)
//! or a handful of atomics (connection and in-flight limits). The operator
//! listener, the reloaders and the log writer run elsewhere.
//!
//! Each public listener gets one socket per worker: with `SO_REUSEPORT`
//! (how [`bind`] opens them) the kernel spreads new connections over the
//! workers' sockets; a listener bound without it is shared instead (every
//! worker accepts from a duplicate of the same socket).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

thread_local! {
    /// Set once on each worker thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread runs (1-based), or 0 off the workers (the
/// control plane, tests' own runtimes). Per-worker state is indexed by it.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// What a worker runs: made on the worker's own thread, inside its runtime,
/// because sockets register with the runtime that first polls them.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Exit code when a worker dies: the process stops rather than serving on
/// fewer cores without anyone noticing (Kubernetes restarts it).
pub const EXIT_WORKER_DIED: i32 = 70;

/// Starts worker `index` (1-based) running `jobs` to completion. The handle,
/// on the calling runtime, resolves when they have all finished. A worker
/// whose runtime cannot start, or whose job panics, is logged and the
/// process exits with [`EXIT_WORKER_DIED`].
pub fn spawn(index: usize, jobs: Vec<Job>) -> io::Result<JoinHandle<()>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("portico-w{index}"))
        .spawn(move || {
            WORKER.with(|w| w.set(index));
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot start a worker's runtime");
                    return;
                }
            };
            let clean = rt.block_on(async move {
                let tasks: Vec<_> = jobs.into_iter().map(|job| tokio::spawn(job())).collect();
                let mut clean = true;
                for task in tasks {
                    clean &= task.await.is_ok();
                }
                clean
            });
            if clean {
                let _ = done_tx.send(());
            }
        })?;
    Ok(tokio::spawn(async move {
        if done_rx.await.is_err() {
            tracing::error!(
                worker = index,
                "a worker died (panic or no runtime); exiting so the gateway is restarted on every core"
            );
            std::process::exit(EXIT_WORKER_DIED);
        }
    }))
}

/// A public listening socket with `SO_REUSEPORT`, so that each worker can
/// open its own socket on the same address ([`per_worker`]).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(reuseport_socket(addr)?)
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv6 only, as a plain bind would on most systems'
        // defaults; IPv4 clients need their own address.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// `n` sockets for one listener, one per worker: the listener itself, and
/// for the others new `SO_REUSEPORT` sockets on its address when it has
/// that option, duplicates of it otherwise.
pub fn per_worker(listener: TcpListener, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = listener.into_std()?;
    let addr = first.local_addr()?;
    let reuseport = Socket::from(first.try_clone()?).reuse_port()?;
    let mut sockets = Vec::with_capacity(n);
    for _ in 1..n {
        let extra = if reuseport {
            reuseport_socket(addr)?
        } else {
            let dup = first.try_clone()?;
            dup.set_nonblocking(true)?;
            dup
        };
        sockets.push(extra);
    }
    first.set_nonblocking(true)?;
    sockets.insert(0, first);
    Ok(sockets)
}
