//! Store tests on real redb files in temporary folders.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit};
use mnemon_identity::{Keypair, Signature};

use super::*;
use crate::acl::{Access, Role, SignedAclOp};
use crate::error::ApplyError;
use crate::signed::ChangeError;

fn open(dir: &tempfile::TempDir, name: &str, keypair: &Keypair) -> Store {
    Store::open(dir.path().join(name), keypair.clone()).expect("open store")
}

/// Gives memory `id` a new title.
fn retitle(store: &mut Store, id: MemoryId, title: &str) -> Memory {
    let edit = MemoryEdit {
        title: Some(title.into()),
        ..MemoryEdit::default()
    };
    store.edit(id, &edit).expect("retitle")
}

/// Gives memory `id` a new text.
fn rewrite(store: &mut Store, id: MemoryId, text: &str) -> Memory {
    let edit = MemoryEdit {
        content: Some(text.into()),
        ..MemoryEdit::default()
    };
    store.edit(id, &edit).expect("rewrite")
}

fn note(content: &str) -> NewMemory {
    NewMemory {
        content: content.into(),
        ..NewMemory::default()
    }
}

#[test]
fn add_get_edit_list_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "a.redb", &me);
    let mut feed = store.subscribe();
    let work = store.create_collection("work").expect("collection");
    let a = store
        .add(NewMemory {
            tags: vec!["x".into()],
            ..note("alpha")
        })
        .expect("add");
    let b = store
        .add(NewMemory {
            collection: Some(work.id),
            ..note("beta")
        })
        .expect("add");
    assert_eq!(feed.try_recv().expect("event").memory, a.id);
    assert_eq!(feed.try_recv().expect("event").kind, ChangeKind::Created);

    assert_eq!(store.get(a.id).expect("get").content, "alpha");
    assert_eq!(store.get(b.id).expect("get").collection, work.id);
    assert_eq!(store.count().expect("count"), 2);

    let only_work = store
        .list(&ListFilter {
            collection: Some(work.id),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(only_work.iter().map(|m| m.id).collect::<Vec<_>>(), [b.id]);
    let tagged = store
        .list(&ListFilter {
            tag: Some("#x".into()),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(tagged.iter().map(|m| m.id).collect::<Vec<_>>(), [a.id]);
    // A page, with the count of all that match; a caller held to some collections.
    let (page, total) = store
        .list_page(&ListFilter {
            offset: 1,
            limit: Some(1),
            ..ListFilter::default()
        })
        .expect("page");
    assert_eq!((page.len(), total), (1, 2));
    assert_eq!(page[0].id, a.id, "newest first: b, then a");
    let (page, total) = store
        .list_page(&ListFilter {
            within: Some([work.id].into_iter().collect()),
            ..ListFilter::default()
        })
        .expect("page");
    assert_eq!(
        (page.iter().map(|m| m.id).collect::<Vec<_>>(), total),
        (vec![b.id], 1)
    );
    // By title, without regard to case.
    let (page, total) = store
        .list_page(&ListFilter {
            title: Some("ALPHA".into()),
            ..ListFilter::default()
        })
        .expect("page");
    assert_eq!(
        (page.iter().map(|m| m.id).collect::<Vec<_>>(), total),
        (vec![a.id], 1)
    );

    // Times are in milliseconds: the edit must come after `b` was made to be newer.
    std::thread::sleep(std::time::Duration::from_millis(3));
    let edited = store
        .edit(
            a.id,
            &MemoryEdit {
                content: Some("alpha two".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert_eq!(edited.content, "alpha two");
    assert_eq!(feed.try_recv().expect("event").kind, ChangeKind::Updated);
    // Newest change first.
    let all = store.list(&ListFilter::default()).expect("list");
    assert_eq!(all[0].id, a.id);

    store.remove(&[a.id]).expect("remove");
    assert!(matches!(store.get(a.id), Err(StoreError::Deleted(_))));
    assert!(matches!(store.remove(&[a.id]), Err(StoreError::Deleted(_))));
    let deleted = feed.try_recv().expect("event");
    assert_eq!(deleted.kind, ChangeKind::Deleted);
    // The change log holds the same events, in order, with increasing sequence numbers.
    let log = store.changes_since(0, 100).expect("log");
    let kinds: Vec<_> = log.iter().map(|e| (e.seq, e.memory, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, a.id, ChangeKind::Created),
            (2, b.id, ChangeKind::Created),
            (3, a.id, ChangeKind::Updated),
            (4, a.id, ChangeKind::Deleted),
        ]
    );
    assert_eq!(log[3], deleted);
    assert_eq!(store.last_seq().expect("seq"), 4);
    assert_eq!(store.changes_since(2, 1).expect("log")[0].seq, 3);
    let sizes = store.table_sizes().expect("sizes");
    assert_eq!(sizes["memories-1"], 1);
    assert_eq!(sizes["signatures-1"], 1);
    assert_eq!(sizes["tombstones-1"], 1);

    // Everything survives a reopen.
    drop(store);
    let store = open(&dir, "a.redb", &me);
    assert_eq!(store.get(b.id).expect("get").content, "beta");
    assert_eq!(store.resolve_collection("work").expect("by name"), work.id);
    assert_eq!(
        store
            .resolve_collection(&work.id.to_string())
            .expect("by id"),
        work.id
    );
    assert!(matches!(
        store.resolve_collection("nope"),
        Err(StoreError::UnknownCollection(_))
    ));
    assert_eq!(store.verify_all().expect("verify"), 1);
}

#[test]
fn failed_batch_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir, "a.redb", &Keypair::generate());
    let err = store
        .add_batch(vec![note("fine"), note("   ")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let unknown = CollectionId::new(Timestamp::now());
    let err = store
        .add(NewMemory {
            collection: Some(unknown),
            ..note("x")
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownCollection(_)), "{err}");
    assert_eq!(store.count().expect("count"), 0);
}

#[test]
fn another_identity_cannot_open_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(&dir, "a.redb", &Keypair::generate()));
    let err = Store::open(dir.path().join("a.redb"), Keypair::generate()).unwrap_err();
    assert!(
        matches!(err, OpenStoreError::IdentityMismatch { .. }),
        "{err}"
    );
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let _first = open(&dir, "a.redb", &me);
    let err = Store::open(dir.path().join("a.redb"), me).unwrap_err();
    assert!(matches!(err, OpenStoreError::Locked(_)), "{err}");
}

#[test]
fn garbage_file_is_reported_not_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("write");
    let err = Store::open(&path, Keypair::generate()).unwrap_err();
    assert!(
        matches!(
            err,
            OpenStoreError::Corrupt { .. } | OpenStoreError::Storage { .. }
        ),
        "{err}"
    );
}

#[test]
fn same_text_finds_a_memory_that_says_the_same_in_its_collection_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir, "a.redb", &Keypair::generate());
    let home = store.default_collection();
    let other = store.create_collection("work").expect("collection").id;
    let kept = store
        .add(note("The boiler service is due every October."))
        .expect("add");
    store
        .add(NewMemory {
            collection: Some(other),
            ..note("The boiler service is due every October.")
        })
        .expect("add");
    store
        .add(note("The boiler service is due every November."))
        .expect("add");
    let found = |store: &Store, text: &str| -> Vec<MemoryId> {
        store
            .same_text(home, text)
            .expect("same_text")
            .iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(
        found(&store, "the boiler service is  due\nevery october"),
        [kept.id]
    );
    assert_eq!(
        found(&store, "  THE BOILER SERVICE IS DUE EVERY OCTOBER!"),
        [kept.id]
    );
    assert!(found(&store, "The boiler service is due every").is_empty());
    // An edit moves it; a delete takes it out; the tables stay consistent throughout.
    store
        .edit(
            kept.id,
            &MemoryEdit {
                content: Some("Gas meter reading: 4711".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert!(found(&store, "The boiler service is due every October.").is_empty());
    assert_eq!(found(&store, "gas meter reading: 4711"), [kept.id]);
    store.verify_views().expect("consistent");
    store.remove(&[kept.id]).expect("remove");
    assert!(found(&store, "gas meter reading: 4711").is_empty());
    store.verify_views().expect("consistent");
}

#[test]
fn vacuum_copies_every_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir, "a.redb", &Keypair::generate());
    store.add(note("keep me")).expect("add");
    let before = store.table_sizes().expect("sizes");
    store.vacuum().expect("vacuum");
    let txn = store.db().expect("db").begin_read().expect("read");
    let mut names: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = TABLE_NAMES.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "vacuum must copy every table; update TABLE_NAMES"
    );
    drop(txn);
    assert_eq!(store.table_sizes().expect("sizes"), before);
}

#[test]
fn canary_is_gone_from_every_file_after_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir, "a.redb", &Keypair::generate());
    let canary = "canary-7f3a9c1e";
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(store.add(note(&format!("filler {i}"))).expect("add").id);
    }
    let secret = store
        .add(NewMemory {
            title: Some(format!("title {canary}")),
            ..note(&format!("my secret is {canary}"))
        })
        .expect("add");
    store
        .edit(
            secret.id,
            &MemoryEdit {
                content: Some(format!("my secret is still {canary}!")),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    let count = || count_in_dir(dir.path(), canary.as_bytes());
    assert!(count() > 0, "the canary must be on disk before removal");
    store.remove(&[secret.id]).expect("remove");
    assert_eq!(count(), 0);
    assert_eq!(store.count().expect("count"), 20);
    drop(store);
    assert_eq!(count(), 0);
}

pub(crate) fn count_in_dir(dir: &std::path::Path, needle: &[u8]) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            total += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    total
}

