//! The store: memory documents, collections, signatures and tombstones in one redb file.
//!
//! Every write is one redb transaction committed with `Durability::Immediate`: when a
//! method returns `Ok`, the change is on disk. [`Store`] is synchronous; async code uses
//! [`crate::StoreHandle`], which runs a `Store` on its own thread.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use automerge::ChangeHash;
use mnemon_identity::{Did, Keypair, Signature};
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, TableDefinition, TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::acl::{Access, tombstone_message};
use crate::error::{ApplyError, OpenStoreError, StoreError};
use crate::feed::{ChangeEvent, ChangeKind, Origin};
use crate::id::{CollectionId, MemoryId, Timestamp};
use crate::memory::{Memory, MemoryDoc, MemoryEdit, NewMemory, TextRef, ValidNew, normalize_tag};
use crate::signed::{SignedChange, VerifiedChange, sign_change};

mod conflict;
mod disk;
mod journal;
mod share;
mod snapshot;
mod view;

use conflict::CONFLICTS;
pub use conflict::Conflict;
use disk::{DiskHealth, WatchedFile};

pub use snapshot::{StoreSummary, inspect_file, inspect_snapshot};

pub use crate::markdown::title_key;
use view::{FINGERPRINTS, MENTIONS, TITLES, VIEW_TEXTS, VIEWS};

pub use share::{HeadsDigest, MAX_ACL_BATCH, Member, SharedCollection, heads_digest};

/// Current schema version, stored under `schema` in `meta-1`.
pub const SCHEMA_VERSION: u32 = 1;
pub use crate::signed::MAX_APPLY_BATCH;
/// Most memories one write links to a title that appeared (see `Store::link_mentions`).
const MAX_LINKED_PER_WRITE: usize = 256;
/// Events buffered for each change-feed subscriber before it lags.
pub const FEED_CAPACITY: usize = 1024;

/// Key: a setting's name. Value: its bytes.
/// `schema` → u32 little-endian; `did` → the node's 32-byte public key;
/// `default_collection` → the default collection's id, u128 big-endian.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");
/// Key: collection id. Value: postcard [`CollectionRecord`].
const COLLECTIONS: TableDefinition<u128, &[u8]> = TableDefinition::new("collections-1");
/// Key: (collection id, memory id). Value: none.
/// The collection's manifest: the live memories it holds.
const MEMBERS: TableDefinition<(u128, u128), ()> = TableDefinition::new("members-1");
/// Key: memory id. Value: the memory's automerge document, saved whole (history included).
const DOCS: TableDefinition<u128, &[u8]> = TableDefinition::new("memories-1");
/// Key: memory id. Value: postcard [`MemoryMeta`], derived from the document on every write.
const MEMORY_META: TableDefinition<u128, &[u8]> = TableDefinition::new("memory_meta-1");
/// Key: (memory id, change hash). Value: the author's Ed25519 signature over the change hash.
const SIGNATURES: TableDefinition<(u128, [u8; 32]), [u8; 64]> =
    TableDefinition::new("signatures-1");
/// Key: memory id. Value: postcard [`Tombstone`]. Deleted memories, kept forever.
const TOMBSTONES: TableDefinition<u128, &[u8]> = TableDefinition::new("tombstones-1");
/// Key: (collection id, sequence number from 1). Value: postcard [`SignedAclOp`], the
/// collection's ACL log as its owner signed it.
const ACL: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("acl-1");
/// Key: collection id. Value: postcard [`SignedDescriptor`], for collections owned elsewhere
/// (the owner's signed description, relayed to nodes that join through this one).
const DESCRIPTORS: TableDefinition<u128, &[u8]> = TableDefinition::new("descriptors-1");
/// Key: memory id. Value: the document's heads, 32-byte change hashes concatenated in
/// automerge's order; derived on every write, so sync can compare without loading documents.
const HEADS: TableDefinition<u128, &[u8]> = TableDefinition::new("heads-1");
/// Key: invite nonce. Value: postcard [`InviteRecord`]: invites this node issued, and who
/// redeemed each (an invite is single-use).
const INVITES: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("invites-1");
/// Key: invite nonce. Value: the invite's bytes ([`mnemon_identity::Invite::to_bytes`]):
/// invites this node was given and has not yet redeemed with their owner.
const JOINS: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("joins-1");
/// Key: invite nonce. Value: postcard [`JoinRefusal`]: joins the collection's owner
/// refused (the ticket was used already, expired, or unknown there).
pub(crate) const JOIN_REFUSALS: TableDefinition<[u8; 16], &[u8]> =
    TableDefinition::new("join_refusals-1");
/// Key: (memory id, id of a memory it links to). Value: none. Derived from the document on
/// every write, like `memory_meta-1`.
const LINKS: TableDefinition<(u128, u128), ()> = TableDefinition::new("links-1");
/// Key: (linked memory id, id of the memory that links to it). Value: none. `links-1`
/// turned around, so a memory's backlinks are one range read, not a scan of every document.
const BACKLINKS: TableDefinition<(u128, u128), ()> = TableDefinition::new("backlinks-1");
/// Key: change sequence number, from 1, one per memory created, updated or deleted.
/// Value: postcard [`LogRecord`]. Ids only, never content, so forgetting stays complete.
const CHANGELOG: TableDefinition<u64, &[u8]> = TableDefinition::new("changelog-1");
/// Key: another node's Ed25519 public key. Value: the name this node's owner gave it
/// (a petname: local, never sent).
const NAMES: TableDefinition<[u8; 32], &str> = TableDefinition::new("names-1");

/// The names of every table, so tests can check that vacuum copies them all.
pub const TABLE_NAMES: &[&str] = &[
    "meta-1",
    "collections-1",
    "members-1",
    "memories-1",
    "memory_meta-1",
    "signatures-1",
    "tombstones-1",
    "changelog-1",
    "acl-1",
    "descriptors-1",
    "heads-1",
    "invites-1",
    "joins-1",
    "join_refusals-1",
    "links-1",
    "backlinks-1",
    "views-1",
    "view-texts-1",
    "titles-1",
    "mentions-1",
    "fingerprints-1",
    "conflicts-1",
    "names-1",
];

#[derive(Debug, Serialize, Deserialize)]
struct CollectionRecord {
    name: String,
    owner: [u8; 32],
    created_at: i64,
}

/// A join the collection's owner refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRefusal {
    /// The collection the invite was for.
    pub collection: CollectionId,
    /// Its owner, who refused.
    pub owner: Did,
    /// Why, as the owner said.
    pub reason: String,
    /// When the refusal arrived.
    pub at: Timestamp,
}

/// How `join_refusals-1` keeps a [`JoinRefusal`].
#[derive(Debug, Serialize, Deserialize)]
struct JoinRefusalRecord {
    collection: u128,
    owner: [u8; 32],
    reason: String,
    at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct InviteRecord {
    collection: u128,
    write: bool,
    expires_at: i64,
    redeemed_by: Option<[u8; 32]>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MemoryMeta {
    collection: u128,
    created_at: i64,
    updated_at: i64,
    kind: String,
    tags: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LogRecord {
    memory: u128,
    collection: u128,
    /// 0 created, 1 updated, 2 deleted.
    kind: u8,
    /// 0 local, 1 remote.
    origin: u8,
}

impl LogRecord {
    fn event(&self, seq: u64) -> ChangeEvent {
        ChangeEvent {
            seq,
            memory: MemoryId::from_u128(self.memory),
            collection: CollectionId::from_u128(self.collection),
            kind: match self.kind {
                0 => ChangeKind::Created,
                1 => ChangeKind::Updated,
                _ => ChangeKind::Deleted,
            },
            origin: if self.origin == 0 {
                Origin::Local
            } else {
                Origin::Remote
            },
        }
    }
}

/// Appends changes to the change log inside `txn`; returns the events to publish once the
/// transaction has committed.
fn append_log(
    txn: &WriteTransaction,
    changes: impl IntoIterator<Item = (MemoryId, CollectionId, ChangeKind, Origin)>,
) -> Result<Vec<ChangeEvent>, StoreError> {
    let mut log = txn.open_table(CHANGELOG)?;
    let first = log.last()?.map_or(1, |(k, _)| k.value() + 1);
    let mut events = Vec::new();
    for (seq, (memory, collection, kind, origin)) in (first..).zip(changes) {
        let record = LogRecord {
            memory: memory.to_u128(),
            collection: collection.to_u128(),
            kind: match kind {
                ChangeKind::Created => 0,
                ChangeKind::Updated => 1,
                ChangeKind::Deleted => 2,
            },
            origin: match origin {
                Origin::Local => 0,
                Origin::Remote => 1,
            },
        };
        log.insert(seq, postcard::to_allocvec(&record)?.as_slice())?;
        events.push(record.event(seq));
    }
    Ok(events)
}

#[derive(Debug, Serialize, Deserialize)]
struct Tombstone {
    collection: u128,
    deleted_at: i64,
    author: [u8; 32],
    signature: Vec<u8>,
}

struct NamedCollection {
    id: CollectionId,
    name: String,
}

/// A collection: a named set of memories with an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Its id.
    pub id: CollectionId,
    /// Its name.
    pub name: String,
    /// The DID of its owner.
    pub owner: Did,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whether it is this node's private default collection.
    pub is_default: bool,
    /// How many live memories it holds.
    pub memories: u64,
    /// What this node may do in it by its ACL log: `None` when it is not (or no longer) a
    /// member, such as after a revocation.
    pub access: Option<Access>,
}

/// Which memories [`Store::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this collection.
    pub collection: Option<CollectionId>,
    /// Only memories with this tag.
    pub tag: Option<String>,
    /// Only memories of this kind.
    pub kind: Option<String>,
    /// Only memories in one of these collections (a caller held to some collections).
    pub within: Option<std::collections::HashSet<CollectionId>>,
    /// Only memories with this title (as wikilinks resolve it: without regard to case).
    pub title: Option<String>,
    /// Skip this many (after sorting, newest change first).
    pub offset: usize,
    /// Return at most this many.
    pub limit: Option<usize>,
}

/// What [`Store::apply_changes`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// How many of the changes were new here.
    pub new_changes: usize,
    /// The document's heads afterwards.
    pub heads: Vec<ChangeHash>,
}

/// What [`Store::vacuum`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumReport {
    /// File size before.
    pub bytes_before: u64,
    /// File size after.
    pub bytes_after: u64,
}

/// The memory store of one node: the one writer. It dereferences to [`StoreReader`], so
/// everything a reader can do, the writer can too.
///
/// Writes are grouped when the store runs behind a [`crate::StoreHandle`]: the writer
/// thread opens one transaction ([`Store::begin_group`]), runs every queued write in it and
/// commits once ([`Store::commit_group`]); the change feed and any vacuum wait for that
/// commit.
#[derive(Debug)]
pub struct Store {
    reader: StoreReader,
    path: Option<PathBuf>,
    /// The open group transaction, if the writer thread is grouping writes.
    group: Option<Group>,
    /// The change-log position of the last change the last write made.
    written_seq: u64,
    /// A vacuum after a grouped delete failed and is still owed.
    vacuum_due: bool,
    /// The commit journal of the file at `path` (see `journal.rs`).
    journal: Option<Arc<Mutex<journal::Journal>>>,
}

/// A transaction shared by several writes, committed once.
struct Group {
    /// Taken by the write running now, handed back when it ends.
    txn: Option<WriteTransaction>,
    events: Vec<ChangeEvent>,
    vacuum: bool,
}

