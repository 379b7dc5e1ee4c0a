//! The keyword index: BM25 over title, content and tags, with tantivy.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tantivy::collector::TopDocs;
use tantivy::merge_policy::{LogMergePolicy, MergePolicy as _};
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Term, doc};

use super::{Filter, SearchError};
use crate::background::with_background_priority;

/// Memory the index writer may use before it flushes a segment.
const WRITER_HEAP: usize = 50 * 1024 * 1024;

/// A scored memory, ordered best first: higher scores first, equal scores in index order
/// (as tantivy's top docs rank them). In a `BinaryHeap` the top is the worst.
#[derive(Debug, Clone, Copy)]
struct Ranked(f32, DocAddress);

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

#[derive(Debug, Clone, Copy)]
struct Fields {
    /// The memory's id as text: what a change or delete names it by.
    id: Field,
    /// The id's two halves as columns: what a search reads a hit's id from (a column
    /// read, where a stored field would decompress a block of the document store).
    id_hi: Field,
    id_lo: Field,
    title: Field,
    content: Field,
    context: Field,
    context_of: Field,
    tags_text: Field,
    /// The words of title, content, context and tags together, without frequencies or
    /// norms: what a query with every word intersects (one posting list per word, rather
    /// than a union of four).
    all: Field,
    tag: Field,
    kind: Field,
    collection: Field,
    created: Field,
    importance: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("en_stem")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_text_field("id", STRING),
        id_hi: builder.add_u64_field("id_hi", FAST),
        id_lo: builder.add_u64_field("id_lo", FAST),
        title: builder.add_text_field("title", text.clone()),
        content: builder.add_text_field("content", text.clone()),
        context: builder.add_text_field("context", text.clone()),
        context_of: builder.add_text_field("context_of", STRING),
        tags_text: builder.add_text_field("tags_text", text),
        all: builder.add_text_field(
            "all",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("en_stem")
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            ),
        ),
        // Folded to lower case: tags match without regard to case. (Renamed from `tag`
        // when that began, so an older index is rebuilt.)
        tag: builder.add_text_field("tag_folded", STRING),
        kind: builder.add_text_field("kind", STRING),
        collection: builder.add_text_field("collection", STRING),
        created: builder.add_i64_field("created", INDEXED | FAST),
        importance: builder.add_f64_field("importance", INDEXED | FAST),
    };
    (builder.build(), fields)
}

/// What the keyword index stores of a memory.
#[derive(Debug)]
pub(super) struct KeywordDoc<'a> {
    pub(super) id: u128,
    pub(super) title: &'a str,
    pub(super) content: &'a str,
    /// What came just before a short memory (see [`crate::context`]); may be empty.
    pub(super) context: &'a str,
    /// The memories that context is of.
    pub(super) context_ids: &'a [u128],
    pub(super) tags: Vec<&'a str>,
    pub(super) kind: &'a str,
    pub(super) collection: u128,
    pub(super) created: i64,
    pub(super) importance: f64,
}

/// The tantivy index in one folder.
pub(super) struct KeywordIndex {
    reader: IndexReader,
    fields: Fields,
    /// What commits: shared with [`Committer`]s, so a commit can run without the
    /// search index being held (searches read through `reader` meanwhile).
    committer: Committer,
}

/// Segments kept before an inline commit ([`Merging::IfMany`]) merges them into one.
const MAX_SEGMENTS: usize = 8;

/// What a commit merges. Searching one segment is fastest; merging costs time in
/// proportion to what is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merging {
    /// Everything into one segment, and old files deleted: a purge (no deleted memory's
    /// text is left on disk).
    All,
    /// Everything, once there are more than [`MAX_SEGMENTS`] (commits in this process).
    IfMany,
    /// Small segments by size level (tantivy's log merge policy, in the foreground): while
    /// writes stream in, a commit never rewrites the whole index.
    ByLevel,
    /// Once writes have stopped: every segment but the largest into one (or all of them,
    /// if the largest is not most of the index), so a search reads at most two segments
    /// and the merge costs what the small segments hold.
    Small,
}