/// A memory made on node A, with its signed changes, and a fresh store B to apply them to.
struct TwoNodes {
    _dir: tempfile::TempDir,
    a: Store,
    b: Store,
    memory: Memory,
    changes: Vec<SignedChange>,
}

fn two_nodes() -> TwoNodes {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let shared = share_with(&mut a, &mut b, Role::Write);
    let memory = a
        .add(NewMemory {
            collection: Some(shared),
            ..note("shared thought")
        })
        .expect("add");
    let memory = a
        .edit(
            memory.id,
            &MemoryEdit {
                add_tags: vec!["t".into()],
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    let changes = a.signed_changes(memory.id).expect("changes");
    assert_eq!(changes.len(), 2);
    TwoNodes {
        _dir: dir,
        a,
        b,
        memory,
        changes,
    }
}

/// A creates a collection and shares it with B, who adopts it and its ACL.
fn share_with(a: &mut Store, b: &mut Store, role: Role) -> CollectionId {
    let collection = a.create_collection("shared").expect("collection").id;
    a.share(collection, &b.did(), role).expect("share");
    sync_acl(a, b, collection);
    collection
}

/// B takes A's descriptor and ACL log for `collection`.
fn sync_acl(a: &Store, b: &mut Store, collection: CollectionId) {
    b.adopt_collection(&a.descriptor(collection).expect("descriptor"))
        .expect("adopt");
    let seq = b
        .shared_with(&a.did())
        .expect("shared")
        .first()
        .map_or(0, |c| c.acl_seq);
    b.apply_acl(collection, &a.acl_since(collection, seq).expect("acl"))
        .expect("apply acl");
}

fn assert_untouched(store: &Store, id: MemoryId) {
    assert!(matches!(store.get(id), Err(StoreError::NotFound(_))));
    let sizes = store.table_sizes().expect("sizes");
    assert_eq!(sizes["memories-1"], 0);
    assert_eq!(sizes["signatures-1"], 0);
    assert_eq!(sizes["members-1"], 0);
}

#[test]
fn verified_changes_apply_and_read_the_same() {
    let TwoNodes {
        _dir,
        a,
        mut b,
        memory,
        changes,
    } = two_nodes();
    let mut feed = b.subscribe();
    let collection = memory.collection;
    let outcome = b
        .apply_changes(collection, memory.id, &changes)
        .expect("apply");
    assert_eq!(outcome.new_changes, 2);
    let copy = b.get(memory.id).expect("get");
    assert_eq!(copy.content, memory.content);
    assert_eq!(copy.tags, memory.tags);
    assert_eq!(copy.author, a.did().to_string());
    let event = feed.try_recv().expect("event");
    assert_eq!(
        (event.kind, event.origin),
        (ChangeKind::Created, Origin::Remote)
    );
    // Applying again changes nothing and is not an error.
    let again = b
        .apply_changes(collection, memory.id, &changes)
        .expect("apply");
    assert_eq!(again.new_changes, 0);
    // B relays exactly what A signed.
    assert_eq!(b.signed_changes(memory.id).expect("changes"), changes);
    assert_eq!(b.verify_all().expect("verify"), 2);
}

#[test]
fn forged_signature_is_refused() {
    let TwoNodes {
        _dir,
        mut b,
        memory,
        mut changes,
        ..
    } = two_nodes();
    // Someone else signs A's change: the signature does not match the change's author.
    let forger = Keypair::generate();
    let hash = Change::from_bytes(changes[1].bytes.clone())
        .expect("parse")
        .hash();
    changes[1].signature = sign_change(&forger, &hash);
    let collection = memory.collection;
    let err = b
        .apply_changes(collection, memory.id, &changes)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::Change {
                index: 1,
                source: ChangeError::BadSignature { .. }
            }
        ),
        "{err}"
    );
    assert_untouched(&b, memory.id);
    // A zeroed signature too.
    changes[1].signature = Signature::from_bytes([0; 64]);
    assert!(b.apply_changes(collection, memory.id, &changes).is_err());
    assert_untouched(&b, memory.id);
}

#[test]
fn change_by_an_actor_that_is_no_key_is_refused() {
    let TwoNodes {
        _dir,
        mut b,
        memory,
        ..
    } = two_nodes();
    let mut doc = AutoCommit::new().with_actor(ActorId::from(&[7u8; 16][..]));
    doc.put(automerge::ROOT, "title", "sneaky").expect("put");
    let hash = doc.commit().expect("change");
    let mut change = doc.get_change_by_hash(&hash).expect("change");
    let signed = SignedChange {
        bytes: change.bytes().into_owned(),
        signature: sign_change(&Keypair::generate(), &hash),
        text: None,
    };
    let collection = memory.collection;
    let err = b
        .apply_changes(collection, memory.id, &[signed])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::Change {
                source: ChangeError::InvalidActor(_),
                ..
            }
        ),
        "{err}"
    );
    assert_untouched(&b, memory.id);
}

#[test]
fn truncated_or_corrupted_changes_are_refused() {
    let TwoNodes {
        _dir,
        mut b,
        memory,
        changes,
        ..
    } = two_nodes();
    let collection = memory.collection;
    let good = &changes[0];
    for cut in [0, 1, good.bytes.len() / 2, good.bytes.len() - 1] {
        let truncated = SignedChange {
            bytes: good.bytes[..cut].to_vec(),
            signature: good.signature,
            text: None,
        };
        let err = b
            .apply_changes(collection, memory.id, &[truncated])
            .unwrap_err();
        assert!(
            matches!(
                err,
                ApplyError::Change {
                    source: ChangeError::Malformed(_),
                    ..
                }
            ),
            "cut at {cut}: {err}"
        );
    }
    for i in 0..good.bytes.len() {
        let mut bytes = good.bytes.clone();
        bytes[i] ^= 0x01;
        let corrupted = SignedChange {
            bytes,
            signature: good.signature,
            text: None,
        };
        let err = b.apply_changes(collection, memory.id, &[corrupted]);
        assert!(err.is_err(), "flipping byte {i} must be refused");
    }
    assert_untouched(&b, memory.id);
}

#[test]
fn a_change_without_its_dependencies_is_refused() {
    let TwoNodes {
        _dir,
        mut b,
        memory,
        changes,
        ..
    } = two_nodes();
    let collection = memory.collection;
    let err = b
        .apply_changes(collection, memory.id, &changes[1..])
        .unwrap_err();
    assert!(matches!(err, ApplyError::MissingDependencies(1)), "{err}");
    assert_untouched(&b, memory.id);
}

#[test]
fn changes_for_a_deleted_memory_are_refused() {
    let TwoNodes {
        _dir,
        mut b,
        memory,
        changes,
        ..
    } = two_nodes();
    let collection = memory.collection;
    b.apply_changes(collection, memory.id, &changes[..1])
        .expect("apply");
    b.remove(&[memory.id]).expect("remove");
    let err = b
        .apply_changes(collection, memory.id, &changes)
        .unwrap_err();
    assert!(matches!(err, ApplyError::Deleted(_)), "{err}");
}

use automerge::Change;

