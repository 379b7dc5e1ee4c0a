//! The key file: a node's keypair on disk, mode `0600`, optionally sealed with a passphrase.
//!
//! Layout (all integers little-endian), version 1:
//!
//! ```text
//! offset size field
//! 0      8    magic "MNEMKEY\0"
//! 8      1    format version (1)
//! 9      1    kind: 0 = plain, 1 = sealed
//! 10     32   Ed25519 public key (in the clear, so the DID is readable without the passphrase)
//! plain:
//! 42     32   secret seed
//! 74     32   SHA-256 of bytes 0..74
//! sealed:
//! 42     4    Argon2id memory cost in KiB
//! 46     4    Argon2id iterations
//! 50     4    Argon2id parallelism
//! 54     16   salt
//! 70     24   XChaCha20-Poly1305 nonce
//! 94     48   sealed seed (32 bytes + 16-byte tag); associated data: bytes 0..94
//! 142    32   SHA-256 of bytes 0..142
//! ```
//!
//! The trailing checksum tells a damaged file ("corrupt") from a wrong passphrase (the
//! checksum is fine but the seal does not open).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::did::Did;
use crate::keypair::Keypair;

const MAGIC: &[u8; 8] = b"MNEMKEY\0";
const VERSION: u8 = 1;
const KIND_PLAIN: u8 = 0;
const KIND_SEALED: u8 = 1;
const HEADER_LEN: usize = 42;
const PLAIN_LEN: usize = HEADER_LEN + 32 + 32;
const SEALED_BODY: usize = HEADER_LEN + 12 + 16 + 24 + 48;
const SEALED_LEN: usize = SEALED_BODY + 32;
const CHECKSUM_LEN: usize = 32;

/// Argon2id cost parameters for sealing a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism.
    pub parallelism: u32,
}

impl SealParams {
    /// Largest memory cost accepted from a file (1 GiB), so a hostile file cannot exhaust memory.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Largest iteration count accepted from a file.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Largest parallelism accepted from a file.
    pub const MAX_PARALLELISM: u32 = 16;

    fn check(self) -> Result<Params, KeyFileError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(KeyFileError::UnsupportedParams(self));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| KeyFileError::UnsupportedParams(self))
    }
}

impl SealParams {
    /// The 32-byte key Argon2id derives from `passphrase` and `salt` at these costs: the
    /// key file's scheme, which backups share.
    pub fn derive_key(
        self,
        passphrase: &[u8],
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        derive_key(passphrase, salt, self)
    }
}

impl Default for SealParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter of a second on a small server.
    fn default() -> SealParams {
        SealParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Reading and writing a node's key file.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key file at `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> KeyFile {
        KeyFile { path: path.into() }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Writes `keypair` to a new key file with mode `0600`; sealed when `passphrase` is given.
    ///
    /// Never replaces an existing file: the write goes to a temporary file that is then
    /// hard-linked into place, which fails if the key file already exists.
    pub fn create(
        &self,
        keypair: &Keypair,
        passphrase: Option<&[u8]>,
        params: SealParams,
    ) -> Result<(), KeyFileError> {
        let bytes = match passphrase {
            None => encode_plain(keypair),
            Some(passphrase) => encode_sealed(keypair, passphrase, params)?,
        };
        write_new_private(&self.path, &bytes)
    }

    /// The DID stored in the file, readable without the passphrase.
    pub fn read_did(&self) -> Result<Did, KeyFileError> {
        let bytes = self.read_checked()?;
        header_did(&bytes)
    }

    /// Whether the file is sealed with a passphrase.
    pub fn is_sealed(&self) -> Result<bool, KeyFileError> {
        let bytes = self.read_checked()?;
        Ok(bytes[9] == KIND_SEALED)
    }

    /// Reads the keypair, opening the seal with `passphrase` when the file is sealed.
    pub fn unlock(&self, passphrase: Option<&[u8]>) -> Result<Keypair, KeyFileError> {
        let bytes = self.read_checked()?;
        let did = header_did(&bytes)?;
        let keypair = match bytes[9] {
            KIND_PLAIN => {
                let mut seed = Zeroizing::new([0u8; 32]);
                seed.copy_from_slice(&bytes[HEADER_LEN..HEADER_LEN + 32]);
                Keypair::from_seed(&seed)
            }
            _ => {
                let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
                open_sealed(&bytes, passphrase)?
            }
        };
        if keypair.did() != did {
            return Err(KeyFileError::Corrupt(
                "the secret key does not match the public key".into(),
            ));
        }
        Ok(keypair)
    }

    /// Reads the file, checks permissions, magic, version, kind, length and checksum.
    fn read_checked(&self) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        let metadata = fs::metadata(&self.path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => KeyFileError::NotFound(self.path.clone()),
            _ => KeyFileError::Io {
                path: self.path.clone(),
                source,
            },
        })?;
        check_private_mode(&self.path, &metadata)?;
        if metadata.len() > 4096 {
            return Err(KeyFileError::Corrupt(format!(
                "{} bytes is far too long for a key file",
                metadata.len()
            )));
        }
        let bytes = Zeroizing::new(fs::read(&self.path).map_err(|source| KeyFileError::Io {
            path: self.path.clone(),
            source,
        })?);
        check_bytes(&bytes)?;
        Ok(bytes)
    }

    /// The DID a key file's bytes hold (in the clear, no passphrase needed), once its
    /// format and checksum are checked: what a backup's key file is checked by.
    pub fn did_in(bytes: &[u8]) -> Result<Did, KeyFileError> {
        check_bytes(bytes)?;
        header_did(bytes)
    }
}

