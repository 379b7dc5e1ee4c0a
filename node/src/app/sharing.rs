//! Collections and sharing: members and their roles, invites and joins, and the peers
//! a collection syncs with (what the network driver reports).

use std::collections::HashMap;

use mnemon_api::{
    CollectionDeleted, CollectionView, InviteRequest, InviteView, JoinRequest, JoinView,
    MemberView, PeerView, ShareRequest,
};
use mnemon_api::{Error as ApiError, Role, SyncState};
use mnemon_crdt::CollectionId;

use super::{Service, store_error};

pub(super) fn collections(service: &Service) -> Result<Vec<CollectionView>, ApiError> {
    let store = service.store();
    Ok(store
        .collections()
        .map_err(store_error)?
        .iter()
        .map(CollectionView::from)
        .collect())
}

pub(super) fn create_collection(service: &Service, name: &str) -> Result<CollectionView, ApiError> {
    let name = name.to_owned();
    let collection = service.solo(move |s| s.create_collection(&name))?;
    Ok(CollectionView::from(&collection))
}

pub(super) fn rename_collection(
    service: &Service,
    collection: &str,
    name: &str,
) -> Result<CollectionView, ApiError> {
    let id = service
        .store()
        .resolve_collection(collection)
        .map_err(store_error)?;
    let name = name.to_owned();
    service.solo(move |s| s.rename_collection(id, &name))?;
    // Sessions send members the operation that carries the name.
    if let Some(network) = service.network.get() {
        network.refresh();
    }
    collection_view(service, id)
}

pub(super) fn delete_collection(
    service: &Service,
    collection: &str,
) -> Result<CollectionDeleted, ApiError> {
    let id = service
        .store()
        .resolve_collection(collection)
        .map_err(store_error)?;
    let view = collection_view(service, id)?;
    let deleted = service.solo(move |s| s.delete_collection(id))?;
    service.forget_in_index(&deleted);
    if let Some(network) = service.network.get() {
        network.refresh();
    }
    Ok(CollectionDeleted {
        id: view.id,
        name: view.name,
        memories: deleted.len() as u64,
    })
}

fn collection_view(service: &Service, id: CollectionId) -> Result<CollectionView, ApiError> {
    service
        .store()
        .collections()
        .map_err(store_error)?
        .iter()
        .find(|c| c.id == id)
        .map(CollectionView::from)
        .ok_or_else(|| store_error(mnemon_crdt::StoreError::UnknownCollection(id.to_string())))
}

pub(super) fn members(service: &Service, collection: &str) -> Result<Vec<MemberView>, ApiError> {
    let store = service.store();
    let id = store.resolve_collection(collection).map_err(store_error)?;
    let peers = service.network.get().map(|n| n.peers()).unwrap_or_default();
    let names = collection_names(service);
    let sync_of = |did: &str| {
        let wanted = id.to_string();
        peers
            .iter()
            .filter(|p| p.did == did)
            .flat_map(|p| p.sync.iter())
            .find(|s| s.collection == wanted)
            .map(|s| sync_view(s, &names))
    };
    let me = store.did().to_string();
    let named = store.node_names().map_err(store_error)?;
    Ok(store
        .members(id)
        .map_err(store_error)?
        .into_iter()
        .map(|m| {
            let did = m.did.to_string();
            MemberView {
                name: named.get(&m.did).cloned(),
                sync: sync_of(&did),
                this_node: did == me,
                did,
                role: m.role.into(),
                warning: None,
            }
        })
        .collect())
}

pub(super) fn share(
    service: &Service,
    collection: &str,
    request: ShareRequest,
) -> Result<MemberView, ApiError> {
    let did: mnemon_identity::Did = request
        .did
        .trim()
        .parse()
        .map_err(|e| ApiError::invalid(format!("{:?} is not a did:key: {e}", request.did)))?;
    let role = mnemon_crdt::Role::from(request.role);
    let id = service
        .store()
        .resolve_collection(collection)
        .map_err(store_error)?;
    let met = has_met(service, &did)?;
    service.solo(move |s| s.share(id, &did, role))?;
    if let Some(network) = service.network.get() {
        network.refresh();
    }
    Ok(MemberView {
        warning: (!met).then(|| {
            format!(
                "this node has never met {did}: check it is the other node's DID (`mnemon id` \
                 there); a DID with a typo shares the collection with nobody"
            )
        }),
        name: service
            .store()
            .node_names()
            .map_err(store_error)?
            .remove(&did),
        did: did.to_string(),
        role: request.role,
        sync: None,
        this_node: false,
    })
}

pub(super) fn name_node(service: &Service, did: &str, name: &str) -> Result<(), ApiError> {
    let did: mnemon_identity::Did = did
        .trim()
        .parse()
        .map_err(|e| ApiError::invalid(format!("{did:?} is not a did:key: {e}")))?;
    let name = name.to_owned();
    service.solo(move |s| s.name_node(&did, Some(&name)))
}

pub(super) fn unshare(service: &Service, collection: &str, did: &str) -> Result<(), ApiError> {
    let did: mnemon_identity::Did = did
        .trim()
        .parse()
        .map_err(|e| ApiError::invalid(format!("{did:?} is not a did:key: {e}")))?;
    let id = service
        .store()
        .resolve_collection(collection)
        .map_err(store_error)?;
    service.solo(move |s| s.unshare(id, &did))?;
    if let Some(network) = service.network.get() {
        network.refresh();
    }
    Ok(())
}