#[test]
fn changes_by_a_reader_or_a_revoked_writer_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let mut c = open(&dir, "c.redb", &Keypair::generate());
    let shared = share_with(&mut a, &mut b, Role::Read);
    a.share(shared, &c.did(), Role::Write).expect("share c");
    sync_acl(&a, &mut c, shared);
    sync_acl(&a, &mut b, shared);
    assert_eq!(
        b.access(shared, &b.did()).expect("access"),
        Some(Access::Member(Role::Read))
    );
    // B, a reader, cannot change the collection here ...
    let err = b
        .add(NewMemory {
            collection: Some(shared),
            ..note("from a reader")
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)), "{err}");
    // ... and a change B made anyway (in a copy of the collection it wrote itself) is
    // refused by A.
    let rogue_dir = tempfile::tempdir().expect("tempdir");
    let mut rogue =
        Store::open(rogue_dir.path().join("b.redb"), (*b.keypair).clone()).expect("open");
    let made = rogue.add(note("sneaky")).expect("add");
    let changes = rogue.signed_changes(made.id).expect("changes");
    let err = a.apply_changes(shared, made.id, &changes).unwrap_err();
    assert!(matches!(err, ApplyError::NotAllowed { .. }), "{err}");
    assert!(matches!(a.get(made.id), Err(StoreError::NotFound(_))));

    // C writes; A accepts. After A revokes C, C's next change is refused.
    let first = c
        .add(NewMemory {
            collection: Some(shared),
            ..note("from a writer")
        })
        .expect("add");
    a.apply_changes(
        shared,
        first.id,
        &c.signed_changes(first.id).expect("changes"),
    )
    .expect("writer accepted");
    a.unshare(shared, &c.did()).expect("revoke");
    let later = c
        .add(NewMemory {
            collection: Some(shared),
            ..note("after revocation")
        })
        .expect("c does not know yet");
    let err = a
        .apply_changes(
            shared,
            later.id,
            &c.signed_changes(later.id).expect("changes"),
        )
        .unwrap_err();
    assert!(matches!(err, ApplyError::NotAllowed { .. }), "{err}");
    // Once C has the revocation, it refuses its own writes.
    sync_acl(&a, &mut c, shared);
    assert!(matches!(
        c.edit(
            first.id,
            &MemoryEdit {
                title: Some("x".into()),
                ..MemoryEdit::default()
            }
        ),
        Err(StoreError::ReadOnly(_))
    ));
    assert!(c.shared_with(&a.did()).expect("shared").is_empty());
}

#[test]
fn acl_operations_need_the_owner_and_no_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let c = Keypair::generate();
    let shared = share_with(&mut a, &mut b, Role::Write);
    // B, not the owner, cannot change the ACL, nor forge an operation A would take.
    assert!(matches!(
        b.share(shared, &c.did(), Role::Write),
        Err(StoreError::Sharing(_))
    ));
    let mut forged = a.acl_since(shared, 0).expect("acl").remove(0);
    forged.op.seq = 2;
    forged.op.action = crate::acl::AclAction::Grant {
        member: *c.did().public_key(),
        role: Role::Write,
    };
    let forged = SignedAclOp::sign(&b.keypair, forged.op);
    assert!(matches!(
        a.apply_acl(shared, std::slice::from_ref(&forged)),
        Err(StoreError::Sharing(_))
    ));
    assert!(matches!(
        b.apply_acl(shared, &[forged]),
        Err(StoreError::Sharing(_))
    ));
    // A gap is refused; what is held already is skipped.
    a.share(shared, &c.did(), Role::Read).expect("share");
    a.unshare(shared, &c.did()).expect("unshare");
    let log = a.acl_since(shared, 0).expect("acl");
    assert_eq!(log.len(), 3);
    assert!(matches!(
        b.apply_acl(shared, &log[2..]),
        Err(StoreError::Sharing(_))
    ));
    assert_eq!(b.apply_acl(shared, &log).expect("apply"), 2);
    assert_eq!(b.apply_acl(shared, &log).expect("apply"), 0);
    assert_eq!(b.members(shared).expect("members").len(), 1);
    // The private default collection cannot be shared.
    assert!(
        a.share(a.default_collection(), &c.did(), Role::Read)
            .is_err()
    );
    // Nor can a collection be shared with the owner.
    assert!(a.share(shared, &a.did(), Role::Read).is_err());
}

#[test]
fn descriptors_must_be_signed_by_their_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let mut a = a;
    let shared = a.create_collection("family").expect("collection").id;
    let mut signed = a.descriptor(shared).expect("descriptor");
    signed.descriptor.name = "renamed".into();
    assert!(b.adopt_collection(&signed).is_err());
    assert!(b.resolve_collection("renamed").is_err());
    let good = a.descriptor(shared).expect("descriptor");
    assert!(b.adopt_collection(&good).expect("adopt"));
    assert!(!b.adopt_collection(&good).expect("again"));
    assert_eq!(b.resolve_collection("family").expect("resolve"), shared);
    // B relays the descriptor exactly as A signed it.
    assert_eq!(b.descriptor(shared).expect("descriptor"), good);
}

