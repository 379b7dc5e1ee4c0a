//! Federation: the libp2p swarm and the sync driver.
//!
//! The swarm runs QUIC (and TCP + Noise + Yamux as a fallback), identify, ping, mDNS on the
//! LAN (optional), Kademlia, the relay client and DCUtR, under connection limits. The
//! libp2p key is the node's DID key, so the transport handshake proves which DID is on
//! the other end: [`did_of`] turns a `PeerId` back into the `did:key`.
//!
//! Per connected peer one sync stream (`/mnemon/sync/1`, opened by the side with the
//! smaller `PeerId`) carries one [`Session`] of `mnemon-protocol`: this module only moves
//! its frames, feeds it the store's change feed and its timers, and records what it
//! reports in the [`PeerTable`] that `mnemon peers` and the API show.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::PublicKey;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, autonat, connection_limits, dcutr, identify, kad, mdns,
    noise, ping, relay, tcp, yamux,
};
use mnemon_crdt::{ChangeEvent, StoreHandle};
use mnemon_identity::{Did, Keypair};
use mnemon_protocol::{
    Event, FrameDecoder, MAX_FRAME_LEN, Output, SYNC_PROTOCOL, Session, SessionConfig, SyncState,
    encode_frame,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// The default listen address: QUIC on every interface, a port the OS picks.
pub const DEFAULT_P2P: &str = "/ip4/0.0.0.0/udp/0/quic-v1";

/// How often opening a sync stream is tried before giving up until the next connection.
const OPEN_ATTEMPTS: u32 = 5;
/// The first pause before a session that ended while connected is opened again.
const REOPEN_PAUSE: Duration = Duration::from_secs(2);
/// The longest such pause; a session that lasted longer starts over at the first.
const REOPEN_PAUSE_MAX: Duration = Duration::from_secs(30);

/// How the swarm is set up.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (and Kademlia bootstrap nodes), as multiaddrs ending in
    /// `/p2p/PEER_ID`.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Timers and limits of each sync session.
    pub session: SessionConfig,
    /// Where the peer table is kept across restarts (`DATA/peers.json`); the peers in it
    /// are dialed at start.
    pub state_file: Option<std::path::PathBuf>,
    /// How often disconnected peers this node syncs with are dialed again (the wait
    /// doubles per peer after each failure, up to 64 times this).
    pub redial_interval: Duration,
    /// Where the addresses this node listened on are kept (`DATA/p2p-listen.json`): a
    /// listen address with port 0 gets the port it had last time, if it is free, so peers
    /// that knew this node find it again after both restart.
    pub listen_file: Option<std::path::PathBuf>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            listen: vec![DEFAULT_P2P.parse().expect("valid default address")],
            peers: Vec::new(),
            mdns: true,
            session: SessionConfig::default(),
            state_file: None,
            redial_interval: Duration::from_secs(5),
            listen_file: None,
        }
    }
}

/// The `did:key` of a peer: its `PeerId` holds its Ed25519 public key (identity multihash).
pub fn did_of(peer: &PeerId) -> Option<Did> {
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest()).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Did::from_public_key(&ed.to_bytes()).ok()
}

/// The `PeerId` of a `did:key` (the inverse of [`did_of`]).
pub fn peer_of(did: &Did) -> Option<PeerId> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(did.public_key()).ok()?;
    Some(PublicKey::from(key).to_peer_id())
}

/// What this node knows about a peer.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// Its DID.
    pub did: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Addresses it was seen at.
    pub addresses: Vec<String>,
    /// Addresses it listens on, as it told us (identify) or as another member of a
    /// collection both sync said (`introduced`): dialed after a restart.
    pub listen_addrs: Vec<String>,
    /// Another member introduced it (a member of a collection this node syncs, never met
    /// yet): dialed, with backoff, until met. Not saved: a restart forgets it.
    #[serde(skip)]
    pub introduced: bool,
    /// Where the introducer said it listens (not saved; tried after its own addresses).
    #[serde(skip)]
    pub introduced_addrs: Vec<String>,
    /// Whether a connection is open.
    pub connected: bool,
    /// Collections synced with it in the current session (ids).
    pub collections: Vec<String>,
    /// How each collection synced with it stands (kept, as `offline`, after the session
    /// ends).
    pub sync: Vec<CollectionSync>,
    /// When something was last received from it (Unix ms).
    pub last_sync: Option<u64>,
    /// The last thing refused or the reason the last session ended.
    pub last_error: Option<String>,
    /// Messages sent and received in the current session, by kind.
    pub sent: BTreeMap<String, u64>,
    /// Messages received, by kind.
    pub received: BTreeMap<String, u64>,
    /// Bytes sent on sync streams with it (frames included), since this node started.
    pub bytes_sent: u64,
    /// Bytes received on sync streams with it.
    pub bytes_received: u64,
}

/// A DID shortened for logs and metric labels: `did:key:…` and its last 8 characters.
pub fn short_did(did: &Did) -> String {
    let text = did.to_string();
    let tail = text.len().saturating_sub(8);
    format!("…{}", &text[tail..])
}

/// How one collection synced with a peer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSync {
    /// The collection's id.
    pub collection: String,
    /// Where it stands.
    pub state: SyncPhase,
    /// Why: the refusal, how many memories differ, or why the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The last thing from the peer refused about this collection in this session (it
    /// stays after the state is back to `in_sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<String>,
}

