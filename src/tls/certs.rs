//! Certificates: loading PEM chain + key pairs into a [`CertStore`], and the
//! SNI resolver that picks from the current store on every handshake.
//!
//! Selection, in order (what nginx and Envoy do): an exact name match, then
//! a wildcard match on exactly one label (`*.example.com` covers
//! `a.example.com`, never `b.a.example.com` or `example.com`), else the first
//! configured certificate — also when the client sends no server name.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use super::x509::{self, LeafInfo};

/// The bytes of one configured pair, read once so that what is hashed for
/// change detection is exactly what is parsed.
pub struct PairBytes {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl PairBytes {
    /// Reads both files; a missing file is reported as such.
    pub fn read(cert_path: &Path, key_path: &Path) -> Result<PairBytes, TlsError> {
        Ok(PairBytes {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            cert: read_file(cert_path, "certificate")?,
            key: read_file(key_path, "private key")?,
        })
    }
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TlsError::Missing {
                path: path.to_owned(),
                what,
            }
        } else {
            TlsError::Read {
                path: path.to_owned(),
                what,
                source,
            }
        }
    })
}

/// The host names one certificate (or the certificates one server name can
/// be answered with) is valid for: what a connection served with it may be
/// used for (RFC 9110 §15.5.20, `421 Misdirected Request`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CertNames {
    exact: Vec<Box<str>>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: Vec<Box<str>>,
}

impl CertNames {
    fn new<'a>(names: impl IntoIterator<Item = &'a String>) -> CertNames {
        let mut covered = CertNames::default();
        for name in names {
            let (list, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut covered.wildcard, parent),
                None => (&mut covered.exact, name.as_str()),
            };
            if !list.iter().any(|n| &**n == key) {
                list.push(key.into());
            }
        }
        covered
    }

    /// Whether a request `Host` value (any case, port allowed) is covered:
    /// an exact name, or one label in front of a wildcard's parent.
    pub fn covers(&self, host: &str) -> bool {
        let mut buf = [0u8; 253];
        let Some(name) = crate::routing::host::host_name(host, &mut buf) else {
            return false;
        };
        if self.exact.iter().any(|n| **n == *name) {
            return true;
        }
        name.split_once('.').is_some_and(|(first, parent)| {
            !first.is_empty() && self.wildcard.iter().any(|w| **w == *parent)
        })
    }
}

/// One loaded certificate chain with its key.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// Names from the leaf's subjectAltName, lowercased.
    pub names: Vec<String>,
    /// The same names, indexed for the per-request `421` check.
    pub covered: Arc<CertNames>,
    pub leaf: LeafInfo,
    pub cert_path: PathBuf,
}

/// Every certificate of one load, with the name indexes built once so a
/// handshake does at most two hash lookups.
pub struct CertStore {
    certs: Vec<LoadedCert>,
    /// Exact DNS name → indexes into `certs`, in configuration order.
    exact: HashMap<String, Vec<usize>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Vec<usize>>,
}

impl CertStore {
    /// Parses and checks every pair; the first error stops the load (a store
    /// is swapped in whole or not at all).
    pub fn from_pairs(
        pairs: &[PairBytes],
        provider: &CryptoProvider,
    ) -> Result<CertStore, TlsError> {
        let mut certs = Vec::with_capacity(pairs.len());
        for pair in pairs {
            certs.push(load_pair(pair, provider)?);
        }
        Ok(CertStore::index(certs))
    }

    fn index(certs: Vec<LoadedCert>) -> CertStore {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                let slot = map.entry(key.to_owned()).or_default();
                if !slot.contains(&i) {
                    slot.push(i);
                }
            }
        }
        CertStore {
            certs,
            exact,
            wildcard,
        }
    }

    pub fn certs(&self) -> &[LoadedCert] {
        &self.certs
    }

    /// The certificate for a server name (SNI) and the client's signature
    /// schemes. When several certificates carry the name (an RSA and an
    /// ECDSA certificate for the same host), the first one whose key the
    /// client can verify wins.
    pub fn pick(
        &self,
        server_name: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> &Arc<CertifiedKey> {
        let i = server_name
            .and_then(|n| self.lookup(n))
            .map_or(0, |candidates| self.compatible(candidates, schemes));
        &self.certs[i].key
    }

    /// The names a connection that sent `server_name` may be used for: those
    /// of the certificate [`pick`](Self::pick) serves it. When several
    /// certificates carry the name (an RSA and an ECDSA one) the client's
    /// choice is not known after the handshake, so their names are joined.
    pub fn covering(&self, server_name: Option<&str>) -> Arc<CertNames> {
        match server_name.and_then(|n| self.lookup(n)) {
            None => self.certs[0].covered.clone(),
            Some([only]) => self.certs[*only].covered.clone(),
            Some(several) => Arc::new(CertNames::new(
                several.iter().flat_map(|&i| &self.certs[i].names),
            )),
        }
    }

    fn lookup(&self, name: &str) -> Option<&[usize]> {
        let name = name.strip_suffix('.').unwrap_or(name);
        // rustls hands over SNI lowercased already; this is the cheap guard.
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(Vec::as_slice)
    }

    fn compatible(&self, candidates: &[usize], schemes: &[SignatureScheme]) -> usize {
        if let [only] = candidates {
            return *only;
        }
        candidates
            .iter()
            .copied()
            .find(|&i| self.certs[i].key.key.choose_scheme(schemes).is_some())
            .unwrap_or(candidates[0])
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.certs.iter().map(|c| (&c.cert_path, &c.names)))
            .finish()
    }
}

