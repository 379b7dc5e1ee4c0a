//! The sync session with one peer, as a state machine without I/O.
//!
//! The driver (the node, or the simulator) feeds it the peer's messages with
//! [`Session::handle_input`], tells it about local changes with [`Session::local_change`],
//! calls [`Session::handle_timeout`] when [`Session::poll_timeout`] says, and sends what
//! [`Session::poll_output`] returns. Time is milliseconds on any monotonic clock the driver
//! chooses (virtual in the simulator). The session reads and writes the store it is handed;
//! every change from the peer passes [`Store::apply_changes`], which checks each change's
//! signature and its author's right to write.
//!
//! The flow per session: both sides send `Hello` with the collections they offer the other
//! (only collections both may see); a collection is *active* once both offered it. For
//! each active collection each side sends its ACL operations the other lacks and a
//! `Summary` (a digest of every memory's heads, plus deletions). For memories whose digests
//! differ each side sends its `Heads`; a side that knows all the other's heads answers with
//! exactly the changes the other lacks, a side that does not answers with `Have` (every
//! hash it holds), which the other answers exactly. Afterwards local changes are pushed
//! as `Changes`. A resync on a timer repeats the summary, so a lost or reordered message
//! costs time, never data.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use mnemon_crdt::automerge::ChangeHash;
use mnemon_crdt::{
    Access, ApplyError, CollectionId, MemoryId, SignedDescriptor, SignedTombstone, Store,
    StoreError, StoreReader,
};
use mnemon_identity::Did;

use crate::message::{DocChanges, DocHeads, MAX_BATCH, MemberAddrs, Message, Offer, WireChange};

/// Limits and timers of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Close the session when the peer sent nothing for this long (ms).
    pub idle_timeout: u64,
    /// Repeat the summary of every active collection this often (ms).
    pub resync_interval: u64,
    /// Close the session after this many refused messages or changes.
    pub max_violations: u32,
    /// Most change bytes in one `Changes` message.
    pub max_changes_bytes: usize,
    /// Most memories in one `Changes` message. The receiver applies a message in one
    /// transaction on its writer thread, so this bounds how long its local writes wait
    /// behind a peer's large sync, and how often it can show progress.
    pub max_changes_docs: usize,
    /// After a comparison found differences, compare again once the exchange has been
    /// quiet this long (ms), to learn that both sides now agree; doubled after every
    /// comparison that still differs, up to `resync_interval`.
    pub confirm_delay: u64,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            idle_timeout: 120_000,
            resync_interval: 60_000,
            max_violations: 16,
            max_changes_bytes: 4 * 1024 * 1024,
            max_changes_docs: 256,
            confirm_delay: 1_000,
        }
    }
}

/// What the session asks its driver to do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this message to the peer.
    Send(Message),
    /// Something happened (for logs, status and tests).
    Event(Event),
    /// The session is over; close the stream. The reason is for the log.
    Closed(String),
}

/// Something that happened in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Both sides now sync this collection.
    Active(CollectionId),
    /// New ACL operations of a collection were stored (every session should re-check
    /// what it may sync).
    AclChanged(CollectionId),
    /// The peer redeemed an invite to this collection and is now a member.
    Redeemed(CollectionId),
    /// This node joined a collection the peer (its owner) offered.
    Adopted(CollectionId),
    /// Changes from the peer were stored.
    Applied {
        /// The collection.
        collection: CollectionId,
        /// The memory.
        memory: MemoryId,
        /// How many changes were new.
        new_changes: usize,
    },
    /// Deletions from the peer were carried out.
    Deleted {
        /// The collection.
        collection: CollectionId,
        /// How many.
        count: usize,
    },
    /// The peer's summary of a collection was processed and nothing differed.
    InSync(CollectionId),
    /// Something from the peer was refused; the session goes on.
    Refused(String),
    /// The peer says where another member of a collection both sync listens.
    Introduced {
        /// The member.
        did: Did,
        /// Its addresses, as multiaddr text (unchecked).
        addrs: Vec<String>,
    },
    /// The peer (a collection's owner) refused an invite this node redeemed; the join
    /// was dropped and the refusal kept.
    JoinRefused {
        /// The collection the invite was for.
        collection: CollectionId,
        /// Why.
        reason: String,
    },
}

/// Where a collection stands with the peer, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// The last comparison of both sides' summaries found them equal, and every change
    /// since was pushed (the stream is reliable) or applied.
    InSync,
    /// Not yet compared, or `differ` memories still differ and are being exchanged.
    Behind {
        /// Memories that differed at the last comparison, less those whose changes have
        /// arrived since (0 before the first comparison, and once all have).
        differ: usize,
    },
    /// Something about this collection from the peer was refused (until a later
    /// comparison finds both sides equal).
    Error(String),
}

/// Counters of what crossed the wire, per message kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent, by kind.
    pub sent: HashMap<&'static str, u64>,
    /// Messages received, by kind.
    pub received: HashMap<&'static str, u64>,
    /// Every collection id that appeared in a message sent.
    pub collections_sent: BTreeSet<u128>,
}

#[derive(Debug, Default)]
struct CollectionState {
    /// We offered it to the peer.
    offered: bool,
    /// The peer offered it to us.
    peer_offered: bool,
    /// The peer's ACL length, from its offer.
    peer_acl_seq: u64,
    /// Summary entries received so far (parts until `last`).
    incoming: Vec<(u128, [u8; 16])>,
    incoming_tombstones: Vec<u128>,
    /// Where it stands.
    state: Option<SyncState>,
    /// When to send a confirming summary (after a comparison that found differences).
    confirm_at: Option<u64>,
    /// The current confirm delay (ms; 0 = the configured one).
    confirm_backoff: u64,
    /// A summary of ours went out since the peer's last one arrived.
    summary_sent: bool,
    /// Our last word on it was a fingerprint, not a summary: a peer that answers with its
    /// summary cannot see what it lacks until ours follows.
    fingerprint_sent: bool,
    /// When a summary last went out in answer to a fingerprint.
    summary_answered_at: Option<u64>,
    /// The last refusal about this collection in this session; kept after the state
    /// returns to in sync, so a refusal never vanishes before anyone saw it.
    last_refused: Option<String>,
}

