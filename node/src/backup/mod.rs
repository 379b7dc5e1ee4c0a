//! Backups: one sealed file holding a consistent snapshot of the store, the key file and
//! the configuration — not the search indexes, which a restore rebuilds.
//!
//! - [`create`] copies the store from one read transaction
//!   ([`StoreReader::snapshot_into`]), so writers keep going, and seals it with the other
//!   parts ([`archive`]). Only live entries are copied: a memory deleted before the backup
//!   is not in it. One backup is taken at a time ([`Busy`]).
//! - [`verify`] opens a backup, checks every part's checksum, that the store in it opens
//!   and holds what the manifest says, and that its key file is the store's node.
//! - [`restore`] writes the parts into a new, empty data folder.
//! - [`Schedule`] is `[backup]` in `config.toml`: `mnemon serve` takes a backup every
//!   `interval` into `folder`, keeps the newest `keep` of its own, and records the outcome
//!   in `DATA/backup-state.json` ([`State`]), which `status`, `/metrics` and `doctor` read.
//!
//! Scratch files (the store's snapshot, a backup for the API) are removed from their
//! folder as soon as they are made: a process that dies leaves no plaintext behind.

pub mod archive;

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mnemon_crdt::{StoreReader, StoreSummary, Timestamp};
use mnemon_identity::{KeyFile, SealParams};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use archive::{ArchiveError, EXTENSION, Manifest, Part};

use crate::data_dir::{DB_FILE, DataDir, KEY_FILE, PassphraseSource};

/// The configuration file's name, a part of every backup when it exists.
const CONFIG_FILE: &str = "config.toml";
/// Where the outcome of the last backups is kept, in the data folder.
pub const STATE_FILE: &str = "backup-state.json";
/// The largest key file a backup may hold (they are 106 or 174 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// One backup at a time: each holds a copy of the store and Argon2id's memory.
static TAKING: Mutex<()> = Mutex::new(());

/// A backup is being taken already.
#[derive(Debug, thiserror::Error)]
#[error("a backup is being taken already; try again when it is done")]
pub struct Busy;

fn taking(wait: bool) -> Result<MutexGuard<'static, ()>> {
    if wait {
        return Ok(TAKING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
    match TAKING.try_lock() {
        Ok(guard) => Ok(guard),
        Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Err(Busy.into()),
    }
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    u64::try_from(Timestamp::now().as_millis()).unwrap_or(0)
}

/// A new file readable by its owner only.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A private file in `dir` that no folder names: gone with the last handle, whatever
/// happens to the process.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    let path = dir.join(format!(
        ".mnemon-scratch-{:016x}.tmp",
        rand::random::<u64>()
    ));
    let file = private_file(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}

/// Writes a backup of the node in `data` (its store read through `store`) to `out`, sealed
/// with `passphrase`; waits for a backup being taken to finish first.
pub fn create(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
    out: impl Write,
) -> Result<(Manifest, u64)> {
    let _one = taking(true)?;
    create_with(store, data, passphrase, SealParams::default(), out)
}

