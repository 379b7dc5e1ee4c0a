//! The HTTP API: the router in this process over a real store, driven over real HTTP on
//! 127.0.0.1, and `mnemon serve` as a real process beside the CLI.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mnemon_crdt::Store;
use mnemon_identity::Keypair;
use mnemon_node::app::Service;
use mnemon_node::search::embed::HashEmbedder;
use mnemon_tests::{Served, TestCli};
use mnemon_web::ServerConfig;
use serde_json::{Value, json};

const TOKEN: &str = "test-token-0123456789";
const CSRF: &str = "csrf-0123";
const SIGN_IN_CODE: &str = "first-sign-in-code";

/// The router over a real store in a temporary folder, served on an ephemeral port.
struct Api {
    addr: SocketAddr,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl Api {
    fn start(body_limit: usize) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(dir.path().join("mnemon.redb"), Keypair::generate()).expect("store");
        let service = Service::open(
            store,
            &dir.path().join("index"),
            Box::new(|| Ok(Arc::new(HashEmbedder::default()) as _)),
            "api",
        )
        .expect("service");
        service.load_index().expect("index");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = Arc::new(service);
        let config = ServerConfig {
            bind: addr,
            token: TOKEN.into(),
            csrf: CSRF.into(),
            extra_hosts: vec![],
            body_limit,
            undo_window: Duration::from_millis(300),
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(500),
            sessions: None,
            sign_in_code: Some(SIGN_IN_CODE.into()),
            token_file: None,
            tokens: mnemon_web::tokens::Tokens::in_memory(),
        };
        let app = {
            let _guard = runtime.enter();
            service.forward_events();
            mnemon_web::router(service.clone() as Arc<dyn mnemon_api::Api>, &config)
        };
        runtime.spawn(async move {
            mnemon_web::serve(listener, app, &config, std::future::pending()).await
        });
        // The server closes a connection idle for its header timeout (500 ms here): the
        // client keeps none, so it never sends on one the server is closing at that
        // moment (letting go of them after 150 ms was not enough on a loaded machine: the
        // sending thread may wait longer than that after its check). Keep-alive has its
        // own test, over raw sockets.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_redirects(0)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .new_agent();
        Api {
            addr,
            agent,
            _dir: dir,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let uri = self.url(path);
        let mut builder = ureq::http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let result = match body {
            Some(body) => self
                .agent
                .run(builder.body(body.to_owned()).expect("request")),
            None => self.agent.run(builder.body(()).expect("request")),
        };
        let mut response = result.expect("HTTP request");
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Answer {
            status: response.status().as_u16(),
            headers,
            body: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let text = body.map(|b| b.to_string());
        let mut headers = vec![("authorization", auth.as_str())];
        if text.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.send(method, path, &headers, text.as_deref())
    }
}

#[test]
fn crud_search_and_collections_through_the_api() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let created = api.call(
        "POST",
        "/api/v1/memories",
        Some(
            json!({"title": "Kettle", "content": "Descale the kettle with citric acid",
                    "tags": ["home", "#chores"], "kind": "task", "importance": 0.8}),
        ),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let got = api
        .call("GET", &format!("/api/v1/memories/{id}"), None)
        .json();
    assert_eq!(got["title"], "Kettle");
    assert_eq!(got["tags"], json!(["chores", "home"]));
    assert_eq!(got["kind"], "task");
    // Searchable as soon as the write returned.
    let hits = api.call("GET", "/api/v1/search?q=citric", None).json();
    assert_eq!(hits[0]["id"], id.as_str(), "{hits}");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .expect("snippet")
            .contains("**citric**")
    );
    // Edit, then the old words are gone and the new ones found.
    let patched = api.call(
        "PATCH",
        &format!("/api/v1/memories/{id}"),
        Some(json!({"content": "Descale the kettle with vinegar", "add_tags": ["kitchen"]})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(
        api.call("GET", "/api/v1/search?q=vinegar", None).json()[0]["id"],
        id.as_str()
    );
    assert_eq!(
        api.call("GET", "/api/v1/search?q=citric&mode=keyword", None)
            .json(),
        json!([])
    );
    // A second memory that links to the first: the first has a backlink.
    let other = api
        .call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "Shopping: vinegar", "links": [{"target": id}]})),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let back = api
        .call("GET", &format!("/api/v1/memories/{id}/backlinks"), None)
        .json();
    assert_eq!(back[0]["id"], other.as_str(), "{back}");
    // Collections by name, lists with filters and pages.
    let work = api.call("POST", "/api/v1/collections", Some(json!({"name": "work"})));
    assert_eq!(work.status, 201, "{}", work.body);
    let dup = api.call("POST", "/api/v1/collections", Some(json!({"name": "work"})));
    assert_eq!(dup.status, 409);
    for i in 0..5 {
        let r = api.call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": format!("work note {i}"), "collection": "work"})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let page = api
        .call("GET", "/api/v1/memories?collection=work&limit=2", None)
        .json();
    assert_eq!(page["total"], 5);
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    assert_eq!(page["next_offset"], 2);
    let page = api
        .call(
            "GET",
            "/api/v1/memories?collection=work&limit=2&offset=4",
            None,
        )
        .json();
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    assert_eq!(page["next_offset"], Value::Null);
    let tagged = api.call("GET", "/api/v1/memories?tag=kitchen", None).json();
    assert_eq!(tagged["total"], 1);
    // Resolving a conflict: refused by name for a memory without one, and for a side
    // that is neither ours nor theirs. (Conflicts themselves: tests/it/federation.rs.)
    let calm = api.call(
        "POST",
        &format!("/api/v1/memories/{id}/resolve"),
        Some(json!({"keep": "theirs"})),
    );
    assert_eq!(calm.status, 422, "{}", calm.body);
    assert!(
        calm.body.contains("has no conflict to resolve"),
        "{}",
        calm.body
    );
    let odd = api.call(
        "POST",
        &format!("/api/v1/memories/{id}/resolve"),
        Some(json!({"keep": "both"})),
    );
    assert_eq!(odd.status, 422, "{}", odd.body);
    assert!(odd.body.contains("keep"), "{}", odd.body);
    let status = api.call("GET", "/api/v1/status", None).json();
    assert_eq!(status["memories"], 7, "{status}");
    // Delete: gone from reads and from search.
    let deleted = api.call("DELETE", &format!("/api/v1/memories/{id}"), None);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let gone = api.call("GET", &format!("/api/v1/memories/{id}"), None);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "not_found");
    let hits = api.call("GET", "/api/v1/search?q=kettle", None).json();
    assert!(
        hits.as_array()
            .expect("hits")
            .iter()
            .all(|h| h["id"] != id.as_str()),
        "{hits}"
    );
}

