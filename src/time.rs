//! Time: the batcher's clock (real, or loom's model of it) and timed parks.
//!
//! Times are `u64` nanoseconds since the batcher's clock was made, never 0
//! (0 means "unset" in the fields that hold a time). Fields and variables
//! holding a clock time end in `_at` or `_since`; counts never do.

use crate::sync::thread;
#[cfg(loom)]
use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// Monotonic time in nanoseconds since the clock was made.
///
/// Under loom the clock is a model-checked counter that moves only when a
/// timed wait "elapses" ([`Clock::park_until`], and `Clock::advance_to`), so
/// the time trigger is explored without real time: a timed wait may return
/// at any point (as a real one may, spuriously), and when it returns for its
/// deadline, time is at least the deadline.
#[derive(Debug)]
pub(crate) struct Clock {
    #[cfg(not(loom))]
    epoch: std::time::Instant,
    #[cfg(loom)]
    now: AtomicU64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            #[cfg(not(loom))]
            epoch: std::time::Instant::now(),
            #[cfg(loom)]
            now: AtomicU64::new(1),
        }
    }

    /// Nanoseconds since the clock was made; never 0, so 0 can mean "unset".
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(not(loom))]
        {
            let d = self.epoch.elapsed();
            (d.as_secs().saturating_mul(1_000_000_000) + u64::from(d.subsec_nanos())).max(1)
        }
        #[cfg(loom)]
        {
            self.now.load(Ordering::SeqCst)
        }
    }

    /// Clock time `at` as an [`Instant`](std::time::Instant) (for a caller's
    /// own timers).
    pub(crate) fn instant_at(&self, at: u64) -> std::time::Instant {
        #[cfg(not(loom))]
        let (base, since) = (self.epoch, at);
        // The model's time is not real time: relative to now.
        #[cfg(loom)]
        let (base, since) = (std::time::Instant::now(), at.saturating_sub(self.now()));
        base.checked_add(Duration::from_nanos(since))
            .unwrap_or_else(|| base + Duration::from_secs(1 << 32))
    }

    /// The clock time `d` from now (saturating: `Duration::MAX` is never).
    pub(crate) fn deadline_after(&self, d: Duration) -> u64 {
        self.now().saturating_add(duration_to_nanos(d))
    }

    /// Under loom: let time pass up to `deadline` (called by a timed wait
    /// that is about to report its timeout).
    #[cfg(loom)]
    pub(crate) fn advance_to(&self, deadline: u64) {
        self.now.fetch_max(deadline, Ordering::SeqCst);
    }

    /// Parks the current thread until unparked or until `deadline` (clock
    /// nanoseconds), whichever is first; may return early (spuriously).
    pub(crate) fn park_until(&self, deadline: Option<u64>) {
        match deadline {
            None => thread::park(),
            Some(at) => {
                #[cfg(not(loom))]
                {
                    let now = self.now();
                    if at > now {
                        thread::park_timeout(Duration::from_nanos(at - now));
                    }
                }
                #[cfg(loom)]
                {
                    // A timed park that elapsed: time moves to the deadline.
                    self.advance_to(at);
                    loom::thread::yield_now();
                }
            }
        }
    }
}

/// A duration as clock nanoseconds, saturating at `u64::MAX` (never).
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