#[test]
fn heads_summary_and_changes_for_a_peer() {
    let TwoNodes {
        _dir,
        mut a,
        mut b,
        memory,
        changes,
    } = two_nodes();
    let collection = memory.collection;
    b.apply_changes(collection, memory.id, &changes[..1])
        .expect("apply");
    let sa = a.heads_summary(collection).expect("summary");
    let sb = b.heads_summary(collection).expect("summary");
    assert_eq!(sa.len(), 1);
    assert_ne!(sa, sb, "B lacks a change");
    // What B lacks, computed from B's heads, is exactly the second change.
    let b_heads = b.heads(memory.id).expect("heads").expect("present");
    let missing = a
        .changes_for_peer(memory.id, &b_heads, false)
        .expect("changes");
    assert_eq!(missing, changes[1..]);
    // With B's exact hash set the answer is the same.
    let all_b = b.change_hashes(memory.id).expect("hashes");
    assert_eq!(
        a.changes_for_peer(memory.id, &all_b, true)
            .expect("changes"),
        changes[1..]
    );
    b.apply_changes(collection, memory.id, &missing)
        .expect("apply");
    assert_eq!(
        a.heads_summary(collection).expect("summary"),
        b.heads_summary(collection).expect("summary")
    );
    // Unknown heads are ignored: everything is sent.
    let stranger = [ChangeHash([7; 32])];
    assert_eq!(
        a.changes_for_peer(memory.id, &stranger, false)
            .expect("all")
            .len(),
        2
    );
    // Edits keep the heads table current.
    let edited = a
        .edit(
            memory.id,
            &MemoryEdit {
                title: Some("new".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert_eq!(edited.title, "new");
    assert_ne!(
        a.heads(memory.id).expect("heads").expect("present"),
        b_heads
    );
}

#[test]
fn tombstones_from_a_writer_delete_and_forged_ones_are_refused() {
    let TwoNodes {
        _dir,
        mut a,
        mut b,
        memory,
        changes,
    } = two_nodes();
    let collection = memory.collection;
    b.apply_changes(collection, memory.id, &changes)
        .expect("apply");
    let keep = a
        .add(NewMemory {
            collection: Some(collection),
            ..note("keep me")
        })
        .expect("add");
    b.apply_changes(
        collection,
        keep.id,
        &a.signed_changes(keep.id).expect("changes"),
    )
    .expect("apply");
    a.remove(&[memory.id]).expect("remove");
    let tombstones = a.tombstones(collection).expect("tombstones");
    assert_eq!(tombstones.len(), 1);
    // A tombstone with a forged signature, or for a memory of another collection, is refused
    // and nothing is deleted.
    let mut forged = tombstones[0].clone();
    forged.memory = keep.id.to_u128();
    assert!(matches!(
        b.apply_tombstones(collection, &[forged]),
        Err(ApplyError::Refused(_))
    ));
    assert_eq!(b.count().expect("count"), 2);
    // A's real tombstone deletes; applying it again is a no-op.
    assert_eq!(
        b.apply_tombstones(collection, &tombstones).expect("apply"),
        [memory.id]
    );
    assert!(matches!(b.get(memory.id), Err(StoreError::Deleted(_))));
    assert!(
        b.apply_tombstones(collection, &tombstones)
            .expect("again")
            .is_empty()
    );
    assert_eq!(b.tombstones(collection).expect("relayed"), tombstones);
    assert_eq!(b.table_sizes().expect("sizes")["heads-1"], 1);
    // A tombstone signed by a stranger is refused.
    let stranger = Keypair::generate();
    let at = Timestamp::from_millis(5);
    let message = tombstone_message(collection, keep.id, at);
    let fake = crate::acl::SignedTombstone {
        memory: keep.id.to_u128(),
        collection: collection.to_u128(),
        deleted_at: 5,
        author: *stranger.did().public_key(),
        signature: *stranger.sign(&message).as_bytes(),
    };
    assert!(matches!(
        b.apply_tombstones(collection, &[fake]),
        Err(ApplyError::NotAllowed { .. })
    ));
    assert_eq!(b.get(keep.id).expect("kept").content, "keep me");
}

#[test]
fn link_tables_follow_every_write_and_are_derived_for_an_older_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "links.redb", &me);
    let [x, y, z] = ["x", "y", "z"].map(|t| store.add(note(t)).expect("add").id);
    let link = |to: &[MemoryId]| MemoryEdit {
        add_links: to.iter().map(|&t| (t, "related".to_owned())).collect(),
        ..MemoryEdit::default()
    };
    store.edit(x, &link(&[y, z])).expect("edit");
    // Times are milliseconds: the second edit must be later, not in the same one.
    std::thread::sleep(std::time::Duration::from_millis(3));
    store.edit(y, &link(&[z])).expect("edit");
    let ids = |ms: Vec<Memory>| ms.into_iter().map(|m| m.id).collect::<Vec<_>>();
    // Most recently changed first, as `list` orders them.
    assert_eq!(ids(store.backlinks(z).expect("backlinks")), [y, x]);
    assert_eq!(
        ids(store.backlinks(x).expect("backlinks")),
        Vec::<MemoryId>::new()
    );
    // In id order (ids made in one millisecond need not follow creation order).
    let sorted = |mut v: Vec<MemoryId>| {
        v.sort();
        v
    };
    assert_eq!(
        store.link_neighbours(&[x, z], None).expect("neighbours"),
        [sorted(vec![y, z]), sorted(vec![x, y])]
    );
    // An edit that drops a link drops its rows.
    store
        .edit(
            x,
            &MemoryEdit {
                remove_links: vec![z],
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert_eq!(ids(store.backlinks(z).expect("backlinks")), [y]);
    // A deleted memory is nobody's neighbour, and its own rows go.
    store.remove(&[y]).expect("remove");
    assert!(store.backlinks(z).expect("backlinks").is_empty());
    assert_eq!(
        store.link_neighbours(&[x], None).expect("neighbours"),
        [Vec::<MemoryId>::new()]
    );
    let sizes = store.table_sizes().expect("sizes");
    assert_eq!(
        (sizes["links-1"], sizes["backlinks-1"]),
        (1, 1),
        "x → y stays in x"
    );
    // A collection filter keeps the walk inside it.
    let work = store.create_collection("work").expect("collection").id;
    std::thread::sleep(std::time::Duration::from_millis(3));
    let w = store
        .add(NewMemory {
            collection: Some(work),
            ..note("w")
        })
        .expect("add")
        .id;
    std::thread::sleep(std::time::Duration::from_millis(3));
    store.edit(z, &link(&[w, x])).expect("edit");
    assert_eq!(
        store
            .link_neighbours(&[z], Some(&[work]))
            .expect("neighbours"),
        [vec![w]]
    );
    // Every memory in a live link, most recently changed first; x → y counts no more.
    assert_eq!(store.linked(None).expect("linked"), [z, w, x]);
    assert!(
        store.linked(Some(&[work])).expect("linked").is_empty(),
        "z is not in work"
    );

    // A store from before the link tables: they are derived from the documents on open.
    drop(store);
    {
        let db = redb::Database::create(dir.path().join("links.redb")).expect("raw open");
        let txn = db.begin_write().expect("txn");
        txn.delete_table(LINKS).expect("drop links");
        txn.delete_table(BACKLINKS).expect("drop backlinks");
        txn.commit().expect("commit");
    }
    let store = open(&dir, "links.redb", &me);
    assert_eq!(ids(store.backlinks(x).expect("backlinks")), [z]);
    assert_eq!(ids(store.backlinks(w).expect("backlinks")), [z]);
    assert_eq!(
        store.link_neighbours(&[z], None).expect("neighbours"),
        [vec![x, w]]
    );
    assert_eq!(store.linked(None).expect("linked"), [z, w, x]);
}

#[test]
fn links_that_arrive_from_a_peer_are_indexed_and_tombstones_clear_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let shared = share_with(&mut a, &mut b, Role::Write);
    let in_shared = |c: &str| NewMemory {
        collection: Some(shared),
        ..note(c)
    };
    let target = a.add(in_shared("target")).expect("add").id;
    let source = a
        .add(NewMemory {
            links: vec![(target, "cites".into())],
            ..in_shared("source")
        })
        .expect("add")
        .id;
    for id in [target, source] {
        b.apply_changes(shared, id, &a.signed_changes(id).expect("changes"))
            .expect("apply");
    }
    let backlinks = b.backlinks(target).expect("backlinks");
    assert_eq!(backlinks.iter().map(|m| m.id).collect::<Vec<_>>(), [source]);
    a.remove(&[source]).expect("remove");
    b.apply_tombstones(shared, &a.tombstones(shared).expect("tombstones"))
        .expect("apply");
    assert!(b.backlinks(target).expect("backlinks").is_empty());
    let sizes = b.table_sizes().expect("sizes");
    assert_eq!((sizes["links-1"], sizes["backlinks-1"]), (0, 0));
}

#[test]
fn read_views_and_titles_are_derived_once_for_a_store_made_before_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "old.redb", &me);
    let alpha = store
        .add(NewMemory {
            title: Some("Ålpha Notes".into()),
            ..note("one [[Beta]]")
        })
        .expect("add");
    let beta = store.add(note("Beta\nsecond")).expect("add");
    // What a store written before `views-1`, `titles-1` and `mentions-1` looks like; then
    // one that has views but not yet the mentions table. Each is derived on open.
    let mut store = store;
    for views_too in [true, false] {
        let txn = store.db().expect("db").begin_write().expect("txn");
        if views_too {
            assert!(txn.delete_table(VIEWS).expect("delete"));
            assert!(txn.delete_table(TITLES).expect("delete"));
        }
        assert!(txn.delete_table(MENTIONS).expect("delete"));
        txn.commit().expect("commit");
        drop(store);
        store = open(&dir, "old.redb", &me);
        assert_eq!(store.verify_views().expect("views"), 2);
        assert_eq!(
            store.mentioning("beta").expect("mentioning"),
            vec![alpha.id]
        );
    }
    assert_eq!(store.get(beta.id).expect("get"), beta);
    assert_eq!(
        store.titled("  ålpha NOTES ").expect("titled"),
        vec![alpha.id]
    );
    assert_eq!(store.titled("beta").expect("titled"), vec![beta.id]);
    assert!(store.titled("gamma").expect("titled").is_empty());
}

#[test]
fn a_title_change_moves_its_row_and_a_delete_removes_view_and_title() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "t.redb", &me);
    let m = store.add(note("First title\nbody")).expect("add");
    retitle(&mut store, m.id, "Second title");
    assert!(store.titled("first title").expect("titled").is_empty());
    assert_eq!(store.titled("second title").expect("titled"), vec![m.id]);
    store.verify_views().expect("views");
    store.remove(&[m.id]).expect("remove");
    assert!(store.titled("second title").expect("titled").is_empty());
    assert_eq!(store.verify_views().expect("views"), 0);
    assert!(matches!(store.get(m.id), Err(StoreError::Deleted(_))));
}

