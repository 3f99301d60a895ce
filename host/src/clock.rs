//! Readings of the monotonic clock that fit in 8 bytes, exact or coarse.
//!
//! CLOCK_MONOTONIC_COARSE is CLOCK_MONOTONIC as of the kernel's last tick (a few ms behind at most), read
//! in a few ns where the exact clock takes ~25 on this project's machines. What is judged in seconds (a
//! server's lifetime, idle time and check delay; SHOW's request times) reads it, and every transaction
//! is spared those exact readings.

use std::time::Duration;

/// Micros in `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Micros on CLOCK_MONOTONIC (the clock `Instant` reads), or with `coarse` on CLOCK_MONOTONIC_COARSE
/// (falling back to the exact clock where the coarse one is missing); 0 if neither can be read.
pub fn mono_us(coarse: bool) -> u64 {
    use nix::time::{ClockId, clock_gettime};
    let exact = || clock_gettime(ClockId::CLOCK_MONOTONIC);
    let t = if coarse {
        clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).or_else(|_| exact())
    } else {
        exact()
    };
    t.map_or(0, |t| micros(Duration::from(t)))
}

/// A moment on the coarse monotonic clock, for durations measured in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Coarse(u64);

impl Coarse {
    pub fn now() -> Self {
        Self(mono_us(true))
    }

    /// The time from `earlier` to this moment; zero if `earlier` is later.
    pub fn since(self, earlier: Coarse) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    pub fn elapsed(self) -> Duration {
        Self::now().since(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_moments_follow_the_exact_clock() {
        let start = Coarse::now();
        let exact = mono_us(false);
        std::thread::sleep(Duration::from_millis(30));
        let later = Coarse::now();
        // The coarse clock lags the exact one by at most a tick, never leads it.
        assert!(start.0 <= exact, "{start:?} {exact}");
        assert!(
            later.since(start) >= Duration::from_millis(10),
            "{later:?} {start:?}"
        );
        assert_eq!(start.since(later), Duration::ZERO);
        assert!(start.elapsed() >= later.since(start));
    }
}