/// Where a collection synced with a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    /// The last comparison found both sides equal, and every change since was exchanged.
    InSync,
    /// Differences are being exchanged, or the sides were not compared yet.
    Behind,
    /// Something from the peer was refused.
    Error,
    /// No session now.
    Offline,
}

impl SyncPhase {
    /// Its name: `in_sync`, `behind`, `error` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncPhase::InSync => "in_sync",
            SyncPhase::Behind => "behind",
            SyncPhase::Error => "error",
            SyncPhase::Offline => "offline",
        }
    }
}

/// Every peer this node has met, by peer id.
pub type PeerTable = Arc<Mutex<BTreeMap<PeerId, PeerInfo>>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    stream: libp2p_stream::Behaviour,
}

enum Command {
    Dial(Multiaddr),
    /// Dial a peer at any of these addresses, unless connected (or dialing) already.
    DialPeer(PeerId, Vec<Multiaddr>),
    Disconnect(PeerId),
    /// Close every connection (peers learn at once that this node is gone), then stop.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// A running network: the swarm task and the sync sessions it spawns.
#[derive(Debug, Clone)]
pub struct Network {
    /// This node's peer id.
    pub peer_id: PeerId,
    /// The addresses it listens on (resolved: real ports).
    pub listen_addrs: Vec<Multiaddr>,
    peers: PeerTable,
    commands: mpsc::Sender<Command>,
    refresh: broadcast::Sender<()>,
    state_file: Option<std::path::PathBuf>,
    reachability: Arc<Mutex<String>>,
    raw: RawSenders,
}

/// Per peer, a way to write raw bytes onto its current sync stream (for tests that play
/// a hostile peer).
type RawSenders = Arc<Mutex<std::collections::HashMap<PeerId, mpsc::UnboundedSender<Vec<u8>>>>>;

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Dial(a) => write!(f, "Dial({a})"),
            Command::DialPeer(p, _) => write!(f, "DialPeer({p})"),
            Command::Disconnect(p) => write!(f, "Disconnect({p})"),
            Command::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl Network {
    /// Starts the swarm for `keypair` over `store` (the store's writer handle; reads go
    /// through its snapshots). Must be called inside a multi-threaded tokio runtime;
    /// returns once it listens.
    pub async fn start(
        store: StoreHandle,
        keypair: &Keypair,
        config: NetConfig,
    ) -> Result<Network> {
        let mut seed = *keypair.seed();
        let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
            .context("turning the node key into a libp2p key")?;
        let local_did = keypair.did();
        let peer_id = key.public().to_peer_id();
        let mdns_on = config.mdns;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .context("setting up TCP")?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .context("setting up the relay client")?
            .with_behaviour(|key, relay| {
                let id = key.public().to_peer_id();
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?)
                } else {
                    None
                };
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_established_per_peer(Some(4))
                            .with_max_established(Some(256))
                            .with_max_pending_incoming(Some(64)),
                    ),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/mnemon/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    mdns: Toggle::from(mdns),
                    kad: kad::Behaviour::new(id, kad::store::MemoryStore::new(id)),
                    relay,
                    dcutr: dcutr::Behaviour::new(id),
                    autonat: autonat::Behaviour::new(id, autonat::Config::default()),
                    stream: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| anyhow::anyhow!("setting up the network behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let listened_before: Vec<Multiaddr> = config
            .listen_file
            .as_deref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        for addr in &config.listen {
            let again = listened_before
                .iter()
                .find_map(|before| same_port_as(addr, before));
            match again {
                Some(again) if swarm.listen_on(again.clone()).is_ok() => {
                    tracing::debug!(%again, "listening on the port of last time");
                }
                _ => {
                    swarm
                        .listen_on(addr.clone())
                        .with_context(|| format!("listening on {addr}"))?;
                }
            }
        }
        // Wait for the listeners to have real addresses.
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listen_addrs.len() < config.listen.len() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .context("waiting for the network to listen")?;
            if let SwarmEvent::NewListenAddr { address, .. } = event {
                listen_addrs.push(address);
            }
        }
        if let Some(path) = &config.listen_file {
            let text: Vec<String> = listen_addrs.iter().map(ToString::to_string).collect();
            if let Err(e) = serde_json::to_vec(&text)
                .map_err(std::io::Error::other)
                .and_then(|bytes| mnemon_identity::private::write_private(path, &bytes))
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot keep the listen addresses");
            }
        }
        for addr in &config.peers {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial a configured peer");
            }
        }
        // Configured peers whose peer id is known are dialed again, with backoff, while
        // they cannot be reached (without one, a connection cannot be told as theirs).
        let configured: Vec<Multiaddr> = config
            .peers
            .iter()
            .filter(|a| matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))))
            .cloned()
            .collect();
        let mut control = swarm.behaviour().stream.new_control();
        let protocol = StreamProtocol::new(SYNC_PROTOCOL);
        let mut incoming = control
            .accept(protocol.clone())
            .context("registering the sync protocol")?;
        let peers: PeerTable = Arc::default();
        if let Some(path) = &config.state_file {
            for info in load_peers(path) {
                let Ok(peer) = info.peer_id.parse::<PeerId>() else {
                    continue;
                };
                for addr in info
                    .listen_addrs
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                {
                    let _ = swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(peer)));
                }
                peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(
                        peer,
                        PeerInfo {
                            connected: false,
                            collections: Vec::new(),
                            sync: info.sync.iter().map(offline("not connected yet")).collect(),
                            sent: BTreeMap::new(),
                            received: BTreeMap::new(),
                            ..info
                        },
                    );
            }
            let table = peers.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let mut saved = String::new();
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    saved = save_peers(&path, &table, saved);
                }
            });
        }
        let (commands, mut command_rx) = mpsc::channel(64);
        let (refresh, _) = broadcast::channel(64);
        let driver = Driver {
            commands: commands.clone(),
            store: store.clone(),
            local: local_did,
            config: config.session.clone(),
            peers: peers.clone(),
            refresh: refresh.clone(),
            generations: Arc::default(),
            superseded: broadcast::channel(64).0,
            reachability: Arc::new(Mutex::new("unknown".to_owned())),
            raw: Arc::default(),
            keepers: Arc::default(),
        };
        let (reachability, raw) = (driver.reachability.clone(), driver.raw.clone());

        // Inbound sessions.
        {
            let driver = driver.clone();
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let driver = driver.clone();
                    tokio::spawn(async move {
                        driver.run(peer, stream).await;
                    });
                }
            });
        }

        // The swarm.
        let table = peers.clone();
        let redial_every = config.redial_interval;
        tokio::spawn(async move {
            let mut redial = tokio::time::interval(redial_every);
            redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut backoff: Redial<PeerId> = Redial::new(redial_every);
            let mut configured_backoff: Redial<Multiaddr> = Redial::new(redial_every);
            let mut open: Connections = HashMap::new();
            loop {
                tokio::select! {
                    _ = redial.tick() => {
                        redial_peers(&mut swarm, &table, &mut backoff);
                        redial_configured(&mut swarm, &configured, &mut configured_backoff);
                    }
                    event = swarm.select_next_some() => {
                        track_connections(&mut swarm, &event, &mut open, peer_id);
                        handle_swarm_event(&mut swarm, event, &table, peer_id, &control, &protocol, &driver);
                    }
                    command = command_rx.recv() => match command {
                        Some(Command::Dial(addr)) => {
                            if let Err(e) = swarm.dial(addr.clone()) {
                                tracing::warn!(%addr, error = %e, "dial failed");
                            }
                        }
                        Some(Command::DialPeer(peer, addrs)) => {
                            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                                .addresses(addrs)
                                .build();
                            if let Err(e) = swarm.dial(opts) {
                                tracing::debug!(%peer, error = %e, "dialing an introduced member failed");
                            }
                        }
                        Some(Command::Disconnect(peer)) => {
                            let _ = swarm.disconnect_peer_id(peer);
                        }
                        Some(Command::Shutdown(done)) => {
                            close_all(&mut swarm).await;
                            let _ = done.send(());
                            break;
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Network {
            peer_id,
            listen_addrs,
            peers,
            commands,
            refresh,
            state_file: config.state_file.clone(),
            reachability,
            raw,
        })
    }

    /// Whether this node can be dialed from outside, as AutoNAT last found: `unknown`,
    /// `public ADDRESS` or `private` (behind NAT: peers reach it through a relay).
    pub fn reachability(&self) -> String {
        self.reachability
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Writes `bytes` as they are onto the current sync stream with `did`: for tests that
    /// play a hostile peer (forged changes, garbage, oversized frames). False when there
    /// is no session with it.
    #[doc(hidden)]
    pub fn send_raw(&self, did: &Did, bytes: Vec<u8>) -> bool {
        let raw = self
            .raw
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        raw.iter()
            .find(|(peer, _)| did_of(peer).as_ref() == Some(did))
            .is_some_and(|(_, tx)| tx.send(bytes).is_ok())
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .context("the network has stopped")
    }

    /// Closes every connection to the peer with `did` (it may dial again).
    pub async fn disconnect(&self, did: &Did) -> Result<()> {
        let peer = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(_, info)| info.did == did.to_string())
            .map(|(peer, _)| *peer)
            .context("not a known peer")?;
        self.commands
            .send(Command::Disconnect(peer))
            .await
            .context("the network has stopped")
    }

    /// Stops the swarm: every connection is closed (so peers know at once, rather than
    /// after a timeout) and nothing is dialed or accepted any more.
    pub async fn shutdown(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Writes the peer table to the state file now (at shutdown).
    pub fn save(&self) {
        if let Some(path) = &self.state_file {
            save_peers(path, &self.peers, String::new());
        }
    }

    /// Dials a peer from synchronous code (the API's handlers); a full queue drops it.
    pub fn dial_now(&self, addr: Multiaddr) {
        if self.commands.try_send(Command::Dial(addr)).is_err() {
            tracing::warn!("the network is busy; not dialing now");
        }
    }

    /// Every listen address with `/p2p/PEER_ID`, as text (for tickets).
    pub fn addresses(&self) -> Vec<String> {
        self.listen_addrs
            .iter()
            .map(|a| {
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
                    .to_string()
            })
            .collect()
    }

    /// Makes every session re-read what it may sync (after a share or unshare).
    pub fn refresh(&self) {
        let _ = self.refresh.send(());
    }

    /// What this node knows about its peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The address to give another node: the first listen address with `/p2p/PEER_ID`.
    pub fn dial_address(&self) -> Option<Multiaddr> {
        self.listen_addrs.first().map(|a| {
            a.clone()
                .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
        })
    }
}

/// The open connections to each peer, oldest first.
type Connections = HashMap<PeerId, Vec<libp2p::swarm::ConnectionId>>;

/// Keeps [`Connections`] and closes a peer's older connections when a new one opens, on
/// the side that opens sync sessions (one side only, or simultaneous dials would close
/// both). An older connection may be dead without anyone knowing yet (the peer
/// restarted), and a session opened on it would wait for it to time out.
fn track_connections(
    swarm: &mut libp2p::Swarm<Behaviour>,
    event: &SwarmEvent<BehaviourEvent>,
    open: &mut Connections,
    local: PeerId,
) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            ..
        } => {
            let ids = open.entry(*peer_id).or_default();
            if local < *peer_id {
                for old in ids.drain(..) {
                    tracing::debug!(peer = %peer_id, "closing an older connection");
                    swarm.close_connection(old);
                }
            }
            ids.push(*connection_id);
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            connection_id,
            ..
        } => {
            if let Some(ids) = open.get_mut(peer_id) {
                ids.retain(|id| id != connection_id);
                if ids.is_empty() {
                    open.remove(peer_id);
                }
            }
        }
        _ => {}
    }
}

/// Closes every connection and waits (a moment at most) until they are closed.
async fn close_all(swarm: &mut libp2p::Swarm<Behaviour>) {
    let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
    for peer in peers {
        let _ = swarm.disconnect_peer_id(peer);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while swarm.connected_peers().next().is_some() {
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // Let the transport send its last frames.
    let _ = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await;
}

fn handle_swarm_event(
    swarm: &mut libp2p::Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    table: &PeerTable,
    local: PeerId,
    control: &libp2p_stream::Control,
    protocol: &StreamProtocol,
    driver: &Driver,
) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            endpoint,
            num_established,
            ..
        } => {
            let Some(did) = did_of(&peer_id) else {
                tracing::warn!(%peer_id, "a peer without an Ed25519 key: closing");
                let _ = swarm.disconnect_peer_id(peer_id);
                return;
            };
            {
                let mut table = table
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let info = table.entry(peer_id).or_default();
                info.did = did.to_string();
                info.peer_id = peer_id.to_string();
                info.connected = true;
                // Met: from now on it is redialed for what it syncs, not for an introduction.
                info.introduced = false;
                let addr = endpoint.get_remote_address().to_string();
                if !info.addresses.contains(&addr) {
                    info.addresses.push(addr);
                }
            }
            tracing::info!(peer = %did, "connected");
            // One session per pair: the smaller peer id opens it, on every new connection
            // (a session on a connection that died unnoticed, say of a peer that
            // restarted, is replaced).
            let _ = num_established;
            if local < peer_id {
                let driver = driver.clone();
                let (control, protocol) = (control.clone(), protocol.clone());
                tokio::spawn(
                    async move { driver.keep_session(peer_id, did, control, protocol).await },
                );
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } => {
            let mut table = table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(info) = table.get_mut(&peer_id) {
                info.connected = false;
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
            new,
            ..
        })) => {
            let text = match new {
                autonat::NatStatus::Public(addr) => format!("public {addr}"),
                autonat::NatStatus::Private => "private".to_owned(),
                autonat::NatStatus::Unknown => "unknown".to_owned(),
            };
            tracing::info!(reachability = %text, "AutoNAT");
            *driver
                .reachability
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = text;
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
            for (peer, addr) in found {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                if !swarm.is_connected(&peer) {
                    let _ = swarm.dial(addr);
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            {
                let mut table = table
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(entry) = table.get_mut(&peer_id) {
                    entry.listen_addrs = info
                        .listen_addrs
                        .iter()
                        .take(16)
                        .map(ToString::to_string)
                        .collect();
                }
            }
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
            // Sessions may now tell other members where this peer listens.
            let _ = driver.refresh.send(());
        }
        _ => {}
    }
}

/// When to dial a disconnected peer again: at once the first time, then after `base`,
/// doubling after every attempt that did not reconnect, up to 64 × `base`; a peer that
/// connected starts over. Pure: the caller says what time it is.
#[derive(Debug, Clone)]
pub struct Redial<P> {
    base: Duration,
    /// Per peer: when it may be dialed next, and the wait that led there.
    next: std::collections::HashMap<P, (Instant, Duration)>,
}

impl<P: std::hash::Hash + Eq + Clone> Redial<P> {
    /// A policy whose first wait is `base`.
    pub fn new(base: Duration) -> Redial<P> {
        Redial {
            base,
            next: std::collections::HashMap::new(),
        }
    }

    /// Whether `peer` may be dialed at `now`.
    pub fn due(&self, peer: &P, now: Instant) -> bool {
        self.next.get(peer).is_none_or(|(at, _)| *at <= now)
    }

    /// Records a dial of `peer` at `now`; returns the wait before the next one.
    pub fn dialed(&mut self, peer: P, now: Instant) -> Duration {
        let wait = self
            .next
            .get(&peer)
            .map_or(self.base, |(_, w)| (*w * 2).min(self.base * 64));
        self.next.insert(peer, (now + wait, wait));
        wait
    }

    /// Forgets the peers `connected` says are connected again: their next outage starts
    /// with the base wait.
    pub fn forget(&mut self, connected: impl Fn(&P) -> bool) {
        self.next.retain(|peer, _| !connected(peer));
    }
}

/// `addr` with the port of `before`, if `addr` asks for any port (0) and `before` is an
/// address of the same kind (the same protocols, the same IP or any IP).
fn same_port_as(addr: &Multiaddr, before: &Multiaddr) -> Option<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let asked: Vec<Protocol<'_>> = addr.iter().collect();
    let had: Vec<Protocol<'_>> = before
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    if asked.len() != had.len() {
        return None;
    }
    let mut any_port = false;
    let mut again = Multiaddr::empty();
    for (asked, had) in asked.into_iter().zip(had) {
        let part = match (&asked, &had) {
            (Protocol::Udp(0), Protocol::Udp(port)) => {
                any_port = true;
                Protocol::Udp(*port)
            }
            (Protocol::Tcp(0), Protocol::Tcp(port)) => {
                any_port = true;
                Protocol::Tcp(*port)
            }
            (Protocol::Ip4(ip), Protocol::Ip4(_)) if ip.is_unspecified() => asked,
            (Protocol::Ip6(ip), Protocol::Ip6(_)) if ip.is_unspecified() => asked,
            _ if asked == had => asked,
            _ => return None,
        };
        again.push(part);
    }
    any_port.then_some(again)
}

/// Dials configured peers (`--peer`) that are not connected, with backoff.
fn redial_configured(
    swarm: &mut libp2p::Swarm<Behaviour>,
    configured: &[Multiaddr],
    backoff: &mut Redial<Multiaddr>,
) {
    let now = Instant::now();
    let connected: Vec<bool> = configured
        .iter()
        .map(|addr| match addr.iter().last() {
            Some(libp2p::multiaddr::Protocol::P2p(peer)) => swarm.is_connected(&peer),
            _ => false,
        })
        .collect();
    backoff.forget(|addr| {
        configured
            .iter()
            .zip(&connected)
            .any(|(a, up)| a == addr && *up)
    });
    for (addr, up) in configured.iter().zip(connected) {
        if up || !backoff.due(addr, now) {
            continue;
        }
        backoff.dialed(addr.clone(), now);
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::debug!(%addr, error = %e, "redialing a configured peer failed");
        }
    }
}

