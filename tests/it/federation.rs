//! Federation with real nodes: libp2p over QUIC on 127.0.0.1, real stores, the sync
//! protocol end to end. In one process ([`TestNet`]) and as real `mnemon serve` processes.

use std::time::Duration;

use mnemon_tests::{Served, TestCli, TestNet, eventually};
use mnemon_web::api::{CreateMemory, PatchMemory, SearchQuery, ShareRequest};

const WAIT: Duration = Duration::from_secs(60);

fn share(net: &TestNet, owner: usize, collection: &str, member: usize, role: &str) {
    net.api(owner)
        .share(
            collection,
            ShareRequest {
                did: net.nodes[member].did.to_string(),
                role: role.into(),
            },
        )
        .expect("share");
}

fn note(content: &str, collection: &str) -> CreateMemory {
    CreateMemory {
        content: content.into(),
        collection: Some(collection.into()),
        ..CreateMemory::default()
    }
}

#[test]
fn two_nodes_share_a_collection_and_edits_flow_both_ways_and_merge() {
    let net = TestNet::new(2);
    let (a, b) = (net.api(0), net.api(1));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, "write");
    let private = a
        .create(CreateMemory {
            content: "my private diary".into(),
            ..CreateMemory::default()
        })
        .expect("add");
    net.connect(1, 0);
    let m = a
        .create(note(
            "The spare key is under the blue flowerpot",
            &family.id,
        ))
        .expect("add");
    eventually("B receives the memory", WAIT, || b.get(&m.id).is_ok());
    // B can find it by its words.
    let hits = b
        .search(&SearchQuery {
            q: "flowerpot".into(),
            mode: Some("keyword".into()),
            ..SearchQuery::default()
        })
        .expect("search");
    assert_eq!(hits.first().map(|h| h.id.as_str()), Some(m.id.as_str()));
    // The private collection never left A.
    assert!(b.get(&private.id).is_err());
    assert_eq!(
        b.collections().expect("collections").len(),
        2,
        "B has its own default collection and family"
    );

    // B (a writer) edits; A sees it.
    b.update(
        &m.id,
        PatchMemory {
            title: Some("Spare key".into()),
            ..PatchMemory::default()
        },
    )
    .expect("edit on B");
    eventually("A sees B's edit", WAIT, || {
        a.get(&m.id).is_ok_and(|v| v.title == "Spare key")
    });

    // Concurrent edits of one memory merge on both.
    a.update(
        &m.id,
        PatchMemory {
            add_tags: vec!["home".into()],
            ..PatchMemory::default()
        },
    )
    .expect("edit on A");
    b.update(
        &m.id,
        PatchMemory {
            content: Some("The spare key is under the blue flowerpot, left of the door".into()),
            ..PatchMemory::default()
        },
    )
    .expect("edit on B");
    for (name, node) in [("A", a), ("B", b)] {
        eventually(&format!("{name} has both edits"), WAIT, || {
            node.get(&m.id).is_ok_and(|v| {
                v.tags.iter().any(|t| t == "home") && v.content.ends_with("left of the door")
            })
        });
    }
    // Both see each other as peers syncing the collection.
    let peers = a.peers().expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].did, net.nodes[1].did.to_string());
    assert!(peers[0].connected);
    assert_eq!(peers[0].collections, std::slice::from_ref(&family.id));
}

#[test]
fn outsiders_get_nothing_readers_cannot_write_and_revoked_readers_get_nothing_new() {
    // A owns; B reads; C is connected to both but never invited.
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, "read");
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(2, 1);
    let first = a
        .create(note("grandma's recipes", &family.id))
        .expect("add");
    eventually("the reader receives", WAIT, || b.get(&first.id).is_ok());
    eventually("C is connected to A and B", WAIT, || {
        c.peers()
            .is_ok_and(|p| p.iter().filter(|p| p.connected).count() == 2)
    });
    // C has nothing, and nothing naming the collection went to C: no session with C
    // has an active collection, and C received no summary, heads or changes.
    assert!(c.get(&first.id).is_err());
    assert_eq!(c.collections().expect("collections").len(), 1);
    for peer in c.peers().expect("peers") {
        assert!(peer.collections.is_empty(), "{peer:?}");
    }
    for node in [0, 1] {
        let info = net.nodes[node].network.peers();
        let to_c = info
            .iter()
            .find(|p| p.did == net.nodes[2].did.to_string())
            .expect("C is a peer");
        for kind in ["summary", "heads", "have", "changes", "acl", "offer"] {
            assert_eq!(to_c.sent.get(kind), None, "node {node} sent {kind} to C");
        }
    }

    // B, a reader, cannot write.
    let err = b
        .update(
            &first.id,
            PatchMemory {
                title: Some("mine".into()),
                ..PatchMemory::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.status, 403, "{err}");

    // After A revokes B, B receives nothing new.
    a.unshare(&family.id, &net.nodes[1].did.to_string())
        .expect("revoke");
    let later = a
        .create(note("after the revocation", &family.id))
        .expect("add");
    let probe_time = std::time::Instant::now();
    // Give a push every chance to arrive (it would within milliseconds on loopback).
    eventually("A's sessions settle", WAIT, || {
        probe_time.elapsed() > Duration::from_secs(3)
    });
    assert!(b.get(&later.id).is_err(), "the revoked reader received it");
    assert!(b.get(&first.id).is_ok(), "what B had stays");
}

#[test]
fn two_mnemon_serve_processes_sync_a_shared_collection() {
    let a = TestCli::new();
    let b = TestCli::new();
    a.init();
    b.init();
    let b_did = b.run(&["id"]).ok().to_owned();
    let sa = Served::start_p2p(&a, &[]);
    let a_addr = sa.p2p.clone().expect("A listens");
    let sb = Served::start_p2p(&b, &["--peer", &a_addr]);
    let collection = a.run(&["collection", "new", "shared"]).ok().to_owned();
    assert!(
        a.run(&["share", "shared", &b_did, "--role", "write"])
            .ok()
            .starts_with("shared shared with")
    );
    let members = a.run(&["collection", "members", "shared", "--json"]).json();
    assert_eq!(members[0]["did"], b_did.as_str());
    assert_eq!(members[0]["role"], "write");
    let id = a
        .run(&[
            "add",
            "--collection",
            "shared",
            "plumber's number is 555-0100",
        ])
        .ok()
        .to_owned();
    eventually("B receives the memory", WAIT, || {
        b.run(&["get", &id]).success
    });
    b.run(&["edit", &id, "--title", "Plumber"]).ok();
    eventually("A sees B's edit", WAIT, || {
        a.run(&["get", &id, "--json"]).json()["title"] == "Plumber"
    });
    let peers = a.run(&["peers", "--json"]).json();
    assert_eq!(peers[0]["did"], b_did.as_str());
    assert_eq!(peers[0]["collections"][0], collection.as_str());
    sb.stop();
    sa.stop();
}