/// What one write did: its result, the change-log events to publish once durable, and
/// whether the file must be vacuumed afterwards (a delete).
struct Written<T> {
    value: T,
    events: Vec<ChangeEvent>,
    vacuum: bool,
}

impl<T> Written<T> {
    fn new(value: T, events: Vec<ChangeEvent>) -> Written<T> {
        Written {
            value,
            events,
            vacuum: false,
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// The read side of a store: cheap to clone, usable from any thread at any time. Every
/// read opens its own redb read transaction, a snapshot that no writer waits for or
/// blocks.
#[derive(Debug, Clone)]
pub struct StoreReader {
    /// The database; replaced (under this lock, for an instant) when a vacuum rewrites the
    /// file or after the disk refused a write. Readers clone the `Arc` and let go of the
    /// lock at once. `None` only while a reopen after a failed write could not open it.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    /// What the file did last (see `disk.rs`).
    health: Arc<DiskHealth>,
    keypair: Arc<Keypair>,
    did: Did,
    default_collection: CollectionId,
    feed: broadcast::Sender<ChangeEvent>,
    /// The last change-log position committed, for threads that wait for the next.
    committed: Arc<(Mutex<u64>, Condvar)>,
}

impl Store {
    /// A reader for this store, to hand to other threads.
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }
}

impl std::ops::Deref for Store {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        &self.reader
    }
}

/// The store file at `path` as a database, through [`WatchedFile`] and its journal.
fn open_file(
    path: &Path,
    health: &Arc<DiskHealth>,
) -> Result<(Database, Arc<Mutex<journal::Journal>>), DatabaseError> {
    let file = WatchedFile::open(path, health.clone())?;
    let journal = file.journal();
    Ok((builder().create_with_backend(file)?, journal))
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    // A damaged file then fails to open with an error instead of being trusted.
    builder.set_check_integrity_on_open(true);
    builder.set_cache_size(64 * 1024 * 1024);
    builder
}

impl Store {
    /// Opens (or creates) the store in the redb file at `path` for the node `keypair`.
    pub fn open(path: impl AsRef<Path>, keypair: Keypair) -> Result<Store, OpenStoreError> {
        let path = path.as_ref().to_owned();
        // A vacuum that was cut short leaves its unfinished copy behind; the original is intact.
        let _ = std::fs::remove_file(vacuum_path(&path));
        create_private_file(&path).map_err(|e| OpenStoreError::Storage {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let health = Arc::new(DiskHealth::default());
        let (db, journal) = open_file(&path, &health).map_err(|e| open_error(&path, e))?;
        let mut store = Store::init(db, Some(path), keypair, health)?;
        store.journal = Some(journal);
        Ok(store)
    }

    /// Opens (or creates) a store on a custom redb storage backend (used by crash tests).
    pub fn open_with_backend(
        backend: impl StorageBackend,
        keypair: Keypair,
    ) -> Result<Store, OpenStoreError> {
        let db = builder()
            .create_with_backend(backend)
            .map_err(|e| open_error(Path::new("<backend>"), e))?;
        Store::init(db, None, keypair, Arc::default())
    }

    /// Opens a fresh store that lives in memory only (the protocol simulator uses it).
    pub fn open_in_memory(keypair: Keypair) -> Result<Store, OpenStoreError> {
        Store::open_with_backend(redb::backends::InMemoryBackend::new(), keypair)
    }

    fn init(
        db: Database,
        path: Option<PathBuf>,
        keypair: Keypair,
        health: Arc<DiskHealth>,
    ) -> Result<Store, OpenStoreError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from("<backend>"));
        let err = |e: &dyn std::fmt::Display| OpenStoreError::Storage {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let did = keypair.did();
        let txn = db.begin_write().map_err(|e| err(&e))?;
        let default_collection = {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            if let Some(schema) = meta.get("schema").map_err(|e| err(&e))? {
                let schema = u32_from(schema.value()).ok_or_else(|| OpenStoreError::Corrupt {
                    path: shown.clone(),
                    reason: "schema version is unreadable".into(),
                })?;
                if schema > SCHEMA_VERSION {
                    return Err(OpenStoreError::UnsupportedSchema(schema));
                }
            }
            let stored_did = meta
                .get("did")
                .map_err(|e| err(&e))?
                .map(|v| v.value().to_vec());
            match stored_did {
                Some(bytes) => {
                    if bytes.as_slice() != did.public_key() {
                        let store = Did::from_public_key_slice(&bytes)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|_| "an unreadable identity".into());
                        return Err(OpenStoreError::IdentityMismatch {
                            store,
                            key: did.to_string(),
                        });
                    }
                    let raw = meta
                        .get("default_collection")
                        .map_err(|e| err(&e))?
                        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                        .ok_or_else(|| OpenStoreError::Corrupt {
                            path: shown.clone(),
                            reason: "the default collection is not recorded".into(),
                        })?;
                    CollectionId::from_u128(u128::from_be_bytes(raw))
                }
                None => {
                    let now = Timestamp::now();
                    let id = CollectionId::new(now);
                    meta.insert("schema", SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| err(&e))?;
                    meta.insert("did", did.public_key().as_slice())
                        .map_err(|e| err(&e))?;
                    meta.insert("default_collection", id.to_u128().to_be_bytes().as_slice())
                        .map_err(|e| err(&e))?;
                    let record = CollectionRecord {
                        name: "default".into(),
                        owner: *did.public_key(),
                        created_at: now.as_millis(),
                    };
                    let bytes = postcard::to_allocvec(&record).map_err(|e| err(&e))?;
                    txn.open_table(COLLECTIONS)
                        .map_err(|e| err(&e))?
                        .insert(id.to_u128(), bytes.as_slice())
                        .map_err(|e| err(&e))?;
                    id
                }
            }
        };
        // Make sure every table exists, so readers never meet a missing table.
        txn.open_table(COLLECTIONS).map_err(|e| err(&e))?;
        txn.open_table(MEMBERS).map_err(|e| err(&e))?;
        txn.open_table(DOCS).map_err(|e| err(&e))?;
        txn.open_table(MEMORY_META).map_err(|e| err(&e))?;
        txn.open_table(SIGNATURES).map_err(|e| err(&e))?;
        txn.open_table(TOMBSTONES).map_err(|e| err(&e))?;
        txn.open_table(CHANGELOG).map_err(|e| err(&e))?;
        txn.open_table(ACL).map_err(|e| err(&e))?;
        txn.open_table(DESCRIPTORS).map_err(|e| err(&e))?;
        txn.open_table(INVITES).map_err(|e| err(&e))?;
        txn.open_table(JOINS).map_err(|e| err(&e))?;
        txn.open_table(JOIN_REFUSALS).map_err(|e| err(&e))?;
        txn.open_table(NAMES).map_err(|e| err(&e))?;
        let exists = |name: &str| -> Result<bool, OpenStoreError> {
            Ok(txn
                .list_tables()
                .map_err(|e| err(&e))?
                .any(|t| t.name() == name))
        };
        let links_exist = exists(LINKS.name())?;
        let views_exist = exists(VIEWS.name())?;
        let mentions_exist = exists(MENTIONS.name())?;
        let fingerprints_exist = exists(FINGERPRINTS.name())?;
        txn.open_table(LINKS).map_err(|e| err(&e))?;
        txn.open_table(BACKLINKS).map_err(|e| err(&e))?;
        txn.open_table(VIEWS).map_err(|e| err(&e))?;
        txn.open_table(VIEW_TEXTS).map_err(|e| err(&e))?;
        txn.open_table(TITLES).map_err(|e| err(&e))?;
        txn.open_table(MENTIONS).map_err(|e| err(&e))?;
        txn.open_table(FINGERPRINTS).map_err(|e| err(&e))?;
        txn.open_table(CONFLICTS).map_err(|e| err(&e))?;
        if views_exist && !fingerprints_exist {
            // A store written before the fingerprints table: derive it once from the views.
            let views = txn.open_table(VIEWS).map_err(|e| err(&e))?;
            let texts = txn.open_table(VIEW_TEXTS).map_err(|e| err(&e))?;
            let mut fingerprints = txn.open_table(FINGERPRINTS).map_err(|e| err(&e))?;
            for entry in views.iter().map_err(|e| err(&e))? {
                let (key, value) = entry.map_err(|e| err(&e))?;
                let memory =
                    view::decode(key.value(), value.value(), &texts).map_err(|e| err(&e))?;
                fingerprints
                    .insert((view::fingerprint(&memory.content), key.value()), ())
                    .map_err(|e| err(&e))?;
            }
        }
        if !links_exist || !views_exist || !mentions_exist {
            // A store written before the link tables or the read views existed: derive
            // what is missing once, from every document.
            let docs = txn.open_table(DOCS).map_err(|e| err(&e))?;
            let metas = txn.open_table(MEMORY_META).map_err(|e| err(&e))?;
            let mut links = LinkTables::open(&txn).map_err(|e| err(&e))?;
            for entry in metas.iter().map_err(|e| err(&e))? {
                let (key, value) = entry.map_err(|e| err(&e))?;
                let meta: MemoryMeta = postcard::from_bytes(value.value()).map_err(|e| err(&e))?;
                let Some(bytes) = docs.get(key.value()).map_err(|e| err(&e))? else {
                    continue;
                };
                let id = MemoryId::from_u128(key.value());
                let doc = MemoryDoc::load(bytes.value(), &did).map_err(|e| err(&e))?;
                let memory = read_doc(
                    &txn.open_table(VIEWS).map_err(|e| err(&e))?,
                    &txn.open_table(VIEW_TEXTS).map_err(|e| err(&e))?,
                    &doc,
                    id,
                    CollectionId::from_u128(meta.collection),
                    true,
                )
                .map_err(|e| err(&e))?;
                if !links_exist {
                    links
                        .add(key.value(), memory.links.keys().copied())
                        .map_err(|e| err(&e))?;
                }
                if !views_exist {
                    // Writes the mentions too.
                    view::put(&txn, &memory).map_err(|e| err(&e))?;
                } else if !mentions_exist {
                    let names = crate::markdown::wikilink_keys(&memory.content);
                    view::put_mentions(&txn, key.value(), &[], &names).map_err(|e| err(&e))?;
                }
            }
        }
        let backfill = {
            let heads = txn.open_table(HEADS).map_err(|e| err(&e))?;
            let metas = txn.open_table(MEMORY_META).map_err(|e| err(&e))?;
            heads.len().map_err(|e| err(&e))? != metas.len().map_err(|e| err(&e))?
        };
        if backfill {
            // A store written before `heads-1` existed: derive every memory's heads once.
            let docs = txn.open_table(DOCS).map_err(|e| err(&e))?;
            let mut heads = txn.open_table(HEADS).map_err(|e| err(&e))?;
            for entry in docs.iter().map_err(|e| err(&e))? {
                let (key, value) = entry.map_err(|e| err(&e))?;
                let mut doc = MemoryDoc::load(value.value(), &did).map_err(|e| err(&e))?;
                heads
                    .insert(key.value(), share::encode_heads(&doc.heads()).as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let last = {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let log = txn.open_table(CHANGELOG).map_err(|e| err(&e))?;
            log.last()
                .map_err(|e| err(&e))?
                .map_or(0, |(k, _)| k.value())
        };
        Ok(Store {
            reader: StoreReader {
                db: Arc::new(RwLock::new(Some(Arc::new(db)))),
                health,
                keypair: Arc::new(keypair),
                did,
                default_collection,
                feed,
                committed: Arc::new((Mutex::new(last), Condvar::new())),
            },
            path,
            group: None,
            written_seq: 0,
            vacuum_due: false,
            journal: None,
        })
    }

    // ----- collections -------------------------------------------------------------------

    /// Creates a collection owned by this node.
    pub fn create_collection(&mut self, name: &str) -> Result<Collection, StoreError> {
        let name = self.check_collection_name(name, None)?;
        let now = Timestamp::now();
        let id = CollectionId::new(now);
        let record = CollectionRecord {
            name,
            owner: *self.did.public_key(),
            created_at: now.as_millis(),
        };
        let txn = self.db()?.begin_write()?;
        txn.open_table(COLLECTIONS)?
            .insert(id.to_u128(), postcard::to_allocvec(&record)?.as_slice())?;
        txn.commit()?;
        Ok(Collection {
            id,
            name: record.name,
            owner: self.did,
            created_at: now,
            is_default: false,
            memories: 0,
            access: Some(Access::Owner),
        })
    }

    /// Names another node (`None`, or an empty name: forgets its name). The name is this
    /// node's own label for it, shown instead of its DID; it never leaves this node.
    pub fn name_node(&mut self, did: &Did, name: Option<&str>) -> Result<(), StoreError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if let Some(name) = name
            && !crate::acl::acceptable_name(name)
        {
            return Err(StoreError::Sharing(format!(
                "a node's name is 1 to 64 characters without control characters or invisible ones, not {:?}",
                name.chars().take(80).collect::<String>()
            )));
        }
        if *did == self.did {
            return Err(StoreError::Sharing(
                "this node is \"this node\"; names are for other nodes".into(),
            ));
        }
        let txn = self.db()?.begin_write()?;
        {
            let mut names = txn.open_table(NAMES)?;
            match name {
                Some(name) => {
                    names.insert(*did.public_key(), name)?;
                }
                None => {
                    names.remove(*did.public_key())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// `name` trimmed, if it may name a collection here (`renaming` that one): acceptable
    /// and not another collection's name.
    fn check_collection_name(
        &self,
        name: &str,
        renaming: Option<CollectionId>,
    ) -> Result<String, StoreError> {
        let name = name.trim();
        if !crate::acl::acceptable_name(name) || name.parse::<CollectionId>().is_ok() {
            return Err(StoreError::InvalidCollectionName(
                name.chars().take(80).collect(),
            ));
        }
        if self
            .collection_names()?
            .iter()
            .any(|(id, n)| n == name && Some(*id) != renaming)
        {
            return Err(StoreError::DuplicateCollectionName(name.to_owned()));
        }
        Ok(name.to_owned())
    }

    // ----- memories ----------------------------------------------------------------------

    /// Stores a new memory, durably, and returns it.
    pub fn add(&mut self, new: NewMemory) -> Result<Memory, StoreError> {
        let mut added = self.add_batch(vec![new])?;
        added
            .pop()
            .ok_or(StoreError::Storage("batch of one returned nothing".into()))
    }

    /// Stores several new memories in one durable transaction: all or none.
    pub fn add_batch(&mut self, batch: Vec<NewMemory>) -> Result<Vec<Memory>, StoreError> {
        let valid = batch
            .iter()
            .map(NewMemory::validate)
            .collect::<Result<Vec<_>, _>>()?;
        let now = Timestamp::now();
        let collections: Vec<CollectionId> = batch
            .iter()
            .map(|new| new.collection.unwrap_or(self.default_collection))
            .collect();
        // Building and signing documents is CPU work independent per memory: spread it over
        // the cores, then write everything in one transaction.
        let built = build_parallel(&self.keypair, &valid, &collections, now);
        let (txn, grouped) = self.open_write()?;
        let result = self.add_built(&txn, &built, &collections).map(|w| Written {
            value: built.into_iter().map(|b| b.memory).collect(),
            events: w.events,
            vacuum: w.vacuum,
        });
        self.finish_write(txn, grouped, result)
    }

    /// Hands out a [`MemoryBuilder`] for this store's identity and default collection.
    pub fn builder(&self) -> MemoryBuilder {
        MemoryBuilder {
            keypair: self.keypair.clone(),
            default_collection: self.default_collection,
        }
    }

    /// Stores a memory prepared by [`MemoryBuilder::prepare`], durably (or in the open
    /// group), with the checks that need the store: its collection exists and this node
    /// may write in it. Written from the caller's copy: a memory may be megabytes, and
    /// the memory stored is [`PreparedMemory::memory`].
    pub fn add_prepared(&mut self, prepared: &PreparedMemory) -> Result<(), StoreError> {
        if prepared.0.memory.author != self.did.to_string() {
            return Err(StoreError::Unsupported(
                "a memory prepared by another identity's builder",
            ));
        }
        let built = &*prepared.0;
        let collections = [built.memory.collection];
        let id = built.memory.id;
        let (txn, grouped) = self.open_write()?;
        // Its id was made when it was prepared: the same prepared memory added twice must
        // not overwrite the first (or bring back a deleted one).
        let fresh = || -> Result<(), StoreError> {
            if txn.open_table(TOMBSTONES)?.get(id.to_u128())?.is_some() {
                return Err(StoreError::Deleted(id));
            }
            if txn.open_table(MEMORY_META)?.get(id.to_u128())?.is_some() {
                return Err(StoreError::Storage(format!(
                    "memory {id} was already added"
                )));
            }
            Ok(())
        };
        let result =
            fresh().and_then(|()| self.add_built(&txn, std::slice::from_ref(built), &collections));
        self.finish_write(txn, grouped, result)
    }

    fn add_built(
        &self,
        txn: &WriteTransaction,
        built: &[Built],
        collections: &[CollectionId],
    ) -> Result<Written<()>, StoreError> {
        let added: Vec<&Memory> = built.iter().map(|b| &b.memory).collect();
        {
            let known = txn.open_table(COLLECTIONS)?;
            let mut checked = std::collections::HashSet::new();
            for collection in collections {
                if checked.insert(*collection) && known.get(collection.to_u128())?.is_none() {
                    return Err(StoreError::UnknownCollection(collection.to_string()));
                }
            }
            drop(known);
            for collection in checked {
                share::check_write(txn, collection, &self.did)?;
            }
            let mut heads = txn.open_table(HEADS)?;
            let mut docs = txn.open_table(DOCS)?;
            let mut metas = txn.open_table(MEMORY_META)?;
            let mut members = txn.open_table(MEMBERS)?;
            let mut signatures = txn.open_table(SIGNATURES)?;
            let mut links = LinkTables::open(txn)?;
            for built in built {
                let Built {
                    memory,
                    saved,
                    hash,
                    signature,
                } = built;
                let id = memory.id.to_u128();
                docs.insert(id, saved.as_slice())?;
                metas.insert(id, meta_bytes(memory)?.as_slice())?;
                view::put(txn, memory)?;
                members.insert((memory.collection.to_u128(), id), ())?;
                signatures.insert((id, hash.0), signature.as_bytes())?;
                heads.insert(id, hash.0.as_slice())?;
                links.add(id, memory.links.keys().copied())?;
            }
        }
        let mut events = append_log(
            txn,
            added
                .iter()
                .map(|m| (m.id, m.collection, ChangeKind::Created, Origin::Local)),
        )?;
        for memory in added {
            events.extend(self.link_mentions(txn, memory)?);
        }
        Ok(Written::new((), events))
    }

    /// Edits a memory, durably, and returns it as it is afterwards.
    pub fn edit(&mut self, id: MemoryId, edit: &MemoryEdit) -> Result<Memory, StoreError> {
        edit.validate()?;
        let (txn, grouped) = self.open_write()?;
        let result = self.edit_in(&txn, id, edit);
        self.finish_write(txn, grouped, result)
    }

    fn edit_in(
        &self,
        txn: &WriteTransaction,
        id: MemoryId,
        edit: &MemoryEdit,
    ) -> Result<Written<Memory>, StoreError> {
        let mut memory;
        let changed;
        let retitled;
        {
            let mut docs = txn.open_table(DOCS)?;
            let mut metas = txn.open_table(MEMORY_META)?;
            let (mut doc, collection) = {
                let Some(meta) = metas.get(id.to_u128())? else {
                    drop(docs);
                    drop(metas);
                    let deleted = txn.open_table(TOMBSTONES)?.get(id.to_u128())?.is_some();
                    return Err(if deleted {
                        StoreError::Deleted(id)
                    } else {
                        StoreError::NotFound(id)
                    });
                };
                let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                let bytes = docs
                    .get(id.to_u128())?
                    .ok_or_else(|| StoreError::Storage(format!("document of {id} is missing")))?;
                (
                    MemoryDoc::load(bytes.value(), &self.did)?,
                    CollectionId::from_u128(meta.collection),
                )
            };
            share::check_write(txn, collection, &self.did)?;
            let title_before = edit.title.as_ref().map(|_| doc.title());
            let hash = doc.edit(edit, Timestamp::now())?;
            // A new text is what the edit holds: copied from there once the document is
            // gone (below), not read out of it while it holds the old and the new.
            memory = match (&edit.content, hash) {
                (Some(_), Some(_)) => doc.read_with_content(id, collection, String::new()),
                _ => read_doc(
                    &txn.open_table(VIEWS)?,
                    &txn.open_table(VIEW_TEXTS)?,
                    &doc,
                    id,
                    collection,
                    false,
                )?,
            };
            let content_len = edit
                .content
                .as_ref()
                .map_or(memory.content.len(), String::len);
            retitled = title_before.is_some_and(|t| title_key(&t) != title_key(&memory.title));
            changed = hash.is_some();
            // The owner wrote the text anew (or picked a side): settled.
            if edit.content.is_some() {
                conflict::clear(txn, id)?;
            }
            if let Some(hash) = hash {
                txn.open_table(HEADS)?
                    .insert(id.to_u128(), share::encode_heads(&doc.heads()).as_slice())?;
                let signature = sign_change(&self.keypair, &hash);
                let saved = {
                    let stored = docs.get(id.to_u128())?.ok_or_else(|| {
                        StoreError::Storage(format!("document of {id} is missing"))
                    })?;
                    doc.save_after(stored.value(), &hash, content_len)
                };
                // What is left to write needs the memory, not its document (for a long
                // text, megabytes of history).
                drop(doc);
                docs.insert(id.to_u128(), saved.as_slice())?;
                drop(saved);
                if let Some(content) = &edit.content {
                    memory.content.clone_from(content);
                }
                metas.insert(id.to_u128(), meta_bytes(&memory)?.as_slice())?;
                view::put(txn, &memory)?;
                set_links(txn, id, memory.links.keys().copied())?;
                txn.open_table(SIGNATURES)?
                    .insert((id.to_u128(), hash.0), signature.as_bytes())?;
            }
        }
        let mut events = if changed {
            append_log(
                txn,
                [(id, memory.collection, ChangeKind::Updated, Origin::Local)],
            )?
        } else {
            Vec::new()
        };
        if retitled {
            events.extend(self.link_mentions(txn, &memory)?);
        }
        Ok(Written::new(memory, events))
    }

    /// Links waiting for a title: when a local write gives `target` a title that is now
    /// the only one of its kind, every memory whose text has `[[that title]]` and that
    /// does not link to `target` yet gains a `wikilink` link to it (a signed edit of that
    /// memory, in the same transaction). Memories this node may not write are left alone;
    /// an ambiguous title links nothing, as when the text was written. A waiting memory in
    /// another collection is linked only if its collection is private (see
    /// `share::is_private`): the link would otherwise tell the collection's members the id
    /// of a memory they were never given, without its owner asking for it.
    fn link_mentions(
        &self,
        txn: &WriteTransaction,
        target: &Memory,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let key = title_key(&target.title);
        if key.is_empty() || ids_under(&txn.open_table(TITLES)?, &key)?.len() != 1 {
            return Ok(Vec::new());
        }
        let waiting = ids_under(&txn.open_table(MENTIONS)?, &key)?;
        // Which collections may gain the link: decided once per collection, from the
        // small tables, before any document is touched.
        let mut may_link: HashMap<CollectionId, bool> = HashMap::new();
        let mut linked = 0;
        let mut events = Vec::new();
        for source in waiting {
            if linked == MAX_LINKED_PER_WRITE {
                break;
            }
            if source == target.id {
                continue;
            }
            let collection = {
                let metas = txn.open_table(MEMORY_META)?;
                let Some(meta) = metas.get(source.to_u128())? else {
                    continue;
                };
                let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                CollectionId::from_u128(meta.collection)
            };
            let allowed = match may_link.get(&collection) {
                Some(allowed) => *allowed,
                None => {
                    let allowed = share::check_write(txn, collection, &self.did).is_ok()
                        && (collection == target.collection
                            || share::is_private(txn, collection, &self.did)?);
                    may_link.insert(collection, allowed);
                    allowed
                }
            };
            let already = txn
                .open_table(LINKS)?
                .get((source.to_u128(), target.id.to_u128()))?
                .is_some();
            if !allowed || already {
                continue;
            }
            let edit = MemoryEdit {
                add_links: vec![(target.id, crate::markdown::WIKILINK_RELATION.to_owned())],
                ..MemoryEdit::default()
            };
            events.extend(self.edit_in(txn, source, &edit)?.events);
            linked += 1;
        }
        Ok(events)
    }

    /// Deletes memories for good: tombstones them in their collections and removes their
    /// documents, histories and signatures in one durable transaction, then rewrites the
    /// database file (see [`Store::vacuum`]) so no freed page keeps their bytes.
    ///
    /// Fails without deleting anything if one of the ids is unknown.
    pub fn remove(&mut self, ids: &[MemoryId]) -> Result<(), StoreError> {
        let (txn, grouped) = self.open_write()?;
        let result = self.remove_in(&txn, ids).map(|w| Written {
            vacuum: self.path.is_some(),
            ..w
        });
        self.finish_write(txn, grouped, result)
    }

    fn remove_in(
        &self,
        txn: &WriteTransaction,
        ids: &[MemoryId],
    ) -> Result<Written<()>, StoreError> {
        let now = Timestamp::now();
        let mut removed = Vec::new();
        {
            let mut docs = txn.open_table(DOCS)?;
            let mut metas = txn.open_table(MEMORY_META)?;
            let mut members = txn.open_table(MEMBERS)?;
            let mut signatures = txn.open_table(SIGNATURES)?;
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            let mut heads = txn.open_table(HEADS)?;
            for &id in ids {
                let Some(meta) = metas.remove(id.to_u128())? else {
                    return Err(if tombstones.get(id.to_u128())?.is_some() {
                        StoreError::Deleted(id)
                    } else {
                        StoreError::NotFound(id)
                    });
                };
                let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                share::check_write(txn, CollectionId::from_u128(meta.collection), &self.did)?;
                docs.remove(id.to_u128())?;
                view::remove(txn, id)?;
                conflict::clear(txn, id)?;
                heads.remove(id.to_u128())?;
                set_links(txn, id, [])?;
                members.remove((meta.collection, id.to_u128()))?;
                signatures.retain_in(
                    (id.to_u128(), [0u8; 32])..=(id.to_u128(), [0xff; 32]),
                    |_, _| false,
                )?;
                let collection = CollectionId::from_u128(meta.collection);
                let signature = self.keypair.sign(&tombstone_message(collection, id, now));
                let tombstone = Tombstone {
                    collection: meta.collection,
                    deleted_at: now.as_millis(),
                    author: *self.did.public_key(),
                    signature: signature.as_bytes().to_vec(),
                };
                tombstones.insert(id.to_u128(), postcard::to_allocvec(&tombstone)?.as_slice())?;
                removed.push((id, collection));
            }
        }
        let events = append_log(
            txn,
            removed
                .into_iter()
                .map(|(id, c)| (id, c, ChangeKind::Deleted, Origin::Local)),
        )?;
        Ok(Written::new((), events))
    }

    /// Rewrites a memory without its history: a new memory, one signed change from the
    /// current state (same collection, title, text, tags, kind, importance, links, task,
    /// source and times; written by this node), takes its place, the memories that link to
    /// it link to the new one, and the old one is deleted for good (tombstoned, so every
    /// peer that holds its history erases it too, and the file is vacuumed). One durable
    /// transaction; returns the new memory.
    ///
    /// The id changes because the old history cannot be taken back from peers that hold
    /// it: a document under the same id would merge with it again.
    pub fn forget_history(&mut self, id: MemoryId) -> Result<Memory, StoreError> {
        let (txn, grouped) = self.open_write()?;
        let result = self.rewrite_in(&txn, id, None).map(|w| Written {
            vacuum: self.path.is_some(),
            ..w
        });
        self.finish_write(txn, grouped, result)
    }

    /// Moves memory `id` to collection `to`: it is written there anew, as for
    /// [`Store::forget_history`] (a new id; links to it follow; the old one deleted), so
    /// its earlier versions do not travel into a collection shared with others. This node
    /// must be able to write in both collections. Returns the memory as it is now.
    pub fn move_memory(&mut self, id: MemoryId, to: CollectionId) -> Result<Memory, StoreError> {
        let (txn, grouped) = self.open_write()?;
        let result = self.rewrite_in(&txn, id, Some(to)).map(|w| Written {
            vacuum: self.path.is_some(),
            ..w
        });
        self.finish_write(txn, grouped, result)
    }

    /// Writes memory `id` anew from its current state, in collection `to` (else its own),
    /// relinks what linked to it, and deletes the old one.
    fn rewrite_in(
        &self,
        txn: &WriteTransaction,
        id: MemoryId,
        to: Option<CollectionId>,
    ) -> Result<Written<Memory>, StoreError> {
        let current = {
            let views = txn.open_table(VIEWS)?;
            let Some(bytes) = views.get(id.to_u128())? else {
                drop(views);
                let deleted = txn.open_table(TOMBSTONES)?.get(id.to_u128())?.is_some();
                return Err(if deleted {
                    StoreError::Deleted(id)
                } else {
                    StoreError::NotFound(id)
                });
            };
            view::decode(id.to_u128(), bytes.value(), &txn.open_table(VIEW_TEXTS)?)?
        };
        share::check_write(txn, current.collection, &self.did)?;
        if txn.open_table(CONFLICTS)?.get(id.to_u128())?.is_some() {
            return Err(StoreError::Conflicted(id));
        }
        let collection = to.unwrap_or(current.collection);
        if collection == current.collection && to.is_some() {
            return Ok(Written::new(current, Vec::new()));
        }
        share::check_write(txn, collection, &self.did)?;
        let again = NewMemory {
            collection: Some(collection),
            ..NewMemory::from(&current)
        };
        let valid = again.validate()?;
        let now = Timestamp::now();
        let built = build_one(&self.keypair, MemoryId::new(now), &valid, collection, now);
        let mut written = self.add_built(txn, std::slice::from_ref(&built), &[collection])?;
        let memory = built.memory;
        let sources: Vec<MemoryId> = txn
            .open_table(BACKLINKS)?
            .range((id.to_u128(), 0)..=(id.to_u128(), u128::MAX))?
            .map(|entry| entry.map(|(key, _)| MemoryId::from_u128(key.value().1)))
            .collect::<Result<_, _>>()?;
        for source in sources {
            if source == id {
                continue;
            }
            let (collection, relation) = {
                let views = txn.open_table(VIEWS)?;
                let Some(bytes) = views.get(source.to_u128())? else {
                    continue;
                };
                let texts = txn.open_table(VIEW_TEXTS)?;
                let linking = view::decode(source.to_u128(), bytes.value(), &texts)?;
                let Some(relation) = linking.links.get(&id).cloned() else {
                    continue;
                };
                (linking.collection, relation)
            };
            // A memory this node may not write keeps its link, which now leads nowhere.
            if share::check_write(txn, collection, &self.did).is_err() {
                continue;
            }
            let relink = MemoryEdit {
                add_links: vec![(memory.id, relation)],
                remove_links: vec![id],
                ..MemoryEdit::default()
            };
            written
                .events
                .extend(self.edit_in(txn, source, &relink)?.events);
        }
        written.events.extend(self.remove_in(txn, &[id])?.events);
        Ok(Written::new(memory, written.events))
    }

    /// Settles a memory's conflict by keeping one of its two versions (`theirs`: the
    /// peer's) as its text, on the writer: a merge that lands meanwhile is either before
    /// it (and its mark is the one settled) or after it.
    pub fn resolve_conflict(&mut self, id: MemoryId, theirs: bool) -> Result<Memory, StoreError> {
        let (txn, grouped) = self.open_write()?;
        let result = (|| {
            let Some(found) = conflict::get(&txn.open_table(CONFLICTS)?, id)? else {
                return Err(StoreError::NoConflict(id));
            };
            let edit = MemoryEdit {
                content: Some(if theirs { found.theirs } else { found.ours }),
                ..MemoryEdit::default()
            };
            self.edit_in(&txn, id, &edit)
        })();
        self.finish_write(txn, grouped, result)
    }

    // ----- grouped writes ----------------------------------------------------------------

    /// Opens one transaction for the writes that follow, until [`Store::commit_group`] or
    /// [`Store::abort_group`]. Meanwhile the memory writes (`add`, `add_batch`, `edit`,
    /// `remove`) join it instead of committing each; their events are published, and a
    /// delete's vacuum runs, after the group commits.
    pub fn begin_group(&mut self) -> Result<(), StoreError> {
        if self.group.is_none() {
            self.group = Some(Group {
                txn: Some(self.db()?.begin_write()?),
                events: Vec::new(),
                vacuum: false,
            });
        }
        Ok(())
    }

    /// Commits the group durably, then publishes its events (and vacuums after deletes).
    /// Returns how many changes it committed.
    pub fn commit_group(&mut self) -> Result<usize, StoreError> {
        let Some(group) = self.group.take() else {
            return Ok(0);
        };
        let Some(txn) = group.txn else {
            return Err(StoreError::Storage("the group transaction was lost".into()));
        };
        txn.commit()?;
        let count = group.events.len();
        self.publish(group.events);
        if group.vacuum || self.vacuum_due {
            // The group is durable whatever happens here: a failed vacuum must not fail
            // the writes beside the delete. It is logged and tried again at the next
            // commit until it succeeds.
            match self.vacuum() {
                Ok(_) => self.vacuum_due = false,
                Err(e) => {
                    tracing::error!(error = %e, "vacuum after a delete failed; will retry");
                    self.vacuum_due = true;
                }
            }
        }
        Ok(count)
    }

    /// The change-log position of the last change made by the last memory write (in a
    /// group, final once the group commits). 0 if it changed nothing.
    pub fn last_write_seq(&self) -> u64 {
        self.written_seq
    }

    /// Drops the group and everything written in it.
    pub fn abort_group(&mut self) {
        self.group = None;
    }

    /// The transaction a memory write goes into: the group's, or a new one.
    fn open_write(&mut self) -> Result<(WriteTransaction, bool), StoreError> {
        if let Some(txn) = self.group.as_mut().and_then(|g| g.txn.take()) {
            return Ok((txn, true));
        }
        Ok((self.db()?.begin_write()?, false))
    }

    /// Ends a memory write: in a group, hands the transaction back (the group commits it);
    /// alone, commits it durably and publishes. An error drops a lone transaction; in a
    /// group the writer thread aborts the group and runs the other writes again.
    fn finish_write<R>(
        &mut self,
        txn: WriteTransaction,
        grouped: bool,
        result: Result<Written<R>, StoreError>,
    ) -> Result<R, StoreError> {
        self.written_seq = match &result {
            Ok(written) => written.events.iter().map(|e| e.seq).max().unwrap_or(0),
            Err(_) => 0,
        };
        if grouped {
            if let Some(group) = self.group.as_mut() {
                group.txn = Some(txn);
                if let Ok(written) = &result {
                    group.events.extend_from_slice(&written.events);
                    group.vacuum |= written.vacuum;
                }
            }
            return result.map(|w| w.value);
        }
        let written = result?;
        txn.commit()?;
        self.publish(written.events);
        if written.vacuum {
            self.vacuum()?;
        }
        Ok(written.value)
    }

    /// Rewrites the database into a fresh file and atomically replaces the old one.
    ///
    /// redb is copy-on-write and does not zero freed pages, so bytes of deleted memories
    /// survive in the file until those pages are reused. Copying every live entry into a
    /// new file, fsyncing it and renaming it over the old one leaves no such bytes in any
    /// file. A crash before the rename leaves the old file untouched (the partial copy is
    /// removed on the next open); after it, the new one is complete.
    pub fn vacuum(&mut self) -> Result<VacuumReport, StoreError> {
        let Some(path) = self.path.clone() else {
            return Err(StoreError::Unsupported("vacuum needs a store in a file"));
        };
        let bytes_before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let tmp = vacuum_path(&path);
        let _ = std::fs::remove_file(&tmp);
        create_private_file(&tmp)
            .map_err(|e| StoreError::Storage(format!("creating {}: {e}", tmp.display())))?;
        let copy = Builder::new()
            .create(&tmp)
            .map_err(|e| StoreError::Storage(format!("creating {}: {e}", tmp.display())))?;
        {
            let read = self.db()?.begin_read()?;
            let write = copy.begin_write()?;
            snapshot::copy_all(&read, &write)?;
            write.commit()?;
        }
        drop(copy);
        let io =
            |e: std::io::Error| StoreError::Storage(format!("vacuum of {}: {e}", path.display()));
        // The old file, synced, lets its journals go before another file takes its name
        // (and them); readers may still read it.
        if let Some(journal) = &self.journal {
            journal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .detach()
                .map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        let opened = path
            .parent()
            .map_or(Ok(()), |dir| {
                std::fs::File::open(dir).and_then(|d| d.sync_all())
            })
            .map_err(io)
            .and_then(|()| {
                open_file(&path, &self.health)
                    .map_err(|e| StoreError::Storage(format!("reopening after vacuum: {e}")))
            });
        let (reopened, journal) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // The old file has no name any more: nothing goes into it; the writer
                // thread opens the new one (`recover_disk`).
                *self
                    .reader
                    .db
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                self.health.relatch();
                return Err(e);
            }
        };
        self.journal = Some(journal);
        // Readers still in a transaction on the old file finish there (it is unlinked, not
        // gone); new ones start on the new file.
        *self
            .reader
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(reopened));
        let bytes_after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(VacuumReport {
            bytes_before,
            bytes_after,
        })
    }

    /// After the disk refused an operation: opens the database again at once, so reads
    /// answer again (redb refuses everything on a handle after its first I/O error), and,
    /// while writes are refused, checks whether the disk takes one again (a probe file
    /// beside the store, then an empty durable commit). The writer thread calls it between
    /// writes; a failed commit stored nothing, so nothing is lost. Cheap when all is well.
    pub fn recover_disk(&mut self) {
        if !self.health.latched() && self.health.refusing().is_none() {
            return;
        }
        let Some(path) = self.path.clone() else {
            return;
        };
        if self.group.as_ref().is_some_and(|g| g.txn.is_some()) {
            return;
        }
        if self.health.latched()
            && let Err(e) = self.reopen(&path)
        {
            tracing::warn!("the store could not be opened again yet: {e}");
            return;
        }
        if self.health.refusing().is_none() {
            return;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let probed = disk::probe(dir).map_err(|e| StoreError::Disk(e.to_string()));
        match probed.and_then(|()| {
            let txn = self.db()?.begin_write()?;
            txn.commit()?;
            Ok(())
        }) {
            Ok(()) => {
                self.health.recovered();
                tracing::info!("the disk takes writes again");
            }
            Err(e) => self.health.still_refusing(&e.to_string()),
        }
    }

    /// Drops the database handle and opens the file again, once no reader holds it.
    /// Readers never wait for the open (redb may repair the file first): meanwhile they
    /// are told the store is being opened again.
    fn reopen(&mut self, path: &Path) -> Result<(), StoreError> {
        let old = {
            let mut slot = self
                .reader
                .db
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Readers hold the handle only while they begin a transaction; new ones wait
            // on the lock for that instant. (A read transaction already begun goes on
            // without it, and ends at its next read of the file.)
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
            while slot.as_ref().is_some_and(|db| Arc::strong_count(db) > 1) {
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::Storage(
                        "readers still hold the database handle".into(),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            slot.take()
        };
        // The old handle goes first: it holds the file's lock.
        drop(old);
        self.health.reopened();
        match open_file(path, &self.health) {
            Ok((db, journal)) => {
                self.journal = Some(journal);
                *self
                    .reader
                    .db
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(db));
                tracing::info!("the store was opened again after the disk refused a write");
                Ok(())
            }
            Err(e) => {
                self.health.relatch();
                Err(StoreError::Disk(format!(
                    "opening {} again: {e}",
                    path.display()
                )))
            }
        }
    }

    /// Applies signed changes of memory `id` in `collection` received from elsewhere.
    ///
    /// Every change is parsed and its signature checked against its author before anything
    /// is written; if one fails, or a change's dependencies are missing, nothing is stored.
    /// Every author must be allowed to write in the collection by its current ACL (the
    /// owner always is); a change by anyone else is refused, with the whole batch.
    pub fn apply_changes(
        &mut self,
        collection: CollectionId,
        id: MemoryId,
        changes: &[SignedChange],
    ) -> Result<ApplyOutcome, ApplyError> {
        let mut results = self
            .apply_batch(collection, &[(id, changes.to_vec())])
            .map_err(|e| ApplyError::Storage(e.to_string()))?;
        results
            .pop()
            .unwrap_or_else(|| Err(ApplyError::Storage("no result for the memory".into())))
    }

    /// Applies the signed changes of many memories of `collection` in **one** durable
    /// transaction, each memory with the checks of [`Store::apply_changes`].
    ///
    /// Each memory succeeds or fails alone: a refused memory writes nothing and leaves the
    /// others applied. Only a failure of the database itself fails the whole call, and
    /// then nothing is stored. A peer's large sync thus costs one commit per message,
    /// not one per memory.
    pub fn apply_batch(
        &mut self,
        collection: CollectionId,
        docs: &[(MemoryId, Vec<SignedChange>)],
    ) -> Result<Vec<Result<ApplyOutcome, ApplyError>>, StoreError> {
        // Signatures are checked before the transaction opens.
        let verified: Vec<Result<Vec<VerifiedChange>, ApplyError>> = docs
            .iter()
            .map(|(_, changes)| verify_changes(changes))
            .collect();
        let txn = self.db()?.begin_write()?;
        let access = {
            let collections = txn.open_table(COLLECTIONS)?;
            let acl = txn.open_table(ACL)?;
            share::read_access(&collections, &acl, collection)?
        };
        let mut results = Vec::with_capacity(docs.len());
        let mut log = Vec::new();
        for ((id, changes), verified) in docs.iter().zip(verified) {
            let allowed = verified.and_then(|verified| match &access {
                None => Err(ApplyError::UnknownCollection(collection.to_string())),
                Some((owner, members, _)) => {
                    for v in &verified {
                        if !share::access_of(owner, members, &v.author)
                            .is_some_and(Access::can_write)
                        {
                            return Err(ApplyError::NotAllowed {
                                author: v.author.to_string(),
                                collection: collection.to_string(),
                            });
                        }
                    }
                    Ok(verified)
                }
            });
            // A failure to read what this node holds is the database's, not the peer's:
            // the whole batch fails (`?`) and nothing is stored.
            let prepared = match allowed {
                Ok(verified) => self.prepare_apply(&txn, collection, *id, verified, changes)?,
                Err(e) => Err(e),
            };
            match prepared {
                Ok(prepared) => {
                    // From here a failure is the database's: the whole batch fails.
                    if let Some(kind) = write_applied(&txn, collection, *id, &prepared)? {
                        log.push((*id, collection, kind, Origin::Remote));
                    }
                    results.push(Ok(prepared.outcome));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let events = append_log(&txn, log)?;
        txn.commit()?;
        self.publish(events);
        Ok(results)
    }

    /// Merges verified changes into memory `id` in memory, writing nothing: every check
    /// that can refuse a peer's changes happens here.
    fn prepare_apply(
        &self,
        txn: &WriteTransaction,
        collection: CollectionId,
        id: MemoryId,
        verified: Vec<VerifiedChange>,
        changes: &[SignedChange],
    ) -> Result<Result<PreparedApply, ApplyError>, StoreError> {
        if txn.open_table(TOMBSTONES)?.get(id.to_u128())?.is_some() {
            return Ok(Err(ApplyError::Deleted(id)));
        }
        let existing = {
            let metas = txn.open_table(MEMORY_META)?;
            match metas.get(id.to_u128())? {
                Some(meta) => {
                    let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                    if meta.collection != collection.to_u128() {
                        return Ok(Err(ApplyError::WrongCollection(id)));
                    }
                    txn.open_table(DOCS)?
                        .get(id.to_u128())?
                        .map(|b| b.value().to_vec())
                }
                None => None,
            }
        };
        // Everything automerge does with the peer's changes runs here. A panic inside it on
        // a crafted change (its parser leaves some indices to be trusted) refuses this
        // memory alone: the document is this call's own and thrown away, the transaction
        // was only read, and the writer thread, which every write of the node needs, goes
        // on.
        let merged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.merge_in(txn, collection, id, existing, verified, changes)
        }));
        merged.unwrap_or_else(|_| {
            Ok(Err(ApplyError::Refused(
                "the changes made automerge fail".into(),
            )))
        })
    }

    /// [`Store::prepare_apply`]'s merge of verified changes into memory `id`'s document as
    /// stored (`existing`; none for a new memory).
    fn merge_in(
        &self,
        txn: &WriteTransaction,
        collection: CollectionId,
        id: MemoryId,
        existing: Option<Vec<u8>>,
        verified: Vec<VerifiedChange>,
        changes: &[SignedChange],
    ) -> Result<Result<PreparedApply, ApplyError>, StoreError> {
        let created = existing.is_none();
        let mut doc = match &existing {
            Some(bytes) => MemoryDoc::load(bytes, &self.did)?,
            None => MemoryDoc::empty(&self.did),
        };
        drop(existing);
        let before = doc.heads();
        let am = doc.automerge();
        let new_changes = verified
            .iter()
            .filter(|v| am.get_change_by_hash(&v.hash()).is_none())
            .count();
        // The peer's changes: a failure here is theirs, and refuses this memory alone.
        if let Err(e) = am.apply_changes(verified.iter().map(|v| v.change.clone())) {
            return Ok(Err(ApplyError::Refused(format!(
                "the changes do not apply: {e}"
            ))));
        }
        let missing = am.get_missing_deps(&[]).len();
        if missing > 0 {
            return Ok(Err(ApplyError::MissingDependencies(missing)));
        }
        let heads = doc.heads();
        // A text kept beside the document, by the reference that names it: the one that
        // came with one of the changes, else the one this node holds (if it hashes to it).
        let text_for = |named: &TextRef| -> Result<Option<String>, StoreError> {
            let brought = verified
                .iter()
                .zip(changes)
                .find(|(v, _)| v.text == Some(*named))
                .and_then(|(_, c)| c.text.clone());
            match brought {
                Some(text) => Ok(Some(text)),
                None => view::kept_text(
                    &txn.open_table(VIEWS)?,
                    &txn.open_table(VIEW_TEXTS)?,
                    id,
                    named,
                    true,
                ),
            }
        };
        // Concurrent edits of the same words are marked, not merged silently.
        let mark = if created || heads == before {
            None
        } else {
            let standing = conflict::get(&txn.open_table(CONFLICTS)?, id)?;
            let marked = standing.is_some();
            // A mark holding a version kept beside the document may hold its only copy:
            // no peer's change clears or replaces it (the owner's pick or edit does).
            let only_copy = standing
                .is_some_and(|c| c.ours.len().max(c.theirs.len()) > crate::MAX_MERGED_TEXT_BYTES);
            let kept = |named: &TextRef| text_for(named).ok().flatten();
            if only_copy {
                None
            } else {
                conflict::detect(doc.automerge(), &before, marked, kept)
            }
        };
        let changed = if heads == before {
            None
        } else {
            let memory = match doc.content_ref() {
                None => doc.read(id, collection),
                // A long text kept beside: brought, or still the one held.
                Some(named) => match text_for(&named)? {
                    Some(text) => doc.read_with_content(id, collection, text),
                    None => {
                        return Ok(Err(ApplyError::Refused(format!(
                            "the changes set a text of {} bytes kept beside the document \
                             without bringing it",
                            named.len
                        ))));
                    }
                },
            };
            Some((memory, doc.save()))
        };
        Ok(Ok(PreparedApply {
            outcome: ApplyOutcome { new_changes, heads },
            created,
            changed,
            verified,
            mark,
        }))
    }
}

/// A peer's changes to one memory, merged and checked, not yet written.
struct PreparedApply {
    outcome: ApplyOutcome,
    created: bool,
    /// The memory as it now reads and its saved document, if its heads moved.
    changed: Option<(Memory, Vec<u8>)>,
    verified: Vec<VerifiedChange>,
    /// What the merge did to the memory's conflict mark.
    mark: Option<conflict::Mark>,
}

/// Parses every change and checks its signature.
fn verify_changes(changes: &[SignedChange]) -> Result<Vec<VerifiedChange>, ApplyError> {
    if changes.len() > MAX_APPLY_BATCH {
        return Err(ApplyError::TooMany(changes.len()));
    }
    changes
        .iter()
        .enumerate()
        .map(|(index, c)| {
            c.verify()
                .map_err(|source| ApplyError::Change { index, source })
        })
        .collect()
}

/// Writes a prepared merge: document, meta, view, links, membership, heads, signatures.
/// Returns the change-log kind to record, if any change was new.
fn write_applied(
    txn: &WriteTransaction,
    collection: CollectionId,
    id: MemoryId,
    prepared: &PreparedApply,
) -> Result<Option<ChangeKind>, StoreError> {
    if let Some((memory, saved)) = &prepared.changed {
        txn.open_table(DOCS)?
            .insert(id.to_u128(), saved.as_slice())?;
        txn.open_table(MEMORY_META)?
            .insert(id.to_u128(), meta_bytes(memory)?.as_slice())?;
        view::put(txn, memory)?;
        set_links(txn, id, memory.links.keys().copied())?;
        txn.open_table(MEMBERS)?
            .insert((collection.to_u128(), id.to_u128()), ())?;
        txn.open_table(HEADS)?.insert(
            id.to_u128(),
            share::encode_heads(&prepared.outcome.heads).as_slice(),
        )?;
        let mut signatures = txn.open_table(SIGNATURES)?;
        for v in &prepared.verified {
            signatures.insert((id.to_u128(), v.hash().0), v.signature.as_bytes())?;
        }
    }
    match &prepared.mark {
        Some(conflict::Mark::Set(found)) => conflict::put(txn, id, found)?,
        Some(conflict::Mark::Clear) => conflict::clear(txn, id)?,
        None => {}
    }
    Ok(
        (prepared.outcome.new_changes > 0).then_some(if prepared.created {
            ChangeKind::Created
        } else {
            ChangeKind::Updated
        }),
    )
}

impl StoreReader {
    /// The node's identity.
    pub fn did(&self) -> Did {
        self.did
    }

    /// The node's private default collection.
    pub fn default_collection(&self) -> CollectionId {
        self.default_collection
    }

    /// Subscribes to the change feed: one event per memory created, updated or deleted,
    /// sent after the change is durable. A subscriber that falls more than
    /// [`FEED_CAPACITY`] events behind receives `Lagged` and should re-read the store.
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.feed.subscribe()
    }

    /// A sender for the change feed, so a handle can hand out subscriptions.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                StoreError::Disk(
                    "the store is being opened again after the disk refused a write".to_owned(),
                )
            })
    }

    /// Why writes cannot succeed now (the disk refused the last one and no probe has
    /// succeeded since), or `None` when they can.
    pub fn disk_refusing(&self) -> Option<String> {
        self.health.refusing()
    }

    /// Waits until a change after `seq` is committed, for at most `wait`; returns the last
    /// committed position. Changes made by other processes on the same file are not seen.
    pub fn wait_for_change(&self, seq: u64, wait: std::time::Duration) -> u64 {
        let (lock, moved) = &*self.committed;
        let at = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, _) = moved
            .wait_timeout_while(at, wait, |at| *at <= seq)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *at
    }

