//! The MCP server through rmcp's own client: over stdio (`mnemon mcp`, the real binary as
//! a child process) and over streamable HTTP (`/mcp` of a real `mnemon serve`).

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{ServiceError, ServiceExt};
use serde_json::{Value, json};

use mnemon_tests::{Served, TestCli, mnemon_bin};

fn args(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().expect("an object").clone()
}

/// A tool's answer: its structured content, which its text content repeats for clients
/// that read only text (an error has text only).
pub(crate) fn text(result: &CallToolResult) -> Value {
    let text = &result.content[0].as_text().expect("text content").text;
    let parsed = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()));
    if let Some(structured) = &result.structured_content {
        assert_eq!(
            &parsed, structured,
            "the text and the structured content differ"
        );
    }
    parsed
}

pub(crate) async fn call<H: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(arguments)))
        .await
}

/// What an agent does: list tools, remember, recall, read, link, forget, and get clear
/// errors for bad arguments.
async fn agent_session(client: RunningService<RoleClient, ()>) {
    let listed = client.list_all_tools().await.expect("tools");
    let tools: Vec<String> = listed.iter().map(|t| t.name.to_string()).collect();
    // Every tool has a title, says what it does to the store, and describes its answer.
    let schemas: std::collections::HashMap<String, Value> = listed
        .iter()
        .map(|t| {
            assert!(
                t.title.as_ref().is_some_and(|title| !title.is_empty()),
                "{} has no title",
                t.name
            );
            let hints = t
                .annotations
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no annotations", t.name));
            // Only `ask` reaches outside the node (the chat model).
            assert_eq!(hints.open_world_hint, Some(t.name == "ask"), "{}", t.name);
            let read_only = hints
                .read_only_hint
                .unwrap_or_else(|| panic!("{}: read-only?", t.name));
            let reads = [
                "recall",
                "get",
                "list",
                "list_collections",
                "list_tasks",
                "ask",
            ]
            .contains(&t.name.as_ref());
            assert_eq!(read_only, reads, "{}", t.name);
            assert_eq!(
                hints.destructive_hint,
                Some(["update", "forget"].contains(&t.name.as_ref())),
                "{}",
                t.name
            );
            let schema = t
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no output schema", t.name));
            (t.name.to_string(), Value::Object(schema.as_ref().clone()))
        })
        .collect();
    let valid = |tool: &str, result: &Value| {
        if let Err(e) = mnemon_tests::validate_schema(&schemas[tool], result) {
            panic!("{tool}'s answer does not fit its output schema: {e}\n{result}");
        }
    };
    for name in [
        "remember",
        "recall",
        "get",
        "update",
        "forget",
        "link",
        "list_collections",
        "list",
        "ask",
        "add_task",
        "list_tasks",
        "complete_task",
    ] {
        assert!(
            tools.iter().any(|t| t == name),
            "{name} missing from {tools:?}"
        );
    }

    let kept = call(
        &client,
        "remember",
        json!({"content": "The boiler service is due every October", "tags": ["house"]}),
    )
    .await
    .expect("remember");
    let kept = text(&kept);
    valid("remember", &kept);
    let id = kept["id"].as_str().expect("an id").to_owned();
    assert_eq!(kept["tags"], json!(["house"]));
    // The same fact again (another case, a full stop) is the same memory, not a copy.
    let again = text(
        &call(
            &client,
            "remember",
            json!({"content": "the boiler service is due every october.", "tags": ["house"]}),
        )
        .await
        .expect("remember again"),
    );
    valid("remember", &again);
    assert_eq!(
        (again["id"].as_str(), &again["created"]),
        (Some(id.as_str()), &json!(false))
    );
    assert_eq!(kept["created"], true);
    let copy = text(
        &call(
            &client,
            "remember",
            json!({"content": "the boiler service is due every october.", "dedupe": "exact"}),
        )
        .await
        .expect("remember exact"),
    );
    assert_eq!(copy["created"], true, "exact asks for the same bytes");
    let copy_id = copy["id"].as_str().expect("id").to_owned();
    call(&client, "forget", json!({"id": copy_id}))
        .await
        .expect("forget the copy");
    // Several at once: each answered in order; one already there is not written again.
    let several = text(
        &call(
            &client,
            "remember",
            json!({"collection": "default", "kind": "note", "memories": [
                {"content": "The gate code is 2468", "kind": "fact"},
                {"content": "The boiler service is due every October", "tags": ["house"]},
                {"content": "Bins go out on Thursday", "title": "Bins", "tags": ["bulk"]},
            ]}),
        )
        .await
        .expect("remember several"),
    );
    valid("remember", &several);
    let written = several["memories"].as_array().expect("memories");
    assert_eq!(written.len(), 3, "{several}");
    assert_eq!(
        several["id"], written[0]["id"],
        "the first is the answer's memory"
    );
    assert_eq!(
        written
            .iter()
            .map(|m| m["created"].clone())
            .collect::<Vec<_>>(),
        [json!(true), json!(false), json!(true)]
    );
    assert_eq!(written[1]["id"], id.as_str());
    assert_eq!(written[0]["kind"], "fact");
    assert_eq!(written[2]["title"], "Bins");
    assert_eq!(written[2]["tags"], json!(["bulk"]));
    for memory in [&written[0], &written[2]] {
        call(&client, "forget", json!({"id": memory["id"]}))
            .await
            .expect("forget");
    }
    let refused = call(
        &client,
        "remember",
        json!({"memories": [{"content": "  "}, {"content": "never written"}]}),
    )
    .await
    .expect_err("an empty memory");
    assert!(
        refused.to_string().contains("memories[0]") && refused.to_string().contains("none"),
        "{refused}"
    );
    assert!(
        call(
            &client,
            "remember",
            json!({"content": "x", "memories": [{"content": "y"}]})
        )
        .await
        .is_err(),
        "content and memories"
    );
    let other = call(&client, "remember", json!({"content": "Plumber: 555-0100"}))
        .await
        .expect("remember");
    let other_id = text(&other)["id"].as_str().expect("id").to_owned();

    let hits = call(
        &client,
        "recall",
        json!({"query": "boiler october", "mode": "keyword"}),
    )
    .await
    .expect("recall");
    let hits = text(&hits);
    valid("recall", &hits);
    assert_eq!(hits["hits"][0]["id"], id.as_str(), "{hits}");

    let got = text(&call(&client, "get", json!({"id": id})).await.expect("get"));
    valid("get", &got);
    // The check can fail: an answer of the wrong shape does not fit.
    let mut wrong = got.clone();
    wrong["tags"] = json!("house");
    assert!(mnemon_tests::validate_schema(&schemas["get"], &wrong).is_err());
    wrong = got.clone();
    wrong.as_object_mut().expect("object").remove("id");
    assert!(mnemon_tests::validate_schema(&schemas["get"], &wrong).is_err());
    assert_eq!(got["content"], "The boiler service is due every October");
    let updated = call(
        &client,
        "update",
        json!({"id": id, "title": "Boiler", "add_tags": ["yearly"]}),
    )
    .await
    .expect("update");
    assert_eq!(text(&updated)["title"], "Boiler");
    let linked = call(
        &client,
        "link",
        json!({"from": id, "to": other_id, "relation": "call"}),
    )
    .await
    .expect("link");
    assert_eq!(
        text(&linked)["links"],
        json!([{"target": other_id, "relation": "call"}])
    );
    let collections = text(
        &call(&client, "list_collections", json!({}))
            .await
            .expect("collections"),
    );
    valid("list_collections", &collections);
    assert!(
        collections["collections"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );

    let expect_error = |result: Result<CallToolResult, ServiceError>, needle: &str| match result {
        Err(ServiceError::McpError(e)) => {
            assert!(
                e.message.contains(needle),
                "{e:?} should mention {needle:?}"
            )
        }
        Ok(r) if r.is_error == Some(true) => {
            let message = text(&r).to_string();
            assert!(
                message.contains(needle),
                "{message} should mention {needle:?}"
            )
        }
        other => panic!("expected an MCP error mentioning {needle:?}, got {other:?}"),
    };
    // Reads that fit: recall pages through its hits a budget at a time, and the pages add
    // up to the whole answer; get reads a long text on from a cursor; list is brief.
    for i in 0..12 {
        call(
            &client,
            "remember",
            json!({"content": format!("Pagination marker {i}: the crate of {i} apples"), "tags": ["paging"]}),
        )
        .await
        .expect("remember");
    }
    let query = json!({"query": "pagination marker apples", "mode": "keyword", "k": 12, "max_tokens": 100000});
    let whole = text(
        &call(&client, "recall", query.clone())
            .await
            .expect("recall"),
    );
    valid("recall", &whole);
    let whole_ids = mnemon_tests::ids(&whole["hits"]);
    assert_eq!(whole_ids.len(), 12, "{whole}");
    assert!(
        whole.get("next_cursor").is_none() && whole.get("cut").is_none(),
        "{whole}"
    );
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = query.clone();
        args["max_tokens"] = json!(100);
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let page = text(&call(&client, "recall", args).await.expect("recall page"));
        valid("recall", &page);
        pages += 1;
        paged.extend(
            mnemon_tests::ids(&page["hits"])
                .into_iter()
                .map(str::to_owned),
        );
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(
                    page["cut"]
                        .as_str()
                        .is_some_and(|c| c.contains("later pages")),
                    "{page}"
                );
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 20, "recall never ends");
    }
    assert!(pages > 1, "a small budget pages");
    assert_eq!(paged, whole_ids, "the pages add up to the whole answer");
    let full = text(
        &call(
            &client,
            "recall",
            json!({"query": "pagination marker apples", "mode": "keyword", "k": 1, "full": true}),
        )
        .await
        .expect("recall full"),
    );
    assert!(
        full["hits"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("apples")),
        "{full}"
    );
    expect_error(
        call(
            &client,
            "recall",
            json!({"query": "apples", "cursor": "soon"}),
        )
        .await,
        "cursor",
    );
    let long: String = (0..400)
        .map(|i| format!("line {i} of a long memory\n"))
        .collect();
    let long_id = text(
        &call(&client, "remember", json!({"content": long}))
            .await
            .expect("remember long"),
    )["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut read = String::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({"id": long_id, "max_tokens": 500});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let part = text(&call(&client, "get", args).await.expect("get part"));
        valid("get", &part);
        assert_eq!(part["total_chars"], long.chars().count());
        assert!(part["content"].as_str().expect("content").chars().count() <= 2000);
        read.push_str(part["content"].as_str().expect("content"));
        match part["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(read, long, "the parts add up to the whole text");
    // The memory as a resource takes the same budget: the text says where to read on.
    let mut read = String::new();
    let mut uri = format!("mnemon://memory/{long_id}?max_tokens=500");
    for _ in 0..100 {
        let part = client
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
            .expect("read part");
        let part = serde_json::to_value(&part.contents[0]).expect("json")["text"]
            .as_str()
            .expect("text")
            .to_owned();
        assert!(part.chars().count() <= 2000, "{} characters", part.len());
        let body = part
            .strip_prefix("# line 0 of a long memory\n\n")
            .expect("the title");
        let (body, rest) = body.split_once("\n\ntags: ").expect("the tags");
        read.push_str(body);
        match rest.split_once("?cursor=") {
            Some((_, next)) => {
                let next: String = next.chars().take_while(char::is_ascii_digit).collect();
                uri = format!("mnemon://memory/{long_id}?max_tokens=500&cursor={next}");
            }
            None => break,
        }
    }
    assert_eq!(read, long, "the resource's parts add up to the whole text");
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new(format!(
                "mnemon://memory/{long_id}?pages=2"
            )))
            .await
            .is_err(),
        "a parameter resources do not take"
    );
    let briefs = text(
        &call(&client, "list", json!({"tag": "paging", "max_tokens": 100}))
            .await
            .expect("list"),
    );
    valid("list", &briefs);
    let first = &briefs["memories"][0];
    assert!(
        first["first_lines"]
            .as_str()
            .is_some_and(|l| l.starts_with("Pagination marker")),
        "{briefs}"
    );
    assert!(first.get("content").is_none(), "a brief has no full text");
    assert!(briefs["next_cursor"].is_string(), "{briefs}");
    for id in whole_ids.iter().copied().chain([long_id.as_str()]) {
        call(&client, "forget", json!({"id": id}))
            .await
            .expect("forget");
    }

    // Memories are resources too.
    let resources = client.list_all_resources().await.expect("resources");
    let uri = format!("mnemon://memory/{id}");
    assert!(resources.iter().any(|r| r.uri == uri), "{resources:?}");
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .expect("read");
    let body = serde_json::to_value(&read.contents[0]).expect("json");
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("# Boiler") && t.contains("every October")),
        "{body}"
    );

    // Bad arguments are MCP errors with a clear message (a protocol error, or a tool
    // result marked as an error, which is how rmcp reports arguments that do not parse),
    // and the session goes on.
    expect_error(
        call(&client, "remember", json!({"title": "no content"})).await,
        "content",
    );
    expect_error(
        call(&client, "recall", json!({"query": "  "})).await,
        "query",
    );
    // The API's rules: k from 1 to 1000, the modes by their names (`vector` is
    // `semantic`).
    expect_error(
        call(&client, "recall", json!({"query": "boiler", "k": 5000})).await,
        "k must be from 1 to 1000",
    );
    expect_error(
        call(
            &client,
            "recall",
            json!({"query": "boiler", "mode": "fuzzy"}),
        )
        .await,
        "mode must be hybrid, semantic or keyword",
    );
    let by_meaning = call(
        &client,
        "recall",
        json!({"query": "boiler october", "mode": "vector", "k": 1}),
    )
    .await
    .expect("recall by meaning");
    assert_eq!(text(&by_meaning)["hits"].as_array().map(Vec::len), Some(1));
    expect_error(
        call(&client, "get", json!({"id": "not-an-id"})).await,
        "not-an-id",
    );
    expect_error(
        call(
            &client,
            "remember",
            json!({"content": "x", "collection": "nowhere"}),
        )
        .await,
        "nowhere",
    );
    expect_error(
        call(&client, "no_such_tool", json!({})).await,
        "tool not found",
    );

    // Tasks: added with fields, listed by due date, finished for points.
    let later = text(
        &call(
            &client,
            "add_task",
            json!({"text": "Bleed the radiators", "due": "2026-12-20", "difficulty": 3}),
        )
        .await
        .expect("add_task"),
    );
    assert_eq!(later["kind"], "task");
    assert_eq!(later["task"]["xp"], 30, "{later}");
    let sooner = text(
        &call(
            &client,
            "add_task",
            json!({"text": "Book the boiler service", "due": "2026-12-01", "priority": 2}),
        )
        .await
        .expect("add_task"),
    );
    let board = text(&call(&client, "list_tasks", json!({})).await.expect("list"));
    valid("list_tasks", &board);
    let order = mnemon_tests::ids(&board["tasks"]);
    assert_eq!(
        order,
        [&sooner["id"], &later["id"]].map(|v| v.as_str().expect("id"))
    );
    let done = text(
        &call(&client, "complete_task", json!({"id": later["id"]}))
            .await
            .expect("complete"),
    );
    assert_eq!(done["task"]["status"], "done");
    let board = text(
        &call(&client, "list_tasks", json!({"all": true}))
            .await
            .expect("list"),
    );
    assert_eq!(
        (board["open"].clone(), board["done"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(board["xp_earned"], 30, "{board}");
    expect_error(
        call(&client, "complete_task", json!({"id": other_id})).await,
        "not a task",
    );
    expect_error(
        call(&client, "add_task", json!({"text": "x", "difficulty": 9})).await,
        "difficulty",
    );
    expect_error(
        call(&client, "add_task", json!({"text": "x", "due": "someday"})).await,
        "someday",
    );

    // Questions are answered by the configured chat model, citing the memories.
    let answer = text(
        &call(
            &client,
            "ask",
            json!({"question": "When is the boiler service due?"}),
        )
        .await
        .expect("ask"),
    );
    valid("ask", &answer);
    assert_eq!(
        answer["answer"], "From your notes: The boiler service is due every October [1].",
        "{answer}"
    );
    assert_eq!(answer["sources"][0]["id"], id.as_str(), "{answer}");
    assert_eq!(answer["cited"], json!([1]));

    // Templates name memories and collections; a collection reads as its memories.
    let templates: Vec<String> = client
        .list_all_resource_templates()
        .await
        .expect("templates")
        .into_iter()
        .map(|t| t.uri_template.clone())
        .collect();
    assert_eq!(
        templates,
        [
            "mnemon://memory/{id}{?max_tokens,cursor}",
            "mnemon://collection/{name}{?max_tokens,cursor}",
            "mnemon://tag/{tag}{?max_tokens,cursor}"
        ]
    );
    let read = client
        .read_resource(ReadResourceRequestParams::new(
            "mnemon://collection/default",
        ))
        .await
        .expect("read collection");
    let listing = serde_json::to_value(&read.contents[0]).expect("json");
    assert!(
        listing["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("(mnemon://memory/{id})")) && t.contains("Boiler")),
        "{listing}"
    );
    // Completions: collection names, and memories by the start of their titles.
    assert_eq!(
        client
            .complete_resource_simple("mnemon://collection/{name}", "name", "DEF")
            .await
            .expect("complete"),
        ["default"]
    );
    assert_eq!(
        client
            .complete_resource_simple("mnemon://memory/{id}", "id", "boil")
            .await
            .expect("complete"),
        [id.as_str()]
    );
    assert_eq!(
        client
            .complete_prompt_simple("what_do_i_know", "collection", "d")
            .await
            .expect("complete"),
        ["default"]
    );
    // Tags: completed, and a tag reads as its memories.
    assert_eq!(
        client
            .complete_resource_simple("mnemon://tag/{tag}", "tag", "HO")
            .await
            .expect("complete"),
        ["house"]
    );
    let tagged = client
        .read_resource(ReadResourceRequestParams::new("mnemon://tag/house"))
        .await
        .expect("read tag");
    let tagged = serde_json::to_value(&tagged.contents[0]).expect("json");
    assert!(
        tagged["text"].as_str().is_some_and(
            |t| t.contains(&format!("(mnemon://memory/{id})")) && t.lines().count() == 1
        ),
        "{tagged}"
    );
    // Prompts built from the node's own search and task list.
    let prompts: Vec<String> = client
        .list_all_prompts()
        .await
        .expect("prompts")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(prompts, ["what_do_i_know", "summarise_week", "plan_tasks"]);
    let prompt_text = |result: &rmcp::model::GetPromptResult| {
        serde_json::to_value(&result.messages[0].content).expect("json")["text"]
            .as_str()
            .expect("text")
            .to_owned()
    };
    let known = client
        .get_prompt(
            rmcp::model::GetPromptRequestParams::new("what_do_i_know")
                .with_arguments(args(json!({"topic": "boiler october"}))),
        )
        .await
        .expect("prompt");
    assert!(
        prompt_text(&known).contains(&format!("[{id}] Boiler")),
        "{}",
        prompt_text(&known)
    );
    let week = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("summarise_week"))
        .await
        .expect("prompt");
    assert!(
        prompt_text(&week).contains(&other_id),
        "{}",
        prompt_text(&week)
    );
    let plan = client
        .get_prompt(rmcp::model::GetPromptRequestParams::new("plan_tasks"))
        .await
        .expect("prompt");
    assert!(
        prompt_text(&plan).contains("Book the boiler service"),
        "{}",
        prompt_text(&plan)
    );
    assert!(
        client
            .get_prompt(rmcp::model::GetPromptRequestParams::new("what_do_i_know"))
            .await
            .is_err(),
        "a prompt without its required argument is refused"
    );

    // Forget removes it, and recall no longer finds it.
    let forgot = text(
        &call(&client, "forget", json!({"id": id}))
            .await
            .expect("forget"),
    );
    valid("forget", &forgot);
    assert_eq!(forgot["forgot"], id.as_str());
    expect_error(call(&client, "get", json!({"id": id})).await, &id);
    let hits = text(
        &call(
            &client,
            "recall",
            json!({"query": "boiler october", "mode": "keyword"}),
        )
        .await
        .expect("recall"),
    );
    assert!(
        hits["hits"]
            .as_array()
            .is_some_and(|h| h.iter().all(|h| h["id"] != id.as_str())),
        "{hits}"
    );
    client.cancel().await.expect("close");
}

/// A client that passes on the URIs of `notifications/resources/updated`.
#[derive(Clone)]
struct Watcher(tokio::sync::mpsc::UnboundedSender<String>);

impl rmcp::ClientHandler for Watcher {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }
}

/// Checks a finished CLI command succeeded.
fn edit_ok(output: std::io::Result<std::process::Output>) {
    let output = output.expect("run the CLI");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A local chat server speaking the chat-completions protocol, configured as `[chat]`.
fn with_chat(cli: &TestCli) -> mnemon_tests::ChatServer {
    let chat = mnemon_tests::ChatServer::start(None);
    let config = format!(
        "[chat]\nurl = \"{}\"\nmodel = \"{}\"\n",
        chat.url(),
        mnemon_tests::TEST_CHAT_MODEL
    );
    mnemon_identity::private::write_private(&cli.data_dir().join("config.toml"), config.as_bytes())
        .expect("config");
    chat
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn an_agent_uses_mnemon_mcp_over_stdio() {
    let cli = TestCli::new();
    cli.init();
    let _chat = with_chat(&cli);
    let mut command = tokio::process::Command::new(mnemon_bin());
    command.arg("mcp");
    for (k, v) in cli.command().get_envs() {
        match v {
            Some(v) => command.env(k, v),
            None => command.env_remove(k),
        };
    }
    runtime().block_on(async {
        let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn mnemon mcp");
        let client = ().serve(transport).await.expect("initialize");
        let info = client.peer_info().expect("server info");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("mnemon")
        );
        agent_session(client).await;
    });
    // What the agent did is in the store: the plumber's number and the two tasks.
    assert_eq!(cli.count(), 3);
}

#[test]
fn an_agent_uses_mcp_over_http_with_the_token_and_nothing_without_it() {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let cli = TestCli::new();
    cli.init();
    let _chat = with_chat(&cli);
    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().trim().to_owned();
    let url = format!("{}/mcp", served.url);
    runtime().block_on(async {
        // No token: refused before MCP sees anything.
        let anonymous = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()),
        );
        assert!(
            ().serve(anonymous).await.is_err(),
            "initialised without a token"
        );
        // A subscription to a memory fires when the memory is edited through the CLI.
        let (updates, mut updated) = tokio::sync::mpsc::unbounded_channel();
        let watcher = Watcher(updates)
            .serve(StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(url.clone())
                    .auth_header(token.clone()),
            ))
            .await
            .expect("initialize");
        let watched = text(
            &call(
                &watcher,
                "remember",
                json!({"content": "The bike lock code is 4711"}),
            )
            .await
            .expect("remember"),
        );
        let watched_id = watched["id"].as_str().expect("id").to_owned();
        let uri = format!("mnemon://memory/{watched_id}");
        #[allow(deprecated)]
        watcher
            .subscribe(rmcp::model::SubscribeRequestParams::new(uri.clone()))
            .await
            .expect("subscribe");
        let edit = cli
            .command()
            .args(["edit", &watched_id, "--title", "Bike lock"])
            .output();
        edit_ok(edit);
        let notified = tokio::time::timeout(Duration::from_secs(30), updated.recv())
            .await
            .expect("a notification within 30 s")
            .expect("a notification");
        assert_eq!(notified, uri);
        // A client that initialises negotiates 2025-11-25, the last version with
        // `initialize`.
        assert_eq!(
            watcher.peer_info().map(|i| i.protocol_version.to_string()),
            Some("2025-11-25".to_owned())
        );
        // Protocol 2026-07-28 (stateless): `server/discover`, and `subscriptions/listen`
        // to the same memory, told of an edit made through the CLI.
        use rmcp::service::{ClientLifecycleMode, ClientServiceExt as _};
        let modern = ()
            .serve_with_lifecycle(
                StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(url.clone())
                        .auth_header(token.clone()),
                ),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .expect("server/discover");
        let discovered = modern
            .discover(rmcp::model::RequestMetaObject::default())
            .await
            .expect("server/discover");
        assert!(
            serde_json::to_string(&discovered)
                .expect("json")
                .contains("2026-07-28"),
            "{discovered:?}"
        );
        let mut listening = modern
            .listen(
                rmcp::model::SubscriptionFilter::builder()
                    .resource_subscriptions(vec![uri.clone()])
                    .build(),
            )
            .await
            .expect("subscriptions/listen");
        edit_ok(
            cli.command()
                .args(["edit", &watched_id, "--title", "Bike lock, new code"])
                .output(),
        );
        let heard = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match listening.next().await.expect("a notification") {
                    Some(rmcp::model::ServerNotification::ResourceUpdatedNotification(n)) => {
                        return n.params.uri;
                    }
                    Some(_) => {}
                    None => panic!("the subscription ended"),
                }
            }
        })
        .await
        .expect("told within 30 s");
        assert_eq!(heard, uri);
        drop(listening);
        modern.cancel().await.expect("close");
        call(&watcher, "forget", json!({"id": watched_id}))
            .await
            .expect("forget");
        watcher.cancel().await.expect("close");

        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(token),
        );
        let client = ().serve(transport).await.expect("initialize");
        agent_session(client).await;
    });
    let status = ureq::post(&url)
        .header("Content-Type", "application/json")
        .send("{}")
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| match e {
            ureq::Error::StatusCode(code) => code,
            other => panic!("{other}"),
        });
    assert_eq!(status, 401);
    // What the MCP endpoint refuses is refused in the API's JSON error shape too.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut refused = agent
        .post(&url)
        .header(
            "Authorization",
            &format!("Bearer {}", cli.run(&["token"]).ok()),
        )
        .header("Content-Type", "text/plain")
        .send("hello")
        .expect("an answer");
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let body: Value = refused.body_mut().read_json().expect("a JSON error");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(cli.count(), 3);
    served.stop();
}