#[test]
fn a_wikilink_to_a_title_that_does_not_exist_yet_resolves_when_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "w.redb", &me);
    let wiki = crate::markdown::WIKILINK_RELATION;
    let early = store
        .add(note("Plans\nsee [[Later Note]] and [[dir/Renamed|r]]"))
        .expect("add");
    assert!(early.links.is_empty());
    assert_eq!(store.mentioning("later note").expect("m"), vec![early.id]);

    // The title appears: the waiting memory links to it, in the same write.
    let mut feed = store.subscribe();
    let later = store.add(note("later NOTE\nbody")).expect("add");
    let early_now = store.get(early.id).expect("get");
    assert_eq!(
        early_now.links.get(&later.id).map(String::as_str),
        Some(wiki)
    );
    assert_eq!(
        store.backlinks(later.id).expect("backlinks"),
        vec![early_now.clone()]
    );
    let events: Vec<_> = std::iter::from_fn(|| feed.try_recv().ok()).collect();
    assert!(
        events
            .iter()
            .any(|e| e.memory == early.id && e.kind == ChangeKind::Updated),
        "{events:?}"
    );

    // A second memory with the same title is ambiguous: nothing more is linked.
    let twin = store.add(note("Later note\nanother")).expect("add");
    assert!(
        !store
            .get(early.id)
            .expect("get")
            .links
            .contains_key(&twin.id)
    );

    // A rename to a waited-for title links too; a rename away does not unlink.
    let other = store.add(note("Something\nelse")).expect("add");
    retitle(&mut store, other.id, "renamed");
    assert_eq!(
        store
            .get(early.id)
            .expect("get")
            .links
            .get(&other.id)
            .map(String::as_str),
        Some(wiki)
    );
    // The text no longer names it: the mention goes with it.
    store
        .edit(
            early.id,
            &MemoryEdit {
                content: Some("Plans\nnothing linked now".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert!(store.mentioning("later note").expect("m").is_empty());
    store.remove(&[early.id]).expect("remove");
    assert_eq!(store.table_sizes().expect("sizes")["mentions-1"], 0);
    store.verify_views().expect("views");
}

#[test]
fn memories_prepared_off_the_writer_are_stored_with_the_writers_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "p.redb", &me);
    let builder = store.builder();
    let prepared = builder
        .prepare(&note("Prepared elsewhere\nbody [[Prepared elsewhere]]"))
        .expect("prepare");
    store.add_prepared(&prepared).expect("add");
    let added = prepared.memory().clone();
    assert_eq!(store.get(added.id).expect("get"), added);
    // The same prepared memory again neither overwrites it nor, once deleted, revives it.
    assert!(store.add_prepared(&prepared).is_err());
    let gone = builder.prepare(&note("to be deleted")).expect("prepare");
    store.add_prepared(&gone).expect("add");
    let gone_id = gone.memory().id;
    store.remove(&[gone_id]).expect("remove");
    assert!(matches!(
        store.add_prepared(&gone),
        Err(StoreError::Deleted(id)) if id == gone_id
    ));
    // Another identity's builder is refused.
    let stranger = open(&dir, "other.redb", &Keypair::generate()).builder();
    let foreign = stranger.prepare(&note("not mine")).expect("prepare");
    assert!(store.add_prepared(&foreign).is_err());
    assert_eq!(added.author, me.did().to_string());
    store.verify_all().expect("signatures");
    store.verify_views().expect("views");
    // Validation happens when preparing; the store's own checks when adding.
    assert!(matches!(
        builder.prepare(&note("   ")),
        Err(StoreError::Invalid(crate::ValidationError::EmptyContent))
    ));
    let elsewhere = CollectionId::new(Timestamp::now());
    let orphan = builder
        .prepare(&NewMemory {
            collection: Some(elsewhere),
            ..note("in a collection this store does not have")
        })
        .expect("prepare");
    assert!(matches!(
        store.add_prepared(&orphan),
        Err(StoreError::UnknownCollection(_))
    ));
    assert_eq!(store.count().expect("count"), 1);
}

#[test]
fn a_waiting_link_never_reveals_a_private_memory_to_a_shared_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "privacy.redb", &me);
    let shared = store
        .create_collection("with friends")
        .expect("collection")
        .id;
    store
        .share(shared, &Keypair::generate().did(), Role::Write)
        .expect("share");
    let invited = store.create_collection("invited").expect("collection").id;
    store
        .create_invite(invited, Role::Read, Timestamp::from_millis(i64::MAX / 2))
        .expect("invite");
    let diary = store.create_collection("diary").expect("collection").id;
    let notes = store.create_collection("notes").expect("collection").id;
    let waiting = |store: &mut Store, collection| {
        store
            .add(NewMemory {
                collection: Some(collection),
                ..note("Waiting\nabout [[Secret plan]]")
            })
            .expect("add")
            .id
    };
    let in_shared = waiting(&mut store, shared);
    let in_invited = waiting(&mut store, invited);
    let in_diary = waiting(&mut store, diary);
    let in_notes = waiting(&mut store, notes);
    let secret = store
        .add(NewMemory {
            collection: Some(diary),
            ..note("Secret plan\nonly for me")
        })
        .expect("add");
    let links_to_secret =
        |store: &Store, id| store.get(id).expect("get").links.contains_key(&secret.id);
    assert!(links_to_secret(&store, in_diary), "same collection");
    assert!(
        links_to_secret(&store, in_notes),
        "another private collection"
    );
    assert!(!links_to_secret(&store, in_shared), "a shared collection");
    assert!(
        !links_to_secret(&store, in_invited),
        "a collection with an open invite"
    );
}

#[test]
fn forget_history_keeps_what_a_memory_says_and_erases_what_it_said_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let collection = share_with(&mut a, &mut b, Role::Write);
    // Upper-case letters the new text lacks: the text diff keeps them in one run.
    let before = "the code QZXJWQZXJW";
    let memory = a
        .add(NewMemory {
            title: Some("Door code".into()),
            tags: vec!["home".into()],
            collection: Some(collection),
            created_at: Some(Timestamp::from_millis(1_600_000_000_000)),
            ..note(before)
        })
        .expect("add");
    let memory = a
        .edit(
            memory.id,
            &MemoryEdit {
                content: Some("the code 9902".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    let linking = a
        .add(NewMemory {
            collection: Some(collection),
            links: vec![(memory.id, "see-also".into())],
            ..note("where the door code is")
        })
        .expect("add");
    // B holds the whole history, as a peer would.
    for m in [&memory, &linking] {
        b.apply_changes(collection, m.id, &a.signed_changes(m.id).expect("changes"))
            .expect("apply");
    }
    // Live documents (not freed pages) hold the earlier text.
    a.vacuum().expect("vacuum");
    b.vacuum().expect("vacuum");
    assert_eq!(count_in_dir(dir.path(), b"QZXJWQZXJW"), 2);

    let fresh = a.forget_history(memory.id).expect("forget history");
    assert_ne!(fresh.id, memory.id);
    for (field, same) in [
        ("title", fresh.title == memory.title),
        ("content", fresh.content == memory.content),
        ("tags", fresh.tags == memory.tags),
        ("created_at", fresh.created_at == memory.created_at),
        ("collection", fresh.collection == memory.collection),
    ] {
        assert!(same, "{field} changed");
    }
    assert_eq!(a.signed_changes(fresh.id).expect("changes").len(), 1);
    assert!(matches!(a.get(memory.id), Err(StoreError::Deleted(_))));
    let relinked = a.get(linking.id).expect("linking");
    assert_eq!(
        relinked.links.into_iter().collect::<Vec<_>>(),
        [(fresh.id, "see-also".to_owned())]
    );
    assert_eq!(a.backlinks(fresh.id).expect("backlinks")[0].id, linking.id);
    a.verify_views().expect("views");

    // The peer erases the old history with the tombstone and takes the new memory.
    b.apply_tombstones(collection, &a.tombstones(collection).expect("tombstones"))
        .expect("tombstone");
    for id in [fresh.id, linking.id] {
        b.apply_changes(collection, id, &a.signed_changes(id).expect("changes"))
            .expect("apply");
    }
    drop(b);
    assert_eq!(
        count_in_dir(dir.path(), b"QZXJWQZXJW"),
        0,
        "the earlier text is in no file"
    );
    assert_eq!(a.get(fresh.id).expect("fresh").content, "the code 9902");
}

#[test]
fn concurrent_edits_of_the_same_words_are_marked_and_settled_by_a_new_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let collection = share_with(&mut a, &mut b, Role::Write);
    let sync = |from: &Store, to: &mut Store, id: MemoryId| {
        to.apply_changes(collection, id, &from.signed_changes(id).expect("changes"))
            .expect("apply");
    };
    let set = |store: &mut Store, id: MemoryId, text: &str| {
        store
            .edit(
                id,
                &MemoryEdit {
                    content: Some(text.into()),
                    ..MemoryEdit::default()
                },
            )
            .expect("edit");
    };
    let base = "Meeting on Wednesday at 10:30 in room 4";
    let m = a
        .add(NewMemory {
            collection: Some(collection),
            ..note(base)
        })
        .expect("add")
        .id;
    sync(&a, &mut b, m);

    // Different parts: merged, no mark.
    set(&mut a, m, "Meeting on Tuesday at 10:30 in room 4");
    set(&mut b, m, "Meeting on Wednesday at 10:30 in room 7");
    sync(&b, &mut a, m);
    sync(&a, &mut b, m);
    assert_eq!(
        a.get(m).expect("get").content,
        "Meeting on Tuesday at 10:30 in room 7"
    );
    assert_eq!(a.conflict(m).expect("read"), None);
    assert_eq!(b.conflict(m).expect("read"), None);

    // The same words: both sides see the mark, with both versions.
    set(&mut a, m, "Meeting on Tuesday at 9:15 in room 7");
    set(&mut b, m, "Meeting on Tuesday at 11:45 in room 7");
    sync(&b, &mut a, m);
    sync(&a, &mut b, m);
    let found = a.conflict(m).expect("read").expect("A marks it");
    assert_eq!(found.ours, "Meeting on Tuesday at 9:15 in room 7");
    assert_eq!(found.theirs, "Meeting on Tuesday at 11:45 in room 7");
    let on_b = b.conflict(m).expect("read").expect("B marks it");
    assert_eq!(on_b.ours, found.theirs);
    assert_eq!(a.conflicted().expect("list"), [m]);
    // The marks survive a vacuum, and a tag edit settles nothing.
    a.vacuum().expect("vacuum");
    a.edit(
        m,
        &MemoryEdit {
            add_tags: vec!["work".into()],
            ..MemoryEdit::default()
        },
    )
    .expect("tag");
    assert!(a.conflict(m).expect("read").is_some());

    // A picks a text: settled on A, and on B once the new text arrives.
    set(&mut a, m, "Meeting on Tuesday at 11:45 in room 7");
    assert_eq!(a.conflict(m).expect("read"), None);
    sync(&a, &mut b, m);
    assert_eq!(b.conflict(m).expect("read"), None);
    assert_eq!(
        b.get(m).expect("get").content,
        "Meeting on Tuesday at 11:45 in room 7"
    );

    // A deleted memory leaves no mark.
    set(&mut a, m, "at noon");
    set(&mut b, m, "at one");
    sync(&b, &mut a, m);
    sync(&a, &mut b, m);
    assert!(a.conflict(m).expect("read").is_some());
    assert!(b.conflict(m).expect("read").is_some());
    a.remove(&[m]).expect("remove");
    assert!(a.conflicted().expect("list").is_empty());
    // Nor does a deletion from a peer: both versions go with the memory.
    b.apply_tombstones(collection, &a.tombstones(collection).expect("tombstones"))
        .expect("tombstone");
    assert!(b.conflicted().expect("list").is_empty());
    assert_eq!(b.table_sizes().expect("sizes")["conflicts-1"], 0);
}

#[test]
fn tags_are_told_apart_without_regard_to_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir, "t.redb", &Keypair::generate());
    let m = store
        .add(NewMemory {
            tags: vec![
                "Daily".into(),
                "daily".into(),
                "#DAILY".into(),
                "work".into(),
            ],
            ..note("standup notes")
        })
        .expect("add");
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), ["Daily", "work"]);
    let other = store
        .add(NewMemory {
            tags: vec!["daily".into()],
            ..note("another day")
        })
        .expect("add");
    // Adding another spelling keeps the one it has; a filter in any case finds both.
    let m = store
        .edit(
            m.id,
            &MemoryEdit {
                add_tags: vec!["dAILY".into()],
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), ["Daily", "work"]);
    for spelling in ["daily", "DAILY", "#Daily"] {
        let found = store
            .list(&ListFilter {
                tag: Some(spelling.into()),
                ..ListFilter::default()
            })
            .expect("list");
        assert_eq!(found.len(), 2, "{spelling}");
    }
    // Removing in another case removes it.
    let m = store
        .edit(
            m.id,
            &MemoryEdit {
                remove_tags: vec!["DAILY".into()],
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), ["work"]);
    assert_eq!(store.get(other.id).expect("get").tags.len(), 1);
    store.verify_views().expect("views");
}

