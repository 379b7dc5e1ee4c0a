//! Property test: replicas of one memory document converge.
//!
//! 3–5 replicas, each with its own actor (a node key), make random edits through the
//! memory model's own edit path and sync pairwise with automerge's sync protocol over a
//! lossy link that drops and duplicates messages; sessions may stop half-way. After a final
//! loss-free round, every replica must have equal heads, equal values and every change any
//! replica ever made.

use std::collections::BTreeSet;

use automerge::ChangeHash;
use automerge::sync::{self, SyncDoc};
use mnemon_identity::{Did, Keypair};
use proptest::prelude::*;

use crate::id::{CollectionId, MemoryId, Timestamp};
use crate::memory::{MemoryDoc, MemoryEdit, NewMemory};

#[derive(Debug, Clone)]
enum Edit {
    Title(String),
    Insert { at: usize, text: String },
    Delete { at: usize, len: usize },
    AddTag(u8),
    RemoveTag(u8),
    Importance(u8),
    Link(u8, String),
}

#[derive(Debug, Clone)]
enum Step {
    Edit {
        replica: usize,
        edit: Edit,
    },
    Sync {
        a: usize,
        b: usize,
        /// Per-message outcomes, consumed in order: 0 = deliver, 1 = drop, 2 = duplicate.
        fate: Vec<u8>,
        /// Messages exchanged before the session is cut.
        rounds: usize,
    },
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        "[a-z ]{0,12}".prop_map(Edit::Title),
        (any::<usize>(), "[a-zé🙂 \n]{1,6}").prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), 1usize..5).prop_map(|(at, len)| Edit::Delete { at, len }),
        (0u8..6).prop_map(Edit::AddTag),
        (0u8..6).prop_map(Edit::RemoveTag),
        (0u8..=10).prop_map(Edit::Importance),
        (0u8..4, "[a-z]{1,8}").prop_map(|(t, r)| Edit::Link(t, r)),
    ]
}

fn step_strategy(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..replicas, edit_strategy()).prop_map(|(replica, edit)| Step::Edit { replica, edit }),
        2 => (0..replicas, 0..replicas, prop::collection::vec(0u8..3, 0..16), 1usize..12)
            .prop_map(|(a, b, fate, rounds)| Step::Sync { a, b, fate, rounds }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (3usize..=5).prop_flat_map(|n| (Just(n), prop::collection::vec(step_strategy(n), 1..40)))
}

/// Link targets: a few fixed memory ids.
fn target(i: u8) -> MemoryId {
    MemoryId::from_u128(0x0100_0000_0000_0000_0000_0000_0000_0000 + u128::from(i))
}

fn to_edit(doc: &MemoryDoc, edit: &Edit) -> MemoryEdit {
    let id = MemoryId::from_u128(1);
    let c = CollectionId::from_u128(1);
    let content: Vec<char> = doc.read(id, c).content.chars().collect();
    let splice = |at: usize, del: usize, ins: &str| {
        let at = if content.is_empty() {
            0
        } else {
            at % (content.len() + 1)
        };
        let end = (at + del).min(content.len());
        let mut next: String = content[..at].iter().collect();
        next.push_str(ins);
        next.extend(&content[end..]);
        next
    };
    match edit {
        Edit::Title(t) => MemoryEdit {
            title: Some(t.clone()),
            ..MemoryEdit::default()
        },
        Edit::Insert { at, text } => MemoryEdit {
            content: Some(splice(*at, 0, text)),
            ..MemoryEdit::default()
        },
        Edit::Delete { at, len } => {
            let next = splice(*at, *len, "");
            MemoryEdit {
                // The model refuses empty content; keep one character.
                content: Some(if next.trim().is_empty() {
                    "x".into()
                } else {
                    next
                }),
                ..MemoryEdit::default()
            }
        }
        Edit::AddTag(t) => MemoryEdit {
            add_tags: vec![format!("tag{t}")],
            ..MemoryEdit::default()
        },
        Edit::RemoveTag(t) => MemoryEdit {
            remove_tags: vec![format!("tag{t}")],
            ..MemoryEdit::default()
        },
        Edit::Importance(i) => MemoryEdit {
            importance: Some(f64::from(*i) / 10.0),
            ..MemoryEdit::default()
        },
        Edit::Link(t, relation) => MemoryEdit {
            add_links: vec![(target(*t), relation.clone())],
            ..MemoryEdit::default()
        },
    }
}

struct Replica {
    doc: MemoryDoc,
}

