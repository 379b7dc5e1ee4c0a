//! Federation with real nodes: libp2p over QUIC on 127.0.0.1, real stores, the sync
//! protocol end to end. In one process ([`TestNet`]) and as real `mnemon serve` processes.

use std::time::Duration;

use mnemon_api::{
    CreateMemory, ErrorKind, InviteRequest, JoinRequest, PatchMemory, Role, SearchQuery,
    ShareRequest, SyncState,
};
use mnemon_tests::{Served, TestCli, TestNet, count_in_files, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn share(net: &TestNet, owner: usize, collection: &str, member: usize, role: Role) {
    net.api(owner)
        .share(
            collection,
            ShareRequest {
                did: net.nodes[member].did.to_string(),
                role,
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
    share(&net, 0, &family.id, 1, Role::Write);
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
            mode: Some(mnemon_api::SearchMode::Keyword),
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
    // A text above 64 KiB, kept beside its document, travels with the change that set it,
    // both ways.
    let long = |word: &str| format!("{word} of the long diary ").repeat(4_000);
    let big = a.create(note(&long("page"), &family.id)).expect("add long");
    assert!(big.content == long("page"));
    eventually("B receives the long memory", WAIT, || {
        b.get(&big.id).is_ok_and(|v| v.content == long("page"))
    });
    b.update(
        &big.id,
        PatchMemory {
            content: Some(long("leaf")),
            ..PatchMemory::default()
        },
    )
    .expect("rewrite on B");
    eventually("A sees B's long rewrite", WAIT, || {
        a.get(&big.id).is_ok_and(|v| v.content == long("leaf"))
    });
    // Both see each other as peers syncing the collection.
    let peers = a.peers().expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].did, net.nodes[1].did.to_string());
    assert!(peers[0].connected);
    assert_eq!(peers[0].collections, std::slice::from_ref(&family.id));
    eventually("A shows the collection in sync with B", WAIT, || {
        a.peers().is_ok_and(|p| {
            p[0].sync.len() == 1
                && p[0].sync[0].collection == family.id
                && p[0].sync[0].state == SyncState::InSync
        })
    });

    // Forgetting a memory's history reaches the peer: the old id and every earlier text
    // go from both nodes' files, and what the memory says now stays, under a new id.
    // Upper-case letters the new text lacks: the text diff keeps them in one run.
    let code = a
        .create(note("alarm code QZXJWQZXJW", &family.id))
        .expect("add");
    a.update(
        &code.id,
        PatchMemory {
            content: Some("alarm code 2468".into()),
            ..PatchMemory::default()
        },
    )
    .expect("edit");
    eventually("B has the new code", WAIT, || {
        b.get(&code.id)
            .is_ok_and(|v| v.content == "alarm code 2468")
    });
    assert!(count_in_files(net.data_dir(1), b"QZXJWQZXJW") > 0);
    let fresh = a.forget_history(&code.id).expect("forget history");
    assert_eq!(fresh.content, "alarm code 2468");
    eventually(
        "B has the rewritten memory and not the old one",
        WAIT,
        || b.get(&fresh.id).is_ok() && b.get(&code.id).is_err(),
    );
    for node in 0..2 {
        eventually("no file holds the earlier text", WAIT, || {
            count_in_files(net.data_dir(node), b"QZXJWQZXJW") == 0
        });
    }

    // The owner renames the collection: the member shows the new name, and may not
    // rename it itself.
    a.rename_collection(&family.id, "Household")
        .expect("rename");
    eventually("B shows the new name", WAIT, || {
        b.collections().is_ok_and(|cs| {
            cs.iter()
                .any(|c| c.id == family.id && c.name == "Household")
        })
    });
    let refused = b
        .rename_collection(&family.id, "Mine")
        .expect_err("a member renames");
    assert!(refused.message.contains("only the owner"), "{refused:?}");
    // A private note moved into the shared collection reaches B, without the versions
    // it had while private.
    a.update(
        &private.id,
        PatchMemory {
            content: Some("my diary, fit to share".into()),
            ..PatchMemory::default()
        },
    )
    .expect("edit");
    let moved = a.move_memory(&private.id, "Household").expect("move");
    eventually("B receives the moved memory", WAIT, || {
        b.get(&moved.id)
            .is_ok_and(|v| v.content == "my diary, fit to share")
    });
    assert_eq!(count_in_files(net.data_dir(1), b"my private diary"), 0);
    // Shared, the collection is not deleted: its members' copies would stay.
    let refused = a
        .delete_collection(&family.id)
        .expect_err("deleting a shared collection");
    assert!(refused.message.contains("revoke"), "{refused:?}");
}

#[test]
fn outsiders_get_nothing_readers_cannot_write_and_revoked_readers_get_nothing_new() {
    // A owns; B reads; C is connected to both but never invited.
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Read);
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
        for kind in [
            "summary", "heads", "have", "changes", "acl", "offer", "members",
        ] {
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
    assert_eq!(err.kind, ErrorKind::Forbidden, "{err}");

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
fn a_member_revoked_while_away_learns_it_when_it_returns() {
    let net = TestNet::new(2);
    let (a, b) = (net.api(0), net.api(1));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Write);
    net.connect(1, 0);
    let m = a.create(note("shared before", &family.id)).expect("add");
    eventually("B receives the memory", WAIT, || b.get(&m.id).is_ok());
    let access = |node: &dyn mnemon_api::Api| {
        node.collections()
            .expect("collections")
            .into_iter()
            .find(|c| c.id == family.id)
            .map(|c| c.access)
    };
    assert_eq!(access(b).as_deref(), Some("write"));
    net.runtime
        .block_on(net.nodes[1].network.disconnect(&net.nodes[0].did))
        .expect("disconnect");
    eventually("B is away", WAIT, || {
        b.peers().is_ok_and(|p| p.iter().all(|p| !p.connected))
    });
    // While B is away: A revokes B, then shares another collection with someone else,
    // which B must not learn of.
    a.unshare(&family.id, &net.nodes[1].did.to_string())
        .expect("revoke");
    a.share(
        &family.id,
        ShareRequest {
            did: mnemon_identity::Keypair::generate().did().to_string(),
            role: Role::Read,
        },
    )
    .expect("share with a third");
    assert_eq!(access(b).as_deref(), Some("write"), "B has not heard yet");
    net.connect(1, 0);
    eventually("B learns it was removed", WAIT, || {
        access(b).as_deref() == Some("none")
    });
    // B's own writes there are refused now, by B itself.
    let err = b
        .create(note("written after the revocation", &family.id))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden, "{err}");
    // B learnt the log up to its revocation, not what A did after it (the share with a
    // third node would show among the members).
    let members = b.members(&family.id).expect("members");
    assert!(members.is_empty(), "{members:?}");
}