    fn publish(&self, events: Vec<ChangeEvent>) {
        if let Some(last) = events.iter().map(|e| e.seq).max() {
            let (lock, moved) = &*self.committed;
            let mut at = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *at = (*at).max(last);
            moved.notify_all();
        }
        for event in events {
            // No subscribers is not an error.
            let _ = self.feed.send(event);
        }
    }

    /// Changes recorded after `seq` (exclusive), oldest first, at most `limit`. Components
    /// that keep derived data (the search indexes) remember the last `seq` they applied and
    /// catch up from here after a restart.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let log = txn.open_table(CHANGELOG)?;
        let mut out = Vec::new();
        for entry in log.range(seq.saturating_add(1)..)?.take(limit) {
            let (key, value) = entry?;
            let record: LogRecord = postcard::from_bytes(value.value())?;
            out.push(record.event(key.value()));
        }
        Ok(out)
    }

    /// The names this node's owner gave other nodes, by DID.
    pub fn node_names(&self) -> Result<HashMap<Did, String>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(NAMES)?;
        let mut out = HashMap::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            if let Ok(did) = Did::from_public_key(&key.value()) {
                out.insert(did, value.value().to_owned());
            }
        }
        Ok(out)
    }

    /// The sequence number of the latest change (0 if none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let log = txn.open_table(CHANGELOG)?;
        Ok(log.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// Every collection, oldest first.
    pub fn collections(&self) -> Result<Vec<Collection>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(COLLECTIONS)?;
        let members = txn.open_table(MEMBERS)?;
        let acl = txn.open_table(ACL)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let record: CollectionRecord = postcard::from_bytes(value.value())?;
            let id = CollectionId::from_u128(key.value());
            let memories = members
                .range((id.to_u128(), 0)..=(id.to_u128(), u128::MAX))?
                .count() as u64;
            out.push(Collection {
                id,
                name: record.name,
                owner: Did::from_public_key(&record.owner)
                    .map_err(|e| StoreError::Storage(format!("collection owner: {e}")))?,
                created_at: Timestamp::from_millis(record.created_at),
                is_default: id == self.default_collection,
                memories,
                access: share::read_access(&table, &acl, id)?
                    .and_then(|(owner, members, _)| share::access_of(&owner, &members, &self.did)),
            });
        }
        Ok(out)
    }

    /// Every collection's id and name, without counting members (cheap).
    pub fn collection_names(&self) -> Result<Vec<(CollectionId, String)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(COLLECTIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let record: CollectionRecord = postcard::from_bytes(value.value())?;
            out.push((CollectionId::from_u128(key.value()), record.name));
        }
        Ok(out)
    }

    /// Finds a collection by id or by unique name.
    pub fn resolve_collection(&self, id_or_name: &str) -> Result<CollectionId, StoreError> {
        let collections: Vec<NamedCollection> = self
            .collection_names()?
            .into_iter()
            .map(|(id, name)| NamedCollection { id, name })
            .collect();
        if let Ok(id) = id_or_name.parse::<CollectionId>()
            && collections.iter().any(|c| c.id == id)
        {
            return Ok(id);
        }
        let named: Vec<_> = collections
            .iter()
            .filter(|c| c.name == id_or_name.trim())
            .collect();
        match named.as_slice() {
            [] => Err(StoreError::UnknownCollection(
                id_or_name.chars().take(80).collect(),
            )),
            [one] => Ok(one.id),
            many => Err(StoreError::AmbiguousCollection {
                name: id_or_name.to_owned(),
                ids: many
                    .iter()
                    .map(|c| c.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Reads a memory.
    pub fn get(&self, id: MemoryId) -> Result<Memory, StoreError> {
        let txn = self.db()?.begin_read()?;
        get_in(&txn, id)
    }

    /// Reads memories from one snapshot, each as [`StoreReader::get`] reads it.
    pub fn get_each(
        &self,
        ids: &[MemoryId],
    ) -> Result<Vec<Result<Memory, StoreError>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(ids.iter().map(|&id| get_in(&txn, id)).collect())
    }

    /// The conflict a memory is marked with: two concurrent edits of the same words (see
    /// `store/conflict.rs`), or `None`.
    pub fn conflict(&self, id: MemoryId) -> Result<Option<Conflict>, StoreError> {
        let txn = self.db()?.begin_read()?;
        conflict::get(&txn.open_table(CONFLICTS)?, id)
    }

    /// The memories marked conflicted, oldest mark first.
    pub fn conflicted(&self) -> Result<Vec<MemoryId>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CONFLICTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, _) = entry?;
            let id = MemoryId::from_u128(key.value());
            if let Some(found) = conflict::get(&table, id)? {
                out.push((found.at, id));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// One memory, the name of its collection and its conflict mark, from one snapshot:
    /// what a read of one memory shows.
    pub fn get_named(
        &self,
        id: MemoryId,
    ) -> Result<(Memory, Option<String>, Option<Conflict>), StoreError> {
        let txn = self.db()?.begin_read()?;
        let memory = get_in(&txn, id)?;
        let name = match txn
            .open_table(COLLECTIONS)?
            .get(memory.collection.to_u128())?
        {
            Some(record) => Some(postcard::from_bytes::<CollectionRecord>(record.value())?.name),
            None => None,
        };
        let conflict = conflict::get(&txn.open_table(CONFLICTS)?, id)?;
        Ok((memory, name, conflict))
    }

    /// Lists memories, most recently changed first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Memory>, StoreError> {
        Ok(self.list_page(filter)?.0)
    }

    /// As [`StoreReader::list`], with how many memories match in all (before `offset` and
    /// `limit`): only the page's memories are read, whatever the total.
    pub fn list_page(&self, filter: &ListFilter) -> Result<(Vec<Memory>, usize), StoreError> {
        // Tags match without regard to case.
        let tag = filter
            .tag
            .as_deref()
            .map(normalize_tag)
            .transpose()?
            .map(|t| t.to_lowercase());
        let txn = self.db()?.begin_read()?;
        let metas = txn.open_table(MEMORY_META)?;
        let wanted = |meta: &MemoryMeta| {
            filter
                .collection
                .is_none_or(|c| c.to_u128() == meta.collection)
                && tag
                    .as_ref()
                    .is_none_or(|t| meta.tags.iter().any(|m| m.to_lowercase() == *t))
                && filter.kind.as_ref().is_none_or(|k| *k == meta.kind)
                && filter
                    .within
                    .as_ref()
                    .is_none_or(|w| w.contains(&CollectionId::from_u128(meta.collection)))
        };
        let mut matches: Vec<(i64, u128, u128)> = Vec::new();
        let mut consider = |id: u128, bytes: &[u8]| -> Result<(), StoreError> {
            let meta: MemoryMeta = postcard::from_bytes(bytes)?;
            if wanted(&meta) {
                matches.push((meta.updated_at, id, meta.collection));
            }
            Ok(())
        };
        match &filter.title {
            // By title: the titles table names the few candidates.
            Some(title) => {
                let key = title_key(title);
                let candidates = if key.is_empty() {
                    Vec::new()
                } else {
                    ids_under(&txn.open_table(TITLES)?, &key)?
                };
                for id in candidates {
                    if let Some(bytes) = metas.get(id.to_u128())? {
                        consider(id.to_u128(), bytes.value())?;
                    }
                }
            }
            None => {
                for entry in metas.iter()? {
                    let (key, value) = entry?;
                    consider(key.value(), value.value())?;
                }
            }
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let total = matches.len();
        let limit = filter.limit.unwrap_or(usize::MAX);
        let page = self.read_all(&txn, matches.into_iter().skip(filter.offset).take(limit))?;
        Ok((page, total))
    }

    /// The documents of `matches` (updated time, memory id, collection id), in that order.
    fn read_all(
        &self,
        txn: &redb::ReadTransaction,
        matches: impl Iterator<Item = (i64, u128, u128)>,
    ) -> Result<Vec<Memory>, StoreError> {
        let views = txn.open_table(VIEWS)?;
        let texts = txn.open_table(VIEW_TEXTS)?;
        let mut out = Vec::new();
        for (_, id, _) in matches {
            if let Some(bytes) = views.get(id)? {
                out.push(view::decode(id, bytes.value(), &texts)?);
            }
        }
        Ok(out)
    }

    /// The live memories that link to `id`, most recently changed first (as [`Store::list`]
    /// orders them). One range read of the backlink table, then only those documents.
    pub fn backlinks(&self, id: MemoryId) -> Result<Vec<Memory>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let back = txn.open_table(BACKLINKS)?;
        let metas = txn.open_table(MEMORY_META)?;
        let mut sources: Vec<(i64, u128, u128)> = Vec::new();
        for entry in back.range((id.to_u128(), 0)..=(id.to_u128(), u128::MAX))? {
            let (key, _) = entry?;
            let source = key.value().1;
            if let Some(meta) = metas.get(source)? {
                let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                sources.push((meta.updated_at, source, meta.collection));
            }
        }
        sources.sort_unstable_by(|a, b| b.cmp(a));
        self.read_all(&txn, sources.into_iter())
    }

    /// For each of `ids`, the live memories one link away from it either way (each once, in
    /// id order), only those in `collections` if given. Reads the link tables and
    /// metadata, never documents: a breadth-first walk calls it once per level.
    pub fn link_neighbours(
        &self,
        ids: &[MemoryId],
        collections: Option<&[CollectionId]>,
    ) -> Result<Vec<Vec<MemoryId>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let links = txn.open_table(LINKS)?;
        let back = txn.open_table(BACKLINKS)?;
        let metas = txn.open_table(MEMORY_META)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = id.to_u128();
            let mut found = std::collections::BTreeSet::new();
            for table in [&links, &back] {
                for entry in table.range((key, 0)..=(key, u128::MAX))? {
                    let (pair, _) = entry?;
                    found.insert(pair.value().1);
                }
            }
            let mut live = Vec::with_capacity(found.len());
            for other in found {
                if other == key {
                    continue;
                }
                let Some(meta) = metas.get(other)? else {
                    continue;
                };
                if let Some(allowed) = collections {
                    let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                    if !allowed.iter().any(|c| c.to_u128() == meta.collection) {
                        continue;
                    }
                }
                live.push(MemoryId::from_u128(other));
            }
            out.push(live);
        }
        Ok(out)
    }

    /// Every live memory that links to, or is linked from, another live memory (only
    /// links within `collections` count if given), most recently changed first.
    /// Reads the link table and metadata, never documents.
    pub fn linked(
        &self,
        collections: Option<&[CollectionId]>,
    ) -> Result<Vec<MemoryId>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let links = txn.open_table(LINKS)?;
        let metas = txn.open_table(MEMORY_META)?;
        let mut known: HashMap<u128, Option<i64>> = HashMap::new();
        let mut live = |id: u128| -> Result<Option<i64>, StoreError> {
            if let Some(&seen) = known.get(&id) {
                return Ok(seen);
            }
            let found = match metas.get(id)? {
                Some(meta) => {
                    let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                    collections
                        .is_none_or(|allowed| {
                            allowed.iter().any(|c| c.to_u128() == meta.collection)
                        })
                        .then_some(meta.updated_at)
                }
                None => None,
            };
            known.insert(id, found);
            Ok(found)
        };
        let mut out: HashMap<u128, i64> = HashMap::new();
        for entry in links.iter()? {
            let (key, _) = entry?;
            let (source, target) = key.value();
            if source == target {
                continue;
            }
            if let (Some(s), Some(t)) = (live(source)?, live(target)?) {
                out.insert(source, s);
                out.insert(target, t);
            }
        }
        let mut ordered: Vec<(i64, u128)> = out.into_iter().map(|(id, at)| (at, id)).collect();
        ordered.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ordered
            .into_iter()
            .map(|(_, id)| MemoryId::from_u128(id))
            .collect())
    }

    /// The live memories titled `title` (trimmed, any case: see [`title_key`]), in id
    /// order. One range read of the titles table; right however far the search index lags.
    pub fn titled(&self, title: &str) -> Result<Vec<MemoryId>, StoreError> {
        let key = title_key(title);
        if key.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db()?.begin_read()?;
        ids_under(&txn.open_table(TITLES)?, &key)
    }

    /// The live memories whose text has a wikilink with key `name` (see
    /// [`crate::markdown::wikilink_key`]), resolved or not, in id order.
    pub fn mentioning(&self, name: &str) -> Result<Vec<MemoryId>, StoreError> {
        let txn = self.db()?.begin_read()?;
        ids_under(&txn.open_table(MENTIONS)?, name)
    }

    /// The memories of `collection` whose text reads the same as `text` (case, spacing
    /// and punctuation at the ends aside: [`crate::markdown::same_text_key`]), oldest
    /// first. One range read of the fingerprints table, then the views it names.
    pub fn same_text(
        &self,
        collection: CollectionId,
        text: &str,
    ) -> Result<Vec<Memory>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let fingerprints = txn.open_table(FINGERPRINTS)?;
        let views = txn.open_table(VIEWS)?;
        let texts = txn.open_table(VIEW_TEXTS)?;
        let print = view::fingerprint(text);
        let key = crate::markdown::same_text_key(text);
        let mut found = Vec::new();
        for entry in fingerprints.range((print, 0)..=(print, u128::MAX))? {
            let id = entry?.0.value().1;
            let Some(bytes) = views.get(id)? else {
                continue;
            };
            let memory = view::decode(id, bytes.value(), &texts)?;
            if memory.collection == collection
                && crate::markdown::same_text_key(&memory.content) == key
            {
                found.push(memory);
            }
        }
        found.sort_by_key(|m| (m.created_at, m.id));
        Ok(found)
    }

    /// How many live memories the store holds.
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(MEMORY_META)?.len()?)
    }

    /// Where every memory sits in time: (memory, collection, created), in no order. Reads
    /// only the small metadata table.
    pub fn placements(&self) -> Result<Vec<(MemoryId, CollectionId, Timestamp)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let metas = txn.open_table(MEMORY_META)?;
        let mut out = Vec::with_capacity(usize::try_from(metas.len()?).unwrap_or(0));
        for entry in metas.iter()? {
            let (key, value) = entry?;
            let meta: MemoryMeta = postcard::from_bytes(value.value())?;
            out.push((
                MemoryId::from_u128(key.value()),
                CollectionId::from_u128(meta.collection),
                Timestamp::from_millis(meta.created_at),
            ));
        }
        Ok(out)
    }

    // ----- changes from elsewhere --------------------------------------------------------

    /// Verifies the signature of every stored change against its author; returns how many
    /// changes were checked. Used by `mnemon check` and tests.
    pub fn verify_all(&self) -> Result<usize, StoreError> {
        let ids: Vec<MemoryId> = {
            let txn = self.db()?.begin_read()?;
            let metas = txn.open_table(MEMORY_META)?;
            metas
                .iter()?
                .map(|e| e.map(|(k, _)| MemoryId::from_u128(k.value())))
                .collect::<Result<_, _>>()?
        };
        let mut checked = 0;
        for id in ids {
            for change in self.signed_changes(id)? {
                change
                    .verify()
                    .map_err(|e| StoreError::Storage(format!("memory {id}: {e}")))?;
                checked += 1;
            }
        }
        Ok(checked)
    }

    /// Checks that every memory's read view (and title row) equals what its document
    /// reads as, and that there is no view without a document; returns how many views were
    /// checked. Used by `mnemon check` and the property tests.
    pub fn verify_views(&self) -> Result<usize, StoreError> {
        let txn = self.db()?.begin_read()?;
        let docs = txn.open_table(DOCS)?;
        let metas = txn.open_table(MEMORY_META)?;
        let views = txn.open_table(VIEWS)?;
        let texts = txn.open_table(VIEW_TEXTS)?;
        let titles = txn.open_table(TITLES)?;
        let mentions = txn.open_table(MENTIONS)?;
        let fingerprints = txn.open_table(FINGERPRINTS)?;
        let mut checked = 0;
        let mut mentioned = 0u64;
        for entry in metas.iter()? {
            let (key, value) = entry?;
            let id = key.value();
            let meta: MemoryMeta = postcard::from_bytes(value.value())?;
            let doc = docs
                .get(id)?
                .ok_or_else(|| StoreError::Storage(format!("memory {id:x} has no document")))?;
            // A text kept beside the document is checked against the hash it names.
            let read = read_doc(
                &views,
                &texts,
                &MemoryDoc::load(doc.value(), &self.did)?,
                MemoryId::from_u128(id),
                CollectionId::from_u128(meta.collection),
                true,
            )?;
            let view = views
                .get(id)?
                .map(|v| view::decode(id, v.value(), &texts))
                .transpose()?;
            if view.as_ref() != Some(&read) {
                return Err(StoreError::Storage(format!(
                    "the view of {} differs from its document",
                    read.id
                )));
            }
            if titles.get((title_key(&read.title).as_str(), id))?.is_none() {
                return Err(StoreError::Storage(format!(
                    "the title of {} is not in the titles table",
                    read.id
                )));
            }
            if fingerprints
                .get((view::fingerprint(&read.content), id))?
                .is_none()
            {
                return Err(StoreError::Storage(format!(
                    "the text of {} is not in the fingerprints table",
                    read.id
                )));
            }
            for name in crate::markdown::wikilink_keys(&read.content) {
                if mentions.get((name.as_str(), id))?.is_none() {
                    return Err(StoreError::Storage(format!(
                        "the wikilink [[{name}]] of {} is not in the mentions table",
                        read.id
                    )));
                }
                mentioned += 1;
            }
            checked += 1;
        }
        if views.len()? != checked as u64
            || titles.len()? != checked as u64
            || fingerprints.len()? != checked as u64
            || mentions.len()? != mentioned
        {
            return Err(StoreError::Storage(format!(
                "{} views, {} titles and {} mentions for {checked} memories with {mentioned} \
                 wikilink names",
                views.len()?,
                titles.len()?,
                mentions.len()?
            )));
        }
        Ok(checked)
    }

    /// Per-table entry counts, for status output and tests.
    pub fn table_sizes(&self) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut out = BTreeMap::new();
        out.insert("collections-1", txn.open_table(COLLECTIONS)?.len()?);
        out.insert("members-1", txn.open_table(MEMBERS)?.len()?);
        out.insert("memories-1", txn.open_table(DOCS)?.len()?);
        out.insert("memory_meta-1", txn.open_table(MEMORY_META)?.len()?);
        out.insert("signatures-1", txn.open_table(SIGNATURES)?.len()?);
        out.insert("tombstones-1", txn.open_table(TOMBSTONES)?.len()?);
        out.insert("changelog-1", txn.open_table(CHANGELOG)?.len()?);
        out.insert("acl-1", txn.open_table(ACL)?.len()?);
        out.insert("descriptors-1", txn.open_table(DESCRIPTORS)?.len()?);
        out.insert("heads-1", txn.open_table(HEADS)?.len()?);
        out.insert("invites-1", txn.open_table(INVITES)?.len()?);
        out.insert("joins-1", txn.open_table(JOINS)?.len()?);
        out.insert("join_refusals-1", txn.open_table(JOIN_REFUSALS)?.len()?);
        out.insert("names-1", txn.open_table(NAMES)?.len()?);
        out.insert("links-1", txn.open_table(LINKS)?.len()?);
        out.insert("backlinks-1", txn.open_table(BACKLINKS)?.len()?);
        out.insert("views-1", txn.open_table(VIEWS)?.len()?);
        out.insert("view-texts-1", txn.open_table(VIEW_TEXTS)?.len()?);
        out.insert("titles-1", txn.open_table(TITLES)?.len()?);
        out.insert("mentions-1", txn.open_table(MENTIONS)?.len()?);
        out.insert("fingerprints-1", txn.open_table(FINGERPRINTS)?.len()?);
        out.insert("conflicts-1", txn.open_table(CONFLICTS)?.len()?);
        Ok(out)
    }
}

