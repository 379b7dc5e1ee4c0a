//! Collections and sharing: the collections page (make, rename, delete) and each
//! collection's sharing page (members with their role and sync state, invites, sharing
//! with a DID, revoking; the peers it syncs with). Names everywhere, never id fragments.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    Nav, Refused, UiError, UiResult, csrf_ok, form_error, layout, refused_page, short_time,
};
use crate::state::{AppState, blocking};
use mnemon_api::{
    CollectionView, Error, InviteRequest, InviteView, MemberView, PeerView, Role, ShareRequest,
};

pub(super) async fn collections_page(State(state): State<AppState>) -> UiResult {
    collections_view(&state, None, None).await
}

/// The collections page; `refused` a new collection the node refused, `renaming` a rename
/// it refused (of the collection with that id), each shown beside its form as typed.
async fn collections_view(
    state: &AppState,
    refused: Option<Refused<CollectionForm>>,
    renaming: Option<(String, Refused<CollectionForm>)>,
) -> UiResult {
    let backend = state.backend();
    let collections = blocking(move || backend.collections()).await?;
    let owner = state.caller().is_owner();
    let csrf = state.security.csrf().to_owned();
    let content = html! {
        h1 { "Collections" }
        ul .collections {
            @for c in &collections {
                li .collection data-id=(c.id) {
                    a href={ "/?collection=" (c.id) } { (c.name) }
                    " · " (memories(c.memories))
                    " · " a .sharing href={ "/collections/" (c.id) } { @if c.default { "about" } @else { "sharing" } }
                    @if c.default { " · private (never shared)" }
                    @match c.access.as_str() {
                        "owner" => {}
                        "none" => { " · " span .revoked { "no access: its owner removed this node" } }
                        role => { " · shared with you (" (role) ")" }
                    }
                    @if owner && c.access == "owner" {
                        @let renamed = renaming.as_ref().filter(|(id, _)| *id == c.id).map(|(_, r)| r);
                        details .manage open[renamed.is_some()] {
                            summary { @if c.default { "Rename" } @else { "Rename or delete" } }
                            @if let Some(r) = renamed {
                                p .error .form-error .rename-error role="alert" { (r.error) }
                            }
                            form .row .rename method="post" action={ "/collections/" (c.id) "/rename" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input name="name" required value=(renamed.map_or(c.name.as_str(), |r| r.form.name.as_str())) aria-label={ "New name for " (c.name) } autocomplete="off";
                                button type="submit" { "Rename" }
                            }
                            @if !c.default {
                                form .delete .danger method="post" action={ "/collections/" (c.id) "/delete" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    p .hint {
                                        @if c.memories == 0 { "Deleting removes this empty collection." }
                                        @else { "Deleting removes this collection and its " (memories(c.memories)) ", for good. Move any you want to keep first (from their Edit panel)." }
                                        " A collection shared with others is deleted once its members are revoked."
                                    }
                                    label { input type="checkbox" name="confirm" value="yes" required; " Yes, delete " (c.name) @if c.memories > 0 { " and its " (memories(c.memories)) } }
                                    button type="submit" { "Delete collection" }
                                }
                            }
                        }
                    }
                }
            }
        }
        // Making collections is the owner's (a capability token cannot).
        @if state.caller().is_owner() {
            @if let Some(r) = &refused {
                p #new-collection-error .error .form-error role="alert" { (r.error) }
            }
            form #new-collection .row method="post" action="/collections" aria-describedby=[refused.as_ref().map(|_| "new-collection-error")] {
                input type="hidden" name="csrf" value=(state.security.csrf());
                input name="name" required placeholder="New collection" aria-label="Collection name" autocomplete="off" value=[refused.as_ref().map(|r| r.form.name.as_str())];
                button type="submit" { "Create" }
            }
        }
    };
    Ok(layout(
        state,
        Nav::Collections,
        "Collections",
        "collections",
        content,
    )
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CollectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub(super) async fn create_collection(
    State(state): State<AppState>,
    Form(form): Form<CollectionForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let name = form.name.trim().to_owned();
    match blocking(move || backend.create_collection(&name)).await {
        Ok(_) => Ok(Redirect::to("/collections").into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form,
            };
            Ok(refused_page(
                &e,
                collections_view(&state, Some(refused), None).await?,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn rename_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<CollectionForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let (collection, name) = (id.clone(), form.name.trim().to_owned());
    match blocking(move || backend.rename_collection(&collection, &name)).await {
        Ok(_) => Ok(Redirect::to("/collections").into_response()),
        Err(e) if form_error(&e) => {
            let refused = Refused {
                error: e.message.clone(),
                form,
            };
            let page = collections_view(&state, None, Some((id, refused))).await?;
            Ok(refused_page(&e, page))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteCollectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn delete_collection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<DeleteCollectionForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    if form.confirm != "yes" {
        return Err(UiError::from(Error::invalid(
            "tick the box to confirm: deleting a collection deletes its memories for good",
        )));
    }
    let backend = state.backend();
    blocking(move || backend.delete_collection(&id)).await?;
    Ok(Redirect::to("/collections").into_response())
}

/// "1 memory", "3 memories".
fn memories(n: u64) -> String {
    if n == 1 {
        "1 memory".to_owned()
    } else {
        format!("{n} memories")
    }
}

/// A node as people know it: the name its owner gave it, else its DID shortened (the
/// whole DID on hover).
pub(super) fn node_label(did: &str, name: Option<&str>) -> Markup {
    html! {
        @match name {
            Some(name) => { span .node-name title=(did) { (name) } }
            None => { code title=(did) { (short_did(did)) } }
        }
    }
}

/// `did:key:z6Mk…` shortened to its first and last characters.
pub(super) fn short_did(did: &str) -> String {
    let key = did.strip_prefix("did:key:").unwrap_or(did);
    if key.len() <= 16 {
        return did.to_owned();
    }
    format!("{}…{}", &key[..8], &key[key.len() - 6..])
}

/// What a sharing page shows besides the collection: a fresh invite, or a warning about
/// a share just made.
#[derive(Default)]
struct Fresh {
    invite: Option<InviteView>,
    warning: Option<String>,
    /// A share the node refused, with what was typed.
    refused: Option<Refused<MemberForm>>,
}

/// `/collections/{id}`: who a collection is shared with and how each stands; for its
/// owner, invites, sharing with a DID, changing roles and revoking.
pub(super) async fn sharing_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> UiResult {
    sharing(&state, id, Fresh::default()).await
}

async fn sharing(state: &AppState, id: String, fresh: Fresh) -> UiResult {
    let backend = state.backend();
    let owner_caller = state.caller().is_owner();
    let (collection, members, peers) = blocking(move || {
        let collection = mnemon_api::find_collection(&backend.collections()?, &id)?.clone();
        let owns = collection.access == "owner" && !collection.default;
        let members = if owns && owner_caller {
            backend.members(&collection.id)?
        } else {
            Vec::new()
        };
        // Peers are the owner's to see.
        let peers = if owner_caller {
            backend.peers()?
        } else {
            Vec::new()
        };
        Ok((collection, members, peers))
    })
    .await?;
    let csrf = state.security.csrf().to_owned();
    let owns = collection.access == "owner" && !collection.default && owner_caller;
    let syncing: Vec<(&PeerView, &mnemon_api::SyncView)> = peers
        .iter()
        .flat_map(|p| {
            p.sync
                .iter()
                .filter(|s| s.collection == collection.id)
                .map(move |s| (p, s))
        })
        .collect();
    let content = html! {
        p .meta { a href="/collections" { "← Collections" } }
        h1 #collection-name { (collection.name) }
        p .meta {
            (memories(collection.memories))
            " · " a href={ "/?collection=" (collection.id) } { "its memories" }
            " · owner: " @if collection.access == "owner" { "this node" } @else { code title=(collection.owner) { (short_did(&collection.owner)) } }
        }
        @if let Some(warning) = &fresh.warning {
            div .notice #share-warning role="status" { (warning) }
        }
        @if collection.default {
            p { "The default collection is private: it is never shared. To share, make a collection and move memories into it." }
        } @else if owns {
            h2 { "Members" }
            (members_table(&collection, &members, &csrf))
            h2 #invite-h { "Invite" }
            @if let Some(invite) = &fresh.invite {
                div #ticket .ticket role="status" {
                    p { "A ticket for one person, as " strong { (invite.role) } ", valid until " (expiry(invite.expires_at)) ":" }
                    code #ticket-text { (invite.ticket) }
                    button #copy-ticket type="button" data-copy="ticket-text" { "Copy" }
                    p .hint {
                        "On their node: " code { "mnemon join " (invite.ticket.chars().take(12).collect::<String>()) "…" } ". It works once."
                        @if invite.addresses == 0 { " This node is not reachable by the ticket's addresses now (federation is off): they can meet it on the LAN, or be given an address." }
                    }
                }
            }
            form #invite-form .row method="post" action={ "/collections/" (collection.id) "/invite" } aria-labelledby="invite-h" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Role " (role_select("role", Role::Read)) }
                label { "Valid for "
                    select name="days" {
                        option value="1" { "1 day" }
                        option value="7" selected { "7 days" }
                        option value="30" { "30 days" }
                    }
                }
                button type="submit" { "Make an invite ticket" }
            }
            h2 #share-h { "Share with a node you know" }
            @if let Some(r) = &fresh.refused {
                p #share-error .error .form-error role="alert" { (r.error) }
            }
            form #share-form .row method="post" action={ "/collections/" (collection.id) "/share" } aria-labelledby="share-h" {
                input type="hidden" name="csrf" value=(csrf);
                input name="did" required placeholder="did:key:z6Mk…" aria-label="The node's DID" autocomplete="off" spellcheck="false" value=[fresh.refused.as_ref().map(|r| r.form.did.as_str())];
                (role_select("role", fresh.refused.as_ref().and_then(|r| parse_role(&r.form.role).ok()).unwrap_or(Role::Read)))
                button type="submit" { "Share" }
            }
        } @else if collection.access == "owner" {
            p { "Sharing is the node owner's to manage." }
        } @else {
            p { "Shared with this node by its owner, as " strong { (collection.access) } "." }
        }
        @if !owns && owner_caller {
            h2 { "Syncing with" }
            @if syncing.is_empty() {
                p .empty { "No peer syncs it now." }
            } @else {
                ul .sync-peers {
                    @for (peer, sync) in &syncing {
                        li {
                            (node_label(&peer.did, peer.name.as_deref()))
                            " · " @if peer.connected { "connected" } @else { "offline" }
                            " · " span class={ "sync " (sync.state) } { (sync.state.label()) }
                            @if let Some(detail) = &sync.detail { " — " (detail) }
                            " · last sync " (last_sync(peer.last_sync))
                        }
                    }
                }
            }
        }
    };
    Ok(layout(
        state,
        Nav::Collections,
        &collection.name,
        "sharing",
        content,
    )
    .into_response())
}

fn members_table(collection: &CollectionView, members: &[MemberView], csrf: &str) -> Markup {
    let others: Vec<&MemberView> = members.iter().filter(|m| !m.this_node).collect();
    html! {
        @if others.is_empty() {
            p .empty { "Shared with nobody yet. Invite someone with a ticket, or share with a node's DID." }
        } @else {
            table #members {
                thead { tr { th { "Node" } th { "Role" } th { "Sync" } th { span .visually-hidden { "Revoke" } } } }
                tbody {
                    @for m in &others {
                        tr data-did=(m.did) {
                            td {
                                @match &m.name {
                                    Some(name) => { strong .node-name title=(m.did) { (name) } }
                                    None => { code title=(m.did) { (short_did(&m.did)) } }
                                }
                                details .name-node {
                                    summary { @if m.name.is_some() { "Rename" } @else { "Name" } }
                                    form .inline .name method="post" action={ "/collections/" (collection.id) "/name" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="did" value=(m.did);
                                        input name="name" value=[m.name.as_deref()] placeholder="e.g. Grandma's laptop" aria-label={ "Name for " (short_did(&m.did)) } autocomplete="off" size="16";
                                        button .link type="submit" { "Save" }
                                    }
                                }
                            }
                            td {
                                form .inline .role method="post" action={ "/collections/" (collection.id) "/share" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="did" value=(m.did);
                                    (role_select("role", m.role))
                                    button .link type="submit" { "Change" }
                                }
                            }
                            td {
                                @match &m.sync {
                                    Some(sync) => {
                                        span class={ "sync " (sync.state) } { (sync.state.label()) }
                                        @if let Some(detail) = &sync.detail { " — " (detail) }
                                    }
                                    None => { span .meta { "not met yet" } }
                                }
                            }
                            td {
                                form .inline .revoke method="post" action={ "/collections/" (collection.id) "/revoke" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="did" value=(m.did);
                                    button .link type="submit" aria-label={ "Revoke " (short_did(&m.did)) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn role_select(name: &str, selected: Role) -> Markup {
    html! {
        select name=(name) aria-label="Role" {
            @for (role, label) in [(Role::Read, "read"), (Role::Write, "write")] {
                option value=(label) selected[role == selected] { (label) }
            }
        }
    }
}

fn expiry(ms: i64) -> Markup {
    let at = mnemon_crdt::Timestamp::from_millis(ms).to_string();
    html! { time datetime=(at) { (short_time(&at)) } }
}

fn last_sync(ms: Option<u64>) -> Markup {
    match ms {
        Some(ms) => expiry(ms as i64),
        None => html! { "never" },
    }
}

fn parse_role(role: &str) -> Result<Role, UiError> {
    match role {
        "read" => Ok(Role::Read),
        "write" => Ok(Role::Write),
        other => Err(UiError::from(Error::invalid(format!(
            "role {other:?}: choose read or write"
        )))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    days: u64,
}

pub(super) async fn invite(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<InviteForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let role = parse_role(&form.role)?;
    let backend = state.backend();
    let collection = id.clone();
    let request = InviteRequest {
        role: Some(role),
        expires_in_secs: Some(form.days.clamp(1, 365) * 24 * 3600),
    };
    let invite = blocking(move || backend.invite(&collection, request)).await?;
    sharing(
        &state,
        id,
        Fresh {
            invite: Some(invite),
            ..Fresh::default()
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    did: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    name: String,
}

/// Shares with a DID, or changes a member's role (a new grant replaces the old).
pub(super) async fn share(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let role = parse_role(&form.role)?;
    let backend = state.backend();
    let collection = id.clone();
    let request = ShareRequest {
        did: form.did.trim().to_owned(),
        role,
    };
    let member = match blocking(move || backend.share(&collection, request)).await {
        Ok(member) => member,
        Err(e) if form_error(&e) => {
            let fresh = Fresh {
                refused: Some(Refused {
                    error: e.message.clone(),
                    form,
                }),
                ..Fresh::default()
            };
            return Ok(refused_page(&e, sharing(&state, id, fresh).await?));
        }
        Err(e) => return Err(e.into()),
    };
    match member.warning {
        Some(warning) => {
            let fresh = Fresh {
                warning: Some(warning),
                ..Fresh::default()
            };
            sharing(&state, id, fresh).await
        }
        None => Ok(Redirect::to(&format!("/collections/{id}")).into_response()),
    }
}

/// Names a member's node (an empty name forgets it).
pub(super) async fn name(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let MemberForm { did, name, .. } = form;
    blocking(move || backend.name_node(did.trim(), &name)).await?;
    Ok(Redirect::to(&format!("/collections/{id}")).into_response())
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> UiResult {
    csrf_ok(&state, &form.csrf)?;
    let backend = state.backend();
    let collection = id.clone();
    blocking(move || backend.unshare(&collection, form.did.trim())).await?;
    Ok(Redirect::to(&format!("/collections/{id}")).into_response())
}
