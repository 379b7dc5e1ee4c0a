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
    /// The server's own address, as a client reaches it (`http://127.0.0.1:7777`).
    url: String,
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
            url: format!("http://{bind}"),
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

    /// This server's answer to a client's `nonce` ([`serve_proof`]).
    pub(crate) fn proof(&self, nonce: &str) -> String {
        serve_proof(&self.token, &self.url, nonce)
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

/// The answer a server that knows `token` gives to a client's `nonce` when the client
/// reached it at `url` (`GET /health/proof?nonce=`): HMAC-SHA-256 over both, in hex.
///
/// A client that found a server's address in the data folder asks for this before it
/// sends the token: whoever took over the port of a server that died cannot answer it,
/// and an answer for one address is no answer for another.
pub fn serve_proof(token: &str, url: &str, nonce: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    for part in ["mnemon-serve-proof-1", url, nonce] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `nonce` is one a client would send for [`serve_proof`]: 32 to 128 hex digits.
pub(crate) fn nonce_ok(nonce: &str) -> bool {
    (32..=128).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit())
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