pub(super) fn invite(
    service: &Service,
    collection: &str,
    request: InviteRequest,
) -> Result<InviteView, ApiError> {
    const DAY: u64 = 24 * 3600;
    let role = request.role.unwrap_or_default();
    let secs = request.expires_in_secs.unwrap_or(7 * DAY);
    if secs == 0 || secs > 365 * DAY {
        return Err(ApiError::invalid(format!(
            "expires_in_secs must be between 1 and {} (365 days), not {secs}",
            365 * DAY
        )));
    }
    let expires_at = mnemon_crdt::Timestamp::from_millis(
        mnemon_crdt::Timestamp::now().as_millis() + (secs as i64) * 1000,
    );
    let id = service
        .store()
        .resolve_collection(collection)
        .map_err(store_error)?;
    let invite = service.solo(move |s| s.create_invite(id, role.into(), expires_at))?;
    let addresses = service
        .network
        .get()
        .map(mnemon_net::Network::addresses)
        .unwrap_or_default();
    let ticket = mnemon_identity::Ticket {
        invite,
        addresses: addresses.clone(),
    };
    Ok(InviteView {
        ticket: ticket.to_string(),
        collection: id.to_string(),
        role,
        expires_at: expires_at.as_millis(),
        addresses: addresses.len(),
    })
}

pub(super) fn join(service: &Service, request: JoinRequest) -> Result<JoinView, ApiError> {
    let ticket: mnemon_identity::Ticket = request
        .ticket
        .parse()
        .map_err(|e: mnemon_identity::TicketError| ApiError::invalid(e.to_string()))?;
    ticket
        .invite
        .verify(mnemon_crdt::Timestamp::now().as_millis())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let collection = CollectionId::from_u128(u128::from_be_bytes(ticket.invite.collection));
    if ticket.invite.owner == service.store().did() {
        return Err(ApiError::invalid(
            "this ticket was made by this node: give it to the node that should join",
        ));
    }
    let kept = ticket.clone();
    service.solo(move |s| s.add_join(&kept))?;
    let mut dialing = 0;
    if let Some(network) = service.network.get() {
        network.refresh();
        for addr in &ticket.addresses {
            match addr.parse() {
                Ok(addr) => {
                    network.dial_now(addr);
                    dialing += 1;
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "a ticket address is not a multiaddr")
                }
            }
        }
    }
    Ok(JoinView {
        collection: collection.to_string(),
        owner: ticket.invite.owner.to_string(),
        role: if ticket.invite.write {
            Role::Write
        } else {
            Role::Read
        },
        dialing,
    })
}

pub(super) fn dial(service: &Service, address: &str) -> Result<(), ApiError> {
    let addr: libp2p::Multiaddr = address
        .trim()
        .parse()
        .map_err(|e| ApiError::invalid(format!("address: {address:?} is not a multiaddr: {e}")))?;
    if !matches!(
        addr.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    ) {
        return Err(ApiError::invalid(
            "address: it must end in /p2p/PEER_ID (the `p2p` address `mnemon serve` prints)",
        ));
    }
    let network = service.network.get().ok_or_else(|| {
        ApiError::unavailable(
            "federation is not running here: start `mnemon serve` (without --no-p2p)",
        )
    })?;
    network.dial_now(addr);
    Ok(())
}

pub(super) fn peers(service: &Service) -> Result<Vec<PeerView>, ApiError> {
    let names = collection_names(service);
    let named: HashMap<String, String> = service
        .store()
        .node_names()
        .map_err(store_error)?
        .into_iter()
        .map(|(did, name)| (did.to_string(), name))
        .collect();
    Ok(service
        .network
        .get()
        .map(|n| {
            n.peers()
                .into_iter()
                .map(|p| PeerView {
                    name: named.get(&p.did).cloned(),
                    did: p.did,
                    peer_id: p.peer_id,
                    addresses: p.addresses,
                    connected: p.connected,
                    collections: p.collections,
                    sync: p.sync.iter().map(|s| sync_view(s, &names)).collect(),
                    last_sync: p.last_sync,
                    last_error: p.last_error,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The API's view of how a collection syncs with a peer.
/// Whether this node knows `did`: a peer it has met (now or in its peer table), or a
/// member of one of its collections already.
fn has_met(service: &Service, did: &mnemon_identity::Did) -> Result<bool, ApiError> {
    let text = did.to_string();
    let peers = match service.network.get() {
        Some(network) => network.peers(),
        None => service
            .peers_file
            .get()
            .map(|path| mnemon_net::saved_peers(path))
            .unwrap_or_default(),
    };
    if peers.iter().any(|p| p.did == text) {
        return Ok(true);
    }
    let store = service.store();
    for collection in store.collections().map_err(store_error)? {
        if store
            .members(collection.id)
            .map_err(store_error)?
            .iter()
            .any(|m| m.did == *did)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Collection ids → names, for the views that name collections.
fn collection_names(service: &Service) -> std::collections::HashMap<String, String> {
    service
        .store()
        .collections()
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.id.to_string(), c.name))
        .collect()
}

fn sync_view(
    s: &mnemon_net::CollectionSync,
    names: &std::collections::HashMap<String, String>,
) -> mnemon_api::SyncView {
    mnemon_api::SyncView {
        collection_name: names.get(&s.collection).cloned(),
        collection: s.collection.clone(),
        state: match s.state {
            mnemon_net::SyncPhase::InSync => SyncState::InSync,
            mnemon_net::SyncPhase::Behind => SyncState::Behind,
            mnemon_net::SyncPhase::Error => SyncState::Error,
            mnemon_net::SyncPhase::Offline => SyncState::Offline,
        },
        detail: s.detail.clone(),
        last_refused: s.last_refused.clone(),
    }
}
