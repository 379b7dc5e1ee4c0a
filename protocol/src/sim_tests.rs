//! Sessions on the simulator: the acceptance rules of sharing, then a property test over
//! random schedules with faults.

use std::collections::{BTreeSet, HashMap};

use mnemon_crdt::automerge::ChangeHash;
use mnemon_crdt::{MemoryEdit, MemoryId, NewMemory, Role, StoreError};
use proptest::prelude::*;

use crate::message::{DocChanges, Message};
use crate::session::{SessionConfig, SyncState};
use crate::sim::{Faults, Sim};

fn config() -> SessionConfig {
    SessionConfig {
        idle_timeout: 30_000,
        resync_interval: 2_000,
        ..SessionConfig::default()
    }
}

fn settle(sim: &mut Sim) {
    let until = sim.now + 10_000;
    sim.run_until(until);
}

#[test]
fn a_summary_compared_while_a_join_streams_asks_for_nothing_twice_and_progress_counts_down() {
    let mut sim = Sim::new(
        2,
        7,
        SessionConfig {
            max_changes_docs: 10,
            ..config()
        },
    );
    // Messages take 20–400 ms, so the join's changes are on their way for a while.
    sim.faults = Faults {
        latency: (20, 400),
        ..Faults::NONE
    };
    let c = sim.shared_collection(Role::Write);
    let n: usize = 300;
    sim.nodes[0]
        .store
        .add_batch(
            (0..n)
                .map(|i| NewMemory {
                    content: format!("note {i}"),
                    collection: Some(c),
                    ..NewMemory::default()
                })
                .collect(),
        )
        .expect("add");
    sim.connect(0, 1);
    let sent = |sim: &Sim, from: usize, to: usize, kind: &str| {
        sim.session(from, to)
            .and_then(|s| s.traffic().sent.get(kind).copied())
            .unwrap_or(0)
    };
    // B asks for what it lacks...
    while sent(&sim, 1, 0, "heads") == 0 {
        let next = sim.now + 1;
        sim.run_until(next);
        assert!(sim.now < 5_000, "B never asked for the memories");
    }
    // ...and, while the answer is on its way, compares A's summary again (as after a
    // resync, or a fingerprint answered by a summary).
    let entries = sim.nodes[0]
        .store
        .heads_summary(c)
        .expect("summary")
        .into_iter()
        .map(|(m, d)| (m.to_u128(), d))
        .collect();
    let acl_seq = sim.nodes[0].store.acl_since(c, 0).expect("acl").len() as u64;
    sim.inject(
        0,
        1,
        Message::Summary {
            collection: c.to_u128(),
            entries,
            tombstones: Vec::new(),
            acl_seq,
            last: true,
        },
    );
    let mut differ_seen = BTreeSet::new();
    let until = sim.now + 10_000;
    while sim.now < until {
        let next = sim.now + 5;
        sim.run_until(next);
        for (_, state) in sim.session(1, 0).expect("session").sync_states() {
            if let SyncState::Behind { differ } = state {
                differ_seen.insert(differ);
            }
        }
    }
    assert_eq!(
        sim.views(c)[0],
        sim.views(c)[1],
        "B holds all of A's memories"
    );
    assert_eq!(sent(&sim, 1, 0, "heads"), 1, "B asked once");
    assert_eq!(
        sent(&sim, 0, 1, "changes"),
        (n / 10) as u64,
        "every memory's changes were sent once"
    );
    assert!(
        differ_seen.iter().any(|d| *d > 0 && *d < n),
        "the count of memories still to come went down as they arrived: {differ_seen:?}"
    );
    assert_eq!(
        sim.session(1, 0).expect("session").sync_states(),
        vec![(c, SyncState::InSync)]
    );
}

