//! The settings page: the search model, the chat model, the owner's token and the
//! capability tokens, backups and export. The owner's.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;

use super::{CsrfForm, Nav, UiError, UiResult, csrf_ok, encode_component, layout, short_time};
use crate::state::{AppState, blocking};
use mnemon_api::Error;

/// Settings: the search model, the chat model, the owner's token and the capability
/// tokens, backups and export. The owner's.
pub(super) async fn settings_page(State(state): State<AppState>) -> UiResult {
    let backend = state.backend();
    let tokens = state.security.tokens().clone();
    let (status, tokens) = blocking(move || {
        let status = backend.status()?;
        let tokens = crate::tokens::list(&*backend, &tokens)?;
        Ok((status, tokens))
    })
    .await?;
    let csrf = state.security.csrf();
    let model = &status["index"]["models"][0];
    let meaning = model["meaning"].as_bool().unwrap_or(false);
    let content = html! {
        h1 { "Settings" }
        section aria-labelledby="model-h" {
            h2 #model-h { "Search" }
            p { "Model: " code { (model["model"].as_str().unwrap_or("?")) }
                @if meaning { " (finds things by meaning and by words)" } @else { " (built in: finds words and spellings, not meaning)" } }
            @let indexed = model["indexed"].as_u64().unwrap_or(0);
            @let pending = model["pending"].as_u64().unwrap_or(0);
            @if pending > 0 {
                p { "Embedding: " (indexed) " done, " (pending) " to go" }
                progress max=((indexed + pending).max(1)) value=(indexed) {}
            }
            @if !meaning {
                p .meta { "To search by meaning, install a model: " code { "mnemon model install PATH" } " (see the README); memories are embedded again in the background." }
            }
        }
        section aria-labelledby="chat-h" {
            h2 #chat-h { "Chat" }
            @if let Some(model) = status["chat"]["model"].as_str() {
                p { "Questions are answered by " code { (model) } " (" a href="/chat" { "ask" } ")." }
            } @else {
                p .meta { "No chat model: add " code { "[chat]" } " to " code { "config.toml" } " (an OpenAI-compatible endpoint, such as a local Ollama) and restart." }
            }
        }
        section aria-labelledby="token-h" {
            h2 #token-h { "Access" }
            p { "The owner's token opens everything: " code { "mnemon token" } " prints it." }
            form #rotate-form method="post" action="/settings/rotate" {
                input type="hidden" name="csrf" value=(csrf);
                p .meta { "Replacing it signs every browser out (this one too) and stops the old token at once; " code { "mnemon token" } " then prints the new one." }
                button .danger type="submit" { "Replace the token and sign everyone out" }
            }
            h3 { "Capability tokens" }
            @if tokens.is_empty() {
                p .empty { "None. Give an agent less than everything: " code { "mnemon token new --name NAME --collection C --read-only" } }
            } @else {
                table #tokens {
                    thead { tr { th { "Name" } th { "May" } th { "Made" } th { "Last used" } th { "Expires" } th {} } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { (t.name) }
                                td { @if t.scope.write { "read and write" } @else { "read" } " · "
                                     @if t.collection_names.is_empty() { "every collection" } @else { (t.collection_names.join(", ")) } }
                                td { time datetime=(t.created_at) { (short_time(&t.created_at)) } }
                                td { @if let Some(at) = &t.last_used_at { time datetime=(at) { (short_time(at)) } } @else { "never" } }
                                td { @if let Some(at) = &t.expires_at { time datetime=(at) { (short_time(at)) } @if t.expired { " (expired)" } } @else { "never" } }
                                td {
                                    form .inline method="post" action={ "/settings/tokens/" (encode_component(&t.name)) "/revoke" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button .link type="submit" aria-label={ "Revoke " (t.name) } { "revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="keep-h" {
            h2 #keep-h { "Backups and export" }
            p { "Backups, their schedule and a download are on the " a href="/status#backups" { "status page" } "; " code { "mnemon export DIR" } " writes every memory as Markdown." }
        }
    };
    Ok(layout(&state, Nav::Settings, "Settings", "settings", content).into_response())
}

/// Replaces the owner's token from the settings page: every session ends, this one too.
pub(super) async fn rotate_token(
    State(state): State<AppState>,
    Form(form): Form<CsrfForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    if !state.caller().is_owner() {
        return Err(UiError::from(Error::forbidden(
            "only the owner may replace the owner's token",
        )));
    }
    state
        .security
        .rotate_token()
        .map_err(|e| Error::internal(format!("keeping the new token: {e}")))?;
    tracing::info!("the API token was replaced from the web UI; every session ended");
    Ok(Redirect::to("/signin?rotated=1").into_response())
}

/// Revokes a capability token from the settings page.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    if !state.caller().is_owner() {
        return Err(UiError::from(Error::forbidden(
            "only the owner may revoke tokens",
        )));
    }
    state.security.tokens().revoke(&name)?;
    tracing::info!(name = %name, "a capability token was revoked from the web UI");
    Ok(Redirect::to("/settings#token-h").into_response())
}
