//! The whole server put together: the API's routes (with the OpenAPI document), the web
//! UI's pages, health and metrics, behind the middleware every request passes.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;

use mnemon_api::{Api, Error};

use crate::error::HttpError;
use crate::router::{
    ask, authenticate, backlinks, collections, create_collection, create_memory, delete_memory,
    events, get_memory, graph, guard, invite_collection, join, list_memories, members, metrics,
    peers, proof, ready, search, session, share_collection, status, tag_route, unshare_collection,
    update_memory,
};
use crate::state::{AppState, ServerConfig};

/// 405, in the API's error shape.
async fn method_not_allowed() -> HttpError {
    HttpError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The router for `backend`, with every protection in place.
pub fn router(backend: Arc<dyn Api>, config: &ServerConfig) -> Router {
    router_with(backend, config, Router::new())
}

/// [`router`] with `protected` routes beside the API (such as the MCP
/// endpoint), behind the same token, `Host` check, limits and logging.
pub fn router_with(backend: Arc<dyn Api>, config: &ServerConfig, protected: Router) -> Router {
    let state = AppState::new(backend, config);
    let api = Router::new()
        .route("/memories", get(list_memories).post(create_memory))
        .route(
            "/memories/{id}",
            get(get_memory).patch(update_memory).delete(delete_memory),
        )
        .route("/memories/{id}/backlinks", get(backlinks))
        .route("/search", get(search))
        .route("/graph", get(graph))
        .route("/ask", axum::routing::post(ask))
        .route("/collections", get(collections).post(create_collection))
        .route(
            "/collections/{id}/members",
            get(members).post(share_collection),
        )
        .route(
            "/collections/{id}/members/{did}",
            axum::routing::delete(unshare_collection),
        )
        .route(
            "/collections/{id}/invites",
            axum::routing::post(invite_collection),
        )
        .route("/join", axum::routing::post(join))
        .route("/peers", get(peers))
        .route("/status", get(status))
        .route("/events", get(events))
        .route("/session", get(session))
        .route("/openapi.json", get(crate::openapi::document))
        .fallback(|| async { HttpError::from(Error::not_found("no such API route")) })
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(tag_route))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::ui::routes(&state))
        .route(
            "/metrics",
            get(metrics).layer(middleware::from_fn_with_state(state.clone(), authenticate)),
        )
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/health/proof", get(proof))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(tag_route))
        .with_state(state.clone())
        .merge(protected.layer(middleware::from_fn_with_state(state.clone(), authenticate)))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}
