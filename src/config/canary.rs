//! A route's `canary:`: a second set of backends that operators reach on
//! request, and, once given a `weight`, a share of public traffic too.
//!
//! ```yaml
//! canary:
//!   backend: http://billing-v2.billing.svc:8080   # or backends: [..]
//!   weight: 5                                     # percent of public traffic, default 0
//!   sticky: cookie                                # remember the choice per client
//! ```

use super::check::{Checker, Map};
use super::routes::{BackendUrl, backends};
use super::yaml::Node;

/// A validated `canary:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    /// Never empty; no duplicates, none of them a stable backend of the route.
    pub backends: Vec<BackendUrl>,
    /// Percent (0..=100) of public requests sent to the canary. 0 keeps it
    /// operator-only.
    pub weight: u8,
    /// `sticky: cookie`: a public client keeps the side it was dealt,
    /// remembered in a signed cookie. Only with `weight > 0`.
    pub sticky: bool,
}

pub(super) const CANARY_KEYS: &[&str] = &["backend", "backends", "weight", "sticky"];

/// Reads `canary:` of the route named `label`, whose stable backends are
/// `stable` (when they are valid).
pub(super) fn canary(
    c: &mut Checker<'_>,
    node: &Node,
    label: &str,
    stable: Option<&[BackendUrl]>,
) -> Option<CanarySpec> {
    let name = format!("{label}: canary");
    let m: Map<'_> = c.mapping(node, &name, CANARY_KEYS)?;
    let urls = backends(c, &m, &name);
    if let (Some(urls), Some(stable)) = (&urls, stable)
        && let Some(both) = urls.iter().find(|u| stable.contains(u))
    {
        let pos = m
            .entry("backend")
            .or_else(|| m.entry("backends"))
            .map_or(m.pos, |e| e.value.pos);
        c.error(
            pos,
            format!("{name}: {both} is also a stable backend of the route; a canary names the new version's backends only"),
        );
        return None;
    }
    let weight = match m.get("weight") {
        Some(n) => c
            .number(n, &format!("{name}: weight"), 0, 100)
            .map(|w| w as u8),
        None => Some(0),
    };
    let sticky = match m.get("sticky") {
        None => Some(false),
        Some(n) => match n.as_str() {
            Some("cookie") if weight == Some(0) => {
                c.error(
                    n.pos,
                    format!("{name}: sticky: applies to a weighted canary; set weight (1 to 100) or remove sticky"),
                );
                None
            }
            Some("cookie") => Some(true),
            _ => {
                c.error(
                    n.pos,
                    format!("{name}: sticky: expected cookie, got {}", n.describe()),
                );
                None
            }
        },
    };
    Some(CanarySpec {
        backends: urls?,
        weight: weight?,
        sticky: sticky?,
    })
}
