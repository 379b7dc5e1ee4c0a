//! Mnemon's application contract: what every interface (the HTTP API and web UI, the
//! CLI, MCP) asks of a node and what it answers.
//!
//! Plain data and one trait, [`Api`], which the node implements: request and view types
//! (serde, with OpenAPI and JSON schemas), typed enums for every closed set of names,
//! and [`Error`] with a [`kind`](ErrorKind) rather than an HTTP status. Each interface
//! maps kinds at its own edge. The domain rules every interface shares (how tasks sort,
//! what a patch to a task means, which search modes exist) live here, once. No HTTP
//! framework and no MCP library is known here.

/// Reads a closed set of names with its `FromStr`, so every interface (JSON bodies, query
/// strings, MCP arguments, CLI flags) accepts the same spellings and names the same error.
macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod api;
mod error;
mod graph;
mod memory;
mod search;
mod sharing;

pub use api::{Api, Gauge};
pub use error::{Error, ErrorKind};
pub use graph::{GraphEdge, GraphNode, GraphQuery, GraphView};
pub use memory::{
    CreateMemory, Created, EventKind, EventView, LinkView, ListQuery, MAX_LIST_PAGE, MemoryView,
    Page, PatchMemory, SourceView, TaskBoard, TaskFields, TaskList, TaskStatus, TaskView,
};
pub use search::{
    AnswerView, AskEvent, AskRequest, CitationView, HitView, SearchMode, SearchQuery,
};
pub use sharing::{
    CollectionView, CreateCollection, InviteRequest, InviteView, JoinRequest, JoinView, MemberView,
    PeerView, Role, ShareRequest, SyncState, SyncView,
};