/// A create is checked and built on the request's task and awaits only its group commit:
/// what it answers is what is stored. Writers at once each get their own memory; a
/// refused one stores nothing; `dedupe` answers the memory that already says the same;
/// a text over the size built on the request's task is kept whole.
#[test]
fn creates_at_once_are_each_committed_checked_and_deduplicated() {
    let api = Arc::new(Api::start(mnemon_web::DEFAULT_BODY_LIMIT));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let made = api.call(
                            "POST",
                            "/api/v1/memories",
                            Some(json!({"content": format!("writer {w} note {i}")})),
                        );
                        assert_eq!(made.status, 201, "{}", made.body);
                        let made = made.json();
                        assert!(made["seq"].as_u64().is_some_and(|s| s > 0), "{made}");
                        (
                            made["id"].as_str().expect("id").to_owned(),
                            format!("writer {w} note {i}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let written: Vec<(String, String)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    let ids: std::collections::HashSet<&str> = written.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 128, "every create got its own memory");
    for (id, content) in &written {
        let got = api.call("GET", &format!("/api/v1/memories/{id}"), None);
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.json()["content"], content.as_str());
    }
    let total = || api.call("GET", "/api/v1/memories?limit=1", None).json()["total"].clone();
    assert_eq!(total(), 128);

    let post = |body: Value| api.call("POST", "/api/v1/memories", Some(body));

    // Refused before anything is written, naming the field.
    let refused = post(json!({"content": "dated", "created_at": "yesterday-ish"}));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("created_at"), "{}", refused.body);
    assert_eq!(total(), 128);

    // With dedupe, the memory that says the same is answered, not written again.
    let again = post(json!({"content": "writer 3 note 5", "dedupe": "exact"}));
    assert_eq!(again.status, 200, "{}", again.body);
    let again = again.json();
    assert_eq!(again["created"], false);
    let first = written
        .iter()
        .find(|(_, c)| c == "writer 3 note 5")
        .expect("written");
    assert_eq!(again["id"], first.0.as_str());
    let fresh = post(json!({"content": "a note of its own", "dedupe": "exact"}));
    assert_eq!(fresh.status, 201, "{}", fresh.body);
    assert_eq!(fresh.json()["created"], true);
    assert_eq!(total(), 129);

    // A text larger than what is built on the request's task (1 KiB) is kept whole.
    let long: String = (0..1_500).map(|i| format!("w{i} ")).collect();
    assert!(long.len() > 1024);
    let made = post(json!({"content": long}));
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.json()["id"].as_str().expect("id").to_owned();
    let got = api
        .call("GET", &format!("/api/v1/memories/{id}"), None)
        .json();
    assert_eq!(got["content"].as_str().map(str::len), Some(long.len()));
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let api = Api::start(4096);
    // A field of the wrong type: 422 naming the field.
    let r = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "x", "importance": "very"})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("importance:"),
        "{}",
        r.body
    );
    let r = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "x", "tags": "one"})),
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("tags"), "{}", r.body);
    // Unknown field, missing field, invalid value.
    let r = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "x", "colour": 1})),
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("colour"), "{}", r.body);
    let r = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"title": "no content"})),
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("content"), "{}", r.body);
    let r = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "x", "importance": 7})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("importance"), "{}", r.body);
    // Malformed JSON, wrong content type.
    let auth = format!("Bearer {TOKEN}");
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some("{\"content\": "),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[("authorization", &auth), ("content-type", "text/plain")],
        Some("hello"),
    );
    assert_eq!(r.status, 415);
    // Over the body limit: 413.
    let big = json!({"content": "x".repeat(8192)});
    let r = api.call("POST", "/api/v1/memories", Some(big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.error_code(), "payload_too_large");
    // Search input.
    for (query, needle) in [
        ("/api/v1/search?q=", "empty"),
        ("/api/v1/search?q=a&k=0", "k must be"),
        ("/api/v1/search?q=a&k=100000", "k must be"),
        ("/api/v1/search?q=a&mode=fuzzy", "mode"),
        ("/api/v1/search?q=a&collection=nope", "nope"),
        ("/api/v1/search?q=a&k=ten", "k"),
    ] {
        let r = api.call("GET", query, None);
        assert!(
            r.status == 422 || r.status == 404,
            "{query}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body.contains(needle), "{query}: {}", r.body);
    }
    // Ids and routes.
    let r = api.call("GET", "/api/v1/memories/not-an-id", None);
    assert_eq!(r.status, 400);
    let r = api.call("GET", "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV", None);
    assert_eq!(r.status, 404);
    let r = api.call("GET", "/api/v1/nothing-here", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    // Nothing was stored by any of this.
    assert_eq!(
        api.call("GET", "/api/v1/status", None).json()["memories"],
        0
    );
}

#[test]
fn security_tokens_hosts_csrf_and_headers() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    // No token, or a wrong one: 401 on every API route, and on /metrics.
    let routes = [
        ("GET", "/api/v1/memories"),
        ("POST", "/api/v1/memories"),
        ("GET", "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("PATCH", "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("DELETE", "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        (
            "GET",
            "/api/v1/memories/01ARZ3NDEKTSV4RRFFQ69G5FAV/backlinks",
        ),
        ("GET", "/api/v1/search?q=x"),
        ("GET", "/api/v1/collections"),
        ("POST", "/api/v1/collections"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/session"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/unknown"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        let r = api.send(method, path, &[], None);
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // (Failures from one address are braked after MAX_FAILURES: stay under it.)
    for (method, path) in &routes[..5] {
        let r = api.send(method, path, &[("authorization", "Bearer wrong")], None);
        assert_eq!(r.status, 401, "{method} {path}");
    }
    // Health needs no token.
    assert_eq!(api.send("GET", "/health/live", &[], None).status, 200);
    assert_eq!(api.send("GET", "/health/ready", &[], None).status, 200);
    // A foreign Host (DNS rebinding): 403, even with the token.
    let auth = format!("Bearer {TOKEN}");
    let r = api.send(
        "GET",
        "/api/v1/status",
        &[("authorization", &auth), ("host", "attacker.example:80")],
        None,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "forbidden_host");
    let host = format!("localhost:{}", api.addr.port());
    let r = api.send(
        "GET",
        "/api/v1/status",
        &[("authorization", &auth), ("host", &host)],
        None,
    );
    assert_eq!(r.status, 200);
    // Cross-origin change without the CSRF token: 403; with it, or same-origin: fine.
    let body = json!({"content": "from a browser"}).to_string();
    let same = format!("http://{}", api.addr);
    let base = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut h: Vec<(&str, &str)> = base.to_vec();
        h.extend_from_slice(extra);
        api.send("POST", "/api/v1/memories", &h, Some(&body))
    };
    let r = with(&[("origin", "http://evil.example")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error_code(), "csrf");
    let r = with(&[("sec-fetch-site", "cross-site")]);
    assert_eq!(r.status, 403);
    let r = with(&[("origin", "http://evil.example"), ("x-csrf-token", "wrong")]);
    assert_eq!(r.status, 403);
    assert_eq!(
        with(&[("origin", "http://evil.example"), ("x-csrf-token", CSRF)]).status,
        201
    );
    assert_eq!(with(&[("origin", &same)]).status, 201);
    // A cross-origin read is not a change.
    let r = api.send(
        "GET",
        "/api/v1/status",
        &[("authorization", &auth), ("origin", "http://evil.example")],
        None,
    );
    assert_eq!(r.status, 200);
    // Security headers and a request id on every response, errors included.
    for r in [
        api.send("GET", "/api/v1/status", &[("authorization", &auth)], None),
        api.send("GET", "/api/v1/status", &[], None),
    ] {
        assert!(
            r.header("content-security-policy")
                .is_some_and(|v| v.contains("default-src 'self'"))
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("x-request-id").map(str::len), Some(26));
    }
    // Metrics: per-route histograms and the node's gauges.
    let metrics = api
        .send("GET", "/metrics", &[("authorization", &auth)], None)
        .body;
    assert!(
        metrics.contains("mnemon_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/memories\",status=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("mnemon_memories 2"), "{metrics}");
    assert!(
        metrics.contains("mnemon_store_table_bytes{table="),
        "{metrics}"
    );
}

#[test]
fn failed_sign_ins_are_braked_but_the_owner_gets_in() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..mnemon_web::MAX_FAILURES + 2 {
        statuses.push(
            api.send(
                "GET",
                "/api/v1/status",
                &[("authorization", "Bearer guess")],
                None,
            )
            .status,
        );
    }
    // Every failure waited before it was answered, those over the limit too.
    assert!(started.elapsed() >= mnemon_web::FAILURE_DELAY * (mnemon_web::MAX_FAILURES as u32 + 2));
    assert!(
        statuses[..mnemon_web::MAX_FAILURES]
            .iter()
            .all(|s| *s == 401),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The right token still works from the same address.
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        api.send("GET", "/api/v1/status", &[("authorization", &auth)], None)
            .status,
        200
    );
}

#[test]
fn events_stream_memory_changes() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let mut stream = std::net::TcpStream::connect(api.addr).expect("connect");
    use std::io::Write;
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n",
        api.addr
    )
    .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains("200"), "{status}");
    // Give the subscription a moment to exist, then write.
    std::thread::sleep(Duration::from_millis(200));
    let id = api
        .call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "live update"})),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    api.call("DELETE", &format!("/api/v1/memories/{id}"), None);
    let mut seen = Vec::new();
    let mut line = String::new();
    while seen.len() < 2 {
        line.clear();
        if reader.read_line(&mut line).expect("read event") == 0 {
            break;
        }
        if let Some(data) = line.trim().strip_prefix("data:")
            && let Ok(event) = serde_json::from_str::<Value>(data.trim())
        {
            seen.push(event);
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["kind"], "created");
    assert_eq!(seen[0]["id"], id.as_str());
    assert_eq!(seen[1]["kind"], "deleted");
    assert!(seen[1]["seq"].as_u64() > seen[0]["seq"].as_u64());
}

