//! Background priority: the index's own threads (the indexer, the sealer, tantivy's writer
//! threads) take the CPU that requests leave, so a burst of writes is answered first and
//! indexed after; the index's lag says how far behind it is meanwhile.

/// Lowers the calling thread's scheduling priority to nice 10 (Linux; elsewhere nothing).
/// Threads it starts afterwards inherit it. Raising it back needs a privilege a node
/// does not have, so call it only on a thread that does background work from then on.
pub fn lower_priority() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10)?;
    Ok(())
}

/// Runs `work` on a short-lived thread at background priority and returns what it returns:
/// the threads `work` starts inherit that priority (tantivy's writer starts its indexing
/// threads when it opens, commits and rolls back), while the caller keeps its own.
pub fn with_background_priority<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Where it cannot be lowered, the work runs at the usual priority.
                let _ = lower_priority();
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_at_nice_10() {
        let nice = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let (own, inherited) = std::thread::spawn(move || {
            super::lower_priority().expect("lowering a thread's own priority");
            let own = nice().expect("own priority");
            let inherited = std::thread::spawn(move || nice().expect("child priority"))
                .join()
                .expect("child thread");
            (own, inherited)
        })
        .join()
        .expect("thread");
        assert_eq!((own, inherited), (10, 10));
        assert_ne!(nice().expect("the test thread's priority"), 10);
    }
}
