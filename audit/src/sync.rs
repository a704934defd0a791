//! Background half of group commit. Input: notices from the writer that records were written;
//! output: an `fdatasync` of the log no later than `max_delay` after the oldest unsynced record,
//! even if no further append or flush comes. Invariant: the unsynced count and the age of the
//! oldest unsynced record are shared under one mutex; a failed background sync is kept and
//! returned by the writer's next call, never dropped.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Pending {
    unsynced: u32,
    oldest: Option<Instant>,
    stop: bool,
    error: Option<io::Error>,
}

type Shared = Arc<(Mutex<Pending>, Condvar)>;

/// Syncs the log in the background when its oldest unsynced record reaches `max_delay`.
pub(crate) struct Syncer {
    shared: Shared,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // A panic while holding this lock cannot leave the counters inconsistent in a way that
    // matters (worst case: one extra sync), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Syncer {
    /// Start the thread; `file` is a duplicate descriptor of the log.
    pub(crate) fn start(file: File, max_delay: Duration) -> io::Result<Syncer> {
        let shared: Shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let s2 = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("aegis-audit-sync".into())
            .spawn(move || run(&s2, &file, max_delay))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// `n` records were written; returns how many are unsynced now.
    pub(crate) fn wrote(&self, n: u32) -> u32 {
        let (m, cv) = &*self.shared;
        let mut g = lock(m);
        g.unsynced = g.unsynced.saturating_add(n);
        if g.oldest.is_none() {
            g.oldest = Some(Instant::now());
            cv.notify_one();
        }
        g.unsynced
    }

    /// Records written but not yet synced.
    pub(crate) fn unsynced(&self) -> u32 {
        lock(&self.shared.0).unsynced
    }

    /// The writer synced in the foreground.
    pub(crate) fn synced(&self) {
        let mut g = lock(&self.shared.0);
        g.unsynced = 0;
        g.oldest = None;
    }

    /// A background sync failure, once.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        lock(&self.shared.0).error.take()
    }
}

fn run(shared: &Shared, file: &File, max_delay: Duration) {
    let (m, cv) = &**shared;
    let mut g = lock(m);
    loop {
        if g.stop {
            return;
        }
        match g.oldest {
            None => {
                g = cv
                    .wait(g)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }
            Some(t) => {
                let due = t + max_delay;
                let now = Instant::now();
                if now < due {
                    g = cv
                        .wait_timeout(g, due - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                    continue;
                }
                // Everything written before this sync starts is covered by it.
                g.unsynced = 0;
                g.oldest = None;
                drop(g);
                let r = file.sync_data();
                g = lock(m);
                if let Err(e) = r {
                    g.error = Some(e);
                }
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        lock(&self.shared.0).stop = true;
        self.shared.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_after_the_delay_without_further_calls() {
        let f = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
        let s = Syncer::start(f, Duration::from_millis(30)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.wrote(3), 3);
        assert_eq!(s.unsynced(), 3, "not before the delay");
        let t = Instant::now();
        while s.unsynced() != 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(s.unsynced(), 0, "the background thread synced");
        assert!(t.elapsed() >= Duration::from_millis(10));
        assert!(s.take_error().is_none());
    }
}
