//! Backups taken through the API: the request, and the sealed file that answers it.

use std::io::Read;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/backups`: take a backup now and send it.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The passphrase to seal it with (at least 8 characters); none: the one `[backup]`
    /// in `config.toml` names.
    #[serde(default)]
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for BackupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRequest")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Drop for BackupRequest {
    fn drop(&mut self) {
        if let Some(passphrase) = &mut self.passphrase {
            zeroize::Zeroize::zeroize(passphrase);
        }
    }
}

/// What a backup holds (the `X-Mnemon-Backup` header of the answer, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct BackupView {
    /// The node it is of.
    pub node: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// Memories in it.
    pub memories: u64,
    /// Collections in it.
    pub collections: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// A file name to keep it under (`mnemon-20261130T091502.117Z.mnemonbak`).
    pub file_name: String,
}

/// A backup, sealed, ready to be read from the start.
pub struct BackupFile {
    /// What it holds.
    pub view: BackupView,
    /// Its bytes.
    pub body: Box<dyn Read + Send>,
}

impl std::fmt::Debug for BackupFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupFile")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// The shortest passphrase a backup is sealed with.
pub const MIN_PASSPHRASE: usize = 8;
