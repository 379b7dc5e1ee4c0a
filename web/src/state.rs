//! What every handler shares: the server's configuration, the state behind the router
//! (the backend, the security rules, metrics, the web UI's pending deletes), and the
//! helpers handlers use to reach the backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};

use mnemon_api::{Api, Caller, Error, Grant, MemoryView, Scope};

use crate::metrics::Metrics;
use crate::security::Security;
use crate::tokens::Tokens;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address the server is bound to (for the `Host` allow-list).
    pub bind: SocketAddr,
    /// The bearer token.
    pub token: String,
    /// The CSRF token the UI sends with state-changing requests.
    pub csrf: String,
    /// More `Host` values to accept (`name:port`), e.g. behind a reverse proxy.
    pub extra_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// How long Undo can bring back a memory deleted in the web UI (as a new memory from
    /// its last state: the delete itself happens at once).
    pub undo_window: Duration,
    /// How long a client has to send a request's head, from when it connects or its
    /// previous response ended (an idle connection is closed after it too).
    pub header_timeout: Duration,
    /// How long a request body may pause between pieces.
    pub body_timeout: Duration,
    /// How long a write to a client may wait for it to read before it is cut off.
    pub write_timeout: Duration,
    /// Where the web UI's sessions are kept between runs (`None`: in memory only).
    pub sessions: Option<std::path::PathBuf>,
    /// A sign-in link's code, valid once for [`crate::SIGN_IN_LINK_LIFETIME`] from the
    /// start (`mnemon serve` prints its link).
    pub sign_in_code: Option<String>,
    /// The file the token is kept in: `POST /api/v1/token` writes the new one there.
    pub token_file: Option<std::path::PathBuf>,
    /// The capability tokens the owner made ([`Tokens::open`]), honoured with their
    /// scopes.
    pub tokens: Arc<Tokens>,
}

/// Event streams open at once: each holds a connection as long as it lasts.
pub(crate) const MAX_EVENT_STREAMS: usize = 64;

/// Default [`ServerConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::body_timeout`].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`ServerConfig::undo_window`].
pub const DEFAULT_UNDO_WINDOW: Duration = Duration::from_secs(10);

/// A memory deleted in the web UI, as Undo needs it.
#[derive(Debug)]
pub(crate) struct Deleted {
    /// Its last state.
    pub(crate) memory: MemoryView,
    /// The memories that linked to it, with the relation.
    pub(crate) linked_from: Vec<(String, String)>,
}

/// A memory deleted in the UI: when, by whom ([`AppState::caller_key`]), and its state.
type Held = (Instant, String, Deleted);

/// What request handlers share: cloned for each request, so it is one `Arc`.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub(crate) struct Shared {
    /// The node, whole: handlers reach it through [`AppState::backend`], as their caller
    /// may use it.
    node: Arc<dyn Api>,
    pub(crate) security: Arc<Security>,
    pub(crate) metrics: Arc<Metrics>,
    /// Memories deleted in the UI, with when and by whom: Undo writes them again within
    /// the window, for the caller who deleted them only.
    deleted: Arc<Mutex<HashMap<String, Held>>>,
    undo_window: Duration,
    /// Largest request body, in bytes.
    pub(crate) body_limit: usize,
    /// Slots for event streams ([`MAX_EVENT_STREAMS`]).
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The state of a server for `backend` set up by `config`.
    pub(crate) fn new(backend: Arc<dyn Api>, config: &ServerConfig) -> AppState {
        let security = Security::new(
            config.token.clone(),
            config.csrf.clone(),
            config.bind,
            &config.extra_hosts,
            config.sessions.clone(),
            config.token_file.clone(),
            config.tokens.clone(),
        );
        if let Some(code) = &config.sign_in_code {
            security.add_sign_in_code(code, std::time::Instant::now());
        }
        AppState(Arc::new(Shared {
            node: backend,
            security: Arc::new(security),
            metrics: Arc::new(Metrics::default()),
            deleted: Arc::new(Mutex::new(HashMap::new())),
            undo_window: config.undo_window,
            body_limit: config.body_limit,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
        }))
    }

    /// Who the request being handled came from. Outside a request's handling (never, for
    /// a handler behind the authentication middleware) a caller that may do nothing.
    pub(crate) fn caller(&self) -> Caller {
        crate::security::current().map_or_else(nobody, |auth| auth.caller)
    }

    /// The node as the request's caller may use it: the owner's whole node, or a
    /// capability token's view of it ([`mnemon_api::Caller::api`]).
    pub(crate) fn backend(&self) -> Arc<dyn Api> {
        self.caller().api(self.node.clone())
    }

    /// Whether the node is ready (for the health check, which needs no credential).
    pub(crate) fn ready(&self) -> bool {
        self.node.ready()
    }

    /// Who the caller is, for Undo: the owner, or one capability token.
    fn caller_key(&self) -> String {
        match self.caller() {
            Caller::Owner => "owner".to_owned(),
            Caller::Token(grant) => format!("token {}", grant.id),
        }
    }

    /// Keeps a memory just deleted in the UI, for Undo during the undo window.
    pub(crate) fn deleted(&self, memory: Deleted) {
        let now = Instant::now();
        let by = self.caller_key();
        let mut deleted = self
            .deleted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        deleted.retain(|_, (at, _, _)| now.duration_since(*at) < self.undo_window);
        let id = memory.memory.id.clone();
        deleted.insert(id.clone(), (now, by, memory));
        drop(deleted);
        // Its text is not kept past the window.
        let (kept, window) = (self.deleted.clone(), self.undo_window);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|held, (at, _, _)| *held != id || *at != now);
        });
    }

    /// Whether the caller deleted the memory `id` in the UI within the undo window.
    pub(crate) fn can_undo(&self, id: &str) -> bool {
        self.undo_left(id).is_some()
    }

    /// How long the caller has left to undo deleting the memory `id`, if any time.
    pub(crate) fn undo_left(&self, id: &str) -> Option<Duration> {
        let by = self.caller_key();
        self.deleted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .filter(|(_, who, _)| *who == by)
            .and_then(|(at, _, _)| self.undo_window.checked_sub(at.elapsed()))
            .filter(|left| !left.is_zero())
    }

    /// The last state of the memory `id` the caller deleted in the UI, if the undo window
    /// is open (taken: an undo happens once).
    pub(crate) fn take_deleted(&self, id: &str) -> Option<Deleted> {
        let by = self.caller_key();
        let mut deleted = self
            .deleted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if deleted.get(id).is_none_or(|(_, who, _)| *who != by) {
            return None;
        }
        deleted
            .remove(id)
            .filter(|(at, _, _)| at.elapsed() < self.undo_window)
            .map(|(_, _, memory)| memory)
    }
}

/// A caller that sees nothing and may do nothing: what a handler gets if it ever runs
/// without the authentication middleware's caller (fails closed).
fn nobody() -> Caller {
    Caller::Token(Arc::new(Grant {
        id: String::new(),
        name: "(no credential)".to_owned(),
        scope: Scope {
            collections: Some(Vec::new()),
            write: false,
        },
        live: Box::new(|| false),
    }))
}

/// Runs a blocking backend call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("the request's task failed: {e}")))?
}

pub(crate) fn client_ip(request: &Request) -> std::net::IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}
