//! The gateway started in-process on ephemeral loopback ports, with its
//! config and route file in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use portico::app::{self, Listeners};
use portico::config;
use portico::observability::metrics::Metrics;
use portico::routing::live::LiveRoutes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::backend::Backend;

pub struct TestGateway {
    pub addr: SocketAddr,
    pub operator_addr: SocketAddr,
    /// The HTTPS listener, when the config sets `listen.https`.
    pub https_addr: Option<SocketAddr>,
    pub live: Arc<LiveRoutes>,
    pub metrics: Arc<Metrics>,
    /// The gateway's draining flag (what SIGTERM sets).
    pub draining: Arc<AtomicBool>,
    pub dir: tempfile::TempDir,
    pub routes_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    running: Option<app::Running>,
}

/// Route file YAML for `(prefix, backend)` pairs.
pub fn routes_yaml(routes: &[(&str, &Backend)]) -> String {
    let mut s = String::from("routes:\n");
    for (prefix, b) in routes {
        s.push_str(&format!("  - prefix: {prefix}\n    backend: {}\n", b.url()));
    }
    s
}

impl TestGateway {
    /// Starts with the given route file and default settings.
    pub async fn start(routes: &str) -> TestGateway {
        Self::start_with(routes, "").await
    }

    /// `extra` is appended to the generated portico.yaml (e.g. a `limits:` block).
    pub async fn start_with(routes: &str, extra: &str) -> TestGateway {
        Self::start_with_operator(routes, "", extra).await
    }

    /// Like [`start_with`](Self::start_with); `operator` holds extra lines of
    /// the `operator:` block, indented two spaces (e.g. `"  allow: [..]\n"`).
    pub async fn start_with_operator(routes: &str, operator: &str, extra: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join("routes.yaml");
        std::fs::write(&routes_path, routes).unwrap();
        // Tests shut down often: no drain delay unless a test asks for one.
        let shutdown = if extra.contains("shutdown:") {
            ""
        } else {
            "shutdown:\n  drain_delay: 0s\n"
        };
        let yaml = format!(
            "listen:\n  http: 127.0.0.1:0\noperator:\n  listen: 127.0.0.1:0\n{operator}routes_file: {}\n{shutdown}{extra}",
            routes_path.display()
        );
        let cfg_path = dir.path().join("portico.yaml");
        std::fs::write(&cfg_path, &yaml).unwrap();
        let cfg = config::load_gateway_config(&cfg_path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n{yaml}"));
        Self::start_cfg(cfg, dir, routes_path).await
    }

    /// Starts with a complete portico.yaml (every listener on
    /// `127.0.0.1:0`); `routes_file` is appended. For configs the other
    /// constructors cannot express, such as an HTTPS listener.
    pub async fn start_yaml(routes: &str, yaml: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join("routes.yaml");
        std::fs::write(&routes_path, routes).unwrap();
        let yaml = format!("{yaml}routes_file: {}\n", routes_path.display());
        let cfg_path = dir.path().join("portico.yaml");
        std::fs::write(&cfg_path, &yaml).unwrap();
        let cfg = config::load_gateway_config(&cfg_path)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n{yaml}"));
        Self::start_cfg(cfg, dir, routes_path).await
    }

    pub async fn start_cfg(
        cfg: config::GatewayConfig,
        dir: tempfile::TempDir,
        routes_path: PathBuf,
    ) -> TestGateway {
        // Public listeners as `portico serve` binds them (SO_REUSEPORT, one
        // socket per worker).
        let public = || portico::server::worker::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listeners = Listeners {
            http: Some(public()),
            https: cfg.listen.https.map(|_| public()),
            operator: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let running = app::start(cfg, listeners, async move {
            let _ = rx.await;
        })
        .await
        .expect("gateway starts");
        TestGateway {
            addr: running.http_addr.unwrap(),
            operator_addr: running.operator_addr.unwrap(),
            https_addr: running.https_addr,
            live: running.live.clone(),
            metrics: running.metrics.clone(),
            draining: running.drain.draining.clone(),
            dir,
            routes_path,
            stop: Some(tx),
            running: Some(running),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the shutdown sequence (as SIGTERM would) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Starts with the route file in a ConfigMap-style directory (the
    /// kubelet's `..data` symlink layout), to be swapped like the kubelet does.
    pub async fn on_configmap(initial: &str) -> (TestGateway, super::configmap::ConfigMapDir) {
        let dir = tempfile::tempdir().unwrap();
        let cm_dir = dir.path().join("config");
        std::fs::create_dir(&cm_dir).unwrap();
        let cm = super::configmap::ConfigMapDir::new(&cm_dir, initial);
        let yaml = format!(
            "listen:\n  http: 127.0.0.1:0\noperator:\n  listen: 127.0.0.1:0\nroutes_file: {}\nshutdown:\n  drain_delay: 0s\n",
            cm.file().display()
        );
        let cfg = config::parse_gateway_config(&dir.path().join("portico.yaml"), &yaml).unwrap();
        let routes = cm.file();
        (TestGateway::start_cfg(cfg, dir, routes).await, cm)
    }

    /// Waits (at most `within`) until a route file is rejected, and
    /// returns the reason `/routes` shows.
    pub async fn rejected_reload(&self, within: std::time::Duration) -> String {
        let started = std::time::Instant::now();
        loop {
            if let Some(err) = self.live.status().last_error {
                return err;
            }
            assert!(
                started.elapsed() < within,
                "no route file was rejected within {within:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Asks for a graceful shutdown and waits until it completes.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
    }
}
