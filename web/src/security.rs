//! What stands between the network and the API: the `Host` allow-list, bearer-token
//! authentication with a brake on failures, CSRF protection and response headers.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins one address may make per [`FAILURE_WINDOW`] before it is refused
/// outright (429). A request with the right token is never refused.
pub const MAX_FAILURES: usize = 20;
/// The window of [`MAX_FAILURES`].
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a failed sign-in waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_millis(250);

/// The name of the web UI's session cookie.
pub(crate) const SESSION_COOKIE: &str = "mnemon_session";

/// Security settings of one server.
#[derive(Debug)]
pub(crate) struct Security {
    token: String,
    csrf: String,
    hosts: HashSet<String>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Security {
    /// Accepts `token` as the bearer token, `csrf` as the UI's CSRF token, and requests
    /// addressed to the loopback names or `bind`, on `bind`'s port, or to `extra_hosts`.
    pub(crate) fn new(
        token: String,
        csrf: String,
        bind: SocketAddr,
        extra_hosts: &[String],
    ) -> Security {
        let port = bind.port();
        let mut hosts: HashSet<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        hosts.insert(match bind.ip() {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        });
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Security {
            token,
            csrf,
            hosts,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `host` (the `Host` header) names this server.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        self.hosts.contains(&host.to_ascii_lowercase())
    }

    /// Whether `presented` is the token, compared in constant time.
    pub(crate) fn token_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }

    /// Whether `presented` is the CSRF token.
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }

    /// The CSRF token (for a signed-in UI).
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The value of the UI's session cookie: derived from the token, so rotating the
    /// token signs every browser out, and the cookie itself is not the bearer token.
    pub(crate) fn session_value(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"mnemon-ui-session-1\0")
            .chain_update(self.token.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `headers` carry a valid session cookie.
    pub(crate) fn signed_in(&self, headers: &axum::http::HeaderMap) -> bool {
        headers
            .get(axum::http::header::COOKIE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| self.session_ok(c))
    }

    /// Whether the `Cookie` header carries a valid session.
    pub(crate) fn session_ok(&self, cookie_header: &str) -> bool {
        let expected = self.session_value();
        cookie_header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| {
                name == SESSION_COOKIE && constant_time_eq(value.as_bytes(), expected.as_bytes())
            })
    }

    /// Records a failed sign-in from `ip`; returns whether `ip` is now over the limit.
    pub(crate) fn record_failure(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bound the table itself: forget addresses whose window has passed.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.iter().any(|t| now - *t < FAILURE_WINDOW));
        }
        let times = failures.entry(ip).or_default();
        times.retain(|t| now - *t < FAILURE_WINDOW);
        times.push(now);
        times.len() > MAX_FAILURES
    }

    /// Whether `ip` is over the failure limit (without recording anything).
    pub(crate) fn over_limit(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(&ip).is_some_and(|times| {
            times.iter().filter(|t| now - **t < FAILURE_WINDOW).count() >= MAX_FAILURES
        })
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The headers every response carries.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
         form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_tokens_and_failures() {
        let bind: SocketAddr = "127.0.0.1:7777".parse().expect("addr");
        let s = Security::new("t0ken".into(), "csrf".into(), bind, &[]);
        assert!(s.host_allowed("localhost:7777"));
        assert!(s.host_allowed("127.0.0.1:7777"));
        assert!(s.host_allowed("[::1]:7777"));
        assert!(!s.host_allowed("localhost:7778"));
        assert!(!s.host_allowed("evil.example:7777"));
        assert!(s.token_ok("t0ken"));
        assert!(!s.token_ok("t0ke"));
        assert!(!s.token_ok("t0kem"));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(!s.record_failure(ip));
        }
        assert!(s.over_limit(ip));
        assert!(s.record_failure(ip));
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(!s.over_limit(other));
        let session = s.session_value();
        assert_eq!(session.len(), 64);
        assert!(s.session_ok(&format!("a=b; {SESSION_COOKIE}={session}")));
        assert!(!s.session_ok(&format!("{SESSION_COOKIE}=x{session}")));
        assert!(!s.session_ok(&format!("other={session}")));
        let rotated = Security::new("new".into(), "csrf".into(), bind, &[]);
        assert!(!rotated.session_ok(&format!("{SESSION_COOKIE}={session}")));
    }
}
