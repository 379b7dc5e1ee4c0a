//! The graph of links between memories.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /api/v1/graph` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, JsonSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// The memory in the middle; without it, every memory that takes part in a link.
    pub center: Option<String>,
    /// How many links away from the center to go, following links both ways (default 2,
    /// 0 to 5).
    pub depth: Option<usize>,
    /// Only this collection (id or name).
    pub collection: Option<String>,
    /// At most this many memories (default 300, at most 2000); the nearest are kept.
    pub limit: Option<usize>,
    /// Only these collections (ids), when the caller is held to some: set by the
    /// application layer from a token's scope, never read from a request. The walk
    /// around a center never passes through a memory outside them.
    #[serde(skip)]
    #[schemars(skip)]
    #[param(ignore)]
    pub within: Option<Vec<String>>,
}

/// Memories and the links between them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct GraphView {
    /// The memories, the center first, then by distance from it.
    pub nodes: Vec<GraphNode>,
    /// The links between them.
    pub edges: Vec<GraphEdge>,
    /// Whether memories were left out to stay within the limit.
    pub truncated: bool,
}

/// A memory in a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct GraphNode {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its kind.
    pub kind: String,
    /// Its collection's id.
    pub collection: String,
    /// Links away from the center (0 for the center; absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<usize>,
}

/// A link in a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct GraphEdge {
    /// The memory that links.
    pub source: String,
    /// The memory linked to.
    pub target: String,
    /// The relation's name.
    pub relation: String,
}
