//! Memories: how they are shown, made, changed and listed, and tasks.

use std::collections::HashMap;

use mnemon_crdt::{CollectionId, Memory, Task, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A memory as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct MemoryView {
    /// Its id (a ULID).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its body (Markdown).
    pub content: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its kind: note, task, fact, conversation, …
    pub kind: String,
    /// Its importance, 0 to 1.
    pub importance: f64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The DID of its author.
    pub author: String,
    /// The id of its collection.
    pub collection: String,
    /// The collection's name.
    pub collection_name: Option<String>,
    /// Where it came from.
    pub source: Option<SourceView>,
    /// Its links to other memories.
    pub links: Vec<LinkView>,
    /// Task fields, for tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskView>,
    /// After a write: the store's change-log position of this write. Pass it as `after`
    /// to a search to see the write in its results (read-your-writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// After a create with `dedupe`: whether this memory is new (`false`: it already said
    /// the same, and nothing was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// When a peer's edit and this node's, made at the same time, changed the same words:
    /// the two versions (the text reads as they merged, likely neither). Shown on a read
    /// of one memory; settled by writing the text anew (such as one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictView>,
}

/// `POST /api/v1/memories/{id}/resolve`: which version of a conflict to keep.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveConflict {
    /// `ours` (this node's version) or `theirs` (the peer's).
    pub keep: Keep,
}

/// A side of a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// This node's version.
    Ours,
    /// The peer's version.
    Theirs,
}

/// Two concurrent edits of a memory's text that changed the same words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct ConflictView {
    /// This node's text before the merge.
    pub ours: String,
    /// The peer's text.
    pub theirs: String,
    /// When the merge found it.
    pub at: String,
}

impl From<&mnemon_crdt::Conflict> for ConflictView {
    fn from(c: &mnemon_crdt::Conflict) -> ConflictView {
        ConflictView {
            ours: c.ours.clone(),
            theirs: c.theirs.clone(),
            at: c.at.to_string(),
        }
    }
}

names! {
    /// What a create does when a memory of the same collection already says the same.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum Dedupe as "dedupe" {
        /// Write it anyway (the default of the API and the CLI).
        #[default]
        Off = "off",
        /// Answer with the existing memory if its text is byte for byte the same (and its
        /// title, when one is given).
        Exact = "exact",
        /// Answer with the existing memory if its text reads the same: case, spacing and
        /// punctuation at the ends aside (the default of MCP's `remember`).
        Near = "near",
    }
}

names! {
    /// Whether a task is still to be done.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum TaskStatus as "status" {
        /// Still to be done (the default).
        #[default]
        Open = "open",
        /// Finished: its points are earned.
        Done = "done",
    }
}

/// A status as a view reads it: one this version does not know is `open`.
fn lenient_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TaskStatus, D::Error> {
    let text = String::deserialize(d)?;
    Ok(text.parse().unwrap_or_default())
}

/// The task fields of a memory of kind `task`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct TaskView {
    /// `open` or `done` (a status this version does not know, written by a peer or an
    /// older node, reads as `open`: only `done` earns points).
    #[serde(deserialize_with = "lenient_status")]
    #[schemars(with = "TaskStatus")]
    pub status: TaskStatus,
    /// Higher is more urgent.
    pub priority: i64,
    /// When it is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// 1 (trivial) to 5 (hard).
    pub difficulty: u8,
    /// The experience points finishing it is worth.
    pub xp: u32,
}

impl TaskView {
    /// Whether it is open and its due time is before `now` (RFC 3339, as views write
    /// times; a due time that cannot be read is not overdue).
    pub fn is_overdue(&self, now: &str) -> bool {
        let due = self
            .due
            .as_deref()
            .and_then(|d| d.parse::<Timestamp>().ok());
        let now = now.parse::<Timestamp>().ok();
        self.status == TaskStatus::Open && matches!((due, now), (Some(due), Some(now)) if due < now)
    }
}

