//! Capability tokens: who is asking, and what a token's scope lets it see and do.
//!
//! Every interface turns its credential into a [`Caller`] at its edge, then asks
//! [`Caller::api`] for the node it may use: the owner gets the node itself, a token gets a
//! [`Scoped`] view of it. The rules live here once, so the HTTP API, the web UI, MCP and
//! the CLI cannot disagree:
//!
//! - A collection outside the scope does not exist for the token: reading it, or a memory
//!   in it, answers exactly as an unknown id would (not found, never forbidden), and it is
//!   absent from lists, search, the graph, links, events and completions.
//! - A read-only token that tries to change a memory it can see is refused by name
//!   (forbidden, naming the scope).
//! - Sharing, peers, backups, the node's status and its metrics are the owner's.
//! - A token stops working the moment it is revoked or expires: [`Grant::live`] is asked
//!   before every call, so a stream or an MCP session opened before ends too.

use std::collections::HashSet;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AnswerView, Api, AskEvent, AskRequest, BackupFile, BackupRequest, CollectionDeleted,
    CollectionView, CreateMemory, DialRequest, Error, ErrorKind, Events, Gauge, GraphQuery,
    GraphView, HitView, InviteRequest, InviteView, JoinRequest, JoinView, ListQuery, MemberView,
    MemoryView, Page, PatchMemory, PeerView, Pending, SearchQuery, ShareRequest,
};

/// What a capability token may see and do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Scope {
    /// The ids of the collections it sees; none named: every collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
    /// Whether it may write (create, edit and delete memories in what it sees).
    pub write: bool,
}

impl Scope {
    /// Whether the collection `id` is in the scope.
    pub fn sees(&self, id: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|c| c == id))
    }

    /// `read-only` or `read-write`, and the collections: how errors and lists name it.
    pub fn describe(&self) -> String {
        let rights = if self.write {
            "read-write"
        } else {
            "read-only"
        };
        match &self.collections {
            None => format!("{rights}, every collection"),
            Some(ids) => format!("{rights}, {} collection(s)", ids.len()),
        }
    }
}

/// A capability token as a request presents it: its name, its scope, and whether it
/// still stands.
pub struct Grant {
    /// What tells this token apart from every other, even one made again under the same
    /// name: what a web UI session signed in with it remembers.
    pub id: String,
    /// The token's name (`claude-desktop`).
    pub name: String,
    /// What it may see and do.
    pub scope: Scope,
    /// Whether the token still stands (not revoked, not expired), asked before every call.
    pub live: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The node's owner (the full token, or a UI session signed in with it).
    Owner,
    /// A capability token.
    Token(Arc<Grant>),
}

impl Caller {
    /// The node as this caller may use it.
    pub fn api(&self, node: Arc<dyn Api>) -> Arc<dyn Api> {
        match self {
            Caller::Owner => node,
            Caller::Token(grant) => Arc::new(Scoped {
                node,
                grant: grant.clone(),
            }),
        }
    }

    /// Whether this is the owner.
    pub fn is_owner(&self) -> bool {
        matches!(self, Caller::Owner)
    }

    /// Whether the caller still stands (the owner always does).
    pub fn live(&self) -> bool {
        match self {
            Caller::Owner => true,
            Caller::Token(grant) => (grant.live)(),
        }
    }
}

/// `POST /api/v1/tokens`: a new capability token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its name: letters, digits, `-`, `_` and `.`, 1 to 64 of them, unique on the node.
    pub name: String,
    /// The collections it sees (ids or names), at least one; left out: every collection.
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    /// Read only (default: it may also write in what it sees).
    #[serde(default)]
    pub read_only: bool,
    /// How long it works (`30d`, `12h`); default: until revoked.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A capability token as `mnemon token list` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TokenView {
    /// Its name.
    pub name: String,
    /// What it may see and do.
    pub scope: Scope,
    /// The names of the collections it sees, in the order of `scope.collections`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collection_names: Vec<String>,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it was last used (RFC 3339), to the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// When it stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Whether it has expired.
    pub expired: bool,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct IssuedToken {
    /// The secret to give the agent or person (`Authorization: Bearer …`).
    pub token: String,
    /// What it is.
    #[serde(flatten)]
    pub view: TokenView,
}