/// Commits a keyword index's staged changes: a handle that can run apart from the
/// [`KeywordIndex`] it came from (the writer is behind its own lock).
#[derive(Clone)]
pub(super) struct Committer {
    index: Index,
    reader: IndexReader,
    writer: Arc<Mutex<IndexWriter>>,
    /// Held while segments merge (the writer is not: writes go on meanwhile). A commit
    /// that would merge by level skips its merges while another merge runs.
    merging: Arc<Mutex<()>>,
    /// How many times the writer was rolled back. A rollback drops what a commit waiting
    /// to finish holds (tantivy then skips that commit and still reports success), so a
    /// commit begun before one does not count (see [`KeywordIndex::generation`]).
    rollbacks: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for KeywordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeywordIndex").finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Index(e.to_string())
}

impl KeywordIndex {
    /// Opens the index in `dir`, creating it (or recreating it, if it is unreadable or of
    /// another schema) when needed. Returns the index and whether it was created empty.
    pub(super) fn open(dir: &Path) -> Result<(KeywordIndex, bool), SearchError> {
        let (schema, fields) = schema();
        let existing = Index::open_in_dir(dir)
            .ok()
            .filter(|index| index.schema() == schema);
        let (index, created) = match existing {
            Some(index) => (index, false),
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(err)?;
                }
                std::fs::create_dir_all(dir).map_err(err)?;
                (Index::create_in_dir(dir, schema).map_err(err)?, true)
            }
        };
        // One analyser for indexing, queries and snippets (the same as tantivy's own).
        index
            .tokenizers()
            .register("en_stem", crate::query::analyser());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err)?;
        // The writer's threads (indexing, doc store compression, merges) run at
        // background priority: they inherit it from the thread that starts them.
        let writer = with_background_priority(|| index.writer_with_num_threads(1, WRITER_HEAP))
            .map_err(err)?;
        // Merges happen in `commit`, in the foreground: a background merge would race the
        // purge's explicit merge, and a process may end before a background merge does.
        writer.set_merge_policy(Box::new(tantivy::merge_policy::NoMergePolicy));
        Ok((
            KeywordIndex {
                committer: Committer {
                    index,
                    reader: reader.clone(),
                    writer: Arc::new(Mutex::new(writer)),
                    merging: Arc::new(Mutex::new(())),
                    rollbacks: Arc::default(),
                },
                reader,
                fields,
            },
            created,
        ))
    }

    /// The change-log position recorded with the last commit (0 if none).
    pub(super) fn committed_seq(&self) -> u64 {
        self.committer
            .index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Adds or replaces a memory.
    pub(super) fn upsert(&self, memory: &KeywordDoc<'_>) -> Result<(), SearchError> {
        self.remove(memory.id);
        let f = self.fields;
        let mut document = doc!(
            f.id => id_text(memory.id),
            f.id_hi => (memory.id >> 64) as u64,
            f.id_lo => memory.id as u64,
            f.title => memory.title,
            f.content => memory.content,
            f.context => memory.context,
            f.tags_text => memory.tags.join(" "),
            f.kind => memory.kind,
            f.collection => id_text(memory.collection),
            f.created => memory.created,
            f.importance => memory.importance,
        );
        for text in [memory.title, memory.content, memory.context]
            .into_iter()
            .chain(memory.tags.iter().copied())
        {
            document.add_text(f.all, text);
        }
        for tag in &memory.tags {
            document.add_text(f.tag, tag.to_lowercase());
        }
        for id in memory.context_ids {
            document.add_text(f.context_of, id_text(*id));
        }
        self.committer
            .writer()
            .add_document(document)
            .map_err(err)?;
        Ok(())
    }

    /// Removes a memory.
    pub(super) fn remove(&self, id: u128) {
        self.committer
            .writer()
            .delete_term(Term::from_field_text(self.fields.id, &id_text(id)));
    }

    /// Removes everything.
    pub(super) fn clear(&mut self) -> Result<(), SearchError> {
        self.committer
            .writer()
            .delete_all_documents()
            .map_err(err)?;
        Ok(())
    }

    /// Commits pending changes with the change-log position `seq` (see
    /// [`Committer::commit`]).
    pub(super) fn commit(&mut self, seq: u64, merging: Merging) -> Result<(), SearchError> {
        self.committer.commit(seq, merging, self.generation())
    }

    /// Drops what was staged since the last commit (after a failed commit; the caller
    /// stages it again). A failure here is logged by the next commit's failure.
    pub(super) fn rollback(&mut self) {
        let mut writer = self.committer.writer();
        let staged: &mut IndexWriter = &mut writer;
        let _ = with_background_priority(move || staged.rollback());
        // A rollback makes a new writer, with tantivy's default merge policy.
        writer.set_merge_policy(Box::new(tantivy::merge_policy::NoMergePolicy));
        self.committer
            .rollbacks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Which writer, counted in rollbacks, changes are staged into now: a commit made
    /// under an earlier one committed nothing for sure.
    pub(super) fn generation(&self) -> u64 {
        self.committer
            .rollbacks
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a commit holds the writer now (one run apart from the index, as a delete's
    /// purge is): staging a change would wait for it.
    pub(super) fn committing(&self) -> bool {
        matches!(
            self.committer.writer.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        )
    }

    /// A handle that commits this index's staged changes without it.
    pub(super) fn committer(&self) -> Committer {
        self.committer.clone()
    }

    /// The memories and scores of `found` (in its order).
    fn ids(
        &self,
        searcher: &tantivy::Searcher,
        found: Vec<(f32, DocAddress)>,
    ) -> Result<Vec<(u128, f32)>, SearchError> {
        type Halves = (
            tantivy::columnar::Column<u64>,
            tantivy::columnar::Column<u64>,
        );
        let mut columns: Vec<Option<Halves>> = vec![None; searcher.segment_readers().len()];
        let mut out = Vec::with_capacity(found.len());
        for (score, address) in found {
            let Some(slot) = columns.get_mut(address.segment_ord as usize) else {
                continue;
            };
            if slot.is_none() {
                let fast = searcher.segment_reader(address.segment_ord).fast_fields();
                *slot = Some((
                    fast.u64("id_hi").map_err(err)?,
                    fast.u64("id_lo").map_err(err)?,
                ));
            }
            let Some((hi, lo)) = slot.as_ref() else {
                continue;
            };
            if let (Some(hi), Some(lo)) = (hi.first(address.doc_id), lo.first(address.doc_id)) {
                out.push(((u128::from(hi) << 64) | u128::from(lo), score));
            }
        }
        Ok(out)
    }

    /// Memories matching `text` and `filter`, best first, with their BM25 scores: first
    /// those with every word, then those with some of them.
    pub(super) fn search(
        &self,
        text: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(u128, f32)>, SearchError> {
        let terms = self.plain_terms(text);
        // One plain word: the memories with every word are those with some, and the union
        // below finds them pruned.
        let mut hits = match terms.as_deref() {
            Some([_]) => Vec::new(),
            _ => self.search_with(text, terms.as_deref(), k, filter, true)?,
        };
        if hits.len() < k {
            let some = self.search_with(text, terms.as_deref(), k, filter, false)?;
            // Hits with every word stay ahead: lift their scores above the best partial hit.
            let lift = some.first().map_or(0.0, |(_, s)| *s);
            for hit in &mut hits {
                hit.1 += lift;
            }
            for hit in some {
                if hits.len() >= k {
                    break;
                }
                if !hits.iter().any(|(id, _)| *id == hit.0) {
                    hits.push(hit);
                }
            }
        }
        Ok(hits)
    }

    /// `terms`: the text's plain words ([`KeywordIndex::plain_terms`]), if it is only that.
    fn search_with(
        &self,
        text: &str,
        terms: Option<&[String]>,
        k: usize,
        filter: &Filter,
        all_words: bool,
    ) -> Result<Vec<(u128, f32)>, SearchError> {
        let filters = self.filter_clauses(filter);
        match terms {
            // Plain words: flat queries tantivy runs fast.
            Some(terms) => {
                let scored = || -> Vec<(Occur, Box<dyn Query>)> {
                    self.scored_terms(terms)
                        .into_iter()
                        .map(|q| (Occur::Should, q))
                        .collect()
                };
                if all_words {
                    // Every word somewhere (one posting list per word, intersected), scored
                    // by the fields as below.
                    let mut every = filters;
                    every.extend(terms.iter().map(|t| {
                        let term: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_field_text(self.fields.all, t),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Must, term)
                    }));
                    self.top_scored_within(&BooleanQuery::new(every), &self.scored_terms(terms), k)
                } else if filters.is_empty() {
                    // A union of term queries alone: tantivy prunes it (block-max WAND).
                    self.top(&BooleanQuery::new(scored()), k)
                } else {
                    let mut clauses = filters;
                    clauses.push((Occur::Must, Box::new(BooleanQuery::new(scored()))));
                    self.top(&BooleanQuery::new(clauses), k)
                }
            }
            None => {
                let mut clauses = vec![(Occur::Must, self.parsed(text, all_words))];
                clauses.extend(filters);
                self.top(&BooleanQuery::new(clauses), k)
            }
        }
    }

    /// The best `k` live memories of those `required` matches, each scored by the sum of
    /// the `scored` queries that match it: what tantivy scores a required clause with
    /// optional ones as, but each scored query is only looked up at the memories
    /// `required` finds (tantivy's optional union walks every posting of every scored
    /// term). When nothing matches, no scored query is set up. The best are kept in a heap
    /// of `k`, so a search's memory does not grow with how many memories match.
    fn top_scored_within(
        &self,
        required: &dyn Query,
        scored: &[Box<dyn Query>],
        k: usize,
    ) -> Result<Vec<(u128, f32)>, SearchError> {
        use tantivy::query::{EnableScoring, Scorer, Weight};
        use tantivy::{DocSet as _, TERMINATED};
        let searcher = self.reader.searcher();
        let required = required
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(err)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut weights: Option<Vec<Box<dyn Weight>>> = None;
        // The best `k` so far; its top is the worst of them.
        let mut best: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k);
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let mut within = required.scorer(segment, 1.0).map_err(err)?;
            let mut scorers: Option<Vec<Box<dyn Scorer>>> = None;
            let mut doc = within.doc();
            while doc != TERMINATED {
                if segment
                    .alive_bitset()
                    .is_none_or(|alive| alive.is_alive(doc))
                {
                    if scorers.is_none() {
                        if weights.is_none() {
                            let scoring = EnableScoring::enabled_from_searcher(&searcher);
                            weights = Some(
                                scored
                                    .iter()
                                    .map(|q| q.weight(scoring))
                                    .collect::<Result<_, _>>()
                                    .map_err(err)?,
                            );
                        }
                        scorers = Some(
                            weights
                                .iter()
                                .flatten()
                                .map(|w| w.scorer(segment, 1.0))
                                .collect::<Result<_, _>>()
                                .map_err(err)?,
                        );
                    }
                    let mut score = 0.0;
                    for scorer in scorers.iter_mut().flatten() {
                        if scorer.doc() < doc {
                            scorer.seek(doc);
                        }
                        if scorer.doc() == doc {
                            score += scorer.score();
                        }
                    }
                    let ranked = Ranked(score, DocAddress::new(ord as u32, doc));
                    if best.len() < k {
                        best.push(ranked);
                    } else if let Some(mut worst) = best.peek_mut()
                        && ranked < *worst
                    {
                        *worst = ranked;
                    }
                }
                doc = within.advance();
            }
        }
        let found = best
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(score, at)| (score, at))
            .collect();
        self.ids(&searcher, found)
    }

    /// The weight of a word in each field searched.
    fn field_boosts(&self) -> [(Field, f32); 4] {
        let f = self.fields;
        // What came before a short memory counts, at half a word of its own.
        [
            (f.title, 2.0),
            (f.content, 1.0),
            (f.context, 0.5),
            (f.tags_text, 1.5),
        ]
    }

    /// `text` through tantivy's query parser (quotes, operators, fields), every word
    /// required if `all_words`.
    fn parsed(&self, text: &str, all_words: bool) -> Box<dyn Query> {
        let boosts = self.field_boosts();
        let mut parser = QueryParser::for_index(
            &self.committer.index,
            boosts.iter().map(|(field, _)| *field).collect(),
        );
        for (field, boost) in boosts {
            parser.set_field_boost(field, boost);
        }
        if all_words {
            parser.set_conjunction_by_default();
        }
        // Lenient: user input with stray quotes or operators still searches its words.
        parser.parse_query_lenient(text).0
    }

    /// The terms of `text` if it is plain words (letters and digits between spaces, each
    /// one term): what the parser would read as one term query per word and field.
    fn plain_terms(&self, text: &str) -> Option<Vec<String>> {
        let mut analyser = crate::query::analyser();
        let mut terms: Vec<String> = Vec::new();
        for word in text.split_whitespace() {
            if !word.chars().all(char::is_alphanumeric)
                || ["AND", "OR", "NOT", "IN"].contains(&word)
            {
                return None;
            }
            match crate::query::stems(&mut analyser, word).as_slice() {
                [term] => {
                    if !terms.contains(term) {
                        terms.push(term.clone());
                    }
                }
                _ => return None,
            }
        }
        (!terms.is_empty()).then_some(terms)
    }

    /// One boosted term query per term and field: summed, the parser's score.
    fn scored_terms(&self, terms: &[String]) -> Vec<Box<dyn Query>> {
        let mut queries: Vec<Box<dyn Query>> = Vec::new();
        for term in terms {
            for (field, boost) in self.field_boosts() {
                let query = Box::new(TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                ));
                queries.push(if boost == 1.0 {
                    query
                } else {
                    Box::new(BoostQuery::new(query, boost))
                });
            }
        }
        queries
    }

    /// The clauses of `filter`, each required, none scored.
    fn filter_clauses(&self, filter: &Filter) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let exact = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        if let Some(ids) = &filter.collections {
            let any: Vec<(Occur, Box<dyn Query>)> = ids
                .iter()
                .map(|id| (Occur::Should, exact(f.collection, &id_text(*id))))
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if let Some(tag) = &filter.tag {
            clauses.push((Occur::Must, exact(f.tag, &tag.to_lowercase())));
        }
        if let Some(kind) = &filter.kind {
            clauses.push((Occur::Must, exact(f.kind, kind)));
        }
        if filter.since.is_some() || filter.until.is_some() {
            let bound = |v: Option<i64>, inclusive: bool| match v {
                Some(v) if inclusive => {
                    std::ops::Bound::Included(Term::from_field_i64(f.created, v))
                }
                Some(v) => std::ops::Bound::Excluded(Term::from_field_i64(f.created, v)),
                None => std::ops::Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(filter.since, true),
                    bound(filter.until, false),
                )),
            ));
        }
        if let Some(min) = filter.min_importance {
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_f64(f.importance, min)),
                    std::ops::Bound::Unbounded,
                )),
            ));
        }
        // A filter only lets memories through: it adds nothing to their scores (tantivy
        // would score a term by its rarity, so a memory would rank by its collection).
        clauses
            .into_iter()
            .map(|(occur, q)| {
                let q: Box<dyn Query> = Box::new(ConstScoreQuery::new(q, 0.0));
                (occur, q)
            })
            .collect()
    }

    /// The `k` best memories for `query`, with their scores.
    fn top(&self, query: &dyn Query, k: usize) -> Result<Vec<(u128, f32)>, SearchError> {
        let searcher = self.reader.searcher();
        let top = searcher
            .search(query, &TopDocs::with_limit(k).order_by_score())
            .map_err(err)?;
        self.ids(&searcher, top)
    }

    /// The memories (committed) whose context holds `id`.
    pub(super) fn context_holders(&self, id: u128) -> Result<Vec<u128>, SearchError> {
        let query = TermQuery::new(
            Term::from_field_text(self.fields.context_of, &id_text(id)),
            IndexRecordOption::Basic,
        );
        Ok(self
            .top(&query, 64)?
            .into_iter()
            .map(|(holder, _)| holder)
            .collect())
    }

    /// How many memories are indexed.
    pub(super) fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