impl From<&Task> for TaskView {
    fn from(task: &Task) -> TaskView {
        TaskView {
            status: if task.is_done() {
                TaskStatus::Done
            } else {
                TaskStatus::Open
            },
            priority: task.priority,
            due: task.due.map(|d| d.to_string()),
            difficulty: task.difficulty,
            xp: task.xp,
        }
    }
}

/// The to-do list: open tasks in the order to do them, done ones, and the points earned.
/// The CLI, the web UI and MCP all show tasks through it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskBoard {
    /// Open tasks: by due date (none last), then priority (high first), then age.
    pub open: Vec<MemoryView>,
    /// Done tasks, most recently finished first.
    pub done: Vec<MemoryView>,
}

impl TaskBoard {
    /// The board of the tasks among `memories` (the others are dropped).
    pub fn new(memories: Vec<MemoryView>) -> TaskBoard {
        let is_done = |m: &MemoryView| {
            m.task
                .as_ref()
                .is_some_and(|t| t.status == TaskStatus::Done)
        };
        let (mut done, mut open): (Vec<_>, Vec<_>) = memories
            .into_iter()
            .filter(|m| m.task.is_some())
            .partition(is_done);
        let due = |m: &MemoryView| m.task.as_ref().and_then(|t| t.due.clone());
        let priority = |m: &MemoryView| m.task.as_ref().map_or(0, |t| t.priority);
        open.sort_by(|a, b| {
            let by_due = match (due(a), due(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_due
                .then(priority(b).cmp(&priority(a)))
                .then(a.created_at.cmp(&b.created_at))
        });
        done.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
        TaskBoard { open, done }
    }

    /// The points the done tasks earned.
    pub fn xp_earned(&self) -> u64 {
        self.done
            .iter()
            .filter_map(|m| m.task.as_ref())
            .map(|t| u64::from(t.xp))
            .sum()
    }

    /// The list to show: the open tasks, and the done ones too if `all`.
    pub fn list(&self, all: bool) -> TaskList {
        let mut tasks = self.open.clone();
        if all {
            tasks.extend(self.done.iter().cloned());
        }
        TaskList {
            tasks,
            open: self.open.len(),
            done: self.done.len(),
            xp_earned: self.xp_earned(),
        }
    }
}

/// A to-do list as `mnemon task list --json` and MCP's `list_tasks` answer it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct TaskList {
    /// The tasks shown: open ones in the order to do them (then done ones, if asked).
    pub tasks: Vec<MemoryView>,
    /// How many are open.
    pub open: usize,
    /// How many are done.
    pub done: usize,
    /// The points the done tasks earned.
    pub xp_earned: u64,
}

/// Task fields to set; those left out keep their value (or the default for a new task:
/// `open`, priority 0, difficulty 1, 10 points per difficulty level).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFields {
    /// `open` or `done`.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Higher is more urgent.
    #[serde(default)]
    pub priority: Option<i64>,
    /// When it is due: a date (`2026-12-01`) or an RFC 3339 time; `""` clears it.
    #[serde(default)]
    pub due: Option<String>,
    /// 1 (trivial) to 5 (hard).
    #[serde(default)]
    pub difficulty: Option<u8>,
    /// The experience points finishing it is worth.
    #[serde(default)]
    pub xp: Option<u32>,
}

impl TaskFields {
    /// `base` with these fields applied; a time that cannot be read is named.
    pub fn apply(&self, base: &Task) -> Result<Task, String> {
        let mut task = base.clone();
        if let Some(status) = self.status {
            task.status = status.as_str().to_owned();
        }
        if let Some(priority) = self.priority {
            task.priority = priority;
        }
        if let Some(due) = &self.due {
            task.due = if due.trim().is_empty() {
                None
            } else {
                Some(due.parse::<Timestamp>().map_err(|e| format!("due: {e}"))?)
            };
        }
        if let Some(difficulty) = self.difficulty {
            task.difficulty = difficulty;
            // Points follow the difficulty unless they were set apart from it.
            if self.xp.is_none() && base.xp == Task::default_xp(base.difficulty) {
                task.xp = Task::default_xp(difficulty);
            }
        }
        if let Some(xp) = self.xp {
            task.xp = xp;
        }
        Ok(task)
    }
}

