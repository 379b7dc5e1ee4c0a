//! The [`Api`] the node offers: memories (create, read, list, edit, delete, search, the
//! graph, questions) here; sharing in `sharing.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mnemon_api::{
    AnswerView, AskEvent, AskRequest, BackupFile, BackupRequest, CollectionDeleted, CollectionView,
    CreateMemory, Dedupe, DialRequest, Events, GraphQuery, GraphView, HitView, InviteRequest,
    InviteView, JoinRequest, JoinView, ListQuery, MemberView, MemoryView, Page, PatchMemory,
    PeerView, SearchQuery, ShareRequest,
};
use mnemon_api::{Api, Error as ApiError, Gauge, Pending, on_blocking_pool};
use mnemon_crdt::{ListFilter, MemoryEdit, MemoryId, NewMemory, Source, Store, Task, Timestamp};

use crate::search::{Filter, Hit, Mode, Query, Read, SearchIndex};

use super::{
    DEFAULT_PAGE, MAX_GRAPH_DEPTH, MAX_GRAPH_NODES, MAX_PAGE, Service, WIKILINK, load_live,
    parse_id, search_error, sharing, store_error,
};

/// The largest text [`Api::create_async`] builds on the caller's task (an async worker,
/// which should not be held for long); a larger one is built on the blocking pool. A
/// memory's document grows faster than its text: built in 0.34 ms at 1 KiB, 0.96 ms at
/// 4 KiB, 6.8 ms at 16 KiB and 33 ms at 64 KiB (release build, this machine kind).
const INLINE_CREATE_BYTES: usize = 1024;

/// The most hits [`Api::search_async`] looks for on the caller's task: a larger `k` means
/// a deeper first stage (four candidates a hit), which goes to the blocking pool.
const INLINE_SEARCH_K: usize = 100;

/// The most text (bytes, all hits together) whose snippets [`Api::search_async`] makes on
/// the caller's task: a keyword hit's every chunk is searched for the query's words, so
/// the cost follows the texts' length (a page of ten short notes is a few KiB; one
/// memory may be megabytes).
const INLINE_SNIPPET_BYTES: usize = 64 * 1024;

/// Hits as the API shows them.
fn hit_views(hits: Vec<Hit>) -> Vec<HitView> {
    hits.into_iter()
        .map(|h| HitView {
            id: h.id.to_string(),
            title: h.title,
            created_at: h.created.to_string(),
            score: h.score,
            snippet: h.snippet,
            chunk: h.chunk,
        })
        .collect()
}

/// A new memory checked, built and signed, waiting for the writer: everything of a
/// create that can run on the caller's thread.
struct Creation {
    prepared: mnemon_crdt::PreparedMemory,
    /// What a duplicate must match, when the caller asked for one to be answered instead
    /// (shared with the write: the text may be megabytes).
    dedupe: Option<Arc<DedupeCheck>>,
}

/// What a memory of the collection must match to answer a create with `dedupe`.
struct DedupeCheck {
    mode: Dedupe,
    collection: Option<mnemon_crdt::CollectionId>,
    title: Option<String>,
    content: String,
    tags: Vec<String>,
    kind: String,
}

/// What the writer did with a [`Creation`]: the duplicate it found, or the new memory's
/// change sequence number.
type Created = (Option<mnemon_crdt::Memory>, Option<u64>);

impl Creation {
    /// The write the writer thread runs (it may run more than once: see
    /// [`mnemon_crdt::StoreHandle::write`]).
    fn write(
        &self,
    ) -> impl FnMut(&mut Store) -> Result<Created, mnemon_crdt::StoreError> + Send + 'static {
        let stored = self.prepared.clone();
        let dedupe = self.dedupe.clone();
        move |s: &mut Store| {
            // On the writer thread: no write committed meanwhile can slip between the
            // check and the write.
            if let Some(d) = &dedupe {
                let collection = d.collection.unwrap_or_else(|| s.default_collection());
                let existing = s.same_text(collection, &d.content)?.into_iter().find(|m| {
                    let same_text = d.mode == Dedupe::Near || m.content == d.content;
                    let same_title = d.title.as_ref().is_none_or(|t| {
                        mnemon_crdt::title_key(t) == mnemon_crdt::title_key(&m.title)
                    });
                    let tagged = d
                        .tags
                        .iter()
                        .all(|t| mnemon_crdt::normalize_tag(t).is_ok_and(|t| m.tags.contains(&t)));
                    same_text && same_title && tagged && m.kind == d.kind
                });
                if let Some(existing) = existing {
                    return Ok((Some(existing), None));
                }
            }
            s.add_prepared(&stored)?;
            Ok((None, Some(s.last_write_seq())))
        }
    }
}

