//! Remember, edit, list and forget a memory with the store, in a temporary folder.
//!
//! Run: `cargo run -p mnemon-examples --example remember`

use mnemon_crdt::{ListFilter, MemoryEdit, NewMemory, Store};
use mnemon_identity::Keypair;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keypair = Keypair::generate();
    println!("node {}", keypair.did());

    let mut store = Store::open(dir.path().join("mnemon.redb"), keypair)?;
    let memory = store.add(NewMemory {
        content: "The spare key is under the blue flower pot.".into(),
        tags: vec!["home".into()],
        ..NewMemory::default()
    })?;
    println!("remembered {} ({:?})", memory.id, memory.title);

    store.edit(
        memory.id,
        &MemoryEdit {
            content: Some("The spare key is with the neighbour now.".into()),
            ..MemoryEdit::default()
        },
    )?;
    for memory in store.list(&ListFilter::default())? {
        println!("{}  {}  {:?}", memory.id, memory.updated_at, memory.content);
    }
    // Every change carries the author's signature.
    println!("{} signed changes verified", store.verify_all()?);

    store.remove(&[memory.id])?;
    println!("forgot {}; {} memories left", memory.id, store.count()?);
    Ok(())
}