#[test]
fn a_members_relays_the_owners_changes_while_the_owner_is_offline() {
    // A owns and shares with B and C; C meets A once (to join), then only B.
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Write);
    share(&net, 0, &family.id, 2, Role::Write);
    net.connect(2, 0);
    eventually("C joins the collection", WAIT, || {
        c.collections()
            .is_ok_and(|cs| cs.iter().any(|col| col.id == family.id))
            && c.members(&family.id).is_ok_and(|m| m.len() == 2)
    });
    net.runtime
        .block_on(net.nodes[2].network.disconnect(&net.nodes[0].did))
        .expect("disconnect");
    eventually("C is no longer connected to A", WAIT, || {
        c.peers().is_ok_and(|p| p.iter().all(|p| !p.connected))
    });
    net.connect(1, 0);
    let m = a
        .create(note("the owner wrote this", &family.id))
        .expect("add");
    eventually("B receives it", WAIT, || b.get(&m.id).is_ok());
    // A goes offline; C meets B only.
    net.runtime.block_on(net.nodes[0].network.shutdown());
    assert!(c.get(&m.id).is_err(), "C got it before meeting B");
    net.connect(2, 1);
    eventually("C receives A's memory through B", WAIT, || {
        c.get(&m.id).is_ok()
    });
    assert_eq!(
        c.get(&m.id).expect("get").author,
        net.nodes[0].did.to_string(),
        "C holds A's change, signed by A"
    );
    let verified = net.nodes[2]
        .service
        .read_store(|s| s.verify_all())
        .expect("every stored signature verifies");
    assert!(verified >= 1);
}