impl Service {
    /// `query` as the index takes it: its collections resolved and its filter checked
    /// (snapshot reads), with the re-rankers it asks for (loaded on first use).
    fn index_query(&self, query: &SearchQuery) -> Result<Query, ApiError> {
        let mode = match query.mode.unwrap_or_default() {
            mnemon_api::SearchMode::Hybrid => Mode::Hybrid,
            mnemon_api::SearchMode::Semantic => Mode::Semantic,
            mnemon_api::SearchMode::Keyword => Mode::Keyword,
        };
        let store = self.store();
        let collection = query
            .collection
            .as_deref()
            .map(|c| SearchIndex::collection_filter(store, c))
            .transpose()
            .map_err(search_error)?;
        let within = query
            .within
            .as_ref()
            .map(|ids| {
                ids.iter()
                    .map(|c| SearchIndex::collection_filter(store, c))
                    .collect::<Result<Vec<u128>, _>>()
            })
            .transpose()
            .map_err(search_error)?;
        let filter = Filter {
            collections: match (collection, within) {
                (Some(c), Some(within)) => Some(if within.contains(&c) { vec![c] } else { vec![] }),
                (Some(c), None) => Some(vec![c]),
                (None, within) => within,
            },
            tag: query
                .tag
                .as_deref()
                .map(mnemon_crdt::normalize_tag)
                .transpose()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
            kind: query.kind.clone(),
            since: query.since,
            until: query.until,
            min_importance: query.min_importance,
        };
        let rerank = if query.rerank == Some(false) {
            Vec::new()
        } else {
            let configured = self.rerankers()?;
            if query.rerank == Some(true) && configured.is_empty() {
                return Err(ApiError::invalid(
                    "no re-ranker is set up: set [search] rerank in config.toml (\"model\" after `mnemon model install` with a cross-encoder, or \"llm\" with a [chat] endpoint)",
                ));
            }
            configured
        };
        Ok(Query {
            text: query.q.clone(),
            k: query.k.unwrap_or(10),
            mode,
            filter,
            rerank,
        })
    }

    /// [`Api::search`] on the calling thread, which may wait: for the index to reach
    /// `after`, to catch it up (a process without an indexer), for a turn, for a model.
    fn search_waiting(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
        if let Some(seq) = query.after {
            self.wait_indexed(seq)?;
        } else {
            self.index_now();
        }
        let store = self.store();
        let query = self.index_query(query)?;
        // The index is held for the first stage only: a re-ranker (a chat endpoint) can
        // take its time without holding up other searches or the indexer. The first stage
        // (most of a search's work) is taken in turns: see [`Turns`].
        let candidates = {
            let _turn = self.search_turns.wait();
            self.with_index_read(|index| index.first_stage(&query))?
        };
        let hits = candidates.finish(store).map_err(search_error)?;
        Ok(hit_views(hits))
    }

    /// The first stage of `query` and its hits read, on an async worker, if that waits for
    /// nothing; `None` (nothing done) if it would. It would when the background indexer
    /// does not run (the search catches the index up itself), `after` names a change the
    /// index has not reached, a re-ranker may run, the embedder is a model (milliseconds of
    /// inference, or a remote call) and the query needs it, the query asks for more than
    /// [`INLINE_SEARCH_K`] hits, or the index is held for writing (an opening holds it for
    /// up to a second at 100,000 memories). No turn is taken: the workers are few already.
    fn search_on_worker(&self, query: &SearchQuery) -> Option<Result<Read, ApiError>> {
        if !self.indexer.load(Ordering::Relaxed)
            || query.k.is_some_and(|k| k > INLINE_SEARCH_K)
            || query.after.is_some_and(|seq| self.progress.get() < seq)
        {
            return None;
        }
        let reranks = query.rerank != Some(false)
            && match self.rerankers.get() {
                Some(loaded) => !loaded.is_empty(),
                None => self.rerank_loader.get().is_some(),
            };
        if reranks {
            return None;
        }
        let keyword_only = query.mode == Some(mnemon_api::SearchMode::Keyword);
        let index = self.index.try_read().ok()?;
        if index.as_ref()?.searches_meaning() && !keyword_only {
            return None;
        }
        // The query is made ready outside the index's lock, then the first stage runs under
        // a guard that found the index free: a writer that queues after it cannot hold this
        // worker up.
        drop(index);
        let query = match self.index_query(query) {
            Ok(query) => query,
            Err(e) => return Some(Err(e)),
        };
        let candidates = {
            let index = self.index.try_read().ok()?;
            index.as_ref()?.first_stage(&query).map_err(search_error)
        };
        Some(candidates.and_then(|c| c.read(self.store()).map_err(search_error)))
    }

