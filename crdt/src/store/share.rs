//! Sharing and the read side of sync: ACL logs, collection descriptors, per-memory heads,
//! tombstones from elsewhere.

use std::collections::{BTreeMap, HashSet};

use automerge::{ActorId, ChangeHash};
use mnemon_identity::{Did, Signature};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{
    ACL, CollectionRecord, DESCRIPTORS, DOCS, HEADS, INVITES, InviteRecord, JOIN_REFUSALS, JOINS,
    JoinRefusal, JoinRefusalRecord, MEMBERS, MEMORY_META, MemoryMeta, SIGNATURES, Store,
    StoreReader, TOMBSTONES, Tombstone, VIEW_TEXTS, VIEWS, Written, append_log, view,
};
use crate::acl::{
    Access, AclAction, AclOp, Descriptor, Role, SignedAclOp, SignedDescriptor, SignedTombstone,
    fold_members,
};
use crate::error::{ApplyError, StoreError};
use crate::feed::{ChangeKind, Origin};
use crate::id::{CollectionId, MemoryId, Timestamp};
use crate::memory::{MemoryDoc, TextRef};
use crate::signed::SignedChange;

/// A short digest of a memory's heads: equal digests mean equal documents.
pub type HeadsDigest = [u8; 16];

/// Most ACL operations accepted in one [`Store::apply_acl`] call.
pub const MAX_ACL_BATCH: usize = 10_000;

/// The digest of a set of heads (sorted, as automerge returns them).
pub fn heads_digest(heads: &[ChangeHash]) -> HeadsDigest {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for head in heads {
        hasher.update(head.0);
    }
    let full = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

pub(super) fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    heads.iter().flat_map(|h| h.0).collect()
}

fn decode_heads(bytes: &[u8]) -> Vec<ChangeHash> {
    bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            ChangeHash(h)
        })
        .collect()
}

/// A collection's owner, current members and ACL length.
pub(super) type AccessState = (Did, BTreeMap<[u8; 32], Role>, u64);

/// Reads a collection's owner and log inside any transaction.
pub(super) fn read_access<C, A>(
    collections: &C,
    acl: &A,
    collection: CollectionId,
) -> Result<Option<AccessState>, StoreError>
where
    C: ReadableTable<u128, &'static [u8]>,
    A: ReadableTable<(u128, u64), &'static [u8]>,
{
    let Some(record) = collections.get(collection.to_u128())? else {
        return Ok(None);
    };
    let record: CollectionRecord = postcard::from_bytes(record.value())?;
    let owner = Did::from_public_key(&record.owner)
        .map_err(|e| StoreError::Storage(format!("collection owner: {e}")))?;
    let c = collection.to_u128();
    let mut ops = Vec::new();
    for entry in acl.range((c, 0)..=(c, u64::MAX))? {
        let (_, value) = entry?;
        let signed: SignedAclOp = postcard::from_bytes(value.value())?;
        ops.push(signed.op);
    }
    let seq = ops.last().map_or(0, |op| op.seq);
    Ok(Some((owner, fold_members(&ops), seq)))
}

pub(super) fn access_of(
    owner: &Did,
    members: &BTreeMap<[u8; 32], Role>,
    did: &Did,
) -> Option<Access> {
    if owner == did {
        return Some(Access::Owner);
    }
    members.get(did.public_key()).map(|r| Access::Member(*r))
}

/// Checks, inside a write transaction, that `did` may write in `collection`.
pub(super) fn check_write(
    txn: &redb::WriteTransaction,
    collection: CollectionId,
    did: &Did,
) -> Result<(), StoreError> {
    let collections = txn.open_table(super::COLLECTIONS)?;
    // The owner writes in its own collections (every local add): known from the key's
    // bytes, without reading the log or parsing the key as a curve point.
    if let Some(record) = collections.get(collection.to_u128())? {
        let record: super::CollectionRecord = postcard::from_bytes(record.value())?;
        if record.owner == *did.public_key() {
            return Ok(());
        }
    }
    let acl = txn.open_table(ACL)?;
    match read_access(&collections, &acl, collection)? {
        None => Err(StoreError::UnknownCollection(collection.to_string())),
        Some((owner, members, _)) => match access_of(&owner, &members, did) {
            Some(access) if access.can_write() => Ok(()),
            _ => Err(StoreError::ReadOnly(collection)),
        },
    }
}