#[test]
fn concurrent_edits_of_the_same_words_are_marked_on_both_and_settled_by_one() {
    let net = TestNet::new(2);
    let (a, b) = (net.api(0), net.api(1));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Write);
    net.connect(1, 0);
    let m = a
        .create(note("Dentist on Wednesday at 10:30", &family.id))
        .expect("add");
    eventually("B receives it", WAIT, || b.get(&m.id).is_ok());
    net.runtime
        .block_on(net.nodes[1].network.disconnect(&net.nodes[0].did))
        .expect("disconnect");
    eventually("apart", WAIT, || {
        b.peers().is_ok_and(|p| p.iter().all(|p| !p.connected))
    });
    let edit = |node: &dyn mnemon_api::Api, text: &str| {
        node.update(
            &m.id,
            PatchMemory {
                content: Some(text.into()),
                ..PatchMemory::default()
            },
        )
        .expect("edit");
    };
    edit(a, "Dentist on Tuesday at 9:15");
    edit(b, "Dentist on Thursday at 16:00");
    net.connect(1, 0);
    for (name, node, ours) in [
        ("A", a, "Dentist on Tuesday at 9:15"),
        ("B", b, "Dentist on Thursday at 16:00"),
    ] {
        eventually(&format!("{name} marks the conflict"), WAIT, || {
            node.get(&m.id)
                .is_ok_and(|v| v.conflict.as_ref().is_some_and(|c| c.ours == ours))
        });
    }
    // A memory without a conflict cannot be "resolved".
    let calm = a.create(note("no conflict here", &family.id)).expect("add");
    assert_eq!(
        a.resolve_conflict(&calm.id, true).unwrap_err().kind,
        ErrorKind::Invalid
    );
    // A keeps B's version; both settle on it.
    // While both versions stand, neither a move nor forgetting the history (each keeps
    // only one) is allowed.
    for refused in [
        a.forget_history(&m.id)
            .expect_err("forget while conflicted"),
        a.move_memory(&m.id, &family.id)
            .expect_err("move while conflicted"),
    ] {
        assert_eq!(refused.kind, mnemon_api::ErrorKind::Conflict, "{refused:?}");
        assert!(refused.message.contains("mnemon resolve"), "{refused:?}");
    }
    let kept = a.resolve_conflict(&m.id, true).expect("resolve");
    assert_eq!(kept.content, "Dentist on Thursday at 16:00");
    for (name, node) in [("A", a), ("B", b)] {
        eventually(&format!("{name} is settled"), WAIT, || {
            node.get(&m.id)
                .is_ok_and(|v| v.conflict.is_none() && v.content == "Dentist on Thursday at 16:00")
        });
    }
}

#[test]
fn members_who_only_met_the_owner_meet_each_other_and_sync_while_it_is_away() {
    // B and C are members; each dials only A. A introduces them to each other.
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Write);
    share(&net, 0, &family.id, 2, Role::Write);
    net.connect(1, 0);
    net.connect(2, 0);
    let connected_to = |node: &dyn mnemon_api::Api, other: usize| {
        node.peers().is_ok_and(|p| {
            p.iter()
                .any(|p| p.did == net.nodes[other].did.to_string() && p.connected)
        })
    };
    eventually("B and C meet, introduced by A", WAIT, || {
        connected_to(b, 2) && connected_to(c, 1)
    });
    // Each member has A's signed log up to both grants before A leaves: B may write, and
    // each knows the other is a member.
    let knows_both = |node: &dyn mnemon_api::Api| {
        node.members(&family.id).is_ok_and(|members| {
            [1, 2].iter().all(|&i| {
                members
                    .iter()
                    .any(|m| m.did == net.nodes[i].did.to_string() && m.role == Role::Write)
            })
        })
    };
    eventually("B and C have both grants", WAIT, || {
        knows_both(b) && knows_both(c)
    });
    // A goes away; what B writes reaches C directly.
    net.runtime.block_on(net.nodes[0].network.shutdown());
    let m = b
        .create(note("written while the owner was away", &family.id))
        .expect("add");
    eventually("C receives B's memory from B", WAIT, || {
        c.get(&m.id).is_ok()
    });
}