/// Where a memory came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct SourceView {
    /// What kind of source.
    pub kind: String,
    /// Its address, if any.
    pub uri: Option<String>,
}

/// A link from one memory to another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkView {
    /// The memory linked to.
    pub target: String,
    /// The relation's name, e.g. `related`.
    #[serde(default = "related")]
    pub relation: String,
}

fn related() -> String {
    "related".to_owned()
}

impl MemoryView {
    /// The view of `memory`, with collection names from `names`. Takes the memory: its
    /// text moves into the view rather than being copied (it may be megabytes).
    pub fn new(memory: Memory, names: &HashMap<CollectionId, String>) -> MemoryView {
        MemoryView {
            id: memory.id.to_string(),
            title: memory.title,
            content: memory.content,
            tags: memory.tags.into_iter().collect(),
            kind: memory.kind,
            importance: memory.importance,
            created_at: memory.created_at.to_string(),
            updated_at: memory.updated_at.to_string(),
            author: memory.author,
            collection: memory.collection.to_string(),
            collection_name: names.get(&memory.collection).cloned(),
            source: memory.source.map(|s| SourceView {
                kind: s.kind,
                uri: s.uri,
            }),
            links: memory
                .links
                .into_iter()
                .map(|(target, relation)| LinkView {
                    target: target.to_string(),
                    relation,
                })
                .collect(),
            task: memory.task.as_ref().map(TaskView::from),
            seq: None,
            created: None,
            conflict: None,
        }
    }
}

/// `POST /api/v1/memories`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    /// The title; default: the first line of the content.
    #[serde(default)]
    pub title: Option<String>,
    /// The body; must not be empty.
    pub content: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Collection id or unique name; default: the node's private collection.
    #[serde(default)]
    pub collection: Option<String>,
    /// Kind; default `note`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Importance from 0 to 1; default 0.5.
    #[serde(default)]
    pub importance: Option<f64>,
    /// Links to other memories.
    #[serde(default)]
    pub links: Vec<LinkView>,
    /// Task fields (the kind becomes `task` unless another is given).
    #[serde(default)]
    pub task: Option<TaskFields>,
    /// Where it came from; default: how it was made (`api`, `cli`, `mcp`, …).
    #[serde(default)]
    pub source: Option<SourceView>,
    /// When it was created, if not now (RFC 3339; for imports).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it last changed, if not now (RFC 3339; for imports).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// `exact` or `near`: if a memory of the collection already says the same, answer
    /// with it (`created: false`) instead of writing a second copy. Default `off`.
    #[serde(default)]
    pub dedupe: Option<Dedupe>,
    /// The collections (ids) its `[[wikilinks]]` may resolve into, when the caller is held
    /// to some: set by the application layer from a token's scope, never read.
    #[serde(skip)]
    #[schemars(skip)]
    #[schema(ignore)]
    pub within: Option<Vec<String>>,
}

impl From<&MemoryView> for CreateMemory {
    /// The memory `view` shows, to be written again (Undo of a delete): the same text,
    /// tags, collection, kind, importance, links, task, source and times, under a new id.
    fn from(view: &MemoryView) -> CreateMemory {
        CreateMemory {
            title: Some(view.title.clone()),
            content: view.content.clone(),
            tags: view.tags.clone(),
            collection: Some(view.collection.clone()),
            kind: Some(view.kind.clone()),
            importance: Some(view.importance),
            links: view.links.clone(),
            task: view.task.as_ref().map(|task| TaskFields {
                status: Some(task.status),
                priority: Some(task.priority),
                due: task.due.clone(),
                difficulty: Some(task.difficulty),
                xp: Some(task.xp),
            }),
            source: view.source.clone(),
            created_at: Some(view.created_at.clone()),
            updated_at: Some(view.updated_at.clone()),
            dedupe: None,
            within: None,
        }
    }
}

