//! Who reaches a route's canary, decided once per request before balancing.
//!
//! * An operator who asks: the TCP peer is inside `operator.allow`, or the
//!   request carries the operator token in `x-portico-canary-token`
//!   (compared in constant time, read from `operator.token_file` at most
//!   once a second); and it
//!   asks with `x-portico-canary: 1` or the cookie `portico-canary=1`.
//!   Asking alone does nothing: a public client's headers and cookies never
//!   choose the canary (fail-closed).
//! * With `weight: N`, N percent of the other requests too, by chance; with
//!   `sticky: cookie` the side dealt is remembered in Portico's own cookie
//!   `portico-sticky-<id>`, signed with HMAC-SHA256, so a client cannot pick
//!   the canary by writing the cookie: a cookie whose signature does not
//!   verify is ignored, and the client is dealt again.
//!
//! The signing key is derived from `operator.token_file` when one is
//! configured and readable at start (replicas that share the token then
//! accept each other's cookies), and random per process otherwise (a
//! client moving to another replica is dealt again, at the same odds).
//!
//! The header, the cookie, the token and the sticky cookie never reach a
//! backend: [`take`] removes them from every request, canary or not.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use ring::hmac;
use tokio::time::Instant;

use crate::operator::access::{AllowList, TokenFile, constant_time_eq, token_eq};

use super::table::Route;

/// `x-portico-canary: 1` asks for the canary.
pub static X_PORTICO_CANARY: HeaderName = HeaderName::from_static("x-portico-canary");
/// The operator token, for operators outside `operator.allow`.
pub static X_PORTICO_CANARY_TOKEN: HeaderName = HeaderName::from_static("x-portico-canary-token");
/// `portico-canary=1` asks for the canary, like the header.
pub const CANARY_COOKIE: &str = "portico-canary";
/// Portico's sticky cookies are named this and a route id.
pub const STICKY_PREFIX: &str = "portico-sticky-";
/// How long a client keeps the side it was dealt.
const STICKY_MAX_AGE_SECS: u32 = 24 * 3600;
/// Bytes of the HMAC tag kept in the cookie (128 bits).
const TAG_BYTES: usize = 16;

/// A route's canary, built with the route.
pub struct Canary {
    /// The route as it serves canary requests: the canary's backends and
    /// pool, `canary="true"` metric handles, the route's timeout, path
    /// rewriting and in-flight limit.
    pub route: Arc<Route>,
    /// Percent of public requests dealt to the canary.
    pub weight: u8,
    /// The sticky cookie's name when `sticky: cookie` is set.
    pub sticky: Option<Arc<str>>,
    /// Its two signed values and `Set-Cookie` headers, made on first use:
    /// they depend only on the name, the weight and the process's key, so
    /// no request signs or formats anything.
    pub signed: std::sync::OnceLock<Signed>,
}

/// A sticky cookie's values for both sides, signed (see
/// [`CanaryGate::choose`]): index 0 stable, 1 canary.
#[derive(Debug)]
pub struct Signed {
    values: [String; 2],
    /// `[side][tls]`: `Secure` on HTTPS.
    cookies: [[HeaderValue; 2]; 2],
}

impl Signed {
    /// The side a presented value holds, if it is one of ours.
    fn side_of(&self, value: &str) -> Option<bool> {
        let side = match value.as_bytes().first() {
            Some(b's') => 0,
            Some(b'c') => 1,
            _ => return None,
        };
        constant_time_eq(value.as_bytes(), self.values[side].as_bytes()).then_some(side == 1)
    }
}

impl Canary {
    /// The sticky cookie's name for a route: `portico-sticky-` and 8 hex
    /// digits of the route's host and label, so routes keep their own.
    pub fn sticky_name(host_label: &str, label: &str) -> Arc<str> {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{host_label} {label}").as_bytes());
        Arc::from(format!("{STICKY_PREFIX}{}", hex::encode(&digest[..4])))
    }
}

/// What a request said about the canary, read (and removed) from its head.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// `x-portico-canary: 1` or the cookie `portico-canary=1`.
    pub asked: bool,
    /// The value of `x-portico-canary-token`.
    pub token: Option<HeaderValue>,
    /// The value of the route's sticky cookie.
    pub sticky: Option<String>,
}

