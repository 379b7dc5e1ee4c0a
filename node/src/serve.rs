//! `mnemon serve`: the node as a long-lived HTTP service.
//!
//! ```text
//! DATA/api-token    the bearer token (mode 0600), made at init or on first serve
//! DATA/serve.json   {"url", "pid"} while a service runs: the CLI talks to it
//! DATA/ui-sessions.json  the web UI's sessions (hashes of the cookies, mode 0600)
//! ```
//!
//! Shutdown (SIGINT, SIGTERM) stops accepting connections, lets requests in flight
//! finish, saves the indexes and removes `serve.json`. Every write was durable before it
//! was acknowledged, so nothing acknowledged is lost however the process ends.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mnemon_api::Api;
use mnemon_web::ServerConfig;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::app::Service;

/// The token file inside the data folder.
pub const TOKEN_FILE: &str = "api-token";
/// The running-service file inside the data folder.
pub const SERVE_FILE: &str = "serve.json";
/// The web UI's sessions (hashes only), kept between runs.
pub const SESSIONS_FILE: &str = "ui-sessions.json";
/// The capability tokens the owner made (names, scopes, hashes of the secrets).
pub const TOKENS_FILE: &str = "tokens.json";
/// The default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7777";

/// What `serve.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    /// The API's base address, e.g. `http://127.0.0.1:7777`.
    pub url: String,
    /// The service's process id.
    pub pid: u32,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `text` to `path` with mode 0600, replacing it atomically.
fn write_private(path: &Path, text: &str) -> Result<()> {
    mnemon_identity::private::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The API token, made (and saved with mode 0600) if there is none, or anew if `rotate`.
pub fn token(data: &Path, rotate: bool) -> Result<String> {
    let path = data.join(TOKEN_FILE);
    if !rotate {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    let token = format!("mnm_{}", random_hex(32));
    write_private(&path, &format!("{token}\n"))?;
    Ok(token)
}

/// The service running on this data folder: the one `serve.json` names, if its process
/// is alive, the port is its own, and it proves it knows the folder's token before the
/// token is sent (`/health/proof`). A `serve.json` left by a service that died is
/// removed; one that fails the proof is reported, and nothing is sent to it.
pub fn running(data: &Path) -> Option<Running> {
    let path = data.join(SERVE_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let Ok(running) = serde_json::from_str::<Running>(&text) else {
        eprintln!(
            "mnemon: warning: {} cannot be read; ignoring it",
            path.display()
        );
        return None;
    };
    let port = running
        .url
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    // Gone: its process is not there (or does not hold the port), and nothing answers at
    // the address. (A service in another pid or network namespace looks dead to /proc,
    // but it answers.)
    let unreachable = || {
        running
            .url
            .strip_prefix("http://")
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .is_none_or(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
            })
    };
    let gone = match (alive(running.pid), port) {
        (Some(false), _) => true,
        (_, Some(port)) => listens(running.pid, port) == Some(false),
        (_, None) => true,
    };
    // Removes the file read here only: a service that started meanwhile wrote its own.
    let remove_stale = || {
        if std::fs::read_to_string(&path).is_ok_and(|now| now == text) {
            tracing::debug!(
                pid = running.pid,
                "removing the serve.json of a service that is gone"
            );
            let _ = std::fs::remove_file(&path);
        }
    };
    if gone && unreachable() {
        remove_stale();
        return None;
    }
    let token = match std::fs::read_to_string(data.join(TOKEN_FILE)) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => return None,
    };
    let nonce = random_hex(32);
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let Ok(mut answer) = agent
        .get(&format!("{}/health/proof", running.url))
        .query("nonce", &nonce)
        .call()
    else {
        // Nothing answers (yet, or any more).
        return None;
    };
    let proof = (answer.status() == 200)
        .then(|| answer.body_mut().read_json::<serde_json::Value>().ok())
        .flatten()
        .and_then(|v| v["proof"].as_str().map(str::to_owned));
    match proof {
        Some(proof) if proof == mnemon_web::serve_proof(&token, &running.url, &nonce) => {
            Some(running)
        }
        _ => {
            eprintln!(
                "mnemon: warning: {} names {} (pid {}), but what answers there does not \
                 prove it knows this folder's token; nothing is sent to it",
                path.display(),
                running.url,
                running.pid
            );
            if gone {
                remove_stale();
            }
            None
        }
    }
}

/// Whether process `pid` is alive (`None`: this system cannot tell).
fn alive(pid: u32) -> Option<bool> {
    if cfg!(target_os = "linux") {
        Some(Path::new("/proc").join(pid.to_string()).exists())
    } else {
        None
    }
}

/// Whether process `pid` holds the socket listening on TCP `port` (`None`: this system,
/// or these permissions, cannot tell).
fn listens(pid: u32, port: u16) -> Option<bool> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    // /proc/net/tcp: "sl local_address rem_address st … uid timeout inode", addresses as
    // HEXIP:HEXPORT, state 0A = listening.
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    if inodes.is_empty() {
        // Nobody listens there.
        return Some(false);
    }
    let fds = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    }))
}

