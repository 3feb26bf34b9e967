//! Host-name resolution for outgoing connections: backends named by host
//! name and the OTLP collector. Portico asks DNS itself (hickory), reading
//! `/etc/resolv.conf` (name servers, search domains, `ndots`, as Kubernetes
//! writes it) and `/etc/hosts`, instead of glibc's `getaddrinfo` and its
//! NSS modules. So a static binary in an image with no libc (`FROM
//! scratch`) resolves like any other, and a lookup never parks a blocking
//! thread. Answers are cached for their TTL.
//!
//! Without a readable `/etc/resolv.conf` it falls back to `getaddrinfo`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// The resolver an [`HttpConnector`](hyper_util::client::legacy::connect::HttpConnector) uses.
#[derive(Clone)]
pub struct Dns {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Hickory(Arc<TokioResolver>),
    System(GaiResolver),
}

impl Dns {
    /// From the system's resolver configuration; `getaddrinfo` when there
    /// is none (logged once per resolver).
    pub fn system() -> Dns {
        let built = TokioResolver::builder_tokio().and_then(|b| b.build());
        let inner = match built {
            Ok(r) => Inner::Hickory(Arc::new(r)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the DNS configuration; resolving backend names with getaddrinfo");
                Inner::System(GaiResolver::new())
            }
        };
        Dns { inner }
    }

    /// Whether Portico's own DNS client is in use (not `getaddrinfo`).
    pub fn is_own(&self) -> bool {
        matches!(self.inner, Inner::Hickory(_))
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for Dns {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addrs>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match &self.inner {
            Inner::Hickory(r) => {
                let r = r.clone();
                Box::pin(async move {
                    let lookup = r
                        .lookup_ip(name.as_str())
                        .await
                        .map_err(|e| io::Error::other(format!("{}: {e}", name.as_str())))?;
                    // The port is the connector's to set.
                    let addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
                    Ok(addrs.into_iter())
                })
            }
            Inner::System(g) => {
                let mut g = g.clone();
                Box::pin(async move {
                    let addrs = tower_service::Service::call(&mut g, name).await?;
                    Ok(addrs.collect::<Vec<_>>().into_iter())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[tokio::test]
    async fn names_resolve_without_getaddrinfo() {
        let mut dns = Dns::system();
        assert!(dns.is_own(), "this machine has /etc/resolv.conf");
        // From /etc/hosts, read by the resolver itself.
        let addrs: Vec<SocketAddr> =
            tower_service::Service::call(&mut dns, Name::from_str("localhost").unwrap())
                .await
                .unwrap()
                .collect();
        assert!(
            addrs.iter().any(|a| a.ip().is_loopback()),
            "localhost: {addrs:?}"
        );
        assert!(addrs.iter().all(|a| a.port() == 0));
        // A name under the reserved .invalid TLD fails with the name.
        let err = tower_service::Service::call(
            &mut dns,
            Name::from_str("no-such-backend.invalid").unwrap(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no-such-backend.invalid"), "{err}");
    }
}