/// Checks a key file's magic, version, kind, length and checksum.
fn check_bytes(bytes: &[u8]) -> Result<(), KeyFileError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(KeyFileError::Corrupt("not a Mnemon key file".into()));
    }
    if bytes[8] != VERSION {
        return Err(KeyFileError::UnsupportedVersion(bytes[8]));
    }
    let expected_len = match bytes[9] {
        KIND_PLAIN => PLAIN_LEN,
        KIND_SEALED => SEALED_LEN,
        other => return Err(KeyFileError::Corrupt(format!("unknown key kind {other}"))),
    };
    if bytes.len() != expected_len {
        return Err(KeyFileError::Corrupt(format!(
            "expected {expected_len} bytes, found {}",
            bytes.len()
        )));
    }
    let (body, checksum) = bytes.split_at(expected_len - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(KeyFileError::Corrupt("checksum mismatch".into()));
    }
    Ok(())
}

fn header(keypair: &Keypair, kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(keypair.did().public_key());
    out
}

fn header_did(bytes: &[u8]) -> Result<Did, KeyFileError> {
    Did::from_public_key_slice(&bytes[10..HEADER_LEN])
        .map_err(|e| KeyFileError::Corrupt(format!("public key: {e}")))
}

fn push_checksum(out: &mut Vec<u8>) {
    let checksum = Sha256::digest(&out[..]);
    out.extend_from_slice(&checksum);
}

fn encode_plain(keypair: &Keypair) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(header(keypair, KIND_PLAIN));
    out.extend_from_slice(keypair.seed().as_slice());
    push_checksum(&mut out);
    out
}

fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    params: SealParams,
) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.check()?);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, key.as_mut_slice())
        .map_err(|_| KeyFileError::UnsupportedParams(params))?;
    Ok(key)
}

fn encode_sealed(
    keypair: &Keypair,
    passphrase: &[u8],
    params: SealParams,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, params)?;

    let mut out = Zeroizing::new(header(keypair, KIND_SEALED));
    out.extend_from_slice(&params.memory_kib.to_le_bytes());
    out.extend_from_slice(&params.iterations.to_le_bytes());
    out.extend_from_slice(&params.parallelism.to_le_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new(key.as_slice().into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: keypair.seed().as_slice(),
                aad: &out[..],
            },
        )
        .map_err(|_| KeyFileError::Corrupt("sealing failed".into()))?;
    out.extend_from_slice(&sealed);
    debug_assert_eq!(out.len(), SEALED_BODY);
    push_checksum(&mut out);
    Ok(out)
}

fn open_sealed(bytes: &[u8], passphrase: &[u8]) -> Result<Keypair, KeyFileError> {
    let u32_at = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u32::from_le_bytes(word)
    };
    let params = SealParams {
        memory_kib: u32_at(HEADER_LEN),
        iterations: u32_at(HEADER_LEN + 4),
        parallelism: u32_at(HEADER_LEN + 8),
    };
    let salt = &bytes[HEADER_LEN + 12..HEADER_LEN + 28];
    let nonce = &bytes[HEADER_LEN + 28..HEADER_LEN + 52];
    let aad_end = HEADER_LEN + 52;
    let key = derive_key(passphrase, salt, params)?;
    let cipher = XChaCha20Poly1305::new(key.as_slice().into());
    let seed = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: &bytes[aad_end..SEALED_BODY],
                    aad: &bytes[..aad_end],
                },
            )
            .map_err(|_| KeyFileError::WrongPassphrase)?,
    );
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Corrupt("sealed seed has the wrong length".into()))?;
    Ok(Keypair::from_seed(seed))
}

