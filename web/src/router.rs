//! The axum router: routes, the JSON error shape, and the middleware every request passes.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt as _;
use tracing::Instrument as _;

use mnemon_api::Error;
use mnemon_api::{
    AskEvent, AskRequest, BackupRequest, CollectionView, CreateCollection, CreateMemory, Created,
    DialRequest, EventView, GraphQuery, GraphView, HitView, InviteRequest, InviteView, IssuedToken,
    JoinRequest, JoinView, ListQuery, MemberView, MemoryView, NewToken, Page, PatchMemory,
    PeerView, SearchQuery, ShareRequest, TokenView,
};

use crate::error::{ErrorBody, HttpError};
use crate::security::{FAILURE_DELAY, SECURITY_HEADERS};
use crate::security::{RequestAuth, as_caller};
use crate::state::{AppState, MAX_EVENT_STREAMS, blocking, client_ip};

/// Default request body limit: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// A JSON body whose errors name the field: 415 without a JSON content type, 413 over
/// the size limit, 400 for malformed JSON, 422 for a field of the wrong type or value.
pub(crate) struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is too large",
                )
            } else {
                HttpError::new(status, "bad_body", rejection.body_text())
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(value) => match de.end() {
                Ok(()) => Ok(JsonBody(value)),
                Err(e) => Err(Error::bad_request(format!(
                    "malformed JSON: something follows the value ({e})"
                ))
                .into()),
            },
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_data() {
                    let field = if path == "." { "body".to_owned() } else { path };
                    Err(Error::invalid(format!("{field}: {inner}")).into())
                } else {
                    Err(Error::bad_request(format!("malformed JSON: {inner}")).into())
                }
            }
        }
    }
}

/// A query string whose errors name the parameter (422).
pub(crate) struct QueryParams<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| Error::invalid(e.body_text()).into())
    }
}

/// Every request: a request id, the `Host` check, security headers, metrics and a log line
/// (method, route, status, time; never headers, query strings or bodies).
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = ulid::Ulid::new().to_string();
    let method = request.method().clone();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let started = Instant::now();
    let mut response = if !state.security.host_allowed(host) {
        HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "this server does not answer to that Host",
        )
        .into_response()
    } else if let Some(refused) = over_limits(&request, state.body_limit) {
        refused.into_response()
    } else {
        let span = tracing::info_span!("request", request_id = %id);
        next.run(request).instrument(span).await
    };
    let elapsed = started.elapsed();
    let status = response.status();
    // The route is known only after routing: `tag_route` put it on the response.
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    state
        .metrics
        .observe(method.as_str(), &route, status.as_u16(), elapsed);
    tracing::info!(
        request_id = %id,
        method = %method,
        route = %route,
        status = status.as_u16(),
        ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    // Pages and answers hold private data: no cache keeps them unless a route says so.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The longest request target (path and query) answered.
pub(crate) const MAX_URI: usize = 8 << 10;
/// The most bytes of headers answered.
pub(crate) const MAX_HEADERS: usize = 32 << 10;

/// A request refused before it is read any further: a target or headers too long, or
/// a body announced as larger than the limit (refused without reading it).
fn over_limits(request: &Request, body_limit: usize) -> Option<HttpError> {
    if request.uri().to_string().len() > MAX_URI {
        return Some(HttpError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI} bytes"),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return Some(HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers are larger than {MAX_HEADERS} bytes"),
        ));
    }
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > body_limit as u64) {
        return Some(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {body_limit} bytes"),
        ));
    }
    None
}

/// Copies the matched route onto the response, for `guard`'s metrics and log line.
pub(crate) async fn tag_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

