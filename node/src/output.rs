//! How the CLI prints memories, collections and hits, for people and as JSON. Local and
//! remote commands print the same API views, so `--json` gives the API's own shapes.

use std::io::Write;

use mnemon_api::{CollectionView, HitView, MemoryView, SyncView, TaskBoard, TaskStatus};
use serde_json::Value;

/// A collection's sync state with a peer, for people: `in sync`, `behind (why)`, ….
pub(crate) fn sync_state(sync: &SyncView) -> String {
    let state = sync.state.label();
    let mut out = match &sync.detail {
        Some(detail) => format!("{state} ({detail})"),
        None => state.to_owned(),
    };
    if let Some(refused) = &sync.last_refused
        && sync.detail.as_ref() != Some(refused)
    {
        out.push_str(&format!("; last refused: {refused}"));
    }
    out
}

/// Any view as JSON.
pub(crate) fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub(crate) fn print_memory(out: &mut impl Write, memory: &MemoryView) -> std::io::Result<()> {
    writeln!(out, "{}", memory.title)?;
    writeln!(out, "id:         {}", memory.id)?;
    let collection = memory
        .collection_name
        .as_ref()
        .unwrap_or(&memory.collection);
    writeln!(out, "collection: {collection}")?;
    writeln!(out, "kind:       {}", memory.kind)?;
    if !memory.tags.is_empty() {
        let tags: Vec<String> = memory.tags.iter().map(|t| format!("#{t}")).collect();
        writeln!(out, "tags:       {}", tags.join(" "))?;
    }
    writeln!(out, "importance: {}", memory.importance)?;
    writeln!(out, "created:    {}", memory.created_at)?;
    writeln!(out, "updated:    {}", memory.updated_at)?;
    writeln!(out, "author:     {}", memory.author)?;
    for link in &memory.links {
        writeln!(out, "link:       {} → {}", link.relation, link.target)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", memory.content)
}

pub(crate) fn print_list(out: &mut impl Write, memories: &[MemoryView]) -> std::io::Result<()> {
    for memory in memories {
        let date = &memory.updated_at;
        let tags: Vec<String> = memory.tags.iter().map(|t| format!("#{t}")).collect();
        let title: String = memory.title.chars().take(60).collect();
        writeln!(
            out,
            "{}  {}  {}{}{}",
            memory.id,
            &date[..10.min(date.len())],
            title,
            if tags.is_empty() { "" } else { "  " },
            tags.join(" ")
        )?;
    }
    Ok(())
}

pub(crate) fn print_collections(
    out: &mut impl Write,
    collections: &[CollectionView],
) -> std::io::Result<()> {
    for c in collections {
        writeln!(
            out,
            "{}  {:<24} {:>6} memories{}",
            c.id,
            c.name,
            c.memories,
            if c.default { "  (default)" } else { "" }
        )?;
    }
    Ok(())
}

pub(crate) fn print_hits(out: &mut impl Write, hits: &[HitView]) -> std::io::Result<()> {
    if hits.is_empty() {
        writeln!(out, "no memories found")?;
    }
    for hit in hits {
        writeln!(out, "{}  {:.4}  {}", hit.id, hit.score, hit.title)?;
        writeln!(out, "    {}", hit.snippet)?;
    }
    Ok(())
}

/// Prints a to-do list for people: `[x] ID  title  p1 d2 20xp  due 2026-12-01`, then the
/// counts and the points earned.
pub(crate) fn print_tasks(
    board: &TaskBoard,
    out: &mut impl Write,
    all: bool,
) -> std::io::Result<()> {
    let line = |out: &mut dyn Write, m: &MemoryView| -> std::io::Result<()> {
        let Some(t) = &m.task else { return Ok(()) };
        let mark = if t.status == TaskStatus::Done {
            "x"
        } else {
            " "
        };
        let due = t
            .due
            .as_deref()
            .map(|d| format!("  due {}", d.get(..10).unwrap_or(d)))
            .unwrap_or_default();
        writeln!(
            out,
            "[{mark}] {}  {}  p{} d{} {}xp{due}",
            m.id, m.title, t.priority, t.difficulty, t.xp
        )
    };
    for m in &board.open {
        line(out, m)?;
    }
    if all {
        for m in &board.done {
            line(out, m)?;
        }
    }
    writeln!(
        out,
        "{} open, {} done, {} xp earned",
        board.open.len(),
        board.done.len(),
        board.xp_earned()
    )
}

/// The sources after a streamed answer: the cited ones marked.
pub(crate) fn print_sources(
    out: &mut impl Write,
    answer: &mnemon_api::AnswerView,
) -> std::io::Result<()> {
    writeln!(out)?;
    if answer.sources.is_empty() {
        return writeln!(out, "\n(no memories matched the question)");
    }
    writeln!(out, "\nSources:")?;
    for s in &answer.sources {
        let mark = if answer.cited.contains(&s.n) {
            "*"
        } else {
            " "
        };
        writeln!(out, "{mark}[{}] {}  {}", s.n, s.title, s.id)?;
    }
    if !answer.cited.is_empty() {
        writeln!(out, "(* cited in the answer)")?;
    }
    Ok(())
}
