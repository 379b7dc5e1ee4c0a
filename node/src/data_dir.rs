//! The data folder: where a node keeps its key file and its database.
//!
//! ```text
//! DATA/identity.key   the node's Ed25519 key, mode 0600, optionally passphrase-sealed
//! DATA/mnemon.redb    the store (see mnemon_crdt::Store)
//! DATA/peers.json     the peers federation has met (see mnemon_net)
//! DATA/p2p-listen.json  where federation listened last time (its ports are kept)
//! DATA/index/         search indexes, derived from the store (see crate::search)
//! ```

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mnemon_crdt::Store;
use mnemon_identity::{Did, KeyFile, KeyFileError, Keypair, SealParams};
use zeroize::Zeroizing;

/// A passphrase, zeroed when dropped.
type Secret = Zeroizing<String>;

/// File name of the key file inside the data folder.
pub const KEY_FILE: &str = "identity.key";
/// File name of federation's peer table inside the data folder.
pub const PEERS_FILE: &str = "peers.json";
/// File name of the database inside the data folder.
pub const DB_FILE: &str = "mnemon.redb";

/// Where a passphrase comes from (the key file's, or a backup's).
#[derive(Debug, Clone)]
pub struct PassphraseSource {
    /// The value of the environment variable, if set.
    pub env: Option<String>,
    /// A file whose first line is the passphrase.
    pub file: Option<PathBuf>,
    /// Where `env` came from, for messages (`MNEMON_PASSPHRASE`).
    pub var: &'static str,
}

impl Default for PassphraseSource {
    fn default() -> PassphraseSource {
        PassphraseSource {
            env: None,
            file: None,
            var: "MNEMON_PASSPHRASE",
        }
    }
}

impl PassphraseSource {
    /// The key file's: `MNEMON_PASSPHRASE`, or `file`.
    pub fn key_file(file: Option<PathBuf>) -> PassphraseSource {
        PassphraseSource::from_env("MNEMON_PASSPHRASE", file)
    }

    /// A backup's: `MNEMON_BACKUP_PASSPHRASE`, or `file`.
    pub fn backup(file: Option<PathBuf>) -> PassphraseSource {
        PassphraseSource::from_env("MNEMON_BACKUP_PASSPHRASE", file)
    }

    fn from_env(var: &'static str, file: Option<PathBuf>) -> PassphraseSource {
        PassphraseSource {
            env: std::env::var(var).ok(),
            file,
            var,
        }
    }

    /// The passphrase from the file or the environment, never a prompt.
    pub fn get_quiet(&self) -> Result<Option<Secret>> {
        self.get_from(None, false)
    }

    /// The passphrase, from the file, the environment or (on a terminal) a prompt, asked
    /// twice when `confirm`.
    pub fn get(&self, prompt: &str, confirm: bool) -> Result<Option<Secret>> {
        self.get_from(Some(prompt), confirm)
    }

    fn get_from(&self, prompt: Option<&str>, confirm: bool) -> Result<Option<Secret>> {
        if let Some(path) = &self.file {
            let text = fs::read_to_string(path)
                .with_context(|| format!("reading passphrase file {}", path.display()))?;
            let line = text.lines().next().unwrap_or("").to_owned();
            if line.is_empty() {
                bail!("passphrase file {} is empty", path.display());
            }
            return Ok(Some(Zeroizing::new(line)));
        }
        if let Some(env) = &self.env {
            if env.is_empty() {
                bail!("{} is set but empty", self.var);
            }
            return Ok(Some(Zeroizing::new(env.clone())));
        }
        if let Some(prompt) = prompt
            && std::io::stdin().is_terminal()
        {
            let first = rpassword::prompt_password(prompt).context("reading passphrase")?;
            if confirm {
                let second = rpassword::prompt_password("Repeat passphrase: ")
                    .context("reading passphrase")?;
                if first != second {
                    bail!("the passphrases do not match");
                }
            }
            if first.is_empty() {
                bail!("the passphrase is empty");
            }
            return Ok(Some(Zeroizing::new(first)));
        }
        Ok(None)
    }
}