/// The bearer token on every API route, and CSRF protection on state-changing requests
/// that come from another origin.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let ip = client_ip(&request);
    let caller = match presented {
        Some(token) => state.security.bearer_caller(token),
        None => state.security.session_caller(request.headers()),
    };
    let by_session = presented.is_none() && caller.is_some();
    let Some(caller) = caller else {
        // Every failure waits, braked or not: an address over the limit learns
        // nothing faster.
        let over = state.security.over_limit(ip) || state.security.record_failure(ip);
        tokio::time::sleep(FAILURE_DELAY).await;
        if over {
            return too_many();
        }
        let mut response = HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in: send Authorization: Bearer <token> (`mnemon token` prints it)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    // A browser sends the session cookie by itself, so a change made with it always needs
    // the CSRF token; a bearer token is never sent by a browser on its own.
    let mut request = request;
    request.extensions_mut().insert(BySession(by_session));
    // The caller travels with the request too: MCP's handlers run apart from it.
    request.extensions_mut().insert(caller.clone());
    let caller = caller;
    let session_csrf = by_session
        .then(|| state.security.session_csrf(request.headers()))
        .flatten();
    let auth = RequestAuth {
        caller,
        csrf: session_csrf,
    };
    if changes_state(request.method()) && (by_session || cross_origin(request.headers())) {
        let csrf = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let ok = as_caller(auth.clone(), async { state.security.csrf_ok(csrf) }).await;
        if !ok {
            return HttpError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a cross-origin request that changes data needs the X-CSRF-Token header",
            )
            .into_response();
        }
    }
    as_caller(auth, next.run(request)).await
}

/// Whether a request was let in by a web UI session cookie (not the bearer token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BySession(pub(crate) bool);

/// What only the owner's bearer token may do (replace itself, make sign-in links and
/// capability tokens): a browser's session cannot turn itself into a lasting credential,
/// and a capability token cannot widen itself.
fn owners_bearer_only(
    state: &AppState,
    by_session: Option<axum::Extension<BySession>>,
) -> Result<(), HttpError> {
    if !state.caller().is_owner() {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the owner's token may do this, not a capability token",
        ));
    }
    if by_session.is_some_and(|s| s.0.0) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "bearer_only",
            "only the API token may do this, not a web UI session",
        ));
    }
    Ok(())
}

/// What only the owner may do, by token or signed in to the web UI.
fn owner_only(state: &AppState) -> Result<(), HttpError> {
    if state.caller().is_owner() {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the owner's token may manage tokens",
        ))
    }
}

/// The token in an `Authorization` value: the scheme `Bearer` in any case, then the token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

fn too_many() -> Response {
    let mut response = HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        "too many failed sign-ins from this address; wait a minute",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    response
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser says the request comes from another site: `Origin` not matching
/// `Host`, or `Sec-Fetch-Site` other than same-origin or none.
pub(crate) fn cross_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // A page under `Referrer-Policy: no-referrer` (ours) posts forms with `Origin: null`:
    // that says nothing, and `Sec-Fetch-Site` decides.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| *o != "null")
    {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        if !origin_host.eq_ignore_ascii_case(host) {
            return true;
        }
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
}

#[utoipa::path(get, path = "/api/v1/memories", tag = "memories", params(ListQuery),
    responses((status = 200, description = "A page of memories, most recently changed first", body = Page<MemoryView>), (status = 422, description = "A parameter is invalid", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn list_memories(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.list(&query)).await?))
}