/// Options of `mnemon serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub http: SocketAddr,
    /// Accept a non-loopback address.
    pub allow_non_loopback: bool,
    /// More `Host` names to answer to.
    pub extra_hosts: Vec<String>,
    /// Largest request body.
    pub body_limit: usize,
    /// Federation: the node's key and the swarm's setup (`None`: off).
    pub net: Option<(mnemon_identity::Keypair, mnemon_net::NetConfig)>,
}

/// Gives each of the runtime's async workers a core of its own, when there is one worker
/// per core the process may use (tokio's default). Left to themselves, the workers wake
/// each other onto the core the waker runs on, so under load both of a two-core machine's
/// workers took turns on one core while the other ran the background threads (the vector
/// sealer took half of it at 10 nice steps lower): pinned, the mixed load served 7,400–
/// 7,900 requests/s at p99 21–23 ms instead of 4,900–5,700/s at p99 28–45 ms (README,
/// Benchmarks). A worker whose core is busy with something else loses less than it
/// seems: the other workers take the tasks queued behind its running one. Not when
/// `TOKIO_WORKER_THREADS` sets the number of workers.
fn pin_workers(runtime: &mut tokio::runtime::Builder) {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
        let Ok(allowed) = sched_getaffinity(None) else {
            return;
        };
        let cores: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&c| allowed.is_set(c))
            .collect();
        // tokio's default number of workers.
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        if cores.len() < 2
            || cores.len() != workers
            || std::env::var_os("TOKIO_WORKER_THREADS").is_some()
        {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Only workers unpark (the blocking pool's threads never do), and each has parked
        // once it started with nothing to do: its first unpark pins it.
        runtime.on_thread_unpark(move || {
            thread_local! {
                static PINNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
            }
            if PINNED.replace(true) {
                return;
            }
            if let Some(&core) = cores.get(next.fetch_add(1, Ordering::Relaxed)) {
                let mut set = CpuSet::new();
                set.set(core);
                // Unpinned, the worker runs as before.
                let _ = sched_setaffinity(None, &set);
            }
        });
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub fn serve(data: &Path, service: Service, options: ServeOptions) -> Result<()> {
    if !options.http.ip().is_loopback() && !options.allow_non_loopback {
        bail!(
            "refusing to listen on {}, which is not a loopback address: anyone who can reach \
             it could try the token. Pass --allow-non-loopback to do it anyway (the API always \
             requires the token), or keep the default {DEFAULT_HTTP}",
            options.http
        );
    }
    let token = token(data, false)?;
    let tokens = mnemon_web::tokens::Tokens::open(&data.join(TOKENS_FILE))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("mnemon-http");
    pin_workers(&mut runtime);
    let runtime = runtime.build().context("starting the async runtime")?;
    let service = Arc::new(service);
    let serve_file: PathBuf = data.join(SERVE_FILE);
    // The first sign-in link, printed below for a person at a terminal only: a service's
    // output goes to logs, where a link that signs anyone in does not belong.
    let sign_in_code = mnemon_web::random_code();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.http)
            .await
            .with_context(|| format!("listening on {}", options.http))?;
        let bound = listener.local_addr()?;
        let config = ServerConfig {
            bind: bound,
            token,
            csrf: random_hex(16),
            extra_hosts: options.extra_hosts.clone(),
            body_limit: options.body_limit,
            undo_window: mnemon_web::DEFAULT_UNDO_WINDOW,
            header_timeout: mnemon_web::DEFAULT_HEADER_TIMEOUT,
            body_timeout: mnemon_web::DEFAULT_BODY_TIMEOUT,
            write_timeout: mnemon_web::DEFAULT_WRITE_TIMEOUT,
            sessions: Some(data.join(SESSIONS_FILE)),
            sign_in_code: Some(sign_in_code.clone()),
            token_file: Some(data.join(TOKEN_FILE)),
            tokens,
        };
        service.forward_events();
        let mcp_cancel = tokio_util::sync::CancellationToken::new();
        let app = mnemon_web::router_with(
            service.clone() as Arc<dyn Api>,
            &config,
            mnemon_mcp::http_router(service.clone() as Arc<dyn Api>, mcp_cancel.clone()),
        );
        let url = format!("http://{bound}");
        write_private(
            &serve_file,
            &serde_json::to_string(&Running {
                url: url.clone(),
                pid: std::process::id(),
            })?,
        )?;
        let network = match &options.net {
            Some((keypair, config)) => {
                let network =
                    mnemon_net::Network::start(service.writer().clone(), keypair, config.clone())
                        .await
                        .context("starting federation")?;
                service.set_network(network.clone());
                // Tickets kept by `mnemon join` while the service was not running.
                let joins = service
                    .read_store(|store| store.pending_joins(None))
                    .unwrap_or_default();
                for ticket in joins {
                    for addr in ticket.addresses.iter().filter_map(|a| a.parse().ok()) {
                        network.dial(addr).await?;
                    }
                }
                Some(network)
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let background = service
            .spawn_indexer(stop.clone())
            .context("starting the indexer")?;
        let backups = spawn_backups(&service, stop.clone()).context("starting the backups")?;
        println!("mnemon: serving {url} (token: `mnemon token`)");
        if let Some(network) = &network {
            for addr in &network.listen_addrs {
                println!(
                    "mnemon: p2p {}",
                    addr.clone()
                        .with(libp2p::multiaddr::Protocol::P2p(network.peer_id))
                );
            }
        }
        if std::io::stdout().is_terminal() {
            println!(
                "mnemon: open {} to sign in to the web UI (works once, for {} minutes; `mnemon signin` makes another)",
                mnemon_web::sign_in_url(&url, &sign_in_code),
                mnemon_web::SIGN_IN_LINK_LIFETIME.as_secs() / 60
            );
        } else {
            println!("mnemon: to sign in to the web UI, run `mnemon signin` for a link");
        }
        let _ = std::io::stdout().flush();
        tracing::info!(%url, "serving");
        let served = mnemon_web::serve(listener, app, &config, async move {
            shutdown_signal().await;
            // MCP's event streams stay open until told; let the server drain.
            mcp_cancel.cancel();
        })
        .await;
        if let Some(network) = &network {
            network.shutdown().await;
            network.save();
        }
        stop.store(true, Ordering::Relaxed);
        let _ = background.join();
        if let Some(backups) = backups {
            let _ = backups.join();
        }
        served.context("serving HTTP")
    });
    let _ = std::fs::remove_file(&serve_file);
    service.flush().context("saving the search indexes")?;
    println!("mnemon: stopped");
    result
}

/// Takes the scheduled backups (`[backup]`) until `stop`: when the last one is an interval
/// old (at once when there is none), again a minute after a failure (or an interval, if
/// shorter), and says so loudly in the log while the last success is older than twice the
/// interval.
fn spawn_backups(
    service: &Arc<Service>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let Some(setup) = service.backups().cloned() else {
        return Ok(None);
    };
    let Some(schedule) = setup.schedule.clone() else {
        return Ok(None);
    };
    let service = service.clone();
    let handle = std::thread::Builder::new()
        .name("mnemon-backup".into())
        .spawn(move || {
            let interval = u64::try_from(schedule.interval.as_millis()).unwrap_or(u64::MAX);
            let mut warned_at = 0u64;
            let mut warned_future = false;
            while !stop.load(Ordering::Relaxed) {
                let state = crate::backup::State::load(setup.data.root());
                let now = crate::backup::now_ms();
                if !warned_future
                    && state
                        .last_scheduled
                        .as_ref()
                        .is_some_and(|t| t.at_ms > now.saturating_add(60_000))
                {
                    warned_future = true;
                    tracing::warn!("the last backup is dated in the future (was the clock set back?); taking one now");
                }
                if now >= state.next_due_ms(schedule.interval, now) {
                    let result = service
                        .read_store(|store| schedule.run_once(store, &setup.data));
                    match result {
                        Ok(path) => tracing::info!(path = %path.display(), "backup taken"),
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "backup failed"),
                    }
                    continue;
                }
                let age = state.age_secs(now);
                if crate::backup::overdue(age, Some(schedule.interval.as_secs()))
                    && now.saturating_sub(warned_at) >= interval
                {
                    warned_at = now;
                    tracing::error!(
                        last_success_secs_ago = age,
                        interval_secs = schedule.interval.as_secs(),
                        "the last successful backup is older than twice the backup interval"
                    );
                }
                // The state file is read again when the next backup is due, or after a
                // minute (a `mnemon backup` meanwhile changes what is overdue); until then
                // the thread only watches for the stop.
                let wake = state
                    .next_due_ms(schedule.interval, now)
                    .min(now.saturating_add(60_000));
                while !stop.load(Ordering::Relaxed) && crate::backup::now_ms() < wake {
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        })?;
    Ok(Some(handle))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use rustix::thread::{CpuSet, sched_getaffinity};

    fn cores_of(set: &CpuSet) -> Vec<usize> {
        (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
    }

    /// One task per worker, each held until all have started (so each runs on a worker of
    /// its own): the thread and the cores each ran on.
    fn one_task_per_worker(
        runtime: &tokio::runtime::Runtime,
        workers: usize,
    ) -> Vec<(std::thread::ThreadId, Vec<usize>)> {
        let started = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let started = started.clone();
                runtime.spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let give_up = Instant::now() + Duration::from_secs(5);
                    while started.load(Ordering::SeqCst) < workers && Instant::now() < give_up {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let set = sched_getaffinity(None).expect("the thread's cores");
                    (std::thread::current().id(), cores_of(&set))
                })
            })
            .collect();
        runtime.block_on(async {
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.expect("task"));
            }
            seen
        })
    }

    #[test]
    fn each_async_worker_runs_on_a_core_of_its_own() {
        let allowed = cores_of(&sched_getaffinity(None).expect("the process's cores"));
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        super::pin_workers(&mut builder);
        let runtime = builder.build().expect("runtime");
        let pinned = allowed.len() >= 2
            && allowed.len() == workers
            && std::env::var_os("TOKIO_WORKER_THREADS").is_none();
        // A worker is pinned when it first goes idle: a round or two after the start.
        let mut seen = Vec::new();
        for _ in 0..50 {
            seen = one_task_per_worker(&runtime, workers);
            let threads: std::collections::HashSet<_> =
                seen.iter().map(|(thread, _)| *thread).collect();
            let mut cores: Vec<Vec<usize>> = seen.iter().map(|(_, cores)| cores.clone()).collect();
            cores.sort_unstable();
            let expected: Vec<Vec<usize>> = if pinned {
                allowed.iter().map(|&c| vec![c]).collect()
            } else {
                vec![allowed.clone(); workers]
            };
            if threads.len() == workers && cores == expected {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{workers} workers on cores {allowed:?}, pinned: {pinned}; the tasks saw {seen:?}");
    }
}