/// Dials again the peers this node syncs collections with that are not connected (after
/// a network partition, a sleep, or a peer's restart), each at most once per its backoff.
fn redial_peers(
    swarm: &mut libp2p::Swarm<Behaviour>,
    table: &PeerTable,
    backoff: &mut Redial<PeerId>,
) {
    let now = Instant::now();
    let due: Vec<(PeerId, Vec<Multiaddr>)> = {
        let table = table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table
            .iter()
            .filter(|(peer, info)| {
                if info.connected || swarm.is_connected(peer) {
                    return false;
                }
                (!info.sync.is_empty() || info.introduced) && backoff.due(peer, now)
            })
            .map(|(peer, info)| {
                let addrs = info
                    .listen_addrs
                    .iter()
                    .chain(&info.addresses)
                    .chain(&info.introduced_addrs)
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .take(8)
                    .collect();
                (*peer, addrs)
            })
            .collect()
    };
    backoff.forget(|peer| swarm.is_connected(peer));
    for (peer, addrs) in due {
        backoff.dialed(peer, now);
        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs)
            .build();
        if let Err(e) = swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "redial failed");
        }
    }
}

/// Runs sync sessions over streams.
#[derive(Clone)]
struct Driver {
    /// The newest session's number per peer; an older session ends when it sees it.
    generations: Arc<Mutex<std::collections::HashMap<PeerId, u64>>>,
    /// Announces a peer whose session was replaced.
    superseded: broadcast::Sender<PeerId>,
    /// The one door for writes; reads go through its snapshots, never through it.
    store: StoreHandle,
    local: Did,
    config: SessionConfig,
    peers: PeerTable,
    refresh: broadcast::Sender<()>,
    /// What AutoNAT says of this node.
    reachability: Arc<Mutex<String>>,
    /// Raw writers onto current sessions (tests only).
    raw: RawSenders,
    /// The swarm's commands (dialing introduced members).
    commands: mpsc::Sender<Command>,
    /// The newest keeper per peer (on the side that opens sessions); an older one stops.
    keepers: Arc<Mutex<std::collections::HashMap<PeerId, u64>>>,
}

