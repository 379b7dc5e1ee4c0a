//! Capability tokens on a real `mnemon serve`: a token sees only its collections (the
//! rest do not exist for it, as over federation), writes only if it may, and stops the
//! moment it is revoked or expires — over the HTTP API, the web UI and MCP alike.

use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::ReadResourceRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::mcp::{call, runtime, text};
use mnemon_tests::{Served, TestCli};

/// An HTTP client of one served node.
struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(served: &Served) -> Http {
        Http {
            // A fresh connection a request: a refusal may close one before its body is
            // read, and a reused one would then fail for reasons of its own.
            agent: ureq::Agent::config_builder()
                .max_redirects(0)
                .max_idle_connections(0)
                .http_status_as_error(false)
                .build()
                .new_agent(),
            base: served.url.clone(),
        }
    }

    /// `method path` with `token`, and a JSON body if given: the status and the JSON
    /// answer (`null` if none).
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body),
            ("PATCH", body) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .send_json(body.unwrap_or(json!({}))),
            _ => panic!("{method}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(token, method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// A page of the web UI with a session cookie: its status and text.
    fn page(&self, cookie: &str, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Cookie", cookie)
            .call()
            .expect("page");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// Signs in to the web UI with `token`: the session cookie.
    fn sign_in(&self, token: &str) -> String {
        let response = self
            .agent
            .post(&format!("{}/signin", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("token={token}&next=/"))
            .expect("sign in");
        assert_eq!(response.status(), 303, "signed in");
        response.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pair")
            .to_owned()
    }
}

fn ids(values: &Value) -> Vec<String> {
    values
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn a_scoped_token_sees_its_collections_only_writes_only_if_allowed_and_ends_when_revoked() {
    let cli = TestCli::new();
    cli.init();
    // A read-only token for `work`, made before the node runs (in the data folder).
    cli.run(&[
        "token",
        "new",
        "--name",
        "reader",
        "--collection",
        "work",
        "--read-only",
    ])
    .fails_with("no collection named or with id \"work\"");
    cli.run(&["collection", "new", "work"]).ok();
    cli.run(&["collection", "new", "private"]).ok();
    let reader = cli
        .run(&[
            "token",
            "new",
            "--name",
            "reader",
            "--collection",
            "work",
            "--read-only",
        ])
        .ok()
        .trim()
        .to_owned();
    assert!(reader.starts_with("mnt_"), "{reader}");
    let served = Served::start(&cli);
    let http = Http::new(&served);
    let owner = cli.run(&["token"]).ok().trim().to_owned();

    // What the owner keeps: a secret in `private`, a plan in `work` that links to it.
    let secret = http.ok(
        &owner,
        "POST",
        "/api/v1/memories",
        Some(json!({"title": "Wombat diary", "content": "Pelican secret: the diary entry", "collection": "private"})),
    );
    let secret_id = secret["id"].as_str().expect("id").to_owned();
    let plan = http.ok(
        &owner,
        "POST",
        "/api/v1/memories",
        Some(json!({"title": "Quokka plan", "content": "Pelican project plan for work", "collection": "work",
            "links": [{"target": secret_id}]})),
    );
    let plan_id = plan["id"].as_str().expect("id").to_owned();
    let private_id = http
        .ok(&owner, "GET", "/api/v1/collections", None)
        .as_array()
        .expect("collections")
        .iter()
        .find(|c| c["name"] == "private")
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .expect("private");
    // A token made while the node runs is in force at once: read-write in `work`.
    let writer = cli
        .run(&[
            "token",
            "new",
            "--name",
            "writer",
            "--collection",
            "work",
            "--expires",
            "30d",
        ])
        .ok()
        .trim()
        .to_owned();

    // The other collection does not exist for the reader: 404 as for an unknown id, and
    // absent from lists, search, the graph and links.
    let (status, unknown) = http.call(
        &reader,
        "GET",
        "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        None,
    );
    assert_eq!(status, 404);
    let (status, hidden) = http.call(
        &reader,
        "GET",
        &format!("/api/v1/memories/{secret_id}"),
        None,
    );
    assert_eq!(status, 404, "{hidden}");
    assert_eq!(hidden["error"]["code"], unknown["error"]["code"]);
    assert_eq!(
        hidden["error"]["message"],
        format!("no memory with id {secret_id}")
    );
    for path in [
        format!("/api/v1/memories?collection={private_id}"),
        "/api/v1/memories?collection=private".to_owned(),
        format!("/api/v1/search?q=pelican&collection={private_id}"),
        format!("/api/v1/collections/{private_id}/members"),
        format!("/api/v1/memories/{secret_id}/backlinks"),
        format!("/api/v1/graph?center={secret_id}"),
    ] {
        assert_eq!(http.call(&reader, "GET", &path, None).0, 404, "{path}");
    }
    let listed = http.ok(&reader, "GET", "/api/v1/memories", None);
    assert_eq!(ids(&listed["items"]), [plan_id.as_str()]);
    // Read-your-writes: the search waits for the index to reach the owner's last write.
    let after = plan["seq"].as_u64().expect("seq");
    let search = format!("/api/v1/search?q=pelican&mode=keyword&after={after}");
    let found = http.ok(&reader, "GET", &search, None);
    assert_eq!(ids(&found), [plan_id.as_str()]);
    let everything = http.ok(&owner, "GET", &search, None);
    assert_eq!(
        ids(&everything).len(),
        2,
        "the owner sees both: {everything}"
    );
    let collections = http.ok(&reader, "GET", "/api/v1/collections", None);
    let names: Vec<&str> = collections
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["work"]);
    // The plan's only link leads into `private`: for the reader it links nowhere, and a
    // walk around it does not pass through what it cannot see.
    let graph = http.ok(&reader, "GET", "/api/v1/graph", None);
    assert_eq!(graph["nodes"], json!([]), "{graph}");
    let around = http.ok(
        &reader,
        "GET",
        &format!("/api/v1/graph?center={plan_id}"),
        None,
    );
    assert_eq!(ids(&around["nodes"]), [plan_id.as_str()], "{around}");
    let owners_graph = http.ok(&owner, "GET", "/api/v1/graph", None);
    assert_eq!(ids(&owners_graph["nodes"]).len(), 2, "{owners_graph}");
    let read_plan = http.ok(&reader, "GET", &format!("/api/v1/memories/{plan_id}"), None);
    assert_eq!(
        read_plan["links"],
        json!([]),
        "the link into `private` is not shown"
    );
    let owners_plan = http.ok(&owner, "GET", &format!("/api/v1/memories/{plan_id}"), None);
    assert_eq!(
        owners_plan["links"][0]["target"],
        secret_id.as_str(),
        "the owner sees it"
    );

    // It cannot write what it sees (403, naming the scope) nor what it does not (404).
    let (status, refused) = http.call(
        &reader,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "sneaky", "collection": "work"})),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("read-only")),
        "{refused}"
    );
    let patch = Some(json!({"content": "changed"}));
    assert_eq!(
        http.call(
            &reader,
            "PATCH",
            &format!("/api/v1/memories/{plan_id}"),
            patch.clone()
        )
        .0,
        403
    );
    assert_eq!(
        http.call(
            &reader,
            "DELETE",
            &format!("/api/v1/memories/{plan_id}"),
            None
        )
        .0,
        403
    );
    assert_eq!(
        http.call(
            &writer,
            "PATCH",
            &format!("/api/v1/memories/{secret_id}"),
            patch
        )
        .0,
        404
    );
    assert_eq!(
        http.call(
            &writer,
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "x", "collection": "private"}))
        )
        .0,
        404
    );
    // The owner's business stays the owner's, whatever the token.
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/peers"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/token"),
        ("POST", "/api/v1/signin-links"),
        ("POST", "/api/v1/backups"),
        ("POST", "/api/v1/collections"),
    ] {
        // Each with a body its route takes: the scope refuses it, not the validation.
        let body = match path {
            "/api/v1/backups" => Some(json!({"passphrase": "long enough passphrase"})),
            "/api/v1/tokens" | "/api/v1/collections" if method == "POST" => {
                Some(json!({"name": "more"}))
            }
            _ => None,
        };
        let (status, answer) = http.call(&writer, method, path, body);
        assert_eq!(status, 403, "{method} {path} by a token: {answer}");
    }
    assert_eq!(
        cli.run(&["token"]).ok().trim(),
        owner,
        "the owner's token stands"
    );

    // The writer writes into its collection (the first of its scope by default).
    let written = http.ok(
        &writer,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Pelican notes from the agent"})),
    );
    let written = http.ok(
        &writer,
        "GET",
        &format!("/api/v1/memories/{}", written["id"].as_str().expect("id")),
        None,
    );
    assert_eq!(written["collection_name"], "work", "{written}");
    // Its wikilinks resolve within its collections only: a title in `private` is a note
    // not written yet, for it, and nothing links there.
    let probe = http.ok(
        &writer,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "probing [[Wombat diary]] and [[Quokka plan]]"})),
    );
    let probe_id = probe["id"].as_str().expect("id");
    let probed = http.ok(&owner, "GET", &format!("/api/v1/memories/{probe_id}"), None);
    assert_eq!(
        probed["links"],
        json!([{"target": plan_id, "relation": "wikilink"}]),
        "{probed}"
    );
    // Nor can it undo the owner's link into `private`: that target is unknown to it.
    let (status, _) = http.call(
        &writer,
        "PATCH",
        &format!("/api/v1/memories/{plan_id}"),
        Some(json!({"remove_links": [secret_id]})),
    );
    assert_eq!(status, 404);
    let owners_plan = http.ok(&owner, "GET", &format!("/api/v1/memories/{plan_id}"), None);
    assert_eq!(
        owners_plan["links"][0]["target"],
        secret_id.as_str(),
        "the link stays"
    );
    // Rewriting a text the owner wrote keeps the owner's wikilinks into `private`.
    let owners_note = http.ok(
        &owner,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Owner's note on [[Wombat diary]]", "collection": "work"})),
    );
    let owners_note = owners_note["id"].as_str().expect("id").to_owned();
    http.ok(
        &writer,
        "PATCH",
        &format!("/api/v1/memories/{owners_note}"),
        Some(json!({"content": "rewritten by the agent"})),
    );
    let kept = http.ok(
        &owner,
        "GET",
        &format!("/api/v1/memories/{owners_note}"),
        None,
    );
    assert_eq!(
        kept["links"],
        json!([{"target": secret_id, "relation": "wikilink"}]),
        "{kept}"
    );
    // A deleted memory in `private` reads as one that never was.
    let gone = http.ok(
        &owner,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "to be forgotten", "collection": "private"})),
    );
    let gone_id = gone["id"].as_str().expect("id").to_owned();
    http.ok(
        &owner,
        "DELETE",
        &format!("/api/v1/memories/{gone_id}"),
        None,
    );
    let (status, answer) = http.call(&writer, "GET", &format!("/api/v1/memories/{gone_id}"), None);
    assert_eq!(
        (status, answer["error"]["message"].clone()),
        (404, json!(format!("no memory with id {gone_id}")))
    );

    // Forgetting a memory's history relinks the memories that link to it: the writer may
    // not when one it cannot see does (the plan in `work` is linked to from `private`).
    let linker = http.ok(
        &owner,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Pelican notes", "collection": "private", "links": [{"target": plan_id}]})),
    );
    let (status, answer) = http.call(
        &writer,
        "POST",
        &format!("/api/v1/memories/{plan_id}/forget-history"),
        None,
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        http.ok(
            &owner,
            "GET",
            &format!("/api/v1/memories/{}", linker["id"].as_str().expect("id")),
            None
        )["links"][0]["target"],
        json!(plan_id),
        "the hidden linker was not touched"
    );
    // One only its own collection links to, it may.
    let own = http.ok(
        &writer,
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Pelican draft", "collection": "work"})),
    );
    let own_id = own["id"].as_str().expect("id").to_owned();
    let fresh = http.ok(
        &writer,
        "POST",
        &format!("/api/v1/memories/{own_id}/forget-history"),
        None,
    );
    assert_eq!(fresh["content"], "Pelican draft");
    assert_ne!(fresh["id"], json!(own_id));
    // The reader may not at all.
    let (status, _) = http.call(
        &reader,
        "POST",
        &format!(
            "/api/v1/memories/{}/forget-history",
            fresh["id"].as_str().expect("id")
        ),
        None,
    );
    assert_eq!(status, 403);
    // Moving rewrites as forgetting does: never into a collection the token does not see
    // (answered as unknown), and renaming or deleting collections is the owner's.
    let (status, answer) = http.call(
        &writer,
        "POST",
        &format!(
            "/api/v1/memories/{}/move",
            fresh["id"].as_str().expect("id")
        ),
        Some(json!({"collection": "private"})),
    );
    assert_eq!(status, 404, "{answer}");
    for (method, path, body) in [
        (
            "PATCH",
            "/api/v1/collections/work",
            Some(json!({"name": "Play"})),
        ),
        ("DELETE", "/api/v1/collections/work", None),
    ] {
        let (status, answer) = http.call(&writer, method, path, body.clone());
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let (status, _) = http.call(&writer, method, "/api/v1/collections/private", body);
        assert_eq!(status, 404, "{method} on a hidden collection");
    }

    // The web UI, signed in with the reader, shows only `work`.
    let cookie = http.sign_in(&reader);
    let (status, home) = http.page(&cookie, "/");
    assert_eq!(status, 200);
    assert!(
        home.contains("Quokka plan")
            && !home.contains(&secret_id)
            && !home.contains("Pelican secret"),
        "{home}"
    );
    let (status, search) = http.page(&cookie, "/search?q=pelican");
    assert_eq!(status, 200);
    assert!(
        search.contains("Quokka plan")
            && !search.contains(&secret_id)
            && !search.contains("Pelican secret"),
        "{search}"
    );
    assert_eq!(http.page(&cookie, &format!("/m/{secret_id}")).0, 404);

    // MCP, with the reader's token.
    let url = format!("{}/mcp", served.url);
    let mcp = |token: &str| {
        StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone())
                .auth_header(token.to_owned()),
        )
    };
    runtime().block_on(async {
        let client = ().serve(mcp(&reader)).await.expect("initialize");
        let hits = text(
            &call(
                &client,
                "recall",
                json!({"query": "pelican", "mode": "keyword"}),
            )
            .await
            .expect("recall"),
        );
        let hit_ids: Vec<&str> = hits["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["id"].as_str().expect("id"))
            .collect();
        assert!(
            hit_ids.contains(&plan_id.as_str()) && !hit_ids.contains(&secret_id.as_str()),
            "{hits}"
        );
        let err = call(&client, "get", json!({"id": secret_id}))
            .await
            .expect_err("hidden");
        assert!(err.to_string().contains("no memory with id"), "{err}");
        let err = call(
            &client,
            "remember",
            json!({"content": "from a read-only agent"}),
        )
        .await
        .expect_err("read-only");
        assert!(err.to_string().contains("read-only"), "{err}");
        let collections = text(
            &call(&client, "list_collections", json!({}))
                .await
                .expect("collections"),
        );
        assert!(
            !collections.to_string().contains("private"),
            "{collections}"
        );
        let resources = client.list_all_resources().await.expect("resources");
        assert!(
            resources.iter().all(|r| !r.uri.contains(&secret_id)),
            "{resources:?}"
        );
        assert!(resources.iter().any(|r| r.uri.contains(&plan_id)));
        assert!(
            client
                .read_resource(ReadResourceRequestParams::new(format!(
                    "mnemon://memory/{secret_id}"
                )))
                .await
                .is_err()
        );
        assert!(
            client
                .read_resource(ReadResourceRequestParams::new(
                    "mnemon://collection/private"
                ))
                .await
                .is_err()
        );
        let completed = client
            .complete_resource_simple("mnemon://collection/{name}", "name", "")
            .await
            .expect("complete");
        assert!(!completed.iter().any(|c| c == "private"), "{completed:?}");

        // Revoked through the CLI: it ends at once, on the API, the UI and this session.
        let listed = cli.run(&["token", "list", "--json"]).json();
        let reader_view = listed
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["name"] == "reader")
            .expect("reader")
            .clone();
        assert_eq!(reader_view["collection_names"], json!(["work"]));
        assert_eq!(reader_view["scope"]["write"], false);
        assert!(reader_view["last_used_at"].is_string(), "{reader_view}");
        assert!(
            !listed.to_string().contains(&reader[4..]),
            "the secret is never listed"
        );
        cli.run(&["token", "revoke", "reader"]).ok();
        assert!(
            call(&client, "recall", json!({"query": "pelican"}))
                .await
                .is_err(),
            "MCP after the revoke"
        );
        let _ = client.cancel().await;
        assert!(
            ().serve(mcp(&reader)).await.is_err(),
            "a new MCP session after the revoke"
        );
    });
    assert_eq!(http.call(&reader, "GET", "/api/v1/memories", None).0, 401);
    assert_ne!(
        http.page(&cookie, "/").0,
        200,
        "the UI session ended with its token"
    );
    assert_eq!(
        http.call(&writer, "GET", "/api/v1/memories", None).0,
        200,
        "only that token"
    );

    // A token that expires stops by itself.
    let brief = cli
        .run(&["token", "new", "--name", "brief", "--expires", "2s"])
        .ok()
        .trim()
        .to_owned();
    assert_eq!(http.call(&brief, "GET", "/api/v1/memories", None).0, 200);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(http.call(&brief, "GET", "/api/v1/memories", None).0, 401);
    let log = served.stop();
    for secret in [&reader, &writer, &brief] {
        assert!(!log.contains(secret.as_str()), "a token was logged");
    }
}
