//! A deterministic simulator: several nodes, each a real [`Store`] in memory, running
//! [`Session`]s over links with virtual time, loss, duplication, reordering, partitions
//! and restarts. Everything random comes from one seed, so a failing schedule replays.
//!
//! The simulator drives sessions the way the node's driver does: every change in a
//! node's store (local or from a peer) is offered to each of its sessions, and a session
//! that adopts a collection or learns ACL operations makes the node refresh its others.

use std::collections::{BTreeMap, HashMap};

use mnemon_crdt::{
    CollectionId, MemoryEdit, MemoryId, NewMemory, Role, SignedChange, Store, automerge,
};
use mnemon_identity::Keypair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::message::{Message, WireChange};
use crate::session::{Event, Output, Session, SessionConfig};

/// How the network misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Latency range in ms (random per message, so messages reorder).
    pub latency: (u64, u64),
}

impl Faults {
    /// A perfect network with 1–5 ms latency.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        latency: (1, 5),
    };
}

struct InFlight {
    at: u64,
    order: u64,
    from: usize,
    to: usize,
    epoch: u64,
    payload: Vec<u8>,
}

/// One node of the simulation.
pub struct SimNode {
    /// Its store.
    pub store: Store,
    /// The last change-log position pushed to sessions.
    seen: u64,
    sessions: BTreeMap<usize, (u64, Session)>,
    /// Refusals its sessions reported.
    pub refused: Vec<String>,
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("did", &self.store.did())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// The simulation.
pub struct Sim {
    keys: Vec<Keypair>,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// The current virtual time (ms).
    pub now: u64,
    /// The network's faults.
    pub faults: Faults,
    config: SessionConfig,
    rng: StdRng,
    in_flight: Vec<InFlight>,
    next_order: u64,
    next_epoch: u64,
    /// Messages delivered, for the numbers a test prints.
    pub delivered: u64,
    /// Bytes delivered.
    pub bytes: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish()
    }
}

impl Sim {
    /// `n` nodes with fresh keys (from the seed) and in-memory stores.
    pub fn new(n: usize, seed: u64, config: SessionConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<Keypair> = (0..n)
            .map(|_| {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                Keypair::from_seed(&seed)
            })
            .collect();
        let nodes = keys
            .iter()
            .map(|key| {
                let store = Store::open_in_memory(key.clone()).expect("in-memory store");
                SimNode {
                    seen: store.last_seq().expect("seq"),
                    store,
                    sessions: BTreeMap::new(),
                    refused: Vec::new(),
                }
            })
            .collect();
        Sim {
            keys,
            nodes,
            now: 0,
            faults: Faults::NONE,
            config,
            rng,
            in_flight: Vec::new(),
            next_order: 0,
            next_epoch: 0,
            delivered: 0,
            bytes: 0,
        }
    }

    /// Node 0 creates a collection and shares it with every other node as `role`.
    pub fn shared_collection(&mut self, role: Role) -> CollectionId {
        let c = self.nodes[0]
            .store
            .create_collection("shared")
            .expect("collection")
            .id;
        for i in 1..self.nodes.len() {
            let did = self.nodes[i].store.did();
            self.nodes[0].store.share(c, &did, role).expect("share");
        }
        c
    }

    /// Node `node` creates a collection it shares with nobody yet.
    pub fn create_only(&mut self, node: usize) -> CollectionId {
        self.nodes[node]
            .store
            .create_collection("shared")
            .expect("collection")
            .id
    }

    /// Makes `node` re-check every session's collections (after a share or unshare).
    pub fn refresh(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        for (_, session) in n.sessions.values_mut() {
            session.refresh(&n.store);
        }
        self.flush(node);
    }

    /// Sends `message` from `from` to `to` on their session, as a misbehaving `from` would.
    pub fn inject(&mut self, from: usize, to: usize, message: Message) {
        self.inject_raw(from, to, message.encode());
    }

    /// Sends raw bytes from `from` to `to` on their session.
    pub fn inject_raw(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        if let Some((epoch, _)) = self.nodes[from].sessions.get(&to) {
            let epoch = *epoch;
            self.transmit(from, to, epoch, payload);
        }
    }

    /// A change to memory `m` setting its title, made and signed by `node` (valid, but
    /// maybe not allowed).
    pub fn change_signed_by(&self, node: usize, m: MemoryId, title: &str) -> WireChange {
        self.change_on(node, node, m, title)
    }

    /// A change to memory `m` in `victim`'s name (its actor id) signed by `forger`.
    pub fn forge_in_name_of(&self, forger: usize, victim: usize, m: MemoryId) -> WireChange {
        self.change_on(victim, forger, m, "forged")
    }