/// Whether what is written in `collection` stays on this node: `did` owns it, it has no
/// members, and no invite to it is waiting to be redeemed.
pub(super) fn is_private(
    txn: &redb::WriteTransaction,
    collection: CollectionId,
    did: &Did,
) -> Result<bool, StoreError> {
    let collections = txn.open_table(super::COLLECTIONS)?;
    let acl = txn.open_table(ACL)?;
    let Some((owner, members, _)) = read_access(&collections, &acl, collection)? else {
        return Ok(false);
    };
    if owner != *did || !members.is_empty() {
        return Ok(false);
    }
    let now = crate::id::Timestamp::now().as_millis();
    for entry in txn.open_table(super::INVITES)?.iter()? {
        let (_, value) = entry?;
        let invite: super::InviteRecord = postcard::from_bytes(value.value())?;
        if invite.collection == collection.to_u128()
            && invite.redeemed_by.is_none()
            && invite.expires_at > now
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A collection as seen by sync: its id, its log length, the descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCollection {
    /// The collection.
    pub id: CollectionId,
    /// How many ACL operations this node holds.
    pub acl_seq: u64,
    /// The owner.
    pub owner: Did,
}

/// One member of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub did: Did,
    /// The role.
    pub role: Role,
}

impl Store {
    // ----- the ACL ------------------------------------------------------------------------

    /// Grants `member` `role` in `collection`, which this node must own. Returns the signed
    /// operation (already stored durably).
    pub fn share(
        &mut self,
        collection: CollectionId,
        member: &Did,
        role: Role,
    ) -> Result<SignedAclOp, StoreError> {
        if *member == self.did {
            return Err(StoreError::Sharing(
                "a collection cannot be shared with its own owner".into(),
            ));
        }
        self.append_acl(
            collection,
            AclAction::Grant {
                member: *member.public_key(),
                role,
            },
        )
    }

    /// Revokes `member`'s access to `collection`, which this node must own.
    pub fn unshare(
        &mut self,
        collection: CollectionId,
        member: &Did,
    ) -> Result<SignedAclOp, StoreError> {
        let members = self.members(collection)?;
        if !members.iter().any(|m| m.did == *member) {
            return Err(StoreError::Sharing(format!(
                "{member} is not a member of {collection}"
            )));
        }
        self.append_acl(
            collection,
            AclAction::Revoke {
                member: *member.public_key(),
            },
        )
    }

    fn append_acl(
        &mut self,
        collection: CollectionId,
        action: AclAction,
    ) -> Result<SignedAclOp, StoreError> {
        if collection == self.default_collection {
            return Err(StoreError::Sharing(
                "the default collection is private; create a collection to share".into(),
            ));
        }
        let txn = self.db()?.begin_write()?;
        let signed = self.append_acl_in(&txn, collection, action)?;
        txn.commit()?;
        Ok(signed)
    }

    /// Signs `action` as the next operation of `collection`'s log (this node must own it)
    /// and stores it in `txn`.
    fn append_acl_in(
        &self,
        txn: &redb::WriteTransaction,
        collection: CollectionId,
        action: AclAction,
    ) -> Result<SignedAclOp, StoreError> {
        let collections = txn.open_table(super::COLLECTIONS)?;
        let mut acl = txn.open_table(ACL)?;
        let (owner, _, seq) = read_access(&collections, &acl, collection)?
            .ok_or_else(|| StoreError::UnknownCollection(collection.to_string()))?;
        if owner != self.did {
            return Err(StoreError::Sharing(format!(
                "only the owner {owner} can change who has access to {collection}, or its name"
            )));
        }
        let signed = SignedAclOp::sign(
            &self.keypair,
            AclOp {
                collection: collection.to_u128(),
                seq: seq + 1,
                action,
                at: Timestamp::now().as_millis(),
            },
        );
        acl.insert(
            (collection.to_u128(), seq + 1),
            postcard::to_allocvec(&signed)?.as_slice(),
        )?;
        Ok(signed)
    }

    /// Renames `collection`. A shared collection is renamed by its owner only, with an
    /// operation of its signed ACL log, so every member shows the new name once the log
    /// reaches it; the default collection (never shared) just changes its name here.
    pub fn rename_collection(
        &mut self,
        collection: CollectionId,
        name: &str,
    ) -> Result<(), StoreError> {
        let name = self.check_collection_name(name, Some(collection))?;
        let txn = self.db()?.begin_write()?;
        if collection != self.default_collection {
            self.append_acl_in(&txn, collection, AclAction::Rename { name: name.clone() })?;
        }
        set_collection_name(&txn, collection, name)?;
        txn.commit()?;
        Ok(())
    }

    /// Deletes `collection`, owned here and shared with nobody, with every memory in it
    /// (as deletions, like [`Store::remove`]). The default
    /// collection cannot be deleted, nor a collection with members: their copies would
    /// stay, so they are revoked first. Returns the memories deleted.
    pub fn delete_collection(
        &mut self,
        collection: CollectionId,
    ) -> Result<Vec<MemoryId>, StoreError> {
        if collection == self.default_collection {
            return Err(StoreError::Sharing(
                "the default collection cannot be deleted".into(),
            ));
        }
        let (txn, grouped) = self.open_write()?;
        let result = self
            .delete_collection_in(&txn, collection)
            .map(|w| Written {
                vacuum: self.path.is_some(),
                ..w
            });
        self.finish_write(txn, grouped, result)
    }

    fn delete_collection_in(
        &self,
        txn: &redb::WriteTransaction,
        collection: CollectionId,
    ) -> Result<Written<Vec<MemoryId>>, StoreError> {
        let c = collection.to_u128();
        let (owner, members, _) = read_access(
            &txn.open_table(super::COLLECTIONS)?,
            &txn.open_table(ACL)?,
            collection,
        )?
        .ok_or_else(|| StoreError::UnknownCollection(collection.to_string()))?;
        if owner != self.did {
            return Err(StoreError::Sharing(format!(
                "only its owner {owner} can delete {collection}"
            )));
        }
        if !members.is_empty() {
            return Err(StoreError::Sharing(format!(
                "{collection} is shared with {} member(s): revoke them first (their copies \
                 would stay otherwise)",
                members.len()
            )));
        }
        let ids: Vec<MemoryId> = txn
            .open_table(super::MEMBERS)?
            .range((c, 0)..=(c, u128::MAX))?
            .map(|entry| entry.map(|(key, _)| MemoryId::from_u128(key.value().1)))
            .collect::<Result<_, _>>()?;
        let removed = self.remove_in(txn, &ids)?;
        txn.open_table(super::COLLECTIONS)?.remove(c)?;
        txn.open_table(DESCRIPTORS)?.remove(c)?;
        let mut acl = txn.open_table(ACL)?;
        let held: Vec<(u128, u64)> = acl
            .range((c, 0)..=(c, u64::MAX))?
            .map(|entry| entry.map(|(key, _)| key.value()))
            .collect::<Result<_, _>>()?;
        for key in held {
            acl.remove(key)?;
        }
        // Its invites go too (a ticket handed out is refused as for an unknown collection).
        let mut invites = txn.open_table(INVITES)?;
        let mut stale = Vec::new();
        for entry in invites.iter()? {
            let (nonce, value) = entry?;
            let record: InviteRecord = postcard::from_bytes(value.value())?;
            if record.collection == c {
                stale.push(nonce.value());
            }
        }
        for nonce in stale {
            invites.remove(nonce)?;
        }
        Ok(Written::new(ids, removed.events))
    }

    /// Applies ACL operations received from elsewhere for `collection` (known here). Each
    /// must carry the owner's signature and continue the log without a gap; operations
    /// already held are skipped, and one that contradicts a held one (the owner signed two
    /// different operations with one number) is refused. All or nothing; returns how many
    /// were new.
    pub fn apply_acl(
        &mut self,
        collection: CollectionId,
        ops: &[SignedAclOp],
    ) -> Result<usize, StoreError> {
        if ops.len() > MAX_ACL_BATCH {
            return Err(StoreError::Sharing(format!(
                "{} ACL operations in one batch; the limit is {MAX_ACL_BATCH}",
                ops.len()
            )));
        }
        let txn = self.db()?.begin_write()?;
        let mut new = 0;
        let mut renamed = None;
        {
            let collections = txn.open_table(super::COLLECTIONS)?;
            let mut acl = txn.open_table(ACL)?;
            let (owner, _, mut seq) = read_access(&collections, &acl, collection)?
                .ok_or_else(|| StoreError::UnknownCollection(collection.to_string()))?;
            for signed in ops {
                let refuse =
                    |why: String| StoreError::Sharing(format!("ACL operation refused: {why}"));
                if signed.op.collection != collection.to_u128() {
                    return Err(refuse("it is for another collection".into()));
                }
                signed.verify(&owner).map_err(|e| refuse(e.to_string()))?;
                let key = (collection.to_u128(), signed.op.seq);
                if signed.op.seq <= seq {
                    let held: SignedAclOp = match acl.get(key)? {
                        Some(v) => postcard::from_bytes(v.value())?,
                        None => return Err(refuse(format!("gap before #{}", signed.op.seq))),
                    };
                    if held != *signed {
                        return Err(refuse(format!(
                            "the owner signed two different operations #{}",
                            signed.op.seq
                        )));
                    }
                    continue;
                }
                if signed.op.seq != seq + 1 {
                    return Err(refuse(format!("#{} does not follow #{seq}", signed.op.seq)));
                }
                if let AclAction::Rename { name } = &signed.op.action {
                    if !crate::acl::acceptable_name(name) {
                        return Err(refuse(format!(
                            "#{} renames it to an unacceptable name",
                            signed.op.seq
                        )));
                    }
                    renamed = Some(name.trim().to_owned());
                }
                acl.insert(key, postcard::to_allocvec(signed)?.as_slice())?;
                seq += 1;
                new += 1;
            }
        }
        if let Some(name) = renamed {
            set_collection_name(&txn, collection, name)?;
        }
        txn.commit()?;
        Ok(new)
    }

    // ----- invites --------------------------------------------------------------------------

    /// Issues a single-use invite to `collection` (owned here) for `role`, valid until
    /// `expires_at`.
    pub fn create_invite(
        &mut self,
        collection: CollectionId,
        role: Role,
        expires_at: Timestamp,
    ) -> Result<mnemon_identity::Invite, StoreError> {
        if collection == self.default_collection {
            return Err(StoreError::Sharing(
                "the default collection is private; create a collection to share".into(),
            ));
        }
        match self.access(collection, &self.did)? {
            Some(Access::Owner) => {}
            Some(_) => {
                return Err(StoreError::Sharing(format!(
                    "only the owner of {collection} can invite"
                )));
            }
            None => return Err(StoreError::UnknownCollection(collection.to_string())),
        }
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        let write = role == Role::Write;
        let invite = mnemon_identity::Invite::sign(
            &self.keypair,
            collection.to_bytes(),
            write,
            expires_at.as_millis(),
            nonce,
        );
        let record = InviteRecord {
            collection: collection.to_u128(),
            write,
            expires_at: expires_at.as_millis(),
            redeemed_by: None,
        };
        let txn = self.db()?.begin_write()?;
        txn.open_table(INVITES)?
            .insert(nonce, postcard::to_allocvec(&record)?.as_slice())?;
        txn.commit()?;
        Ok(invite)
    }

    /// Redeems an invite this node issued, for `by`: checks the signature, the expiry and
    /// that the invite was issued here and not used by anyone else, then grants the role.
    /// Redeeming again by the same DID changes nothing.
    pub fn redeem_invite(&mut self, bytes: &[u8], by: &Did) -> Result<CollectionId, StoreError> {
        let refuse = |why: &str| StoreError::Sharing(format!("invite refused: {why}"));
        let (invite, rest) =
            mnemon_identity::Invite::from_bytes(bytes).map_err(|e| refuse(&e.to_string()))?;
        if !rest.is_empty() {
            return Err(refuse("bytes after the invite"));
        }
        if invite.owner != self.did {
            return Err(refuse("it was issued by another node"));
        }
        invite
            .verify(Timestamp::now().as_millis())
            .map_err(|e| refuse(&e.to_string()))?;
        let record: InviteRecord = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(INVITES)?;
            let Some(value) = table.get(invite.nonce)? else {
                return Err(refuse("it is not known here"));
            };
            postcard::from_bytes(value.value())?
        };
        let collection = CollectionId::from_u128(record.collection);
        match record.redeemed_by {
            Some(who) if who == *by.public_key() => return Ok(collection),
            Some(_) => return Err(refuse("it was used already")),
            None => {}
        }
        let role = if record.write {
            Role::Write
        } else {
            Role::Read
        };
        if self.access(collection, by)? != Some(Access::Member(role)) {
            self.share(collection, by, role)?;
        }
        let txn = self.db()?.begin_write()?;
        txn.open_table(INVITES)?.insert(
            invite.nonce,
            postcard::to_allocvec(&InviteRecord {
                redeemed_by: Some(*by.public_key()),
                ..record
            })?
            .as_slice(),
        )?;
        txn.commit()?;
        Ok(collection)
    }

    /// Keeps a ticket this node was given, to redeem its invite with the owner when they
    /// meet (and to dial the owner's addresses).
    pub fn add_join(&mut self, ticket: &mnemon_identity::Ticket) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(JOINS)?
            .insert(ticket.invite.nonce, ticket.to_string().as_bytes())?;
        txn.commit()?;
        Ok(())
    }

    /// The owner `owner` refused the invite `nonce` this node redeemed: the join is
    /// dropped (no more tries) and the refusal kept for the owner to see. `None` if this
    /// node holds no such join from `owner` (anything else is ignored).
    pub fn refuse_join(
        &mut self,
        nonce: &[u8; 16],
        owner: &Did,
        reason: &str,
    ) -> Result<Option<CollectionId>, StoreError> {
        let txn = self.db()?.begin_write()?;
        let collection = {
            let mut joins = txn.open_table(JOINS)?;
            let ticket = joins.get(*nonce)?.and_then(|value| {
                std::str::from_utf8(value.value())
                    .ok()
                    .and_then(|t| t.parse::<mnemon_identity::Ticket>().ok())
            });
            let Some(ticket) = ticket.filter(|t| t.invite.owner == *owner) else {
                return Ok(None);
            };
            joins.remove(*nonce)?;
            CollectionId::from_u128(u128::from_be_bytes(ticket.invite.collection))
        };
        let refusal = JoinRefusalRecord {
            collection: collection.to_u128(),
            owner: *owner.public_key(),
            reason: reason.chars().take(512).collect(),
            at: Timestamp::now().as_millis(),
        };
        txn.open_table(JOIN_REFUSALS)?
            .insert(*nonce, postcard::to_allocvec(&refusal)?.as_slice())?;
        txn.commit()?;
        Ok(Some(collection))
    }

    /// Adds a collection that another node owns, from its owner-signed descriptor. Returns
    /// false if it was known already (a descriptor for a known id with another owner is an
    /// error: it is a forgery).
    pub fn adopt_collection(&mut self, signed: &SignedDescriptor) -> Result<bool, StoreError> {
        let owner = signed
            .verify()
            .map_err(|e| StoreError::Sharing(format!("collection descriptor refused: {e}")))?;
        let id = signed.id();
        let txn = self.db()?.begin_write()?;
        {
            let mut collections = txn.open_table(super::COLLECTIONS)?;
            if let Some(existing) = collections.get(id.to_u128())? {
                let existing: CollectionRecord = postcard::from_bytes(existing.value())?;
                if existing.owner != *owner.public_key() {
                    return Err(StoreError::Sharing(format!(
                        "collection {id} is owned by another DID here"
                    )));
                }
                return Ok(false);
            }
            let record = CollectionRecord {
                name: signed.descriptor.name.clone(),
                owner: signed.descriptor.owner,
                created_at: signed.descriptor.created_at,
            };
            collections.insert(id.to_u128(), postcard::to_allocvec(&record)?.as_slice())?;
            txn.open_table(DESCRIPTORS)?
                .insert(id.to_u128(), postcard::to_allocvec(signed)?.as_slice())?;
        }
        txn.commit()?;
        Ok(true)
    }

    /// Applies deletions received from elsewhere in `collection`: each must be signed by
    /// its author, who must be allowed to write there. A memory already deleted is
    /// skipped; a tombstone for a memory of another collection is refused. All or nothing;
    /// returns the memories deleted now.
    pub fn apply_tombstones(
        &mut self,
        collection: CollectionId,
        tombstones: &[SignedTombstone],
    ) -> Result<Vec<MemoryId>, ApplyError> {
        if tombstones.len() > super::MAX_APPLY_BATCH {
            return Err(ApplyError::TooMany(tombstones.len()));
        }
        let txn = self.db()?.begin_write()?;
        let mut removed = Vec::new();
        {
            let (owner, members) = {
                let collections = txn.open_table(super::COLLECTIONS)?;
                let acl = txn.open_table(ACL)?;
                let (owner, members, _) = read_access(&collections, &acl, collection)
                    .map_err(|e| ApplyError::Storage(e.to_string()))?
                    .ok_or_else(|| ApplyError::UnknownCollection(collection.to_string()))?;
                (owner, members)
            };
            let mut docs = txn.open_table(DOCS)?;
            let mut metas = txn.open_table(MEMORY_META)?;
            let mut member_table = txn.open_table(MEMBERS)?;
            let mut signatures = txn.open_table(SIGNATURES)?;
            let mut heads = txn.open_table(HEADS)?;
            let mut table = txn.open_table(TOMBSTONES)?;
            for t in tombstones {
                let author = t.verify().map_err(|e| ApplyError::Refused(e.to_string()))?;
                if t.collection != collection.to_u128() {
                    return Err(ApplyError::Refused(format!(
                        "a tombstone for memory {} of another collection",
                        MemoryId::from_u128(t.memory)
                    )));
                }
                if !access_of(&owner, &members, &author).is_some_and(Access::can_write) {
                    return Err(ApplyError::NotAllowed {
                        author: author.to_string(),
                        collection: collection.to_string(),
                    });
                }
                if table.get(t.memory)?.is_some() {
                    continue;
                }
                if let Some(meta) = metas.get(t.memory)? {
                    let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
                    if meta.collection != collection.to_u128() {
                        return Err(ApplyError::WrongCollection(MemoryId::from_u128(t.memory)));
                    }
                }
                metas.remove(t.memory)?;
                super::view::remove(&txn, MemoryId::from_u128(t.memory))
                    .map_err(|e| ApplyError::Storage(e.to_string()))?;
                // Both versions of a conflict go with it: a deletion leaves no text behind.
                super::conflict::clear(&txn, MemoryId::from_u128(t.memory))
                    .map_err(|e| ApplyError::Storage(e.to_string()))?;
                docs.remove(t.memory)?;
                heads.remove(t.memory)?;
                super::set_links(&txn, MemoryId::from_u128(t.memory), [])
                    .map_err(|e| ApplyError::Storage(e.to_string()))?;
                member_table.remove((collection.to_u128(), t.memory))?;
                signatures
                    .retain_in((t.memory, [0u8; 32])..=(t.memory, [0xff; 32]), |_, _| false)?;
                let record = Tombstone {
                    collection: t.collection,
                    deleted_at: t.deleted_at,
                    author: t.author,
                    signature: t.signature.to_vec(),
                };
                table.insert(t.memory, postcard::to_allocvec(&record)?.as_slice())?;
                removed.push(MemoryId::from_u128(t.memory));
            }
        }
        let events = append_log(
            &txn,
            removed
                .iter()
                .map(|id| (*id, collection, ChangeKind::Deleted, Origin::Remote)),
        )
        .map_err(|e| ApplyError::Storage(e.to_string()))?;
        txn.commit()?;
        self.publish(events);
        // Forgetting is complete only once no freed page holds the deleted bytes.
        if !removed.is_empty() && self.path.is_some() {
            self.vacuum()
                .map_err(|e| ApplyError::Storage(e.to_string()))?;
        }
        Ok(removed)
    }
}

