//! Two nodes in one process: a memory made on one is verified and applied on the other.
//!
//! Until federation lands, changes travel by hand here; the store checks every change's
//! signature against its author before it stores anything.
//!
//! Run: `cargo run -p mnemon-examples --example two_brains`

use mnemon_crdt::{NewMemory, Store};
use mnemon_identity::{Keypair, Signature};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut alice = Store::open(dir.path().join("alice.redb"), Keypair::generate())?;
    let mut bob = Store::open(dir.path().join("bob.redb"), Keypair::generate())?;

    let memory = alice.add(NewMemory {
        content: "Lunch on Friday at the harbour.".into(),
        ..NewMemory::default()
    })?;
    let changes = alice.signed_changes(memory.id)?;
    let collection = bob.default_collection();
    let outcome = bob.apply_changes(collection, memory.id, &changes)?;
    println!(
        "bob applied {} change(s) by {}: {:?}",
        outcome.new_changes,
        alice.did(),
        bob.get(memory.id)?.content
    );

    // A tampered signature is refused and stores nothing.
    let mut forged = changes.clone();
    forged[0].signature = Signature::from_bytes([7; 64]);
    let mut carol = Store::open(dir.path().join("carol.redb"), Keypair::generate())?;
    let collection = carol.default_collection();
    match carol.apply_changes(collection, memory.id, &forged) {
        Ok(_) => anyhow::bail!("a forged change was accepted"),
        Err(e) => println!("carol refused a forged change: {e}"),
    }
    Ok(())
}