    fn change_on(&self, actor: usize, signer: usize, m: MemoryId, title: &str) -> WireChange {
        let holder = if self.nodes[signer].store.get(m).is_ok() {
            signer
        } else {
            actor
        };
        let history = self.nodes[holder].store.signed_changes(m).expect("history");
        change_as(&history, &self.keys[actor].did(), &self.keys[signer], title)
    }

    /// Opens a session between `a` and `b` (closing any earlier one).
    pub fn connect(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.disconnect(a, b);
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        for (x, y) in [(a, b), (b, a)] {
            let local = self.nodes[x].store.did();
            let peer = self.nodes[y].store.did();
            let mut session = Session::new(local, peer, self.config.clone(), self.now);
            session.start(&self.nodes[x].store);
            self.nodes[x].sessions.insert(y, (epoch, session));
        }
        self.flush(a);
        self.flush(b);
    }

    /// Cuts the link between `a` and `b`: both sessions end, messages in flight are lost.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.nodes[a].sessions.remove(&b);
        self.nodes[b].sessions.remove(&a);
        self.in_flight
            .retain(|m| !((m.from == a && m.to == b) || (m.from == b && m.to == a)));
    }

    /// Restarts a node: every session it had is gone (its store is durable).
    pub fn restart(&mut self, node: usize) {
        let peers: Vec<usize> = self.nodes[node].sessions.keys().copied().collect();
        for peer in peers {
            self.disconnect(node, peer);
        }
        // Changes not pushed before the restart are covered by the next sessions' summaries.
        self.nodes[node].seen = self.nodes[node].store.last_seq().expect("seq");
    }

    /// Connects every pair.
    pub fn connect_all(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(a, b);
            }
        }
    }

    /// Whether `a` and `b` have a session.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.nodes[a].sessions.contains_key(&b)
    }

    /// Adds a memory on `node` and pushes it; returns it with its heads (the
    /// acknowledged write).
    pub fn add(
        &mut self,
        node: usize,
        collection: CollectionId,
        content: &str,
    ) -> Option<(MemoryId, Vec<automerge::ChangeHash>)> {
        let memory = self.nodes[node]
            .store
            .add(NewMemory {
                content: content.into(),
                collection: Some(collection),
                ..NewMemory::default()
            })
            .ok()?;
        self.flush(node);
        let heads = self.nodes[node].store.heads(memory.id).ok()??;
        Some((memory.id, heads))
    }

    /// Edits a memory on `node` (appending to its content); returns its heads afterwards.
    pub fn edit(
        &mut self,
        node: usize,
        memory: MemoryId,
        append: &str,
    ) -> Option<Vec<automerge::ChangeHash>> {
        let current = self.nodes[node].store.get(memory).ok()?;
        self.nodes[node]
            .store
            .edit(
                memory,
                &MemoryEdit {
                    content: Some(format!("{}{append}", current.content)),
                    ..MemoryEdit::default()
                },
            )
            .ok()?;
        self.flush(node);
        self.nodes[node].store.heads(memory).ok()?
    }

    /// Deletes a memory on `node`.
    pub fn remove(&mut self, node: usize, memory: MemoryId) -> bool {
        let ok = self.nodes[node].store.remove(&[memory]).is_ok();
        self.flush(node);
        ok
    }

    /// Pushes `node`'s store changes to its sessions and queues their output.
    fn flush(&mut self, node: usize) {
        loop {
            let n = &mut self.nodes[node];
            let events = n
                .store
                .changes_since(n.seen, usize::MAX)
                .expect("change log");
            if let Some(last) = events.last() {
                n.seen = last.seq;
            }
            let changed: Vec<_> = events.iter().map(|e| (e.collection, e.memory)).collect();
            for (_, session) in n.sessions.values_mut() {
                session.local_changes(&n.store, &changed);
            }
            let mut refresh = false;
            let mut outgoing = Vec::new();
            let mut closed = Vec::new();
            for (&peer, (epoch, session)) in n.sessions.iter_mut() {
                while let Some(output) = session.poll_output() {
                    match output {
                        Output::Send(message) => outgoing.push((peer, *epoch, message.encode())),
                        Output::Event(
                            Event::Adopted(_) | Event::Active(_) | Event::AclChanged(_),
                        ) => {
                            refresh = true;
                        }
                        Output::Event(Event::Refused(reason)) => n.refused.push(reason),
                        Output::Event(_) => {}
                        Output::Closed(_) => closed.push(peer),
                    }
                }
            }
            for (peer, epoch, payload) in outgoing {
                self.transmit(node, peer, epoch, payload);
            }
            for peer in closed {
                self.disconnect(node, peer);
            }
            if refresh {
                let n = &mut self.nodes[node];
                for (_, session) in n.sessions.values_mut() {
                    session.refresh(&n.store);
                }
            }
            let n = &self.nodes[node];
            let pending = n.store.last_seq().expect("seq") > n.seen
                || n.sessions.values().any(|(_, s)| s.has_output());
            if !pending {
                break;
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, epoch: u64, payload: Vec<u8>) {
        if self.rng.gen_bool(self.faults.loss.clamp(0.0, 1.0)) {
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.faults.latency;
            let at = self.now + self.rng.gen_range(lo..=hi.max(lo));
            self.next_order += 1;
            self.in_flight.push(InFlight {
                at,
                order: self.next_order,
                from,
                to,
                epoch,
                payload: payload.clone(),
            });
        }
    }

    /// Runs until virtual time `until`: delivers messages and fires timers in order.
    pub fn run_until(&mut self, until: u64) {
        loop {
            let next_message = self
                .in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, m)| (m.at, m.order))
                .map(|(i, m)| (m.at, i));
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .flat_map(|(i, n)| {
                    n.sessions
                        .iter()
                        .filter_map(move |(&p, (_, s))| s.poll_timeout().map(|t| (t, i, p)))
                })
                .min();
            let message_first = match (next_message, next_timer) {
                (Some((tm, _)), Some((tt, _, _))) => tm <= tt,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if message_first {
                let (at, index) = next_message.expect("checked");
                if at > until {
                    break;
                }
                self.now = self.now.max(at);
                let m = self.in_flight.swap_remove(index);
                let node = &mut self.nodes[m.to];
                let Some((epoch, session)) = node.sessions.get_mut(&m.from) else {
                    continue;
                };
                if *epoch != m.epoch {
                    continue;
                }
                self.delivered += 1;
                self.bytes += m.payload.len() as u64;
                session.handle_input(&m.payload, self.now, &mut node.store);
                self.flush(m.to);
            } else {
                let (at, node, peer) = next_timer.expect("checked");
                if at > until {
                    break;
                }
                self.now = self.now.max(at);
                let n = &mut self.nodes[node];
                if let Some((_, session)) = n.sessions.get_mut(&peer) {
                    session.handle_timeout(self.now, &n.store);
                }
                self.flush(node);
            }
        }
        self.now = self.now.max(until);
    }

    /// Whether no message is in flight.
    pub fn quiet(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Each node's view of `collection`: (memory → heads digest, deleted memories).
    pub fn views(&self, collection: CollectionId) -> Vec<View> {
        self.nodes
            .iter()
            .map(|n| View {
                heads: n
                    .store
                    .heads_summary(collection)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                deleted: n
                    .store
                    .tombstones(collection)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| MemoryId::from_u128(t.memory))
                    .collect(),
            })
            .collect()
    }

    /// A random number from the simulation's seed.
    pub fn random(&mut self, below: usize) -> usize {
        self.rng.gen_range(0..below.max(1))
    }

    /// Every node's session with a peer, for inspection.
    pub fn session(&self, node: usize, peer: usize) -> Option<&Session> {
        self.nodes[node].sessions.get(&peer).map(|(_, s)| s)
    }
}

/// What one node holds of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Memory → digest of its heads.
    pub heads: HashMap<MemoryId, [u8; 16]>,
    /// Deleted memories.
    pub deleted: std::collections::BTreeSet<MemoryId>,
}

/// A change on top of `history` (a memory's signed changes) setting its title, made in
/// `actor`'s name (its automerge actor id) and signed by `signer`: with `actor` not the
/// signer's DID, a forgery. For tests of hostile peers, here and over real connections.
pub fn change_as(
    history: &[SignedChange],
    actor: &mnemon_identity::Did,
    signer: &Keypair,
    title: &str,
) -> WireChange {
    use automerge::transaction::Transactable;
    let mut doc = automerge::AutoCommit::new().with_actor(mnemon_crdt::actor_id(actor));
    doc.apply_changes(
        history
            .iter()
            .map(|c| automerge::Change::from_bytes(c.bytes.clone()).expect("change")),
    )
    .expect("apply");
    doc.put(automerge::ROOT, "title", title).expect("put");
    doc.commit();
    let mut change = doc.get_last_local_change().expect("change").clone();
    WireChange::from_signed(SignedChange::sign(signer, &mut change))
}