/// A node's data folder.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The platform's data folder for Mnemon (e.g. `~/.local/share/mnemon` on Linux).
    pub fn platform_default() -> Result<DataDir> {
        let dirs = directories::ProjectDirs::from("", "", "mnemon")
            .context("cannot find a home directory for the data folder; pass --data-dir")?;
        Ok(DataDir::new(dirs.data_dir()))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key file.
    pub fn key_file(&self) -> KeyFile {
        KeyFile::new(self.root.join(KEY_FILE))
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }

    /// The peer table federation keeps across restarts.
    pub fn peers_file(&self) -> PathBuf {
        self.root.join(PEERS_FILE)
    }

    /// The addresses federation listened on last time (their ports are kept).
    pub fn p2p_listen_file(&self) -> PathBuf {
        self.root.join("p2p-listen.json")
    }

    /// The folder of the search indexes (derived data).
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// Creates the folder (mode 0700), the identity and the database. Returns the DID and
    /// whether a new identity was made; an existing identity is never replaced.
    pub fn init(&self, seal: bool, passphrase: &PassphraseSource) -> Result<(Did, bool)> {
        create_private_dir(&self.root)?;
        let key_file = self.key_file();
        if key_file.exists() {
            let did = key_file.read_did().map_err(key_error)?;
            if !fs::metadata(self.db_path()).is_ok_and(|meta| meta.len() > 0) {
                // The identity without its database (removed, or never written): an empty
                // one for it, as asked.
                let _ = fs::remove_file(self.db_path());
                let keypair = self.unlock(passphrase)?;
                Store::open(self.db_path(), keypair)
                    .with_context(|| format!("creating the database in {}", self.root.display()))?;
            }
            return Ok((did, false));
        }
        if fs::metadata(self.db_path()).is_ok_and(|meta| meta.is_file() && meta.len() > 0) {
            bail!(
                "{} holds a database but no key file ({KEY_FILE}): it belongs to an identity \
                 that is not here. Put its key file back, or move the database away to start \
                 a new node",
                self.root.display()
            );
        }
        let secret = if seal {
            Some(
                passphrase
                    .get("New passphrase for the key file: ", true)?
                    .context("--passphrase needs a passphrase: set MNEMON_PASSPHRASE, pass --passphrase-file, or run on a terminal")?,
            )
        } else {
            None
        };
        let keypair = Keypair::generate();
        key_file
            .create(
                &keypair,
                secret.as_ref().map(|s| s.as_bytes()),
                SealParams::default(),
            )
            .map_err(key_error)?;
        let store = Store::open(self.db_path(), keypair.clone());
        if let Err(e) = store {
            // No key without its database: a second init must not find half a node.
            let _ = fs::remove_file(self.root.join(KEY_FILE));
            return Err(anyhow::Error::new(e)
                .context(format!("creating the database in {}", self.root.display())));
        }
        Ok((keypair.did(), true))
    }

    /// The DID, without unlocking the key.
    pub fn did(&self) -> Result<Did> {
        self.require_init()?;
        self.key_file().read_did().map_err(key_error)
    }

    /// Unlocks the key and opens the store.
    pub fn open_store(&self, passphrase: &PassphraseSource) -> Result<Store> {
        let keypair = self.unlock(passphrase)?;
        self.open_store_with(keypair)
    }

    /// Opens the store with the node's unlocked key. A database that is missing or empty
    /// is refused, never made anew: an initialised node's memories were there.
    pub fn open_store_with(&self, keypair: Keypair) -> Result<Store> {
        let path = self.db_path();
        match fs::metadata(&path) {
            Ok(meta) if meta.len() > 0 => {}
            Ok(_) => bail!(
                "{} is empty (0 bytes): this node's memories are not in it. Restore it from \
                 a backup; if `mnemon init` was cut short before it wrote anything, remove \
                 the file and run `mnemon init` again",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is missing: this node's memories are not there. Restore it from a \
                 backup, or run `mnemon init` to start an empty database for this identity",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(Store::open(path, keypair)?)
    }

    /// Unlocks the node's key.
    pub fn unlock(&self, passphrase: &PassphraseSource) -> Result<mnemon_identity::Keypair> {
        self.require_init()?;
        let key_file = self.key_file();
        let secret = if key_file.is_sealed().map_err(key_error)? {
            Some(
                passphrase
                    .get("Passphrase for the key file: ", false)?
                    .context("the key file is sealed: set MNEMON_PASSPHRASE, pass --passphrase-file, or run on a terminal")?,
            )
        } else {
            None
        };
        key_file
            .unlock(secret.as_ref().map(|s| s.as_bytes()))
            .map_err(key_error)
    }

    fn require_init(&self) -> Result<()> {
        if !self.key_file().exists() {
            bail!(
                "data folder {} is not initialised: run `mnemon init` first",
                self.root.display()
            );
        }
        Ok(())
    }
}

fn key_error(e: KeyFileError) -> anyhow::Error {
    anyhow::Error::new(e)
}

fn create_private_dir(path: &Path) -> Result<()> {
    mnemon_identity::private::create_private_dir(path)
        .with_context(|| format!("creating data folder {}", path.display()))
}
