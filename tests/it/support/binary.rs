//! The real `portico` binary, for exit codes, signals and stdout logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

/// Runs `portico ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("portico runs")
}

/// Writes `routes` as `DIR/routes.yaml` and a portico.yaml on loopback
/// ephemeral ports with `extra` appended (top-level keys); returns the
/// portico.yaml path.
pub fn write_config(dir: &Path, routes: &str, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("routes.yaml"), routes).unwrap();
    let cfg = dir.join("portico.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  http: 127.0.0.1:0\noperator:\n  listen: 127.0.0.1:0\nroutes_file: routes.yaml\n{extra}"
        ),
    )
    .unwrap();
    cfg
}

/// A running `portico serve` (or `demo`) whose stdout lines are collected.
pub struct Serve {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Serve {
    pub fn start(config: &Path) -> Serve {
        let config = config.to_str().expect("UTF-8 config path");
        Serve::spawn(&["serve", "--config", config])
    }

    /// `portico serve` on loopback ephemeral ports with `routes` as its
    /// route file and `extra` appended to its portico.yaml (top-level keys),
    /// both written to `dir`.
    pub fn with_routes(dir: &Path, routes: &str, extra: &str) -> Serve {
        Serve::start(&write_config(dir, routes, extra))
    }

    /// Runs `portico ARGS` (a long-running command: `serve` or `demo`).
    pub fn spawn(args: &[&str]) -> Serve {
        let mut cmd = bin();
        cmd.args(args);
        Serve::spawn_command(cmd)
    }

    /// Runs a prepared `portico` command (e.g. with resource limits set).
    pub fn spawn_command(mut cmd: Command) -> Serve {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("portico starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a JSON log line satisfying `pred`.
    pub fn wait_line(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && pred(&v)
                    {
                        return v;
                    }
                }
                Err(_) => panic!("no log line for {what}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address a listener reported in its "listening on" line.
    pub fn listening(&mut self, listener: &str) -> SocketAddr {
        let v = self.wait_line(&format!("{listener} listening"), |v| {
            v["listener"] == listener && v["addr"].is_string()
        });
        v["addr"].as_str().unwrap().parse().unwrap()
    }

    /// Collects the remaining lines until the process exits.
    pub fn drain_lines(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("portico did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
