//! Crash safety: a storage backend that keeps only what was fsynced, cut at random points.
//!
//! The backend shows the process every write (like an OS page cache) but keeps, as the
//! "disk", only the bytes present at the last `sync_data`. At a random write the power is
//! cut: that write and every later I/O fail. The store is then reopened on the disk image
//! alone. Every memory whose `add` returned `Ok` must be there, and the store must open.

use std::io;
use std::sync::{Arc, Mutex};

use mnemon_crdt::{MemoryId, NewMemory, Store};
use mnemon_identity::Keypair;
use rand::{Rng, SeedableRng, rngs::StdRng};
use redb::StorageBackend;

#[derive(Debug, Default)]
struct Disk {
    /// What the process sees.
    volatile: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
    /// I/O operations left before the power cut; `None` means no cut planned.
    ops_left: Option<u64>,
    cut: bool,
}

#[derive(Debug, Clone)]
struct PowerCutBackend(Arc<Mutex<Disk>>);

impl PowerCutBackend {
    fn new(image: Vec<u8>, ops_before_cut: Option<u64>) -> PowerCutBackend {
        PowerCutBackend(Arc::new(Mutex::new(Disk {
            volatile: image.clone(),
            durable: image,
            ops_left: ops_before_cut,
            cut: false,
        })))
    }

    fn durable_image(&self) -> Vec<u8> {
        self.0.lock().expect("lock").durable.clone()
    }

    /// Counts one mutating operation; fails from the cut on.
    fn tick(disk: &mut Disk) -> io::Result<()> {
        if disk.cut {
            return Err(io::Error::other("power cut"));
        }
        if let Some(left) = disk.ops_left.as_mut() {
            if *left == 0 {
                disk.cut = true;
                return Err(io::Error::other("power cut"));
            }
            *left -= 1;
        }
        Ok(())
    }
}

impl StorageBackend for PowerCutBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().expect("lock").volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let disk = self.0.lock().expect("lock");
        if disk.cut {
            return Err(io::Error::other("power cut"));
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + out.len();
        if end > disk.volatile.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        out.copy_from_slice(&disk.volatile[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.0.lock().expect("lock");
        PowerCutBackend::tick(&mut disk)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        disk.volatile.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.0.lock().expect("lock");
        PowerCutBackend::tick(&mut disk)?;
        disk.durable = disk.volatile.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.0.lock().expect("lock");
        PowerCutBackend::tick(&mut disk)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + data.len();
        if end > disk.volatile.len() {
            disk.volatile.resize(end, 0);
        }
        disk.volatile[start..end].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn power_cuts_lose_no_acknowledged_memory() {
    const CUTS: usize = 1_000;
    let seed: u64 = std::env::var("MNEMON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let mut rng = StdRng::seed_from_u64(seed);
    let keypair = Keypair::from_seed(&[42; 32]);

    // A starting image with a few memories, made without cuts.
    let base = PowerCutBackend::new(Vec::new(), None);
    let mut acknowledged: Vec<(MemoryId, String)> = Vec::new();
    {
        let mut store = Store::open_with_backend(base.clone(), keypair.clone()).expect("open");
        for i in 0..5 {
            let content = format!("base memory {i}");
            let memory = store
                .add(NewMemory {
                    content: content.clone(),
                    ..NewMemory::default()
                })
                .expect("add");
            acknowledged.push((memory.id, content));
        }
    }
    let base_image = base.durable_image();

    let mut cuts_during_open = 0;
    let mut total_acknowledged = 0;
    for cut in 0..CUTS {
        // Each run starts from the base image and cuts the power after a random number of
        // mutating operations, spread over opening and a stream of adds.
        let ops = rng.gen_range(0..120);
        let backend = PowerCutBackend::new(base_image.clone(), Some(ops));
        let mut acked_here: Vec<(MemoryId, String)> = Vec::new();
        match Store::open_with_backend(backend.clone(), keypair.clone()) {
            Ok(mut store) => {
                for i in 0..40 {
                    let content = format!("cut {cut} memory {i}");
                    match store.add(NewMemory {
                        content: content.clone(),
                        ..NewMemory::default()
                    }) {
                        Ok(memory) => acked_here.push((memory.id, content)),
                        Err(_) => break,
                    }
                }
            }
            Err(_) => cuts_during_open += 1,
        }
        total_acknowledged += acked_here.len();

        let after = PowerCutBackend::new(backend.durable_image(), None);
        let store = Store::open_with_backend(after, keypair.clone()).unwrap_or_else(|e| {
            panic!("seed {seed:#x}, cut {cut} after {ops} ops: store does not reopen: {e}")
        });
        for (id, content) in acknowledged.iter().chain(&acked_here) {
            let memory = store.get(*id).unwrap_or_else(|e| {
                panic!("seed {seed:#x}, cut {cut} after {ops} ops: acknowledged {id} lost: {e}")
            });
            assert_eq!(&memory.content, content);
        }
    }
    // The cuts must have landed both during opening and in the middle of adds.
    assert!(cuts_during_open > 0, "no cut landed while opening");
    assert!(
        total_acknowledged > CUTS,
        "too few adds were acknowledged to mean anything"
    );
    eprintln!(
        "{CUTS} power cuts: {cuts_during_open} while opening, {total_acknowledged} adds acknowledged and kept"
    );
}
