//! The `mnemon` binary: runs the CLI and turns errors into a message and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
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
