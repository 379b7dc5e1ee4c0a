//! Files only their owner may read: every file a node keeps in its data folder is written
//! through here (mode `0600`, folders `0700`), whatever the process's umask.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use rand::RngCore as _;

/// Replaces `path` with `bytes` atomically: a private temporary file beside it, synced,
/// then renamed over it. A reader sees the old content or the new, never a part.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_private_with(path, |file| file.write_all(bytes))
}

/// As [`write_private`], with the content written by `write` (to stream what would be
/// large to hold in memory whole).
pub fn write_private_with(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut file = private_options().open(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh name for a temporary file beside `path` (hidden, random, `.tmp`).
pub fn temp_beside(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    dir.join(format!(
        ".{}.{:016x}.tmp",
        path.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("file"),
        u64::from_le_bytes(nonce)
    ))
}

/// Options that create a new file readable by its owner only.
pub fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Creates `path` and its missing parents, each readable by its owner only.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_and_folders_are_private_and_replaced_whole() {
        let dir = tempfile_dir();
        let sub = dir.join("a/b");
        create_private_dir(&sub).expect("dir");
        let path = sub.join("f.json");
        write_private(&path, b"one").expect("write");
        write_private(&path, b"two").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(
            fs::read_dir(&sub).expect("list").count(),
            1,
            "no temporary left"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&sub), 0o700);
            assert_eq!(mode(&dir.join("a")), 0o700);
        }
        fs::remove_dir_all(&dir).expect("clean up");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        std::env::temp_dir().join(format!("mnemon-private-{:016x}", u64::from_le_bytes(nonce)))
    }
}
