//! Mnemon's interfaces for people and agents: the HTTP API, the web UI, server-sent
//! events and the MCP server. They arrive with the service issue; until then the node's
//! only interface is its command line.
//!
//! This crate defines the trait the node implements and never knows how storage or
//! networking work.