/// A line that is not JSON, or too long to read, gets JSON-RPC's parse error at once (a
/// client must not wait forever), and the session goes on.
#[test]
fn malformed_and_oversize_lines_on_stdio_are_answered_with_parse_errors() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::Stdio;
    let cli = TestCli::new();
    cli.init();
    let mut child = cli
        .command()
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mnemon mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let huge = format!("{{\"x\":\"{}\"}}\n", "a".repeat(mnemon_mcp::MAX_LINE + 1));
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "this is not json",
            huge.trim_end(),
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        ] {
            stdin.write_all(line.as_bytes()).expect("write");
            stdin.write_all(b"\n").expect("write");
        }
        stdin
    });
    let mut answers = BufReader::new(child.stdout.take().expect("stdout"));
    let mut parse_errors = Vec::new();
    let mut listed = false;
    while !(listed && parse_errors.len() == 2) {
        let mut line = String::new();
        assert!(
            answers.read_line(&mut line).expect("read") > 0,
            "ended early"
        );
        let answer: Value = serde_json::from_str(&line).expect("each answer is JSON");
        if answer["error"]["code"] == -32700 {
            assert_eq!(answer["id"], Value::Null);
            parse_errors.push(answer["error"]["message"].as_str().unwrap_or("").to_owned());
        } else if answer["id"] == 2 {
            assert!(
                answer["result"]["tools"]
                    .as_array()
                    .is_some_and(|t| t.len() >= 10)
            );
            listed = true;
        }
    }
    assert!(
        parse_errors.iter().any(|m| m.contains("not JSON")),
        "{parse_errors:?}"
    );
    assert!(
        parse_errors.iter().any(|m| m.contains("longer than")),
        "{parse_errors:?}"
    );
    drop(writer.join().expect("writer"));
    assert!(
        child.wait().expect("wait").success(),
        "ends when its input ends"
    );
    // Input that ends right after a bad line still gets its answer.
    let run = cli.run_with(&["mcp"], &[], Some(b"not json\n"));
    assert!(
        run.stdout.contains("-32700"),
        "{:?} {:?}",
        run.stdout,
        run.stderr
    );
}
