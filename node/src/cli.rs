//! The `mnemon` command line.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use mnemon_crdt::{CollectionId, ListFilter, MemoryEdit, MemoryId, NewMemory, Source, Store};

use crate::data_dir::{DataDir, PassphraseSource};
use crate::output;

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
    /// Rewrite the database file, dropping every freed page.
    Compact,
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
            writeln!(
                out,
                "compacted {}: {} → {} bytes",
                data_dir.db_path().display(),
                report.bytes_before,
                report.bytes_after
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
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