fn create_with(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
    params: SealParams,
    out: impl Write,
) -> Result<(Manifest, u64)> {
    let snapshot = unnamed_file(data.root()).context("making room for the store's snapshot")?;
    let summary = store
        .snapshot_into(&snapshot)
        .context("taking a snapshot of the store")?;
    let mut files = vec![(DB_FILE, snapshot)];
    files.push((
        KEY_FILE,
        File::open(data.root().join(KEY_FILE)).context("reading the key file")?,
    ));
    match File::open(data.root().join(CONFIG_FILE)) {
        Ok(file) => files.push((CONFIG_FILE, file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("reading config.toml"),
    }
    let mut parts = Vec::new();
    let mut handles = Vec::new();
    for (name, mut file) in files {
        let (sha256, bytes) = archive::hash_file(&mut file)?;
        parts.push(Part {
            name: name.to_owned(),
            bytes,
            sha256,
        });
        handles.push(file);
    }
    let manifest = Manifest {
        format: 1,
        node: summary.did.to_string(),
        created_ms: now_ms(),
        mnemon_version: crate::VERSION.to_owned(),
        memories: summary.memories,
        collections: summary.collections,
        last_seq: summary.last_seq,
        parts,
    };
    let bytes = archive::write(out, passphrase, params, &manifest, &mut handles)?;
    Ok((manifest, bytes))
}

/// Writes a backup into the file `dest` (mode `0600`; refused if it exists).
pub fn create_file(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
    dest: &Path,
) -> Result<(Manifest, u64)> {
    write_new(dest, |file| create(store, data, passphrase, file))
}

/// Removes a file when dropped (a backup written half-way).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Writes the new file `dest` (mode `0600`; refused if it exists) with `fill`: first into
/// a temporary beside it (sealed bytes only), synced, then put in place, so `dest` is
/// whole or absent.
pub fn write_new<T>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    if fs::symlink_metadata(dest).is_ok() {
        bail!(
            "{} exists: a backup never overwrites a file",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let partial = Scratch(dir.join(format!(".backup-{:016x}.tmp", rand::random::<u64>())));
    let mut file = private_file(&partial.0)
        .with_context(|| format!("creating a backup in {}", dir.display()))?;
    let value = fill(&mut file)?;
    file.sync_all()?;
    // A link, not a rename: it fails rather than replace a file made meanwhile. Where
    // links do not exist (FAT on a USB stick, some network shares), a rename.
    match fs::hard_link(&partial.0, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!(
                "{} exists: a backup never overwrites a file",
                dest.display()
            )
        }
        Err(_) if fs::symlink_metadata(dest).is_err() => {
            fs::rename(&partial.0, dest).with_context(|| format!("writing {}", dest.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("writing {}", dest.display())),
    }
    File::open(dir)?.sync_all()?;
    Ok(value)
}

/// A backup written into an unnamed file, to be sent somewhere: what
/// `POST /api/v1/backups` streams. [`Busy`] while another backup is being taken.
pub fn create_unnamed(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
) -> Result<(Manifest, u64, File)> {
    let _one = taking(false)?;
    let mut file = unnamed_file(data.root())?;
    let (manifest, bytes) = create_with(store, data, passphrase, SealParams::default(), &mut file)?;
    file.seek(io::SeekFrom::Start(0))?;
    Ok((manifest, bytes, file))
}

/// What the API says about a backup.
pub fn view_of(manifest: &Manifest, bytes: u64) -> mnemon_api::BackupView {
    let created = Timestamp::from_millis(i64::try_from(manifest.created_ms).unwrap_or(i64::MAX));
    mnemon_api::BackupView {
        node: manifest.node.clone(),
        created_at: created.to_string(),
        memories: manifest.memories,
        collections: manifest.collections,
        bytes,
        file_name: file_name(&manifest.node, created),
    }
}

/// `mnemon-<the DID's last 8 characters>-20261130T091502.117Z.mnemonbak`: whose, and
/// when, in a form that sorts by time.
fn file_name(node: &str, at: Timestamp) -> String {
    let tail = &node[node.len().saturating_sub(8)..];
    let stamp = at.to_string().replace(['-', ':'], "");
    format!("mnemon-{tail}-{stamp}.{EXTENSION}")
}

/// The time in a name [`file_name`] made for `node`, if it is one.
fn time_in_name(name: &str, node: &str) -> Option<Timestamp> {
    let tail = &node[node.len().saturating_sub(8)..];
    let stamp = name
        .strip_prefix("mnemon-")?
        .strip_prefix(tail)?
        .strip_prefix('-')?
        .strip_suffix(&format!(".{EXTENSION}"))?;
    // 20261130T091502.117Z
    let b = stamp.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..19]
    );
    rfc3339.parse().ok()
}

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verified {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// What its store holds, read from the store itself.
    pub store: StoreSummary,
}

/// Checks a backup without restoring it: its checksum, the passphrase, every part's
/// SHA-256 and length, that the store in it opens and holds what the manifest says, and
/// that its key file belongs to the store's node. Nothing it decrypts is left on disk.
pub fn verify(path: &Path, passphrase: &[u8]) -> Result<Verified> {
    let mut db = unnamed_file(&std::env::temp_dir()).context("making room to check the store")?;
    let mut key = Zeroizing::new(Vec::new());
    let manifest = unpack(path, passphrase, |name, bytes| {
        match name {
            DB_FILE => db.write_all(bytes)?,
            KEY_FILE => key.extend_from_slice(bytes),
            _ => {}
        }
        Ok(())
    })?;
    db.sync_all()?;
    let store =
        mnemon_crdt::inspect_snapshot(&db).context("the store in the backup does not open")?;
    check_parts(&manifest, &store, &key)?;
    Ok(Verified { manifest, store })
}

/// The store and the key file agree with each other and with the manifest.
fn check_parts(manifest: &Manifest, store: &StoreSummary, key: &[u8]) -> Result<()> {
    if store.did.to_string() != manifest.node
        || store.memories != manifest.memories
        || store.collections != manifest.collections
    {
        bail!(
            "the store in the backup holds {} memories and {} collections of {}; its manifest \
             says {} and {} of {}",
            store.memories,
            store.collections,
            store.did,
            manifest.memories,
            manifest.collections,
            manifest.node
        );
    }
    let key_did = KeyFile::did_in(key).context("the key file in the backup is not a key file")?;
    if key_did != store.did {
        bail!(
            "the key file in the backup is {key_did}'s, but its store is {}'s",
            store.did
        );
    }
    Ok(())
}

/// Opens the backup at `path` and hands each part's bytes, in order, to `sink(name,
/// bytes)`. Every part's name (known, once), length and SHA-256 are checked against the
/// manifest.
fn unpack(
    path: &Path,
    passphrase: &[u8],
    mut sink: impl FnMut(&str, &[u8]) -> io::Result<()>,
) -> Result<Manifest> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut opened = archive::open(file, passphrase)?;
    let mut seen = Vec::new();
    for part in &opened.manifest.parts {
        if !matches!(part.name.as_str(), DB_FILE | KEY_FILE | CONFIG_FILE) {
            return Err(
                ArchiveError::Damaged(format!("it names an unknown part {:?}", part.name)).into(),
            );
        }
        if seen.contains(&part.name) {
            return Err(ArchiveError::Damaged(format!("it names {} twice", part.name)).into());
        }
        if part.name == KEY_FILE && part.bytes > MAX_KEY_FILE {
            return Err(ArchiveError::Damaged("its key file is far too long".into()).into());
        }
        seen.push(part.name.clone());
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut reader = Read::by_ref(&mut opened.parts).take(part.bytes);
        let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
        let mut got = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(archive::unwrap_archive)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
            sink(&part.name, &buf[..n])?;
            got += n as u64;
        }
        if got != part.bytes {
            return Err(ArchiveError::Damaged(format!("it ends inside {}", part.name)).into());
        }
        if archive::hex(&sha2::Digest::finalize(hasher)) != part.sha256 {
            return Err(ArchiveError::Damaged(format!(
                "{} does not match its checksum",
                part.name
            ))
            .into());
        }
    }
    if !seen.iter().any(|p| p == DB_FILE) || !seen.iter().any(|p| p == KEY_FILE) {
        return Err(ArchiveError::Damaged("it lacks the store or the key file".into()).into());
    }
    opened.parts.finish()?;
    Ok(opened.manifest)
}

