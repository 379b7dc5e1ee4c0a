//! Mnemon's integration tests: one binary, one module per area.

mod api;
mod ask;
mod browser;
mod cli;
mod crash;
mod embed;
mod engine;
mod federation;
mod import;
mod mcp;
mod minilm;
mod netns;
mod ops;
mod rerank;
mod scopes;
mod search;
mod tidy;
