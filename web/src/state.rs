//! What every handler shares: the server's configuration, the state behind the router
//! (the backend, the security rules, metrics, the web UI's pending deletes), and the
//! helpers handlers use to reach the backend.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};

use mnemon_api::{Api, Error, ErrorKind};

use crate::metrics::Metrics;
use crate::security::Security;

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
    /// How long a memory deleted in the web UI can be brought back before it is
    /// forgotten for good.
    pub undo_window: Duration,
}

/// Default [`ServerConfig::undo_window`].
pub const DEFAULT_UNDO_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) backend: Arc<dyn Api>,
    pub(crate) security: Arc<Security>,
    pub(crate) metrics: Arc<Metrics>,
    /// Memories deleted in the UI and still within their undo window.
    pending: Arc<Mutex<HashSet<String>>>,
    undo_window: Duration,
}

impl AppState {
    /// The state of a server for `backend` set up by `config`.
    pub(crate) fn new(backend: Arc<dyn Api>, config: &ServerConfig) -> AppState {
        AppState {
            backend,
            security: Arc::new(Security::new(
                config.token.clone(),
                config.csrf.clone(),
                config.bind,
                &config.extra_hosts,
            )),
            metrics: Arc::new(Metrics::default()),
            pending: Arc::new(Mutex::new(HashSet::new())),
            undo_window: config.undo_window,
        }
    }

    /// Ids deleted in the UI whose undo window is still open (hidden from its pages).
    pub(crate) fn pending_deletes(&self) -> HashSet<String> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets `id` for good once the undo window passes, unless [`Self::cancel_delete`]
    /// is called first.
    pub(crate) fn schedule_delete(&self, id: String) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.clone());
        let state = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.undo_window).await;
            state.delete_now(id).await;
        });
    }

    /// Brings back a memory deleted in the UI; false if its window has passed.
    pub(crate) fn cancel_delete(&self, id: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id)
    }

    async fn delete_now(&self, id: String) {
        // Claimed before deleting, so an undo from now on is "too late", never a false
        // "undone" while the delete goes on.
        if !self.cancel_delete(&id) {
            return;
        }
        let backend = self.backend.clone();
        let target = id.clone();
        match blocking(move || backend.delete(&target)).await {
            Ok(()) => tracing::info!(memory = %id, "deleted from the web UI"),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(memory = %id, error = %e, "a delete from the web UI failed"),
        }
    }

    /// Carries out every delete still waiting for its undo window (at shutdown).
    pub(crate) async fn flush_deletes(&self) {
        for id in self.pending_deletes() {
            self.delete_now(id).await;
        }
    }
}

/// A handle to what the router holds between requests, for a graceful shutdown.
#[derive(Clone)]
pub struct Shutdown(pub(crate) AppState);

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

impl Shutdown {
    /// Carries out the deletes made in the web UI whose undo window is still open, so a
    /// memory its owner deleted does not survive a restart.
    pub async fn flush(&self) {
        self.0.flush_deletes().await;
    }
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