#[test]
fn a_rename_travels_to_members_a_move_rewrites_and_a_delete_needs_no_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let shared = share_with(&mut a, &mut b, Role::Write);
    let name_of = |s: &Store, c: CollectionId| {
        s.collections()
            .expect("collections")
            .into_iter()
            .find(|x| x.id == c)
            .map(|x| x.name)
    };

    // Rename: the owner's signed log carries it; the member shows it once applied.
    a.rename_collection(shared, "  Family recipes ")
        .expect("rename");
    assert_eq!(name_of(&a, shared).as_deref(), Some("Family recipes"));
    assert_eq!(name_of(&b, shared).as_deref(), Some("shared"));
    sync_acl(&a, &mut b, shared);
    assert_eq!(name_of(&b, shared).as_deref(), Some("Family recipes"));
    // Only the owner renames; names stay valid and unique.
    assert!(matches!(
        b.rename_collection(shared, "mine now"),
        Err(StoreError::Sharing(_))
    ));
    let other = a.create_collection("Work").expect("collection").id;
    assert!(matches!(
        a.rename_collection(other, "Family recipes"),
        Err(StoreError::DuplicateCollectionName(_))
    ));
    for bad in ["bad\u{7}name", "Fam\u{200B}ily", "\u{202E}yliamF"] {
        assert!(
            matches!(
                a.rename_collection(other, bad),
                Err(StoreError::InvalidCollectionName(_))
            ),
            "{bad:?}"
        );
    }
    // A peer's rename to an unacceptable name (signed by the owner all the same) is refused.
    let evil = SignedAclOp::sign(
        &a.keypair,
        crate::acl::AclOp {
            collection: shared.to_u128(),
            seq: a.acl_since(shared, 0).expect("acl").len() as u64 + 1,
            action: crate::acl::AclAction::Rename {
                name: "\u{1b}[2J".into(),
            },
            at: 0,
        },
    );
    assert!(b.apply_acl(shared, &[evil]).is_err());
    assert_eq!(name_of(&b, shared).as_deref(), Some("Family recipes"));
    // The default collection renames locally.
    let default = a.default_collection();
    a.rename_collection(default, "Inbox")
        .expect("rename default");
    assert_eq!(name_of(&a, default).as_deref(), Some("Inbox"));

    // Move: the memory is written anew in the target; what linked to it follows.
    let note_a = a
        .add(NewMemory {
            title: Some("Soup".into()),
            collection: Some(other),
            ..note("leek and potato")
        })
        .expect("add");
    let linking = a
        .add(NewMemory {
            collection: Some(other),
            links: vec![(note_a.id, "see-also".into())],
            ..note("dinner ideas")
        })
        .expect("add");
    let moved = a.move_memory(note_a.id, shared).expect("move");
    assert_ne!(moved.id, note_a.id);
    assert_eq!(moved.collection, shared);
    assert_eq!(
        (moved.title.as_str(), moved.content.as_str()),
        ("Soup", "leek and potato")
    );
    assert!(matches!(a.get(note_a.id), Err(StoreError::Deleted(_))));
    let relinked = a.get(linking.id).expect("get");
    assert!(relinked.links.contains_key(&moved.id));
    assert!(!relinked.links.contains_key(&note_a.id));
    // A move into a collection this node may only read is refused, and nothing changes.
    let read_only = share_with(&mut b, &mut a, Role::Read);
    assert!(matches!(
        a.move_memory(moved.id, read_only),
        Err(StoreError::ReadOnly(_))
    ));
    assert_eq!(a.get(moved.id).expect("still there").collection, shared);

    // Delete: refused while shared, for the default, and for a non-owner.
    assert!(matches!(
        a.delete_collection(shared),
        Err(StoreError::Sharing(_))
    ));
    assert!(matches!(
        a.delete_collection(default),
        Err(StoreError::Sharing(_))
    ));
    assert!(matches!(
        a.delete_collection(read_only),
        Err(StoreError::Sharing(_))
    ));
    // Unshared, it goes with its memories (and a ticket to it handed out goes too).
    a.create_invite(other, Role::Read, Timestamp::from_millis(i64::MAX / 2))
        .expect("invite");
    assert_eq!(a.table_sizes().expect("sizes")["invites-1"], 1);
    let deleted = a.delete_collection(other).expect("delete");
    assert_eq!(a.table_sizes().expect("sizes")["invites-1"], 0);
    assert_eq!(deleted, vec![linking.id], "the linking note");
    assert!(name_of(&a, other).is_none());
    assert!(matches!(a.get(linking.id), Err(StoreError::Deleted(_))));
    assert!(a.get(moved.id).is_ok(), "other collections are untouched");
    assert!(matches!(
        a.resolve_collection("Work"),
        Err(StoreError::UnknownCollection(_))
    ));
}

#[test]
fn other_nodes_get_names_that_stay_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let b = Keypair::generate().did();
    a.name_node(&b, Some("  Grandma's laptop ")).expect("name");
    assert_eq!(
        a.node_names().expect("names").get(&b).map(String::as_str),
        Some("Grandma's laptop")
    );
    assert!(matches!(
        a.name_node(&b, Some("bad\u{1b}name")),
        Err(StoreError::Sharing(_))
    ));
    let me = a.did();
    assert!(a.name_node(&me, Some("me")).is_err(), "not this node");
    a.name_node(&b, Some("")).expect("forget");
    assert!(a.node_names().expect("names").is_empty());
}