/// Memory `id` as `doc` reads, a text kept beside the document ([`crate::TextRef`]) read
/// from where the store keeps it, its view's pieces (`texts`); `check` hashes it too.
fn read_doc(
    views: &impl ReadableTable<u128, &'static [u8]>,
    texts: &impl ReadableTable<(u128, u32), &'static [u8]>,
    doc: &MemoryDoc,
    id: MemoryId,
    collection: CollectionId,
    check: bool,
) -> Result<Memory, StoreError> {
    let Some(named) = doc.content_ref() else {
        return Ok(doc.read(id, collection));
    };
    let text = view::kept_text(views, texts, id, &named, check)?.ok_or_else(|| {
        StoreError::Storage(format!(
            "the text of memory {id} ({} bytes, kept beside its document) is missing",
            named.len
        ))
    })?;
    Ok(doc.read_with_content(id, collection, text))
}

/// A memory's read view in a snapshot; a deleted or unknown id is named as such.
fn get_in(txn: &redb::ReadTransaction, id: MemoryId) -> Result<Memory, StoreError> {
    let views = txn.open_table(VIEWS)?;
    match views.get(id.to_u128())? {
        Some(bytes) => view::decode(id.to_u128(), bytes.value(), &txn.open_table(VIEW_TEXTS)?),
        None => {
            if txn.open_table(TOMBSTONES)?.get(id.to_u128())?.is_some() {
                Err(StoreError::Deleted(id))
            } else {
                Err(StoreError::NotFound(id))
            }
        }
    }
}