impl Committer {
    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits pending changes with the change-log position `seq`, then merges segments
    /// as `merging` says. The merges run without the writer held, so changes can be
    /// staged and committed meanwhile.
    /// A commit made for an earlier writer (`generation`, see [`KeywordIndex::generation`])
    /// fails: the writer it was made for was rolled back.
    pub(super) fn commit(
        &self,
        seq: u64,
        merging: Merging,
        generation: u64,
    ) -> Result<(), SearchError> {
        let lock = || {
            self.merging
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        // A purge or a compaction waits for a merge that runs; merges by level give way.
        let merge_guard = match merging {
            Merging::ByLevel => self.merging.try_lock().ok(),
            Merging::All | Merging::IfMany | Merging::Small => Some(lock()),
        };
        // The writer is held only to prepare the commit: the commit itself waits its turn
        // behind the merges' ends, and changes can be staged for the next one meanwhile
        // (the indexer would wait for the writer with the search index held).
        let committed = {
            let mut writer = self.writer();
            // (A rollback counts itself with the writer held.)
            if self.rollbacks.load(std::sync::atomic::Ordering::SeqCst) != generation {
                return Err(SearchError::Index(
                    "the keyword writer was rolled back since this commit was made".into(),
                ));
            }
            let staged: &mut IndexWriter = &mut writer;
            // A commit starts the writer's next indexing threads.
            with_background_priority(move || {
                let mut prepared = staged.prepare_commit()?;
                prepared.set_payload(&seq.to_string());
                Ok::<_, tantivy::TantivyError>(prepared.commit_future())
            })
            .map_err(err)?
        };
        committed.wait().map_err(err)?;
        let running = {
            let mut writer = self.writer();
            let metas = self.index.searchable_segment_metas().map_err(err)?;
            let merges = match merge_guard {
                Some(_) => merges(&metas, merging),
                None => Vec::new(),
            };
            merges
                .iter()
                .map(|segments| writer.merge(segments))
                .collect::<Vec<_>>()
        };
        let merged = !running.is_empty();
        for merge in running {
            merge.wait().map_err(err)?;
        }
        if merged {
            let collected = self.writer().garbage_collect_files();
            collected.wait().map_err(err)?;
        }
        drop(merge_guard);
        self.reader.reload().map_err(err)?;
        Ok(())
    }

    /// How many segments searches read (as of the last commit; no file is read).
    pub(super) fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }
}