/// Removes the canary header, token and cookies from `headers` and returns
/// what they said; `sticky` is the name of the route's sticky cookie, whose
/// value is kept. Other cookies stay, in order. Costs two header probes and
/// a scan of the `Cookie` bytes when there is nothing to remove.
pub fn take(headers: &mut HeaderMap, sticky: Option<&str>) -> Signals {
    let mut s = Signals {
        asked: headers
            .remove(&X_PORTICO_CANARY)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1"),
        token: headers.remove(&X_PORTICO_CANARY_TOKEN),
        sticky: None,
    };
    let ours = headers
        .get_all(COOKIE)
        .iter()
        .any(|v| v.as_bytes().windows(8).any(|w| w == b"portico-"));
    if !ours {
        return s;
    }
    let mut kept = String::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (name, val) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()),
                None => (pair, &b""[..]),
            };
            if name == CANARY_COOKIE.as_bytes() {
                s.asked |= val == b"1";
                continue;
            }
            if name.starts_with(STICKY_PREFIX.as_bytes()) {
                if sticky.is_some_and(|n| n.as_bytes() == name) {
                    s.sticky = Some(String::from_utf8_lossy(val).into_owned());
                }
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(&String::from_utf8_lossy(pair));
        }
    }
    headers.remove(COOKIE);
    // The kept pairs came from valid header values, so this cannot fail.
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept)
    {
        headers.insert(COOKIE, v);
    }
    s
}

/// Why a request went where it went (for `portico routes --match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An operator asked for the canary.
    Operator,
    /// Dealt by chance (weight), or kept from a valid sticky cookie.
    Weighted,
    /// Everything else goes to the stable backends.
    Stable,
}

/// The part of the decision that does not depend on chance: only an
/// operator who asks reaches an operator-only canary.
pub fn operator_choice(operator: bool, asked: bool) -> bool {
    operator && asked
}

/// The outcome for one request.
#[derive(Debug)]
pub struct Choice {
    pub canary: bool,
    pub reason: Reason,
    /// A sticky cookie to set on the response (the client had no valid one).
    pub set_cookie: Option<HeaderValue>,
}

/// The gateway's canary decisions: who is an operator, and the key that
/// signs sticky cookies.
pub struct CanaryGate {
    allow: AllowList,
    token: Option<TokenFile>,
    /// The token as last read, and when: a public client can send tokens
    /// at will, so the file is read at most once per [`TOKEN_TTL`] rather
    /// than once per request (a rotation takes effect within it).
    cached: Mutex<Option<(Instant, Token)>>,
    key: hmac::Key,
}

/// The operator token as read (`None`: the file is unreadable or empty).
type Token = Option<Arc<[u8]>>;

/// How long a token read from `operator.token_file` is used before the
/// file is read again.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the sticky-cookie key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// Derived from `operator.token_file` (replicas agree).
    TokenFile,
    /// Random, made at start (this process only).
    Random,
}