/// A summary's entries: (memory, digest of its heads).
type SummaryEntries = Vec<(u128, [u8; 16])>;

/// What to send of a memory: the changes not under these hashes (its heads as the peer
/// holds them), or with `true` not among them (every hash the peer holds).
type ChangeRequest = (MemoryId, Vec<ChangeHash>, bool);

/// The sync session with one peer.
#[derive(Debug)]
pub struct Session {
    local: Did,
    peer: Did,
    config: SessionConfig,
    collections: HashMap<CollectionId, CollectionState>,
    /// Change hashes the peer is known to hold (sent to it or received from it), per memory.
    peer_has: HashMap<MemoryId, HashSet<ChangeHash>>,
    /// The peer's heads of a memory, as last learnt.
    peer_heads: HashMap<MemoryId, Vec<ChangeHash>>,
    /// Memories whose changes we asked the peer for (our heads sent in `Heads`) and that
    /// have not arrived: when, and our heads then. A summary compared while the answer is
    /// still on its way (a large join streams for seconds) does not ask again, so nothing
    /// is sent twice; an answer that never comes is asked for again after
    /// [`SessionConfig::resync_interval`].
    asked: HashMap<MemoryId, (u64, Vec<ChangeHash>)>,
    outbox: VecDeque<Output>,
    last_heard: u64,
    /// The latest time the driver gave (ms).
    now: u64,
    /// The collection the message being handled is about.
    current: Option<CollectionId>,
    next_resync: u64,
    violations: u32,
    /// Invite nonces sent to the peer in this session.
    redeemed: HashSet<[u8; 16]>,
    /// The members last introduced to the peer, per collection (sent again only when it
    /// changes).
    introduced: HashMap<CollectionId, Vec<MemberAddrs>>,
    closed: bool,
    started: bool,
    traffic: Traffic,
}

fn store_err(e: StoreError) -> String {
    e.to_string()
}

impl Session {
    /// A session between this node (`local`) and `peer`, starting at `now`.
    pub fn new(local: Did, peer: Did, config: SessionConfig, now: u64) -> Session {
        Session {
            local,
            peer,
            next_resync: now + config.resync_interval,
            config,
            collections: HashMap::new(),
            peer_has: HashMap::new(),
            peer_heads: HashMap::new(),
            asked: HashMap::new(),
            outbox: VecDeque::new(),
            last_heard: now,
            now,
            current: None,
            violations: 0,
            redeemed: HashSet::new(),
            introduced: HashMap::new(),
            closed: false,
            started: false,
            traffic: Traffic::default(),
        }
    }

    /// The peer's DID.
    pub fn peer(&self) -> Did {
        self.peer
    }

    /// Tells the peer where the other members of each collection both sides sync can be
    /// reached (`addresses_of` says where this node sees a member connected; empty when
    /// it does not), so members meet without the owner. Only what changed since the last
    /// call goes out.
    pub fn introduce(&mut self, store: &StoreReader, addresses_of: &dyn Fn(&Did) -> Vec<String>) {
        for c in self.active() {
            let Ok(members) = store.members(c) else {
                continue;
            };
            // (This node owns it: its descriptor would be signed for nothing.)
            let owner = match store.access(c, &self.local) {
                Ok(Some(mnemon_crdt::Access::Owner)) => None,
                _ => store.descriptor(c).ok().and_then(|d| d.verify().ok()),
            };
            let mut peers: Vec<MemberAddrs> = owner
                .into_iter()
                .chain(members.into_iter().map(|m| m.did))
                .filter(|did| *did != self.peer && *did != self.local)
                .filter_map(|did| {
                    let mut addrs = addresses_of(&did);
                    addrs.retain(|a| a.len() <= crate::message::MAX_ADDR_LEN);
                    addrs.truncate(crate::message::MAX_MEMBER_ADDRS);
                    (!addrs.is_empty()).then(|| MemberAddrs {
                        member: *did.public_key(),
                        addrs,
                    })
                })
                .take(crate::message::MAX_INTRODUCED)
                .collect();
            peers.sort_by_key(|p| p.member);
            if peers.is_empty() || self.introduced.get(&c) == Some(&peers) {
                continue;
            }
            self.introduced.insert(c, peers.clone());
            self.send(Message::Members {
                collection: c.to_u128(),
                peers,
            });
        }
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// What crossed the wire so far.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The collections both sides sync.
    pub fn active(&self) -> Vec<CollectionId> {
        let mut out: Vec<_> = self
            .collections
            .iter()
            .filter(|(_, s)| s.offered && s.peer_offered)
            .map(|(c, _)| *c)
            .collect();
        out.sort();
        out
    }

    /// Where each collection both sides sync stands.
    pub fn sync_states(&self) -> Vec<(CollectionId, SyncState)> {
        let mut out: Vec<_> = self
            .collections
            .iter()
            .filter(|(_, s)| s.offered && s.peer_offered)
            .map(|(c, s)| {
                let state = s.state.clone().unwrap_or(SyncState::Behind { differ: 0 });
                (*c, state)
            })
            .collect();
        out.sort_by_key(|(c, _)| *c);
        out
    }

    /// The last thing refused about `collection` in this session, if any (it stays
    /// after a later comparison agrees, unlike [`SyncState::Error`]).
    pub fn last_refused(&self, collection: CollectionId) -> Option<&str> {
        self.collections
            .get(&collection)
            .and_then(|s| s.last_refused.as_deref())
    }

    /// Queues the opening `Hello` (with the invites this node holds from the peer).
    pub fn start(&mut self, store: &StoreReader) {
        if self.started {
            return;
        }
        self.started = true;
        let offers = self.offers(store);
        let redeem = self.unsent_invites(store);
        self.send(Message::Hello { offers, redeem });
    }

    /// Invites from the peer this node has not yet sent in this session.
    fn unsent_invites(&mut self, store: &StoreReader) -> Vec<Vec<u8>> {
        store
            .pending_joins(Some(&self.peer))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| self.redeemed.insert(t.invite.nonce))
            .map(|t| t.invite.to_bytes())
            .collect()
    }

