//! The Mnemon node: the composition root and the `mnemon` command-line interface.
//!
//! [`cli::run`] parses the command line and runs a command; [`DataDir`] is the node's data
//! folder (key file and database).

pub mod ask;
pub mod backup;
pub mod cli;
pub mod config;
mod data_dir;
pub mod doctor;
pub mod graph;
pub mod import;
pub mod model;
mod output;
pub mod remote;
pub mod rerank;
pub use mnemon_net as net;
pub use mnemon_search as search;
pub mod app;
pub mod serve;

pub use data_dir::{DB_FILE, DataDir, KEY_FILE, PEERS_FILE, PassphraseSource};

/// This build's version and the commit it was built from (`mnemon --version`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MNEMON_COMMIT"), ")");
