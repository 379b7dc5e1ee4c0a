//! Runnable examples of Mnemon's crates; see the `examples` in this folder's Cargo.toml.