/// The ids filed under `key` in a (key, id) table: titles or mentions.
fn ids_under(
    table: &impl ReadableTable<(&'static str, u128), ()>,
    key: &str,
) -> Result<Vec<MemoryId>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((key, 0)..=(key, u128::MAX))? {
        let (k, _) = entry?;
        out.push(MemoryId::from_u128(k.value().1));
    }
    Ok(out)
}

/// Replaces the rows of `source` in the link tables with `targets`: the links its
/// document holds after a write (none after a delete).
fn set_links(
    txn: &WriteTransaction,
    source: MemoryId,
    targets: impl IntoIterator<Item = MemoryId>,
) -> Result<(), StoreError> {
    LinkTables::open(txn)?.set(source, targets)
}

/// `links-1` and `backlinks-1`, open in one write transaction.
struct LinkTables<'txn> {
    links: redb::Table<'txn, (u128, u128), ()>,
    back: redb::Table<'txn, (u128, u128), ()>,
}

impl<'txn> LinkTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<LinkTables<'txn>, StoreError> {
        Ok(LinkTables {
            links: txn.open_table(LINKS)?,
            back: txn.open_table(BACKLINKS)?,
        })
    }

    /// See [`set_links`].
    fn set(
        &mut self,
        source: MemoryId,
        targets: impl IntoIterator<Item = MemoryId>,
    ) -> Result<(), StoreError> {
        let source = source.to_u128();
        let old: Vec<u128> = self
            .links
            .range((source, 0)..=(source, u128::MAX))?
            .map(|entry| entry.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?;
        for target in old {
            self.links.remove((source, target))?;
            self.back.remove((target, source))?;
        }
        self.add(source, targets)
    }

    /// Adds rows for a memory that has none yet (a new one).
    fn add(
        &mut self,
        source: u128,
        targets: impl IntoIterator<Item = MemoryId>,
    ) -> Result<(), StoreError> {
        for target in targets {
            let target = target.to_u128();
            self.links.insert((source, target), ())?;
            self.back.insert((target, source), ())?;
        }
        Ok(())
    }
}

