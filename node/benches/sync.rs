//! Sync between two real nodes in one process: stores in temporary folders, libp2p over
//! QUIC on 127.0.0.1, the sync protocol end to end.
//!
//! Prints one JSON object:
//! - initial sync of a collection of `MNEMON_SYNC_N` memories (default 10,000; short
//!   generated notes): time until the second node holds all of them, and the bytes that
//!   crossed the wire beside the collection's size (its changes' bytes);
//! - incremental sync of 10 edited memories out of N while connected: time and bytes;
//! - the same after a reconnect (B was away while A edited 10): time, bytes and the
//!   messages of the new session by kind (the round trips: offers, summaries, heads,
//!   changes);
//! - the bulk baseline: the initial sync's bytes sent over a bare quinn connection on
//!   127.0.0.1 in the same run (one stream, 64 KiB writes), and the ratio of the two
//!   throughputs;
//! - restarts (`MNEMON_SYNC_RESTARTS`, default 20): B's network stops and starts again on
//!   a new port, dialing A, and A edits a memory at once; the time from the stop until B
//!   holds the edit, p50 and p99 (the process's own start, opening the store and index,
//!   is not in it);
//! - idle: the bytes per minute each way while nothing changes (`MNEMON_SYNC_IDLE_SECS`,
//!   default 150: two resyncs);
//! - change-to-visible latency: `MNEMON_SYNC_EDITS` (default 200) single edits one after
//!   the other, each timed from the edit on A until B holds it; p50 and p99.
//!
//! Run: `cargo bench -p mnemon-node --bench sync`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mnemon_crdt::{MemoryEdit, MemoryId, NewMemory, Role, Store};
use mnemon_identity::Keypair;
use mnemon_node::app::Service;
use mnemon_node::net::{NetConfig, Network};
use mnemon_node::search::embed::HashEmbedder;

struct Node {
    _dir: tempfile::TempDir,
    service: Arc<Service>,
    network: Network,
    did: mnemon_identity::Did,
    keypair: Keypair,
}

fn net_config(peers: Vec<libp2p::Multiaddr>) -> NetConfig {
    NetConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")],
        mdns: false,
        peers,
        ..NetConfig::default()
    }
}

async fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let keypair = Keypair::generate();
    let store = Store::open(dir.path().join("mnemon.redb"), keypair.clone()).expect("store");
    let service = Service::open(
        store,
        &dir.path().join("index"),
        Box::new(|| Ok(Arc::new(HashEmbedder::default()) as _)),
        "bench",
    )
    .expect("service");
    service.load_index().expect("index");
    let service = Arc::new(service);
    let network = Network::start(service.writer().clone(), &keypair, net_config(Vec::new()))
        .await
        .expect("network");
    service.set_network(network.clone());
    Node {
        _dir: dir,
        service,
        network,
        did: keypair.did(),
        keypair,
    }
}

