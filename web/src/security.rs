//! What stands between the network and the API: the `Host` allow-list, bearer-token
//! authentication with a brake on failures, CSRF protection and response headers.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;

use mnemon_api::Caller;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tokens::{Tokens, unix_ms};

/// Failed sign-ins one address may make per [`FAILURE_WINDOW`] before it is refused
/// outright (429). A request with the right token is never refused.
pub const MAX_FAILURES: usize = 20;
/// The window of [`MAX_FAILURES`].
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a failed sign-in waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_millis(250);

/// How long a sign-in link works (it works once).
pub const SIGN_IN_LINK_LIFETIME: Duration = Duration::from_secs(600);
/// Sign-in links outstanding at once; making another forgets the oldest.
const MAX_SIGN_IN_CODES: usize = 16;

tokio::task_local! {
    /// Who the request being handled came from, and its session's CSRF token: set by the
    /// authentication middleware around the handler.
    static REQUEST: RequestAuth;
}

/// What the authentication middleware learnt about a request.
#[derive(Debug, Clone)]
pub(crate) struct RequestAuth {
    /// Who it came from.
    pub(crate) caller: Caller,
    /// The CSRF token of the web UI session it came with, if it came with one.
    pub(crate) csrf: Option<String>,
}

/// Runs `handler` (the rest of a request's handling) as `auth` says.
pub(crate) async fn as_caller<T>(auth: RequestAuth, handler: impl Future<Output = T>) -> T {
    REQUEST.scope(auth, handler).await
}

/// What the middleware learnt about the request being handled, if one is.
pub(crate) fn current() -> Option<RequestAuth> {
    REQUEST.try_with(RequestAuth::clone).ok()
}

/// The name of the web UI's session cookie.
pub(crate) const SESSION_COOKIE: &str = "mnemon_session";

/// Security settings of one server.
#[derive(Debug)]
pub(crate) struct Security {
    /// The bearer token; replaced at once by [`Security::rotate_token`].
    token: std::sync::RwLock<String>,
    /// Where the token is kept (so a rotation reaches the CLI), if anywhere.
    token_file: Option<PathBuf>,
    /// The UI's sessions: the SHA-256 of each session's secret, and when it ends.
    sessions: Mutex<Sessions>,
    /// The server's own address, as a client reaches it (`http://127.0.0.1:7777`).
    url: String,
    csrf: String,
    hosts: HashSet<String>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    /// Sign-in links not used yet: the SHA-256 of each code, and when it was made.
    codes: Mutex<Vec<([u8; 32], Instant)>>,
    /// How many times the token was replaced: a stream opened before ends.
    rotations: std::sync::atomic::AtomicU64,
    /// The capability tokens the owner made.
    tokens: Arc<Tokens>,
}

impl Security {
    /// Accepts `token` as the bearer token, `csrf` as the UI's CSRF token, and requests
    /// addressed to the loopback names or `bind`, on `bind`'s port, or to `extra_hosts`.
    pub(crate) fn new(
        token: String,
        csrf: String,
        bind: SocketAddr,
        extra_hosts: &[String],
        sessions: Option<PathBuf>,
        token_file: Option<PathBuf>,
        tokens: Arc<Tokens>,
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
        let sessions = Sessions::load(sessions, &token);
        Security {
            sessions: Mutex::new(sessions),
            token: std::sync::RwLock::new(token),
            token_file,
            url: format!("http://{bind}"),
            csrf,
            hosts,
            failures: Mutex::new(HashMap::new()),
            codes: Mutex::new(Vec::new()),
            rotations: std::sync::atomic::AtomicU64::new(0),
            tokens,
        }
    }

    /// The capability tokens.
    pub(crate) fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Who `presented` (a bearer token) makes: the owner for the full token, a capability
    /// token's grant for one that stands, nobody otherwise.
    pub(crate) fn bearer_caller(&self, presented: &str) -> Option<Caller> {
        if self.token_ok(presented) {
            Some(Caller::Owner)
        } else {
            self.tokens.caller(presented, unix_ms())
        }
    }