/// A new memory's document, built and signed, ready to be written.
#[derive(Clone)]
struct Built {
    memory: Memory,
    saved: Vec<u8>,
    hash: ChangeHash,
    signature: Signature,
}

fn build_one(
    keypair: &Keypair,
    id: MemoryId,
    valid: &ValidNew,
    collection: CollectionId,
    now: Timestamp,
) -> Built {
    let did = keypair.did();
    let (saved, hash) = valid.stored(&did, now);
    Built {
        memory: valid.memory(id, collection, &did, now),
        saved,
        hash,
        signature: sign_change(keypair, &hash),
    }
}

/// Validates, builds and signs new memories' documents on the caller's thread, so the
/// writer thread only writes them ([`Store::add_prepared`]): the CPU work of many
/// concurrent adds spreads over the cores instead of queueing on the writer.
#[derive(Clone)]
pub struct MemoryBuilder {
    keypair: Arc<Keypair>,
    default_collection: CollectionId,
}

impl std::fmt::Debug for MemoryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBuilder")
            .field("did", &self.keypair.did().to_string())
            .finish_non_exhaustive()
    }
}

impl MemoryBuilder {
    /// Checks `new` and builds its signed document, dated now.
    pub fn prepare(&self, new: &NewMemory) -> Result<PreparedMemory, StoreError> {
        let valid = new.validate()?;
        let collection = new.collection.unwrap_or(self.default_collection);
        let now = Timestamp::now();
        Ok(PreparedMemory(Arc::new(build_one(
            &self.keypair,
            MemoryId::new(now),
            &valid,
            collection,
            now,
        ))))
    }
}