/// Writes the backup at `path` into `target`, which must be empty or missing: the store,
/// the key file and the configuration. The search indexes are not in a backup; the
/// caller rebuilds them. On failure, the files this restore made are removed (and only
/// those).
pub fn restore(path: &Path, passphrase: &[u8], target: &DataDir) -> Result<Manifest> {
    let root = target.root();
    if root.exists() {
        let mut entries =
            fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: a backup is restored into a new or empty folder, so nothing \
                 there is overwritten",
                root.display()
            );
        }
    }
    mnemon_identity::private::create_private_dir(root)
        .with_context(|| format!("creating {}", root.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", root.display()))?;
    }
    let mut made: Vec<(String, File)> = Vec::new();
    let mut key = Zeroizing::new(Vec::new());
    let result = unpack(path, passphrase, |name, bytes| {
        if made.last().is_none_or(|(last, _)| last != name) {
            let file = private_file(&root.join(name)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating {}: {e}", root.join(name).display()),
                )
            })?;
            made.push((name.to_owned(), file));
        }
        if name == KEY_FILE {
            key.extend_from_slice(bytes);
        }
        made.last_mut()
            .map_or(Ok(()), |(_, file)| file.write_all(bytes))
    })
    .and_then(|manifest| {
        for (_, file) in &made {
            file.sync_all()?;
        }
        let store = mnemon_crdt::inspect_file(&target.db_path())
            .context("the store in the backup does not open")?;
        check_parts(&manifest, &store, &key)?;
        Ok(manifest)
    });
    if result.is_err() {
        // Nothing half-restored is left to be mistaken for a node.
        for (name, _) in &made {
            let _ = fs::remove_file(root.join(name));
        }
    }
    let manifest = result?;
    File::open(root)?.sync_all()?;
    Ok(manifest)
}