impl StoreReader {
    /// The current members of `collection` (not counting its owner).
    pub fn members(&self, collection: CollectionId) -> Result<Vec<Member>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let (_, members, _) = read_access(
            &txn.open_table(super::COLLECTIONS)?,
            &txn.open_table(ACL)?,
            collection,
        )?
        .ok_or_else(|| StoreError::UnknownCollection(collection.to_string()))?;
        members
            .into_iter()
            .map(|(key, role)| {
                Ok(Member {
                    did: Did::from_public_key(&key)
                        .map_err(|e| StoreError::Storage(format!("ACL member: {e}")))?,
                    role,
                })
            })
            .collect()
    }

    /// What `did` may do in `collection` (`None`: nothing, or no such collection).
    pub fn access(
        &self,
        collection: CollectionId,
        did: &Did,
    ) -> Result<Option<Access>, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(read_access(
            &txn.open_table(super::COLLECTIONS)?,
            &txn.open_table(ACL)?,
            collection,
        )?
        .and_then(|(owner, members, _)| access_of(&owner, &members, did)))
    }

    /// The collections this node may sync with `peer`: both must have access (the owner
    /// counts). Nothing about any other collection is returned, so nothing else can leak.
    pub fn shared_with(&self, peer: &Did) -> Result<Vec<SharedCollection>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let collections = txn.open_table(super::COLLECTIONS)?;
        let acl = txn.open_table(ACL)?;
        let mut out = Vec::new();
        for entry in collections.iter()? {
            let id = CollectionId::from_u128(entry?.0.value());
            if id == self.default_collection {
                continue;
            }
            if let Some((owner, members, acl_seq)) = read_access(&collections, &acl, id)?
                && access_of(&owner, &members, peer).is_some()
                && access_of(&owner, &members, &self.did).is_some()
            {
                out.push(SharedCollection { id, acl_seq, owner });
            }
        }
        Ok(out)
    }

    /// The ACL operations of `collection` after `seq`, in order.
    pub fn acl_since(
        &self,
        collection: CollectionId,
        seq: u64,
    ) -> Result<Vec<SignedAclOp>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let acl = txn.open_table(ACL)?;
        let c = collection.to_u128();
        let mut out = Vec::new();
        for entry in acl.range((c, seq.saturating_add(1))..=(c, u64::MAX))? {
            out.push(postcard::from_bytes(entry?.1.value())?);
        }
        Ok(out)
    }

    /// For a peer that was a member of `collection` and no longer is: the ACL operations
    /// after its position `seq` up to the one that removed it, so a member revoked while
    /// it was away learns it (and nothing the log says after). `None` when `did` has access,
    /// or never had any.
    pub fn revocation_for(
        &self,
        collection: CollectionId,
        did: &Did,
        seq: u64,
    ) -> Result<Option<Vec<SignedAclOp>>, StoreError> {
        if self.access(collection, did)?.is_some() {
            return Ok(None);
        }
        let ops = self.acl_since(collection, 0)?;
        let Some(last) = ops
            .iter()
            .rposition(|op| op.op.action.member() == Some(*did.public_key()))
        else {
            return Ok(None);
        };
        Ok(Some(
            ops.into_iter()
                .take(last + 1)
                .filter(|op| op.op.seq > seq)
                .collect(),
        ))
    }

    /// Joins the collections' owners refused, oldest first.
    pub fn join_refusals(&self) -> Result<Vec<JoinRefusal>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(JOIN_REFUSALS)?;
        let mut out: Vec<JoinRefusal> = Vec::new();
        for entry in table.iter()? {
            let record: JoinRefusalRecord = postcard::from_bytes(entry?.1.value())?;
            let Ok(owner) = Did::from_public_key_slice(&record.owner) else {
                continue;
            };
            out.push(JoinRefusal {
                collection: CollectionId::from_u128(record.collection),
                owner,
                reason: record.reason,
                at: Timestamp::from_millis(record.at),
            });
        }
        out.sort_by_key(|r| r.at.as_millis());
        Ok(out)
    }

    /// Invites this node holds and has not yet redeemed (it has no access to their
    /// collection yet, and they have not expired), optionally only those of `owner`.
    pub fn pending_joins(
        &self,
        owner: Option<&Did>,
    ) -> Result<Vec<mnemon_identity::Ticket>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(JOINS)?;
        let mut pending = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            let Some(ticket) = std::str::from_utf8(value.value())
                .ok()
                .and_then(|t| t.parse::<mnemon_identity::Ticket>().ok())
            else {
                continue;
            };
            let invite = &ticket.invite;
            if owner.is_some_and(|o| *o != invite.owner) {
                continue;
            }
            let collection = CollectionId::from_u128(u128::from_be_bytes(invite.collection));
            if self.access(collection, &self.did)?.is_none()
                && invite.verify(Timestamp::now().as_millis()).is_ok()
            {
                pending.push(ticket);
            }
        }
        Ok(pending)
    }

    // ----- collections from elsewhere ------------------------------------------------------

    /// The signed descriptor of `collection`: signed now if this node owns it, the stored
    /// one if it joined it.
    pub fn descriptor(&self, collection: CollectionId) -> Result<SignedDescriptor, StoreError> {
        let txn = self.db()?.begin_read()?;
        let record = txn
            .open_table(super::COLLECTIONS)?
            .get(collection.to_u128())?
            .ok_or_else(|| StoreError::UnknownCollection(collection.to_string()))?;
        let record: CollectionRecord = postcard::from_bytes(record.value())?;
        if record.owner == *self.did.public_key() {
            return Ok(SignedDescriptor::sign(
                &self.keypair,
                Descriptor {
                    id: collection.to_u128(),
                    name: record.name,
                    owner: record.owner,
                    created_at: record.created_at,
                },
            ));
        }
        let stored = txn
            .open_table(DESCRIPTORS)?
            .get(collection.to_u128())?
            .ok_or_else(|| {
                StoreError::Storage(format!("collection {collection} has no descriptor"))
            })?;
        Ok(postcard::from_bytes(stored.value())?)
    }

    // ----- what differs --------------------------------------------------------------------

    /// Every live memory of `collection` with the digest of its heads, by id.
    pub fn heads_summary(
        &self,
        collection: CollectionId,
    ) -> Result<Vec<(MemoryId, HeadsDigest)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let members = txn.open_table(MEMBERS)?;
        let heads = txn.open_table(HEADS)?;
        let c = collection.to_u128();
        let mut out = Vec::new();
        for entry in members.range((c, 0)..=(c, u128::MAX))? {
            let id = entry?.0.value().1;
            let digest = match heads.get(id)? {
                Some(h) => heads_digest(&decode_heads(h.value())),
                None => [0; 16],
            };
            out.push((MemoryId::from_u128(id), digest));
        }
        Ok(out)
    }

    /// The heads of a memory (`None` if it is not here).
    pub fn heads(&self, id: MemoryId) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(txn
            .open_table(HEADS)?
            .get(id.to_u128())?
            .map(|h| decode_heads(h.value())))
    }

    /// Which memory `id`'s collection is, if it is live here.
    pub fn collection_of(&self, id: MemoryId) -> Result<Option<CollectionId>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let Some(meta) = txn.open_table(MEMORY_META)?.get(id.to_u128())? else {
            return Ok(None);
        };
        let meta: MemoryMeta = postcard::from_bytes(meta.value())?;
        Ok(Some(CollectionId::from_u128(meta.collection)))
    }

    /// The hashes of every change of a memory.
    pub fn change_hashes(&self, id: MemoryId) -> Result<Vec<ChangeHash>, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(match history(&txn, id, &self.did)? {
            History::One(change, _) => vec![change.hash()],
            History::Doc(mut doc) => doc
                .automerge()
                .get_changes(&[])
                .iter()
                .map(|c| c.hash())
                .collect(),
        })
    }

    /// Every change of a memory with its signature, in causal order.
    pub fn signed_changes(&self, id: MemoryId) -> Result<Vec<SignedChange>, StoreError> {
        self.changes_for_peer(id, &[], true)
    }

    /// The signed changes of a memory that are not `known` and not ancestors of the heads
    /// among `known` that this node holds: what a peer that holds `known` lacks. With
    /// `exact`, `known` is the peer's every change hash, without, its heads. The change
    /// that set the memory's current text kept beside its document (the last one, if it
    /// was set more than once) comes with that text: a peer that lacks the change lacks the
    /// text. One snapshot throughout, so the text is the one the changes name.
    pub fn changes_for_peer(
        &self,
        id: MemoryId,
        known: &[ChangeHash],
        exact: bool,
    ) -> Result<Vec<SignedChange>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let history = history(&txn, id, &self.did)?;
        let setter = current_setter(&txn, id, &history, &self.did)?;
        let changes: Vec<Outgoing> = match history {
            // Its one change has no ancestors: the peer lacks it unless it names it.
            History::One(change, _) if known.contains(&change.hash()) => Vec::new(),
            History::One(change, stored) => vec![Outgoing {
                hash: change.hash(),
                bytes: stored,
                sets_text: setter.is_some(),
            }],
            History::Doc(mut doc) => {
                let am = doc.automerge();
                let mut changes = if exact {
                    let known: HashSet<ChangeHash> = known.iter().copied().collect();
                    am.get_changes(&[])
                        .into_iter()
                        .filter(|c| !known.contains(&c.hash()))
                        .collect()
                } else {
                    let held: Vec<ChangeHash> = known
                        .iter()
                        .copied()
                        .filter(|h| am.get_change_by_hash(h).is_some())
                        .collect();
                    am.get_changes(&held)
                };
                changes
                    .iter_mut()
                    .map(|c| Outgoing::of(c, setter.as_ref()))
                    .collect()
            }
        };
        let at = changes.iter().rposition(|c| c.sets_text);
        let mut text = match (at, setter) {
            (Some(_), Some((named, ..))) => Some(
                view::kept_text(
                    &txn.open_table(VIEWS)?,
                    &txn.open_table(VIEW_TEXTS)?,
                    id,
                    &named,
                    false,
                )?
                .ok_or_else(|| {
                    StoreError::Storage(format!("the text of memory {id} is missing"))
                })?,
            ),
            _ => None,
        };
        let signatures = txn.open_table(SIGNATURES)?;
        changes
            .into_iter()
            .enumerate()
            .map(|(n, c)| {
                let signature = signatures
                    .get((id.to_u128(), c.hash.0))?
                    .ok_or_else(|| {
                        StoreError::Storage(format!("change {} of {id} has no signature", c.hash))
                    })?
                    .value();
                Ok(SignedChange {
                    bytes: c.bytes,
                    signature: Signature::from_bytes(signature),
                    text: if Some(n) == at { text.take() } else { None },
                })
            })
            .collect()
    }

    // ----- tombstones ----------------------------------------------------------------------

    /// The tombstones of `collection`.
    pub fn tombstones(&self, collection: CollectionId) -> Result<Vec<SignedTombstone>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TOMBSTONES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let t: Tombstone = postcard::from_bytes(value.value())?;
            if t.collection != collection.to_u128() {
                continue;
            }
            out.push(tombstone_to_wire(key.value(), &t)?);
        }
        Ok(out)
    }

    /// The tombstone of memory `id`, if it was deleted.
    pub fn tombstone(&self, id: MemoryId) -> Result<Option<SignedTombstone>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let Some(value) = txn.open_table(TOMBSTONES)?.get(id.to_u128())? else {
            return Ok(None);
        };
        let t: Tombstone = postcard::from_bytes(value.value())?;
        Ok(Some(tombstone_to_wire(id.to_u128(), &t)?))
    }

    /// How many ACL operations the store holds in all (for status output).
    pub fn acl_len(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(ACL)?.len()?)
    }
}

