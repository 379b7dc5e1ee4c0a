//! The `mnemon` binary: runs the CLI and turns errors into a message and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match mnemon_node::cli::run() {
        Ok(code) => code,
        Err(err) => {
            mnemon_node::cli::report(&err);
            ExitCode::FAILURE
        }
    }
}