#[utoipa::path(post, path = "/api/v1/memories", tag = "memories", request_body = CreateMemory,
    responses((status = 201, description = "Stored", body = Created), (status = 200, description = "With `dedupe`: a memory of the collection already says the same; its id, `created: false`", body = Created), (status = 413, description = "Body over the limit", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "A field is invalid (named in the message)", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn create_memory(
    State(state): State<AppState>,
    JsonBody(new): JsonBody<CreateMemory>,
) -> Result<impl IntoResponse, HttpError> {
    let memory = state.backend().create_async(new).await?;
    let status = if memory.created == Some(false) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(Created {
            id: memory.id,
            seq: memory.seq,
            created: memory.created,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path, description = "The memory's id")),
    responses((status = 200, description = "The memory", body = MemoryView), (status = 404, description = "No such memory", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn get_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    // A read of one memory is a snapshot read of a few microseconds that never waits for a
    // writer (the `Api::get` contract): on this worker, not a blocking-pool hop.
    Ok(Json(state.backend().get(&id)?))
}

#[utoipa::path(get, path = "/api/v1/memories/{id}/backlinks", tag = "memories", params(("id" = String, Path, description = "The memory's id")),
    responses((status = 200, description = "Memories that link to it", body = Vec<MemoryView>), (status = 404, description = "No such memory", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn backlinks(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.backlinks(&id)).await?))
}

#[utoipa::path(patch, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path, description = "The memory's id")), request_body = PatchMemory,
    responses((status = 200, description = "The changed memory", body = MemoryView), (status = 404, description = "No such memory", body = ErrorBody), (status = 422, description = "A field is invalid", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn update_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<PatchMemory>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.update(&id, patch)).await?))
}

#[utoipa::path(delete, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path, description = "The memory's id")),
    responses((status = 204, description = "Forgotten: its rows, index entries and old file pages are gone"), (status = 404, description = "No such memory", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn delete_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    blocking(move || backend.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/memories/{id}/resolve", tag = "memories", params(("id" = String, Path, description = "The memory's id")), request_body = mnemon_api::ResolveConflict,
    responses((status = 200, description = "The memory with the version kept as its text; its conflict is settled", body = MemoryView), (status = 404, description = "No such memory", body = ErrorBody), (status = 422, description = "The memory has no conflict, or `keep` is neither ours nor theirs", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn resolve_conflict(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<mnemon_api::ResolveConflict>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let theirs = request.keep == mnemon_api::Keep::Theirs;
    Ok(Json(
        blocking(move || backend.resolve_conflict(&id, theirs)).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/memories/{id}/forget-history", tag = "memories", params(("id" = String, Path, description = "The memory's id")),
    responses((status = 200, description = "The memory rewritten as one change from what it says now, under a new id; the old id and its earlier versions are deleted for good, here and on every peer, and memories that linked to it link to the new one", body = MemoryView), (status = 404, description = "No such memory", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn forget_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.forget_history(&id)).await?))
}

#[utoipa::path(post, path = "/api/v1/memories/{id}/move", tag = "memories", params(("id" = String, Path, description = "The memory's id")), request_body = mnemon_api::MoveMemory,
    responses((status = 200, description = "The memory in its new collection, written there anew under a new id (its earlier versions do not travel with it); the old id is deleted for good, and memories that linked to it link to the new one", body = MemoryView), (status = 404, description = "No such memory or collection", body = ErrorBody), (status = 403, description = "This node may only read one of the two collections", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn move_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<mnemon_api::MoveMemory>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(
        blocking(move || backend.move_memory(&id, &body.collection)).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/collections/{id}", tag = "collections", params(("id" = String, Path, description = "The collection's id or unique name")), request_body = mnemon_api::RenameCollection,
    responses((status = 200, description = "Renamed; members show the new name once the owner's signed log reaches them", body = CollectionView), (status = 404, description = "No such collection", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody), (status = 422, description = "The name is invalid, or this node is not the owner", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn rename_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<mnemon_api::RenameCollection>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(
        blocking(move || backend.rename_collection(&id, &body.name)).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/collections/{id}", tag = "collections", params(("id" = String, Path, description = "The collection's id or unique name")),
    responses((status = 200, description = "Deleted, with every memory in it (deleted for good)", body = mnemon_api::CollectionDeleted), (status = 404, description = "No such collection", body = ErrorBody), (status = 422, description = "The default collection, one shared with members (revoke them first), or not the owner", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn delete_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(
        blocking(move || backend.delete_collection(&id)).await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/names/{did}", tag = "sharing", params(("did" = String, Path, description = "The other node's DID")), request_body = mnemon_api::NameNode,
    responses((status = 200, description = "`{\"did\": …, \"name\": …}`: the node is listed by this name from now on (null: by its DID)", body = Object), (status = 422, description = "Not a DID, this node's own, or a name that is empty, too long or holds control characters", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn name_node(
    State(state): State<AppState>,
    Path(did): Path<String>,
    JsonBody(body): JsonBody<mnemon_api::NameNode>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let name = body.name.trim().to_owned();
    let named = did.clone();
    let kept = name.clone();
    blocking(move || backend.name_node(&named, &kept)).await?;
    Ok(Json(serde_json::json!({
        "did": did,
        "name": (!name.is_empty()).then_some(name),
    })))
}

#[utoipa::path(get, path = "/api/v1/collections/{id}/members", tag = "sharing", params(("id" = String, Path, description = "The collection's id or unique name")),
    responses((status = 200, description = "Who the collection is shared with", body = Vec<MemberView>), (status = 404, description = "No such collection", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn members(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.members(&id)).await?))
}

#[utoipa::path(post, path = "/api/v1/collections/{id}/members", tag = "sharing", params(("id" = String, Path, description = "The collection's id or unique name")), request_body = ShareRequest,
    responses((status = 201, description = "Shared: the signed grant is in the collection's ACL log", body = MemberView), (status = 404, description = "No such collection", body = ErrorBody), (status = 422, description = "Bad DID or role, the default collection, or not the owner", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn share_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ShareRequest>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let member = blocking(move || backend.share(&id, body)).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

#[utoipa::path(delete, path = "/api/v1/collections/{id}/members/{did}", tag = "sharing", params(("id" = String, Path, description = "The collection's id or unique name"), ("did" = String, Path, description = "The member's DID")),
    responses((status = 204, description = "Revoked: the signed revocation is in the ACL log; the member receives nothing new"), (status = 404, description = "No such collection", body = ErrorBody), (status = 422, description = "Not a member, or not the owner", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn unshare_collection(
    State(state): State<AppState>,
    Path((id, did)): Path<(String, String)>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    blocking(move || backend.unshare(&id, &did)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/collections/{id}/invites", tag = "sharing", params(("id" = String, Path, description = "The collection's id or unique name")), request_body = InviteRequest,
    responses((status = 201, description = "A single-use, expiring ticket", body = InviteView), (status = 404, description = "No such collection", body = ErrorBody), (status = 422, description = "Bad role or expiry, the default collection, or not the owner", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn invite_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<InviteRequest>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let invite = blocking(move || backend.invite(&id, body)).await?;
    Ok((StatusCode::CREATED, Json(invite)))
}

#[utoipa::path(post, path = "/api/v1/join", tag = "sharing", request_body = JoinRequest,
    responses((status = 202, description = "Kept; the owner's node is dialed and the invite redeemed when they meet", body = JoinView), (status = 422, description = "Not a ticket, damaged, forged or expired", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn join(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<JoinRequest>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let joined = blocking(move || backend.join(body)).await?;
    Ok((StatusCode::ACCEPTED, Json(joined)))
}

#[utoipa::path(post, path = "/api/v1/peers", tag = "sharing", request_body = DialRequest,
    responses((status = 202, description = "Dialing; the peer shows in the peer list once connected"), (status = 422, description = "Not a multiaddr ending in /p2p/PEER_ID", body = ErrorBody), (status = 503, description = "Federation is not running", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn dial(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DialRequest>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    blocking(move || backend.dial(body)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/api/v1/peers", tag = "sharing",
    responses((status = 200, description = "The peers federation knows, connected or not", body = Vec<PeerView>), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn peers(State(state): State<AppState>) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.peers()).await?))
}

#[utoipa::path(get, path = "/api/v1/search", tag = "search", params(SearchQuery),
    responses((status = 200, description = "Hits, best first", body = Vec<HitView>), (status = 422, description = "Empty query, bad k, unknown collection, …", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn search(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<SearchQuery>,
) -> Result<impl IntoResponse, HttpError> {
    Ok(Json(state.backend().search_async(query).await?))
}

#[utoipa::path(get, path = "/api/v1/graph", tag = "memories", params(GraphQuery),
    responses((status = 200, description = "Memories and the links between them", body = GraphView), (status = 404, description = "No such center", body = ErrorBody), (status = 422, description = "Bad depth or limit", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn graph(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<GraphQuery>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.graph(&query)).await?))
}

#[utoipa::path(post, path = "/api/v1/ask", tag = "search", request_body = AskRequest,
    responses((status = 200, description = "Server-sent events: `sources` (a JSON list of CitationView: the memories the model was given), then `delta` per piece of the answer (a JSON string), then `answer` (AnswerView) or `error` (ErrorBody)", content_type = "text/event-stream", body = String),
        (status = 422, description = "Empty or too long question, bad k, unknown collection", body = ErrorBody), (status = 502, description = "The chat endpoint is unreachable or failed", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn ask(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<AskRequest>,
) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Event, HttpError>>(256);
    let backend = state.backend();
    tokio::task::spawn_blocking(move || {
        let mut on_event = |event: AskEvent| {
            let event = match event {
                AskEvent::Sources(sources) => Event::default()
                    .event("sources")
                    .data(serde_json::to_string(&sources).unwrap_or_default()),
                AskEvent::Delta(text) => Event::default()
                    .event("delta")
                    .data(serde_json::to_string(&text).unwrap_or_default()),
            };
            let _ = tx.blocking_send(Ok(event));
        };
        let last = backend.ask(&request, &mut on_event).map(|answer| {
            Event::default()
                .event("answer")
                .data(serde_json::to_string(&answer).unwrap_or_default())
        });
        let _ = tx.blocking_send(last.map_err(HttpError::from));
    });
    // What comes first decides: an error before anything streamed is a plain error answer
    // with its status; after that, errors are `error` events.
    let first = match rx.recv().await {
        None => return HttpError::from(Error::internal("the answer stopped")).into_response(),
        Some(Err(e)) => return e.into_response(),
        Some(Ok(first)) => first,
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
        Ok::<_, Infallible>(match item {
            Ok(event) => event,
            Err(e) => Event::default().event("error").data(
                serde_json::json!({"error": {"code": e.code, "message": e.message}}).to_string(),
            ),
        })
    });
    let stream = tokio_stream::once(Ok::<_, Infallible>(first)).chain(rest);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/collections", tag = "collections",
    responses((status = 200, description = "Every collection", body = Vec<CollectionView>), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn collections(
    State(state): State<AppState>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.collections()).await?))
}

#[utoipa::path(post, path = "/api/v1/collections", tag = "collections", request_body = CreateCollection,
    responses((status = 201, description = "Made", body = CollectionView), (status = 409, description = "The name is taken", body = ErrorBody), (status = 422, description = "A field is invalid", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn create_collection(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateCollection>,
) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    let collection = blocking(move || backend.create_collection(&body.name)).await?;
    Ok((StatusCode::CREATED, Json(collection)))
}

#[utoipa::path(post, path = "/api/v1/backups", tag = "node", request_body = BackupRequest,
    responses((status = 200, description = "A backup taken now, sealed with the passphrase (a consistent snapshot of the store, the key file and config.toml; not the indexes). `X-Mnemon-Backup` holds a BackupView as JSON.", content_type = "application/octet-stream"), (status = 422, description = "No passphrase (none given, none configured) or a short one", body = ErrorBody), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn backup(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BackupRequest>,
) -> Result<Response, HttpError> {
    let backend = state.backend();
    let file = blocking(move || backend.backup(body)).await?;
    backup_response(file)
}

/// A backup as an answer: its bytes streamed from the blocking pool, a chunk at a time as
/// the client takes them, with `X-Mnemon-Backup` saying what it holds (the API's route and
/// the UI's download).
pub(crate) fn backup_response(file: mnemon_api::BackupFile) -> Result<Response, HttpError> {
    let view = serde_json::to_string(&file.view)
        .map_err(|e| HttpError::from(Error::internal(e.to_string())))?;
    // The file is read on the blocking pool, a chunk at a time, as the client takes it.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let mut reader = file.body;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let header = |v: &str| {
        HeaderValue::from_str(v).map_err(|e| HttpError::from(Error::internal(e.to_string())))
    };
    let mut response =
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.view.bytes));
    headers.insert(
        header::CONTENT_DISPOSITION,
        header(&format!("attachment; filename=\"{}\"", file.view.file_name))?,
    );
    headers.insert(HeaderName::from_static("x-mnemon-backup"), header(&view)?);
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/status", tag = "node",
    responses((status = 200, description = "Identity, counts and index progress per model", body = Object), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<impl IntoResponse, HttpError> {
    let backend = state.backend();
    Ok(Json(blocking(move || backend.status()).await?))
}

#[utoipa::path(post, path = "/api/v1/token", tag = "node",
    responses((status = 200, description = "`{\"token\": …}`: a new bearer token, in force at once; the old one and every web UI session end (`mnemon token --rotate` calls this while `mnemon serve` runs)", body = Object), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn rotate_token(
    State(state): State<AppState>,
    by_session: Option<axum::Extension<BySession>>,
) -> Result<Response, HttpError> {
    owners_bearer_only(&state, by_session)?;
    let token = state
        .security
        .rotate_token()
        .map_err(|e| HttpError::from(Error::internal(format!("keeping the new token: {e}"))))?;
    tracing::info!("the API token was replaced; every session ended");
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}

#[utoipa::path(post, path = "/api/v1/signin-links", tag = "node",
    responses((status = 201, description = "`{\"url\": …, \"expires_in_secs\": 600}`: a link that signs a browser in to the web UI, once, within its lifetime", body = Object), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn sign_in_link(
    State(state): State<AppState>,
    by_session: Option<axum::Extension<BySession>>,
) -> Result<impl IntoResponse, HttpError> {
    owners_bearer_only(&state, by_session)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "url": state.security.new_sign_in_link(),
            "expires_in_secs": crate::security::SIGN_IN_LINK_LIFETIME.as_secs(),
        })),
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "node", request_body = NewToken,
    responses((status = 201, description = "The new capability token: its secret (shown this once) and its scope (`mnemon token new` calls this while `mnemon serve` runs)", body = IssuedToken), (status = 403, description = "Not the owner's bearer token", body = ErrorBody), (status = 404, description = "An unknown collection", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    by_session: Option<axum::Extension<BySession>>,
    JsonBody(request): JsonBody<NewToken>,
) -> Result<Response, HttpError> {
    owners_bearer_only(&state, by_session)?;
    let (backend, tokens) = (state.backend(), state.security.tokens().clone());
    let issued = blocking(move || crate::tokens::issue(&*backend, &tokens, &request)).await?;
    tracing::info!(name = %issued.view.name, scope = %issued.view.scope.describe(), "a capability token was made");
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "node",
    responses((status = 200, description = "The capability tokens (never their secrets)", body = [TokenView]), (status = 403, description = "Not the owner", body = ErrorBody)))]
pub(crate) async fn list_tokens(State(state): State<AppState>) -> Result<Response, HttpError> {
    owner_only(&state)?;
    let (backend, tokens) = (state.backend(), state.security.tokens().clone());
    let views = blocking(move || crate::tokens::list(&*backend, &tokens)).await?;
    Ok(Json(views).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "node",
    params(("name" = String, Path, description = "The token's name")),
    responses((status = 204, description = "Revoked: it stops working at once, on every stream and session"), (status = 403, description = "Not the owner", body = ErrorBody), (status = 404, description = "No token by that name", body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    owner_only(&state)?;
    state.security.tokens().revoke(&name)?;
    tracing::info!(name = %name, "a capability token was revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// For a signed-in UI: the CSRF token to send with changes.
#[utoipa::path(get, path = "/api/v1/session", tag = "node",
    responses((status = 200, description = "`{\"csrf_token\": …}`: what a browser client sends as X-CSRF-Token", body = Object), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn session(State(state): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({ "csrf_token": state.security.csrf() }))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "memories",
    responses((status = 200, description = "Server-sent events: `created`, `updated`, `deleted`, each with an EventView as data", content_type = "text/event-stream", body = EventView), (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub(crate) async fn events(State(state): State<AppState>) -> Result<Response, HttpError> {
    // Each stream holds a connection for as long as it lasts: a bounded number, so
    // streams cannot crowd out everything else.
    let Ok(slot) = state.streams.clone().try_acquire_owned() else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{MAX_EVENT_STREAMS} event streams are open already"),
        ));
    };
    // A stream opened before the token was replaced gets nothing more.
    let (security, opened) = (state.security.clone(), state.security.rotations());
    let events = state.backend().events();
    let stream = futures::stream::unfold(events, |mut events| async move {
        loop {
            match events.recv().await {
                Ok(event) => return Some((event, events)),
                // A lagging client misses events; it sees the gap in `seq` and reloads.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .take_while(move |_| security.rotations() == opened)
    .filter_map(move |event| {
        let _held = &slot;
        let data = serde_json::to_string(&event).ok()?;
        Some(Ok::<_, Infallible>(
            Event::default()
                .event(event.kind.as_str())
                .id(event.seq.to_string())
                .data(data),
        ))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.ready() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ProofQuery {
    nonce: String,
}

/// `GET /health/proof?nonce=`: proves, without anyone sending it, that this server knows
/// the token ([`crate::serve_proof`]). The CLI asks before it trusts `serve.json`.
pub(crate) async fn proof(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ProofQuery>,
) -> Result<Json<serde_json::Value>, HttpError> {
    if !crate::security::nonce_ok(&query.nonce) {
        return Err(Error::invalid("nonce: 32 to 128 hexadecimal digits").into());
    }
    Ok(Json(
        serde_json::json!({ "proof": state.security.proof(&query.nonce) }),
    ))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let backend = state.backend();
    let gauges = match blocking(move || backend.gauges()).await {
        Ok(gauges) => gauges,
        Err(e) => return HttpError::from(e).into_response(),
    };
    let text = state.metrics.render(&gauges);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