    /// Checks, builds and signs a new memory (a few snapshot reads and one automerge
    /// document; no write).
    fn creation(&self, new: CreateMemory) -> Result<Creation, ApiError> {
        let mut links = Self::links(&new.links)?;
        // Imports resolve wikilinks themselves, with the vault's own names.
        if new.source.as_ref().is_none_or(|s| s.kind != "import") {
            let within = resolve_within(self.store(), new.within.as_deref())?;
            for target in
                self.resolve_titles(&Self::wikilink_names(&new.content), None, within.as_deref())
            {
                if !links.iter().any(|(t, _)| *t == target) {
                    links.push((target, WIKILINK.to_owned()));
                }
            }
        }
        let task = new
            .task
            .as_ref()
            .map(|t| t.apply(&Task::default()))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("task: {e}")))?;
        let time = |field: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(str::parse::<Timestamp>)
                .transpose()
                .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
        };
        let created_at = time("created_at", &new.created_at)?;
        let updated_at = time("updated_at", &new.updated_at)?;
        let source = match new.source {
            Some(s) => Source {
                kind: s.kind,
                uri: s.uri,
            },
            None => Source {
                kind: self.source.into(),
                uri: None,
            },
        };
        let kind = match (new.kind, &task) {
            (None, Some(_)) => Some("task".to_owned()),
            (kind, _) => kind,
        };
        let store = self.store();
        let collection = new
            .collection
            .as_deref()
            .map(|c| store.resolve_collection(c))
            .transpose()
            .map_err(store_error)?;
        let dedupe = new.dedupe.unwrap_or_default();
        let memory = NewMemory {
            title: new.title,
            content: new.content,
            tags: new.tags,
            kind,
            importance: new.importance,
            source: Some(source),
            collection,
            links,
            task,
            created_at,
            updated_at,
        };
        let prepared = self
            .writer
            .builder()
            .prepare(&memory)
            .map_err(store_error)?;
        // A duplicate says the same, is of the same kind, has the title given (if one is)
        // and every tag given: nothing the caller asked for is dropped by answering it.
        // (The text is kept for the check only when one is asked for: it may be megabytes.)
        let dedupe = (dedupe != Dedupe::Off).then(|| {
            Arc::new(DedupeCheck {
                mode: dedupe,
                collection,
                title: memory.title,
                content: memory.content,
                tags: memory.tags,
                kind: memory.kind.unwrap_or_else(|| "note".to_owned()),
            })
        });
        Ok(Creation { prepared, dedupe })
    }

    /// The answer to a create, once the writer has committed it (or found a duplicate).
    fn created(
        &self,
        creation: Creation,
        (existing, seq): Created,
    ) -> Result<MemoryView, ApiError> {
        let created = existing.is_none();
        let memory = existing.unwrap_or_else(|| creation.prepared.into_memory());
        let mut view = MemoryView::new(memory, &self.names(self.store())?);
        view.seq = seq;
        if creation.dedupe.is_some() {
            view.created = Some(created);
        }
        Ok(view)
    }
}

impl Api for Service {
    fn create(&self, new: CreateMemory) -> Result<MemoryView, ApiError> {
        let creation = self.creation(new)?;
        let outcome = self
            .writer
            .write_blocking(creation.write())
            .map_err(store_error)?;
        self.created(creation, outcome)
    }