#[test]
fn a_new_memorys_history_is_its_one_change_short_or_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut a = open(&dir, "a.redb", &me);
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    // A short memory is stored as its first change, a long one as a document: both give
    // the same answers, and a peer takes either.
    for content in [
        "a short note".to_owned(),
        "long line of text\n".repeat(1000),
    ] {
        let memory = a.add(note(&content)).expect("add");
        let hashes = a.change_hashes(memory.id).expect("hashes");
        assert_eq!(hashes.len(), 1);
        assert_eq!(a.heads(memory.id).expect("heads"), Some(hashes.clone()));
        let changes = a.signed_changes(memory.id).expect("changes");
        assert_eq!(changes.len(), 1);
        if content.len() < 100 {
            // Sent as stored (chunk type 1, a change), not deflated again (type 2).
            assert_eq!(changes[0].bytes.get(8), Some(&1));
        }
        assert_eq!(
            a.changes_for_peer(memory.id, &[], false).expect("all"),
            changes
        );
        for exact in [false, true] {
            assert!(
                a.changes_for_peer(memory.id, &hashes, exact)
                    .expect("none")
                    .is_empty()
            );
        }
        let collection = memory.collection;
        b.adopt_collection(&a.descriptor(collection).expect("descriptor"))
            .expect("adopt");
        b.apply_changes(collection, memory.id, &changes)
            .expect("apply");
        assert_eq!(b.get(memory.id).expect("get"), memory);
        // Once edited, its history is read from its document: two changes.
        retitle(&mut a, memory.id, "edited");
        assert_eq!(a.change_hashes(memory.id).expect("hashes").len(), 2);
        let missing = a
            .changes_for_peer(memory.id, &hashes, false)
            .expect("missing");
        assert_eq!(missing.len(), 1);
        b.apply_changes(collection, memory.id, &missing)
            .expect("apply");
        assert_eq!(b.get(memory.id).expect("get").title, "edited");
        assert_eq!(
            a.verify_views().expect("views"),
            b.verify_views().expect("views")
        );
    }
}

/// Memory `id`'s document as stored.
fn stored_doc(store: &Store, id: MemoryId) -> Vec<u8> {
    let txn = store.db().expect("db").begin_read().expect("read");
    let table = txn.open_table(DOCS).expect("docs");
    let bytes = table.get(id.to_u128()).expect("get").expect("doc");
    bytes.value().to_vec()
}

/// A text above the merged-text limit that deflates little (so a document holding it
/// would be about as long), one per `round`.
fn incompressible(round: u64) -> String {
    let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..crate::MAX_MERGED_TEXT_BYTES / 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:x}", x % 65_536)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_long_text_is_kept_beside_its_document_and_travels_with_the_change_that_set_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut a = open(&dir, "a.redb", &me);
    let mut b = open(&dir, "b.redb", &Keypair::generate());
    let mut c = open(&dir, "c.redb", &Keypair::generate());
    let stored = |store: &Store, id: MemoryId| stored_doc(store, id).len();
    let text = incompressible;
    let memory = a.add(note(&text(0))).expect("add");
    assert!(text(0).len() > crate::MAX_MERGED_TEXT_BYTES);
    // However often it is edited, the document holds references, not the texts.
    for round in 1..=3 {
        let edited = rewrite(&mut a, memory.id, &text(round));
        assert_eq!(edited.content, text(round));
        let size = stored(&a, memory.id);
        assert!(size < 2048, "round {round}: the document is {size} bytes");
    }
    retitle(&mut a, memory.id, "titled");
    assert_eq!(a.get(memory.id).expect("get").content, text(3));
    // Its history travels with the current text, on the change that set it.
    let changes = a.signed_changes(memory.id).expect("changes");
    assert_eq!(changes.len(), 5);
    let with_text: Vec<usize> = (0..5).filter(|&i| changes[i].text.is_some()).collect();
    assert_eq!(with_text, [3]);
    assert_eq!(changes[3].text.as_deref(), Some(text(3).as_str()));
    assert_eq!(a.verify_all().expect("verify"), 5);
    let collection = memory.collection;
    for store in [&mut b, &mut c] {
        store
            .adopt_collection(&a.descriptor(collection).expect("descriptor"))
            .expect("adopt");
    }
    // Changes that make a text current without bringing it, or with another text (even of
    // the same length), are refused; nothing is stored.
    let mut same_length = text(3).into_bytes();
    same_length[0] = if same_length[0] == b'a' { b'b' } else { b'a' };
    for wrong in [None, Some(text(2)), String::from_utf8(same_length).ok()] {
        let mut sent = changes.clone();
        sent[3].text = wrong;
        let refused = c.apply_changes(collection, memory.id, &sent);
        assert!(
            matches!(&refused, Err(ApplyError::Refused(why)) if why.contains("without bringing it")),
            "{refused:?}"
        );
        assert!(matches!(c.get(memory.id), Err(StoreError::NotFound(_))));
    }
    let mut oversized = changes.clone();
    oversized[3].text = Some("x".repeat(crate::MAX_CONTENT_BYTES + 1));
    assert!(matches!(
        c.apply_changes(collection, memory.id, &oversized),
        Err(ApplyError::Change {
            index: 3,
            source: ChangeError::TextTooLarge(_)
        })
    ));
    // With it, the peer reads what the author reads, and passes it on as it came.
    b.apply_changes(collection, memory.id, &changes)
        .expect("apply");
    assert_eq!(
        b.get(memory.id).expect("get"),
        a.get(memory.id).expect("get")
    );
    assert_eq!(b.signed_changes(memory.id).expect("changes"), changes);
    c.apply_changes(
        collection,
        memory.id,
        &b.signed_changes(memory.id).expect("changes"),
    )
    .expect("apply from b");
    assert_eq!(c.get(memory.id).expect("get").content, text(3));
    // A peer that has the change that set the text is not sent the text again.
    retitle(&mut a, memory.id, "titled again");
    let heads = b.heads(memory.id).expect("heads").expect("some");
    let missing = a
        .changes_for_peer(memory.id, &heads, false)
        .expect("missing");
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].text, None);
    b.apply_changes(collection, memory.id, &missing)
        .expect("apply");
    assert_eq!(b.get(memory.id).expect("get").title, "titled again");
    assert_eq!(b.get(memory.id).expect("get").content, text(3));
    drop(a);
    let a = open(&dir, "a.redb", &me);
    assert_eq!(a.get(memory.id).expect("get").content, text(3));
    assert_eq!(
        a.verify_views().expect("views"),
        b.verify_views().expect("views")
    );
}

/// A memory written before long texts were kept beside (its text one string value in its
/// history) reads, edits and travels; its edits are appended to what was stored.
#[test]
fn a_long_text_held_as_a_string_value_by_an_older_node_still_reads_edits_and_travels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let older = Keypair::generate();
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    let mut b = open(&dir, "b.redb", &older);
    let collection = share_with(&mut a, &mut b, Role::Write);
    let stored = stored_doc;
    let text = incompressible(1);
    // The document as an older node wrote it, sent from B (a writer) to A.
    let id = MemoryId::new(Timestamp::now());
    let mut doc = AutoCommit::new().with_actor(crate::actor_id(&older.did()));
    doc.put(automerge::ROOT, "title", "Old").expect("put");
    doc.put(automerge::ROOT, "content", text.as_str())
        .expect("put");
    doc.commit();
    let mut change = doc.get_last_local_change().expect("change").clone();
    a.apply_changes(collection, id, &[SignedChange::sign(&older, &mut change)])
        .expect("apply");
    assert!(a.get(id).expect("get").content == text, "it reads");
    // A title edit and a new text are each appended to what was stored.
    let longer = format!("{text}and more");
    let mut kept = stored(&a, id);
    for edit in 0..2 {
        if edit == 0 {
            retitle(&mut a, id, "Still old");
        } else {
            rewrite(&mut a, id, &longer);
        }
        let now = stored(&a, id);
        assert!(
            now.len() > kept.len() && now[..kept.len()] == kept[..],
            "edit {edit} appended"
        );
        kept = now;
    }
    let memory = a.get(id).expect("get");
    assert!(memory.content == longer && memory.title == "Still old");
    assert_eq!(a.verify_views().expect("views"), 1);
    // The older node's history travels as it is, the new text with the change that set it.
    b.apply_changes(collection, id, &a.signed_changes(id).expect("changes"))
        .expect("apply");
    assert!(b.get(id).expect("get") == memory, "B reads what A reads");
}

