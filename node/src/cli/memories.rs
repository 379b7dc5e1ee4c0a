//! The memory commands: add, get, list, edit, rm, search, ask, tasks, import and export.
//! Each goes to the running `mnemon serve` if there is one, else to the data folder.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use mnemon_api::{
    Api, CreateMemory, HitView, ListQuery, MemoryView, PatchMemory, SearchMode, SearchQuery,
    TaskBoard, TaskFields, TaskStatus,
};
use mnemon_crdt::normalize_tag;

use super::args::{AddArgs, EditArgs, SearchArgs, TaskCommand};
use super::{Ctx, Node, VECTOR_BUDGET, parse_memory_id, read_stdin};
use crate::app::MAX_PAGE;
use crate::import::Folders;
use crate::output;

/// `mnemon add`.
pub(super) fn add(cx: &Ctx, out: &mut impl Write, args: AddArgs) -> Result<()> {
    let node = cx.node()?;
    add_memories(node.api(), args, out)?;
    node.finish()?;
    Ok(())
}

/// `mnemon get`: one memory.
pub(super) fn get(cx: &Ctx, out: &mut impl Write, id: &str, json: bool) -> Result<()> {
    let node = cx.node()?;
    let memory = node.api().get(id)?;
    if json {
        writeln!(out, "{}", output::json(&memory))?;
    } else {
        output::print_memory(out, &memory)?;
    }
    Ok(())
}

/// `mnemon list`: every memory (or up to `limit`), newest change first.
pub(super) fn list(
    cx: &Ctx,
    out: &mut impl Write,
    collection: Option<String>,
    tag: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let tag = tag.as_deref().map(normalize_tag).transpose()?;
    let mut memories = Vec::new();
    let mut offset = 0;
    // Page through everything (or up to --limit).
    loop {
        let want = limit.map_or(MAX_PAGE, |l| (l - memories.len()).min(MAX_PAGE));
        if want == 0 {
            break;
        }
        let page = node.api().list(&ListQuery {
            collection: collection.clone(),
            tag: tag.clone(),
            kind: kind.clone(),
            offset: Some(offset),
            limit: Some(want),
            ..ListQuery::default()
        })?;
        memories.extend(page.items);
        match page.next_offset {
            Some(next) => offset = next,
            None => break,
        }
    }
    if json {
        writeln!(out, "{}", output::json(&memories))?;
    } else {
        output::print_list(out, &memories)?;
    }
    Ok(())
}

/// `mnemon edit`.
pub(super) fn edit(cx: &Ctx, out: &mut impl Write, args: EditArgs) -> Result<()> {
    let node = cx.node()?;
    edit_memory(node.api(), args, out)?;
    node.finish()?;
    Ok(())
}