    fn create_async(self: Arc<Self>, new: CreateMemory) -> Pending<MemoryView> {
        Box::pin(async move {
            // A small memory (the usual case: a fraction of a millisecond) is built here,
            // so that only the commit is awaited; a larger one on the blocking pool.
            let creation = if new.content.len() <= INLINE_CREATE_BYTES {
                self.creation(new)?
            } else {
                let service = self.clone();
                on_blocking_pool(move || service.creation(new)).await?
            };
            let outcome = self
                .writer
                .write(creation.write())
                .await
                .map_err(store_error)?;
            self.created(creation, outcome)
        })
    }

    fn get(&self, id: &str) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        self.view(self.store(), id)
    }

    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, ApiError> {
        let id = parse_id(id)?;
        let store = self.store();
        store.get(id).map_err(store_error)?;
        let names = self.names(store)?;
        Ok(store
            .backlinks(id)
            .map_err(store_error)?
            .into_iter()
            .map(|m| MemoryView::new(m, &names))
            .collect())
    }

    fn graph(&self, query: &GraphQuery) -> Result<GraphView, ApiError> {
        let depth = query.depth.unwrap_or(2);
        if depth > MAX_GRAPH_DEPTH {
            return Err(ApiError::invalid(format!(
                "depth must be from 0 to {MAX_GRAPH_DEPTH}, not {depth}"
            )));
        }
        let limit = query.limit.unwrap_or(300);
        if limit == 0 || limit > MAX_GRAPH_NODES {
            return Err(ApiError::invalid(format!(
                "limit must be from 1 to {MAX_GRAPH_NODES}, not {limit}"
            )));
        }
        let store = self.store();
        let center = query.center.as_deref().map(parse_id).transpose()?;
        let center_memory = center
            .map(|c| store.get(c))
            .transpose()
            .map_err(store_error)?;
        let collection = query
            .collection
            .as_deref()
            .map(|c| store.resolve_collection(c))
            .transpose()
            .map_err(store_error)?;
        let within = resolve_within(store, query.within.as_deref())?;
        // The collections the walk may enter: the one asked for, within the caller's.
        let allowed: Option<Vec<mnemon_crdt::CollectionId>> = match (collection, within) {
            (Some(c), Some(within)) => Some(within.into_iter().filter(|w| *w == c).collect()),
            (Some(c), None) => Some(vec![c]),
            (None, within) => within,
        };
        let allowed = allowed.as_deref();
        if let Some(center) = center_memory
            && allowed.is_none_or(|a| a.contains(&center.collection))
        {
            // Walk the link tables level by level, and load only the memories kept (plus
            // one, so `truncated` is told right).
            let mut seen = HashSet::from([center.id]);
            let mut kept = vec![center.id];
            let mut level = vec![center.id];
            for _ in 0..depth {
                if level.is_empty() || kept.len() > limit {
                    break;
                }
                let mut next = Vec::new();
                for neighbours in store
                    .link_neighbours(&level, allowed)
                    .map_err(store_error)?
                {
                    for id in neighbours {
                        if seen.insert(id) {
                            next.push(id);
                        }
                    }
                }
                kept.extend_from_slice(&next);
                level = next;
            }
            kept.truncate(limit + 1);
            let mut memories = vec![center];
            memories.extend(load_live(store, &kept[1..])?);
            let center = memories[0].id;
            return Ok(crate::graph::around(&memories, center, depth, limit));
        }
        // No center (or one outside the collection asked for): every linked memory, most
        // recently changed first, loading only those kept.
        let linked = store.linked(allowed).map_err(store_error)?;
        let memories = load_live(store, &linked[..linked.len().min(limit)])?;
        Ok(crate::graph::of_linked(&memories, linked.len() > limit))
    }

    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, ApiError> {
        let chat = self.chat.get().ok_or_else(|| {
            ApiError::unavailable("no chat model is configured: add [chat] to config.toml")
        })?;
        crate::ask::answer(self, chat, request, on_event)
    }

    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, ApiError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::invalid(format!(
                "limit must be from 1 to {MAX_PAGE}, not {limit}"
            )));
        }
        let offset = query.offset.unwrap_or(0);
        let store = self.store();
        // A caller held to some collections sees only those.
        let within = query
            .within
            .as_ref()
            .map(|ids| {
                ids.iter()
                    .map(|c| store.resolve_collection(c))
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()
            .map_err(store_error)?;
        let filter = ListFilter {
            collection: query
                .collection
                .as_deref()
                .map(|c| store.resolve_collection(c))
                .transpose()
                .map_err(store_error)?,
            tag: query.tag.clone(),
            kind: query.kind.clone(),
            within,
            title: query.title.clone(),
            offset,
            limit: Some(limit),
        };
        // Only the page is read from the store, whatever the total.
        let (page, total) = store.list_page(&filter).map_err(store_error)?;
        let names = self.names(store)?;
        let items: Vec<MemoryView> = page
            .into_iter()
            .map(|m| MemoryView::new(m, &names))
            .collect();
        let next = offset + items.len();
        Ok(Page {
            items,
            total,
            next_offset: (next < total).then_some(next),
        })
    }

    fn update(&self, id: &str, patch: PatchMemory) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        let mut add_links = Self::links(&patch.add_links)?;
        let mut remove_links: Vec<MemoryId> = patch
            .remove_links
            .iter()
            .map(|l| parse_id(l))
            .collect::<Result<_, _>>()?;
        let current = (patch.content.is_some() || patch.task.is_some())
            .then(|| self.store().get(id).map_err(store_error))
            .transpose()?;
        // New text: its wikilinks become links, and links made from wikilinks that are
        // gone from it go.
        if let (Some(content), Some(current)) = (&patch.content, &current) {
            let names = Self::wikilink_names(content);
            let within = resolve_within(self.store(), patch.within.as_deref())?;
            let targets = self.resolve_titles(&names, Some(id), within.as_deref());
            for target in &targets {
                if !current.links.contains_key(target)
                    && !add_links.iter().any(|(t, _)| t == target)
                {
                    add_links.push((*target, WIKILINK.to_owned()));
                }
            }
            let store = self.store();
            for (target, relation) in &current.links {
                if relation != WIKILINK || targets.contains(target) || remove_links.contains(target)
                {
                    continue;
                }
                // A caller held to some collections leaves links into the others alone.
                if let Some(allowed) = &within
                    && !store
                        .get(*target)
                        .is_ok_and(|m| allowed.contains(&m.collection))
                {
                    continue;
                }
                // Still named, though no longer resolvable to it alone: kept.
                let named = store
                    .get(*target)
                    .is_ok_and(|m| names.contains(&mnemon_crdt::title_key(&m.title)));
                if !named {
                    remove_links.push(*target);
                }
            }
        }
        let (task, kind) = match (&patch.task, &current) {
            (Some(fields), Some(current)) => {
                let base = current.task.clone().unwrap_or_default();
                let task = fields
                    .apply(&base)
                    .map_err(|e| ApiError::invalid(format!("task: {e}")))?;
                let kind = match patch.kind {
                    None if current.kind != "task" => Some("task".to_owned()),
                    kind => kind,
                };
                (Some(task), kind)
            }
            _ => (None, patch.kind),
        };
        // A title that was derived from the first line follows it, until one is set.
        let title = match (patch.title, &patch.content, &current) {
            (None, Some(content), Some(current))
                if current.title == mnemon_crdt::derive_title(&current.content)
                    && mnemon_crdt::derive_title(content) != current.title
                    && !mnemon_crdt::derive_title(content).is_empty() =>
            {
                Some(mnemon_crdt::derive_title(content))
            }
            (title, _, _) => title,
        };
        // Not held through the write: its text may be megabytes.
        drop(current);
        let edit = MemoryEdit {
            title,
            content: patch.content,
            add_tags: patch.add_tags,
            remove_tags: patch.remove_tags,
            kind,
            importance: patch.importance,
            add_links,
            remove_links,
            task,
        };
        if edit.is_empty() {
            return Err(ApiError::bad_request("the patch changes nothing"));
        }
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.edit(id, &edit)?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        let mut view = MemoryView::new(memory, &self.names(self.store())?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn delete(&self, id: &str) -> Result<(), ApiError> {
        let id = parse_id(id)?;
        self.writer
            .write_blocking(move |s: &mut Store| s.remove(&[id]))
            .map_err(store_error)?;
        self.forget_in_index(&[id]);
        Ok(())
    }

    fn resolve_conflict(&self, id: &str, theirs: bool) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.resolve_conflict(id, theirs)?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        let mut view = MemoryView::new(memory, &self.names(self.store())?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn forget_history(&self, id: &str) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.forget_history(id)?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        self.forget_in_index(&[id]);
        let mut view = MemoryView::new(memory, &self.names(self.store())?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn move_memory(&self, id: &str, collection: &str) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        let to = self
            .store()
            .resolve_collection(collection)
            .map_err(store_error)?;
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.move_memory(id, to)?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        if memory.id != id {
            self.forget_in_index(&[id]);
        }
        let mut view = MemoryView::new(memory, &self.names(self.store())?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn search_async(self: Arc<Self>, query: SearchQuery) -> Pending<Vec<HitView>> {
        Box::pin(async move {
            let read = match self.search_on_worker(&query) {
                Some(read) => read?,
                None => return on_blocking_pool(move || self.search(&query)).await,
            };
            // The snippets of long texts are made on the blocking pool.
            if read.text_bytes() <= INLINE_SNIPPET_BYTES {
                return Ok(hit_views(read.hits()));
            }
            on_blocking_pool(move || Ok(hit_views(read.hits()))).await
        })
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
        self.search_waiting(query)
    }

    fn name_node(&self, did: &str, name: &str) -> Result<(), ApiError> {
        sharing::name_node(self, did, name)
    }

    fn collections(&self) -> Result<Vec<CollectionView>, ApiError> {
        sharing::collections(self)
    }

    fn create_collection(&self, name: &str) -> Result<CollectionView, ApiError> {
        sharing::create_collection(self, name)
    }

    fn rename_collection(&self, collection: &str, name: &str) -> Result<CollectionView, ApiError> {
        sharing::rename_collection(self, collection, name)
    }

    fn delete_collection(&self, collection: &str) -> Result<CollectionDeleted, ApiError> {
        sharing::delete_collection(self, collection)
    }

    fn members(&self, collection: &str) -> Result<Vec<MemberView>, ApiError> {
        sharing::members(self, collection)
    }

    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, ApiError> {
        sharing::share(self, collection, request)
    }

    fn unshare(&self, collection: &str, did: &str) -> Result<(), ApiError> {
        sharing::unshare(self, collection, did)
    }

    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, ApiError> {
        sharing::invite(self, collection, request)
    }

    fn join(&self, request: JoinRequest) -> Result<JoinView, ApiError> {
        sharing::join(self, request)
    }

    fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        sharing::peers(self)
    }

    fn dial(&self, request: DialRequest) -> Result<(), ApiError> {
        sharing::dial(self, &request.address)
    }

    fn backup(&self, request: BackupRequest) -> Result<BackupFile, ApiError> {
        let Some(setup) = self.backups() else {
            return Err(ApiError::unavailable(
                "backups are not set up in this process",
            ));
        };
        let passphrase = match request.passphrase.as_deref() {
            Some(given) if given.chars().count() < mnemon_api::MIN_PASSPHRASE => {
                return Err(ApiError::invalid(format!(
                    "passphrase: at least {} characters",
                    mnemon_api::MIN_PASSPHRASE
                )));
            }
            Some(given) => zeroize::Zeroizing::new(given.to_owned()),
            None => match &setup.schedule {
                Some(schedule) => schedule
                    .passphrase()
                    .map_err(|e| ApiError::invalid(format!("{e:#}")))?,
                None => {
                    return Err(ApiError::invalid(
                        "passphrase: give one, or name one in [backup] of config.toml",
                    ));
                }
            },
        };
        // Not recorded as the last backup: only the caller knows whether it kept the file
        // (`mnemon backup` records it once written).
        let (manifest, bytes, file) =
            crate::backup::create_unnamed(self.store(), &setup.data, passphrase.as_bytes())
                .map_err(|e| match e.downcast_ref::<crate::backup::Busy>() {
                    Some(busy) => ApiError::unavailable(busy.to_string()),
                    None => ApiError::internal(format!("taking a backup: {e:#}")),
                })?;
        Ok(BackupFile {
            view: crate::backup::view_of(&manifest, bytes),
            body: Box::new(file),
        })
    }

    fn status(&self) -> Result<serde_json::Value, ApiError> {
        let store = self.store();
        let status = self.with_index_read(|index| index.status(store))?;
        let (lag_changes, lag_ms) = self.index_lag();
        Ok(serde_json::json!({
            "did": store.did().to_string(),
            "chat": self.chat.get().map(|chat| serde_json::json!({ "model": chat.model() })),
            "rerank": self.rerankers.get().map(|r| r.iter().map(|r| r.name().to_owned()).collect::<Vec<_>>()),
            "memories": status.memories,
            "collections": store.collections().map_err(store_error)?.len(),
            "index": {
                "models": [ {
                    "model": status.model,
                    "meaning": status.meaning,
                    "indexed": status.indexed,
                    "pending": status.pending,
                    "pending_changes": status.pending_changes,
                    "vectors_stored": status.vectors_stored,
                    "segments": status.segments,
                    "building_graph": self.building_graph.load(std::sync::atomic::Ordering::Relaxed),
                } ],
                "keyword_indexed": status.keyword_indexed,
                "keyword_pending": status.keyword_pending,
                "lag_changes": lag_changes,
                "lag_ms": lag_ms,
                "seq": store.last_seq().map_err(store_error)?,
            },
            "disk_refusing": store.disk_refusing(),
            "conflicts": store.conflicted().map_err(store_error)?.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "joins": {
                "pending": store.pending_joins(None).map_err(store_error)?.iter().map(|t| serde_json::json!({
                    "collection": mnemon_crdt::CollectionId::from_u128(u128::from_be_bytes(t.invite.collection)).to_string(),
                    "owner": t.invite.owner.to_string(),
                })).collect::<Vec<_>>(),
                "refused": store.join_refusals().map_err(store_error)?.iter().map(|r| serde_json::json!({
                    "collection": r.collection.to_string(),
                    "owner": r.owner.to_string(),
                    "reason": r.reason,
                    "at": r.at.as_millis(),
                })).collect::<Vec<_>>(),
            },
            "backup": self.backups().map(|b| crate::backup::State::load(b.data.root())
                .to_json(b.schedule.as_ref(), crate::backup::now_ms())),
            "network": self.network.get().map(|n| serde_json::json!({
                "peer_id": n.peer_id.to_string(),
                "addresses": n.addresses(),
                "reachability": n.reachability(),
                "peers_connected": n.peers().iter().filter(|p| p.connected).count(),
            })),
        }))
    }

    fn events(&self) -> Events {
        Events::new(self.events.subscribe())
    }

    fn ready(&self) -> bool {
        // Not ready while the disk refuses writes: the store probes it until it takes one.
        self.ready.load(Ordering::Relaxed) && self.store().disk_refusing().is_none()
    }

    fn searches_meaning(&self) -> Result<bool, ApiError> {
        self.with_index_read(|index| Ok(index.searches_meaning()))
    }

    fn gauges(&self) -> Result<Vec<Gauge>, ApiError> {
        let store = self.store();
        let mut gauges = Vec::new();
        if let Ok(count) = store.count() {
            gauges.push(Gauge {
                name: "mnemon_memories",
                help: "Memories in the store.",
                counter: false,
                values: vec![(vec![], count as f64)],
            });
        }
        if let Ok(status) = self.with_index_read(|index| index.status(store)) {
            gauges.push(Gauge {
                name: "mnemon_index_memories",
                help: "Memories in each search index.",
                counter: false,
                values: vec![
                    (
                        vec![
                            ("index", "vector".to_owned()),
                            ("model", status.model.clone()),
                        ],
                        status.indexed as f64,
                    ),
                    (
                        vec![("index", "keyword".to_owned()), ("model", String::new())],
                        status.keyword_indexed as f64,
                    ),
                ],
            });
            gauges.push(Gauge {
                name: "mnemon_index_pending",
                help: "Memories changed but not yet in the vector index.",
                counter: false,
                values: vec![(vec![("model", status.model)], status.pending as f64)],
            });
            gauges.push(Gauge {
                name: "mnemon_vectors_stored",
                help: "Vectors stored, live and stale.",
                counter: false,
                values: vec![(vec![], status.vectors_stored as f64)],
            });
        }
        if let Some(network) = self.network.get() {
            let peers = network.peers();
            gauges.push(Gauge {
                name: "mnemon_peers_connected",
                help: "Peers with an open connection (each has one sync session).",
                counter: false,
                values: vec![(vec![], peers.iter().filter(|p| p.connected).count() as f64)],
            });
            let label = |did: &str| {
                did.parse::<mnemon_identity::Did>()
                    .map_or_else(|_| did.to_owned(), |d| mnemon_net::short_did(&d))
            };
            gauges.push(Gauge {
                name: "mnemon_peer_connected",
                help: "1 while a peer is connected (with its one sync session), else 0.",
                counter: false,
                values: peers
                    .iter()
                    .map(|p| {
                        (
                            vec![("peer", label(&p.did))],
                            f64::from(u8::from(p.connected)),
                        )
                    })
                    .collect(),
            });
            gauges.push(Gauge {
                name: "mnemon_sync_bytes_total",
                help: "Bytes on sync streams per peer and direction since the node started.",
                counter: true,
                values: peers
                    .iter()
                    .flat_map(|p| {
                        [
                            (
                                vec![("peer", label(&p.did)), ("direction", "sent".to_owned())],
                                p.bytes_sent as f64,
                            ),
                            (
                                vec![
                                    ("peer", label(&p.did)),
                                    ("direction", "received".to_owned()),
                                ],
                                p.bytes_received as f64,
                            ),
                        ]
                    })
                    .collect(),
            });
        }
        let (groups, writes) = self.writer.commits();
        gauges.push(Gauge {
            name: "mnemon_store_commits_total",
            help: "Durable group commits of the store's writer.",
            counter: true,
            values: vec![(vec![], groups as f64)],
        });
        gauges.push(Gauge {
            name: "mnemon_store_writes_total",
            help: "Memory writes committed (several share a commit).",
            counter: true,
            values: vec![(vec![], writes as f64)],
        });
        gauges.push(Gauge {
            name: "mnemon_store_commit_seconds_total",
            help: "Time the writer spent in committed groups, start to durable commit (over mnemon_store_commits_total: the mean write latency).",
            counter: true,
            values: vec![(vec![], self.writer.commit_time().as_secs_f64())],
        });
        if let Some(bytes) = self
            .backups()
            .and_then(|b| std::fs::metadata(b.data.db_path()).ok())
            .map(|m| m.len())
        {
            gauges.push(Gauge {
                name: "mnemon_store_file_bytes",
                help: "Size of the store's database file.",
                counter: false,
                values: vec![(vec![], bytes as f64)],
            });
        }
        let (lag_changes, _) = self.index_lag();
        gauges.push(Gauge {
            name: "mnemon_index_lag_changes",
            help: "Change-log entries the keyword index has yet to apply.",
            counter: false,
            values: vec![(vec![], lag_changes as f64)],
        });
        if let Some(backups) = self.backups() {
            let state = crate::backup::State::load(backups.data.root());
            if let Some(last) = &state.last {
                gauges.push(Gauge {
                    name: "mnemon_backup_last_success_timestamp_seconds",
                    help: "When the last backup was taken (Unix time).",
                    counter: false,
                    values: vec![(vec![], last.at_ms as f64 / 1000.0)],
                });
            }
            if let Some(age) = state.age_secs(crate::backup::now_ms()) {
                gauges.push(Gauge {
                    name: "mnemon_backup_age_seconds",
                    help: "How old the last backup is.",
                    counter: false,
                    values: vec![(vec![], age as f64)],
                });
            }
            if let Some(schedule) = &backups.schedule {
                let overdue = crate::backup::overdue(
                    state.age_secs(crate::backup::now_ms()),
                    Some(schedule.interval.as_secs()),
                );
                gauges.push(Gauge {
                    name: "mnemon_backup_overdue",
                    help: "1 when the last backup is older than twice the backup interval.",
                    counter: false,
                    values: vec![(vec![], f64::from(u8::from(overdue)))],
                });
            }
        }
        if let Ok(sizes) = store.table_sizes() {
            gauges.push(Gauge {
                name: "mnemon_store_table_bytes",
                help: "Bytes stored per database table.",
                counter: false,
                values: sizes
                    .into_iter()
                    .map(|(table, bytes)| (vec![("table", table.to_owned())], bytes as f64))
                    .collect(),
            });
        }
        Ok(gauges)
    }
}

/// The collections a caller held to some may reach (`None`: every collection).
fn resolve_within(
    store: &mnemon_crdt::StoreReader,
    within: Option<&[String]>,
) -> Result<Option<Vec<mnemon_crdt::CollectionId>>, ApiError> {
    within
        .map(|ids| {
            ids.iter()
                .map(|c| store.resolve_collection(c))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(store_error)
}