impl Driver {
    /// Where this node sees `did` connected and listening (what it tells other members).
    fn addresses_of(&self, did: &Did) -> Vec<String> {
        let Some(peer) = peer_of(did) else {
            return Vec::new();
        };
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .filter(|info| info.connected)
            .map(|info| info.listen_addrs.clone())
            .unwrap_or_default()
    }

    /// A member of a collection this node syncs, introduced by the peer: remembered, and
    /// dialed unless connected. Addresses that do not parse, or name another peer, are
    /// dropped.
    fn introduced(&self, did: &Did, addrs: &[String]) {
        use libp2p::multiaddr::Protocol;
        let Some(peer) = peer_of(did) else {
            return;
        };
        let addrs: Vec<Multiaddr> = addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter_map(|mut a| match a.iter().last() {
                Some(Protocol::P2p(p)) if p == peer => {
                    a.pop();
                    Some(a)
                }
                Some(Protocol::P2p(_)) => None,
                _ => Some(a),
            })
            .take(mnemon_protocol::MAX_MEMBER_ADDRS)
            .collect();
        if addrs.is_empty() {
            return;
        }
        let dial_now = {
            let mut table = self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let info = table.entry(peer).or_default();
            if info.did.is_empty() {
                info.did = did.to_string();
                info.peer_id = peer.to_string();
            }
            let first = !info.introduced;
            info.introduced = !info.connected;
            info.introduced_addrs = addrs.iter().map(ToString::to_string).collect();
            // The first introduction is dialed at once; later ones wait for the redial
            // and its backoff, so a member cannot make this node dial at its pace.
            first && !info.connected
        };
        if dial_now {
            let _ = self.commands.try_send(Command::DialPeer(peer, addrs));
        }
    }