    /// Who the session cookie in `headers` signed in as, if it is a session that has not
    /// ended (and, for a capability token's session, whose token still stands).
    pub(crate) fn session_caller(&self, headers: &axum::http::HeaderMap) -> Option<Caller> {
        let value = session_cookie(headers)?;
        let signed_in_as = self.lock_sessions().signed_in_as(value)?;
        match signed_in_as {
            None => Some(Caller::Owner),
            Some(id) => self.tokens.session_caller(&id, unix_ms()),
        }
    }

    /// Registers `code` as a sign-in link's code, usable once within
    /// [`SIGN_IN_LINK_LIFETIME`] of `now`.
    pub(crate) fn add_sign_in_code(&self, code: &str, now: Instant) {
        let mut codes = self
            .codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        codes.retain(|(_, made)| now.saturating_duration_since(*made) < SIGN_IN_LINK_LIFETIME);
        if codes.len() >= MAX_SIGN_IN_CODES {
            codes.remove(0);
        }
        codes.push((sha256(code), now));
    }

    /// A new sign-in link: its URL (this server's `/signin?code=…`).
    pub(crate) fn new_sign_in_link(&self) -> String {
        let code = random_code();
        self.add_sign_in_code(&code, Instant::now());
        sign_in_url(&self.url, &code)
    }

    /// Whether `code` is a sign-in link's code that has not been used and has not expired
    /// at `now`; it is used up either way.
    pub(crate) fn take_sign_in_code(&self, code: &str, now: Instant) -> bool {
        let hash = sha256(code);
        let mut codes = self
            .codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(at) = codes.iter().position(|(h, _)| constant_time_eq(h, &hash)) else {
            return false;
        };
        let (_, made) = codes.remove(at);
        now.saturating_duration_since(made) < SIGN_IN_LINK_LIFETIME
    }