/// `[backup]` in `config.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// The folder scheduled backups are written to (default: `DATA/backups`; put it on
    /// another disk).
    pub folder: Option<PathBuf>,
    /// How often: e.g. `6h`, `1d` (default 1d).
    pub interval: Option<String>,
    /// How many scheduled backups to keep (default 7).
    pub keep: Option<usize>,
    /// A file whose first line is the passphrase.
    pub passphrase_file: Option<PathBuf>,
    /// An environment variable holding the passphrase.
    pub passphrase_env: Option<String>,
}

/// The backups `mnemon serve` takes by itself, read from `[backup]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Where they go.
    pub folder: PathBuf,
    /// How often.
    pub interval: Duration,
    /// How many are kept.
    pub keep: usize,
    passphrase_file: Option<PathBuf>,
    passphrase_env: Option<String>,
}

/// The default interval of scheduled backups.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How many scheduled backups are kept by default.
pub const DEFAULT_KEEP: usize = 7;

impl Schedule {
    /// The schedule `[backup]` describes for the data folder `data`; `None` without
    /// `[backup]`.
    pub fn from_config(config: Option<&BackupConfig>, data: &Path) -> Result<Option<Schedule>> {
        let Some(c) = config else { return Ok(None) };
        let interval = match &c.interval {
            Some(text) => mnemon_api::parse_duration(text)
                .map(Duration::from_secs)
                .map_err(|e| anyhow::anyhow!("[backup] interval: {e}"))?,
            None => DEFAULT_INTERVAL,
        };
        if interval.is_zero() {
            bail!("[backup] interval must be at least 1s");
        }
        let keep = c.keep.unwrap_or(DEFAULT_KEEP);
        if keep == 0 {
            bail!("[backup] keep must be at least 1");
        }
        if c.passphrase_file.is_none() && c.passphrase_env.is_none() {
            bail!(
                "[backup] needs passphrase_file or passphrase_env: scheduled backups are sealed \
                 with a passphrase nobody types"
            );
        }
        let folder = match &c.folder {
            Some(folder) if folder.is_absolute() => folder.clone(),
            Some(folder) => data.join(folder),
            None => data.join("backups"),
        };
        Ok(Some(Schedule {
            folder,
            interval,
            keep,
            passphrase_file: c.passphrase_file.clone(),
            passphrase_env: c.passphrase_env.clone(),
        }))
    }

    /// The configured passphrase (at least [`mnemon_api::MIN_PASSPHRASE`] characters).
    pub fn passphrase(&self) -> Result<Zeroizing<String>> {
        let source = PassphraseSource {
            env: match &self.passphrase_env {
                Some(var) => Some(std::env::var(var).with_context(|| {
                    format!("[backup] passphrase_env names {var}, which is not set")
                })?),
                None => None,
            },
            file: self.passphrase_file.clone(),
            var: "[backup] passphrase_env",
        };
        let passphrase = source
            .get_quiet()?
            .context("[backup] gives no passphrase")?;
        if passphrase.chars().count() < mnemon_api::MIN_PASSPHRASE {
            bail!(
                "[backup]'s passphrase is shorter than {} characters",
                mnemon_api::MIN_PASSPHRASE
            );
        }
        Ok(passphrase)
    }