#[test]
fn an_invite_ticket_lets_one_node_join_once_and_expired_or_forged_tickets_are_refused() {
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    let m = a
        .create(note("Sunday lunch at noon", &family.id))
        .expect("add");
    let invite = a
        .invite(
            &family.id,
            InviteRequest {
                role: Some(Role::Write),
                expires_in_secs: Some(600),
            },
        )
        .expect("invite");
    assert!(invite.ticket.starts_with("mnemon1"));
    assert_eq!(invite.addresses, 1, "the ticket carries A's address");
    // B joins with the ticket alone: it dials A from the ticket's address.
    let joined = b
        .join(JoinRequest {
            ticket: invite.ticket.clone(),
        })
        .expect("join");
    assert_eq!(
        (joined.collection.as_str(), joined.dialing),
        (family.id.as_str(), 1)
    );
    eventually("B receives the collection's memory", WAIT, || {
        b.get(&m.id).is_ok()
    });
    assert_eq!(
        a.members(&family.id).expect("members")[0].did,
        net.nodes[1].did.to_string()
    );
    // B wrote with the role the ticket granted.
    b.update(
        &m.id,
        PatchMemory {
            title: Some("Lunch".into()),
            ..PatchMemory::default()
        },
    )
    .expect("B writes");
    eventually("A sees B's edit", WAIT, || {
        a.get(&m.id).is_ok_and(|v| v.title == "Lunch")
    });

    // The same ticket is single-use: C gets nothing with it.
    c.join(JoinRequest {
        ticket: invite.ticket.clone(),
    })
    .expect("C keeps the ticket");
    let c_did = net.nodes[2].did.to_string();
    eventually("A refuses C's redeem", WAIT, || {
        net.nodes[0].network.peers().iter().any(|p| {
            p.did == c_did
                && p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("used already"))
        })
    });
    assert!(c.get(&m.id).is_err());
    assert_eq!(a.members(&family.id).expect("members").len(), 1);
    // C is told: the join is dropped and the refusal shows in its status.
    eventually("C learns its invite was refused", WAIT, || {
        c.status().is_ok_and(|s| {
            s["joins"]["refused"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["collection"] == family.id.as_str()
                        && r["reason"]
                            .as_str()
                            .is_some_and(|e| e.contains("used already"))
                })
            })
        })
    });
    let status = c.status().expect("status");
    assert_eq!(
        status["joins"]["pending"],
        serde_json::json!([]),
        "{status}"
    );

    // Expired, damaged and self-made tickets are refused at once with a reason.
    let expired = a
        .invite(
            &family.id,
            InviteRequest {
                role: None,
                expires_in_secs: Some(1),
            },
        )
        .expect("invite");
    std::thread::sleep(Duration::from_millis(1100));
    let err = c
        .join(JoinRequest {
            ticket: expired.ticket,
        })
        .unwrap_err();
    assert!(err.message.contains("expired"), "{err}");
    let mut damaged = invite.ticket.clone();
    damaged.replace_range(20..21, if &damaged[20..21] == "a" { "b" } else { "a" });
    let err = c.join(JoinRequest { ticket: damaged }).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    let err = a
        .join(JoinRequest {
            ticket: invite.ticket,
        })
        .unwrap_err();
    assert!(err.message.contains("made by this node"), "{err}");
}

