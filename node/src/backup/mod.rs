//! Backups: one sealed file holding a consistent snapshot of the store, the key file and
//! the configuration — not the search indexes, which a restore rebuilds.
//!
//! - [`create`] copies the store from one read transaction ([`StoreReader::snapshot_to`]),
//!   so writers keep going, and seals it with the other parts ([`archive`]). Only live
//!   entries are copied: a memory deleted before the backup is not in it.
//! - [`verify`] opens a backup, checks every part's checksum and that the store in it
//!   opens, without restoring anything.
//! - [`restore`] writes the parts into a new, empty data folder.
//! - [`Schedule`] is `[backup]` in `config.toml`: `mnemon serve` takes a backup every
//!   `interval` into `folder`, keeps the newest `keep`, and records the outcome in
//!   `DATA/backup-state.json` ([`State`]), which `status`, `/metrics` and `doctor` read.

pub mod archive;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mnemon_crdt::{StoreReader, StoreSummary, Timestamp};
use mnemon_identity::SealParams;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use archive::{ArchiveError, EXTENSION, Manifest, Part};

use crate::data_dir::{DB_FILE, DataDir, KEY_FILE, PassphraseSource};

/// The configuration file's name, a part of every backup when it exists.
const CONFIG_FILE: &str = "config.toml";
/// Where the outcome of the last backups is kept, in the data folder.
pub const STATE_FILE: &str = "backup-state.json";

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    u64::try_from(Timestamp::now().as_millis()).unwrap_or(0)
}

/// Removes a file when dropped (a snapshot or a half-written backup).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn scratch_path(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(".{what}-{:016x}.tmp", rand::random::<u64>()))
}

/// Writes a backup of the node in `data` (its store read through `store`) to `out`, sealed
/// with `passphrase`. The store's snapshot is made in the data folder and removed after.
pub fn create(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
    out: impl Write,
) -> Result<(Manifest, u64)> {
    create_with(store, data, passphrase, SealParams::default(), out)
}