    fn note_error(&self, peer: PeerId, error: String) {
        let mut table = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.entry(peer).or_default().last_error = Some(error);
    }

    fn count_bytes(&self, peer: PeerId, sent: u64, received: u64) {
        let mut table = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let info = table.entry(peer).or_default();
        info.bytes_sent += sent;
        info.bytes_received += received;
    }

    /// Notes how the session with `peer` stands; `synced`: a collection came in sync since
    /// the last refusal.
    fn record(&self, peer: PeerId, session: &Session, heard: bool, synced: bool) {
        let mut table = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let info = table.entry(peer).or_default();
        info.collections = session.active().iter().map(|c| c.to_string()).collect();
        info.sync = session
            .sync_states()
            .into_iter()
            .map(|(c, state)| {
                let (state, detail) = match state {
                    SyncState::InSync => (SyncPhase::InSync, None),
                    SyncState::Behind { differ: 0 } => {
                        (SyncPhase::Behind, Some("comparing".to_owned()))
                    }
                    SyncState::Behind { differ } => (
                        SyncPhase::Behind,
                        Some(format!("{differ} memories still to exchange")),
                    ),
                    SyncState::Error(reason) => (SyncPhase::Error, Some(reason)),
                };
                CollectionSync {
                    collection: c.to_string(),
                    state,
                    detail,
                    last_refused: session.last_refused(c).map(str::to_owned),
                }
            })
            .collect();
        // Coming in sync with every collection after an error makes the error history.
        if synced && !info.sync.is_empty() && info.sync.iter().all(|s| s.state == SyncPhase::InSync)
        {
            info.last_error = None;
        }
        let traffic = session.traffic();
        info.sent = traffic
            .sent
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        info.received = traffic
            .received
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        if heard {
            info.last_sync = Some(now_ms());
        }
    }

