//! The backup file: a manifest and the parts it names, sealed with a passphrase.
//!
//! Layout (integers little-endian), version 1:
//!
//! ```text
//! offset size field
//! 0      8    magic "MNEMBAK\0"
//! 8      1    format version (1)
//! 9      4    Argon2id memory cost in KiB      } the key file's scheme
//! 13     4    Argon2id iterations              } (mnemon_identity::SealParams)
//! 17     4    Argon2id parallelism             }
//! 21     16   salt
//! 37     19   nonce prefix (random)
//! 56     4    chunk size in bytes (plaintext)
//! 60     …    chunks: XChaCha20-Poly1305 of each chunk of the plaintext, 16-byte tag
//!             each; nonce = prefix || chunk number (u32 big-endian) || 1 on the last
//!             chunk, else 0; associated data: bytes 0..60
//! end-32 32   SHA-256 of every byte before it
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` bytes, so the reader knows where
//! each one ends; the flag in the last chunk's nonce makes a cut-off file fail to open.
//! The plaintext is the manifest's length (u32), the manifest (JSON), then the parts in
//! the manifest's order, each `bytes` long. The trailing checksum tells a damaged file
//! from a wrong passphrase (the checksum holds but the first chunk does not open).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use mnemon_identity::SealParams;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"MNEMBAK\0";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 60;
const TAG_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;
/// Plaintext bytes per chunk.
const CHUNK: usize = 1 << 20;
/// Chunk sizes a reader accepts (a hostile header cannot make it allocate much).
const CHUNK_RANGE: std::ops::RangeInclusive<usize> = 4096..=(16 << 20);
/// The most Argon2id memory a reader spends (256 MiB; backups are written with 64).
const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// Longest manifest a reader accepts.
const MAX_MANIFEST: usize = 1 << 20;
/// File name ending of backups.
pub const EXTENSION: &str = "mnemonbak";

/// What a backup holds, written first inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest's format (1).
    pub format: u32,
    /// The node the backup is of (`did:key:…`).
    pub node: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The version of Mnemon that wrote it.
    pub mnemon_version: String,
    /// Live memories in the store's snapshot.
    pub memories: u64,
    /// Collections in the store's snapshot.
    pub collections: u64,
    /// The snapshot's last change-log position.
    pub last_seq: u64,
    /// The files, in the order they follow the manifest.
    pub parts: Vec<Part>,
}

/// One file in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Its name in the data folder (`mnemon.redb`, `identity.key`, `config.toml`).
    pub name: String,
    /// Its length.
    pub bytes: u64,
    /// SHA-256 of its bytes, in hex.
    pub sha256: String,
}

/// Why a backup could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file does not start like a backup.
    #[error("this is not a Mnemon backup (its first bytes are not a backup's)")]
    NotABackup,
    /// A version this build cannot read.
    #[error("backup format version {0} is not supported by this Mnemon (it reads version 1)")]
    UnsupportedVersion(u8),
    /// Bytes changed or missing.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    /// The checksum holds but the passphrase does not open it.
    #[error("wrong passphrase for this backup")]
    WrongPassphrase,
    /// The key derivation's parameters are out of range.
    #[error("the backup's key derivation parameters are not supported ({0:?})")]
    Params(SealParams),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Hex of a SHA-256 digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes (hex) and its length.
pub fn hash_file(file: &mut File) -> io::Result<(String, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let bytes = io::copy(
        &mut BufReader::new(&mut *file),
        &mut HashWriter(&mut hasher),
    )?;
    file.seek(SeekFrom::Start(0))?;
    Ok((hex(&hasher.finalize()), bytes))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn nonce(prefix: &[u8; 19], chunk: u32, last: bool) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[..19].copy_from_slice(prefix);
    nonce[19..23].copy_from_slice(&chunk.to_be_bytes());
    nonce[23] = u8::from(last);
    *XNonce::from_slice(&nonce)
}

/// Writes a backup: the manifest, then each part read from its file, sealed with
/// `passphrase`. Returns the bytes written.
pub fn write(
    out: impl Write,
    passphrase: &[u8],
    params: SealParams,
    manifest: &Manifest,
    parts: &mut [File],
) -> Result<u64, ArchiveError> {
    let mut salt = [0u8; 16];
    let mut prefix = [0u8; 19];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut prefix);
    let key = params
        .derive_key(passphrase, &salt)
        .map_err(|_| ArchiveError::Params(params))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&params.memory_kib.to_le_bytes());
    header.extend_from_slice(&params.iterations.to_le_bytes());
    header.extend_from_slice(&params.parallelism.to_le_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&prefix);
    header.extend_from_slice(&(CHUNK as u32).to_le_bytes());
    debug_assert_eq!(header.len(), HEADER_LEN);

    let mut sealed = Sealer {
        out: io::BufWriter::new(out),
        hasher: Sha256::new(),
        cipher: XChaCha20Poly1305::new(key.as_slice().into()),
        prefix,
        header: header.clone(),
        chunk: 0,
        buf: Zeroizing::new(Vec::with_capacity(CHUNK)),
        written: 0,
    };
    sealed.raw(&header)?;
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    sealed.write_all(&(json.len() as u32).to_le_bytes())?;
    sealed.write_all(&json)?;
    for (part, file) in manifest.parts.iter().zip(parts.iter_mut()) {
        file.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut BufReader::new(&mut *file), &mut sealed)?;
        if copied != part.bytes {
            return Err(ArchiveError::Io(io::Error::other(format!(
                "{} changed while it was written ({} bytes, {} expected)",
                part.name, copied, part.bytes
            ))));
        }
    }
    sealed.finish()
}

/// The streaming half of [`write`]: buffers a chunk, seals it, keeps the checksum.
struct Sealer<W: Write> {
    out: io::BufWriter<W>,
    hasher: Sha256,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 19],
    header: Vec<u8>,
    chunk: u32,
    buf: Zeroizing<Vec<u8>>,
    written: u64,
}

impl<W: Write> Sealer<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let sealed = self
            .cipher
            .encrypt(
                &nonce(&self.prefix, self.chunk, last),
                Payload {
                    msg: &self.buf,
                    aad: &self.header,
                },
            )
            .map_err(|_| io::Error::other("sealing a chunk failed"))?;
        self.raw(&sealed)?;
        self.buf.clear();
        self.chunk = self
            .chunk
            .checked_add(1)
            .ok_or_else(|| io::Error::other("a backup holds at most 4 PiB"))?;
        Ok(())
    }

    fn finish(mut self) -> Result<u64, ArchiveError> {
        self.seal(true)?;
        let digest = self.hasher.clone().finalize();
        self.raw(&digest)?;
        let mut out = self.out.into_inner().map_err(|e| e.into_error())?;
        out.flush()?;
        Ok(self.written)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let len = data.len();
        while !data.is_empty() {
            // A full chunk is sealed only once more data follows: the last chunk may be
            // full, and must carry the last flag.
            if self.buf.len() == CHUNK {
                self.seal(false)?;
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An opened backup: its manifest, and the parts' bytes to read in order.
#[derive(Debug)]
pub struct Opened {
    /// What it holds.
    pub manifest: Manifest,
    /// The plaintext after the manifest.
    pub parts: Opener,
}

/// Checks a backup file's checksum, opens it with `passphrase` and reads its manifest.
pub fn open(mut file: File, passphrase: &[u8]) -> Result<Opened, ArchiveError> {
    let len = file.metadata()?.len();
    let mut header = [0u8; HEADER_LEN];
    if len < (HEADER_LEN + TAG_LEN + CHECKSUM_LEN) as u64 {
        let mut magic = [0u8; 8];
        return if file.read_exact(&mut magic).is_ok() && &magic == MAGIC {
            Err(ArchiveError::Damaged(format!(
                "it is cut short ({len} bytes)"
            )))
        } else {
            Err(ArchiveError::NotABackup)
        };
    }
    file.read_exact(&mut header)?;
    if &header[..8] != MAGIC {
        return Err(ArchiveError::NotABackup);
    }
    if header[8] != VERSION {
        return Err(ArchiveError::UnsupportedVersion(header[8]));
    }
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let params = SealParams {
        memory_kib: u32_at(9),
        iterations: u32_at(13),
        parallelism: u32_at(17),
    };
    // At most four times what a backup is written with: a hostile header cannot make
    // opening it take a gigabyte and minutes.
    if params.memory_kib > MAX_MEMORY_KIB || params.iterations > 12 || params.parallelism > 4 {
        return Err(ArchiveError::Params(params));
    }
    let chunk = u32_at(56) as usize;
    if !CHUNK_RANGE.contains(&chunk) {
        return Err(ArchiveError::Damaged(format!(
            "its chunk size {chunk} is out of range"
        )));
    }

    // The checksum first, over every byte: a flipped byte is "damaged", never "wrong
    // passphrase".
    let body = len - CHECKSUM_LEN as u64;
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let hashed = io::copy(
        &mut BufReader::new(Read::by_ref(&mut file).take(body)),
        &mut HashWriter(&mut hasher),
    )?;
    let mut trailer = [0u8; CHECKSUM_LEN];
    file.read_exact(&mut trailer)?;
    if hashed != body || hasher.finalize().as_slice() != trailer {
        return Err(ArchiveError::Damaged(
            "its checksum does not match (a changed or missing byte)".into(),
        ));
    }

    let mut salt = [0u8; 16];
    salt.copy_from_slice(&header[21..37]);
    let mut prefix = [0u8; 19];
    prefix.copy_from_slice(&header[37..56]);
    let key = params
        .derive_key(passphrase, &salt)
        .map_err(|_| ArchiveError::Params(params))?;
    file.seek(SeekFrom::Start(HEADER_LEN as u64))?;
    let mut parts = Opener {
        file: BufReader::new(file),
        cipher: XChaCha20Poly1305::new(key.as_slice().into()),
        prefix,
        header: header.to_vec(),
        chunk_size: chunk,
        remaining: body - HEADER_LEN as u64,
        chunk: 0,
        plain: Zeroizing::new(Vec::new()),
        at: 0,
    };
    let mut len = [0u8; 4];
    parts.read_exact(&mut len).map_err(unwrap_archive)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MANIFEST {
        return Err(ArchiveError::Damaged(format!(
            "its manifest is {len} bytes long"
        )));
    }
    let mut json = vec![0u8; len];
    parts.read_exact(&mut json).map_err(unwrap_archive)?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| ArchiveError::Damaged(format!("its manifest is unreadable: {e}")))?;
    if manifest.format != 1 {
        return Err(ArchiveError::Damaged(format!(
            "its manifest has format {}, this Mnemon reads 1",
            manifest.format
        )));
    }
    Ok(Opened { manifest, parts })
}

/// Reading errors carry the archive's own error inside an `io::Error`; this takes it out.
pub fn unwrap_archive(e: io::Error) -> ArchiveError {
    if e.get_ref().is_some_and(|inner| inner.is::<ArchiveError>()) {
        match e.into_inner().map(|inner| inner.downcast::<ArchiveError>()) {
            Some(Ok(archive)) => *archive,
            Some(Err(other)) => ArchiveError::Io(io::Error::other(other)),
            None => ArchiveError::Io(io::Error::other("unreadable")),
        }
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Damaged("it ends before its manifest's parts do".into())
    } else {
        ArchiveError::Io(e)
    }
}

/// The plaintext of an opened backup, chunk by chunk.
pub struct Opener {
    file: BufReader<File>,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 19],
    header: Vec<u8>,
    chunk_size: usize,
    /// Sealed bytes not read yet.
    remaining: u64,
    chunk: u32,
    plain: Zeroizing<Vec<u8>>,
    at: usize,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("chunk", &self.chunk)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Opens the next chunk; false at the end.
    fn next_chunk(&mut self) -> Result<bool, ArchiveError> {
        if self.remaining == 0 {
            return Ok(false);
        }
        let full = (self.chunk_size + TAG_LEN) as u64;
        let take = self.remaining.min(full);
        if take < TAG_LEN as u64 {
            return Err(ArchiveError::Damaged("its last chunk is cut short".into()));
        }
        let last = take == self.remaining;
        let mut sealed = vec![0u8; take as usize];
        self.file.read_exact(&mut sealed)?;
        let opened = self
            .cipher
            .decrypt(
                &nonce(&self.prefix, self.chunk, last),
                Payload {
                    msg: &sealed,
                    aad: &self.header,
                },
            )
            .map_err(|_| {
                if self.chunk == 0 {
                    ArchiveError::WrongPassphrase
                } else {
                    ArchiveError::Damaged(format!(
                        "chunk {} does not open (changed, with its checksum rewritten)",
                        self.chunk
                    ))
                }
            })?;
        self.plain = Zeroizing::new(opened);
        self.at = 0;
        self.remaining -= take;
        self.chunk += 1;
        Ok(true)
    }

    /// Checks that nothing follows the last part.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        if self.at < self.plain.len() || self.next_chunk()? && !self.plain.is_empty() {
            return Err(ArchiveError::Damaged(
                "bytes follow the last part its manifest names".into(),
            ));
        }
        Ok(())
    }
}

impl Read for Opener {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if !self.next_chunk().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.plain.len() - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> SealParams {
        SealParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn part_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> (Part, File) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        let (sha256, len) = hash_file(&mut file).unwrap();
        (
            Part {
                name: name.into(),
                bytes: len,
                sha256,
            },
            file,
        )
    }

    fn backup_of(
        dir: &std::path::Path,
        sizes: &[usize],
    ) -> (std::path::PathBuf, Manifest, Vec<Vec<u8>>) {
        let mut parts = Vec::new();
        let mut files = Vec::new();
        let mut contents = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..*size).map(|b| (b * 7 + i) as u8).collect();
            let (part, file) = part_file(dir, &format!("part{i}"), &bytes);
            parts.push(part);
            files.push(file);
            contents.push(bytes);
        }
        let manifest = Manifest {
            format: 1,
            node: "did:key:z6Mk".into(),
            created_ms: 1,
            mnemon_version: "test".into(),
            memories: 3,
            collections: 1,
            last_seq: 9,
            parts,
        };
        let path = dir.join("b.mnemonbak");
        write(
            File::create(&path).unwrap(),
            b"pass",
            fast(),
            &manifest,
            &mut files,
        )
        .unwrap();
        (path, manifest, contents)
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        for sizes in [vec![], vec![0], vec![CHUNK - 40], vec![CHUNK * 2 + 5, 3]] {
            let (path, manifest, contents) = backup_of(dir.path(), &sizes);
            let mut opened = open(File::open(&path).unwrap(), b"pass").unwrap();
            assert_eq!(opened.manifest, manifest);
            for (part, expected) in manifest.parts.iter().zip(&contents) {
                let mut got = Vec::new();
                Read::by_ref(&mut opened.parts)
                    .take(part.bytes)
                    .read_to_end(&mut got)
                    .unwrap();
                assert_eq!(&got, expected, "{sizes:?}");
            }
            opened.parts.finish().unwrap();
        }
    }

    #[test]
    fn a_wrong_passphrase_and_a_flipped_byte_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = backup_of(dir.path(), &[5000]);
        let err = open(File::open(&path).unwrap(), b"wrong").unwrap_err();
        assert!(matches!(err, ArchiveError::WrongPassphrase), "{err}");

        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = open(File::open(&path).unwrap(), b"pass").unwrap_err();
        assert!(matches!(err, ArchiveError::Damaged(_)), "{err}");

        bytes[middle] ^= 1;
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&path, &bytes).unwrap();
        let err = open(File::open(&path).unwrap(), b"pass").unwrap_err();
        assert!(matches!(err, ArchiveError::Damaged(_)), "{err}");

        std::fs::write(&path, b"hello, not a backup at all, but long enough to be read as one; more bytes here to pass the length check").unwrap();
        let err = open(File::open(&path).unwrap(), b"pass").unwrap_err();
        assert!(matches!(err, ArchiveError::NotABackup), "{err}");
    }

    #[test]
    fn a_rewritten_checksum_does_not_hide_a_changed_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (path, manifest, _) = backup_of(dir.path(), &[CHUNK + 10]);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = HEADER_LEN + CHUNK + TAG_LEN + 3; // inside the second chunk
        bytes[at] ^= 1;
        let body = bytes.len() - CHECKSUM_LEN;
        let digest = Sha256::digest(&bytes[..body]);
        bytes[body..].copy_from_slice(&digest);
        std::fs::write(&path, &bytes).unwrap();
        let mut opened = open(File::open(&path).unwrap(), b"pass").unwrap();
        let err = io::copy(
            &mut Read::by_ref(&mut opened.parts).take(manifest.parts[0].bytes),
            &mut io::sink(),
        )
        .map_err(unwrap_archive)
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Damaged(_)), "{err}");
    }
}
