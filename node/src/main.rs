//! The `mnemon` binary: runs the CLI and turns errors into a message and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    tune_allocator();
    // Everything this process creates (the store, the search indexes tantivy writes, the
    // files of a backup or an export) is its owner's alone, whatever the shell's umask.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    match mnemon_node::cli::run() {
        Ok(code) => code,
        Err(err) => {
            mnemon_node::cli::report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Buffers of a megabyte and more (a large memory's text, its document, its view, a
/// search segment) are mapped on their own and given back to the kernel when freed.
/// glibc otherwise raises its mmap threshold after the first such free and keeps later
/// ones in the freeing thread's arena: the request, the writer and the indexer threads
/// each then held their own copies, and one 8 MB memory cost 23× its size in resident
/// memory instead of under 10× (`node/benches/wrk/large.sh`).
///
/// (One malloc arena per core instead of glibc's eight per core cut resident memory after
/// searching at 100,000 memories from 345 to 296 MB, but adds at 50 connections fell by a
/// fifth, 1,501–1,507/s against 1,798–1,872/s side by side: not kept.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    allocator(Allocator::Tune);
    // A vector graph's merge holds the graphs it merges beside the one it builds: after
    // it, the free pages go back (glibc keeps them otherwise, and resident memory at rest
    // would keep the peak of the largest merge).
    mnemon_node::app::on_memory_freed(|| allocator(Allocator::GiveBack));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
enum Allocator {
    Tune,
    GiveBack,
}

/// The process's only unsafe code: two calls into glibc's allocator.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn allocator(what: Allocator) {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before any other
    // thread exists, and a refusal (0) leaves glibc's defaults, which are safe too.
    // `malloc_trim` only releases memory that is free; any thread may call it.
    unsafe {
        match what {
            Allocator::Tune => libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20),
            Allocator::GiveBack => libc::malloc_trim(0),
        };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