    /// Keeps one session open with `peer` for as long as it is connected, on the side that
    /// opens sessions (the smaller peer id), from a new connection on. A session can end
    /// while its connection stays up: the two sides may see two sessions opened on two
    /// connections (simultaneous dials) arrive in opposite orders, and each keep the one
    /// the other closed. So a session that ends while still the newest on this side is
    /// opened again (after a pause that doubles while sessions keep ending soon), until
    /// the peer disconnects or a newer connection's keeper takes over.
    async fn keep_session(
        self,
        peer: PeerId,
        did: Did,
        mut control: libp2p_stream::Control,
        protocol: StreamProtocol,
    ) {
        let keeper = next_number(&self.keepers, peer);
        let newest = |driver: &Driver| {
            driver
                .keepers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&peer)
                == Some(&keeper)
        };
        let connected = |driver: &Driver| {
            driver
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&peer)
                .is_some_and(|info| info.connected)
        };
        let mut pause = REOPEN_PAUSE;
        loop {
            // The stream may be tried on an older connection that died unnoticed (a peer
            // that restarted); once that one times out, a retry uses the new connection.
            let mut stream = None;
            for attempt in 1..=OPEN_ATTEMPTS {
                match control.open_stream(peer, protocol.clone()).await {
                    Ok(opened) => {
                        stream = Some(opened);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(peer = %did, attempt, error = %e, "cannot open a sync stream");
                        self.note_error(peer, format!("cannot open a sync stream: {e}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let Some(stream) = stream else { return };
            let began = Instant::now();
            let still_newest = self.clone().run(peer, stream).await;
            if !still_newest || !newest(&self) {
                return;
            }
            pause = if began.elapsed() > REOPEN_PAUSE_MAX {
                REOPEN_PAUSE
            } else {
                (pause * 2).min(REOPEN_PAUSE_MAX)
            };
            tokio::time::sleep(pause).await;
            if !newest(&self) || !connected(&self) {
                return;
            }
            tracing::debug!(peer = %did, "the session ended while connected: opening another");
        }
    }

    /// Runs one session over `stream` until it ends; true if it was still this peer's
    /// newest session then.
    async fn run(self, peer: PeerId, stream: libp2p::Stream) -> bool {
        let Some(did) = did_of(&peer) else {
            return false;
        };
        let generation = next_number(&self.generations, peer);
        let _ = self.superseded.send(peer);
        let span = tracing::info_span!("sync", peer = %short_did(&did), session = generation);
        let reason = match tracing::Instrument::instrument(
            self.session(peer, did, stream, generation),
            span,
        )
        .await
        {
            Ok(reason) => reason,
            Err(e) => format!("{e:#}"),
        };
        tracing::info!(peer = %did, %reason, "sync session ended");
        let current = self.is_current(peer, generation);
        if current {
            let mut table = self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let info = table.entry(peer).or_default();
            info.sync = info.sync.iter().map(offline(&reason)).collect();
        }
        self.note_error(peer, reason);
        current
    }

    fn is_current(&self, peer: PeerId, generation: u64) -> bool {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .is_some_and(|g| *g == generation)
    }

    async fn session(
        &self,
        peer: PeerId,
        did: Did,
        stream: libp2p::Stream,
        generation: u64,
    ) -> Result<String> {
        let mut superseded = self.superseded.subscribe();
        let clock = Instant::now();
        let now = move || clock.elapsed().as_millis() as u64;
        let mut session = Session::new(self.local, did, self.config.clone(), now());
        let mut feed = self.store.subscribe();
        let store = self.store.reader().clone();
        // The change log's position this session has seen up to (events at or before it
        // that the feed still delivers are skipped).
        let mut seen = store.last_seq().unwrap_or(0);
        let mut refresh = self.refresh.subscribe();
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.raw
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer, raw_tx);
        session.start(&store);
        let (mut reader, mut writer) = stream.split();
        let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        // Tell the peer where the other members are: at the start, when what may be
        // synced or who is connected changed, and at each timeout.
        let mut introduce = true;
        // A collection came in sync since the last refusal: only that makes the last error
        // history (a refusal while every collection is in sync stays on show).
        let mut synced = false;
        loop {
            if std::mem::take(&mut introduce) {
                session.introduce(&store, &|member| self.addresses_of(member));
            }
            // Carry out what the session asks.
            while let Some(output) = session.poll_output() {
                match output {
                    Output::Send(message) => {
                        out.clear();
                        encode_frame(&message.encode(), &mut out)
                            .context("a message too large for a frame")?;
                        writer.write_all(&out).await.context("sending")?;
                        self.count_bytes(peer, out.len() as u64, 0);
                    }
                    Output::Event(event) => match event {
                        // What was applied reaches the search indexes through the
                        // change log.
                        Event::Applied { .. } | Event::Deleted { .. } => {}
                        Event::AclChanged(_)
                        | Event::Adopted(_)
                        | Event::Active(_)
                        | Event::Redeemed(_) => {
                            let _ = self.refresh.send(());
                            introduce = true;
                        }
                        Event::Introduced { did: member, addrs } => {
                            self.introduced(&member, &addrs);
                        }
                        Event::Refused(reason) => {
                            tracing::warn!(peer = %did, %reason, "refused from peer");
                            self.note_error(peer, reason);
                            synced = false;
                        }
                        Event::InSync(_) => synced = true,
                        Event::JoinRefused { collection, reason } => {
                            tracing::warn!(peer = %did, %collection, %reason, "the owner refused our invite");
                            synced = false;
                            self.note_error(
                                peer,
                                format!("invite to {collection} refused: {reason}"),
                            );
                        }
                    },
                    Output::Closed(reason) => {
                        let _ = writer.flush().await;
                        let _ = writer.close().await;
                        return Ok(reason);
                    }
                }
            }
            writer.flush().await.context("sending")?;
            self.record(peer, &session, false, std::mem::take(&mut synced));
            let wake = session
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |t| {
                    Duration::from_millis(t.saturating_sub(now()))
                });
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = read.context("receiving")?;
                    if n == 0 {
                        return Ok("the peer closed the stream".into());
                    }
                    decoder.push(&buf[..n]);
                    self.count_bytes(peer, 0, n as u64);
                    let mut frames = Vec::new();
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => frames.push(frame),
                            Ok(None) => break,
                            Err(e) => {
                                session.close(format!("{e}"));
                                break;
                            }
                        }
                    }
                    if !frames.is_empty() {
                        // The session writes what the peer sent on the store's writer
                        // thread, queued with local writes: never on this task's worker.
                        let at = now();
                        session = self
                            .store
                            .call(move |store| {
                                for frame in &frames {
                                    session.handle_input(frame, at, store);
                                }
                                session
                            })
                            .await
                            .map_err(|_| anyhow::anyhow!("the store closed"))?;
                    }
                    self.record(peer, &session, true, false);
                }
                event = feed.recv() => {
                    let Some(events) = changes(event, &mut feed, &store, seen) else {
                        return Ok("the store closed".into());
                    };
                    match events {
                        Some(events) => {
                            let fresh: Vec<_> = events
                                .iter()
                                .filter(|e| e.seq > seen)
                                .map(|e| (e.collection, e.memory))
                                .collect();
                            seen = events.last().map_or(seen, |e| e.seq.max(seen));
                            session.local_changes(&store, &fresh);
                        }
                        // Too far behind to read the log: a summary catches up.
                        None => {
                            seen = store.last_seq().unwrap_or(seen);
                            session.resync(&store);
                        }
                    }
                }
                _ = refresh.recv() => {
                    session.refresh(&store);
                    introduce = true;
                }
                Some(bytes) = raw_rx.recv() => {
                    writer.write_all(&bytes).await.context("sending")?;
                }
                replaced = superseded.recv() => {
                    if replaced.is_ok_and(|p| p == peer) && !self.is_current(peer, generation) {
                        let _ = writer.close().await;
                        return Ok("replaced by a newer session".into());
                    }
                }
                _ = tokio::time::sleep(wake) => {
                    let at = now();
                    session.handle_timeout(at, &store);
                    introduce = true;
                }
            }
        }
    }
}

