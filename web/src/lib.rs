//! Mnemon's interfaces for people and agents: the HTTP API under `/api/v1`, server-sent
//! events, health and metrics, the OpenAPI document, and the web UI.
//!
//! The crate serves any [`mnemon_api::Api`] and never knows how storage or networking
//! work; application errors become HTTP statuses here, by their kind. [`router`] builds
//! the axum router over a backend with every protection in place: the `Host` allow-list
//! (DNS rebinding), bearer-token authentication (the owner's token or a capability
//! token, whose scope [`mnemon_api::Caller::api`] applies) with a brake on failed attempts, CSRF protection for cross-origin
//! changes, a body limit, security headers, a request id on every response, and
//! per-route latency metrics.

mod app;
mod error;
mod metrics;
mod openapi;
mod router;
mod security;
mod server;
mod state;
pub mod tokens;
mod ui;

pub use ui::encode_component;

pub use app::{router, router_with};
pub use error::{ErrorBody, ErrorDetail, HttpError, status_of};
pub use openapi::ApiDoc;
pub use router::DEFAULT_BODY_LIMIT;
pub use security::{
    FAILURE_DELAY, MAX_FAILURES, SIGN_IN_LINK_LIFETIME, random_code, serve_proof, sign_in_url,
};
pub use server::{MAX_CONNECTIONS, serve};
pub use state::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_UNDO_WINDOW, DEFAULT_WRITE_TIMEOUT,
    ServerConfig,
};
