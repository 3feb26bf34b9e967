//! The `portico` command: parses arguments, maps errors to exit codes
//! (0 ok, 1 invalid configuration, 2 usage error) and hands off to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portico::cli;

/// Connection-sized buffers from pools of their own, the rest from the
/// system allocator (see `lifecycle::buffers`).
#[global_allocator]
static ALLOCATOR: portico::lifecycle::buffers::PooledAllocator =
    portico::lifecycle::buffers::PooledAllocator;

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "Portico: an edge ingress gateway for HTTP services on Kubernetes"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Gateway config file.
        #[arg(long, env = "PORTICO_CONFIG", default_value = portico::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate the config and route file and run the route file's tests; print every error as FILE:LINE:COL: message.
    Check {
        #[arg(long, env = "PORTICO_CONFIG", default_value = portico::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Also print warnings (shadowed routes, owners sharing a subtree, first segments that are not functions); they do not fail the check.
        #[arg(long)]
        lint: bool,
    },
    /// Print the route table, or which route a path picks and why.
    Routes {
        #[arg(long, env = "PORTICO_CONFIG", default_value = portico::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// A request path to resolve.
        #[arg(long = "match", value_name = "PATH")]
        path: Option<String>,
        /// The Host the request would carry (picks the host table).
        #[arg(long)]
        host: Option<String>,
        /// The request comes from an operator (TCP peer in operator.allow, or the canary token).
        #[arg(long)]
        operator: bool,
        /// The request asks for the route's canary (x-portico-canary: 1 or the cookie portico-canary=1).
        #[arg(long)]
        canary: bool,
    },
    /// Write a route file from Kubernetes Ingress manifests (ingress-nginx), with a report of what did not translate.
    Import {
        /// Ingress manifests: YAML with one or more documents, or a `kubectl get ingress -A -o yaml` List; `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Service manifests, for backends that name their port (several allowed).
        #[arg(long, value_name = "FILE")]
        services: Vec<PathBuf>,
        /// Write the route file here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// List, per host, the requests ingress-nginx and Portico route differently (on standard output; the route file then needs --output).
        #[arg(long)]
        explain: bool,
        /// Add those requests, and one per route, to the route file's tests.
        #[arg(long)]
        emit_tests: bool,
    },
    /// Run the gateway with built-in demo backends on loopback.
    Demo {
        /// Public listener of the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// HTTPS listener of the demo gateway (self-signed certificate made at start).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen_https: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = match args.command {
        Command::Serve { config } => cli::serve(&config),
        Command::Check { config, lint } => cli::check(&config, lint),
        Command::Routes {
            config,
            path,
            host,
            operator,
            canary,
        } => cli::routes(
            &config,
            path.as_deref(),
            host.as_deref(),
            cli::AsRequest { operator, canary },
        ),
        Command::Import {
            files,
            services,
            output,
            explain,
            emit_tests,
        } => cli::import(
            &portico::import::ImportOptions {
                inputs: files,
                services,
                emit_tests,
            },
            output.as_deref(),
            explain,
        ),
        Command::Demo {
            listen,
            listen_https,
        } => cli::demo(listen, listen_https),
    };
    ExitCode::from(code)
}
