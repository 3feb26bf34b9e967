//! TLS termination for the public HTTPS listener: the rustls
//! [`ServerConfig`] (TLS 1.2 and 1.3 only, ring's safe defaults, ALPN `h2`
//! and `http/1.1`), certificates chosen by SNI from a hot-swappable store,
//! and their live reload when the Secret mount changes. The handshake itself
//! runs in [`crate::server`] under the handshake timeout, which also counts
//! failures in `portico_tls_handshake_errors_total`.
//!
//! Reload: the certificate and key files are re-read every second and
//! compared by content hash. Kubernetes updates a Secret volume by swapping
//! a `..data` symlink, so modification times and inotify events on the
//! files themselves are unreliable (kubernetes#24215, kubernetes#112677);
//! hashing a few kilobytes a second is cheap and catches every layout. A new
//! set is used for new handshakes only when every pair in it is valid;
//! otherwise the old set keeps serving and the error is logged once per
//! distinct file content.

pub mod certs;
pub mod redirect;
pub mod x509;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{CertificatePaths, TlsSettings};

pub use certs::{CertNames, CertStore, SniResolver};
pub use redirect::HttpsRedirect;

/// How often the certificate files are checked for new content.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// ALPN protocols, in server preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why certificates could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {what} file not found", path.display())]
    Missing { path: PathBuf, what: &'static str },
    #[error("{}: cannot read the {what} file", path.display())]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid PEM", path.display())]
    BadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "{}: no certificate found; expected PEM \"-----BEGIN CERTIFICATE-----\" blocks, leaf first{}",
        path.display(),
        if *looks_like_key { " (this file holds a private key: are cert and key swapped?)" } else { "" }
    )]
    NoCertificate { path: PathBuf, looks_like_key: bool },
    #[error(
        "{}: no private key found; expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block{}",
        path.display(),
        if *encrypted { " (encrypted keys are not supported: decrypt it, e.g. openssl pkey -in KEY -out tls.key)" }
        else if *looks_like_cert { " (this file holds a certificate: are cert and key swapped?)" }
        else { "" }
    )]
    NoKey {
        path: PathBuf,
        encrypted: bool,
        looks_like_cert: bool,
    },
    #[error("{}: unsupported private key; RSA (2048+ bits), ECDSA P-256/P-384 and Ed25519 are supported", path.display())]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: cannot read the leaf certificate", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: x509::X509Error,
    },
    #[error(
        "{}: private key does not match the certificate in {} (is the leaf certificate first in the chain?)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: certificate cannot be used", path.display())]
    Unusable {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// The HTTPS listener's TLS state: the rustls config (built once) and the
/// certificate store behind its SNI resolver (swapped on reload).
pub struct TlsTerminator {
    /// The pairs to (re)load, in configuration order; the first is the default.
    paths: Vec<CertificatePaths>,
    /// Shared with `config`; the only thing a reload changes.
    resolver: Arc<SniResolver>,
    config: Arc<ServerConfig>,
    provider: Arc<CryptoProvider>,
    /// Content hash of every file at the last load attempt, good or bad.
    /// Held for the whole reload so that two reloads never interleave.
    last_hash: Mutex<[u8; 32]>,
    /// `portico_tls_certificate_expiry_timestamp_seconds`, kept to the
    /// certificates in use (see [`TlsTerminator::export_expiry`]).
    expiry: Mutex<Option<prometheus::IntGaugeVec>>,
}

impl TlsTerminator {
    /// Loads every certificate pair; any error stops the start.
    pub fn load(settings: &TlsSettings) -> Result<TlsTerminator, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pairs = read_all(&settings.certificates)?;
        let hash = content_hash(&pairs);
        let store = CertStore::from_pairs(&pairs, &provider)?;
        log_loaded(&store);
        let resolver = Arc::new(SniResolver::new(store));
        let config = server_config(provider.clone(), resolver.clone())?;
        Ok(TlsTerminator {
            paths: settings.certificates.clone(),
            resolver,
            config: Arc::new(config),
            provider,
            last_hash: Mutex::new(hash),
            expiry: Mutex::new(None),
        })
    }

    /// Reports each certificate's expiry in `gauge` (`name`: its first DNS
    /// name, else its file), now and after every successful reload.
    pub fn export_expiry(&self, gauge: prometheus::IntGaugeVec) {
        set_expiry(&gauge, &self.current());
        *self.expiry.lock() = Some(gauge);
    }

    /// The acceptor for [`crate::server::TlsSetup`]. Cheap; every clone
    /// sees reloads.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The SNI resolver, which always holds the certificates in use.
    pub fn resolver(&self) -> Arc<SniResolver> {
        self.resolver.clone()
    }

    /// The certificates in use now.
    pub fn current(&self) -> Arc<CertStore> {
        self.resolver.current()
    }

    /// Re-reads the files. `Ok(true)`: new certificates are in use.
    /// `Ok(false)`: the files are byte-for-byte what the last attempt saw.
    /// `Err`: the new files are unusable and the old certificates keep
    /// serving; the same content is not retried (and not reported again)
    /// until a file changes.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut last = self.last_hash.lock();
        let pairs = read_all(&self.paths)?;
        let hash = content_hash(&pairs);
        if hash == *last {
            return Ok(false);
        }
        // Remember the attempt even if it fails: a half-swapped Secret
        // (new cert, old key) is retried when the next file changes, not
        // reported every second.
        *last = hash;
        let store = CertStore::from_pairs(&pairs, &self.provider)?;
        log_loaded(&store);
        if let Some(gauge) = &*self.expiry.lock() {
            set_expiry(gauge, &store);
        }
        self.resolver.replace(store);
        Ok(true)
    }

    /// Polls the files every `every` until `stop` turns true, reloading on
    /// change. Reloads run on the blocking pool (key parsing is CPU work).
    /// Polls the files every `every`, and at once when `now` is notified
    /// (SIGHUP), until `stop` turns true.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        now: Arc<tokio::sync::Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the files were just loaded
        // A missing file is reported once, not every second, until it changes.
        let mut last_read_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = now.notified() => {}
                // An error means the sender is gone, which also means "stop".
                _ = stop.wait_for(|v| *v) => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => {
                    last_read_error = None;
                    tracing::info!(
                        certificates = self.paths.len(),
                        "TLS certificates reloaded; new handshakes use them"
                    );
                }
                Ok(Ok(false)) => last_read_error = None,
                Ok(Err(e)) => {
                    let text = crate::proxy::error_chain(&e);
                    if last_read_error.as_deref() != Some(text.as_str()) {
                        tracing::error!(error = %text, "TLS certificate reload failed; the previous certificates keep serving");
                        last_read_error = Some(text);
                    }
                }
                Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