/// The merges `merging` asks of the segments `metas`.
fn merges(
    metas: &[tantivy::index::SegmentMeta],
    merging: Merging,
) -> Vec<Vec<tantivy::index::SegmentId>> {
    let all = || vec![metas.iter().map(|m| m.id()).collect::<Vec<_>>()];
    match merging {
        _ if metas.len() < 2 && merging != Merging::All => Vec::new(),
        Merging::All if metas.is_empty() => Vec::new(),
        Merging::All => all(),
        Merging::IfMany if metas.len() > MAX_SEGMENTS => all(),
        Merging::IfMany => Vec::new(),
        Merging::ByLevel => LogMergePolicy::default()
            .compute_merge_candidates(metas)
            .into_iter()
            .map(|candidate| candidate.0)
            .collect(),
        Merging::Small => {
            let docs = |m: &tantivy::index::SegmentMeta| u64::from(m.max_doc());
            let total: u64 = metas.iter().map(docs).sum();
            let largest = metas.iter().max_by_key(|m| docs(m));
            match largest {
                _ if metas.len() < 3 => Vec::new(),
                Some(largest) if 2 * docs(largest) >= total => vec![
                    metas
                        .iter()
                        .filter(|m| m.id() != largest.id())
                        .map(|m| m.id())
                        .collect(),
                ],
                _ => all(),
            }
        }
    }
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: [&str; 12] = [
        "garden", "invoice", "kettle", "meeting", "rust", "paper", "trip", "doctor", "budget",
        "recipe", "bicycle", "lecture",
    ];

    /// `(id, score)` lists equal up to float noise; among hits tied with the last one,
    /// which ones made the cut may differ.
    fn same_ranking(a: &[(u128, f32)], b: &[(u128, f32)], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: {a:?} against {b:?}");
        // Equal scores in either order.
        let canon = |v: &[(u128, f32)]| {
            let mut v = v.to_vec();
            v.sort_by(|x, y| {
                (y.1 * 1000.0)
                    .round()
                    .total_cmp(&(x.1 * 1000.0).round())
                    .then(x.0.cmp(&y.0))
            });
            v
        };
        let (a, b) = (&canon(a)[..], &canon(b)[..]);
        let last = a.last().map_or(0.0, |h| h.1);
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.1 - y.1).abs() <= 1e-4 * x.1.abs().max(1.0),
                "{what}: {a:?} against {b:?}"
            );
            if (x.1 - last).abs() > 1e-4 {
                assert_eq!(x.0, y.0, "{what}: {a:?} against {b:?}");
            }
        }
    }

    fn note(id: u128, content: &str) -> KeywordDoc<'_> {
        KeywordDoc {
            id,
            title: "",
            content,
            context: "",
            context_ids: &[],
            tags: vec![],
            kind: "note",
            collection: 1,
            created: 0,
            importance: 0.5,
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_threads_run_at_background_priority() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut index, _) = KeywordIndex::open(dir.path()).expect("open");
        // A commit starts the writer's next indexing threads (from this thread, at the
        // usual priority).
        index.upsert(&note(1, "garden kettle")).expect("upsert");
        index.commit(1, Merging::ByLevel).expect("commit");
        // tantivy names its indexing threads `thrd-tantivy-index{N}`; every writer open in
        // this process (other tests' too) started its own.
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let path = task.expect("task").path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // the thread ended meanwhile
            };
            if !comm.starts_with("thrd-tantivy-in") {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            // After the command's closing parenthesis: state is field 3, nice field 19.
            let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 2..]
                .split(' ')
                .collect();
            nices.push(fields[16].parse::<i32>().expect("nice"));
        }
        assert!(!nices.is_empty(), "no tantivy writer thread found");
        assert!(
            nices.iter().all(|&n| n == 10),
            "writer threads' nice: {nices:?}"
        );
    }

    #[test]
    fn a_memory_with_every_word_is_found_until_it_is_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut index, _) = KeywordIndex::open(dir.path()).expect("open");
        index.upsert(&note(1, "garden kettle")).expect("upsert");
        index.upsert(&note(2, "garden")).expect("upsert");
        index.commit(1, Merging::ByLevel).expect("commit");
        let ids = |index: &KeywordIndex, every: bool| -> Vec<u128> {
            let terms = index.plain_terms("garden kettle").expect("plain words");
            index
                .search_with("garden kettle", Some(&terms), 10, &Filter::default(), every)
                .expect("search")
                .into_iter()
                .map(|h| h.0)
                .collect()
        };
        assert_eq!(ids(&index, true), [1]);
        // Deleted, it still sits in its segment until a merge: it must not count.
        index.remove(1);
        index.commit(2, Merging::ByLevel).expect("commit");
        assert!(ids(&index, true).is_empty());
        assert_eq!(ids(&index, false), [2]);
    }

    #[test]
    fn a_compaction_merges_the_small_segments_and_keeps_every_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut index, _) = KeywordIndex::open(dir.path()).expect("open");
        // One large segment and four small ones.
        let mut id = 0u128;
        for (seq, size) in [100, 10, 10, 10, 10].into_iter().enumerate() {
            for _ in 0..size {
                index
                    .upsert(&note(id, WORDS[id as usize % 12]))
                    .expect("upsert");
                id += 1;
            }
            index
                .commit(seq as u64 + 1, Merging::ByLevel)
                .expect("commit");
        }
        let committer = index.committer();
        assert_eq!(committer.segments(), 5);
        let garden = |index: &KeywordIndex| {
            let mut ids: Vec<u128> = index
                .search("garden", 100, &Filter::default())
                .expect("search")
                .into_iter()
                .map(|h| h.0)
                .collect();
            ids.sort_unstable();
            ids
        };
        let before = garden(&index);
        assert_eq!(before.len(), 12);
        committer
            .commit(6, Merging::Small, index.generation())
            .expect("compact");
        assert_eq!(committer.segments(), 2, "the largest and the rest merged");
        assert_eq!(garden(&index), before);
        assert_eq!(index.committed_seq(), 6);
        // Two segments are left alone; of five alike, all are merged.
        committer
            .commit(7, Merging::Small, index.generation())
            .expect("compact");
        assert_eq!(committer.segments(), 2);
        for seq in 8..11 {
            for _ in 0..60 {
                index.upsert(&note(id, "kettle")).expect("upsert");
                id += 1;
            }
            index.commit(seq, Merging::ByLevel).expect("commit");
        }
        assert_eq!(committer.segments(), 5);
        committer
            .commit(11, Merging::Small, index.generation())
            .expect("compact");
        assert_eq!(committer.segments(), 1, "no segment is most of the index");
        assert_eq!(index.len(), id as u64);
    }

    #[test]
    fn plain_words_rank_exactly_as_the_query_parser_ranks_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut index, created) = KeywordIndex::open(dir.path()).expect("open");
        assert!(created);
        let mut seed = 5u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for id in 0..600u128 {
            let words: Vec<&str> = (0..2 + next(12)).map(|_| WORDS[next(12)]).collect();
            let title = if id % 3 == 0 { WORDS[next(12)] } else { "" };
            let context = if id % 4 == 0 { WORDS[next(12)] } else { "" };
            let tags = if id % 5 == 0 {
                vec![WORDS[next(12)]]
            } else {
                vec![]
            };
            index
                .upsert(&KeywordDoc {
                    id,
                    title,
                    content: &words.join(" "),
                    context,
                    context_ids: &[],
                    tags,
                    kind: if id % 2 == 0 { "note" } else { "fact" },
                    collection: 1,
                    created: id as i64,
                    importance: 0.5,
                })
                .expect("upsert");
            if id == 299 {
                index.commit(1, Merging::ByLevel).expect("commit");
            }
        }
        // Two segments, with deleted memories in both.
        for id in (0..600u128).step_by(7) {
            index.remove(id);
        }
        index.commit(2, Merging::ByLevel).expect("commit");
        assert_eq!(index.reader.searcher().segment_readers().len(), 2);
        let note = Filter {
            kind: Some("note".into()),
            ..Filter::default()
        };
        for text in [
            "kettle garden budget",
            "Gardens",
            "rust rust paper",
            "doctor lecture",
        ] {
            let terms = index.plain_terms(text).expect(text);
            for all_words in [true, false] {
                for filter in [&Filter::default(), &note] {
                    let flat = index
                        .search_with(text, Some(&terms), 25, filter, all_words)
                        .expect("flat");
                    let mut clauses = vec![(Occur::Must, index.parsed(text, all_words))];
                    clauses.extend(index.filter_clauses(filter));
                    let parsed = index.top(&BooleanQuery::new(clauses), 25).expect("parsed");
                    assert!(!parsed.is_empty() || all_words, "{text}: nothing found");
                    same_ranking(
                        &flat,
                        &parsed,
                        &format!("{text} all={all_words} {filter:?}"),
                    );
                }
            }
        }
        // Anything but plain words goes to the parser.
        for text in [
            "\"kettle garden\"",
            "kettle -garden",
            "title:kettle",
            "e-mail",
            "a AND b",
        ] {
            assert!(index.plain_terms(text).is_none(), "{text}");
        }
    }
}