/// The peer's next number in `numbers` (1 first), recorded as its newest.
fn next_number(numbers: &Mutex<std::collections::HashMap<PeerId, u64>>, peer: PeerId) -> u64 {
    let mut numbers = numbers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let next = numbers.get(&peer).map_or(1, |n| n + 1);
    numbers.insert(peer, next);
    next
}

/// A collection's sync state once its session is over.
fn offline(reason: &str) -> impl Fn(&CollectionSync) -> CollectionSync + '_ {
    move |s| CollectionSync {
        collection: s.collection.clone(),
        state: SyncPhase::Offline,
        detail: Some(reason.to_owned()),
        last_refused: s.last_refused.clone(),
    }
}

/// Most changes a session reads back from the change log after its feed fell behind;
/// further behind, it compares summaries instead.
const MAX_CATCH_UP: usize = 100_000;

/// The store's changes after `seen`, starting with `first` from the feed: everything else
/// the feed holds now (a peer's large sync applies hundreds per transaction, and one at a
/// time the feed would fall behind), or, if it fell behind, the change log read back.
/// `None`: the store closed; `Some(None)`: too far behind for the log.
fn changes(
    first: Result<ChangeEvent, broadcast::error::RecvError>,
    feed: &mut broadcast::Receiver<ChangeEvent>,
    store: &mnemon_crdt::StoreReader,
    seen: u64,
) -> Option<Option<Vec<ChangeEvent>>> {
    use broadcast::error::{RecvError, TryRecvError};
    let mut events = Vec::new();
    let mut lagged = match first {
        Ok(event) => {
            events.push(event);
            false
        }
        Err(RecvError::Lagged(_)) => true,
        Err(RecvError::Closed) => return None,
    };
    while !lagged && events.len() < mnemon_crdt::FEED_CAPACITY {
        match feed.try_recv() {
            Ok(event) => events.push(event),
            Err(TryRecvError::Lagged(_)) => lagged = true,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Closed) => return None,
        }
    }
    if !lagged {
        return Some(Some(events));
    }
    // The log holds every change in order: read it back from where this session was.
    let mut events = Vec::new();
    loop {
        let from = events.last().map_or(seen, |e: &ChangeEvent| e.seq);
        match store.changes_since(from, 4096) {
            Ok(more) if more.is_empty() => return Some(Some(events)),
            Ok(more) => events.extend(more),
            Err(_) => return Some(None),
        }
        if events.len() > MAX_CATCH_UP {
            return Some(None);
        }
    }
}