    /// Takes one backup into the folder and removes this node's oldest beyond `keep`.
    /// Records the outcome in the state file either way (a failed clean-up is a warning:
    /// the backup was taken).
    pub fn run_once(&self, store: &StoreReader, data: &DataDir) -> Result<PathBuf> {
        let result = self.take(store, data);
        let mut state = State::load(data.root());
        let now = now_ms();
        state.interval_secs = Some(self.interval.as_secs());
        match &result {
            Ok((path, manifest, bytes)) => {
                let taken = Taken {
                    at_ms: now,
                    file: Some(path.display().to_string()),
                    bytes: *bytes,
                    memories: manifest.memories,
                };
                state.last = Some(taken.clone());
                state.last_scheduled = Some(taken);
                state.last_error = None;
                state.warning = match self.prune(path, &manifest.node) {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "removing old backups");
                        Some(format!("removing old backups: {e:#}"))
                    }
                };
            }
            Err(e) => {
                state.last_error = Some(Failed {
                    at_ms: now,
                    message: format!("{e:#}"),
                });
            }
        }
        state.save(data.root())?;
        result.map(|(path, _, _)| path)
    }

    fn take(&self, store: &StoreReader, data: &DataDir) -> Result<(PathBuf, Manifest, u64)> {
        mnemon_identity::private::create_private_dir(&self.folder)
            .with_context(|| format!("creating {}", self.folder.display()))?;
        let passphrase = self.passphrase()?;
        let did = store.did().to_string();
        let path = self.folder.join(file_name(&did, Timestamp::now()));
        let (manifest, bytes) = create_file(store, data, passphrase.as_bytes(), &path)?;
        Ok((path, manifest, bytes))
    }

    /// This node's scheduled backups in the folder, oldest first (by the time in their
    /// names); files of other nodes, or named otherwise, are not among them.
    pub fn existing(&self, node: &str) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.folder.display())),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(at) = name.to_str().and_then(|n| time_in_name(n, node)) else {
                continue;
            };
            if entry.file_type()?.is_file() {
                found.push((at, entry.path()));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, path)| path).collect())
    }

    /// Removes this node's oldest scheduled backups beyond `keep`, never `newest` (the one
    /// just taken, whatever the clock said).
    fn prune(&self, newest: &Path, node: &str) -> Result<()> {
        let others: Vec<PathBuf> = self
            .existing(node)?
            .into_iter()
            .filter(|p| p != newest)
            .collect();
        let extra = others.len().saturating_sub(self.keep.saturating_sub(1));
        for old in &others[..extra] {
            fs::remove_file(old)
                .with_context(|| format!("removing the old backup {}", old.display()))?;
        }
        Ok(())
    }
}

/// The outcome of the last backups, in `DATA/backup-state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The last backup written to a file (by the schedule or `mnemon backup`).
    pub last: Option<Taken>,
    /// The last backup the schedule took (when the next is due).
    #[serde(default)]
    pub last_scheduled: Option<Taken>,
    /// The schedule's last failure, cleared by its next success.
    pub last_error: Option<Failed>,
    /// Something to know that did not stop the last backup (old ones not removed).
    #[serde(default)]
    pub warning: Option<String>,
    /// The schedule's interval when it last ran, in seconds.
    pub interval_secs: Option<u64>,
}

/// A backup taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// Where it was written.
    pub file: Option<String>,
    /// Its size.
    pub bytes: u64,
    /// Memories in it.
    pub memories: u64,
}

/// A backup that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failed {
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// Why.
    pub message: String,
}