#[test]
fn concurrent_rewrites_of_a_long_text_keep_the_losing_version_in_a_conflict_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two versions of the same length (a mark must not take one for the other).
    let long = |word: &str| format!("{word} ").repeat(crate::MAX_MERGED_TEXT_BYTES / 3);
    let (ours, theirs) = (long("ours"), long("them"));
    // Which version wins depends on the two nodes' keys: new pairs until both have won.
    let mut winners = std::collections::BTreeSet::new();
    for round in 0..40 {
        if winners.len() == 2 {
            break;
        }
        let mut a = open(&dir, &format!("a{round}.redb"), &Keypair::generate());
        let mut b = open(&dir, &format!("b{round}.redb"), &Keypair::generate());
        let collection = share_with(&mut a, &mut b, Role::Write);
        let sync = |from: &Store, to: &mut Store, id: MemoryId| {
            let heads = to.heads(id).expect("heads").unwrap_or_default();
            let changes = from.changes_for_peer(id, &heads, false).expect("changes");
            to.apply_changes(collection, id, &changes).expect("apply");
        };
        let m = a
            .add(NewMemory {
                collection: Some(collection),
                ..note(&long("base"))
            })
            .expect("add")
            .id;
        sync(&a, &mut b, m);
        // A title on one side and a text on the other: no mark.
        retitle(&mut a, m, "Long");
        rewrite(&mut b, m, &long("frst"));
        sync(&b, &mut a, m);
        sync(&a, &mut b, m);
        assert!(a.get(m).expect("get") == b.get(m).expect("get"));
        assert!(a.get(m).expect("get").content == long("frst"));
        assert_eq!(a.conflict(m).expect("read"), None);
        assert_eq!(b.conflict(m).expect("read"), None);
        // Both rewrite it: one version wins whole; the node that merges first (A) keeps
        // the other in its mark. (B gets A's change without A's text when A's lost: a
        // peer is sent the text that is current; B marks it when A's won.)
        rewrite(&mut a, m, &ours);
        rewrite(&mut b, m, &theirs);
        sync(&b, &mut a, m);
        sync(&a, &mut b, m);
        let won = a.get(m).expect("get").content;
        assert!(
            b.get(m).expect("get").content == won,
            "B reads what A reads"
        );
        assert!(won == ours || won == theirs);
        winners.insert(won == ours);
        let on_a = a.conflict(m).expect("read").expect("A marks it");
        assert!(on_a.ours == ours && on_a.theirs == theirs, "A's mark");
        let on_b = b.conflict(m).expect("read");
        assert_eq!(on_b.is_some(), won == ours);
        if let Some(on_b) = on_b {
            assert!(on_b.ours == theirs && on_b.theirs == ours, "B's mark");
        }
        // B, unaware, writes on top of both: A's mark (the only copy of a version) stays.
        rewrite(&mut b, m, &long("next"));
        sync(&b, &mut a, m);
        assert!(a.get(m).expect("get").content == long("next"));
        assert!(a.conflict(m).expect("read").is_some(), "A's mark stays");
        // Nor when B makes it short (a text merged by character) and edits that on top.
        rewrite(&mut b, m, "short now");
        sync(&b, &mut a, m);
        rewrite(&mut b, m, "short again");
        sync(&b, &mut a, m);
        assert_eq!(a.get(m).expect("get").content, "short again");
        let standing = a.conflict(m).expect("read").expect("A's mark stays");
        assert!(standing.ours == ours, "with A's version");
        // Picking the version that lost brings it back, on both.
        a.resolve_conflict(m, false).expect("resolve");
        sync(&a, &mut b, m);
        assert!(
            a.get(m).expect("get").content == ours,
            "A keeps its version"
        );
        assert!(b.get(m).expect("get").content == ours, "B gets it");
        assert_eq!(a.conflict(m).expect("read"), None);
        assert_eq!(
            a.verify_views().expect("views"),
            b.verify_views().expect("views")
        );
    }
    assert_eq!(winners.len(), 2, "both versions won in some round");
}

#[test]
fn a_long_text_is_kept_in_pieces_beside_its_view_and_they_follow_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = open(&dir, "a.redb", &Keypair::generate());
    // (length of the view's row, number of pieces)
    let kept = |store: &Store, id: MemoryId| -> (usize, usize) {
        let txn = store.db().expect("db").begin_read().expect("read");
        let row = txn
            .open_table(VIEWS)
            .expect("views")
            .get(id.to_u128())
            .expect("get")
            .map_or(0, |v| v.value().len());
        let id = id.to_u128();
        let pieces = txn
            .open_table(VIEW_TEXTS)
            .expect("texts")
            .range((id, 0)..=(id, u32::MAX))
            .expect("range")
            .count();
        (row, pieces)
    };
    let edit_text = |store: &mut Store, id: MemoryId, text: &str| {
        assert_eq!(rewrite(store, id, text).content, text);
    };
    // Three-byte characters after one byte: piece boundaries fall inside characters.
    let long = format!("x{}", "€".repeat(150_000));
    let memory = a.add(note(&long)).expect("add");
    let id = memory.id;
    let (row, pieces) = kept(&a, id);
    assert!(row < 1024, "the view keeps the text ({row} bytes)");
    assert_eq!(pieces, 2);
    assert_eq!(a.get(id).expect("get").content, long);
    // A new title keeps the pieces; a longer text replaces them; a short one goes back
    // into the view; every read reads the text as written.
    retitle(&mut a, id, "renamed");
    assert_eq!(kept(&a, id).1, 2);
    assert_eq!(a.get(id).expect("get").content, long);
    let longer = long.repeat(3);
    edit_text(&mut a, id, &longer);
    assert_eq!(kept(&a, id).1, 6);
    assert_eq!(a.get(id).expect("get").content, longer);
    assert_eq!(
        a.same_text(memory.collection, &longer).expect("same").len(),
        1
    );
    edit_text(&mut a, id, "short now");
    assert_eq!(kept(&a, id).1, 0);
    assert_eq!(a.get(id).expect("get").content, "short now");
    edit_text(&mut a, id, &long);
    assert_eq!(a.verify_views().expect("views"), 1);
    // A view written before texts had pieces (its text in its row) reads as it is, and its
    // next edit moves the text into pieces.
    {
        let whole = view::encode_whole(&a.get(id).expect("get")).expect("encode");
        let txn = a.db().expect("db").begin_write().expect("write");
        txn.open_table(VIEW_TEXTS)
            .expect("texts")
            .retain_in((id.to_u128(), 0)..=(id.to_u128(), u32::MAX), |_, _| false)
            .expect("clear");
        txn.open_table(VIEWS)
            .expect("views")
            .insert(id.to_u128(), whole.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    assert_eq!(kept(&a, id).1, 0);
    assert_eq!(a.get(id).expect("get").content, long);
    retitle(&mut a, id, "renamed again");
    assert_eq!(kept(&a, id).1, 2);
    assert_eq!(a.get(id).expect("get").content, long);
    // A delete takes the pieces with the view.
    a.remove(&[id]).expect("remove");
    assert_eq!(kept(&a, id), (0, 0));
}

/// Memories read together (a search's hits) come back in the order asked, each as a read
/// of it alone gives it: a deleted one and an unknown one fail alone.
#[test]
fn memories_read_together_come_back_each_as_read_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let me = Keypair::generate();
    let mut store = open(&dir, "a.redb", &me);
    let a = store.add(note("alpha")).expect("add");
    let b = store.add(note("beta")).expect("add");
    let gone = store.add(note("gamma")).expect("add");
    store.remove(&[gone.id]).expect("remove");
    let unknown = MemoryId::from_u128(7);
    let read = store
        .get_each(&[b.id, gone.id, a.id, unknown])
        .expect("read");
    assert_eq!(read.len(), 4);
    assert_eq!(read[0].as_ref().expect("beta").content, "beta");
    assert!(
        matches!(read[1], Err(StoreError::Deleted(_))),
        "{:?}",
        read[1]
    );
    assert_eq!(read[2].as_ref().expect("alpha").content, "alpha");
    assert!(
        matches!(read[3], Err(StoreError::NotFound(_))),
        "{:?}",
        read[3]
    );
    for (id, together) in [b.id, gone.id, a.id, unknown].into_iter().zip(&read) {
        assert_eq!(
            format!("{:?}", store.get(id)),
            format!("{together:?}"),
            "{id} read alone"
        );
    }
}
