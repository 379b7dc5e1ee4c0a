//! Sharing: collections, members, invites, joins and the peers they sync with.

use std::io::Write;

use anyhow::{Result, bail};
use mnemon_api::Role;

use super::Ctx;
use crate::output;

/// `mnemon collection new`.
pub(super) fn collection_new(cx: &Ctx, out: &mut impl Write, name: &str, json: bool) -> Result<()> {
    let node = cx.node()?;
    let collection = node.api().create_collection(name)?;
    if json {
        writeln!(out, "{}", output::json(&collection))?;
    } else {
        writeln!(out, "{}", collection.id)?;
    }
    Ok(())
}

/// `mnemon collection list`.
pub(super) fn collection_list(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<()> {
    let node = cx.node()?;
    let collections = node.api().collections()?;
    if json {
        writeln!(out, "{}", output::json(&collections))?;
    } else {
        output::print_collections(out, &collections)?;
    }
    Ok(())
}

/// `mnemon collection rename`.
pub(super) fn collection_rename(
    cx: &Ctx,
    out: &mut impl Write,
    collection: &str,
    name: &str,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let renamed = node.api().rename_collection(collection, name)?;
    if json {
        writeln!(out, "{}", output::json(&renamed))?;
    } else {
        writeln!(out, "{} is now named {:?}", renamed.id, renamed.name)?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon collection delete`: refuses to take memories with it unless told `--yes`.
pub(super) fn collection_delete(
    cx: &Ctx,
    out: &mut impl Write,
    collection: &str,
    yes: bool,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let api = node.api();
    if !yes {
        let held = mnemon_api::find_collection(&api.collections()?, collection)?.memories;
        if held > 0 {
            anyhow::bail!(
                "{collection} holds {held} memories, which would be deleted for good with it; \
                 run again with --yes to delete them, or move them first (mnemon move ID --to OTHER)"
            );
        }
    }
    let deleted = api.delete_collection(collection)?;
    if json {
        writeln!(out, "{}", output::json(&deleted))?;
    } else {
        writeln!(
            out,
            "deleted {} ({}) and its {} memories",
            deleted.name, deleted.id, deleted.memories
        )?;
    }
    node.finish()?;
    Ok(())
}

/// `mnemon collection members`: who a collection is shared with, and how it syncs.
pub(super) fn members(cx: &Ctx, out: &mut impl Write, collection: &str, json: bool) -> Result<()> {
    let node = cx.node()?;
    let members = node.api().members(collection)?;
    if json {
        writeln!(out, "{}", output::json(&members))?;
    } else if members.is_empty() {
        eprintln!("{collection} is shared with nobody");
    } else {
        writeln!(out, "{:<56}  {:<5}  SYNC", "MEMBER", "ROLE")?;
        for m in members {
            let sync = match &m.sync {
                _ if m.this_node => "this node".to_owned(),
                Some(sync) => output::sync_state(sync),
                None => "never met".to_owned(),
            };
            let shown = m.name.as_deref().unwrap_or(&m.did);
            writeln!(out, "{shown:<56}  {:<5}  {sync}", m.role.as_str())?;
        }
    }
    Ok(())
}

/// `mnemon dial`.
pub(super) fn dial(cx: &Ctx, out: &mut impl Write, address: String) -> Result<()> {
    let node = cx.node()?;
    node.api().dial(mnemon_api::DialRequest {
        address: address.clone(),
    })?;
    writeln!(out, "dialing {address}")?;
    Ok(())
}

/// `mnemon share`.
pub(super) fn share(
    cx: &Ctx,
    out: &mut impl Write,
    collection: &str,
    did: String,
    role: Role,
) -> Result<()> {
    let node = cx.node()?;
    let member = node.api().share(
        collection,
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
    if let Some(warning) = &member.warning {
        eprintln!("mnemon: warning: {}", output::shown(warning));
    }
    Ok(())
}

/// `mnemon invite`: a single-use ticket.
pub(super) fn invite(
    cx: &Ctx,
    out: &mut impl Write,
    collection: &str,
    role: Role,
    expires: u64,
    json: bool,
) -> Result<()> {
    let node = cx.node()?;
    let invite = node.api().invite(
        collection,
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
    Ok(())
}

/// `mnemon join`: redeems a ticket.
pub(super) fn join(cx: &Ctx, out: &mut impl Write, ticket: String, wait: u64) -> Result<()> {
    let node = cx.node()?;
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let joined = node.api().join(mnemon_api::JoinRequest { ticket })?;
    writeln!(
        out,
        "joining {} of {} ({})",
        joined.collection, joined.owner, joined.role
    )?;
    out.flush()?;
    if joined.dialing == 0 {
        eprintln!("note: the invite is redeemed when `mnemon serve` meets its owner");
        return Ok(());
    }
    // The owner answers by sharing the collection, or by refusing the invite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    while std::time::Instant::now() < deadline {
        let status = node.api().status()?;
        let refused = status["joins"]["refused"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["collection"] == joined.collection.as_str()
                    && r["at"].as_u64().is_some_and(|at| at + 1000 >= asked)
            });
        if let Some(refused) = refused {
            bail!(
                "the owner refused the invite: {}",
                refused["reason"].as_str().unwrap_or("no reason given")
            );
        }
        let member = node
            .api()
            .collections()?
            .iter()
            .any(|c| c.id == joined.collection);
        if member {
            writeln!(out, "joined {}", joined.collection)?;
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if wait > 0 {
        eprintln!(
            "note: no answer from the owner yet; the invite is redeemed when they meet \
             (`mnemon status` shows a refusal)"
        );
    }
    Ok(())
}

/// `mnemon unshare`.
pub(super) fn unshare(cx: &Ctx, out: &mut impl Write, collection: &str, did: &str) -> Result<()> {
    let node = cx.node()?;
    node.api().unshare(collection, did)?;
    writeln!(out, "{did} no longer has access to {collection}")?;
    Ok(())
}

/// `mnemon name DID NAME`: this node's name for another node ("" forgets it).
pub(super) fn name(cx: &Ctx, out: &mut impl Write, did: &str, name: &str) -> Result<()> {
    let node = cx.node()?;
    node.api().name_node(did, name)?;
    if name.trim().is_empty() {
        writeln!(out, "{did} is listed by its DID again")?;
    } else {
        writeln!(out, "{did} is listed as {:?}", name.trim())?;
    }
    Ok(())
}

/// `mnemon peers`.
pub(super) fn peers(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<()> {
    let node = cx.node()?;
    let peers = node.api().peers()?;
    if json {
        writeln!(out, "{}", output::json(&peers))?;
    } else if peers.is_empty() {
        eprintln!("no peers known (peers are met while `mnemon serve` runs)");
    } else {
        writeln!(out, "{:<56}  {:<9}  ADDRESSES", "PEER", "STATE")?;
        for p in peers {
            let state = if p.connected { "connected" } else { "offline" };
            let shown = p.name.as_deref().unwrap_or(&p.did);
            writeln!(out, "{shown:<56}  {state:<9}  {}", p.addresses.join(" "))?;
            if p.name.is_some() {
                writeln!(out, "  {}", p.did)?;
            }
            for s in &p.sync {
                let name = s.collection_name.as_deref().unwrap_or(&s.collection);
                writeln!(out, "  {name:<54}  {}", output::sync_state(s))?;
            }
            if let Some(error) = &p.last_error {
                writeln!(out, "  last error: {error}")?;
            }
        }
    }
    Ok(())
}
