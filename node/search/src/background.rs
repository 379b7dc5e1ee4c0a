//! Background priority: the index's own threads (the indexer, the sealer, tantivy's writer
//! threads) take the CPU that requests leave, so a burst of writes is answered first and
//! indexed after; the index's lag says how far behind it is meanwhile.

/// How much lower than the process's own priority background work runs (nice steps).
const LOWER_BY: i32 = 10;

/// Lowers the calling thread's scheduling priority by 10 nice steps, to at most 19 (Linux;
/// elsewhere nothing). Threads it starts afterwards inherit it. Raising it back needs a
/// privilege a node does not have, so call it only on a thread that does background work
/// from then on.
pub fn lower_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        let now = rustix::process::getpriority_process(tid)?;
        rustix::process::setpriority_process(tid, (now + LOWER_BY).min(19))?;
    }
    Ok(())
}

/// Runs `work` on a short-lived thread at background priority and returns what it returns:
/// the threads `work` starts inherit that priority (tantivy's writer starts its indexing
/// threads when it opens, commits and rolls back), while the caller keeps its own. Where
/// no thread can be started, `work` runs on the caller's.
pub fn with_background_priority<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    let work = std::sync::Mutex::new(Some(work));
    let run = || {
        let work = work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        work.map(|work| work())
    };
    let spawned = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().spawn_scoped(scope, || {
            // Where it cannot be lowered, the work runs at the usual priority.
            let _ = lower_priority();
            run()
        });
        match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        }
    });
    match spawned {
        Some(done) => done,
        None => run().unwrap_or_else(|| unreachable!("the work ran neither there nor here")),
    }
}

/// Starts the thread pool the tokenizers share (rayon's global pool) from the calling
/// thread, if it has not started: its threads take their priority from the thread that
/// starts them, and queries are tokenized on them too. Call it before a thread at
/// background priority can be the first to tokenize.
pub fn start_shared_pool() {
    let _ = rayon::current_num_threads();
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("priority")
    }

    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_10_steps_lower() {
        let usual = nice();
        let (own, inherited) = std::thread::spawn(move || {
            super::lower_priority().expect("lowering a thread's own priority");
            let own = nice();
            let inherited = std::thread::spawn(nice).join().expect("child thread");
            (own, inherited)
        })
        .join()
        .expect("thread");
        let lowered = (usual + 10).min(19);
        assert_eq!((own, inherited), (lowered, lowered));
        assert_eq!(nice(), usual, "the caller keeps its priority");
        assert_eq!(
            super::with_background_priority(nice),
            lowered,
            "work run at background priority"
        );
        assert_eq!(nice(), usual);
    }

    #[test]
    fn the_shared_pool_keeps_the_priority_of_the_thread_that_started_it() {
        let usual = nice();
        super::start_shared_pool();
        let in_pool = std::thread::spawn(|| {
            super::lower_priority().expect("lowering");
            // From outside the pool, `join` runs both halves on its threads.
            rayon::join(nice, || ()).0
        })
        .join()
        .expect("thread");
        assert_eq!(in_pool, usual);
    }
}