    fn offers(&mut self, store: &StoreReader) -> Vec<Offer> {
        let shared = match store.shared_with(&self.peer) {
            Ok(shared) => shared,
            Err(e) => {
                self.event(Event::Refused(format!("reading collections: {e}")));
                return Vec::new();
            }
        };
        let mut offers = Vec::new();
        for c in shared {
            let Ok(descriptor) = store.descriptor(c.id) else {
                continue;
            };
            self.collections.entry(c.id).or_default().offered = true;
            offers.push(Offer {
                descriptor,
                acl_seq: c.acl_seq,
            });
        }
        offers
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let confirm = self.collections.values().filter_map(|s| s.confirm_at).min();
        Some(
            self.next_resync
                .min(self.last_heard + self.config.idle_timeout)
                .min(confirm.unwrap_or(u64::MAX)),
        )
    }

    /// Runs the timers: closes an idle session, repeats summaries.
    pub fn handle_timeout(&mut self, now: u64, store: &StoreReader) {
        if self.closed {
            return;
        }
        self.now = self.now.max(now);
        if now >= self.last_heard + self.config.idle_timeout {
            self.close(format!(
                "the peer was silent for {} s",
                self.config.idle_timeout / 1000
            ));
            return;
        }
        if now >= self.next_resync {
            self.next_resync = now + self.config.resync_interval;
            self.resync(store);
            return;
        }
        let due: Vec<CollectionId> = self
            .collections
            .iter_mut()
            .filter(|(_, s)| s.confirm_at.is_some_and(|t| t <= now))
            .map(|(c, s)| {
                s.confirm_at = None;
                *c
            })
            .collect();
        for c in due {
            if self.is_active(c) {
                self.send_acl_and_check(store, c);
            }
        }
    }

    /// Re-offers (picking up ACL changes and repeating offers the peer has not answered,
    /// in case they were lost) and repeats every active collection's summary.
    pub fn resync(&mut self, store: &StoreReader) {
        self.refresh(store);
        let unanswered: Vec<CollectionId> = self
            .collections
            .iter()
            .filter(|(_, s)| s.offered && !s.peer_offered)
            .map(|(c, _)| *c)
            .collect();
        self.send_offers(store, unanswered, false);
        let joining: Vec<CollectionId> = self
            .collections
            .iter()
            .filter(|(_, s)| !s.offered && s.peer_offered)
            .map(|(c, _)| *c)
            .collect();
        for c in joining {
            if store.descriptor(c).is_ok() {
                self.accept(store, c);
            }
        }
        for c in self.active() {
            if let Some(state) = self.collections.get_mut(&c) {
                state.confirm_at = None;
            }
            self.send_acl_and_check(store, c);
        }
    }