fn tombstone_to_wire(memory: u128, t: &Tombstone) -> Result<SignedTombstone, StoreError> {
    Ok(SignedTombstone {
        memory,
        collection: t.collection,
        deleted_at: t.deleted_at,
        author: t.author,
        signature: t.signature.as_slice().try_into().map_err(|_| {
            StoreError::Storage("a stored tombstone signature is not 64 bytes".into())
        })?,
    })
}

/// Sets the name of `collection`'s record in `txn`.
fn set_collection_name(
    txn: &redb::WriteTransaction,
    collection: CollectionId,
    name: String,
) -> Result<(), StoreError> {
    let mut collections = txn.open_table(super::COLLECTIONS)?;
    let mut record: CollectionRecord = match collections.get(collection.to_u128())? {
        Some(bytes) => postcard::from_bytes(bytes.value())?,
        None => return Err(StoreError::UnknownCollection(collection.to_string())),
    };
    record.name = name;
    collections.insert(
        collection.to_u128(),
        postcard::to_allocvec(&record)?.as_slice(),
    )?;
    Ok(())
}

/// Memory `id`'s history as stored.
fn history(txn: &redb::ReadTransaction, id: MemoryId, did: &Did) -> Result<History, StoreError> {
    let bytes = txn
        .open_table(DOCS)?
        .get(id.to_u128())?
        .ok_or(StoreError::NotFound(id))?;
    let bytes = bytes.value();
    // Automerge's binary format: 4 bytes of magic, 4 of checksum, then the chunk's
    // type: 0 a document, 1 a change, 2 a compressed change. A first change with
    // later ones appended to it (`MemoryDoc::save_after`) loads as a document.
    if matches!(bytes.get(8), Some(1 | 2)) {
        match automerge::Change::try_from(bytes) {
            Ok(change) => return Ok(History::One(Box::new(change), bytes.to_vec())),
            Err(automerge::LoadChangeError::LeftoverData) => {}
            Err(e) => {
                return Err(StoreError::Storage(format!(
                    "the stored change of {id} does not load: {e}"
                )));
            }
        }
    }
    Ok(History::Doc(Box::new(MemoryDoc::load(bytes, did)?)))
}