#[test]
fn a_shared_memory_arrives_edits_flow_back_and_concurrent_edits_merge() {
    let mut sim = Sim::new(2, 1, config());
    let c = sim.shared_collection(Role::Write);
    let (m, _) = sim.add(0, c, "the key is under the mat").expect("add");
    sim.connect(0, 1);
    settle(&mut sim);
    assert_eq!(
        sim.nodes[1].store.get(m).expect("arrived").content,
        "the key is under the mat"
    );
    for (a, b) in [(0, 1), (1, 0)] {
        let states = sim.session(a, b).expect("session").sync_states();
        assert_eq!(states, vec![(c, SyncState::InSync)], "node {a} about {b}");
    }
    sim.edit(1, m, " (blue one)").expect("edit on B");
    settle(&mut sim);
    assert_eq!(
        sim.nodes[0].store.get(m).expect("get").content,
        "the key is under the mat (blue one)"
    );
    // Concurrent edits while apart merge on both.
    sim.disconnect(0, 1);
    sim.nodes[0]
        .store
        .edit(
            m,
            &MemoryEdit {
                title: Some("Key".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit A");
    sim.nodes[1]
        .store
        .edit(
            m,
            &MemoryEdit {
                add_tags: vec!["home".into()],
                ..MemoryEdit::default()
            },
        )
        .expect("edit B");
    sim.connect(0, 1);
    settle(&mut sim);
    for node in &sim.nodes {
        let memory = node.store.get(m).expect("get");
        assert_eq!(memory.title, "Key");
        assert!(memory.tags.contains("home"));
    }
    assert_eq!(sim.views(c)[0], sim.views(c)[1]);
    assert!(sim.nodes.iter().all(|n| n.refused.is_empty()));
}

#[test]
fn long_texts_travel_beside_their_changes_concurrent_rewrites_converge_and_relay() {
    // 0 owns and shares with 1 and 2; 0 and 2 never meet.
    let mut sim = Sim::new(3, 11, config());
    let c = sim.shared_collection(Role::Write);
    let long = |word: &str| format!("{word} ").repeat(mnemon_crdt::MAX_MERGED_TEXT_BYTES / 4);
    // 2 learns of the collection from its owner first, then they part.
    sim.connect(0, 2);
    settle(&mut sim);
    sim.disconnect(0, 2);
    let (m, _) = sim.add(0, c, &long("first")).expect("add");
    sim.connect(0, 1);
    settle(&mut sim);
    assert_eq!(
        sim.nodes[1].store.get(m).expect("arrived").content,
        long("first")
    );
    // Both rewrite the text while apart: one version wins whole, on both.
    sim.disconnect(0, 1);
    for (node, word) in [(0, "zero"), (1, "one")] {
        sim.nodes[node]
            .store
            .edit(
                m,
                &MemoryEdit {
                    content: Some(long(word)),
                    ..MemoryEdit::default()
                },
            )
            .expect("rewrite");
    }
    sim.connect(0, 1);
    settle(&mut sim);
    let text = sim.nodes[0].store.get(m).expect("get").content;
    assert!(text == long("zero") || text == long("one"));
    assert_eq!(sim.nodes[1].store.get(m).expect("get").content, text);
    // A title edit after it does not send the text again.
    let before = sim.bytes;
    sim.nodes[0]
        .store
        .edit(
            m,
            &MemoryEdit {
                title: Some("Long".into()),
                ..MemoryEdit::default()
            },
        )
        .expect("retitle");
    settle(&mut sim);
    let sent = sim.bytes - before;
    assert_eq!(sim.nodes[1].store.get(m).expect("get").title, "Long");
    assert!(sent < text.len() as u64 / 10, "{sent} bytes for a title");
    // 1 passes it on to 2 with its text.
    sim.disconnect(0, 1);
    sim.connect(1, 2);
    settle(&mut sim);
    assert_eq!(sim.nodes[2].store.get(m).expect("relayed").content, text);
    assert_eq!(sim.views(c)[1], sim.views(c)[2]);
    for node in &sim.nodes {
        assert!(node.refused.is_empty(), "{:?}", node.refused);
        assert_eq!(node.store.verify_views().expect("views"), 1);
    }
}

#[test]
fn outsiders_see_nothing_readers_cannot_write_and_revocation_stops_sync() {
    // 0 owns; 1 is a reader; 2 was never invited.
    let mut sim = Sim::new(3, 2, config());
    let c = sim.create_only(0);
    let reader = sim.nodes[1].store.did();
    sim.nodes[0]
        .store
        .share(c, &reader, Role::Read)
        .expect("share");
    let (m, _) = sim.add(0, c, "family recipes").expect("add");
    sim.connect_all();
    settle(&mut sim);
    assert!(sim.nodes[1].store.get(m).is_ok(), "the reader receives");
    assert!(matches!(
        sim.nodes[2].store.get(m),
        Err(StoreError::NotFound(_))
    ));
    // Nothing naming the collection went to the outsider, from anyone.
    for node in [0, 1] {
        let traffic = sim.session(node, 2).expect("session").traffic();
        assert!(
            !traffic.collections_sent.contains(&c.to_u128()),
            "node {node} told the outsider about the collection: {traffic:?}"
        );
        assert_eq!(traffic.sent.get("changes"), None);
    }
    // The reader cannot write locally, and a change it forces onto the wire is refused
    // by the owner and never reaches the outsider.
    assert!(matches!(
        sim.nodes[1].store.edit(
            m,
            &MemoryEdit {
                title: Some("mine now".into()),
                ..MemoryEdit::default()
            }
        ),
        Err(StoreError::ReadOnly(_))
    ));
    let forced = sim.change_signed_by(1, m, "mine now");
    sim.inject(
        1,
        0,
        Message::Changes {
            collection: c.to_u128(),
            docs: vec![DocChanges {
                memory: m.to_u128(),
                changes: vec![forced],
            }],
        },
    );
    let refused_before = sim.nodes[0].refused.len();
    let deadline = sim.now + 10_000;
    while sim.nodes[0].refused.len() == refused_before && sim.now < deadline {
        let step = sim.now + 1;
        sim.run_until(step);
    }
    // The owner shows the refusal as the collection's state with the reader.
    let states = sim.session(0, 1).expect("session").sync_states();
    assert!(
        matches!(&states[..], [(sc, SyncState::Error(reason))] if *sc == c && reason.contains("may not write")),
        "{states:?}"
    );
    settle(&mut sim);
    assert_ne!(sim.nodes[0].store.get(m).expect("get").title, "mine now");
    // The reader's store never held the forced change, so a later comparison agrees.
    let session = sim.session(0, 1).expect("session");
    assert_eq!(session.sync_states(), vec![(c, SyncState::InSync)]);
    // The refusal is still on record.
    assert!(
        session
            .last_refused(c)
            .is_some_and(|r| r.contains("may not write")),
        "{:?}",
        session.last_refused(c)
    );
    assert!(
        sim.nodes[0]
            .refused
            .iter()
            .any(|r| r.contains("may not write")),
        "{:?}",
        sim.nodes[0].refused
    );
    assert!(sim.nodes[2].store.get(m).is_err());

    // After the owner revokes the reader, the reader receives nothing new.
    sim.nodes[0].store.unshare(c, &reader).expect("revoke");
    sim.refresh(0);
    settle(&mut sim);
    let (later, _) = sim.add(0, c, "after the revocation").expect("add");
    settle(&mut sim);
    assert!(sim.nodes[1].store.get(later).is_err());
    assert_eq!(sim.nodes[1].store.access(c, &reader).expect("access"), None);
}

#[test]
fn changes_relay_through_a_member_and_forgeries_are_refused() {
    // 0 owns and shares with 1 and 2 as writers; 0 and 2 never meet.
    let mut sim = Sim::new(3, 3, config());
    let c = sim.shared_collection(Role::Write);
    sim.connect(0, 1);
    sim.connect(0, 2);
    settle(&mut sim);
    sim.disconnect(0, 2);
    let (m, heads) = sim.add(0, c, "written by the owner").expect("add");
    settle(&mut sim);
    // 0 goes offline; 1 meets 2.
    sim.disconnect(0, 1);
    sim.connect(1, 2);
    settle(&mut sim);
    let relayed = sim.nodes[2].store.get(m).expect("relayed through 1");
    assert_eq!(relayed.author, sim.nodes[0].store.did().to_string());
    assert_eq!(sim.nodes[2].store.heads(m).expect("heads"), Some(heads));
    assert!(sim.nodes[2].store.verify_all().expect("verify") >= 1);

    // 1 forges a change in 0's name (0's actor, 1's signature): 2 refuses it.
    let forged = sim.forge_in_name_of(1, 0, m);
    sim.inject(
        1,
        2,
        Message::Changes {
            collection: c.to_u128(),
            docs: vec![DocChanges {
                memory: m.to_u128(),
                changes: vec![forged],
            }],
        },
    );
    settle(&mut sim);
    assert_eq!(
        sim.nodes[2].store.get(m).expect("get").content,
        "written by the owner"
    );
    assert!(
        sim.nodes[2]
            .refused
            .iter()
            .any(|r| r.contains("does not match its author")),
        "{:?}",
        sim.nodes[2].refused
    );
}

#[test]
fn a_large_join_arrives_in_bounded_messages_and_a_refused_memory_spares_its_neighbours() {
    let mut sim = Sim::new(2, 4, config());
    let c = sim.shared_collection(Role::Write);
    let per_message = config().max_changes_docs;
    let total = per_message * 2 + 10;
    let ids: Vec<MemoryId> = (0..total)
        .map(|i| sim.add(0, c, &format!("note {i}")).expect("add").0)
        .collect();
    sim.connect(0, 1);
    settle(&mut sim);
    for id in &ids {
        assert!(sim.nodes[1].store.get(*id).is_ok(), "{id} did not arrive");
    }
    sim.nodes[1].store.verify_views().expect("views agree");
    let messages = sim.session(1, 0).expect("session").traffic().received["changes"];
    assert!(
        messages >= total.div_ceil(per_message) as u64,
        "{total} memories came in {messages} messages of at most {per_message}"
    );

    // One message: a valid change by the owner beside a forgery. The forgery is
    // refused, the valid change is stored.
    let good = sim.change_signed_by(0, ids[0], "renamed by the owner");
    let forged = sim.forge_in_name_of(1, 0, ids[1]);
    sim.inject(
        0,
        1,
        Message::Changes {
            collection: c.to_u128(),
            docs: vec![
                DocChanges {
                    memory: ids[1].to_u128(),
                    changes: vec![forged],
                },
                DocChanges {
                    memory: ids[0].to_u128(),
                    changes: vec![good],
                },
            ],
        },
    );
    settle(&mut sim);
    assert_eq!(
        sim.nodes[1].store.get(ids[0]).expect("get").title,
        "renamed by the owner"
    );
    assert_eq!(
        sim.nodes[1].store.get(ids[1]).expect("get").content,
        "note 1"
    );
    assert!(
        sim.nodes[1]
            .refused
            .iter()
            .any(|r| r.contains("does not match its author")),
        "{:?}",
        sim.nodes[1].refused
    );
}

#[test]
fn garbage_from_a_peer_is_refused_and_the_session_survives() {
    let mut sim = Sim::new(2, 4, config());
    let c = sim.shared_collection(Role::Write);
    sim.connect(0, 1);
    settle(&mut sim);
    sim.inject_raw(1, 0, vec![0xff; 40]);
    settle(&mut sim);
    assert!(sim.connected(0, 1));
    assert!(
        sim.nodes[0]
            .refused
            .iter()
            .any(|r| r.contains("undecodable"))
    );
    let (m, _) = sim.add(0, c, "still syncing").expect("add");
    settle(&mut sim);
    assert!(sim.nodes[1].store.get(m).is_ok());
}

#[derive(Debug, Clone)]
enum Op {
    Add { node: usize },
    Edit { node: usize, pick: usize },
    Remove { node: usize, pick: usize },
    Cut { a: usize, b: usize },
    Join { a: usize, b: usize },
    Restart { node: usize },
    Wait { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..5).prop_map(|node| Op::Add { node }),
        4 => (0usize..5, any::<usize>()).prop_map(|(node, pick)| Op::Edit { node, pick }),
        1 => (0usize..5, any::<usize>()).prop_map(|(node, pick)| Op::Remove { node, pick }),
        2 => (0usize..5, 0usize..5).prop_map(|(a, b)| Op::Cut { a, b }),
        2 => (0usize..5, 0usize..5).prop_map(|(a, b)| Op::Join { a, b }),
        1 => (0usize..5).prop_map(|node| Op::Restart { node }),
        3 => (1u64..3_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

/// Once two nodes have compared a collection, a resync costs a fingerprint each way, not
/// a summary of every memory: an idle pair sharing thousands of memories exchanges bytes
/// per minute. A change after the quiet still arrives.
#[test]
fn an_idle_pair_exchanges_fingerprints_not_summaries() {
    const MEMORIES: usize = 1500;
    let mut sim = Sim::new(2, 11, config());
    let c = sim.shared_collection(Role::Write);
    sim.connect_all();
    settle(&mut sim);
    for i in 0..MEMORIES {
        sim.add(i % 2, c, &format!("note {i}")).expect("add");
    }
    for _ in 0..3 {
        settle(&mut sim);
    }
    let views = sim.views(c);
    assert_eq!(views[0].heads.len(), MEMORIES);
    assert_eq!(views[0], views[1]);
    // One summary is 32 bytes per memory; 20 resyncs of both sides sent summaries.
    let one_summary = (MEMORIES * 32) as u64;
    let before = sim.bytes;
    let until = sim.now + 20 * config().resync_interval;
    sim.run_until(until);
    let idle = sim.bytes - before;
    eprintln!(
        "{idle} bytes in 20 idle resyncs of {MEMORIES} memories (one summary: {one_summary})"
    );
    assert!(
        idle < one_summary / 4,
        "{idle} bytes in 20 idle resyncs (one summary is {one_summary})"
    );
    let (late, _) = sim.add(1, c, "after the quiet").expect("add");
    settle(&mut sim);
    let views = sim.views(c);
    assert!(views[0].heads.contains_key(&late));
    assert_eq!(views[0], views[1]);
}

fn cases() -> u32 {
    std::env::var("MNEMON_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_after_faults_and_lose_no_acknowledged_write(
        n in 3usize..=5,
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        duplicate in 0.0f64..0.3,
        ops in prop::collection::vec(op(), 5..40),
    ) {
        let mut sim = Sim::new(n, seed, config());
        let c = sim.shared_collection(Role::Write);
        sim.connect_all();
        settle(&mut sim);
        sim.faults = Faults { loss, duplicate, latency: (1, 400) };
        // Acknowledged writes: (memory, heads right after the write on its node).
        let mut acknowledged: Vec<(MemoryId, Vec<ChangeHash>)> = Vec::new();
        let mut removed: BTreeSet<MemoryId> = BTreeSet::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Add { node } => {
                    if let Some(write) = sim.add(node % n, c, &format!("note {i}")) {
                        acknowledged.push(write);
                    }
                }
                Op::Edit { node, pick } => {
                    let node = node % n;
                    let held: Vec<MemoryId> = sim.views(c)[node].heads.keys().copied().collect();
                    if let Some(m) = held.get(pick % held.len().max(1)).copied()
                        && let Some(heads) = sim.edit(node, m, &format!(" +{i}"))
                    {
                        acknowledged.push((m, heads));
                    }
                }
                Op::Remove { node, pick } => {
                    let node = node % n;
                    let mut held: Vec<MemoryId> = sim.views(c)[node].heads.keys().copied().collect();
                    held.sort();
                    if let Some(m) = held.get(pick % held.len().max(1)).copied()
                        && sim.remove(node, m)
                    {
                        removed.insert(m);
                    }
                }
                Op::Cut { a, b } => sim.disconnect(a % n, b % n),
                Op::Join { a, b } => sim.connect(a % n, b % n),
                Op::Restart { node } => sim.restart(node % n),
                Op::Wait { ms } => {
                    let until = sim.now + ms;
                    sim.run_until(until);
                }
            }
        }
        // Heal: a perfect network, and every pair connected; sessions that lived through
        // the faults stay, so their resyncs must repair what was lost.
        sim.faults = Faults::NONE;
        for a in 0..n {
            for b in a + 1..n {
                if !sim.connected(a, b) {
                    sim.connect(a, b);
                }
            }
        }
        for _ in 0..4 {
            settle(&mut sim);
        }
        let views = sim.views(c);
        if views.iter().any(|v| v != &views[0]) {
            for (i, node) in sim.nodes.iter().enumerate() {
                let links: Vec<bool> = (0..n).map(|p| sim.connected(i, p)).collect();
                eprintln!("node {i}: links {links:?} refused {:?}", node.refused);
                for p in 0..n {
                    if let Some(s) = sim.session(i, p) {
                        eprintln!("  to {p}: active {:?} closed {} traffic {:?}", s.active(), s.is_closed(), s.traffic().sent);
                    }
                }
            }
        }
        for (i, view) in views.iter().enumerate() {
            prop_assert_eq!(view, &views[0], "node {} differs from node 0", i);
        }
        // Values are equal too, not just heads.
        let values: Vec<HashMap<MemoryId, (String, String)>> = sim
            .nodes
            .iter()
            .map(|node| {
                views[0]
                    .heads
                    .keys()
                    .map(|m| {
                        let memory = node.store.get(*m).expect("held");
                        (*m, (memory.title, memory.content))
                    })
                    .collect()
            })
            .collect();
        for v in &values {
            prop_assert_eq!(v, &values[0]);
        }
        // Every read view equals what its document reads as, on every node, after local
        // edits, merges from peers and deletes alike.
        for (i, node) in sim.nodes.iter().enumerate() {
            if let Err(e) = node.store.verify_views() {
                prop_assert!(false, "node {}: {}", i, e);
            }
        }
        // Every acknowledged write is in every replica, unless its memory was deleted.
        for (m, heads) in &acknowledged {
            if views[0].deleted.contains(m) {
                prop_assert!(removed.contains(m), "{} deleted but nobody deleted it", m);
                continue;
            }
            for node in &sim.nodes {
                let held = node.store.change_hashes(*m).expect("held");
                for h in heads {
                    prop_assert!(held.contains(h), "write {} to {} lost", h, m);
                }
            }
        }
        // Every session says so: each active collection is in sync.
        for i in 0..n {
            for p in 0..n {
                if let Some(session) = sim.session(i, p) {
                    for (collection, state) in session.sync_states() {
                        prop_assert_eq!(
                            &state, &SyncState::InSync,
                            "node {} about {} and {}", i, p, collection
                        );
                    }
                }
            }
        }
        // Honest nodes refuse nothing from each other.
        for node in &sim.nodes {
            prop_assert!(
                node.refused.iter().all(|r| r.contains("undecodable") || r.contains("deleted")),
                "{:?}", node.refused
            );
        }
    }
}