impl CanaryGate {
    /// `allow` and `token_file` are the operator listener's.
    pub fn new(allow: AllowList, token_file: Option<PathBuf>) -> (CanaryGate, KeySource) {
        let token = token_file
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| b.trim_ascii().to_vec())
            .filter(|t| !t.is_empty());
        let (key, source) = match token {
            Some(t) => {
                let derive = hmac::Key::new(hmac::HMAC_SHA256, &t);
                let tag = hmac::sign(&derive, b"portico sticky canary cookie v1");
                (
                    hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()),
                    KeySource::TokenFile,
                )
            }
            None => {
                let rng = ring::rand::SystemRandom::new();
                // The system RNG fails only on a broken kernel; a key from
                // the fallback still refuses every forged cookie, since
                // nobody knows it either.
                let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
                    let mut seed = [0u8; 32];
                    for chunk in seed.chunks_mut(8) {
                        chunk.copy_from_slice(&crate::proxy::endpoints::random().to_be_bytes());
                    }
                    hmac::Key::new(hmac::HMAC_SHA256, &seed)
                });
                (key, KeySource::Random)
            }
        };
        let gate = CanaryGate {
            allow,
            token: token_file.map(TokenFile::new),
            cached: Mutex::new(None),
            key,
        };
        (gate, source)
    }

    /// Whether the request comes from an operator: the TCP peer, or the
    /// current operator token. The token file is only read for a request
    /// that carries a token.
    pub async fn is_operator(&self, peer: IpAddr, token: Option<&HeaderValue>) -> bool {
        if self.allow.allows(peer) {
            return true;
        }
        let (Some(file), Some(presented)) = (&self.token, token) else {
            return false;
        };
        let now = Instant::now();
        let fresh = self
            .cached
            .lock()
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < TOKEN_TTL)
            .map(|(_, t)| t.clone());
        let expected = match fresh {
            Some(t) => t,
            None => {
                // Fail-closed: an unreadable or empty file lets no token in.
                let t: Token = file.read().await.map(Arc::from);
                *self.cached.lock() = Some((now, t.clone()));
                t
            }
        };
        expected.is_some_and(|e| token_eq(presented.as_bytes().trim_ascii(), &e))
    }

    /// Where one request to a route with a canary goes.
    pub async fn choose(
        &self,
        canary: &Canary,
        signals: &Signals,
        peer: IpAddr,
        tls: bool,
    ) -> Choice {
        if signals.asked
            && operator_choice(self.is_operator(peer, signals.token.as_ref()).await, true)
        {
            return Choice {
                canary: true,
                reason: Reason::Operator,
                set_cookie: None,
            };
        }
        if canary.weight == 0 {
            return Choice {
                canary: false,
                reason: Reason::Stable,
                set_cookie: None,
            };
        }
        let signed = canary
            .sticky
            .as_ref()
            .map(|name| canary.signed.get_or_init(|| self.sign(name, canary.weight)));
        if let Some(signed) = signed
            && let Some(kept) = signals.sticky.as_deref().and_then(|v| signed.side_of(v))
        {
            return Choice {
                canary: kept,
                reason: if kept {
                    Reason::Weighted
                } else {
                    Reason::Stable
                },
                set_cookie: None,
            };
        }
        let dealt = crate::proxy::endpoints::random() % 100 < u64::from(canary.weight);
        Choice {
            canary: dealt,
            reason: if dealt {
                Reason::Weighted
            } else {
                Reason::Stable
            },
            set_cookie: signed.map(|s| s.cookies[usize::from(dealt)][usize::from(tls)].clone()),
        }
    }

    /// The signed value for a side: `c` (canary) or `s` (stable), then the
    /// tag in hex. The weight is signed too: a new weight deals again.
    fn value(&self, name: &str, weight: u8, canary: bool) -> String {
        let side = if canary { "c" } else { "s" };
        let tag = self.tag(name, weight, side);
        format!("{side}{}", hex::encode(&tag.as_ref()[..TAG_BYTES]))
    }

    /// The side a sticky cookie holds, if its signature verifies.
    #[cfg(test)]
    fn verify(&self, name: &str, weight: u8, value: &str) -> Option<bool> {
        self.sign(name, weight).side_of(value)
    }

    /// Both sides' values and cookies for the cookie `name` at `weight`.
    fn sign(&self, name: &str, weight: u8) -> Signed {
        let values = [
            self.value(name, weight, false),
            self.value(name, weight, true),
        ];
        let cookie = |side: usize, tls: bool| {
            let secure = if tls { "; Secure" } else { "" };
            let text = format!(
                "{name}={}; Path=/; Max-Age={STICKY_MAX_AGE_SECS}; HttpOnly; SameSite=Lax{secure}",
                values[side]
            );
            // Name, hex and fixed attributes: always a valid header value.
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        Signed {
            cookies: [
                [cookie(0, false), cookie(0, true)],
                [cookie(1, false), cookie(1, true)],
            ],
            values,
        }
    }

    /// HMAC-SHA256 over the cookie name, the weight and the side, fed in
    /// pieces; done once per route and side (`Signed`), not per request.
    fn tag(&self, name: &str, weight: u8, side: &str) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(name.as_bytes());
        ctx.update(&[0, weight, 0]);
        ctx.update(side.as_bytes());
        ctx.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn take_removes_only_the_canary_pairs() {
        let mut h = headers(&[
            ("x-portico-canary", "1"),
            ("x-portico-canary-token", "s3cret"),
            ("cookie", "a=1; portico-canary=1; b=2"),
            ("cookie", "portico-sticky-0011aabb=c00; c=3"),
        ]);
        let s = take(&mut h, Some("portico-sticky-0011aabb"));
        assert!(s.asked);
        assert_eq!(s.token.unwrap(), "s3cret");
        assert_eq!(s.sticky.as_deref(), Some("c00"));
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2; c=3");
        assert!(h.get(&X_PORTICO_CANARY).is_none());
        assert!(h.get(&X_PORTICO_CANARY_TOKEN).is_none());

        // Only our cookies: the header goes.
        let mut h = headers(&[("cookie", "portico-canary=1")]);
        assert!(take(&mut h, None).asked);
        assert!(h.get(COOKIE).is_none());

        // Nothing of ours: untouched, and asking needs the value 1.
        let mut h = headers(&[("cookie", "x=portico"), ("x-portico-canary", "yes")]);
        let s = take(&mut h, None);
        assert!(!s.asked);
        assert_eq!(h.get(COOKIE).unwrap(), "x=portico");
    }

    #[test]
    fn sticky_values_verify_only_with_their_key_name_and_weight() {
        let allow = AllowList::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let (gate, source) = CanaryGate::new(allow.clone(), None);
        assert_eq!(source, KeySource::Random);
        let v = gate.value("portico-sticky-1", 10, true);
        assert_eq!(gate.verify("portico-sticky-1", 10, &v), Some(true));
        let s = gate.value("portico-sticky-1", 10, false);
        assert_eq!(gate.verify("portico-sticky-1", 10, &s), Some(false));
        // Another weight, another route, a flipped side, another process.
        assert_eq!(gate.verify("portico-sticky-1", 20, &v), None);
        assert_eq!(gate.verify("portico-sticky-2", 10, &v), None);
        let forged = format!("c{}", &s[1..]);
        assert_eq!(gate.verify("portico-sticky-1", 10, &forged), None);
        let (other, _) = CanaryGate::new(allow, None);
        assert_eq!(other.verify("portico-sticky-1", 10, &v), None);
        for junk in ["", "c", "x00", "czz", "c1"] {
            assert_eq!(gate.verify("portico-sticky-1", 10, junk), None, "{junk}");
        }
    }

    #[test]
    fn replicas_sharing_a_token_file_share_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t0ken\n").unwrap();
        let allow = AllowList::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let (a, source) = CanaryGate::new(allow.clone(), Some(path.clone()));
        let (b, _) = CanaryGate::new(allow, Some(path));
        assert_eq!(source, KeySource::TokenFile);
        let v = a.value("portico-sticky-1", 5, true);
        assert_eq!(b.verify("portico-sticky-1", 5, &v), Some(true));
    }

    #[tokio::test]
    async fn operators_are_told_by_peer_or_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t0ken\n").unwrap();
        let allow = AllowList::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let (gate, _) = CanaryGate::new(allow, Some(path));
        let inside: IpAddr = "127.0.0.1".parse().unwrap();
        let outside: IpAddr = "127.0.0.2".parse().unwrap();
        let token = HeaderValue::from_static("t0ken");
        let wrong = HeaderValue::from_static("t0ken2");
        assert!(gate.is_operator(inside, None).await);
        assert!(!gate.is_operator(outside, None).await);
        assert!(gate.is_operator(outside, Some(&token)).await);
        assert!(!gate.is_operator(outside, Some(&wrong)).await);
        // A rotated token is taken once the cached one is older than the TTL.
        std::fs::write(dir.path().join("token"), "n3w\n").unwrap();
        tokio::time::sleep(TOKEN_TTL).await;
        assert!(!gate.is_operator(outside, Some(&token)).await);
        assert!(
            gate.is_operator(outside, Some(&HeaderValue::from_static("n3w")))
                .await
        );
        assert!(!operator_choice(true, false));
        assert!(!operator_choice(false, true));
        assert!(operator_choice(true, true));
    }
}