/// Parses one pair and checks that the key belongs to the certificate.
fn load_pair(pair: &PairBytes, provider: &CryptoProvider) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadPem {
            path: pair.cert_path.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: pair.cert_path.clone(),
            looks_like_key: contains(&pair.cert, b"PRIVATE KEY-----"),
        });
    }
    let key: PrivateKeyDer<'static> = match PrivateKeyDer::from_pem_slice(&pair.key) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: pair.key_path.clone(),
                encrypted: contains(&pair.key, b"ENCRYPTED PRIVATE KEY-----"),
                looks_like_cert: contains(&pair.key, b"BEGIN CERTIFICATE-----"),
            });
        }
        Err(source) => {
            return Err(TlsError::BadPem {
                path: pair.key_path.clone(),
                source,
            });
        }
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnsupportedKey {
            path: pair.key_path.clone(),
            source,
        })?;
    let leaf = x509::parse_leaf(&chain[0]).map_err(|source| TlsError::BadCertificate {
        path: pair.cert_path.clone(),
        source,
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // The key cannot tell its public half: nothing to compare, accept.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                key: pair.key_path.clone(),
                cert: pair.cert_path.clone(),
            });
        }
        Err(source) => {
            return Err(TlsError::Unusable {
                path: pair.cert_path.clone(),
                source,
            });
        }
    }
    warn_about_validity(&pair.cert_path, &leaf);
    Ok(LoadedCert {
        key: Arc::new(certified),
        names: leaf.dns_names.clone(),
        covered: Arc::new(CertNames::new(&leaf.dns_names)),
        leaf,
        cert_path: pair.cert_path.clone(),
    })
}

