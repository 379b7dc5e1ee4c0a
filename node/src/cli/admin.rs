//! The node's own commands: init, id, status, token, serve, mcp, compact, reindex and the
//! embedding model.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::args::{ServeArgs, TokenCommand};
use super::{Ctx, configured_embedder, embed_with_progress, embedder_factory};
use crate::app::Service;
use crate::config::Config;
use crate::remote::Remote;
use crate::search::SearchIndex;

/// `mnemon init`: a new identity (or the one kept), and the API token.
pub(super) fn init(cx: &Ctx, out: &mut impl Write, seal: bool) -> Result<()> {
    let (did, created) = cx.data_dir.init(seal, &cx.passphrase)?;
    // The HTTP API's bearer token (kept if there is one).
    crate::serve::token(cx.data_dir.root(), false)?;
    if created {
        eprintln!("Initialised {}", cx.data_dir.root().display());
        eprintln!(
            "next: `mnemon serve`, then open the sign-in link it prints (or `mnemon add \"a first note\"` right here)"
        );
    } else {
        eprintln!(
            "{} is already initialised; its identity is kept",
            cx.data_dir.root().display()
        );
    }
    writeln!(out, "{did}")?;
    Ok(())
}

/// `mnemon id`: the node's DID.
pub(super) fn id(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<()> {
    let did = cx.data_dir.did()?;
    if json {
        writeln!(
            out,
            "{}",
            crate::output::json(&serde_json::json!({ "did": did.to_string() }))
        )?;
    } else {
        writeln!(out, "{did}")?;
    }
    Ok(())
}

/// `mnemon mcp`: MCP over stdio.
pub(super) fn mcp(cx: &Ctx, token: Option<String>) -> Result<()> {
    let Some(token) = token else {
        mnemon_mcp::serve_stdio(cx.node()?.into_backend())?;
        return Ok(());
    };
    let backend = if let Some(running) = crate::serve::running(cx.data_dir.root()) {
        // The running service checks the token on every call.
        Arc::new(Remote::new(&running.url, token)) as Arc<dyn mnemon_api::Api>
    } else {
        let tokens = capability_tokens(cx)?;
        let Some(caller) = tokens.caller(&token, mnemon_web::tokens::unix_ms()) else {
            bail!("--token is not a token of this node (or it was revoked, or has expired)");
        };
        caller.api(cx.node()?.into_backend())
    };
    mnemon_mcp::serve_stdio(backend)?;
    Ok(())
}

/// The capability tokens kept in the data folder.
fn capability_tokens(cx: &Ctx) -> Result<Arc<mnemon_web::tokens::Tokens>> {
    cx.data_dir.did()?;
    mnemon_web::tokens::Tokens::open(&cx.data_dir.root().join(crate::serve::TOKENS_FILE))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `mnemon token new|list|revoke`: through the running service (in force at once), or
/// in the data folder.
pub(super) fn tokens(cx: &Ctx, out: &mut impl Write, action: TokenCommand) -> Result<()> {
    let node = cx.node()?;
    let remote = match &node {
        super::Node::Remote(remote, _) => Some(remote),
        super::Node::Local(_) => None,
    };
    let local = || capability_tokens(cx);
    match action {
        TokenCommand::New {
            name,
            collections,
            read_only,
            expires,
            json,
        } => {
            let request = mnemon_api::NewToken {
                name,
                collections: (!collections.is_empty()).then_some(collections),
                read_only,
                expires_in: expires,
            };
            let issued = match remote {
                Some(remote) => remote.create_token(&request)?,
                None => mnemon_web::tokens::issue(node.api(), &*local()?, &request)?,
            };
            if json {
                writeln!(out, "{}", crate::output::json(&issued))?;
            } else {
                writeln!(out, "{}", issued.token)?;
                eprintln!(
                    "{}: {} (shown this once; `mnemon token revoke {}` ends it)",
                    issued.view.name,
                    describe(&issued.view),
                    issued.view.name
                );
            }
        }
        TokenCommand::List { json } => {
            let views = match remote {
                Some(remote) => remote.list_tokens()?,
                None => mnemon_web::tokens::list(node.api(), &*local()?)?,
            };
            if json {
                writeln!(out, "{}", crate::output::json(&views))?;
            } else if views.is_empty() {
                writeln!(
                    out,
                    "no capability tokens (`mnemon token new --name NAME` makes one)"
                )?;
            } else {
                for view in &views {
                    writeln!(
                        out,
                        "{}\t{}\tmade {}\tlast used {}\t{}",
                        view.name,
                        describe(view),
                        view.created_at,
                        view.last_used_at.as_deref().unwrap_or("never"),
                        match (&view.expires_at, view.expired) {
                            (Some(at), true) => format!("expired {at}"),
                            (Some(at), false) => format!("expires {at}"),
                            (None, _) => "never expires".to_owned(),
                        }
                    )?;
                }
            }
        }
        TokenCommand::Revoke { name } => {
            match remote {
                Some(remote) => remote.revoke_token(&name)?,
                None => local()?.revoke(&name)?,
            }
            writeln!(out, "revoked {name}")?;
        }
    }
    node.finish()
}

/// `read-only in work, notes` / `read-write in every collection`.
fn describe(view: &mnemon_api::TokenView) -> String {
    let rights = if view.scope.write {
        "read-write"
    } else {
        "read-only"
    };
    if view.collection_names.is_empty() {
        format!("{rights} in every collection")
    } else {
        format!("{rights} in {}", view.collection_names.join(", "))
    }
}

/// `mnemon compact`: vacuums the store and the indexes.
pub(super) fn compact(cx: &Ctx, out: &mut impl Write) -> Result<()> {
    let mut store = cx.data_dir.open_store(&cx.passphrase)?;
    let report = store.vacuum()?;
    let embedder = configured_embedder(&cx.data_dir)?;
    let mut index = SearchIndex::open_lagging(&cx.data_dir.index_dir(), embedder, &store)?;
    index.forget_now(&store, &[])?;
    writeln!(
        out,
        "compacted {}: {} → {} bytes",
        cx.data_dir.db_path().display(),
        report.bytes_before,
        report.bytes_after
    )?;
    Ok(())
}

/// `mnemon status`.
pub(super) fn status(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<()> {
    let node = cx.node()?;
    let mut status = node.api().status()?;
    status["data_dir"] = cx.data_dir.root().display().to_string().into();
    status["service"] = node.url().map_or(serde_json::Value::Null, Into::into);
    if json {
        writeln!(out, "{}", crate::output::json(&status))?;
    } else {
        let model = &status["index"]["models"][0];
        writeln!(out, "node:      {}", status["did"].as_str().unwrap_or(""))?;
        writeln!(out, "data:      {}", cx.data_dir.root().display())?;
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
        writeln!(out, "backup:    {}", backup_line(&status["backup"]))?;
        for join in status["joins"]["pending"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "joining:   {} (owner {})",
                join["collection"].as_str().unwrap_or(""),
                join["owner"].as_str().unwrap_or("")
            )?;
        }
        for refused in status["joins"]["refused"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "refused:   {} (owner {}): {}",
                refused["collection"].as_str().unwrap_or(""),
                refused["owner"].as_str().unwrap_or(""),
                refused["reason"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// `mnemon reindex`: rebuilds both indexes from the store.
pub(super) fn reindex(cx: &Ctx, out: &mut impl Write) -> Result<()> {
    let store = cx.data_dir.open_store(&cx.passphrase)?;
    let embedder = configured_embedder(&cx.data_dir)?;
    let dir = cx.data_dir.index_dir();
    // Start from nothing: the saved indexes may be what is wrong.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut index = SearchIndex::open_lagging(&dir, embedder, &store)?;
    embed_with_progress(&mut index, &store)?;
    let status = index.status(&store)?;
    writeln!(
        out,
        "reindexed {} memories ({} with vectors of {})",
        status.keyword_indexed, status.indexed, status.model
    )?;
    Ok(())
}

/// `mnemon model install`.
pub(super) fn model_install(
    cx: &Ctx,
    out: &mut impl Write,
    path: &Path,
    no_reembed: bool,
) -> Result<()> {
    let store = cx.data_dir.open_store(&cx.passphrase)?;
    let (installed, model) = crate::model::install(cx.data_dir.root(), path)?;
    let done = if installed.already {
        "already installed:"
    } else {
        "installed"
    };
    let model = match model {
        crate::model::Model::Embedder(model) => model,
        crate::model::Model::Reranker(_) => {
            writeln!(
                out,
                "{done} the cross-encoder {} ({}) in {}",
                installed.model_id,
                installed.name,
                installed.path.display()
            )?;
            let config = Config::load(cx.data_dir.root())?;
            if !config.search.reranks_with_model()? {
                writeln!(
                    out,
                    "note: search re-ranks with it once config.toml says so: [search] rerank = \"model\""
                )?;
            }
            return Ok(());
        }
    };
    writeln!(
        out,
        "{done} {} ({}, {} dimensions) in {}",
        installed.model_id,
        installed.name,
        installed.dimension.unwrap_or(0),
        installed.path.display()
    )?;
    let config = Config::load(cx.data_dir.root())?;
    if let Some(kind) = config.embedder.kind.as_deref().filter(|k| *k != "model") {
        writeln!(
            out,
            "note: config.toml sets [embedder] kind = {kind:?}, so search keeps using that; \
             remove the line or set kind = \"model\" to use this model"
        )?;
    } else if !no_reembed {
        out.flush()?;
        let mut index =
            SearchIndex::open_lagging(&cx.data_dir.index_dir(), Arc::new(model), &store)?;
        embed_with_progress(&mut index, &store)?;
        let status = index.status(&store)?;
        writeln!(
            out,
            "re-embedded: {} memories indexed, {} pending",
            status.indexed, status.pending
        )?;
    }
    Ok(())
}

/// `mnemon serve`: runs until SIGINT or SIGTERM.
pub(super) fn serve(cx: &Ctx, args: ServeArgs) -> Result<()> {
    let ServeArgs {
        http,
        allow_non_loopback,
        allow_hosts,
        body_limit,
        log_format: _,
        p2p,
        peers,
        no_mdns,
        no_p2p,
    } = args;
    if let Some(running) = crate::serve::running(cx.data_dir.root()) {
        bail!(
            "mnemon serve is already running on this data folder at {} (pid {})",
            running.url,
            running.pid
        );
    }
    if !http.ip().is_loopback() && !allow_non_loopback {
        bail!(
            "refusing to listen on {http}, which is not a loopback address: pass \
             --allow-non-loopback to do it anyway (the API always requires the token)"
        );
    }
    if !cx.data_dir.key_file().exists() {
        // A new folder: made now, so one command goes from nothing to a running node.
        // With a passphrase given (MNEMON_PASSPHRASE, --passphrase-file), the key is sealed.
        let seal = cx.passphrase.env.is_some() || cx.passphrase.file.is_some();
        let (did, _) = cx.data_dir.init(seal, &cx.passphrase)?;
        crate::serve::token(cx.data_dir.root(), false)?;
        eprintln!(
            "Initialised {} for the new node {did}",
            cx.data_dir.root().display()
        );
    }
    let keypair = cx.data_dir.unlock(&cx.passphrase)?;
    let store = cx.data_dir.open_store_with(keypair.clone())?;
    let service = Service::open(
        store,
        &cx.data_dir.index_dir(),
        embedder_factory(&cx.data_dir),
        "api",
    )?;
    let config = Config::load(cx.data_dir.root())?;
    service.set_chat(config.chat()?);
    // A long-running node loads its second stages now: a setting that cannot work stops
    // it here, not at the first search.
    let rerankers = config.rerankers(cx.data_dir.root())?;
    service.set_rerankers(Box::new(move || Ok(rerankers.clone())));
    service.set_backups(crate::app::Backups {
        data: cx.data_dir.clone(),
        schedule: config.backup_schedule(cx.data_dir.root())?,
    });
    service.load_index()?;
    let net = (!no_p2p).then(|| mnemon_net::NetConfig {
        listen: p2p,
        peers,
        mdns: !no_mdns,
        state_file: Some(cx.data_dir.peers_file()),
        listen_file: Some(cx.data_dir.p2p_listen_file()),
        ..mnemon_net::NetConfig::default()
    });
    crate::serve::serve(
        cx.data_dir.root(),
        service,
        crate::serve::ServeOptions {
            http,
            allow_non_loopback,
            extra_hosts: allow_hosts,
            body_limit,
            net: net.map(|config| (keypair, config)),
        },
    )?;
    Ok(())
}

/// `mnemon signin`: a one-time sign-in link from the running service.
pub(super) fn signin(cx: &Ctx, out: &mut impl Write) -> Result<()> {
    cx.data_dir.did()?;
    let Some(running) = crate::serve::running(cx.data_dir.root()) else {
        bail!(
            "mnemon serve is not running on {}: start it (it prints a sign-in link), then run \
             this again for another",
            cx.data_dir.root().display()
        );
    };
    let token = crate::serve::token(cx.data_dir.root(), false)?;
    let link = Remote::new(&running.url, token).sign_in_link()?;
    writeln!(out, "{link}")?;
    Ok(())
}

/// `mnemon token`: prints (or rotates) the API token.
pub(super) fn token(cx: &Ctx, out: &mut impl Write, rotate: bool) -> Result<()> {
    cx.data_dir.did()?;
    if rotate && let Some(running) = crate::serve::running(cx.data_dir.root()) {
        // The running service replaces it, in force at once, and writes the file.
        let old = crate::serve::token(cx.data_dir.root(), false)?;
        let new = Remote::new(&running.url, old).rotate_token()?;
        writeln!(out, "{new}")?;
        return Ok(());
    }
    if rotate
        && let Err(mnemon_crdt::OpenStoreError::Locked(_)) =
            mnemon_crdt::inspect_file(&cx.data_dir.db_path())
    {
        // Not found as running, yet the store is held: a service this command cannot
        // reach would go on with the old token while the file said otherwise.
        bail!(
            "the store is held by a running mnemon serve that cannot be reached here \
             (serve.json missing or unproven): stop it, then rotate the token"
        );
    }
    writeln!(out, "{}", crate::serve::token(cx.data_dir.root(), rotate)?)?;
    Ok(())
}

/// `mnemon model show`.
pub(super) fn model_show(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<()> {
    let embedder = configured_embedder(&cx.data_dir)?;
    let installed = crate::model::active(cx.data_dir.root())?;
    if json {
        let value = serde_json::json!({
            "model": embedder.model_id(),
            "dimension": embedder.dimension(),
            "installed": installed,
        });
        writeln!(out, "{}", crate::output::json(&value))?;
    } else {
        writeln!(
            out,
            "{} ({} dimensions)",
            embedder.model_id(),
            embedder.dimension()
        )?;
    }
    Ok(())
}

/// The status line about backups: the last one, its age, and whether it is overdue.
fn backup_line(backup: &serde_json::Value) -> String {
    let last = &backup["last"];
    let mut line = match last["age_secs"].as_u64() {
        Some(age) => format!(
            "last {} ago, {} memories{}",
            mnemon_api::budget::human_age(age),
            last["memories"],
            last["file"]
                .as_str()
                .map(|f| format!(", {f}"))
                .unwrap_or_default()
        ),
        None if backup["scheduled"] == true => "none taken yet".to_owned(),
        None => "none taken (`mnemon backup DEST`, or [backup] in config.toml)".to_owned(),
    };
    if let Some(interval) = backup["interval_secs"].as_u64() {
        line.push_str(&format!(
            "; every {}",
            mnemon_api::budget::human_age(interval)
        ));
    }
    if backup["overdue"].as_bool() == Some(true) {
        line.push_str(" — OVERDUE: the last success is older than twice the interval");
    }
    if let Some(message) = backup["last_error"]["message"].as_str() {
        line.push_str(&format!(" — last attempt FAILED: {message}"));
    }
    if let Some(warning) = backup["warning"].as_str() {
        line.push_str(&format!(" — {warning}"));
    }
    line
}