    /// Re-reads which collections may be synced with the peer: offers new ones, stops
    /// ones the peer or this node lost access to (after sending the ACL operations that
    /// say so).
    pub fn refresh(&mut self, store: &StoreReader) {
        if self.closed || !self.started {
            return;
        }
        let redeem = self.unsent_invites(store);
        if !redeem.is_empty() {
            self.send(Message::Hello {
                offers: Vec::new(),
                redeem,
            });
        }
        let before: HashSet<CollectionId> = self
            .collections
            .iter()
            .filter(|(_, s)| s.offered)
            .map(|(c, _)| *c)
            .collect();
        let shared: HashSet<CollectionId> = store
            .shared_with(&self.peer)
            .map(|s| s.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        for gone in before.difference(&shared) {
            // Tell the peer why (the ACL operations), then stop.
            if let Some(state) = self.collections.get(gone)
                && state.peer_offered
            {
                self.send_acl(store, *gone);
            }
            self.collections.remove(gone);
        }
        let new: Vec<CollectionId> = shared.difference(&before).copied().collect();
        if !new.is_empty() {
            let offers: Vec<Offer> = self
                .offers(store)
                .into_iter()
                .filter(|o| new.contains(&o.descriptor.id()))
                .collect();
            let activated: Vec<CollectionId> = offers
                .iter()
                .map(|o| o.descriptor.id())
                .filter(|c| self.collections.get(c).is_some_and(|s| s.peer_offered))
                .collect();
            self.send(Message::Offer {
                offers,
                answer: false,
            });
            for c in activated {
                self.activate(store, c);
            }
        } else {
            // The ACL may have changed without changing who may sync.
            for c in self.active() {
                self.send_acl(store, c);
            }
        }
    }

    /// A memory changed in this store (a local edit, or a change relayed from another
    /// peer): push what the peer lacks, if the collection is active.
    pub fn local_change(
        &mut self,
        store: &StoreReader,
        collection: CollectionId,
        memory: MemoryId,
    ) {
        self.local_changes(store, &[(collection, memory)]);
    }

    /// Memories that changed in this store, oldest first (what the change feed held):
    /// pushes what the peer lacks of each, per collection in as few messages as fit.
    pub fn local_changes(&mut self, store: &StoreReader, changes: &[(CollectionId, MemoryId)]) {
        if self.closed {
            return;
        }
        let mut syncs: HashMap<CollectionId, bool> = HashMap::new();
        let mut requests: Vec<(CollectionId, Vec<ChangeRequest>)> = Vec::new();
        for &(collection, memory) in changes {
            let syncs = *syncs
                .entry(collection)
                .or_insert_with(|| self.is_active(collection) && self.may_sync(store, collection));
            if !syncs {
                continue;
            }
            // The peer holds exactly what we hold (a deleted memory has no heads): the
            // usual case for what the peer itself just sent, so one read.
            if let Some(known) = self.peer_heads.get(&memory)
                && !known.is_empty()
                && store.heads(memory).ok().flatten().as_ref() == Some(known)
            {
                continue;
            }
            match store.tombstone(memory) {
                Ok(Some(t)) => {
                    self.send(Message::Tombstones {
                        collection: collection.to_u128(),
                        tombstones: vec![t],
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    self.event(Event::Refused(format!("reading {memory}: {e}")));
                    continue;
                }
            }
            let known = self.peer_heads.get(&memory).cloned().unwrap_or_default();
            match requests.last_mut() {
                Some((c, list)) if *c == collection => list.push((memory, known, false)),
                _ => requests.push((collection, vec![(memory, known, false)])),
            }
        }
        for (collection, list) in requests {
            self.send_changes(store, collection, &list);
        }
    }

    /// Handles one frame payload from the peer.
    pub fn handle_input(&mut self, payload: &[u8], now: u64, store: &mut Store) {
        if self.closed {
            return;
        }
        self.last_heard = now;
        self.now = self.now.max(now);
        let message = match Message::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                self.violation(format!("undecodable message: {e}"));
                return;
            }
        };
        *self.traffic.received.entry(message.kind()).or_default() += 1;
        self.current = message.collection().map(CollectionId::from_u128);
        if let Some(c) = self.current
            && let Some(state) = self.collections.get_mut(&c)
            && let Some(at) = state.confirm_at.as_mut()
        {
            // Still exchanging: confirm once it has been quiet.
            *at = (*at).max(now + state.confirm_backoff.max(self.config.confirm_delay));
        }
        self.handle_message(message, store);
        self.current = None;
    }

    fn handle_message(&mut self, message: Message, store: &mut Store) {
        // Everything about a collection needs it active, except its offer.
        if let Some(c) = message.collection() {
            let c = CollectionId::from_u128(c);
            // The owner's signed log is taken for a collection either side offered: it
            // may tell this node it was revoked while away (apply_acl checks every
            // signature and that nothing is missing).
            let acl_for_offered = matches!(message, Message::Acl { .. })
                && self
                    .collections
                    .get(&c)
                    .is_some_and(|s| s.peer_offered || s.offered);
            let usable = self.is_active(c) && self.may_sync(store, c);
            if !acl_for_offered && !usable {
                // Reordered, from before a revocation, or probing: ignore without a word,
                // so nothing about collections the peer may not see is revealed.
                return;
            }
        }
        match message {
            Message::Hello { offers, redeem } => {
                if !self.started {
                    self.start(store);
                }
                for invite in redeem {
                    match store.redeem_invite(&invite, &self.peer) {
                        Ok(c) => {
                            self.event(Event::Redeemed(c));
                            self.event(Event::AclChanged(c));
                        }
                        Err(e) => match mnemon_identity::Invite::from_bytes(&invite) {
                            // A real invite of ours that cannot be used (again): the
                            // joiner is told, so it stops waiting.
                            Ok((parsed, _)) if parsed.owner == self.local => {
                                let mut reason = e.to_string();
                                let mut cut = reason.len().min(crate::MAX_REASON);
                                while !reason.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                reason.truncate(cut);
                                self.event(Event::Refused(reason.clone()));
                                self.send(Message::InviteRefused {
                                    nonce: parsed.nonce,
                                    reason,
                                });
                            }
                            _ => self.violation(e.to_string()),
                        },
                    }
                }
                self.refresh(store);
                self.handle_offers(offers, false, store);
            }
            Message::Offer { offers, answer } => self.handle_offers(offers, answer, store),
            Message::Acl { collection, ops } => {
                let c = CollectionId::from_u128(collection);
                match store.apply_acl(c, &ops) {
                    Ok(0) => {}
                    Ok(_) => {
                        self.event(Event::AclChanged(c));
                        // Access may have changed either way.
                        self.refresh(store);
                        if self.is_active(c) && !self.collections[&c].offered {
                            self.activate(store, c);
                        }
                    }
                    Err(e) => self.violation(format!("ACL of {c}: {e}")),
                }
                // A joiner learns only now, from the owner's log, that it is a member.
                if self
                    .collections
                    .get(&c)
                    .is_some_and(|s| s.peer_offered && !s.offered)
                {
                    self.accept(store, c);
                }
            }
            Message::Summary {
                collection,
                entries,
                tombstones,
                acl_seq,
                last,
            } => {
                let c = CollectionId::from_u128(collection);
                let Some(state) = self.collections.get_mut(&c) else {
                    return;
                };
                state.peer_acl_seq = acl_seq;
                state.incoming.extend(entries);
                state.incoming_tombstones.extend(tombstones);
                if last {
                    let entries = std::mem::take(&mut state.incoming);
                    let tombstones = std::mem::take(&mut state.incoming_tombstones);
                    self.compare(store, c, entries, tombstones);
                }
            }
            Message::Heads { collection, docs } => {
                self.handle_heads(store, CollectionId::from_u128(collection), docs)
            }
            Message::Have { collection, docs } => {
                let c = CollectionId::from_u128(collection);
                let requests: Vec<ChangeRequest> = docs
                    .into_iter()
                    .map(|d| {
                        let hashes: Vec<ChangeHash> =
                            d.hashes.into_iter().map(ChangeHash).collect();
                        let memory = MemoryId::from_u128(d.memory);
                        // The answer to what we asked: the peer lacks changes of
                        // ours, which we send (what it holds that we lack follows once
                        // it has merged them).
                        self.asked.remove(&memory);
                        self.peer_has
                            .insert(memory, hashes.iter().copied().collect());
                        (memory, hashes, true)
                    })
                    .collect();
                self.send_changes(store, c, &requests);
            }
            Message::Changes { collection, docs } => {
                self.handle_changes(store, CollectionId::from_u128(collection), docs)
            }
            Message::Tombstones {
                collection,
                tombstones,
            } => {
                let c = CollectionId::from_u128(collection);
                match store.apply_tombstones(c, &tombstones) {
                    Ok(removed) if !removed.is_empty() => self.event(Event::Deleted {
                        collection: c,
                        count: removed.len(),
                    }),
                    Ok(_) => {}
                    Err(e) => self.violation(format!("deletions in {c}: {e}")),
                }
            }
            Message::Fingerprint {
                collection,
                digest,
                acl_seq,
            } => {
                self.check_fingerprint(store, CollectionId::from_u128(collection), digest, acl_seq)
            }
            Message::Members { collection, peers } => {
                let c = CollectionId::from_u128(collection);
                for peer in peers {
                    let Ok(did) = Did::from_public_key(&peer.member) else {
                        continue;
                    };
                    // Only members of the collection by this node's own log, and never
                    // this node or the sender.
                    if did == self.local || did == self.peer {
                        continue;
                    }
                    if matches!(store.access(c, &did), Ok(Some(_))) {
                        self.event(Event::Introduced {
                            did,
                            addrs: peer.addrs,
                        });
                    }
                }
            }
            Message::InviteRefused { nonce, reason } => {
                // Only the owner of the invite can refuse it; anything else is dropped.
                match store.refuse_join(&nonce, &self.peer, &reason) {
                    Ok(Some(collection)) => self.event(Event::JoinRefused { collection, reason }),
                    Ok(None) => {}
                    Err(e) => self.event(Event::Refused(format!("keeping a refusal: {e}"))),
                }
            }
            Message::Close { reason } => {
                self.closed = true;
                self.outbox
                    .push_back(Output::Closed(format!("the peer closed: {reason}")));
            }
        }
    }

    fn handle_offers(&mut self, offers: Vec<Offer>, answer: bool, store: &mut Store) {
        let mut answers = Vec::new();
        for offer in offers {
            let c = offer.descriptor.id();
            let owner = match offer.descriptor.verify() {
                Ok(owner) => owner,
                Err(e) => {
                    self.violation(format!("offer of {c}: {e}"));
                    continue;
                }
            };
            let known = store.access(c, &self.local).ok().flatten();
            let was_active = self.is_active(c);
            let state = self.collections.entry(c).or_default();
            state.peer_offered = true;
            state.peer_acl_seq = offer.acl_seq;
            if state.offered {
                if !was_active {
                    self.activate(store, c);
                } else if !answer {
                    // The peer offers again what we sync: it lost our offer.
                    answers.push(c);
                }
                continue;
            }
            if known.is_some() {
                // We hold it but did not offer it: the peer may not see it per our ACL
                // (it may have been revoked, or our log is behind). A member revoked while
                // it was away is told by the owner's log, up to its revocation; anyone
                // else hears nothing.
                if let Ok(Some(ops)) = store.revocation_for(c, &self.peer, offer.acl_seq)
                    && !ops.is_empty()
                {
                    for chunk in ops.chunks(MAX_BATCH) {
                        self.send(Message::Acl {
                            collection: c.to_u128(),
                            ops: chunk.to_vec(),
                        });
                    }
                }
                continue;
            }
            // An unknown collection: take it only from its owner.
            if owner != self.peer {
                continue;
            }
            match adopt(store, &offer.descriptor) {
                Ok(true) => self.event(Event::Adopted(c)),
                Ok(false) => {}
                Err(e) => {
                    self.violation(format!("offer of {c}: {e}"));
                    continue;
                }
            }
            // Ask for the owner's log by offering with what we hold (nothing).
            self.accept(store, c);
        }
        self.send_offers(store, answers, true);
    }

    /// Offers back a collection the peer offered, once this node may hold it (or to ask
    /// for the ACL that says so).
    /// Offers `collections` again (as they stand in the store now), if any.
    fn send_offers(&mut self, store: &StoreReader, collections: Vec<CollectionId>, answer: bool) {
        let offers: Vec<Offer> = collections
            .into_iter()
            .filter_map(|c| {
                Some(Offer {
                    descriptor: store.descriptor(c).ok()?,
                    acl_seq: store.acl_since(c, 0).ok()?.len() as u64,
                })
            })
            .collect();
        if !offers.is_empty() {
            self.send(Message::Offer { offers, answer });
        }
    }

    fn accept(&mut self, store: &StoreReader, c: CollectionId) {
        let Ok(descriptor) = store.descriptor(c) else {
            return;
        };
        let acl_seq = store
            .acl_since(c, 0)
            .map(|ops| ops.len() as u64)
            .unwrap_or(0);
        let member = matches!(store.access(c, &self.local), Ok(Some(_)));
        if member && let Some(state) = self.collections.get_mut(&c) {
            state.offered = true;
        }
        self.send(Message::Offer {
            offers: vec![Offer {
                descriptor,
                acl_seq,
            }],
            answer: false,
        });
        if member {
            self.activate(store, c);
        }
    }

    fn activate(&mut self, store: &StoreReader, c: CollectionId) {
        if !self.is_active(c) {
            return;
        }
        self.event(Event::Active(c));
        self.send_acl_and_summary(store, c);
    }

    fn send_acl(&mut self, store: &StoreReader, c: CollectionId) {
        let peer_seq = self.collections.get(&c).map_or(0, |s| s.peer_acl_seq);
        // The peer's position is learnt from its offers and summaries only, so a lost
        // message is sent again at the next resync.
        if let Ok(ops) = store.acl_since(c, peer_seq)
            && !ops.is_empty()
        {
            for chunk in ops.chunks(MAX_BATCH) {
                self.send(Message::Acl {
                    collection: c.to_u128(),
                    ops: chunk.to_vec(),
                });
            }
        }
    }

    /// The collection's summary as entries and deletions, or `None` (reported) if it
    /// cannot be read.
    fn summary(
        &mut self,
        store: &StoreReader,
        c: CollectionId,
    ) -> Option<(SummaryEntries, Vec<u128>)> {
        let summary = match store.heads_summary(c) {
            Ok(s) => s,
            Err(e) => {
                self.event(Event::Refused(format!("summary of {c}: {}", store_err(e))));
                return None;
            }
        };
        let tombstones: Vec<u128> = store
            .tombstones(c)
            .map(|t| t.into_iter().map(|t| t.memory).collect())
            .unwrap_or_default();
        let entries = summary.into_iter().map(|(m, d)| (m.to_u128(), d)).collect();
        Some((entries, tombstones))
    }

    /// The ACL operations the peer lacks, then: once the two sides have compared in this
    /// session, the summary's fingerprint (the peer answers with its summary only if it
    /// differs); before that, the summary itself.
    fn send_acl_and_check(&mut self, store: &StoreReader, c: CollectionId) {
        let compared = self.collections.get(&c).is_some_and(|s| s.state.is_some());
        if !compared {
            return self.send_acl_and_summary(store, c);
        }
        let Some((entries, tombstones, acl_seq)) = self.about_to_describe(store, c, true) else {
            return;
        };
        self.send(Message::Fingerprint {
            collection: c.to_u128(),
            digest: crate::summary_digest(&entries, &tombstones),
            acl_seq,
        });
    }

    /// The peer's fingerprint of `c`: equal to ours, the two agree (and the peer is told
    /// so once, if nothing of ours went out since); else our summary, to compare.
    fn check_fingerprint(
        &mut self,
        store: &StoreReader,
        c: CollectionId,
        digest: [u8; 16],
        acl_seq: u64,
    ) {
        let Some(state) = self.collections.get_mut(&c) else {
            return;
        };
        state.peer_acl_seq = acl_seq;
        let answered = std::mem::take(&mut state.summary_sent);
        let Some((entries, tombstones)) = self.summary(store, c) else {
            return;
        };
        if crate::summary_digest(&entries, &tombstones) != digest {
            let (now, delay) = (self.now, self.config.confirm_delay);
            let Some(state) = self.collections.get_mut(&c) else {
                return;
            };
            // Not in sync any more, whatever was shown: confirm once the exchange is quiet.
            if !matches!(state.state, Some(SyncState::Error(_))) {
                state.state = Some(SyncState::Behind { differ: 0 });
            }
            state.confirm_at.get_or_insert(now + delay);
            // A summary costs 32 bytes per memory, a fingerprint 30 in all: one summary
            // per confirm delay at most, whatever a peer sends.
            if state.summary_answered_at.is_some_and(|at| now < at + delay) {
                return;
            }
            state.summary_answered_at = Some(now);
            return self.send_acl_and_summary(store, c);
        }
        if let Some(state) = self.collections.get_mut(&c) {
            state.state = Some(SyncState::InSync);
            state.confirm_at = None;
            state.confirm_backoff = 0;
        }
        self.event(Event::InSync(c));
        // The ACL may still differ: it is sent whatever the digest says.
        if answered {
            self.send_acl(store, c);
        } else {
            self.send_acl_and_check(store, c);
        }
    }

    /// Before this node describes what it holds of `c` (a summary, or its fingerprint):
    /// the ACL operations the peer lacks go first; then the summary and the ACL length,
    /// and the collection's state records what went out.
    fn about_to_describe(
        &mut self,
        store: &StoreReader,
        c: CollectionId,
        fingerprint: bool,
    ) -> Option<(SummaryEntries, Vec<u128>, u64)> {
        self.send_acl(store, c);
        let (entries, tombstones) = self.summary(store, c)?;
        let acl_seq = store.acl_since(c, 0).map_or(0, |ops| ops.len() as u64);
        if let Some(state) = self.collections.get_mut(&c) {
            state.summary_sent = true;
            state.fingerprint_sent = fingerprint;
        }
        Some((entries, tombstones, acl_seq))
    }

    fn send_acl_and_summary(&mut self, store: &StoreReader, c: CollectionId) {
        let Some((entries, tombstones, acl_seq)) = self.about_to_describe(store, c, false) else {
            return;
        };
        let parts = entries
            .len()
            .div_ceil(MAX_BATCH)
            .max(tombstones.len().div_ceil(MAX_BATCH))
            .max(1);
        for part in 0..parts {
            self.send(Message::Summary {
                collection: c.to_u128(),
                entries: part_of(&entries, part),
                tombstones: part_of(&tombstones, part),
                acl_seq,
                last: part + 1 == parts,
            });
        }
    }

    /// Compares the peer's summary with ours; asks for and offers what differs.
    fn compare(
        &mut self,
        store: &StoreReader,
        c: CollectionId,
        theirs: Vec<(u128, [u8; 16])>,
        their_tombstones: Vec<u128>,
    ) {
        let mine: HashMap<u128, [u8; 16]> = match store.heads_summary(c) {
            Ok(s) => s.into_iter().map(|(m, d)| (m.to_u128(), d)).collect(),
            Err(_) => return,
        };
        let my_tombstones: Vec<_> = store.tombstones(c).unwrap_or_default();
        let my_dead: HashSet<u128> = my_tombstones.iter().map(|t| t.memory).collect();
        let their_dead: HashSet<u128> = their_tombstones.into_iter().collect();
        let theirs_map: HashMap<u128, [u8; 16]> = theirs.iter().copied().collect();

        // Deletions the peer lacks.
        let missing_dead: Vec<SignedTombstone> = my_tombstones
            .into_iter()
            .filter(|t| !their_dead.contains(&t.memory))
            .collect();
        for chunk in missing_dead.chunks(MAX_BATCH) {
            self.send(Message::Tombstones {
                collection: c.to_u128(),
                tombstones: chunk.to_vec(),
            });
        }

        // Answers that never came are forgotten (and asked for again below).
        let (now, patience) = (self.now, self.config.resync_interval);
        self.asked.retain(|_, (at, _)| now < *at + patience);
        let mut differing = Vec::new();
        let mut awaited = 0;
        for (m, digest) in &theirs_map {
            if my_dead.contains(m) {
                continue;
            }
            match mine.get(m) {
                Some(d) if d == digest => {
                    // Equal: the peer holds exactly our heads.
                    let memory = MemoryId::from_u128(*m);
                    if let Ok(Some(heads)) = store.heads(memory) {
                        self.peer_heads.insert(memory, heads);
                    }
                }
                _ => {
                    let memory = MemoryId::from_u128(*m);
                    if self.awaiting(store, memory) {
                        awaited += 1;
                    } else {
                        differing.push(memory);
                    }
                }
            }
        }
        let missing = mine
            .keys()
            .filter(|m| !theirs_map.contains_key(m) && !their_dead.contains(m))
            .count();
        // Deleted there, alive here: the peer sends the deletions once it sees our summary.
        let deleted_there = their_dead.iter().filter(|m| mine.contains_key(m)).count();
        let in_sync = differing.is_empty()
            && awaited == 0
            && missing == 0
            && missing_dead.is_empty()
            && deleted_there == 0;
        let (now, delay, cap) = (
            self.now,
            self.config.confirm_delay,
            self.config.resync_interval,
        );
        let mut tell_peer = false;
        let mut show_ours = false;
        if let Some(state) = self.collections.get_mut(&c) {
            // The peer answered our fingerprint with its summary: it lacks what only we
            // hold, and learns what that is from our summary.
            show_ours = std::mem::take(&mut state.fingerprint_sent) && missing + deleted_there > 0;
            let summary_sent = std::mem::take(&mut state.summary_sent);
            if in_sync {
                // If no summary of ours went out since the peer's last one, the peer
                // cannot know we agree (it may have compared an older summary of ours,
                // or be confirming): answer, once.
                tell_peer = !summary_sent;
                state.state = Some(SyncState::InSync);
                state.confirm_at = None;
                state.confirm_backoff = 0;
            } else {
                // A refusal stays on show until both sides agree again.
                if !matches!(state.state, Some(SyncState::Error(_))) {
                    state.state = Some(SyncState::Behind {
                        differ: differing.len()
                            + awaited
                            + missing
                            + missing_dead.len()
                            + deleted_there,
                    });
                }
                let backoff = state.confirm_backoff.max(delay);
                state.confirm_at = Some(now + backoff);
                state.confirm_backoff = (backoff * 2).min(cap.max(delay));
            }
        }
        if in_sync {
            self.event(Event::InSync(c));
            if tell_peer {
                self.send_acl_and_summary(store, c);
            }
        } else if show_ours {
            self.send_acl_and_summary(store, c);
        }
        let docs: Vec<DocHeads> = differing
            .into_iter()
            .map(|memory| self.ask(store, memory))
            .collect();
        for chunk in docs.chunks(MAX_BATCH) {
            self.send(Message::Heads {
                collection: c.to_u128(),
                docs: chunk.to_vec(),
            });
        }
    }

    /// Our heads of `memory`, to send the peer so it answers with what we lack; recorded
    /// as asked.
    fn ask(&mut self, store: &StoreReader, memory: MemoryId) -> DocHeads {
        let heads = store.heads(memory).ok().flatten().unwrap_or_default();
        let hashes = heads.iter().map(|h| h.0).collect();
        self.asked.insert(memory, (self.now, heads));
        DocHeads {
            memory: memory.to_u128(),
            hashes,
        }
    }

    /// Whether the changes of `memory` were asked for recently and nothing has arrived
    /// since (our heads are those we sent): the answer is still on its way.
    fn awaiting(&self, store: &StoreReader, memory: MemoryId) -> bool {
        self.asked.get(&memory).is_some_and(|(at, heads)| {
            self.now < at + self.config.resync_interval
                && store.heads(memory).ok().flatten().unwrap_or_default() == *heads
        })
    }

    fn handle_heads(&mut self, store: &StoreReader, c: CollectionId, docs: Vec<DocHeads>) {
        let mut send = Vec::new();
        let mut have = Vec::new();
        for d in docs {
            let memory = MemoryId::from_u128(d.memory);
            let hashes: Vec<ChangeHash> = d.hashes.into_iter().map(ChangeHash).collect();
            match store.collection_of(memory) {
                Ok(Some(held)) if held == c => {}
                // Not here (the peer will send it when it sees our summary), deleted, or
                // of another collection: nothing to send.
                _ => continue,
            }
            // What the peer says it holds replaces what we assumed (a message we sent may
            // have been lost): its heads' ancestors are what it has.
            self.peer_has.remove(&memory);
            self.peer_heads.insert(memory, hashes.clone());
            // A peer that lacks the memory (no heads) gets all of it: no need to read our
            // change hashes (a document load) to see that.
            let mine = if hashes.is_empty() {
                Vec::new()
            } else {
                store.change_hashes(memory).unwrap_or_default()
            };
            let mine_set: HashSet<&ChangeHash> = mine.iter().collect();
            if hashes.iter().all(|h| mine_set.contains(h)) {
                send.push((memory, hashes, false));
            } else {
                // The peer holds changes we do not: tell it exactly what we hold.
                have.push(DocHeads {
                    memory: memory.to_u128(),
                    hashes: mine.iter().map(|h| h.0).collect(),
                });
            }
        }
        for chunk in have.chunks(MAX_BATCH) {
            self.send(Message::Have {
                collection: c.to_u128(),
                docs: chunk.to_vec(),
            });
        }
        self.send_changes(store, c, &send);
    }

    /// Sends, per memory, the changes the peer lacks given `known` (its heads, or with
    /// `exact` its every hash), minus what it is known to hold.
    fn send_changes(&mut self, store: &StoreReader, c: CollectionId, requests: &[ChangeRequest]) {
        let mut batch: Vec<DocChanges> = Vec::new();
        let mut bytes = 0usize;
        for (memory, known, exact) in requests {
            let changes = match store.changes_for_peer(*memory, known, *exact) {
                Ok(changes) => changes,
                Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => continue,
                Err(e) => {
                    self.event(Event::Refused(format!("reading {memory}: {e}")));
                    continue;
                }
            };
            let has = self.peer_has.entry(*memory).or_default();
            let mut wire = Vec::new();
            for change in changes {
                let hash = match mnemon_crdt::automerge::Change::from_bytes(change.bytes.clone()) {
                    Ok(parsed) => parsed.hash(),
                    Err(_) => continue,
                };
                if has.insert(hash) {
                    bytes += change.bytes.len() + 64 + change.text.as_ref().map_or(0, String::len);
                    wire.push(WireChange::from_signed(change));
                }
            }
            if wire.is_empty() {
                continue;
            }
            batch.push(DocChanges {
                memory: memory.to_u128(),
                changes: wire,
            });
            if bytes >= self.config.max_changes_bytes || batch.len() >= self.config.max_changes_docs
            {
                self.send(Message::Changes {
                    collection: c.to_u128(),
                    docs: std::mem::take(&mut batch),
                });
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.send(Message::Changes {
                collection: c.to_u128(),
                docs: batch,
            });
        }
    }

    fn handle_changes(&mut self, store: &mut Store, c: CollectionId, docs: Vec<DocChanges>) {
        let mut repair = Vec::new();
        let mut batch = Vec::with_capacity(docs.len());
        for d in docs {
            let memory = MemoryId::from_u128(d.memory);
            match d
                .changes
                .into_iter()
                .map(WireChange::into_signed)
                .collect::<Option<Vec<_>>>()
            {
                Some(changes) => batch.push((memory, changes)),
                None => self.violation(format!("a change of {memory} with a malformed signature")),
            }
        }
        // One transaction, one commit, per `max_changes_docs` memories (a peer may send
        // more in one message; local writes wait behind one transaction at most that
        // long); each memory is still checked and refused on its own.
        let mut results = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(self.config.max_changes_docs.max(1)) {
            match store.apply_batch(c, chunk) {
                Ok(applied) => results.extend(applied),
                Err(e) => {
                    // The database failed, not the peer: nothing of this part was stored,
                    // and the next comparison of summaries asks for it again.
                    self.event(Event::Refused(format!("storing changes in {c}: {e}")));
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(ApplyError::Storage(e.to_string()))),
                    );
                }
            }
        }
        let mut answered = 0;
        for ((memory, changes), result) in batch.into_iter().zip(results) {
            answered += usize::from(self.asked.remove(&memory).is_some());
            match result {
                Ok(outcome) => {
                    let has = self.peer_has.entry(memory).or_default();
                    for change in &changes {
                        if let Ok(parsed) =
                            mnemon_crdt::automerge::Change::from_bytes(change.bytes.clone())
                        {
                            has.insert(parsed.hash());
                        }
                    }
                    // If the peer holds every head we now have, nothing of this memory
                    // needs pushing back to it (saves loading the document per change
                    // event while a large collection streams in).
                    if outcome.heads.iter().all(|h| has.contains(h)) {
                        self.peer_heads.insert(memory, outcome.heads.clone());
                    }
                    if outcome.new_changes > 0 {
                        self.event(Event::Applied {
                            collection: c,
                            memory,
                            new_changes: outcome.new_changes,
                        });
                    }
                }
                Err(ApplyError::MissingDependencies(_)) => {
                    // We are behind in a way the peer did not know: tell it our heads.
                    repair.push(self.ask(store, memory));
                }
                // Deleted here: the deletion wins; the peer learns it from our summary.
                Err(ApplyError::Deleted(_)) => {}
                // Our database failed (already reported): not the peer's fault.
                Err(ApplyError::Storage(_)) => {}
                Err(e) => self.violation(format!("changes to {memory}: {e}")),
            }
        }
        // Progress: what we asked for and got no longer differs.
        if let Some(CollectionState {
            state: Some(SyncState::Behind { differ }),
            ..
        }) = self.collections.get_mut(&c)
        {
            *differ = differ.saturating_sub(answered);
        }
        for chunk in repair.chunks(MAX_BATCH) {
            self.send(Message::Heads {
                collection: c.to_u128(),
                docs: chunk.to_vec(),
            });
        }
    }