fn create_with(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
    params: SealParams,
    out: impl Write,
) -> Result<(Manifest, u64)> {
    let snapshot = Scratch(scratch_path(data.root(), "backup-snapshot"));
    let summary = store
        .snapshot_to(&snapshot.0)
        .context("taking a snapshot of the store")?;
    let mut files = vec![(DB_FILE, File::open(&snapshot.0)?)];
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

/// Writes the new file `dest` (mode `0600`; refused if it exists) with `fill`: first into
/// a temporary beside it, synced, then linked into place, so `dest` is whole or absent.
pub fn write_new<T>(dest: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    if dest.exists() {
        bail!(
            "{} exists: a backup never overwrites a file",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let partial = Scratch(scratch_path(dir, "backup"));
    let mut file = private_file(&partial.0)
        .with_context(|| format!("creating a backup in {}", dir.display()))?;
    let value = fill(&mut file)?;
    file.sync_all()?;
    // A link, not a rename: it fails rather than replace a file made meanwhile.
    fs::hard_link(&partial.0, dest).with_context(|| format!("writing {}", dest.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(value)
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

/// A backup written into an unnamed file (removed from the folder at once), to be sent
/// somewhere: what `POST /api/v1/backups` streams.
pub fn create_unnamed(
    store: &StoreReader,
    data: &DataDir,
    passphrase: &[u8],
) -> Result<(Manifest, u64, File)> {
    let path = scratch_path(data.root(), "backup");
    let mut file = private_file(&path)?;
    let _ = fs::remove_file(&path);
    let (manifest, bytes) = create(store, data, passphrase, &file)?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
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
        file_name: format!(
            "mnemon-{}.{EXTENSION}",
            created.to_string().replace(['-', ':'], "")
        ),
    }
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
/// SHA-256 and length, and that the store in it opens and holds what the manifest says.
pub fn verify(path: &Path, passphrase: &[u8]) -> Result<Verified> {
    let scratch_dir = std::env::temp_dir();
    let db = Scratch(scratch_path(&scratch_dir, "mnemon-verify"));
    let manifest = unpack(path, passphrase, |name| {
        Ok(if name == DB_FILE {
            Some(private_file(&db.0)?)
        } else {
            None
        })
    })?;
    check_store(&manifest, &db.0).map(|store| Verified { manifest, store })
}

fn check_store(manifest: &Manifest, db: &Path) -> Result<StoreSummary> {
    let store = mnemon_crdt::inspect_file(db).context("the store in the backup does not open")?;
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
    Ok(store)
}

/// Opens the backup at `path` and reads each part in order, handing its bytes to the file
/// `sink(name)` returns (or checking them only, for `None`). Every part's length and
/// SHA-256 are checked against the manifest.
fn unpack(
    path: &Path,
    passphrase: &[u8],
    mut sink: impl FnMut(&str) -> io::Result<Option<File>>,
) -> Result<Manifest> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut opened = archive::open(file, passphrase)?;
    for part in &opened.manifest.parts {
        if !matches!(part.name.as_str(), DB_FILE | KEY_FILE | CONFIG_FILE) {
            return Err(
                ArchiveError::Damaged(format!("it names an unknown part {:?}", part.name)).into(),
            );
        }
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut out = sink(&part.name)?;
        let mut reader = Read::by_ref(&mut opened.parts).take(part.bytes);
        let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
        let mut got = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(archive::unwrap_archive)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
            if let Some(out) = &mut out {
                out.write_all(&buf[..n])?;
            }
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
        if let Some(out) = out {
            out.sync_all()?;
        }
    }
    if !opened.manifest.parts.iter().any(|p| p.name == DB_FILE)
        || !opened.manifest.parts.iter().any(|p| p.name == KEY_FILE)
    {
        return Err(ArchiveError::Damaged("it lacks the store or the key file".into()).into());
    }
    opened.parts.finish()?;
    Ok(opened.manifest)
}

/// Writes the backup at `path` into `target`, which must be empty or missing: the store,
/// the key file and the configuration. The search indexes are not in a backup; the
/// caller rebuilds them.
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
    let result = unpack(path, passphrase, |name| {
        private_file(&root.join(name)).map(Some)
    })
    .and_then(|manifest| check_store(&manifest, &target.db_path()).map(|_| manifest));
    if result.is_err() {
        // Nothing half-restored is left to be mistaken for a node.
        for name in [DB_FILE, KEY_FILE, CONFIG_FILE] {
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

    /// The configured passphrase.
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
        source.get_quiet()?.context("[backup] gives no passphrase")
    }

    /// Takes one backup into the folder and removes the oldest beyond `keep`. Records the
    /// outcome in the state file either way.
    pub fn run_once(&self, store: &StoreReader, data: &DataDir) -> Result<PathBuf> {
        let result = self.take(store, data);
        let mut state = State::load(data.root());
        let now = now_ms();
        match &result {
            Ok((path, manifest, bytes)) => {
                state.last = Some(Taken {
                    at_ms: now,
                    file: Some(path.display().to_string()),
                    bytes: *bytes,
                    memories: manifest.memories,
                });
                state.last_error = None;
            }
            Err(e) => {
                state.last_error = Some(Failed {
                    at_ms: now,
                    message: format!("{e:#}"),
                });
            }
        }
        state.interval_secs = Some(self.interval.as_secs());
        state.save(data.root())?;
        result.map(|(path, _, _)| path)
    }

    fn take(&self, store: &StoreReader, data: &DataDir) -> Result<(PathBuf, Manifest, u64)> {
        mnemon_identity::private::create_private_dir(&self.folder)
            .with_context(|| format!("creating {}", self.folder.display()))?;
        let passphrase = self.passphrase()?;
        // 2026-11-30T09:15:02.117Z as 20261130T091502.117Z: a name that sorts by time.
        let stamp = Timestamp::now().to_string().replace(['-', ':'], "");
        let name = format!("mnemon-{stamp}.{EXTENSION}");
        // The same name the API gives a download (`view_of`).
        let path = self.folder.join(name);
        let (manifest, bytes) = create_file(store, data, passphrase.as_bytes(), &path)?;
        self.prune()?;
        Ok((path, manifest, bytes))
    }

    /// The scheduled backups in the folder, oldest first.
    pub fn existing(&self) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.folder.display())),
        };
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("mnemon-") && name.ends_with(&format!(".{EXTENSION}")) {
                found.push(self.folder.join(name.as_ref()));
            }
        }
        // The names hold the time, in a form that sorts.
        found.sort();
        Ok(found)
    }

    fn prune(&self) -> Result<()> {
        let existing = self.existing()?;
        let extra = existing.len().saturating_sub(self.keep);
        for old in &existing[..extra] {
            fs::remove_file(old)
                .with_context(|| format!("removing the old backup {}", old.display()))?;
        }
        Ok(())
    }
}

/// The outcome of the last backups, in `DATA/backup-state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The last backup that was taken.
    pub last: Option<Taken>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<Failed>,
    /// The schedule's interval when it last ran, in seconds.
    pub interval_secs: Option<u64>,
}

/// A backup taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// Where it was written (none for a download).
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

    /// Records a backup taken outside the schedule (`mnemon backup`, the API).
    pub fn record(data: &Path, file: Option<&Path>, manifest: &Manifest, bytes: u64) -> Result<()> {
        let mut state = State::load(data);
        state.last = Some(Taken {
            at_ms: now_ms(),
            file: file.map(|f| f.display().to_string()),
            bytes,
            memories: manifest.memories,
        });
        state.last_error = None;
        state.save(data)
    }

    /// Records a backup the API handed out, written to `file` by the caller.
    pub fn record_view(
        data: &Path,
        file: Option<&Path>,
        view: &mnemon_api::BackupView,
    ) -> Result<()> {
        let mut state = State::load(data);
        state.last = Some(Taken {
            at_ms: now_ms(),
            file: file.map(|f| f.display().to_string()),
            bytes: view.bytes,
            memories: view.memories,
        });
        state.last_error = None;
        state.save(data)
    }

    /// How old the last backup is at `now_ms`, in seconds.
    pub fn age_secs(&self, now_ms: u64) -> Option<u64> {
        self.last
            .as_ref()
            .map(|t| now_ms.saturating_sub(t.at_ms) / 1000)
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