/// A new memory, validated, built and signed by a [`MemoryBuilder`]: cheap to clone, so a
/// grouped write can run again with it.
#[derive(Clone)]
pub struct PreparedMemory(Arc<Built>);

impl PreparedMemory {
    /// The memory as it will read.
    pub fn memory(&self) -> &Memory {
        &self.0.memory
    }

    /// The memory as it will read, taken out (copied only if the prepared memory is still
    /// shared, e.g. with a write that did not finish).
    pub fn into_memory(self) -> Memory {
        Arc::try_unwrap(self.0).map_or_else(|built| built.memory.clone(), |built| built.memory)
    }
}

impl std::fmt::Debug for PreparedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMemory")
            .field("id", &self.0.memory.id)
            .finish_non_exhaustive()
    }
}

/// Builds documents on up to as many threads as there are cores (for batches of 16 or more).
fn build_parallel(
    keypair: &Keypair,
    valid: &[ValidNew],
    collections: &[CollectionId],
    now: Timestamp,
) -> Vec<Built> {
    // Ids first, in the batch's order (ids of one millisecond follow the order of making).
    let ids: Vec<MemoryId> = valid.iter().map(|_| MemoryId::new(now)).collect();
    // Asked only for a batch worth spreading: std reads the cgroup files on every call,
    // which costs a single add about as much as one of its table writes.
    let threads = if valid.len() < 16 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    if threads < 2 {
        return valid
            .iter()
            .zip(collections)
            .zip(&ids)
            .map(|((v, c), id)| build_one(keypair, *id, v, *c, now))
            .collect();
    }
    let chunk = valid.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = valid
            .chunks(chunk)
            .zip(collections.chunks(chunk))
            .zip(ids.chunks(chunk))
            .map(|((valid, collections), ids)| {
                scope.spawn(move || {
                    valid
                        .iter()
                        .zip(collections)
                        .zip(ids)
                        .map(|((v, c), id)| build_one(keypair, *id, v, *c, now))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(built) => built,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    write: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let source = read.open_table(def)?;
    let mut target = write.open_table(def)?;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

fn meta_bytes(memory: &Memory) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(&MemoryMeta {
        collection: memory.collection.to_u128(),
        created_at: memory.created_at.as_millis(),
        updated_at: memory.updated_at.as_millis(),
        kind: memory.kind.clone(),
        tags: memory.tags.iter().cloned().collect(),
    })
}

fn u32_from(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Creates an empty file readable by its owner only, unless the file exists.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn vacuum_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".vacuum");
    path.with_file_name(name)
}

pub(super) fn open_error(path: &Path, e: DatabaseError) -> OpenStoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => OpenStoreError::Locked(path.to_owned()),
        DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => OpenStoreError::Corrupt {
            path: path.to_owned(),
            reason,
        },
        other => OpenStoreError::Storage {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