/// The web UI's form posts: `application/x-www-form-urlencoded` with a cookie.
impl Api {
    fn form(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        self.send(
            "POST",
            path,
            &[
                ("cookie", cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Some(&body.join("&")),
        )
    }

    fn page(&self, path: &str, cookie: &str) -> Answer {
        self.send("GET", path, &[("cookie", cookie)], None)
    }

    /// The CSRF token of the session `cookie`, as the page's script reads it.
    fn csrf_of(&self, cookie: &str) -> String {
        let r = self.send("GET", "/api/v1/session", &[("cookie", cookie)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["csrf_token"].as_str().expect("csrf").to_owned()
    }

    /// Signs in through the form; returns the `Cookie` header to send.
    fn sign_in(&self) -> String {
        let r = self.form("/signin", "", &[("token", TOKEN), ("next", "/")]);
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r.header("set-cookie").expect("a session cookie").to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        set.split(';').next().expect("cookie").to_owned()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn web_ui_sessions_csrf_and_escaping() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    // Pages need a session: a GET is sent to sign in, anything else is refused.
    let r = api.page("/m/01ARZ3NDEKTSV4RRFFQ69G5FAV", "");
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/signin?next=%2Fm%2F01ARZ3NDEKTSV4RRFFQ69G5FAV")
    );
    assert_eq!(api.form("/memories", "", &[("content", "x")]).status, 401);
    // A wrong token is refused with the reason, and sets no cookie.
    let r = api.form("/signin", "", &[("token", "mnm_wrong")]);
    assert_eq!(r.status, 401);
    assert!(
        r.body.contains("not this node&#39;s token") || r.body.contains("not this node's token"),
        "{}",
        r.body
    );
    assert!(r.header("set-cookie").is_none());
    // A sign-in sends you on only to a path of this site.
    let r = api.form(
        "/signin",
        "",
        &[("token", TOKEN), ("next", "//evil.example/")],
    );
    assert_eq!(r.header("location"), Some("/"));
    // Browsers drop a tab or newline from a URL before reading it: `/<TAB>/evil.example`
    // would take the owner to evil.example. A newline also cannot go in a header.
    for next in ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example"] {
        let r = api.form("/signin", "", &[("token", TOKEN), ("next", next)]);
        assert_eq!(r.status, 303, "{next:?}: {}", r.body);
        assert_eq!(r.header("location"), Some("/"), "{next:?}");
    }
    let page = api.page("/signin?next=/%09/evil.example", "");
    assert!(!page.body.contains("evil.example"), "{}", page.body);
    let cookie = api.sign_in();
    let csrf = api.csrf_of(&cookie);
    let forged = "mnemon_session=0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(api.page("/", forged).status, 303);
    let home = api.page("/", &cookie);
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains(&csrf),
        "the page carries the session's CSRF token"
    );
    // Each session has its own: the server's, or another session's, changes nothing.
    let other = api.sign_in();
    assert_ne!(api.csrf_of(&other), csrf);
    assert_ne!(csrf, CSRF);
    for wrong in [CSRF.to_owned(), api.csrf_of(&other)] {
        let r = api.form(
            "/memories",
            &cookie,
            &[("csrf", &wrong), ("content", "forged")],
        );
        assert_eq!(r.status, 403, "{}", r.body);
    }
    // Another site cannot sign a visitor in, not even with a good token.
    let r = api.send(
        "POST",
        "/signin",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        Some(&format!("token={TOKEN}&next=/")),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    // A form posted from another site is refused even with the right token.
    let r = api.send(
        "POST",
        "/memories",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://127.0.0.1:9999"),
        ],
        Some(&format!("csrf={csrf}&content=cross-site")),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // A form without the CSRF token changes nothing.
    let r = api.form("/memories", &cookie, &[("content", "no token")]);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("reload the page"), "{}", r.body);
    assert_eq!(
        api.call("GET", "/api/v1/status", None).json()["memories"],
        0
    );
    // With it, the memory is stored and you land on its page.
    let r = api.form(
        "/memories",
        &cookie,
        &[
            ("csrf", &csrf),
            ("title", "<script>alert(1)</script>"),
            (
                "content",
                "**bold** <img src=x onerror=alert(1)> [x](javascript:alert(2))",
            ),
            ("tags", "a, #b"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let location = r.header("location").expect("location").to_owned();
    let id = location
        .strip_prefix("/m/")
        .expect("memory page")
        .to_owned();
    let stored = api
        .call("GET", &format!("/api/v1/memories/{id}"), None)
        .json();
    assert_eq!(stored["title"], "<script>alert(1)</script>");
    assert_eq!(stored["tags"], json!(["a", "b"]));
    // Its page shows what was written, as text: no markup of the author's runs.
    let page = api.page(&location, &cookie);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.body.contains("<script>alert"));
    assert!(!page.body.contains("<img src=x"));
    assert!(!page.body.contains("href=\"javascript:"));
    assert!(page.body.contains("<strong>bold</strong>"));
    // The session also works for the API from the page's script, with the CSRF header
    // for changes.
    let r = api.send("GET", "/api/v1/memories", &[("cookie", &cookie)], None);
    assert_eq!(r.status, 200);
    let body = json!({"content": "from the page's script"}).to_string();
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[("cookie", &cookie), ("content-type", "application/json")],
        Some(&body),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "csrf");
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[
            ("cookie", &cookie),
            ("content-type", "application/json"),
            ("x-csrf-token", &csrf),
        ],
        Some(&body),
    );
    assert_eq!(r.status, 201);
    // Every page renders for a signed-in owner; the assets need no session.
    for path in [
        "/",
        "/search?q=bold",
        "/graph",
        "/collections",
        "/status",
        "/api",
    ] {
        let r = api.page(path, &cookie);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.starts_with("<!DOCTYPE html>"), "{path}");
    }
    for path in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
        assert_eq!(api.page(path, "").status, 200, "{path}");
    }
    // The search fragment the script asks for marks the matched words.
    let r = api.send(
        "GET",
        "/search?q=bold",
        &[("cookie", &cookie), ("x-mnemon-fragment", "1")],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<mark>bold</mark>"), "{}", r.body);
    assert!(!r.body.contains("<html"), "a fragment, not a page");
    // Signing out clears the cookie and ends the session: a copy of the cookie no longer
    // opens anything; another session goes on.
    let other = api.sign_in();
    let r = api.form("/signout", &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    assert_eq!(api.page("/", &cookie).status, 303, "the old cookie is dead");
    let r = api.send("GET", "/api/v1/memories", &[("cookie", &cookie)], None);
    assert_eq!(r.status, 401);
    assert_eq!(api.page("/", &other).status, 200);
}

#[test]
fn web_ui_links_edits_and_delete_with_undo() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let cookie = api.sign_in();
    let csrf = api.csrf_of(&cookie);
    let create = |title: &str| {
        api.call(
            "POST",
            "/api/v1/memories",
            Some(json!({"title": title, "content": format!("{title} body")})),
        )
        .json()["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let a = create("Alpha note");
    let b = create("Beta note");
    // Link by title; the backlink shows on the other page.
    let r = api.form(
        &format!("/m/{b}/links"),
        &cookie,
        &[("csrf", &csrf), ("target", "alpha NOTE")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let links = api
        .call("GET", &format!("/api/v1/memories/{b}"), None)
        .json()["links"]
        .clone();
    assert_eq!(links, json!([{"target": a, "relation": "related"}]));
    let page = api.page(&format!("/m/{a}"), &cookie).body;
    assert!(
        page.contains(&format!("<a href=\"/m/{b}\">Beta note</a>")),
        "{page}"
    );
    // Linking to nothing, or to itself, is a clear error and changes nothing.
    let r = api.form(
        &format!("/m/{b}/links"),
        &cookie,
        &[("csrf", &csrf), ("target", "Gamma")],
    );
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no memory is titled “Gamma”"), "{}", r.body);
    let r = api.form(
        &format!("/m/{a}/links"),
        &cookie,
        &[("csrf", &csrf), ("target", &a)],
    );
    assert_eq!(r.status, 422);
    // An edit from the form: title, tags and a bad importance.
    let r = api.form(
        &format!("/m/{a}"),
        &cookie,
        &[
            ("csrf", &csrf),
            ("title", "Alpha, edited"),
            ("content", "Alpha body"),
            ("tags", "x, y"),
            ("kind", "fact"),
            ("importance", "0.9"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let edited = api
        .call("GET", &format!("/api/v1/memories/{a}"), None)
        .json();
    assert_eq!(edited["title"], "Alpha, edited");
    assert_eq!(edited["tags"], json!(["x", "y"]));
    assert_eq!(edited["kind"], "fact");
    assert_eq!(edited["importance"], 0.9);
    let r = api.form(
        &format!("/m/{a}"),
        &cookie,
        &[
            ("csrf", &csrf),
            ("title", "Alpha, edited"),
            ("content", "Alpha body"),
            ("importance", "lots"),
        ],
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("importance"), "{}", r.body);
    // Delete: forgotten at once (a kill -9 now must not bring it back), with Undo for the
    // window (300 ms in these tests), which writes it again and mends the links to it.
    let r = api.form(&format!("/m/{a}/delete"), &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some(format!("/?deleted={a}").as_str())
    );
    assert_eq!(
        api.call("GET", &format!("/api/v1/memories/{a}"), None)
            .status,
        404,
        "deleted at once"
    );
    let home = api.page(&format!("/?deleted={a}"), &cookie).body;
    assert!(home.contains("id=\"undo\""), "the undo button shows");
    assert!(
        !home.contains(&format!("data-id=\"{a}\"")),
        "gone from the list"
    );
    let r = api.form(&format!("/m/{a}/undo"), &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303, "{}", r.body);
    let again = r
        .header("location")
        .and_then(|l| l.strip_prefix("/m/"))
        .expect("undo leads to the memory")
        .to_owned();
    let restored = api
        .call("GET", &format!("/api/v1/memories/{again}"), None)
        .json();
    assert_eq!(restored["title"], edited["title"]);
    assert_eq!(restored["content"], edited["content"]);
    assert_eq!(restored["tags"], edited["tags"]);
    assert_eq!(restored["kind"], "fact");
    assert_eq!(restored["created_at"], edited["created_at"]);
    let links = api
        .call("GET", &format!("/api/v1/memories/{b}"), None)
        .json()["links"]
        .clone();
    assert_eq!(links, json!([{"target": again, "relation": "related"}]));
    // Undo happens once.
    let r = api.form(&format!("/m/{a}/undo"), &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 409);
    // Without undo it stays forgotten; once the window passes undo is too late.
    let r = api.form(&format!("/m/{b}/delete"), &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(
        api.call("GET", &format!("/api/v1/memories/{b}"), None)
            .status,
        404
    );
    std::thread::sleep(Duration::from_millis(400));
    let r = api.form(&format!("/m/{b}/undo"), &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 409);
    assert!(r.body.contains("too late"), "{}", r.body);
}

#[test]
fn openapi_document_is_served_and_complete() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let doc = api.call("GET", "/api/v1/openapi.json", None).json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/memories",
        "/api/v1/memories/{id}",
        "/api/v1/search",
        "/api/v1/collections",
        "/api/v1/status",
        "/api/v1/events",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn serve_and_the_cli_side_by_side_lose_nothing() {
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().to_owned();
    assert!(token.starts_with("mnm_"));
    let mode = std::fs::metadata(cli.data_dir().join("api-token"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("token file");
    assert_eq!(mode, 0o600);
    // HTTP clients and CLI processes write at the same time.
    let url = served.url.clone();
    let http_writers: Vec<_> = (0..4)
        .map(|w| {
            let url = url.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                (0..15)
                    .map(|i| {
                        let mut r = agent
                            .post(&format!("{url}/api/v1/memories"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .send_json(json!({"content": format!("http {w} {i}")}))
                            .expect("post");
                        assert_eq!(r.status(), 201);
                        let v: Value = r.body_mut().read_json().expect("json");
                        v["id"].as_str().expect("id").to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for i in 0..10 {
        let run = cli.run(&["add", &format!("cli note {i}")]);
        ids.push(run.ok().to_owned());
        assert!(!run.stderr.contains("lock"), "{}", run.stderr);
    }
    for writer in http_writers {
        ids.extend(writer.join().expect("writer"));
    }
    assert_eq!(ids.len(), 70);
    // The CLI reads through the service too.
    let status = cli.run(&["status", "--json"]).json();
    assert_eq!(status["service"], served.url.as_str());
    assert_eq!(status["memories"], 70);
    let hits = cli
        .run(&["search", "cli note 7", "--mode", "keyword", "--json"])
        .json();
    assert_eq!(hits[0]["id"], ids[7].as_str(), "{hits}");
    let stderr = served.stop();
    assert!(!stderr.contains(&token), "the token was logged");
    assert!(!cli.data_dir().join("serve.json").exists());
    // After shutdown, the CLI opens the folder itself and finds every acknowledged write.
    let listed = cli.run(&["list", "--json"]).json();
    let listed = mnemon_tests::ids(&listed);
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "{id} was lost");
    }
    let status = cli.run(&["status", "--json"]).json();
    assert_eq!(status["service"], Value::Null);
}

#[test]
fn serve_refuses_non_loopback_and_a_second_instance() {
    let cli = TestCli::new();
    cli.init();
    cli.run(&["serve", "--http", "0.0.0.0:0"])
        .fails_with("not a loopback address");
    let served = Served::start(&cli);
    cli.run(&["serve", "--http", "127.0.0.1:0"])
        .fails_with("already running");
    served.stop();
}

#[test]
fn the_graph_follows_links_both_ways_to_the_depth_asked() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let add = |title: &str, links: &[&str]| {
        let links: Vec<Value> = links
            .iter()
            .map(|t| json!({"target": t, "relation": "mentions"}))
            .collect();
        let created = api.call(
            "POST",
            "/api/v1/memories",
            Some(json!({"title": title, "content": format!("about {title}"), "links": links})),
        );
        assert_eq!(created.status, 201, "{}", created.body);
        created.json()["id"].as_str().expect("id").to_owned()
    };
    // d → c → b → a, e → a; f alone.
    let a = add("a", &[]);
    let b = add("b", &[&a]);
    let c = add("c", &[&b]);
    let _d = add("d", &[&c]);
    let _e = add("e", &[&a]);
    let _f = add("f", &[]);
    let graph = |query: &str| {
        let answer = api.call("GET", &format!("/api/v1/graph{query}"), None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    };
    let titles = |g: &Value| -> Vec<(String, Value)> {
        g["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| {
                (
                    n["title"].as_str().expect("title").to_owned(),
                    n["distance"].clone(),
                )
            })
            .collect()
    };
    let g = graph(&format!("?center={a}&depth=1"));
    let mut near = titles(&g);
    near.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        near,
        [
            ("a".into(), json!(0)),
            ("b".into(), json!(1)),
            ("e".into(), json!(1))
        ]
    );
    assert_eq!(g["edges"].as_array().expect("edges").len(), 2);
    assert_eq!(g["edges"][0]["relation"], "mentions");
    let g = graph(&format!("?center={a}&depth=3"));
    assert_eq!(g["nodes"].as_array().expect("nodes").len(), 5, "{g}");
    assert!(titles(&g).iter().any(|(t, d)| t == "d" && *d == json!(3)));
    let g = graph(&format!("?center={a}&depth=3&limit=2"));
    assert_eq!(g["truncated"], true);
    assert_eq!(g["nodes"].as_array().expect("nodes").len(), 2, "{g}");
    let g = graph(&format!("?center={a}&depth=3&limit=5"));
    assert_eq!(g["truncated"], false, "all five fit: {g}");
    let g = graph(&format!("?center={a}&depth=3&limit=4"));
    assert_eq!(g["truncated"], true, "{g}");
    assert!(
        !titles(&g).iter().any(|(t, _)| t == "d"),
        "the farthest goes first: {g}"
    );
    // Without a center: every memory with a link, not f.
    let g = graph("");
    assert_eq!(g["nodes"].as_array().expect("nodes").len(), 5, "{g}");
    assert_eq!(g["edges"].as_array().expect("edges").len(), 4, "{g}");
    assert_eq!(g["truncated"], false);
    let g = graph("?limit=3");
    assert_eq!(g["nodes"].as_array().expect("nodes").len(), 3, "{g}");
    assert_eq!(g["truncated"], true);
    // Bad input is named.
    let bad = api.call("GET", &format!("/api/v1/graph?center={a}&depth=9"), None);
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("depth"), "{}", bad.body);
    let missing = api.call(
        "GET",
        "/api/v1/graph?center=01ARZ3NDEKTSV4RRFFQ69G5FAV",
        None,
    );
    assert_eq!(missing.status, 404, "{}", missing.body);

    // Wikilinks in a memory's text become links (by title, any case); an edit that drops
    // one drops its link, and one naming nothing links nothing.
    let kettle = add("Kettle descaling", &[]);
    let g = add("Garden plan", &[]);
    let created = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"title": "h", "content": "see [[kettle Descaling]] and [[folder/Garden plan|gee]] and [[nowhere]]"})),
    );
    let h = created.json()["id"].as_str().expect("id").to_owned();
    let links = |id: &str| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = api
            .call("GET", &format!("/api/v1/memories/{id}"), None)
            .json()["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["target"].as_str().expect("t").to_owned(),
                    l["relation"].as_str().expect("r").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let mut want = vec![
        (kettle.clone(), "wikilink".to_owned()),
        (g.clone(), "wikilink".to_owned()),
    ];
    want.sort();
    assert_eq!(links(&h), want);
    let patched = api.call(
        "PATCH",
        &format!("/api/v1/memories/{h}"),
        Some(json!({"content": "only [[garden plan]] now"})),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(links(&h), [(g.clone(), "wikilink".to_owned())]);

    // A wikilink to a title no memory has yet resolves when one is written.
    let waiting = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"title": "w", "content": "ask [[The Plumber]]"})),
    );
    let waiting = waiting.json()["id"].as_str().expect("id").to_owned();
    assert!(links(&waiting).is_empty());
    let plumber = add("the plumber", &[]);
    assert_eq!(links(&waiting), [(plumber.clone(), "wikilink".to_owned())]);
}

#[test]
fn tasks_have_status_priority_due_difficulty_and_points() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let created = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Repot the ficus", "task": {"priority": 2, "due": "2026-12-01", "difficulty": 3}})),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let got = api
        .call("GET", &format!("/api/v1/memories/{id}"), None)
        .json();
    assert_eq!(got["kind"], "task");
    assert_eq!(
        got["task"],
        json!({"status": "open", "priority": 2, "due": "2026-12-01T00:00:00.000Z", "difficulty": 3, "xp": 30})
    );
    let done = api.call(
        "PATCH",
        &format!("/api/v1/memories/{id}"),
        Some(json!({"task": {"status": "done"}})),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["task"]["status"], "done");
    assert_eq!(done.json()["task"]["xp"], 30, "the points stay");
    for (task, needle) in [
        (json!({"difficulty": 9}), "difficulty 9"),
        (json!({"due": "next tuesday"}), "next tuesday"),
        (json!({"status": "Done!"}), "status"),
        (json!({"xp": 1_000_000}), "points"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let bad = api.call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "x", "task": task})),
        );
        assert!(
            bad.status == 422 || bad.status == 400,
            "{task}: {}",
            bad.body
        );
        assert!(bad.body.contains(needle), "{task}: {}", bad.body);
    }
    // A note becomes a task when given task fields.
    let note = api.call(
        "POST",
        "/api/v1/memories",
        Some(json!({"content": "Call the plumber"})),
    );
    let note_id = note.json()["id"].as_str().expect("id").to_owned();
    let patched = api.call(
        "PATCH",
        &format!("/api/v1/memories/{note_id}"),
        Some(json!({"task": {"priority": 5}})),
    );
    assert_eq!(patched.json()["kind"], "task", "{}", patched.body);
    assert_eq!(patched.json()["task"]["status"], "open");
}

/// Reads from `stream` until the server closes it; false if it is still open after `wait`
/// (the server's timeouts in these tests are 500 ms).
fn closed_by_server(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read as _;
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The raw answer to `request`, read until the server closes or `wait` passes.
fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(request).expect("write");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn slow_idle_and_oversize_clients_are_cut_off_with_json_errors() {
    use std::io::Write as _;
    let api = Api::start(4096);
    let wait = Duration::from_secs(5);
    // Nothing sent, half a head, and an idle keep-alive connection: each is closed.
    let mut silent = std::net::TcpStream::connect(api.addr).expect("connect");
    assert!(
        closed_by_server(&mut silent, wait),
        "a silent client is held"
    );
    let mut partial = std::net::TcpStream::connect(api.addr).expect("connect");
    partial
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x")
        .expect("write");
    assert!(closed_by_server(&mut partial, wait), "a half head is held");
    let mut idle = std::net::TcpStream::connect(api.addr).expect("connect");
    write!(
        idle,
        "GET /health/live HTTP/1.1\r\nHost: {}\r\n\r\n",
        api.addr
    )
    .expect("write");
    assert!(
        closed_by_server(&mut idle, wait),
        "an idle connection is held"
    );
    // A body that stops coming is given up on.
    let head = format!(
        "POST /api/v1/memories HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"content\"",
        api.addr
    );
    let answer = raw(api.addr, head.as_bytes(), wait);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    // A client that asks and never reads what it is sent (without a token: a script's
    // assets) is cut off once the server's writes have waited: it does not get them all.
    let mut greedy = std::net::TcpStream::connect(api.addr).expect("connect");
    let ask = format!("GET /assets/app.js HTTP/1.1\r\nHost: {}\r\n\r\n", api.addr);
    const ASKED: usize = 3000;
    let requests = ask.repeat(ASKED);
    {
        let mut writer = greedy.try_clone().expect("clone");
        // Written from a thread: once the server stops reading, this write blocks.
        std::thread::spawn(move || {
            let _ = writer.write_all(requests.as_bytes());
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut got = 0usize;
    {
        use std::io::Read as _;
        greedy
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 65536];
        loop {
            match greedy.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    }
    assert!(
        got < ASKED * 9000,
        "the whole {ASKED} answers came through ({got} bytes): never cut off"
    );
    // A body announced over the limit is refused before it is sent.
    let head = format!(
        "POST /api/v1/memories HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        api.addr
    );
    let answer = raw(api.addr, head.as_bytes(), wait);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"payload_too_large\""), "{answer}");
    // A target or headers too long, and a method a route does not take: JSON errors.
    let long = api.call(
        "GET",
        &format!("/api/v1/search?q={}", "a".repeat(9000)),
        None,
    );
    assert_eq!(long.status, 414);
    assert_eq!(long.error_code(), "uri_too_long");
    let big = "b".repeat(40_000);
    let auth = format!("Bearer {TOKEN}");
    let r = api.send(
        "GET",
        "/api/v1/status",
        &[("authorization", &auth), ("x-big", &big)],
        None,
    );
    assert_eq!(r.status, 431);
    assert_eq!(r.error_code(), "headers_too_large");
    // A head larger than the server reads at all, and a request line that is not HTTP:
    // refused by the HTTP parser before the router, and still in JSON.
    for (request, status, code) in [
        (
            format!(
                "GET /api/v1/status HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
                api.addr,
                // Well past the 64 KiB the parser reads (just past it, hyper's buffer
                // still holds it and the router answers).
                "c".repeat(200_000)
            ),
            "431",
            "head is larger than 65536 bytes",
        ),
        (
            "GET /\u{1} HTTP/1.1\r\n\r\n".to_owned(),
            "400",
            "\"malformed_request\"",
        ),
    ] {
        let answer = raw(api.addr, request.as_bytes(), wait);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        assert!(answer.contains(code), "{answer}");
    }
    let r = api.call("DELETE", "/api/v1/search", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = api.send("POST", "/health/live", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    // Trailing bytes after the JSON value are refused; scheme and media type are read
    // without regard to case; private answers are not to be cached.
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(r#"{"content": "one"} {"content": "two"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("follows the value"), "{}", r.body);
    let lower = format!("bearer {TOKEN}");
    let r = api.send(
        "POST",
        "/api/v1/memories",
        &[
            ("authorization", &lower),
            ("content-type", "Application/JSON; charset=UTF-8"),
        ],
        Some(r#"{"content": "any case"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        api.call("GET", "/api/v1/status", None)
            .header("cache-control"),
        Some("no-store")
    );
    assert_eq!(
        api.call("GET", "/api/v1/memories?limit=5", None).json()["total"],
        1
    );
}

/// Notes read like a notes app's: wikilinks link (a note written later too), an unwritten
/// note offers to start it, `![[…]]` shows the other note inline, bare addresses and
/// tags are links, and lists show plain text, not Markdown.
#[test]
fn web_ui_renders_wikilinks_embeds_addresses_and_plain_previews() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let cookie = api.sign_in();
    let create = |title: &str, content: &str| {
        api.call(
            "POST",
            "/api/v1/memories",
            Some(json!({"title": title, "content": content})),
        )
        .json()["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let plan = create(
        "Weekly plan",
        "# Plan\n\nMake [[Pizza dough|the dough]] first, see [[Pizza dough#Proofing]].\n\n![[Pizza dough]]\n\n| day | what |\n|---|---|\n| Mon | bake |\n\nMore at https://example.org/pizza. #Cooking",
    );
    let page = api.page(&format!("/m/{plan}"), &cookie).body;
    assert!(
        page.contains(
            "<a href=\"/?title=Pizza%20dough#capture\" title=\"Create this note\">the dough</a>"
        ),
        "an unwritten note offers to start it: {page}"
    );
    assert!(
        page.contains("<a href=\"https://example.org/pizza\">https://example.org/pizza</a>."),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"/?tag=cooking\">#Cooking</a>"),
        "{page}"
    );
    // The offer opens the capture form with the title filled in.
    let home = api.page("/?title=Pizza%20dough", &cookie).body;
    assert!(home.contains("value=\"Pizza dough\""), "{home}");
    // Written later, the note is what the links reach, and it shows inline.
    let dough = create(
        "Pizza dough",
        "## Proofing\n\nLet it rise for **two** hours.",
    );
    let page = api.page(&format!("/m/{plan}"), &cookie).body;
    assert!(
        page.contains(&format!("<a href=\"/m/{dough}\">the dough</a>")),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"/m/{dough}#proofing\"")),
        "{page}"
    );
    assert!(
        page.contains("<figure class=\"embed\">")
            && page.contains("Let it rise for <strong>two</strong> hours."),
        "{page}"
    );
    let target = api.page(&format!("/m/{dough}"), &cookie).body;
    assert!(
        target.contains("<h2 id=\"proofing\">Proofing</h2>"),
        "{target}"
    );
    // Lists show the words, not the Markdown.
    let home = api.page("/", &cookie).body;
    assert!(home.contains("Plan Make the dough first"), "{home}");
    assert!(
        !home.contains("| day |") && !home.contains("# Plan"),
        "{home}"
    );
}

/// Tasks in the web UI: an overdue one stands out, one can be changed, and a done one
/// opened again (its points no longer earned).
#[test]
fn web_ui_tasks_are_marked_overdue_changed_and_reopened() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let cookie = api.sign_in();
    let csrf = api.csrf_of(&cookie);
    let late = api
        .call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "File the taxes", "task": {"due": "2020-04-15", "difficulty": 3}})),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page = api.page("/tasks", &cookie).body;
    assert!(page.contains("class=\"task overdue\""), "{page}");
    assert!(page.contains("overdue-label"), "{page}");
    let r = api.form(
        &format!("/tasks/{late}/edit"),
        &cookie,
        &[
            ("csrf", &csrf),
            ("priority", "5"),
            ("due", "2999-01-01"),
            ("difficulty", "1"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let task = api
        .call("GET", &format!("/api/v1/memories/{late}"), None)
        .json()["task"]
        .clone();
    assert_eq!(
        (task["priority"].clone(), task["difficulty"].clone()),
        (json!(5), json!(1))
    );
    assert!(
        task["due"]
            .as_str()
            .is_some_and(|d| d.starts_with("2999-01-01")),
        "{task}"
    );
    let page = api.page("/tasks", &cookie).body;
    assert!(
        !page.contains("class=\"task overdue\""),
        "no longer overdue: {page}"
    );
    let bad = api.form(
        &format!("/tasks/{late}/edit"),
        &cookie,
        &[("csrf", &csrf), ("priority", "high")],
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(
        api.form(&format!("/tasks/{late}/done"), &cookie, &[("csrf", &csrf)])
            .status,
        303
    );
    let page = api.page("/tasks", &cookie).body;
    assert!(
        page.contains("10 xp</strong> earned") || page.contains(">10 xp<"),
        "{page}"
    );
    assert!(
        page.contains(&format!("action=\"/tasks/{late}/reopen\"")),
        "{page}"
    );
    assert_eq!(
        api.form(
            &format!("/tasks/{late}/reopen"),
            &cookie,
            &[("csrf", &csrf)]
        )
        .status,
        303
    );
    let task = api
        .call("GET", &format!("/api/v1/memories/{late}"), None)
        .json()["task"]
        .clone();
    assert_eq!(task["status"], "open");
    let page = api.page("/tasks", &cookie).body;
    assert!(page.contains("0 xp</strong>"), "{page}");
}

/// A title taken from the first line follows the first line through edits, until the
/// owner gives the memory a title of its own.
#[test]
fn a_derived_title_follows_the_first_line_until_one_is_set() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let id = api
        .call(
            "POST",
            "/api/v1/memories",
            Some(json!({"content": "# Groceries\nmilk"})),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/memories/{id}");
    let title = |body: Value| api.call("PATCH", &path, Some(body)).json()["title"].clone();
    assert_eq!(
        title(json!({"content": "# Shopping list\nmilk, eggs"})),
        "Shopping list"
    );
    assert_eq!(title(json!({"title": "Errands"})), "Errands");
    assert_eq!(
        title(json!({"content": "# Something else\nbread"})),
        "Errands",
        "a title of its own stays"
    );
}

/// A task-list checkbox in a memory's text ticks: one character of the text changes.
#[test]
fn web_ui_ticks_a_checkbox_in_the_text() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let cookie = api.sign_in();
    let csrf = api.csrf_of(&cookie);
    let id = api
        .call(
            "POST",
            "/api/v1/memories",
            Some(json!({"title": "Packing", "content": "- [ ] passport\n- [ ] charger\n\n`- [ ] code`"})),
        )
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page = api.page(&format!("/m/{id}"), &cookie).body;
    assert!(page.contains("data-task=\"1\""), "{page}");
    let tick = |task: &str, done: &str| {
        api.form(
            &format!("/m/{id}/tick"),
            &cookie,
            &[("csrf", &csrf), ("task", task), ("done", done)],
        )
    };
    assert_eq!(tick("1", "true").status, 303);
    let content = |api: &Api| {
        api.call("GET", &format!("/api/v1/memories/{id}"), None)
            .json()["content"]
            .clone()
    };
    assert_eq!(
        content(&api),
        "- [ ] passport\n- [x] charger\n\n`- [ ] code`"
    );
    assert_eq!(tick("1", "false").status, 303);
    assert_eq!(
        content(&api),
        "- [ ] passport\n- [ ] charger\n\n`- [ ] code`"
    );
    let r = tick("2", "true");
    assert_eq!(r.status, 422, "code is not a checkbox: {}", r.body);
    assert_eq!(
        content(&api),
        "- [ ] passport\n- [ ] charger\n\n`- [ ] code`"
    );
}

/// The settings page: the capability tokens with a way to revoke each, and replacing the
/// owner's token, which signs every browser out and stops the old token at once.
#[test]
fn web_ui_settings_revoke_a_token_and_replace_the_owners() {
    let api = Api::start(mnemon_web::DEFAULT_BODY_LIMIT);
    let cookie = api.sign_in();
    let csrf = api.csrf_of(&cookie);
    let made = api.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "agent-one", "read_only": true})),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let page = api.page("/settings", &cookie);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("agent-one") && page.body.contains("every collection"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("mnt_"), "no secret on the page");
    let r = api.form(
        "/settings/tokens/agent-one/revoke",
        &cookie,
        &[("csrf", &csrf)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(api.call("GET", "/api/v1/tokens", None).json(), json!([]));
    let r = api.form("/settings/rotate", &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/signin?rotated=1"));
    assert_eq!(
        api.page("/", &cookie).status,
        303,
        "this browser is signed out too"
    );
    assert_eq!(
        api.call("GET", "/api/v1/status", None).status,
        401,
        "the old token stops"
    );
    assert!(
        api.page("/signin?rotated=1", "")
            .body
            .contains("The token was replaced")
    );
}