/// An expired (or not yet valid) certificate is served anyway — refusing to
/// start would turn a renewal hiccup into an outage — but it is logged
/// loudly, because clients will reject it.
fn warn_about_validity(path: &Path, leaf: &LeafInfo) {
    let now = SystemTime::now();
    let cert = path.display();
    if leaf.not_after_time() < now {
        tracing::warn!(
            cert = %cert,
            not_after = %humantime::format_rfc3339_seconds(leaf.not_after_time()),
            "TLS certificate has expired; serving it anyway, but clients will reject it — renew it"
        );
    } else if leaf.not_before_time() > now {
        tracing::warn!(
            cert = %cert,
            not_before = %humantime::format_rfc3339_seconds(leaf.not_before_time()),
            "TLS certificate is not valid yet; clients will reject it until then"
        );
    }
    if leaf.dns_names.is_empty() {
        tracing::warn!(
            cert = %cert,
            "TLS certificate has no DNS names in subjectAltName; SNI never selects it, it can only serve as the default (first) certificate"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The rustls hook: reads the current [`CertStore`] on every handshake. The
/// store is swapped whole by a reload; handshakes in progress keep the
/// certificate they picked.
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl SniResolver {
    pub fn new(store: CertStore) -> Self {
        SniResolver {
            store: ArcSwap::from_pointee(store),
        }
    }

    pub fn current(&self) -> Arc<CertStore> {
        self.store.load_full()
    }

    pub fn replace(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("store", &*self.store.load())
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        Some(
            store
                .pick(hello.server_name(), hello.signature_schemes())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    /// A self-signed pair for `names`, as PEM bytes.
    fn pair(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> PairBytes {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        PairBytes {
            cert_path: PathBuf::from(format!("{}.crt", names.first().unwrap_or(&"none"))),
            key_path: PathBuf::from(format!("{}.key", names.first().unwrap_or(&"none"))),
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        }
    }

    fn store(pairs: &[PairBytes]) -> CertStore {
        CertStore::from_pairs(pairs, &provider()).unwrap()
    }

    const ANY: &[SignatureScheme] = &[
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA256,
    ];

    fn picked(s: &CertStore, sni: Option<&str>) -> usize {
        let key = s.pick(sni, ANY);
        s.certs
            .iter()
            .position(|c| Arc::ptr_eq(&c.key, key))
            .unwrap()
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let s = store(&[
            pair(&["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256),
            pair(&["*.example.com"], &rcgen::PKCS_ECDSA_P384_SHA384),
            pair(&["api.example.com", "other.test"], &rcgen::PKCS_ED25519),
        ]);
        let cases: &[(Option<&str>, usize)] = &[
            (None, 0),
            (Some("default.test"), 0),
            (Some("unknown.test"), 0),
            (Some("www.example.com"), 1),
            (Some("WWW.Example.COM"), 1),
            (Some("www.example.com."), 1),
            (Some("api.example.com"), 2), // exact beats wildcard
            (Some("other.test"), 2),
            (Some("example.com"), 0), // a wildcard never covers its parent
            (Some("a.b.example.com"), 0), // ... nor two labels
            (Some("localhost"), 0),
        ];
        for (sni, want) in cases {
            assert_eq!(picked(&s, *sni), *want, "{sni:?}");
        }
    }

    #[test]
    fn a_connection_covers_the_names_of_the_certificate_it_was_served() {
        let s = store(&[
            pair(&["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256),
            pair(
                &["*.example.com", "example.com"],
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            pair(&["dual.test", "rsa-only.test"], &rcgen::PKCS_ED25519),
            pair(
                &["dual.test", "ecdsa-only.test"],
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
        ]);
        let cases: &[(Option<&str>, &str, bool)] = &[
            (None, "default.test", true),
            (None, "example.com", false),
            (Some("unknown.test"), "default.test", true),
            (Some("a.example.com"), "b.example.com", true), // coalescing is allowed
            (Some("a.example.com"), "B.Example.com:8443", true),
            (Some("a.example.com"), "example.com.", true),
            (Some("a.example.com"), "x.y.example.com", false),
            (Some("a.example.com"), "default.test", false),
            (Some("a.example.com"), "", false),
            (Some("a.example.com"), "[::1]:443", false),
            (Some("dual.test"), "rsa-only.test", true),
            (Some("dual.test"), "ecdsa-only.test", true),
            (Some("dual.test"), "default.test", false),
        ];
        for (sni, host, want) in cases {
            assert_eq!(s.covering(*sni).covers(host), *want, "{sni:?} -> {host:?}");
        }
    }

    #[test]
    fn same_name_prefers_a_key_the_client_can_verify() {
        let s = store(&[
            pair(&["dual.test"], &rcgen::PKCS_ED25519),
            pair(&["dual.test"], &rcgen::PKCS_ECDSA_P256_SHA256),
        ]);
        let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
        let key = s.pick(Some("dual.test"), &ecdsa_only);
        assert!(Arc::ptr_eq(key, &s.certs[1].key));
        assert_eq!(
            picked(&s, Some("dual.test")),
            0,
            "otherwise configuration order"
        );
    }

    #[test]
    fn every_key_type_ring_signs_with_loads() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            store(&[pair(&["k.test"], alg)]);
        }
    }

    fn load_err(p: &PairBytes) -> String {
        match CertStore::from_pairs(std::slice::from_ref(p), &provider()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => crate::proxy::error_chain(&e),
        }
    }

    #[test]
    fn load_errors_name_the_file_and_the_problem() {
        let good = pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let other = pair(&["b.test"], &rcgen::PKCS_ECDSA_P256_SHA256);

        let mismatch = PairBytes {
            key: other.key.clone(),
            ..pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        };
        let e = load_err(&mismatch);
        assert!(
            e.contains("a.test.key") && e.contains("does not match") && e.contains("a.test.crt"),
            "{e}"
        );

        let no_cert = PairBytes {
            cert: b"nothing here\n".to_vec(),
            ..pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        };
        let e = load_err(&no_cert);
        assert!(e.starts_with("a.test.crt: no certificate"), "{e}");

        let swapped = PairBytes {
            cert: good.key.clone(),
            key: good.cert.clone(),
            ..pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        };
        let e = load_err(&swapped);
        assert!(
            e.contains("no certificate") && e.contains("private key"),
            "hint at swapped files: {e}"
        );

        let no_key = PairBytes {
            key: good.cert.clone(),
            ..pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        };
        let e = load_err(&no_key);
        assert!(e.starts_with("a.test.key: no private key"), "{e}");

        let encrypted = PairBytes {
            // Split so that no committed file holds a key header (the marker
            // is what secret scanners look for); the body is not a key.
            key: concat!(
                "-----BEGIN ",
                "ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ",
                "ENCRYPTED PRIVATE KEY-----\n"
            )
            .as_bytes()
            .to_vec(),
            ..pair(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256)
        };
        let e = load_err(&encrypted);
        assert!(e.contains("encrypted"), "{e}");
    }

    #[test]
    fn expired_certificates_still_load() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let p = PairBytes {
            cert_path: "old.crt".into(),
            key_path: "old.key".into(),
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        };
        let s = store(&[p]);
        assert_eq!(s.certs[0].leaf.not_after, 978_307_200);
    }
}