/// The text memory `id` holds beside its document, with the operation that set it (see
/// `MemoryDoc::content_setter`).
fn current_setter(
    txn: &redb::ReadTransaction,
    id: MemoryId,
    history: &History,
    did: &Did,
) -> Result<Option<(TextRef, u64, ActorId)>, StoreError> {
    Ok(match history {
        History::Doc(doc) => doc.content_setter(),
        // Its one change is worth loading only if the text is long (kept in pieces).
        History::One(_, stored) => {
            let long = txn
                .open_table(VIEW_TEXTS)?
                .get((id.to_u128(), 0))?
                .is_some();
            if long {
                MemoryDoc::load(stored, did)?.content_setter()
            } else {
                None
            }
        }
    })
}

/// A change as it is sent: its hash, its bytes, and whether it set the current text kept
/// beside the document.
struct Outgoing {
    hash: ChangeHash,
    bytes: Vec<u8>,
    sets_text: bool,
}

impl Outgoing {
    fn of(change: &mut automerge::Change, setter: Option<&(TextRef, u64, ActorId)>) -> Outgoing {
        let sets_text = setter.is_some_and(|(_, counter, actor)| {
            let start = change.start_op().get();
            change.actor_id() == actor && (start..start + change.len() as u64).contains(counter)
        });
        Outgoing {
            hash: change.hash(),
            bytes: change.bytes().into_owned(),
            sets_text,
        }
    }
}

/// A memory's history as stored.
enum History {
    /// A memory not changed since it was made here is stored as its one change
    /// (`ValidNew::stored`): its history, without building its document, and its bytes
    /// as stored (sent as they are).
    One(Box<automerge::Change>, Vec<u8>),
    /// Any other memory: its document.
    Doc(Box<MemoryDoc>),
}