/// `PATCH /api/v1/memories/{id}`: fields left out are not touched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMemory {
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new body.
    #[serde(default)]
    pub content: Option<String>,
    /// Tags to add.
    #[serde(default)]
    pub add_tags: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
    /// A new kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// A new importance.
    #[serde(default)]
    pub importance: Option<f64>,
    /// Links to add (or re-label).
    #[serde(default)]
    pub add_links: Vec<LinkView>,
    /// Ids of memories to unlink.
    #[serde(default)]
    pub remove_links: Vec<String>,
    /// Task fields to set (on a memory that is not a task yet, it becomes one).
    #[serde(default)]
    pub task: Option<TaskFields>,
    /// The collections (ids) its `[[wikilinks]]` may resolve into, when the caller is held
    /// to some: set by the application layer from a token's scope, never read.
    #[serde(skip)]
    #[schemars(skip)]
    #[schema(ignore)]
    pub within: Option<Vec<String>>,
}

/// The largest page `GET /api/v1/memories` gives.
pub const MAX_LIST_PAGE: usize = 1000;

impl PatchMemory {
    /// The patch that opens a done task again.
    pub fn task_reopened() -> PatchMemory {
        PatchMemory {
            task: Some(TaskFields {
                status: Some(TaskStatus::Open),
                ..TaskFields::default()
            }),
            ..PatchMemory::default()
        }
    }

    /// The patch that marks a task done (and so earns its points).
    pub fn task_done() -> PatchMemory {
        PatchMemory {
            task: Some(TaskFields {
                status: Some(TaskStatus::Done),
                ..TaskFields::default()
            }),
            ..PatchMemory::default()
        }
    }
}

/// `GET /api/v1/memories` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, JsonSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this collection (id or name).
    pub collection: Option<String>,
    /// Only this tag.
    pub tag: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only memories with this title (trimmed, in any case): how a name becomes an id.
    pub title: Option<String>,
    /// Skip this many.
    pub offset: Option<usize>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Only these collections (ids), when the caller is held to some: set by the
    /// application layer from a token's scope, never read from a request.
    #[serde(skip)]
    #[schemars(skip)]
    #[param(ignore)]
    pub within: Option<Vec<String>>,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many items match in all.
    pub total: usize,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
}

/// The answer to a create: the new id, and the write's change-log position.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Created {
    /// The new id.
    pub id: String,
    /// The write's position in the store's change log: pass it as a search's `after` to
    /// see the new memory in the results (read-your-writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// With `dedupe`: `false` when a memory of the collection already said the same (its
    /// id is answered, nothing was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// A change to a memory, as `/api/v1/events` streams it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct EventView {
    /// The change-log position.
    pub seq: u64,
    /// The memory.
    pub id: String,
    /// Its collection.
    pub collection: String,
    /// What happened to it.
    pub kind: EventKind,
}

/// What happened to a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// It was made.
    Created,
    /// It changed.
    Updated,
    /// It was deleted.
    Deleted,
}

impl EventKind {
    /// Its name (`created`, `updated`, `deleted`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_this_version_does_not_know_reads_as_open_but_is_refused_as_input() {
        let view: TaskView = serde_json::from_str(
            r#"{"status": "waiting", "priority": 0, "difficulty": 1, "xp": 10}"#,
        )
        .expect("an older node's or a peer's task");
        assert_eq!(view.status, TaskStatus::Open);
        let done: TaskView =
            serde_json::from_str(r#"{"status": "Done", "priority": 0, "difficulty": 1, "xp": 10}"#)
                .expect("done");
        assert_eq!(done.status, TaskStatus::Done);
        let err = serde_json::from_str::<TaskFields>(r#"{"status": "waiting"}"#)
            .expect_err("a request must name a status this version knows");
        assert!(
            err.to_string().contains("status must be open or done"),
            "{err}"
        );
    }
}
