//! How the CLI prints memories and collections, for people and as JSON.

use std::collections::HashMap;
use std::io::Write;

use mnemon_crdt::{Collection, CollectionId, Memory, Store, StoreError};

use crate::search::Hit;
use serde_json::{Value, json};

/// Collection names by id, to show names beside ids.
pub(crate) fn collection_names(store: &Store) -> Result<HashMap<CollectionId, String>, StoreError> {
    Ok(store.collection_names()?.into_iter().collect())
}

/// A memory as JSON. The field set is part of the CLI's contract.
pub(crate) fn memory_json(memory: &Memory, names: &HashMap<CollectionId, String>) -> Value {
    json!({
        "id": memory.id.to_string(),
        "title": memory.title,
        "content": memory.content,
        "tags": memory.tags,
        "kind": memory.kind,
        "importance": memory.importance,
        "created_at": memory.created_at.to_string(),
        "updated_at": memory.updated_at.to_string(),
        "author": memory.author,
        "collection": memory.collection.to_string(),
        "collection_name": names.get(&memory.collection),
        "source": memory.source.as_ref().map(|s| json!({ "kind": s.kind, "uri": s.uri })),
        "links": memory.links.iter().map(|(target, relation)| json!({
            "target": target.to_string(),
            "relation": relation,
        })).collect::<Vec<_>>(),
    })
}

/// A collection as JSON.
pub(crate) fn collection_json(collection: &Collection) -> Value {
    json!({
        "id": collection.id.to_string(),
        "name": collection.name,
        "owner": collection.owner.to_string(),
        "created_at": collection.created_at.to_string(),
        "default": collection.is_default,
        "memories": collection.memories,
    })
}

pub(crate) fn print_memory(
    out: &mut impl Write,
    memory: &Memory,
    names: &HashMap<CollectionId, String>,
) -> std::io::Result<()> {
    writeln!(out, "{}", memory.title)?;
    writeln!(out, "id:         {}", memory.id)?;
    let collection = names
        .get(&memory.collection)
        .map_or_else(|| memory.collection.to_string(), Clone::clone);
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
    for (target, relation) in &memory.links {
        writeln!(out, "link:       {relation} → {target}")?;
    }
    writeln!(out)?;
    writeln!(out, "{}", memory.content)
}

pub(crate) fn print_list(out: &mut impl Write, memories: &[Memory]) -> std::io::Result<()> {
    for memory in memories {
        let date = memory.updated_at.to_string();
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
    collections: &[Collection],
) -> std::io::Result<()> {
    for c in collections {
        writeln!(
            out,
            "{}  {:<24} {:>6} memories{}",
            c.id,
            c.name,
            c.memories,
            if c.is_default { "  (default)" } else { "" }
        )?;
    }
    Ok(())
}

/// A search hit as JSON.
pub(crate) fn hit_json(hit: &Hit) -> Value {
    json!({
        "id": hit.id.to_string(),
        "title": hit.title,
        "score": hit.score,
        "snippet": hit.snippet,
        "chunk": hit.chunk,
    })
}

pub(crate) fn print_hits(out: &mut impl Write, hits: &[Hit]) -> std::io::Result<()> {
    if hits.is_empty() {
        writeln!(out, "no memories found")?;
    }
    for hit in hits {
        writeln!(out, "{}  {:.4}  {}", hit.id, hit.score, hit.title)?;
        writeln!(out, "    {}", hit.snippet)?;
    }
    Ok(())
}
