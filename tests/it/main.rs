//! Mnemon's integration tests: one binary, one module per area.

mod api;
mod browser;
mod cli;
mod crash;
mod embed;
mod federation;
mod mcp;
mod minilm;
mod netns;
mod search;
mod tidy;