#[test]
fn two_mnemon_serve_processes_sync_a_shared_collection() {
    let a = TestCli::new();
    let b = TestCli::new();
    a.init();
    b.init();
    let b_did = b.run(&["id"]).ok().to_owned();
    let sa = Served::start_p2p(&a, &[]);
    let sb = Served::start_p2p(&b, &[]);
    let collection = a.run(&["collection", "new", "shared"]).ok().to_owned();
    // A invites; B joins with the ticket, which carries A's address.
    let ticket = a
        .run(&["invite", "shared", "--role", "write", "--expires", "1h"])
        .ok()
        .to_owned();
    let joined = b.run(&["join", &ticket]).ok().to_owned();
    assert!(joined.starts_with("joining"), "{joined}");
    assert!(joined.contains(&format!("joined {collection}")), "{joined}");
    // The ticket is used: another node's join waits for the owner's answer, and fails.
    let c = TestCli::new();
    c.init();
    let sc = Served::start_p2p(&c, &[]);
    c.run(&["join", &ticket])
        .fails_with("the owner refused the invite: invite refused: it was used already");
    assert!(c.run(&["status"]).ok().contains("refused:"));
    sc.stop();
    eventually("A's node records B as a member", WAIT, || {
        a.run(&["collection", "members", "shared", "--json"])
            .json()
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
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
    // B finds it with its own search.
    let hits = b.run(&["search", "plumber", "--json"]).json();
    assert_eq!(hits[0]["id"], id.as_str());
    let peers = a.run(&["peers", "--json"]).json();
    let peer_b = |peers: &serde_json::Value| {
        peers
            .as_array()
            .and_then(|p| p.iter().find(|p| p["did"] == b_did.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    let b_seen = peer_b(&peers);
    assert_eq!(b_seen["collections"][0], collection.as_str(), "{peers}");
    assert_eq!(b_seen["sync"][0]["collection_name"], "shared");
    // For people: headers, the collection's name, each node itself as "this node".
    let shown = a.run(&["peers"]).ok().to_owned();
    assert!(shown.starts_with("PEER"), "{shown}");
    assert!(shown.contains("  shared "), "{shown}");
    let a_did = a.run(&["id"]).ok().to_owned();
    for (node, me) in [(&a, &a_did), (&b, &b_did)] {
        let members = node
            .run(&["collection", "members", &collection, "--json"])
            .json();
        for m in members.as_array().expect("members") {
            assert_eq!(m["this_node"] == true, m["did"] == me.as_str(), "{members}");
        }
        let shown = node
            .run(&["collection", "members", &collection])
            .ok()
            .to_owned();
        assert!(shown.starts_with("MEMBER"), "{shown}");
        if shown.contains(me.as_str()) {
            assert!(shown.contains("this node"), "{shown}");
        }
    }
    let members_b = b
        .run(&["collection", "members", &collection, "--json"])
        .json();
    assert!(
        members_b
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["this_node"] == true)),
        "B is a member of the collection it joined: {members_b}"
    );
    // Sharing with a DID this node has never met (a typo, say) warns; a known one does not.
    let stranger = TestCli::new();
    let stranger_did = stranger.init();
    let run = a.run(&["share", "shared", &stranger_did]);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stderr.contains("never met"), "{}", run.stderr);
    let run = a.run(&["share", "shared", &b_did, "--role", "write"]);
    assert!(run.success && run.stderr.is_empty(), "{}", run.stderr);
    a.run(&["unshare", "shared", &stranger_did]).ok();

    // B restarts with no address given: it dials A from its saved peer table and catches
    // up with what A wrote meanwhile. Stopping closes B's connections, so A knows at once
    // (not after QUIC's idle timeout of 10 s).
    sb.stop();
    let stopped = std::time::Instant::now();
    eventually("A sees B gone", WAIT, || {
        peer_b(&a.run(&["peers", "--json"]).json())["connected"] == false
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "A learned B had stopped only after {:?}",
        stopped.elapsed()
    );
    let later = a
        .run(&["add", "--collection", "shared", "the boiler was serviced"])
        .ok()
        .to_owned();
    let sb = Served::start_p2p(&b, &[]);
    let deadline = std::time::Instant::now() + WAIT;
    while !b.run(&["get", &later]).success {
        if std::time::Instant::now() > deadline {
            let peers_b = b.run(&["peers", "--json"]).stdout.clone();
            let peers_a = a.run(&["peers", "--json"]).stdout.clone();
            let saved =
                std::fs::read_to_string(b.data_dir().join("peers.json")).unwrap_or_default();
            let log_b = sb.stop();
            let log_a = sa.stop();
            panic!(
                "B did not catch up after its restart.\nB peers: {peers_b}\nA peers: {peers_a}\nB peers.json: {saved}\nB log: {log_b}\nA log: {log_a}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sb.stop();
    sa.stop();
}

/// A node killed with `kill -9` leaves its peer a connection that looks alive. When it
/// comes back, the session must open on the new connection at once, not wait for the dead
/// one to time out (QUIC's idle timeout, 10 s).
#[test]
fn a_peer_killed_and_restarted_syncs_again_at_once() {
    let (x, y) = (TestCli::new(), TestCli::new());
    x.init();
    y.init();
    let (sx, sy) = (Served::start_p2p(&x, &[]), Served::start_p2p(&y, &[]));
    // Peer ids order the pair: the smaller opens the sessions, and it is the one left
    // holding the dead connection. It survives; the larger is killed.
    let key = |s: &Served| {
        let id = s.peer_id().expect("peer id").to_owned();
        (id.len(), id)
    };
    let (survivor, victim, victim_served, survivor_served) = if key(&sx) < key(&sy) {
        (&x, &y, sy, sx)
    } else {
        (&y, &x, sx, sy)
    };
    survivor.run(&["collection", "new", "shared"]).ok();
    let ticket = survivor
        .run(&["invite", "shared", "--expires", "1h"])
        .ok()
        .to_owned();
    victim.run(&["join", &ticket]).ok();
    let first = survivor
        .run(&["add", "--collection", "shared", "before the crash"])
        .ok()
        .to_owned();
    eventually("the member receives the first memory", WAIT, || {
        victim.run(&["get", &first]).success
    });
    // Its peer table is on disk (saved every 2 s), so it knows whom to dial when back.
    eventually("the member saves its peer table", WAIT, || {
        std::fs::read_to_string(victim.data_dir().join("peers.json"))
            .is_ok_and(|t| t.contains(survivor_served.peer_id().expect("peer id")))
    });
    victim_served.kill();
    let restarted = Served::start_p2p(victim, &[]);
    let started = std::time::Instant::now();
    let later = survivor
        .run(&["add", "--collection", "shared", "after the restart"])
        .ok()
        .to_owned();
    eventually("the restarted member receives the new memory", WAIT, || {
        victim.run(&["get", &later]).success
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the first change reached the restarted node after {took:?}"
    );
    restarted.stop();
    survivor_served.stop();
}

/// Two nodes on random ports that both restart find each other again: each listens on
/// the port it had, where the other's peer table looks. A `--peer` that cannot be reached
/// at start is dialed again until it can.
#[test]
fn nodes_that_both_restart_meet_again_and_an_unreachable_peer_is_retried() {
    let (a, b) = (TestCli::new(), TestCli::new());
    a.init();
    b.init();
    let (sa, sb) = (Served::start_p2p(&a, &[]), Served::start_p2p(&b, &[]));
    a.run(&["collection", "new", "shared"]).ok();
    let ticket = a
        .run(&["invite", "shared", "--expires", "1h"])
        .ok()
        .to_owned();
    b.run(&["join", &ticket]).ok();
    let first = a
        .run(&["add", "--collection", "shared", "before both restart"])
        .ok()
        .to_owned();
    eventually("B receives the first memory", WAIT, || {
        b.run(&["get", &first]).success
    });
    let a_p2p = sa.p2p.clone().expect("p2p address");
    for node in [&a, &b] {
        eventually("the peer table is saved", WAIT, || {
            std::fs::read_to_string(node.data_dir().join("peers.json"))
                .is_ok_and(|t| t.contains("listen_addrs") && t.contains("quic"))
        });
    }
    sa.stop();
    sb.stop();
    // B comes back first, A later: B's dials of A's old address fail, and go on.
    let sb = Served::start_p2p(&b, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let sa = Served::start_p2p(&a, &[]);
    assert_eq!(sa.p2p.as_deref(), Some(a_p2p.as_str()), "A kept its port");
    let later = a
        .run(&["add", "--collection", "shared", "after both restarted"])
        .ok()
        .to_owned();
    eventually("B receives what A wrote after both restarted", WAIT, || {
        b.run(&["get", &later]).success
    });
    sb.stop();

    // A `--peer` that is down at start is dialed again once it is up.
    let c = TestCli::new();
    c.init();
    sa.stop();
    let sc = Served::start_p2p(&c, &["--peer", &a_p2p]);
    // Longer than QUIC's handshake timeout (5 s): the first dial has failed for good.
    std::thread::sleep(Duration::from_secs(6));
    let sa = Served::start_p2p(&a, &[]);
    let c_did = c.run(&["id"]).ok().to_owned();
    eventually("A sees C, which dialed it again", WAIT, || {
        a.run(&["peers", "--json"])
            .json()
            .as_array()
            .is_some_and(|p| {
                p.iter()
                    .any(|p| p["did"] == c_did.as_str() && p["connected"] == true)
            })
    });
    sc.stop();

    // A peer dialed at runtime, through the running service.
    let d = TestCli::new();
    let d_did = d.init();
    d.run(&["dial", &a_p2p])
        .fails_with("federation is not running");
    let sd = Served::start_p2p(&d, &[]);
    d.run(&["dial", "not-an-address"])
        .fails_with("not a multiaddr");
    assert!(d.run(&["dial", &a_p2p]).ok().starts_with("dialing"));
    eventually("A sees D, which dialed it", WAIT, || {
        a.run(&["peers", "--json"])
            .json()
            .as_array()
            .is_some_and(|p| {
                p.iter()
                    .any(|p| p["did"] == d_did.as_str() && p["connected"] == true)
            })
    });
    sd.stop();
    sa.stop();
}

#[test]
fn forged_garbage_and_oversized_input_from_a_member_is_refused_and_the_node_stays_up() {
    use mnemon_protocol::{DocChanges, Message, encode_frame};
    // A owns and shares with B and C (writers); B turns hostile towards C.
    let net = TestNet::new(3);
    let (a, b, c) = (net.api(0), net.api(1), net.api(2));
    let family = a.create_collection("family").expect("collection");
    share(&net, 0, &family.id, 1, Role::Write);
    share(&net, 0, &family.id, 2, Role::Write);
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(2, 1);
    let m = a
        .create(note("the spare key is under the mat", &family.id))
        .expect("add");
    let b_did = net.nodes[1].did.to_string();
    let c_view_of_b = || {
        net.nodes[2]
            .network
            .peers()
            .into_iter()
            .find(|p| p.did == b_did)
    };
    eventually("C syncs the collection with B", WAIT, || {
        c.get(&m.id).is_ok()
            && c_view_of_b().is_some_and(|p| p.connected && p.collections.contains(&family.id))
    });
    eventually("A and C agree", WAIT, || {
        net.nodes[0].network.peers().iter().all(|p| {
            p.sync
                .iter()
                .all(|s| s.state == mnemon_node::net::SyncPhase::InSync)
                && !p.sync.is_empty()
        })
    });
    // A shows each member's state with the collection.
    for member in a.members(&family.id).expect("members") {
        let sync = member.sync.expect("A has met every member");
        assert_eq!(sync.state, SyncState::InSync, "{sync:?}");
    }

    let send = |message: Message| {
        let mut frame = Vec::new();
        encode_frame(&message.encode(), &mut frame).expect("frame");
        assert!(
            net.nodes[1].network.send_raw(&net.nodes[2].did, frame),
            "B has a session with C"
        );
    };
    let memory: mnemon_crdt::MemoryId = m.id.parse().expect("memory id");
    let collection: mnemon_crdt::CollectionId = family.id.parse().expect("collection id");

    // 1. A change in A's name, signed by B: C refuses it and says so.
    let history = net.nodes[1]
        .service
        .read_store(|s| s.signed_changes(memory))
        .expect("history");
    let forged = mnemon_protocol::sim::change_as(
        &history,
        &net.nodes[0].did,
        &net.nodes[1].keypair,
        "forged by B",
    );
    send(Message::Changes {
        collection: collection.to_u128(),
        docs: vec![DocChanges {
            memory: memory.to_u128(),
            changes: vec![forged],
        }],
    });
    // The state may be back to in sync at once (a later comparison agrees: C never took
    // the change), but the refusal stays on show with the collection.
    eventually(
        "C shows the refusal with the collection's state with B",
        WAIT,
        || {
            c_view_of_b().is_some_and(|p| {
                p.sync.iter().any(|s| {
                    s.collection == family.id
                        && s.last_refused
                            .as_deref()
                            .is_some_and(|d| d.contains("does not match its author"))
                })
            })
        },
    );
    assert_eq!(
        c.get(&m.id).expect("get").title,
        "the spare key is under the mat"
    );

    // 2. Garbage inside a well-formed frame: refused, and the session goes on: B's next
    // honest edit still comes straight from B.
    let mut garbage = Vec::new();
    encode_frame(&[0xff; 64], &mut garbage).expect("frame");
    assert!(
        net.nodes[1]
            .network
            .send_raw(&net.nodes[2].did, garbage.clone())
    );
    // (Sent again every second until C shows it: on a loaded machine the session B wrote
    // it on may have just been replaced by a newer one, which C reads instead.)
    let mut polls = 0u32;
    eventually("C refused the garbage", WAIT, || {
        polls += 1;
        if polls.is_multiple_of(20) {
            net.nodes[1]
                .network
                .send_raw(&net.nodes[2].did, garbage.clone());
        }
        c_view_of_b().is_some_and(|p| {
            p.last_error
                .as_deref()
                .is_some_and(|e| e.contains("undecodable"))
        })
    });
    let changes_from_b = c_view_of_b()
        .and_then(|p| p.received.get("changes").copied())
        .unwrap_or(0);
    b.update(
        &m.id,
        PatchMemory {
            title: Some("Spare key".into()),
            ..PatchMemory::default()
        },
    )
    .expect("honest edit on B");
    eventually("C receives B's honest edit from B", WAIT, || {
        c.get(&m.id).is_ok_and(|v| v.title == "Spare key")
            && c_view_of_b().is_some_and(|p| {
                p.connected && p.received.get("changes").copied().unwrap_or(0) > changes_from_b
            })
    });

    // 3. A frame announcing 4 GiB: C closes the session with the reason, and stays up.
    assert!(
        net.nodes[1]
            .network
            .send_raw(&net.nodes[2].did, vec![0xff, 0xff, 0xff, 0xff, 0])
    );
    eventually("C ends the session with B, saying why", WAIT, || {
        c_view_of_b().is_some_and(|p| {
            p.sync.iter().any(|s| {
                s.state == mnemon_node::net::SyncPhase::Offline
                    && s.detail
                        .as_deref()
                        .is_some_and(|d| d.contains("exceeds the limit"))
            })
        })
    });
    let later = a
        .create(note("still syncing with A", &family.id))
        .expect("add");
    eventually("C still syncs with A", WAIT, || c.get(&later.id).is_ok());

    // 4. The connection stayed up, so a new session is opened on it: with A gone, B's
    // next edit reaches C straight from B.
    net.runtime.block_on(net.nodes[0].network.shutdown());
    b.update(
        &m.id,
        PatchMemory {
            title: Some("Spare key, blue".into()),
            ..PatchMemory::default()
        },
    )
    .expect("B edits again");
    eventually(
        "C receives B's edit over a new session with B",
        WAIT,
        || c.get(&m.id).is_ok_and(|v| v.title == "Spare key, blue"),
    );
}
