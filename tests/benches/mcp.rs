//! MCP round trips against the HTTP API, and the size of `recall` at its default budget.
//!
//! `cargo bench -p mnemon-tests --bench mcp` (release build of the binary first:
//! `cargo build --release`; `MNEMON_BIN` names another). Prints, on one node with the
//! built-in embedder, sequential requests from one client:
//! - `remember` and `recall` per second over MCP stdio (`mnemon mcp`) and over MCP HTTP
//!   (`/mcp` of `mnemon serve`), beside `POST /api/v1/memories` and `GET /api/v1/search`
//!   on the same service in the same run, as ratios;
//! - the characters (and estimated tokens, 4 a character) of a default `recall` page
//!   against the same hits with their whole texts.
//!
//! `MNEMON_BENCH_N` requests per measurement (default 300).

use std::time::{Duration, Instant};

use mnemon_tests::{Served, TestCli, mnemon_bin};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

fn arguments(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().expect("an object").clone()
}

async fn tool(client: &RunningService<RoleClient, ()>, name: &str, args: Value) -> Value {
    let result = client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(arguments(args)))
        .await
        .expect("tool call");
    result.structured_content.expect("structured content")
}

/// Sentences of a few hundred characters, varied enough for search to rank.
fn note(i: usize) -> String {
    let topics = [
        "garden", "boiler", "invoice", "recipe", "travel", "meeting", "book", "bike",
    ];
    format!(
        "Note {i} about the {topic}: on day {day} we talked about the {topic} again, what it \
         costs, who looks after it and when. The {other} came up too; decide by week {week}. \
         Reference marker m{i}x.",
        topic = topics[i % topics.len()],
        other = topics[(i * 7 + 3) % topics.len()],
        day = i % 28 + 1,
        week = i % 52 + 1,
    )
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

async fn mcp_rates(client: &RunningService<RoleClient, ()>, n: usize, offset: usize) -> (f64, f64) {
    let start = Instant::now();
    for i in 0..n {
        tool(client, "remember", json!({"content": note(offset + i)})).await;
    }
    let remember = rate(n, start.elapsed());
    let start = Instant::now();
    for i in 0..n {
        tool(client, "recall", json!({"query": format!("the {} on day {}", ["garden", "boiler", "travel"][i % 3], i % 28 + 1)})).await;
    }
    (remember, rate(n, start.elapsed()))
}

fn main() {
    let n: usize = std::env::var("MNEMON_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("binary: {}", mnemon_bin().display());

    // MCP over stdio, on its own data folder (the process holds the store).
    let stdio_cli = TestCli::new();
    stdio_cli.init();
    let (stdio_remember, stdio_recall) = runtime.block_on(async {
        let mut command = tokio::process::Command::new(mnemon_bin());
        command.arg("mcp");
        for (k, v) in stdio_cli.command().get_envs() {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        let client =
            ().serve(rmcp::transport::TokioChildProcess::new(command).expect("spawn"))
                .await
                .expect("initialize");
        let rates = mcp_rates(&client, n, 0).await;
        client.cancel().await.expect("close");
        rates
    });

    // The service: its HTTP API and MCP over HTTP, measured one after the other.
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().trim().to_owned();
    let agent = ureq::Agent::config_builder().build().new_agent();
    let auth = format!("Bearer {token}");
    let start = Instant::now();
    for i in 0..n {
        agent
            .post(&format!("{}/api/v1/memories", served.url))
            .header("Authorization", &auth)
            .send_json(json!({"content": note(i)}))
            .expect("create");
    }
    let http_create = rate(n, start.elapsed());
    let start = Instant::now();
    for i in 0..n {
        agent
            .get(&format!("{}/api/v1/search", served.url))
            .query(
                "q",
                format!(
                    "the {} on day {}",
                    ["garden", "boiler", "travel"][i % 3],
                    i % 28 + 1
                ),
            )
            .header("Authorization", &auth)
            .call()
            .expect("search")
            .body_mut()
            .read_to_string()
            .expect("body");
    }
    let http_search = rate(n, start.elapsed());
    let (http_remember, http_recall, default_page, full_page) = runtime.block_on(async {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let client = ()
            .serve(StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", served.url))
                    .auth_header(token.clone()),
            ))
            .await
            .expect("initialize");
        let (remember, recall) = mcp_rates(&client, n, n).await;
        // The size of a default recall page, and of the same hits in full.
        let query = json!({"query": "the boiler on day 3, what it costs"});
        let page = tool(&client, "recall", query.clone()).await;
        let mut full_query = query.clone();
        full_query["full"] = json!(true);
        full_query["max_tokens"] = json!(1_000_000);
        let full = tool(&client, "recall", full_query).await;
        assert_eq!(
            page["hits"].as_array().map(Vec::len),
            full["hits"].as_array().map(Vec::len),
            "the same hits"
        );
        client.cancel().await.expect("close");
        (
            remember,
            recall,
            page.to_string().chars().count(),
            full.to_string().chars().count(),
        )
    });
    served.stop();

    println!("sequential requests, one client, {n} each, built-in embedder:");
    println!(
        "  HTTP API   POST /api/v1/memories {http_create:8.1}/s   GET /api/v1/search {http_search:8.1}/s"
    );
    println!(
        "  MCP HTTP   remember {http_remember:8.1}/s ({:.2}x the API)   recall {http_recall:8.1}/s ({:.2}x)",
        http_remember / http_create,
        http_recall / http_search
    );
    println!(
        "  MCP stdio  remember {stdio_remember:8.1}/s ({:.2}x the API)   recall {stdio_recall:8.1}/s ({:.2}x)",
        stdio_remember / http_create,
        stdio_recall / http_search
    );
    println!(
        "recall, 10 hits: default page {default_page} characters (~{} tokens); the same hits with their whole texts {full_page} characters (~{} tokens)",
        default_page / 4,
        full_page / 4
    );
}