/// `mnemon rm`: deletes memories for good.
pub(super) fn rm(cx: &Ctx, out: &mut impl Write, ids: Vec<String>) -> Result<()> {
    for id in &ids {
        parse_memory_id(id)?;
    }
    let node = cx.node()?;
    // Each deletion reaches the store and the index files before it is reported.
    for id in ids {
        node.api().delete(&id)?;
        writeln!(out, "deleted {id}")?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon resolve`: keeps one side of a conflict as the memory's text.
pub(super) fn resolve(cx: &Ctx, out: &mut impl Write, id: &str, keep: &str) -> Result<()> {
    parse_memory_id(id)?;
    let node = cx.node()?;
    let memory = node.api().resolve_conflict(id, keep == "theirs")?;
    writeln!(out, "{}: kept {keep}", memory.id)?;
    node.finish()?;
    Ok(())
}

/// `mnemon move`: moves a memory to another collection.
pub(super) fn move_memory(
    cx: &Ctx,
    out: &mut impl Write,
    id: &str,
    collection: &str,
    json: bool,
) -> Result<()> {
    parse_memory_id(id)?;
    let node = cx.node()?;
    let memory = node.api().move_memory(id, collection)?;
    let name = memory
        .collection_name
        .as_deref()
        .unwrap_or(&memory.collection);
    if json {
        writeln!(out, "{}", output::json(&memory))?;
    } else if memory.id == id {
        writeln!(out, "{id} is in {name} already")?;
    } else {
        writeln!(
            out,
            "moved to {name}: {} (was {id}, now deleted)",
            memory.id
        )?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon forget-history`: rewrites a memory without its earlier versions.
pub(super) fn forget_history(cx: &Ctx, out: &mut impl Write, id: &str, json: bool) -> Result<()> {
    parse_memory_id(id)?;
    let node = cx.node()?;
    let memory = node.api().forget_history(id)?;
    if json {
        writeln!(out, "{}", output::json(&memory))?;
    } else {
        writeln!(
            out,
            "{} now holds what {id} says, without its earlier versions; {id} is deleted",
            memory.id
        )?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon search`: waits for the index to reach every earlier write.
pub(super) fn search(cx: &Ctx, out: &mut impl Write, args: SearchArgs) -> Result<()> {
    let node = cx.node()?;
    node.catch_up_vectors(VECTOR_BUDGET)?;
    let status = node.api().status()?;
    if args.mode != SearchMode::Keyword {
        let pending = status["index"]["models"][0]["pending"]
            .as_u64()
            .unwrap_or(0);
        if pending > 0 {
            eprintln!(
                "note: {pending} memories are not embedded yet; `mnemon reindex` finishes the job"
            );
        }
    }
    // Everything written before this command (by this user's other commands too)
    // is in the results: the search waits for the index to reach it.
    let after = status["index"]["seq"].as_u64();
    let hits = node.api().search(&SearchQuery {
        q: args.query.clone(),
        k: Some(args.k),
        mode: Some(args.mode),
        collection: args.collection.clone(),
        tag: args.tag.clone(),
        kind: args.kind.clone(),
        since: args.since,
        until: args.until,
        min_importance: args.min_importance,
        after,
        rerank: args.no_rerank.then_some(false),
        within: None,
    })?;
    print_hits(out, &hits, args.json)?;
    node.finish()?;
    Ok(())
}

/// `mnemon import`.
pub(super) fn import(
    cx: &Ctx,
    out: &mut impl Write,
    path: &Path,
    collection: Option<String>,
    folders: Folders,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let options = crate::import::ImportOptions {
        collection,
        folders,
        progress: !json && std::io::stderr().is_terminal(),
    };
    // In this process nobody searches meanwhile: index once at the end.
    if let Node::Local(service) = &node {
        service.set_bulk(true);
    }
    let summary = crate::import::import(node.api(), path, &options);
    if let Node::Local(service) = &node {
        service.set_bulk(false);
        // No service runs to embed what was imported: it is all embedded here, so what
        // this command imported is searchable by meaning as soon as it returns.
        if summary.is_ok() {
            loop {
                match service.background_step(VECTOR_BUDGET) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("imported; the rest is embedded later: {e}");
                        break;
                    }
                }
            }
        }
    }
    let summary = summary?;
    if json {
        writeln!(out, "{}", output::json(&summary))?;
    } else {
        summary.print(out)?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon export`.
pub(super) fn export(
    cx: &Ctx,
    out: &mut impl Write,
    path: &Path,
    collection: Option<&str>,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let summary = crate::import::export(node.api(), path, collection)?;
    if json {
        writeln!(out, "{}", output::json(&summary))?;
    } else {
        writeln!(
            out,
            "exported {} memories to {} (Markdown, and {})",
            summary.memories,
            summary.path,
            crate::import::DUMP_FILE
        )?;
    }
    Ok(())
}

/// `mnemon ask`: streams the answer, then its sources.
pub(super) fn ask(
    cx: &Ctx,
    out: &mut impl Write,
    question: Vec<String>,
    k: usize,
    collection: Option<String>,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    node.catch_up_vectors(VECTOR_BUDGET)?;
    let request = mnemon_api::AskRequest {
        question: question.join(" "),
        k: Some(k),
        collection,
        within: None,
    };
    let mut failed = None;
    let answer = node.api().ask(&request, &mut |event| {
        if json || failed.is_some() {
            return;
        }
        if let mnemon_api::AskEvent::Delta(text) = event
            && let Err(e) = write!(out, "{text}").and_then(|()| out.flush())
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    let answer = answer?;
    if json {
        writeln!(out, "{}", output::json(&answer))?;
    } else {
        output::print_sources(out, &answer)?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon task …`.
pub(super) fn task(cx: &Ctx, out: &mut impl Write, command: TaskCommand) -> Result<()> {
    let node = cx.node()?;
    run_task(node.api(), command, out)?;
    node.finish()?;
    Ok(())
}

fn add_memories(api: &dyn Api, args: AddArgs, out: &mut impl Write) -> Result<()> {
    let template = CreateMemory {
        title: args.title.clone(),
        content: String::new(),
        tags: args.tags.clone(),
        collection: args.collection.clone(),
        kind: args.kind.clone(),
        importance: args.importance,
        dedupe: args.dedupe,
        ..CreateMemory::default()
    };
    let print = |out: &mut dyn Write, memory: &MemoryView| -> Result<()> {
        let id = &memory.id;
        if args.json {
            let mut value = serde_json::json!({ "id": id });
            if let Some(created) = memory.created {
                value["created"] = created.into();
            }
            writeln!(out, "{}", output::json(&value))?;
        } else {
            writeln!(out, "{id}")?;
            if memory.created == Some(false) {
                eprintln!("mnemon: {id} already says the same; nothing was written");
            }
        }
        out.flush()?;
        Ok(())
    };
    if args.lines {
        if args.text != "-" {
            bail!("--lines reads standard input: pass `-` as the text");
        }
        let stdin = std::io::stdin().lock();
        for (number, line) in stdin.lines().enumerate() {
            let line =
                line.with_context(|| format!("reading line {} of standard input", number + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let memory = api.create(CreateMemory {
                content: line,
                ..template.clone()
            })?;
            print(out, &memory)?;
        }
        return Ok(());
    }
    let content = if args.text == "-" {
        read_stdin()?
    } else {
        args.text.clone()
    };
    let memory = api.create(CreateMemory {
        content,
        ..template
    })?;
    print(out, &memory)
}

fn edit_memory(api: &dyn Api, args: EditArgs, out: &mut impl Write) -> Result<()> {
    parse_memory_id(&args.id)?;
    let content = match args.content.as_deref() {
        Some("-") => Some(read_stdin()?),
        other => other.map(str::to_owned),
    };
    let patch = PatchMemory {
        title: args.title,
        content,
        add_tags: args.add_tag,
        remove_tags: args.rm_tag,
        kind: args.kind,
        importance: args.importance,
        ..PatchMemory::default()
    };
    if patch.title.is_none()
        && patch.content.is_none()
        && patch.add_tags.is_empty()
        && patch.remove_tags.is_empty()
        && patch.kind.is_none()
        && patch.importance.is_none()
    {
        bail!(
            "nothing to change: give --title, --content, --add-tag, --rm-tag, --kind or --importance"
        );
    }
    let memory = api.update(&args.id, patch)?;
    if args.json {
        writeln!(out, "{}", output::json(&memory))?;
    } else {
        writeln!(out, "updated {}", memory.id)?;
    }
    Ok(())
}

fn print_hits(out: &mut impl Write, hits: &[HitView], json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", output::json(&hits))?;
    } else {
        output::print_hits(out, hits)?;
    }
    Ok(())
}

/// `mnemon task …` on `api`.
fn run_task(api: &dyn Api, command: TaskCommand, out: &mut impl Write) -> Result<()> {
    match command {
        TaskCommand::Add {
            text,
            priority,
            due,
            difficulty,
            xp,
            collection,
            tags,
            json,
        } => {
            let memory = api.create(CreateMemory {
                content: text,
                tags,
                collection,
                task: Some(TaskFields {
                    status: Some(TaskStatus::Open),
                    priority: Some(priority),
                    due,
                    difficulty: Some(difficulty),
                    xp,
                }),
                ..CreateMemory::default()
            })?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                writeln!(out, "{}", memory.id)?;
            }
        }
        TaskCommand::List {
            all,
            collection,
            json,
        } => {
            let tasks = api.list_all(&ListQuery {
                collection,
                kind: Some("task".to_owned()),
                ..ListQuery::default()
            })?;
            let board = TaskBoard::new(tasks);
            if json {
                writeln!(out, "{}", output::json(&board.list(all)))?;
            } else {
                output::print_tasks(&board, out, all)?;
            }
        }
        TaskCommand::Done { id, json } => {
            let id = parse_memory_id(&id)?.to_string();
            let memory = api.complete_task(&id)?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                let xp = memory.task.as_ref().map_or(0, |t| t.xp);
                writeln!(out, "done: {} (+{xp} xp)", memory.title)?;
            }
        }
        TaskCommand::Reopen { id, json } => {
            let id = parse_memory_id(&id)?.to_string();
            let memory = api.reopen_task(&id)?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                writeln!(out, "open again: {}", memory.title)?;
            }
        }
        TaskCommand::Edit {
            id,
            due,
            no_due,
            priority,
            difficulty,
            json,
        } => {
            let id = parse_memory_id(&id)?.to_string();
            let current = api.get(&id)?;
            if current.task.is_none() {
                anyhow::bail!(
                    "{id} is a {}, not a task (`mnemon edit` changes it)",
                    current.kind
                );
            }
            let fields = mnemon_api::TaskFields {
                due: if no_due { Some(String::new()) } else { due },
                priority,
                difficulty,
                ..mnemon_api::TaskFields::default()
            };
            if fields == mnemon_api::TaskFields::default() {
                anyhow::bail!(
                    "nothing to change: give --due, --no-due, --priority or --difficulty"
                );
            }
            let memory = api.update(
                &id,
                mnemon_api::PatchMemory {
                    task: Some(fields),
                    ..mnemon_api::PatchMemory::default()
                },
            )?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                let task = memory.task.as_ref();
                writeln!(
                    out,
                    "{}: priority {}, difficulty {}, {}",
                    memory.title,
                    task.map_or(0, |t| t.priority),
                    task.map_or(1, |t| t.difficulty),
                    task.and_then(|t| t.due.as_deref())
                        .map_or("no due date".to_owned(), |d| format!("due {d}"))
                )?;
            }
        }
    }
    Ok(())
}