/// Most peers kept in the state file.
const MAX_SAVED_PEERS: usize = 1000;

/// The peers a node kept in its peer table at `path` (while it does not run).
pub fn saved_peers(path: &std::path::Path) -> Vec<PeerInfo> {
    load_peers(path)
}

/// The peers kept in `path` (none if it is missing or unreadable: it is a cache).
fn load_peers(path: &std::path::Path) -> Vec<PeerInfo> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    if text.len() > 4 * 1024 * 1024 {
        tracing::warn!(path = %path.display(), "the peer file is too large; ignoring it");
        return Vec::new();
    }
    match serde_json::from_str::<Vec<PeerInfo>>(&text) {
        Ok(mut peers) => {
            peers.truncate(MAX_SAVED_PEERS);
            peers
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the peer file is unreadable; ignoring it");
            Vec::new()
        }
    }
}

/// Writes the peer table to `path` if it changed since `last`; returns what was written.
fn save_peers(path: &std::path::Path, table: &PeerTable, last: String) -> String {
    let peers: Vec<PeerInfo> = table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .take(MAX_SAVED_PEERS)
        .cloned()
        .collect();
    let Ok(text) = serde_json::to_string_pretty(&peers) else {
        return last;
    };
    if text == last {
        return last;
    }
    let written = mnemon_identity::private::write_private(path, text.as_bytes());
    match written {
        Ok(()) => text,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the peer table");
            last
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_with_any_port_takes_the_port_of_last_time() {
        let addr = |s: &str| s.parse::<Multiaddr>().expect("multiaddr");
        let any = addr("/ip4/0.0.0.0/udp/0/quic-v1");
        let before = addr(
            "/ip4/192.168.1.5/udp/4242/quic-v1/p2p/12D3KooWKYVKhke2TvPqzq29rC6soY2NWDpp2GBV6zj1hEuezHFA",
        );
        assert_eq!(
            same_port_as(&any, &before),
            Some(addr("/ip4/0.0.0.0/udp/4242/quic-v1"))
        );
        let loopback = addr("/ip4/127.0.0.1/udp/0/quic-v1");
        assert_eq!(
            same_port_as(&loopback, &addr("/ip4/127.0.0.1/udp/4242/quic-v1")),
            Some(addr("/ip4/127.0.0.1/udp/4242/quic-v1"))
        );
        // Another IP, another transport, or a fixed port: nothing to take.
        assert_eq!(same_port_as(&loopback, &before), None);
        assert_eq!(same_port_as(&any, &addr("/ip6/::1/udp/4242/quic-v1")), None);
        assert_eq!(same_port_as(&any, &addr("/ip4/0.0.0.0/tcp/4242")), None);
        assert_eq!(
            same_port_as(&addr("/ip4/0.0.0.0/udp/7000/quic-v1"), &before),
            None
        );
    }

    #[test]
    fn redial_waits_double_up_to_a_cap_and_start_over_after_a_connection() {
        let base = Duration::from_secs(5);
        let mut redial: Redial<&str> = Redial::new(base);
        let t0 = Instant::now();
        assert!(redial.due(&"a", t0), "a peer never dialed is due at once");
        let waits: Vec<u64> = (0..9)
            .map(|i| redial.dialed("a", t0 + base * i).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
        let last = t0 + base * 8;
        assert!(!redial.due(&"a", last + Duration::from_secs(319)));
        assert!(redial.due(&"a", last + Duration::from_secs(320)));
        // Another peer has its own clock.
        assert!(redial.due(&"b", last));
        // Reconnected: the next outage starts with the base wait.
        redial.forget(|p| *p == "a");
        assert!(redial.due(&"a", last));
        assert_eq!(redial.dialed("a", last), base);
    }
}