/// Runs one sync session between `x` and `y` over a lossy link.
fn session(
    x: &mut Replica,
    y: &mut Replica,
    states: (&mut sync::State, &mut sync::State),
    fate: &[u8],
    rounds: usize,
) {
    // A new session starts from what was persisted: the shared heads only.
    let mut sx = sync::State::decode(&states.0.encode()).expect("state");
    let mut sy = sync::State::decode(&states.1.encode()).expect("state");
    let mut fates = fate.iter().copied().cycle();
    let mut quiet = 0;
    for round in 0..rounds {
        let (from, to, s_from, s_to) = if round % 2 == 0 {
            (&mut *x, &mut *y, &mut sx, &mut sy)
        } else {
            (&mut *y, &mut *x, &mut sy, &mut sx)
        };
        let Some(message) = from.doc.automerge().sync().generate_sync_message(s_from) else {
            quiet += 1;
            if quiet >= 2 {
                break;
            }
            continue;
        };
        quiet = 0;
        let copies = match fates.next().unwrap_or(0) {
            1 => 0,
            2 => 2,
            _ => 1,
        };
        let encoded = message.encode();
        for _ in 0..copies {
            let message = sync::Message::decode(&encoded).expect("decode");
            to.doc
                .automerge()
                .sync()
                .receive_sync_message(s_to, message)
                .expect("receive");
        }
    }
    *states.0 = sx;
    *states.1 = sy;
}

fn heal(replicas: &mut [Replica]) {
    // Loss-free full sessions between every pair, twice around, is enough to spread
    // every change to everyone.
    for _ in 0..2 {
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                if i == j {
                    continue;
                }
                let (lo, hi) = (i.min(j), i.max(j));
                let (left, right) = replicas.split_at_mut(hi);
                let mut s1 = sync::State::new();
                let mut s2 = sync::State::new();
                session(&mut left[lo], &mut right[0], (&mut s1, &mut s2), &[0], 200);
            }
        }
    }
}

fn run(n: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let keys: Vec<Did> = (0..n)
        .map(|i| Keypair::from_seed(&[i as u8 + 1; 32]).did())
        .collect();
    let start = NewMemory {
        title: Some("start".into()),
        content: "hello world".into(),
        tags: vec!["tag0".into()],
        ..NewMemory::default()
    }
    .validate()
    .expect("valid");
    let (mut first, _) = MemoryDoc::create_valid(&keys[0], &start, Timestamp::from_millis(1));
    let saved = first.save();
    let mut replicas: Vec<Replica> = keys
        .iter()
        .map(|k| Replica {
            doc: MemoryDoc::load(&saved, k).expect("load"),
        })
        .collect();
    let mut states: Vec<Vec<sync::State>> = (0..n)
        .map(|_| (0..n).map(|_| sync::State::new()).collect())
        .collect();
    let mut made: BTreeSet<ChangeHash> = first.heads().into_iter().collect();
    let mut clock = 10;

    for step in steps {
        match step {
            Step::Edit { replica, edit } => {
                clock += 1;
                let doc = &mut replicas[*replica].doc;
                let edit = to_edit(doc, edit);
                if let Some(hash) = doc
                    .edit(&edit, Timestamp::from_millis(clock))
                    .expect("edit")
                {
                    made.insert(hash);
                }
            }
            Step::Sync { a, b, fate, rounds } => {
                if a == b {
                    continue;
                }
                let (lo, hi) = ((*a).min(*b), (*a).max(*b));
                let (left, right) = replicas.split_at_mut(hi);
                let (states_lo, states_hi) = states.split_at_mut(hi);
                session(
                    &mut left[lo],
                    &mut right[0],
                    (&mut states_lo[lo][hi], &mut states_hi[0][lo]),
                    fate,
                    *rounds,
                );
            }
        }
    }

    heal(&mut replicas);

    let id = MemoryId::from_u128(1);
    let c = CollectionId::from_u128(1);
    let reference_heads = replicas[0].doc.heads();
    let reference = replicas[0].doc.read(id, c);
    for (i, replica) in replicas.iter_mut().enumerate() {
        prop_assert_eq!(
            &replica.doc.heads(),
            &reference_heads,
            "heads of replica {}",
            i
        );
        prop_assert_eq!(
            &replica.doc.read(id, c),
            &reference,
            "value of replica {}",
            i
        );
        for hash in &made {
            prop_assert!(
                replica.doc.automerge().get_change_by_hash(hash).is_some(),
                "replica {} lost change {}",
                i,
                hash
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn replicas_converge_despite_loss_and_duplication((n, steps) in scenario()) {
        run(n, &steps)?;
    }
}