fn bytes(node: &Node) -> (u64, u64) {
    node.network
        .peers()
        .iter()
        .fold((0, 0), |(s, r), p| (s + p.bytes_sent, r + p.bytes_received))
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Retitles memory `id` on `node`; returns its heads afterwards.
fn retitle(
    node: &Node,
    id: MemoryId,
    title: String,
) -> Option<Vec<mnemon_crdt::automerge::ChangeHash>> {
    node.service
        .write_store(move |s| {
            s.edit(
                id,
                &MemoryEdit {
                    title: Some(title),
                    ..MemoryEdit::default()
                },
            )
            .expect("edit");
            s.heads(id).expect("heads")
        })
        .expect("store")
}

/// Waits until both nodes' networks say every collection they sync with the other is in
/// sync, and then for the exchange that confirmed it to end (so the next phase's bytes are
/// its own).
fn settled(networks: [&Network; 2]) {
    wait("both sides in sync", || {
        networks.iter().all(|network| {
            network.peers().iter().all(|p| {
                !p.connected
                    || p.sync
                        .iter()
                        .all(|s| s.state == mnemon_node::net::SyncPhase::InSync)
            })
        })
    });
    std::thread::sleep(Duration::from_secs(3));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("MNEMON_SYNC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let edits: usize = std::env::var("MNEMON_SYNC_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b) = runtime.block_on(async { (node().await, node().await) });

    // A fills a collection.
    let peer = b.did;
    let (collection, ids) = a.service.write_store(move |store| {
        let c = store.create_collection("bench").expect("collection").id;
        let mut ids = Vec::with_capacity(n);
        for chunk in 0..n.div_ceil(1000) {
            let batch: Vec<NewMemory> = (chunk * 1000..((chunk + 1) * 1000).min(n))
                .map(|i| NewMemory {
                    title: Some(format!("note {i}")),
                    content: format!(
                        "memory number {i}: the plumber came on day {} about the kettle and the garden",
                        i % 31
                    ),
                    collection: Some(c),
                    ..NewMemory::default()
                })
                .collect();
            ids.extend(store.add_batch(batch).expect("add").into_iter().map(|m| m.id));
        }
        store.share(c, &peer, Role::Write).expect("share");
        (c, ids)
    })
    .expect("store");
    let change_bytes: u64 = a.service.read_store(|store| {
        ids.iter()
            .map(|id| {
                store
                    .signed_changes(*id)
                    .expect("changes")
                    .iter()
                    .map(|c| c.bytes.len() as u64 + 64)
                    .sum::<u64>()
            })
            .sum()
    });

    // Initial sync.
    let started = Instant::now();
    runtime
        .block_on(b.network.dial(a.network.dial_address().expect("addr")))
        .expect("dial");
    let holds = |node: &Node, c| {
        node.service
            .read_store(|s| s.heads_summary(c).map(|h| h.len()).unwrap_or(0))
    };
    wait("initial sync", || holds(&b, collection) == n);
    let initial = started.elapsed();
    let (sent_a, recv_a) = bytes(&a);
    let initial_session = a.network.peers().into_iter().next().expect("B");

    // Incremental: 10 memories edited while connected (once the initial sync's
    // confirming exchange is over).
    settled([&a.network, &b.network]);
    let (settled_sent, settled_recv) = bytes(&a);
    let started = Instant::now();
    let edited: Vec<MemoryId> = ids.iter().step_by(n / 10).take(10).copied().collect();
    for &id in &edited {
        a.service
            .write_store(move |s| {
                s.edit(
                    id,
                    &MemoryEdit {
                        title: Some(format!("edited {id}")),
                        ..MemoryEdit::default()
                    },
                )
                .expect("edit")
            })
            .expect("store");
    }
    wait("incremental sync", || {
        edited.iter().all(|id| {
            let want = a.service.read_store(|s| s.heads(*id).expect("heads"));
            b.service.read_store(|s| s.heads(*id).expect("heads")) == want
        })
    });
    let incremental = started.elapsed();
    let (sent_a2, recv_a2) = bytes(&a);

    // Change-to-visible latency.
    let mut latencies = Vec::with_capacity(edits);
    for i in 0..edits {
        let id = ids[(i * 7919) % n];
        let started = Instant::now();
        let want = retitle(&a, id, format!("latency {i}"));
        wait("an edit", || {
            b.service.read_store(|s| s.heads(id).expect("heads")) == want
        });
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // Incremental after a reconnect: B is away while A edits 10.
    runtime
        .block_on(b.network.disconnect(&a.did))
        .expect("disconnect");
    wait("B disconnected", || {
        b.network.peers().iter().all(|p| !p.connected)
    });
    let edited: Vec<MemoryId> = ids
        .iter()
        .skip(3)
        .step_by(n / 10)
        .take(10)
        .copied()
        .collect();
    for &id in &edited {
        a.service
            .write_store(move |s| {
                s.edit(
                    id,
                    &MemoryEdit {
                        title: Some(format!("edited while away {id}")),
                        ..MemoryEdit::default()
                    },
                )
                .expect("edit")
            })
            .expect("store");
    }
    let (sent_a3, recv_a3) = bytes(&a);
    let started = Instant::now();
    runtime
        .block_on(b.network.dial(a.network.dial_address().expect("addr")))
        .expect("dial");
    wait("sync after reconnect", || {
        edited.iter().all(|id| {
            let want = a.service.read_store(|s| s.heads(*id).expect("heads"));
            b.service.read_store(|s| s.heads(*id).expect("heads")) == want
        })
    });
    let reconnect = started.elapsed();
    let (sent_a4, recv_a4) = bytes(&a);
    let session = a.network.peers().into_iter().next().expect("B");

    // Restarts: B's network stops (closing its connections, as a stopping node does) and
    // starts again on a new port, dialing A as a restarted node dials its saved peers; A
    // edits a memory at once. The time from the stop to B holding the edit, each time.
    let restarts: usize = std::env::var("MNEMON_SYNC_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut restart_ms = Vec::with_capacity(restarts);
    let mut b_network = b.network.clone();
    for r in 0..restarts {
        let started = Instant::now();
        runtime.block_on(b_network.shutdown());
        b_network = runtime
            .block_on(Network::start(
                b.service.writer().clone(),
                &b.keypair,
                net_config(vec![a.network.dial_address().expect("addr")]),
            ))
            .expect("restart");
        let id = ids[(r * 104_729) % n];
        let want = retitle(&a, id, format!("after restart {r}"));
        wait("the first change after a restart", || {
            b.service.read_store(|s| s.heads(id).expect("heads")) == want
        });
        restart_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    restart_ms.sort_by(f64::total_cmp);

    // Idle: nothing changes on either side for a while; what crosses the wire is the
    // resyncs' cost (the session's default resync interval, 60 s).
    let idle_secs: u64 = std::env::var("MNEMON_SYNC_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    // (The last restart's session compares summaries after its edit arrived: not idle.)
    settled([&a.network, &b_network]);
    let (idle_sent_before, idle_recv_before) = bytes(&a);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (idle_sent_after, idle_recv_after) = bytes(&a);
    let per_minute = |bytes: u64| bytes as f64 * 60.0 / idle_secs as f64;

    // The bulk baseline: the initial sync's bytes over bare quinn.
    let bulk_bytes = sent_a + recv_a;
    let bare = runtime.block_on(bare_quic(bulk_bytes));

    println!(
        "{}",
        serde_json::json!({
            "data": format!("{n} short generated notes (~100 bytes of text each), one collection, built-in embedder"),
            "initial_sync": {
                "seconds": initial.as_secs_f64(),
                "memories_per_sec": n as f64 / initial.as_secs_f64(),
                "bytes_a_sent": sent_a,
                "bytes_a_received": recv_a,
                "collection_change_bytes": change_bytes,
                "wire_over_collection": sent_a as f64 / change_bytes as f64,
                "messages_a_sent": initial_session.sent,
                "messages_a_received": initial_session.received,
            },
            "incremental_10_of_n": {
                "seconds": incremental.as_secs_f64(),
                "bytes_a_sent": sent_a2 - settled_sent,
                "bytes_a_received": recv_a2 - settled_recv,
            },
            "incremental_10_of_n_after_reconnect": {
                "seconds": reconnect.as_secs_f64(),
                "bytes_a_sent": sent_a4 - sent_a3,
                "bytes_a_received": recv_a4 - recv_a3,
                "messages_a_sent": session.sent,
                "messages_a_received": session.received,
            },
            "idle": {
                "seconds": idle_secs,
                "bytes_per_minute_a_sent": per_minute(idle_sent_after - idle_sent_before),
                "bytes_per_minute_a_received": per_minute(idle_recv_after - idle_recv_before),
            },
            "bulk_vs_bare_quic": {
                "bytes": bulk_bytes,
                "sync_seconds": initial.as_secs_f64(),
                "bare_quinn_seconds": bare.as_secs_f64(),
                "sync_mb_per_sec": bulk_bytes as f64 / initial.as_secs_f64() / 1e6,
                "bare_quinn_mb_per_sec": bulk_bytes as f64 / bare.as_secs_f64() / 1e6,
                "sync_over_bare_throughput": bare.as_secs_f64() / initial.as_secs_f64(),
            },
            "restart_to_first_change_ms": {
                "restarts": restarts,
                "p50": restart_ms.get(restarts / 2),
                "p99": (!restart_ms.is_empty()).then(|| percentile(&restart_ms, 0.99)),
                "max": restart_ms.last(),
                "goal_p99": 2000,
            },
            "change_to_visible_ms": {
                "edits": edits,
                "p50": percentile(&latencies, 0.5),
                "p99": percentile(&latencies, 0.99),
                "max": latencies.last(),
            },
        })
    );
}

/// Sends `bytes` over a bare quinn connection on 127.0.0.1 (self-signed certificate, one
/// unidirectional stream, 64 KiB writes) and returns the time until the receiver has read
/// them all.
async fn bare_quic(bytes: u64) -> Duration {
    use quinn::rustls;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let server_config =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).expect("server config");
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().expect("addr"))
        .expect("server");
    let addr = server.local_addr().expect("addr");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    client.set_default_client_config(
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config"),
    );
    let receiver = tokio::spawn(async move {
        let connection = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("accept");
        let mut stream = connection.accept_uni().await.expect("stream");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        while let Some(n) = stream.read(&mut buf).await.expect("read") {
            total += n as u64;
        }
        (total, Instant::now())
    });
    let started = Instant::now();
    let connection = client
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let mut stream = connection.open_uni().await.expect("stream");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await.expect("write");
        left -= n as u64;
    }
    stream.finish().expect("finish");
    let (total, done) = receiver.await.expect("receiver");
    assert_eq!(total, bytes);
    connection.close(0u32.into(), b"done");
    done - started
}