/// TLS 1.2 and 1.3 only (never 1.1 or older), ring's default cipher suites
/// and key exchange groups, ALPN `h2` then `http/1.1`.
fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_all(paths: &[CertificatePaths]) -> Result<Vec<certs::PairBytes>, TlsError> {
    paths
        .iter()
        .map(|p| certs::PairBytes::read(&p.cert, &p.key))
        .collect()
}

/// SHA-256 over every file, length-prefixed so that moving bytes from one
/// file to the next changes the hash.
fn content_hash(pairs: &[certs::PairBytes]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in pairs {
        for bytes in [&p.cert, &p.key] {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
    }
    h.finalize().into()
}

/// One series per certificate in `store`, its `notAfter` in Unix seconds;
/// certificates no longer loaded drop out.
fn set_expiry(gauge: &prometheus::IntGaugeVec, store: &CertStore) {
    gauge.reset();
    for c in store.certs() {
        let file = c.cert_path.display().to_string();
        let name = c.names.first().map_or(file.as_str(), String::as_str);
        gauge.with_label_values(&[name]).set(c.leaf.not_after);
    }
}

fn log_loaded(store: &CertStore) {
    for (i, c) in store.certs().iter().enumerate() {
        tracing::info!(
            cert = %c.cert_path.display(),
            names = %c.names.join(","),
            not_after = %humantime::format_rfc3339_seconds(c.leaf.not_after_time()),
            default = i == 0,
            "TLS certificate loaded"
        );
    }
}