    /// Whether `host` (the `Host` header) names this server.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        self.hosts.contains(&host.to_ascii_lowercase())
    }

    fn current_token(&self) -> std::sync::RwLockReadGuard<'_, String> {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `presented` is the token, compared in constant time.
    pub(crate) fn token_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.current_token().as_bytes())
    }

    /// This server's answer to a client's `nonce` ([`serve_proof`]).
    pub(crate) fn proof(&self, nonce: &str) -> String {
        serve_proof(&self.current_token(), &self.url, nonce)
    }

    /// Replaces the token with a new one, at once: the old one and every UI session end
    /// with it. The new token is written to the token file first (when there is one), so
    /// the CLI finds it; if that fails, nothing changes.
    ///
    /// Sign-in links made before end too, and event streams opened before get nothing
    /// more. Rotations run one at a time (the lock is held across the file write), so the
    /// file and the server never disagree.
    pub(crate) fn rotate_token(&self) -> std::io::Result<String> {
        let mut current = self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let token = format!("mnm_{}", random_code());
        if let Some(path) = &self.token_file {
            mnemon_identity::private::write_private(path, format!("{token}\n").as_bytes())?;
        }
        self.lock_sessions().reset(&token);
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.rotations
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *current = token.clone();
        Ok(token)
    }

    /// How many times the token was replaced so far.
    pub(crate) fn rotations(&self) -> u64 {
        self.rotations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `presented` is the CSRF token of the request being handled ([`Self::csrf`]).
    pub(crate) fn csrf_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf().as_bytes())
    }

    /// The CSRF token for the request being handled: its web UI session's own (so a
    /// token that can read one session's cannot forge another's requests), or the
    /// server's for a request without a session.
    pub(crate) fn csrf(&self) -> String {
        current()
            .and_then(|auth| auth.csrf)
            .unwrap_or_else(|| self.csrf.clone())
    }

    /// The CSRF token of the session whose cookie is `headers`', if it has one.
    pub(crate) fn session_csrf(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        use hmac::Mac as _;
        let value = session_cookie(headers)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.csrf.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"mnemon-session-csrf-1\0");
        mac.update(value.as_bytes());
        Some(hex(&mac.finalize().into_bytes()))
    }

    /// A new session for the UI, signed in as `caller`: the cookie's value (a random
    /// secret, kept here only as its hash, for [`SESSION_LIFETIME`]).
    pub(crate) fn new_session(&self, caller: &Caller) -> String {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let value = hex(&secret);
        let token = match caller {
            Caller::Owner => None,
            Caller::Token(grant) => Some(grant.id.as_str()),
        };
        self.lock_sessions().insert(&value, token);
        value
    }

    /// Ends the session the `Cookie` header carries, if any (sign-out).
    pub(crate) fn end_session(&self, headers: &axum::http::HeaderMap) {
        if let Some(value) = session_cookie(headers) {
            self.lock_sessions().remove(value);
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// A fresh sign-in code: 32 random bytes in hex.
pub fn random_code() -> String {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    hex(&secret)
}

/// The link that signs a browser in to the server at `base` with `code`.
pub fn sign_in_url(base: &str, code: &str) -> String {
    format!("{}/signin?code={code}", base.trim_end_matches('/'))
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
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

/// How long a UI session lasts after sign-in.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most sessions kept; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 256;

/// The value of the session cookie in `headers`, if one is there.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    for part in parts {
        digest.update(part);
    }
    hex(&digest.finalize())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The UI's sessions, kept (if a file is given) so a restart does not sign anyone out
/// and a sign-out stays one. Only hashes of the cookies are kept; the file also holds a
/// hash of the token, and a new token ends every session.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Sessions {
    token: String,
    /// Hash of a session's cookie → when it ends (Unix seconds).
    ends: HashMap<String, u64>,
    /// Hash of a session's cookie → the id of the capability token it signed in with
    /// (absent: the owner's token).
    #[serde(default)]
    tokens: HashMap<String, String>,
    #[serde(skip)]
    file: Option<PathBuf>,
}

impl Sessions {
    fn load(file: Option<PathBuf>, token: &str) -> Sessions {
        let token = sha256_hex(&[b"mnemon-sessions-token-1\0", token.as_bytes()]);
        let kept = file
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<Sessions>(&bytes).ok())
            .filter(|kept| kept.token == token);
        let mut sessions = kept.unwrap_or_default();
        sessions.token = token;
        sessions.file = file;
        sessions.forget_ended();
        sessions
    }

    /// Forgets sessions that have ended.
    fn forget_ended(&mut self) {
        let now = unix_now();
        self.ends.retain(|_, end| *end > now);
        let ends = &self.ends;
        self.tokens.retain(|key, _| ends.contains_key(key));
    }

    fn key(value: &str) -> String {
        sha256_hex(&[b"mnemon-session-1\0", value.as_bytes()])
    }

    /// Ends every session: they belonged to an old token.
    fn reset(&mut self, token: &str) {
        self.token = sha256_hex(&[b"mnemon-sessions-token-1\0", token.as_bytes()]);
        self.ends.clear();
        self.tokens.clear();
        self.save();
    }

    fn insert(&mut self, value: &str, token: Option<&str>) {
        let now = unix_now();
        self.forget_ended();
        while self.ends.len() >= MAX_SESSIONS {
            let oldest = self
                .ends
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(key, _)| key.clone());
            if let Some(key) = oldest {
                self.ends.remove(&key);
                self.tokens.remove(&key);
            }
        }
        let key = Self::key(value);
        if let Some(token) = token {
            self.tokens.insert(key.clone(), token.to_owned());
        }
        self.ends.insert(key, now + SESSION_LIFETIME.as_secs());
        self.save();
    }

    fn remove(&mut self, value: &str) {
        let key = Self::key(value);
        self.tokens.remove(&key);
        if self.ends.remove(&key).is_some() {
            self.save();
        }
    }

    /// For a session that has not ended: `Some(None)` if it signed in with the owner's
    /// token, `Some(Some(id))` with the capability token `id`.
    fn signed_in_as(&self, value: &str) -> Option<Option<String>> {
        let key = Self::key(value);
        let end = self.ends.get(&key)?;
        (*end > unix_now()).then(|| self.tokens.get(&key).cloned())
    }

    fn save(&self) {
        let Some(path) = &self.file else { return };
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| mnemon_identity::private::write_private(path, &bytes));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the UI's sessions");
        }
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
    fn a_sign_in_code_works_once_and_not_after_it_expires() {
        let bind: SocketAddr = "127.0.0.1:7777".parse().expect("addr");
        let s = Security::new(
            "t0ken".into(),
            "csrf".into(),
            bind,
            &[],
            None,
            None,
            Tokens::in_memory(),
        );
        let now = Instant::now();
        s.add_sign_in_code("first", now);
        s.add_sign_in_code("second", now);
        assert!(
            !s.take_sign_in_code("firs", now),
            "a prefix is not the code"
        );
        assert!(s.take_sign_in_code("first", now + Duration::from_secs(1)));
        assert!(
            !s.take_sign_in_code("first", now + Duration::from_secs(2)),
            "used twice"
        );
        assert!(
            !s.take_sign_in_code("second", now + SIGN_IN_LINK_LIFETIME),
            "expired"
        );
        assert!(
            !s.take_sign_in_code("second", now),
            "an expired code is used up too"
        );
        for i in 0..=MAX_SIGN_IN_CODES {
            s.add_sign_in_code(&format!("code {i}"), now);
        }
        assert!(
            !s.take_sign_in_code("code 0", now),
            "the oldest is forgotten"
        );
        assert!(s.take_sign_in_code(&format!("code {MAX_SIGN_IN_CODES}"), now));
        let link = s.new_sign_in_link();
        let code = link
            .strip_prefix("http://127.0.0.1:7777/signin?code=")
            .expect("link");
        assert_eq!(code.len(), 64);
        assert!(s.take_sign_in_code(code, Instant::now()));
    }

    #[test]
    fn hosts_tokens_and_failures() {
        let bind: SocketAddr = "127.0.0.1:7777".parse().expect("addr");
        let s = Security::new(
            "t0ken".into(),
            "csrf".into(),
            bind,
            &[],
            None,
            None,
            Tokens::in_memory(),
        );
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
        let cookies = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::COOKIE,
                format!("a=b; {SESSION_COOKIE}={value}")
                    .parse()
                    .expect("header"),
            );
            headers
        };
        let session = s.new_session(&Caller::Owner);
        assert_eq!(session.len(), 64);
        assert!(s.session_caller(&cookies(&session)).is_some());
        assert!(s.session_caller(&cookies(&format!("x{session}"))).is_none());
        let other = s.new_session(&Caller::Owner);
        s.end_session(&cookies(&session));
        assert!(s.session_caller(&cookies(&session)).is_none(), "signed out");
        assert!(
            s.session_caller(&cookies(&other)).is_some(),
            "only that session"
        );
    }

    #[test]
    fn sessions_outlive_a_restart_but_not_a_sign_out_or_a_new_token() {
        let dir = std::env::temp_dir().join(format!(
            "mnemon-sessions-{}",
            hex(&{
                let mut b = [0u8; 8];
                rand::rngs::OsRng.fill_bytes(&mut b);
                b
            })
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("sessions.json");
        let bind: SocketAddr = "127.0.0.1:7777".parse().expect("addr");
        let server = |token: &str| {
            Security::new(
                token.into(),
                "csrf".into(),
                bind,
                &[],
                Some(file.clone()),
                None,
                Tokens::in_memory(),
            )
        };
        let cookies = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::COOKIE,
                format!("{SESSION_COOKIE}={value}").parse().expect("header"),
            );
            headers
        };
        let first = server("t0ken");
        let kept = first.new_session(&Caller::Owner);
        let ended = first.new_session(&Caller::Owner);
        first.end_session(&cookies(&ended));
        let text = std::fs::read_to_string(&file).expect("saved");
        assert!(!text.contains(&kept), "only hashes are kept");
        let again = server("t0ken");
        assert!(again.session_caller(&cookies(&kept)).is_some());
        assert!(again.session_caller(&cookies(&ended)).is_none());
        let rotated = server("new");
        assert!(rotated.session_caller(&cookies(&kept)).is_none());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
