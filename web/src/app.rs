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
    ask, authenticate, backlinks, backup, collections, create_collection, create_memory,
    create_token, delete_collection, delete_memory, dial, events, forget_history, get_memory,
    graph, guard, invite_collection, join, list_memories, list_tokens, members, metrics,
    move_memory, name_node, peers, proof, ready, rename_collection, resolve_conflict, revoke_token,
    rotate_token, search, session, share_collection, sign_in_link, status, tag_route,
    unshare_collection, update_memory,
};
use crate::state::{AppState, ServerConfig};

/// The errors of routes this crate did not write (the MCP endpoint's), in the API's error
/// shape: a client reads every error the same way.
async fn json_errors(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        409 => "conflict",
        415 => "unsupported_media_type",
        422 => "invalid_field",
        s if s >= 500 => "internal",
        _ => "error",
    };
    let mut answer = HttpError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

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
        .route(
            "/memories/{id}/forget-history",
            axum::routing::post(forget_history),
        )
        .route(
            "/memories/{id}/resolve",
            axum::routing::post(resolve_conflict),
        )
        .route("/memories/{id}/move", axum::routing::post(move_memory))
        .route("/search", get(search))
        .route("/graph", get(graph))
        .route("/ask", axum::routing::post(ask))
        .route("/collections", get(collections).post(create_collection))
        .route(
            "/collections/{id}",
            axum::routing::patch(rename_collection).delete(delete_collection),
        )
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
        .route("/names/{did}", axum::routing::put(name_node))
        .route("/peers", get(peers).post(dial))
        .route("/status", get(status))
        .route("/backups", axum::routing::post(backup))
        .route("/events", get(events))
        .route("/session", get(session))
        .route("/signin-links", axum::routing::post(sign_in_link))
        .route("/token", axum::routing::post(rotate_token))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{name}", axum::routing::delete(revoke_token))
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
        .merge(
            protected
                .layer(middleware::from_fn(json_errors))
                .layer(middleware::from_fn_with_state(state.clone(), authenticate)),
        )
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}