#[cfg(unix)]
fn check_private_mode(path: &Path, metadata: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _metadata: &fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

/// Writes `bytes` to a new file at `path` with mode `0600`, durably, never replacing a file.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return Err(KeyFileError::AlreadyExists(path.to_owned()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = crate::private::temp_beside(path);
    let result = (|| {
        let mut file = crate::private::private_options().open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(KeyFileError::AlreadyExists(path.to_owned()));
        }
        Err(e) => return Err(io_err(e)),
    }
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err)?;
    Ok(())
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// There is no key file.
    #[error("no key file at {0}")]
    NotFound(PathBuf),
    /// A key file already exists and is never overwritten.
    #[error("a key file already exists at {0}; it is never overwritten")]
    AlreadyExists(PathBuf),
    /// The file can be read by other users.
    #[error(
        "key file {path} has mode {mode:04o}; it must be readable by its owner only (chmod 600)"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is damaged or not a key file.
    #[error("key file is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a newer version of Mnemon.
    #[error("key file format version {0} is not supported by this version of mnemon")]
    UnsupportedVersion(u8),
    /// The Argon2id parameters are out of the accepted range.
    #[error("key file asks for unsupported Argon2id parameters {0:?}")]
    UnsupportedParams(SealParams),
    /// The file is sealed and no passphrase was given.
    #[error("key file is sealed with a passphrase, and none was given")]
    PassphraseRequired,
    /// The passphrase does not open the seal.
    #[error("wrong passphrase for the key file")]
    WrongPassphrase,
    /// Reading or writing failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: SealParams = SealParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn temp() -> (tempfile::TempDir, KeyFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = KeyFile::new(dir.path().join("identity.key"));
        (dir, file)
    }

    #[test]
    fn plain_round_trip_with_mode_0600() {
        let (_dir, file) = temp();
        let keypair = Keypair::generate();
        file.create(&keypair, None, FAST).expect("create");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(file.path())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(file.read_did().expect("did"), keypair.did());
        assert!(!file.is_sealed().expect("kind"));
        assert_eq!(file.unlock(None).expect("unlock").did(), keypair.did());
    }

    #[test]
    fn never_overwrites() {
        let (_dir, file) = temp();
        let first = Keypair::generate();
        file.create(&first, None, FAST).expect("create");
        let err = file.create(&Keypair::generate(), None, FAST).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists(_)), "{err}");
        assert_eq!(file.read_did().expect("did"), first.did());
    }

    #[test]
    fn sealed_round_trip_and_wrong_passphrase() {
        let (_dir, file) = temp();
        let keypair = Keypair::generate();
        file.create(&keypair, Some(b"correct horse"), FAST)
            .expect("create");
        assert!(file.is_sealed().expect("kind"));
        assert_eq!(file.read_did().expect("did"), keypair.did());
        assert!(matches!(
            file.unlock(None),
            Err(KeyFileError::PassphraseRequired)
        ));
        assert!(matches!(
            file.unlock(Some(b"battery staple")),
            Err(KeyFileError::WrongPassphrase)
        ));
        let unlocked = file.unlock(Some(b"correct horse")).expect("unlock");
        assert_eq!(unlocked.did(), keypair.did());
        // The seed is not in the file in the clear.
        let bytes = fs::read(file.path()).expect("read");
        let seed = keypair.seed();
        assert!(!bytes.windows(32).any(|w| w == seed.as_slice()));
    }

    #[test]
    fn every_flipped_byte_is_reported_as_corrupt() {
        for sealed in [false, true] {
            let (_dir, file) = temp();
            let passphrase: Option<&[u8]> = sealed.then_some(b"pw");
            file.create(&Keypair::generate(), passphrase, FAST)
                .expect("create");
            let good = fs::read(file.path()).expect("read");
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x40;
                fs::write(file.path(), &bad).expect("write");
                let err = file.unlock(passphrase).unwrap_err();
                assert!(
                    matches!(
                        err,
                        KeyFileError::Corrupt(_) | KeyFileError::UnsupportedVersion(_)
                    ),
                    "byte {i}: {err}"
                );
            }
            fs::write(file.path(), &good[..good.len() - 1]).expect("write");
            assert!(matches!(
                file.unlock(passphrase),
                Err(KeyFileError::Corrupt(_))
            ));
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, file) = temp();
        file.create(&Keypair::generate(), None, FAST)
            .expect("create");
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            file.unlock(None),
            Err(KeyFileError::InsecurePermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn hostile_argon_parameters_are_refused() {
        let params = SealParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        };
        assert!(matches!(
            derive_key(b"pw", &[0; 16], params),
            Err(KeyFileError::UnsupportedParams(_))
        ));
    }

    #[test]
    fn missing_file() {
        let (_dir, file) = temp();
        assert!(matches!(file.read_did(), Err(KeyFileError::NotFound(_))));
    }
}