/// Whether `name` may name a token: a letter or digit, then letters, digits, `-`, `_` or
/// `.`, 64 at most (no name a shell or a path would read as something else).
pub fn check_token_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "name: a token's name starts with a letter or digit, then up to 63 letters, \
             digits, '-', '_' or '.', not {:?}",
            name.chars().take(70).collect::<String>()
        )))
    }
}

/// The node as a capability token sees it: see the [module](self) for the rules.
struct Scoped {
    node: Arc<dyn Api>,
    grant: Arc<Grant>,
}

impl Scoped {
    fn scope(&self) -> &Scope {
        &self.grant.scope
    }

    /// Refuses everything once the token is revoked or expired.
    fn live(&self) -> Result<(), Error> {
        if (self.grant.live)() {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "the token {:?} was revoked or has expired",
                self.grant.name
            )))
        }
    }

    fn owners_only(&self, what: &str) -> Error {
        Error::forbidden(format!(
            "{what} needs the owner's token; the token {:?} is scoped ({})",
            self.grant.name,
            self.scope().describe()
        ))
    }

    fn read_only(&self) -> Result<(), Error> {
        if self.scope().write {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "the token {:?} is read-only: it may not change memories",
                self.grant.name
            )))
        }
    }

    /// That the token may write memory `id` anew (forget its history, move it): it sees
    /// and may change it, and sees every memory that links to it (those are relinked).
    fn rewritable(&self, id: &str, what: &str) -> Result<(), Error> {
        self.memory(id)?;
        self.read_only()?;
        if let Some(visible) = self.within()
            && self
                .node
                .backlinks(id)?
                .iter()
                .any(|m| !visible.contains(&m.collection))
        {
            return Err(Error::forbidden(format!(
                "memories outside this token's collections link to this one; only the owner can {what}"
            )));
        }
        Ok(())
    }

    /// The collections the token sees, as the node lists them.
    fn visible_collections(&self) -> Result<Vec<CollectionView>, Error> {
        let mut all = self.node.collections()?;
        all.retain(|c| self.scope().sees(&c.id));
        Ok(all)
    }

    /// The id of the collection `wanted` (an id or a name) among those the token sees;
    /// one it does not see is unknown, in the node's own words.
    fn collection(&self, wanted: &str) -> Result<String, Error> {
        Ok(
            crate::find_collection(&self.visible_collections()?, wanted)?
                .id
                .clone(),
        )
    }

    /// The ids a query without a collection is held to (`None`: every collection).
    fn within(&self) -> Option<Vec<String>> {
        self.scope().collections.clone()
    }

    /// The memory `id` if the token sees it; otherwise not found, as for an unknown id.
    fn memory(&self, id: &str) -> Result<MemoryView, Error> {
        // One answer for every memory the token cannot read: unknown, deleted or hidden
        // (a deleted memory's tombstone would otherwise say it existed).
        let unknown = || Error::not_found(format!("no memory with id {id}"));
        let memory = match self.node.get(id) {
            Ok(memory) => memory,
            Err(e) if e.kind == ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(e),
        };
        if self.scope().sees(&memory.collection) {
            Ok(self.trim_links(memory))
        } else {
            Err(unknown())
        }
    }

    /// `memory` without links to memories the token does not see.
    fn trim_links(&self, mut memory: MemoryView) -> MemoryView {
        if self.scope().collections.is_some() {
            memory.links.retain(|link| {
                self.node
                    .get(&link.target)
                    .is_ok_and(|target| self.scope().sees(&target.collection))
            });
        }
        memory
    }

    /// Refuses a link to a memory the token does not see, as an unknown id.
    fn check_links<'a>(&self, targets: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
        for target in targets {
            self.memory(target)?;
        }
        Ok(())
    }

    /// A search held to what the token sees (snapshot reads only): in a collection it
    /// sees, and within those it is held to.
    fn scoped_search(&self, mut query: SearchQuery) -> Result<SearchQuery, Error> {
        self.live()?;
        if let Some(wanted) = &query.collection {
            query.collection = Some(self.collection(wanted)?);
        }
        query.within = self.within();
        Ok(query)
    }

    /// A new memory as the token may write it (snapshot reads only): into a collection it
    /// sees, linking only to memories it sees, resolving titles only among them.
    fn scoped_create(&self, mut new: CreateMemory) -> Result<CreateMemory, Error> {
        self.live()?;
        self.read_only()?;
        new.collection = match new.collection.as_deref() {
            Some(wanted) => Some(self.collection(wanted)?),
            // A token held to collections writes into the first of them.
            None => self.within().and_then(|ids| ids.into_iter().next()),
        };
        self.check_links(new.links.iter().map(|l| l.target.as_str()))?;
        new.within = self.within();
        Ok(new)
    }
}