impl State {
    /// The state in the data folder `data` (empty when there is none or it is unreadable).
    pub fn load(data: &Path) -> State {
        fs::read(data.join(STATE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, data: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        mnemon_identity::private::write_private(&data.join(STATE_FILE), &json)
            .with_context(|| format!("writing {STATE_FILE}"))
    }

    /// Records a backup written, whole, to `file` outside the schedule (`mnemon backup`).
    pub fn record_view(data: &Path, file: &Path, view: &mnemon_api::BackupView) -> Result<()> {
        let mut state = State::load(data);
        state.last = Some(Taken {
            at_ms: now_ms(),
            file: Some(file.display().to_string()),
            bytes: view.bytes,
            memories: view.memories,
        });
        state.save(data)
    }

    /// How old the last backup is at `now_ms`, in seconds (0 for one from the future).
    pub fn age_secs(&self, now_ms: u64) -> Option<u64> {
        self.last
            .as_ref()
            .map(|t| now_ms.saturating_sub(t.at_ms) / 1000)
    }

    /// When the schedule's next backup is due: an interval after its last, at once when
    /// there is none or the last claims to be from the future (a clock set back), a minute
    /// (or an interval, if shorter) after a failure.
    pub fn next_due_ms(&self, interval: Duration, now_ms: u64) -> u64 {
        let interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        if let Some(failed) = &self.last_error {
            return failed.at_ms.saturating_add(interval.min(60_000));
        }
        match &self.last_scheduled {
            Some(last) if last.at_ms <= now_ms.saturating_add(60_000) => {
                last.at_ms.saturating_add(interval)
            }
            _ => 0,
        }
    }

    /// The state as `status` shows it, with whether it is overdue for `schedule`.
    pub fn to_json(&self, schedule: Option<&Schedule>, now_ms: u64) -> serde_json::Value {
        let age = self.age_secs(now_ms);
        let interval = schedule.map(|s| s.interval.as_secs());
        serde_json::json!({
            "scheduled": schedule.is_some(),
            "interval_secs": interval,
            "folder": schedule.map(|s| s.folder.display().to_string()),
            "keep": schedule.map(|s| s.keep),
            "last": self.last.as_ref().map(|t| serde_json::json!({
                "at": t.at_ms,
                "age_secs": age,
                "file": t.file,
                "bytes": t.bytes,
                "memories": t.memories,
            })),
            "last_error": self.last_error.as_ref().map(|f| serde_json::json!({
                "at": f.at_ms,
                "message": f.message,
            })),
            "warning": self.warning,
            "overdue": overdue(age, interval),
        })
    }
}

/// Whether a backup of age `age` is overdue for an interval: older than twice it, or
/// none at all while a schedule runs.
pub fn overdue(age: Option<u64>, interval: Option<u64>) -> bool {
    match (age, interval) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(age), Some(interval)) => age > interval.saturating_mul(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_node_and_a_time_that_reads_back() {
        let node = "did:key:z6MkgukfzPunJXADY8BDgTMcGr5aMFidEJP7GjLSufxFhyQn";
        let at: Timestamp = "2026-11-30T09:15:02.117Z".parse().expect("time");
        let name = file_name(node, at);
        assert_eq!(
            name,
            format!(
                "mnemon-{}-20261130T091502.117Z.mnemonbak",
                &node[node.len() - 8..]
            )
        );
        assert_eq!(time_in_name(&name, node), Some(at));
        assert_eq!(time_in_name(&name, "did:key:z6MkOTHERNODEabcdefgh"), None);
        assert_eq!(time_in_name("mnemon-before-upgrade.mnemonbak", node), None);
    }

    #[test]
    fn a_key_file_of_another_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            mnemon_identity::Keypair::generate(),
            mnemon_identity::Keypair::generate(),
        );
        let key = KeyFile::new(dir.path().join("a.key"));
        key.create(&a, None, SealParams::default()).expect("key");
        let bytes = fs::read(dir.path().join("a.key")).expect("read");
        let manifest = |node: &mnemon_identity::Did| Manifest {
            format: 1,
            node: node.to_string(),
            created_ms: 0,
            mnemon_version: String::new(),
            memories: 3,
            collections: 1,
            last_seq: 3,
            parts: Vec::new(),
        };
        let store = |node: mnemon_identity::Did| StoreSummary {
            did: node,
            memories: 3,
            collections: 1,
            last_seq: 3,
        };
        check_parts(&manifest(&a.did()), &store(a.did()), &bytes).expect("a's key, a's store");
        let err = check_parts(&manifest(&b.did()), &store(b.did()), &bytes).unwrap_err();
        assert!(
            format!("{err:#}").contains("key file in the backup is"),
            "{err:#}"
        );
        let err = check_parts(&manifest(&a.did()), &store(b.did()), &bytes).unwrap_err();
        assert!(format!("{err:#}").contains("manifest says"), "{err:#}");
        assert!(check_parts(&manifest(&a.did()), &store(a.did()), b"MNEMKEY").is_err());
    }

    #[test]
    fn the_next_backup_is_due_after_an_interval_or_at_once() {
        let hour = Duration::from_secs(3600);
        let now = 10_000_000;
        let taken = |at_ms| Taken {
            at_ms,
            file: None,
            bytes: 0,
            memories: 0,
        };
        let mut state = State::default();
        assert_eq!(state.next_due_ms(hour, now), 0, "none yet: at once");
        state.last_scheduled = Some(taken(now - 1000));
        assert_eq!(state.next_due_ms(hour, now), now - 1000 + 3_600_000);
        state.last_scheduled = Some(taken(now + 86_400_000));
        assert_eq!(state.next_due_ms(hour, now), 0, "from the future: at once");
        state.last_error = Some(Failed {
            at_ms: now,
            message: String::new(),
        });
        assert_eq!(
            state.next_due_ms(hour, now),
            now + 60_000,
            "a minute after a failure"
        );
        // A manual backup does not move the schedule.
        let mut state = State {
            last: Some(taken(now)),
            ..State::default()
        };
        assert_eq!(state.next_due_ms(hour, now), 0);
        state.last_scheduled = Some(taken(now - 7_200_000));
        assert_eq!(state.next_due_ms(hour, now), now - 3_600_000);
    }
}
