//! Mnemon's application contract: what every interface (the HTTP API and web UI, the
//! CLI, MCP) asks of a node and what it answers.
//!
//! Plain data and one trait, [`Api`], which the node implements: request and view types
//! (serde, with OpenAPI and JSON schemas), typed enums for every closed set of names,
//! and [`Error`] with a [`kind`](ErrorKind) rather than an HTTP status. Each interface
//! maps kinds at its own edge. The domain rules every interface shares (how tasks sort,
//! what a patch to a task means, which search modes exist) live here, once. No HTTP
//! framework and no MCP library is known here.

/// A closed set of names people type: the enum, `as_str`, `Display`, and one `FromStr`
/// (any case, spaces around ignored, aliases too) that every interface reads it with:
/// JSON bodies, query strings and MCP arguments through `Deserialize`, CLI flags
/// directly. So they accept the same spellings and name the same error.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident as $field:literal {
            $($(#[$vmeta:meta])* $variant:ident = $name:literal $(| $alias:literal)*,)+
        }
    ) => {
        $(#[$meta])*
        pub enum $ty {
            $($(#[$vmeta])* $variant,)+
        }

        impl $ty {
            /// Its name in requests and answers.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<$ty, String> {
                let wanted = s.trim().to_ascii_lowercase();
                $(
                    if wanted == $name $(|| wanted == $alias)* {
                        return Ok($ty::$variant);
                    }
                )+
                Err(format!(
                    "{} must be {}, not {:?}",
                    $field,
                    crate::one_of(&[$($name),+]),
                    s.chars().take(40).collect::<String>()
                ))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

mod api;
mod backup;
pub mod budget;
mod error;
mod graph;
mod memory;
mod scope;
mod search;
mod sharing;

pub use api::{Api, Events, Gauge, Pending, on_blocking_pool};
pub use backup::{BackupFile, BackupRequest, BackupView, MIN_PASSPHRASE};
pub use error::{Error, ErrorKind};
pub use graph::{GraphEdge, GraphNode, GraphQuery, GraphView};
pub use memory::{
    ConflictView, CreateMemory, Created, Dedupe, EventKind, EventView, Keep, LinkView, ListQuery,
    MAX_LIST_PAGE, MemoryView, Page, PatchMemory, ResolveConflict, SourceView, TaskBoard,
    TaskFields, TaskList, TaskStatus, TaskView,
};
pub use scope::{Caller, Grant, IssuedToken, NewToken, Scope, TokenView, check_token_name};
pub use search::{
    AnswerView, AskEvent, AskRequest, CitationView, HitView, SearchMode, SearchQuery,
    parse_duration, parse_time,
};
pub use sharing::{
    CollectionDeleted, CollectionView, CreateCollection, DialRequest, InviteRequest, InviteView,
    JoinRequest, JoinView, MemberView, MoveMemory, NameNode, PeerView, RenameCollection, Role,
    ShareRequest, SyncState, SyncView, find_collection,
};
