//! Running a node for years: `backup`, `restore`, `doctor`, `completions`, `man` and
//! `service`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use mnemon_api::BackupRequest;

use super::Ctx;
use super::args::{BackupArgs, BackupCommand, Cli, ServiceCommand};
use crate::backup::{self, State};
use crate::config::Config;
use crate::data_dir::PassphraseSource;

/// The passphrase of a backup: `--backup-passphrase-file`, `$MNEMON_BACKUP_PASSPHRASE`,
/// the one `[backup]` names, or a prompt (asked twice when `confirm`).
fn backup_passphrase(
    cx: &Ctx,
    file: Option<PathBuf>,
    confirm: bool,
) -> Result<zeroize::Zeroizing<String>> {
    let source = PassphraseSource::backup(file);
    if let Some(given) = source.get_quiet()? {
        return Ok(given);
    }
    if let Some(schedule) = Config::load(cx.data_dir.root())?.backup_schedule(cx.data_dir.root())? {
        return schedule.passphrase();
    }
    source
        .get("Passphrase for the backup: ", confirm)?
        .context("a backup needs a passphrase: pass --backup-passphrase-file, set MNEMON_BACKUP_PASSPHRASE, name one in [backup] of config.toml, or run on a terminal")
}

/// `mnemon backup [DEST]` and `mnemon backup verify FILE`.
pub(super) fn backup(cx: &Ctx, out: &mut impl Write, args: BackupArgs) -> Result<()> {
    if let Some(BackupCommand::Verify { file }) = args.command {
        let passphrase = backup_passphrase(cx, args.backup_passphrase_file, false)?;
        let verified = backup::verify(&file, passphrase.as_bytes())
            .with_context(|| format!("{} does not verify", file.display()))?;
        let view = backup::view_of(&verified.manifest, std::fs::metadata(&file)?.len());
        if args.json {
            writeln!(
                out,
                "{}",
                crate::output::json(&serde_json::json!({ "ok": true, "backup": view }))
            )?;
        } else {
            writeln!(
                out,
                "{} is a sound backup of {}, taken {}: {} memories in {} collections",
                file.display(),
                view.node,
                view.created_at,
                view.memories,
                view.collections
            )?;
        }
        return Ok(());
    }
    let passphrase = backup_passphrase(cx, args.backup_passphrase_file, true)?;
    let node = cx.node()?;
    let mut taken = node.api().backup(BackupRequest {
        passphrase: Some(passphrase.to_string()),
    })?;
    let dest = args.dest.unwrap_or_else(|| PathBuf::from("."));
    let dest = if dest.is_dir() {
        dest.join(&taken.view.file_name)
    } else {
        dest
    };
    let bytes = backup::write_new(&dest, |file| {
        std::io::copy(&mut taken.body, file).context("receiving the backup")
    })?;
    if bytes != taken.view.bytes {
        let _ = std::fs::remove_file(&dest);
        bail!(
            "the backup was cut short ({bytes} of {} bytes); nothing was kept",
            taken.view.bytes
        );
    }
    let dest = std::fs::canonicalize(&dest).unwrap_or(dest);
    if let Err(e) = State::record_view(cx.data_dir.root(), &dest, &taken.view) {
        tracing::warn!(error = %format!("{e:#}"), "recording the backup");
    }
    if args.json {
        let mut value = serde_json::to_value(&taken.view)?;
        value["path"] = dest.display().to_string().into();
        writeln!(out, "{}", crate::output::json(&value))?;
    } else {
        writeln!(
            out,
            "backup written to {}: {} memories in {} collections, {} bytes",
            dest.display(),
            taken.view.memories,
            taken.view.collections,
            taken.view.bytes
        )?;
    }
    node.finish()
}

/// `mnemon restore FILE`: a node in the (new or empty) `--data-dir`, indexes rebuilt.
pub(super) fn restore(
    cx: &Ctx,
    out: &mut impl Write,
    file: &Path,
    passphrase_file: Option<PathBuf>,
) -> Result<()> {
    let passphrase = backup_passphrase(cx, passphrase_file, false)?;
    let manifest = backup::restore(file, passphrase.as_bytes(), &cx.data_dir)
        .with_context(|| format!("restoring {}", file.display()))?;
    writeln!(
        out,
        "restored {} memories of {} into {}; rebuilding the search indexes",
        manifest.memories,
        manifest.node,
        cx.data_dir.root().display()
    )?;
    out.flush()?;
    super::admin::reindex(cx, out).with_context(|| {
        format!(
            "the backup is restored in {}, but its search indexes were not built; once the \
             cause is fixed, run `mnemon reindex`",
            cx.data_dir.root().display()
        )
    })
}

/// `mnemon doctor`: exits 1 when a check fails.
pub(super) fn doctor(cx: &Ctx, out: &mut impl Write, json: bool) -> Result<ExitCode> {
    let checks = crate::doctor::run(&cx.data_dir, &cx.passphrase);
    let failed = crate::doctor::failed(&checks);
    if json {
        writeln!(
            out,
            "{}",
            crate::output::json(&serde_json::json!({ "ok": !failed, "checks": checks }))
        )?;
        out.flush()?;
    } else {
        crate::doctor::print(out, &checks)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `mnemon completions SHELL`.
pub(super) fn completions(out: &mut impl Write, shell: clap_complete::Shell) -> Result<()> {
    // Into a buffer first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mnemon", &mut script);
    out.write_all(&script)?;
    Ok(())
}

/// `mnemon man`.
pub(super) fn man(out: &mut impl Write) -> Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    Ok(())
}

/// The system unit, as shipped in `node/dist/systemd/`.
const SYSTEM_UNIT: &str = include_str!("../../dist/systemd/mnemon.service");
/// The user unit.
const USER_UNIT: &str = include_str!("../../dist/systemd/mnemon-user.service");
/// Where the units name the binary.
const UNIT_BINARY: &str = "/usr/local/bin/mnemon";

/// A unit naming `binary`.
fn unit_for(system: bool, binary: &Path) -> Result<String> {
    let path = binary.to_str().context("the binary's path is not UTF-8")?;
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '%' || c == '$')
    {
        bail!(
            "the binary's path {path:?} needs quoting in a unit: install mnemon somewhere plain, such as /usr/local/bin"
        );
    }
    Ok((if system { SYSTEM_UNIT } else { USER_UNIT }).replace(UNIT_BINARY, path))
}

/// `mnemon service install`.
pub(super) fn service(out: &mut impl Write, command: ServiceCommand) -> Result<()> {
    let ServiceCommand::Install {
        user,
        system,
        print,
    } = command;
    let binary = std::env::current_exe().context("finding this binary")?;
    let unit = unit_for(system || !user, &binary)?;
    if print {
        write!(out, "{unit}")?;
        return Ok(());
    }
    let path = if system {
        PathBuf::from("/etc/systemd/system/mnemon.service")
    } else {
        let dirs = directories::BaseDirs::new().context("no home folder for the user unit")?;
        dirs.config_dir().join("systemd/user/mnemon.service")
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, unit).with_context(|| format!("writing {}", path.display()))?;
    let ctl = if system {
        "sudo systemctl"
    } else {
        "systemctl --user"
    };
    writeln!(out, "wrote {}", path.display())?;
    writeln!(
        out,
        "next: {ctl} daemon-reload && {ctl} enable --now mnemon"
    )?;
    Ok(())
}
