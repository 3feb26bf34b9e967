//! The open-file limit. Every client connection and every upstream
//! connection is a file descriptor, and a process left at a common default
//! soft limit (1024) fails `accept` with EMFILE long before
//! `limits.max_connections` is reached. At start, `portico serve` raises its
//! soft limit to the hard limit, as Go's runtime and nginx's
//! `worker_rlimit_nofile` do, and warns when even the hard limit is below
//! what the configured limits can use.

use crate::config::GatewayConfig;

/// Descriptors beyond connections: listeners, the log, config and
/// certificate files, the inotify watch.
const RESERVE: u64 = 64;

/// The limit before and after [`raise`], and what the configuration needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
    pub needed: u64,
}

/// Descriptors the configured limits can hold open at once: every public
/// listener's client connections, one upstream connection per request in
/// flight, and a reserve.
pub fn needed(cfg: &GatewayConfig) -> u64 {
    let public = u64::from(cfg.listen.http.is_some()) + u64::from(cfg.listen.https.is_some());
    public * cfg.limits.max_connections as u64 + cfg.limits.max_inflight as u64 + RESERVE
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or, when the hard
/// limit is unlimited, to what is needed).
pub fn raise(needed: u64) -> std::io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        before.max(needed)
    } else {
        lim.rlim_max
    };
    if target > before {
        lim.rlim_cur = target;
        // SAFETY: `lim` is a valid rlimit; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        before,
        now: target.max(before),
        needed,
    })
}

/// Raises the limit and says what happened: info when it is enough, a
/// warning naming the fix when it is not. Never fatal: a small limit still
/// serves, it just refuses connections sooner.
pub fn raise_and_report(cfg: &GatewayConfig) {
    match raise(needed(cfg)) {
        Ok(l) if l.now >= l.needed => tracing::info!(
            before = l.before,
            now = l.now,
            needed = l.needed,
            "open-file limit"
        ),
        Ok(l) => tracing::warn!(
            before = l.before,
            now = l.now,
            needed = l.needed,
            "open-file limit is below what limits.max_connections and limits.max_inflight can use; \
             connections beyond it fail to open: raise the hard limit (LimitNOFILE=, ulimit -Hn, \
             the container runtime's nofile) or lower the limits"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_counts_public_listeners_inflight_and_a_reserve() {
        let parse = |listen: &str| {
            let yaml = format!(
                "listen:\n{listen}routes_file: r.yaml\nlimits:\n  max_connections: 1000\n  max_inflight: 300\n"
            );
            crate::config::parse_gateway_config(std::path::Path::new("p.yaml"), &yaml).unwrap()
        };
        assert_eq!(
            needed(&parse("  http: 127.0.0.1:0\n")),
            1000 + 300 + RESERVE
        );
        // Two public listeners: either may hold max_connections clients.
        let both = parse(
            "  http: 127.0.0.1:0\n  https: 127.0.0.1:0\ntls:\n  certificates:\n    - {cert: c.pem, key: k.pem}\n",
        );
        assert_eq!(needed(&both), 2 * 1000 + 300 + RESERVE);
    }
}