impl Api for Scoped {
    fn create(&self, new: CreateMemory) -> Result<MemoryView, Error> {
        let memory = self.node.create(self.scoped_create(new)?)?;
        Ok(self.trim_links(memory))
    }

    fn create_async(self: Arc<Self>, new: CreateMemory) -> Pending<MemoryView> {
        Box::pin(async move {
            let new = self.scoped_create(new)?;
            let memory = self.node.clone().create_async(new).await?;
            Ok(self.trim_links(memory))
        })
    }

    fn get(&self, id: &str) -> Result<MemoryView, Error> {
        self.live()?;
        self.memory(id)
    }

    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, Error> {
        self.live()?;
        self.memory(id)?;
        let mut found = self.node.backlinks(id)?;
        found.retain(|m| self.scope().sees(&m.collection));
        Ok(found.into_iter().map(|m| self.trim_links(m)).collect())
    }

    fn graph(&self, query: &GraphQuery) -> Result<GraphView, Error> {
        self.live()?;
        let mut query = query.clone();
        if let Some(center) = &query.center {
            self.memory(center)?;
        }
        if let Some(wanted) = &query.collection {
            query.collection = Some(self.collection(wanted)?);
        }
        query.within = self.within();
        let mut graph = self.node.graph(&query)?;
        graph.nodes.retain(|n| self.scope().sees(&n.collection));
        let kept: HashSet<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
        graph
            .edges
            .retain(|e| kept.contains(e.source.as_str()) && kept.contains(e.target.as_str()));
        Ok(graph)
    }

    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, Error> {
        self.live()?;
        let mut request = request.clone();
        if let Some(wanted) = &request.collection {
            request.collection = Some(self.collection(wanted)?);
        }
        request.within = self.within();
        self.node.ask(&request, on_event)
    }

    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, Error> {
        self.live()?;
        let mut query = query.clone();
        if let Some(wanted) = &query.collection {
            query.collection = Some(self.collection(wanted)?);
        }
        query.within = self.within();
        let mut page = self.node.list(&query)?;
        page.items = page
            .items
            .into_iter()
            .filter(|m| self.scope().sees(&m.collection))
            .map(|m| self.trim_links(m))
            .collect();
        Ok(page)
    }

    fn update(&self, id: &str, mut patch: PatchMemory) -> Result<MemoryView, Error> {
        self.live()?;
        self.memory(id)?;
        self.read_only()?;
        // Links to memories it cannot see are neither made nor undone by it.
        self.check_links(
            patch
                .add_links
                .iter()
                .map(|l| l.target.as_str())
                .chain(patch.remove_links.iter().map(String::as_str)),
        )?;
        patch.within = self.within();
        let memory = self.node.update(id, patch)?;
        Ok(self.trim_links(memory))
    }

