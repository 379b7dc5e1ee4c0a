//! `mnemon ask` and `POST /api/v1/ask` against a local server that speaks the real
//! OpenAI chat-completions streaming protocol (server-sent events in chunked encoding).

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use mnemon_tests::{ChatServer, Served, TEST_CHAT_MODEL, TestCli};

const KEY: &str = "sk-chat-test";

/// A node with three memories and `[chat]` pointing at `server`.
fn node_with_memories(server_url: &str) -> TestCli {
    let cli = TestCli::new();
    cli.init();
    for text in [
        "The spare house key is under the blue flowerpot. Ask Mia if it is gone.",
        "Car service is due in March; the garage is on Elm Street.",
        "Mia's birthday is on the 4th of June; she likes orchids.",
    ] {
        cli.run(&["add", text]).ok();
    }
    std::fs::write(
        cli.data_dir().join("config.toml"),
        format!(
            "[chat]\nurl = \"{server_url}\"\nmodel = \"{TEST_CHAT_MODEL}\"\napi_key_env = \"CHAT_KEY\"\n"
        ),
    )
    .expect("config");
    cli
}

#[test]
fn ask_streams_a_cited_answer_and_says_when_the_endpoint_is_down() {
    let mut server = ChatServer::start(Some(KEY));
    let cli = node_with_memories(&server.url());

    // The answer arrives piece by piece: the first word is printed while the server still
    // holds the rest.
    server.hold();
    let mut child = cli
        .command()
        .args(["ask", "where", "is", "the", "spare", "key?"])
        .env("CHAT_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 5];
    stdout.read_exact(&mut first).expect("the first word");
    assert_eq!(&first, b"From ");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "mnemon ask finished while the server still held the answer"
    );
    server.release();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("the rest");
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stderr}");
    let printed = format!("From {rest}");
    assert!(
        printed
            .starts_with("From your notes: The spare house key is under the blue flowerpot [1]."),
        "{printed}"
    );
    // The sources follow, the cited one marked, with its id.
    let key_line = printed
        .lines()
        .find(|l| l.starts_with("*[1] "))
        .unwrap_or_else(|| panic!("no cited source: {printed}"));
    assert!(key_line.contains("The spare house key"), "{key_line}");

    // What the model was sent: streaming, the model, the numbered memories.
    let request = server.requests().pop().expect("a request");
    assert_eq!(request["stream"], true);
    assert_eq!(request["model"], TEST_CHAT_MODEL);
    let prompt = request["messages"][1]["content"].as_str().expect("prompt");
    assert!(prompt.contains("[1] The spare house key"), "{prompt}");
    assert!(
        prompt.ends_with("Question: where is the spare key?"),
        "{prompt}"
    );
    assert_eq!(request["messages"][0]["role"], "system");

    // JSON: the answer, the sources and which were cited.
    let json = cli
        .run_with(&["ask", "--json", "spare key"], &[("CHAT_KEY", KEY)], None)
        .json();
    assert_eq!(json["cited"], serde_json::json!([1]));
    assert_eq!(json["model"], TEST_CHAT_MODEL);
    assert!(json["sources"].as_array().is_some_and(|s| !s.is_empty()));

    // A wrong key: the endpoint's own message.
    cli.run_with(&["ask", "spare key"], &[("CHAT_KEY", "wrong")], None)
        .fails_with("Incorrect API key provided");
    // Bad input is named.
    cli.run_with(&["ask", "--k", "99", "key"], &[("CHAT_KEY", KEY)], None)
        .fails_with("k must be from 1 to 20");

    // The endpoint down: a clear error naming it.
    let url = server.url();
    server.stop();
    let run = cli.run_with(&["ask", "spare key"], &[("CHAT_KEY", KEY)], None);
    run.fails_with("unreachable");
    run.fails_with(&url);
}

#[test]
fn the_api_streams_server_sent_events_through_a_running_service() {
    let server = ChatServer::start(Some(KEY));
    let cli = node_with_memories(&server.url());
    // The service reads the key from its environment.
    let served = Served::spawn_with_env(&cli, &[], &[("CHAT_KEY", KEY)]);
    let token = cli.run(&["token"]).ok().trim().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let ask = |question: &str| {
        agent
            .post(&format!("{}/api/v1/ask", served.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({ "question": question }))
            .expect("ask")
    };
    let response = ask("when is Mia's birthday?");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut events: Vec<(String, String)> = Vec::new();
    let reader = BufReader::new(response.into_body().into_reader());
    let (mut event, mut data) = (String::new(), String::new());
    for line in reader.lines() {
        let line = line.expect("line");
        if line.is_empty() {
            if !data.is_empty() {
                events.push((std::mem::take(&mut event), std::mem::take(&mut data)));
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"sources"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"answer"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "delta").count() > 3,
        "{kinds:?}"
    );
    let streamed: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| serde_json::from_str::<String>(d).expect("a JSON string"))
        .collect();
    let answer: serde_json::Value =
        serde_json::from_str(&events.last().expect("answer").1).expect("json");
    assert_eq!(answer["answer"].as_str(), Some(streamed.as_str()));
    assert!(
        streamed.contains("birthday is on the 4th of June; she likes orchids [1]."),
        "{streamed}"
    );
    let sources: serde_json::Value = serde_json::from_str(&events[0].1).expect("sources");
    assert!(
        sources[0]["title"]
            .as_str()
            .is_some_and(|t| t.contains("birthday")),
        "{sources}"
    );

    // The CLI beside the service goes through it and streams the same way.
    let out = cli.run(&["ask", "Mia's birthday"]);
    assert!(out.ok().contains("she likes orchids [1]."), "{}", out.ok());

    // An empty question is refused before anything streams, with a status.
    assert_eq!(ask("  ").status().as_u16(), 422);
    drop(server);
    assert_eq!(ask("birthday").status().as_u16(), 502);
    served.stop();
}