    fn is_active(&self, c: CollectionId) -> bool {
        self.collections
            .get(&c)
            .is_some_and(|s| s.offered && s.peer_offered)
    }

    /// Both this node and the peer still have access (checked on every use, so a
    /// revocation takes effect at once).
    fn may_sync(&self, store: &StoreReader, c: CollectionId) -> bool {
        let peer: Option<Access> = store.access(c, &self.peer).ok().flatten();
        let me: Option<Access> = store.access(c, &self.local).ok().flatten();
        peer.is_some() && me.is_some()
    }

    fn send(&mut self, message: Message) {
        if self.closed {
            return;
        }
        *self.traffic.sent.entry(message.kind()).or_default() += 1;
        if let Some(c) = message.collection() {
            self.traffic.collections_sent.insert(c);
        }
        if let Message::Hello { offers, .. } | Message::Offer { offers, .. } = &message {
            for o in offers {
                self.traffic
                    .collections_sent
                    .insert(o.descriptor.descriptor.id);
            }
        }
        self.outbox.push_back(Output::Send(message));
    }

    fn event(&mut self, event: Event) {
        if let Event::Refused(reason) = &event
            && let Some(c) = self.current
            && let Some(state) = self.collections.get_mut(&c)
        {
            state.state = Some(SyncState::Error(reason.clone()));
            state.last_refused = Some(reason.clone());
        }
        self.outbox.push_back(Output::Event(event));
    }

    fn violation(&mut self, reason: String) {
        self.violations += 1;
        self.event(Event::Refused(reason));
        if self.violations >= self.config.max_violations {
            self.close(format!(
                "{} refused messages from the peer",
                self.violations
            ));
        }
    }

    /// Closes the session with a reason the peer is told.
    pub fn close(&mut self, reason: String) {
        if self.closed {
            return;
        }
        self.send(Message::Close {
            reason: reason.clone(),
        });
        self.closed = true;
        self.outbox.push_back(Output::Closed(reason));
    }
}

fn adopt(store: &mut Store, descriptor: &SignedDescriptor) -> Result<bool, StoreError> {
    store.adopt_collection(descriptor)
}

/// Part `part` of a list split into messages of [`MAX_BATCH`].
fn part_of<T: Copy>(list: &[T], part: usize) -> Vec<T> {
    list.iter()
        .skip(part * MAX_BATCH)
        .take(MAX_BATCH)
        .copied()
        .collect()
}
