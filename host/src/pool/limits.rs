//! Limits shared by several pools: `max_db_connections` (all pools of one database entry) and
//! `max_user_connections` (all pools of one user).
//!
//! A counter with compare-and-swap so that acquiring never takes a lock; only the rare "limit reached"
//! path touches the list of pools waiting for room.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Weak};

use super::Pool;

/// Server connections counted against one shared maximum.
#[derive(Debug, Default)]
pub struct SharedLimit {
    count: AtomicU32,
    /// Pools that could not open a connection because of this limit; woken when a connection closes.
    waiting: Mutex<Vec<Weak<Pool>>>,
    /// Every pool counted against this limit, so that a pool at the limit can evict an idle connection of
    /// another (PgBouncer does the same).
    members: Mutex<Vec<Weak<Pool>>>,
}

impl SharedLimit {
    /// Takes one unit if the count is below `max` (0 = unlimited).
    pub fn try_acquire(&self, max: u32) -> bool {
        let mut cur = self.count.load(Ordering::Relaxed);
        loop {
            if max != 0 && cur >= max {
                return false;
            }
            match self.count.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives one unit back and lets every pool blocked on this limit try again (the first to ask gets
    /// it; the others register again). Waking only one could pick a pool that no longer needs it.
    pub fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for pool in waiting.iter().filter_map(Weak::upgrade) {
            pool.launch_if_needed();
        }
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Registers a pool that is blocked on this limit.
    pub fn wait(&self, pool: Weak<Pool>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if !waiting.iter().any(|w| w.ptr_eq(&pool)) {
            waiting.push(pool);
        }
    }

    pub fn add_member(&self, pool: Weak<Pool>) {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|w| w.strong_count() > 0);
        members.push(pool);
    }

    /// Closes one idle connection of another member pool, if any has one; true if it did.
    pub fn evict_idle(&self, except: &Pool) -> bool {
        let members: Vec<_> = {
            let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            members.iter().filter_map(Weak::upgrade).collect()
        };
        members
            .iter()
            .filter(|p| !std::ptr::eq(p.as_ref(), except))
            .any(|p| p.evict_one_idle("evicted to make room for another pool"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_respects_max_and_zero_means_unlimited() {
        let l = SharedLimit::default();
        assert!(l.try_acquire(2));
        assert!(l.try_acquire(2));
        assert!(!l.try_acquire(2));
        assert_eq!(l.count(), 2);
        l.release();
        assert!(l.try_acquire(2));
        for _ in 0..100 {
            assert!(l.try_acquire(0));
        }
    }

    #[test]
    fn concurrent_acquire_never_overshoots() {
        let l = std::sync::Arc::new(SharedLimit::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.try_acquire(50)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 50);
        assert_eq!(l.count(), 50);
    }
}
