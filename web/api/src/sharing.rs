//! Collections, who they are shared with, invites, and the peers they sync with.

use mnemon_crdt::Collection;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct CollectionView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The DID of its owner.
    pub owner: String,
    /// When it was made.
    pub created_at: String,
    /// Whether it is the node's private default collection.
    pub default: bool,
    /// How many memories it holds.
    pub memories: u64,
    /// What this node may do in it: `owner`, `write`, `read`, or `none` when it is not (or
    /// no longer: its owner revoked it) a member.
    pub access: String,
}

impl From<&Collection> for CollectionView {
    fn from(c: &Collection) -> CollectionView {
        CollectionView {
            id: c.id.to_string(),
            name: c.name.clone(),
            owner: c.owner.to_string(),
            created_at: c.created_at.to_string(),
            default: c.is_default,
            memories: c.memories,
            access: match c.access {
                Some(mnemon_crdt::Access::Owner) => "owner".to_owned(),
                Some(mnemon_crdt::Access::Member(role)) => role.to_string(),
                None => "none".to_owned(),
            },
        }
    }
}

/// The collection `wanted` names among `collections`: the one with that id, else the one
/// with that name; none is unknown, several are ambiguous (each in the node's own words).
pub fn find_collection<'a>(
    collections: &'a [CollectionView],
    wanted: &str,
) -> Result<&'a CollectionView, crate::Error> {
    if let Some(c) = collections.iter().find(|c| c.id == wanted) {
        return Ok(c);
    }
    let named: Vec<&CollectionView> = collections.iter().filter(|c| c.name == wanted).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(crate::Error::not_found(format!(
            "no collection named or with id {wanted:?}"
        ))),
        many => Err(crate::Error::conflict(format!(
            "several collections are named {wanted:?}; use one of their ids: {}",
            many.iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `POST /api/v1/collections`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// Its name.
    pub name: String,
}

/// `PATCH /api/v1/collections/{id}`: rename a collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameCollection {
    /// The new name.
    pub name: String,
}

/// `PUT /api/v1/names/{did}`: name another node (an empty name forgets it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameNode {
    /// The name, shown instead of its DID (1 to 64 characters; empty: none).
    pub name: String,
}

/// `POST /api/v1/memories/{id}/move`: move a memory to another collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveMemory {
    /// The collection to move it to (id or unique name).
    pub collection: String,
}

/// What deleting a collection did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq, Eq)]
pub struct CollectionDeleted {
    /// The collection's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many memories were deleted with it.
    pub memories: u64,
}

/// A member of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq, Eq)]
pub struct MemberView {
    /// The member's DID.
    pub did: String,
    /// The name this node's owner gave the member's node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the member may do.
    pub role: Role,
    /// How this collection stands with the member's node, if this node has met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
    /// Whether the member is this node itself (the owner).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub this_node: bool,
    /// After a share: what the owner should check (a DID this node has never met may
    /// hold a typo, and then the collection is shared with nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// How a shared collection stands with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct SyncView {
    /// The collection's id.
    pub collection: String,
    /// The collection's name, if this node holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_name: Option<String>,
    /// Where it stands.
    pub state: SyncState,
    /// Why: the refusal, how many memories differ, or why the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The last thing from the peer refused about this collection in this session (it
    /// stays after the state is back to `in_sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<String>,
}

/// `POST /api/v1/collections/{id}/members`: share the collection with a DID.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The DID to share with (`did:key:z6Mk…`).
    pub did: String,
    /// `read` or `write`.
    pub role: Role,
}

/// `POST /api/v1/collections/{id}/invites`: make a single-use invite ticket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// `read` (default) or `write`.
    #[serde(default)]
    pub role: Option<Role>,
    /// Seconds until the ticket expires (default 7 days, at most 365 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A new invite.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct InviteView {
    /// The ticket to give the invitee (`mnemon1…`): whoever holds it can join once.
    pub ticket: String,
    /// The collection's id.
    pub collection: String,
    /// The role it grants.
    pub role: Role,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// How many addresses it carries (0: the node is not serving; the invitee must then
    /// be given an address, or meet this node on the LAN).
    pub addresses: usize,
}

/// `POST /api/v1/join`: redeem a ticket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The ticket (`mnemon1…`).
    pub ticket: String,
}

/// `POST /api/v1/peers`: dial a peer now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DialRequest {
    /// Its address, ending in `/p2p/PEER_ID` (what `mnemon serve` prints as `p2p`).
    pub address: String,
}

/// A join in progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct JoinView {
    /// The collection's id.
    pub collection: String,
    /// The owner's DID.
    pub owner: String,
    /// The role the ticket grants.
    pub role: Role,
    /// How many of the ticket's addresses are being dialed now (0 when not serving: the
    /// next `mnemon serve` dials them).
    pub dialing: usize,
}

/// A peer node, as federation knows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct PeerView {
    /// Its DID.
    pub did: String,
    /// The name this node's owner gave it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Addresses it was seen at.
    pub addresses: Vec<String>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Collections synced with it in the current session.
    pub collections: Vec<String>,
    /// How each collection shared with it stands.
    #[serde(default)]
    pub sync: Vec<SyncView>,
    /// When something last arrived from it (Unix ms).
    pub last_sync: Option<u64>,
    /// The last refusal or the reason the last session ended.
    pub last_error: Option<String>,
}

names! {
    /// What a member of a collection may do.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, ToSchema, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Role as "role" {
        /// Receive the collection's memories (the default for invites).
        #[default]
        Read = "read",
        /// Receive them and change them (add, edit, delete).
        Write = "write",
    }
}

impl From<mnemon_crdt::Role> for Role {
    fn from(role: mnemon_crdt::Role) -> Role {
        match role {
            mnemon_crdt::Role::Read => Role::Read,
            mnemon_crdt::Role::Write => Role::Write,
        }
    }
}

impl From<Role> for mnemon_crdt::Role {
    fn from(role: Role) -> mnemon_crdt::Role {
        match role {
            Role::Read => mnemon_crdt::Role::Read,
            Role::Write => mnemon_crdt::Role::Write,
        }
    }
}

/// How a shared collection stands with one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Both sides hold the same memories.
    InSync,
    /// Differences are being exchanged, or not compared yet.
    Behind,
    /// Something from the peer was refused.
    Error,
    /// No session with the peer now.
    Offline,
}

impl SyncState {
    /// Its name in answers (`in_sync`, `behind`, `error`, `offline`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::InSync => "in_sync",
            SyncState::Behind => "behind",
            SyncState::Error => "error",
            SyncState::Offline => "offline",
        }
    }

    /// Its name for people (`in sync`, …).
    pub fn label(self) -> &'static str {
        match self {
            SyncState::InSync => "in sync",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