    fn delete(&self, id: &str) -> Result<(), Error> {
        self.live()?;
        self.memory(id)?;
        self.read_only()?;
        self.node.delete(id)
    }

    fn resolve_conflict(&self, id: &str, theirs: bool) -> Result<MemoryView, Error> {
        self.live()?;
        self.memory(id)?;
        self.read_only()?;
        let memory = self.node.resolve_conflict(id, theirs)?;
        Ok(self.trim_links(memory))
    }

    fn forget_history(&self, id: &str) -> Result<MemoryView, Error> {
        self.live()?;
        self.rewritable(id, "forget its history")?;
        let memory = self.node.forget_history(id)?;
        Ok(self.trim_links(memory))
    }

    fn move_memory(&self, id: &str, collection: &str) -> Result<MemoryView, Error> {
        self.live()?;
        let to = self.collection(collection)?;
        self.rewritable(id, "move it")?;
        let memory = self.node.move_memory(id, &to)?;
        Ok(self.trim_links(memory))
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, Error> {
        self.node.search(&self.scoped_search(query.clone())?)
    }

    fn search_async(self: Arc<Self>, query: SearchQuery) -> Pending<Vec<HitView>> {
        Box::pin(async move {
            let query = self.scoped_search(query)?;
            self.node.clone().search_async(query).await
        })
    }

    fn collections(&self) -> Result<Vec<CollectionView>, Error> {
        self.live()?;
        self.visible_collections()
    }

    fn name_node(&self, _did: &str, _name: &str) -> Result<(), Error> {
        self.live()?;
        Err(self.owners_only("naming nodes"))
    }

    fn create_collection(&self, _name: &str) -> Result<CollectionView, Error> {
        self.live()?;
        Err(self.owners_only("making a collection"))
    }

    fn rename_collection(&self, collection: &str, _name: &str) -> Result<CollectionView, Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("renaming a collection"))
    }

    fn delete_collection(&self, collection: &str) -> Result<CollectionDeleted, Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("deleting a collection"))
    }

    fn members(&self, collection: &str) -> Result<Vec<MemberView>, Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("a collection's members"))
    }

    fn share(&self, collection: &str, _request: ShareRequest) -> Result<MemberView, Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("sharing"))
    }

    fn unshare(&self, collection: &str, _did: &str) -> Result<(), Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("sharing"))
    }

    fn invite(&self, collection: &str, _request: InviteRequest) -> Result<InviteView, Error> {
        self.live()?;
        self.collection(collection)?;
        Err(self.owners_only("inviting"))
    }

    fn join(&self, _request: JoinRequest) -> Result<JoinView, Error> {
        self.live()?;
        Err(self.owners_only("joining a collection"))
    }

    fn peers(&self) -> Result<Vec<PeerView>, Error> {
        self.live()?;
        Err(self.owners_only("the peers"))
    }

    fn dial(&self, _request: DialRequest) -> Result<(), Error> {
        self.live()?;
        Err(self.owners_only("dialling a peer"))
    }

    fn backup(&self, _request: BackupRequest) -> Result<BackupFile, Error> {
        self.live()?;
        Err(self.owners_only("a backup (it holds every collection and the node's key)"))
    }

    fn status(&self) -> Result<serde_json::Value, Error> {
        self.live()?;
        Err(self.owners_only("the node's status"))
    }

    fn searches_meaning(&self) -> Result<bool, Error> {
        self.live()?;
        self.node.searches_meaning()
    }

    fn events(&self) -> Events {
        let grant = self.grant.clone();
        self.node
            .events()
            .filtered(move |event| (grant.live)().then(|| grant.scope.sees(&event.collection)))
    }

    fn ready(&self) -> bool {
        self.node.ready()
    }

    fn gauges(&self) -> Result<Vec<Gauge>, Error> {
        self.live()?;
        Err(self.owners_only("the node's metrics"))
    }
}
