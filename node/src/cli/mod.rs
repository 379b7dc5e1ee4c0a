//! The `mnemon` command line: [`run`] parses the arguments (`args.rs`) and calls one
//! function per command (`memories.rs`, `sharing.rs`, `admin.rs`). Memory and sharing
//! commands go through [`Node`]: the running `mnemon serve` on the data folder if there
//! is one, else the folder opened in this process; either way the same `Api`.

mod admin;
mod args;
mod memories;
mod ops;
mod sharing;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mnemon_api::Api;
use mnemon_crdt::{MemoryId, Store};

pub use args::{
    AddArgs, BackupArgs, BackupCommand, Cli, CollectionCommand, Command, EditArgs, LogFormat,
    ModelCommand, SearchArgs, ServeArgs, ServiceCommand, TaskCommand,
};

use crate::app::Service;
use crate::config::Config;
use crate::data_dir::{DataDir, PassphraseSource};
use crate::remote::Remote;
use crate::search::SearchIndex;
use crate::search::embed::Embedder;

/// What every command starts from: the data folder and how to unlock its key.
struct Ctx {
    data_dir: DataDir,
    passphrase: PassphraseSource,
}

impl Ctx {
    /// The node the memory commands go to.
    fn node(&self) -> Result<Node> {
        Node::open(&self.data_dir, &self.passphrase)
    }
}

/// Prints a command's error on standard error, as the terminal should show it.
pub fn report(err: &anyhow::Error) {
    let mut stderr = crate::output::Terminal::new(std::io::stderr());
    let _ = writeln!(stderr, "mnemon: error: {err:#}");
    let _ = stderr.flush();
}

/// Parses the command line and runs the command.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => init_tracing(args.log_format == LogFormat::Json, "info"),
        _ => init_tracing(false, "warn"),
    }
    let cx = Ctx {
        data_dir: match &cli.data_dir {
            Some(dir) => DataDir::new(dir),
            None => DataDir::platform_default()?,
        },
        passphrase: PassphraseSource::key_file(cli.passphrase_file.clone()),
    };
    // Each line locks standard output for itself: nothing holds it while `serve` runs.
    // Whatever the data holds, the terminal only shows it.
    let out = &mut crate::output::Terminal::new(std::io::stdout());
    match cli.command {
        Command::Serve(args) => admin::serve(&cx, args)?,
        Command::Init { passphrase } => admin::init(&cx, out, passphrase)?,
        Command::Id { json } => admin::id(&cx, out, json)?,
        Command::Status { json } => admin::status(&cx, out, json)?,
        Command::Token {
            action: Some(action),
            ..
        } => admin::tokens(&cx, out, action)?,
        Command::Token { rotate, .. } => admin::token(&cx, out, rotate)?,
        Command::Signin => admin::signin(&cx, out)?,
        Command::Backup(args) => ops::backup(&cx, out, args)?,
        Command::Restore {
            file,
            backup_passphrase_file,
        } => ops::restore(&cx, out, &file, backup_passphrase_file)?,
        Command::Doctor { json } => return ops::doctor(&cx, out, json),
        Command::Completions { shell } => ops::completions(out, shell)?,
        Command::Man => ops::man(out)?,
        Command::Service(command) => ops::service(out, command)?,
        Command::Mcp { token } => admin::mcp(&cx, token)?,
        Command::Compact => admin::compact(&cx, out)?,
        Command::Reindex => admin::reindex(&cx, out)?,
        Command::Model(ModelCommand::Install { path, no_reembed }) => {
            admin::model_install(&cx, out, &path, no_reembed)?;
        }
        Command::Model(ModelCommand::Show { json }) => admin::model_show(&cx, out, json)?,
        Command::Add(args) => memories::add(&cx, out, args)?,
        Command::Get { id, json } => memories::get(&cx, out, &id, json)?,
        Command::List {
            collection,
            tag,
            kind,
            limit,
            json,
        } => memories::list(&cx, out, collection, tag, kind, limit, json)?,
        Command::Edit(args) => memories::edit(&cx, out, args)?,
        Command::Rm { ids } => memories::rm(&cx, out, ids)?,
        Command::ForgetHistory { id, json } => memories::forget_history(&cx, out, &id, json)?,
        Command::Resolve { id, keep } => memories::resolve(&cx, out, &id, &keep)?,
        Command::Search(args) => memories::search(&cx, out, args)?,
        Command::Ask {
            question,
            k,
            collection,
            json,
        } => memories::ask(&cx, out, question, k, collection, json)?,
        Command::Task(command) => memories::task(&cx, out, command)?,
        Command::Import {
            path,
            collection,
            folders,
            json,
        } => memories::import(&cx, out, &path, collection, folders, json)?,
        Command::Export {
            path,
            collection,
            json,
        } => memories::export(&cx, out, &path, collection.as_deref(), json)?,
        Command::Collection(CollectionCommand::New { name, json }) => {
            sharing::collection_new(&cx, out, &name, json)?;
        }
        Command::Collection(CollectionCommand::List { json }) => {
            sharing::collection_list(&cx, out, json)?;
        }
        Command::Collection(CollectionCommand::Rename {
            collection,
            name,
            json,
        }) => sharing::collection_rename(&cx, out, &collection, &name, json)?,
        Command::Collection(CollectionCommand::Delete {
            collection,
            yes,
            json,
        }) => sharing::collection_delete(&cx, out, &collection, yes, json)?,
        Command::Name { did, name } => sharing::name(&cx, out, &did, &name)?,
        Command::Move {
            id,
            collection,
            json,
        } => memories::move_memory(&cx, out, &id, &collection, json)?,
        Command::Collection(CollectionCommand::Members { collection, json }) => {
            sharing::members(&cx, out, &collection, json)?;
        }
        Command::Share {
            collection,
            did,
            role,
        } => sharing::share(&cx, out, &collection, did, role)?,
        Command::Invite {
            collection,
            role,
            expires,
            json,
        } => sharing::invite(&cx, out, &collection, role, expires, json)?,
        Command::Join { ticket, wait } => sharing::join(&cx, out, ticket, wait)?,
        Command::Unshare { collection, did } => sharing::unshare(&cx, out, &collection, &did)?,
        Command::Peers { json } => sharing::peers(&cx, out, json)?,
        Command::Dial { address } => sharing::dial(&cx, out, address)?,
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
fn embedder_factory(data_dir: &DataDir) -> crate::app::EmbedderFactory {
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
        let config = Config::load(data_dir.root())?;
        service.set_chat(config.chat()?);
        // Checked now, loaded by the first search (most commands never search).
        config.search.rerank()?;
        let data = data_dir.root().to_owned();
        service.set_rerankers(Box::new(move || Config::load(&data)?.rerankers(&data)));
        service.set_backups(crate::app::Backups {
            data: data_dir.clone(),
            schedule: config.backup_schedule(data_dir.root())?,
        });
        service.set_peers_file(data_dir.peers_file());
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
