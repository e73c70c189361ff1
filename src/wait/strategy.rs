//! What each [`WaitStrategy`] does when the flusher has nothing to
//! dispatch yet: poll (pausing or yielding), or park.
//!
//! The flusher's loop asks [`Pacer::next`] what to do; a `Park` answer
//! sends it into the wake protocol (`shared::wake`), where it parks until a
//! producer, a flush, a close or the deadline wakes it. Under loom every
//! strategy parks: the mock clock does not move while spinning, and parking
//! is the protocol worth checking. The reasons for the constants are here;
//! their measurements are in BENCHMARKS.md ("How the engine got here",
//! "What limits us").

use crate::config::WaitStrategy;
#[cfg(not(loom))]
use crate::sync::{spin_hint, thread};
#[cfg(not(loom))]
use crate::time::{duration_to_nanos, Clock};

/// How early a spinning flusher wakes from a timed park to spin to its
/// deadline: a timed park overshoots by the timer slack plus the wake-up
/// latency.
#[cfg(not(loom))]
const TIMER_SLACK_NS: u64 = 120_000;

/// The longest a spinning flusher goes without re-reading the shard tails:
/// each read takes their lines from the producers, so back-to-back reads
/// slow every submit; a longer gap lets producers run out of room.
#[cfg(not(loom))]
const MAX_POLL_GAP_NS: u64 = 3_000;

/// The per-item interval a spinning flusher assumes before it has seen
/// items arrive: the fastest a producer submits.
#[cfg(not(loom))]
const FASTEST_SUBMIT_NS: u64 = 4;

/// Pauses between two polls of a busy-spinning flusher.
#[cfg(not(loom))]
const POLL_PAUSES: u32 = 32;

/// What the flusher does next when it has nothing to dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// It has polled (paused or yielded): read the shards again.
    #[cfg_attr(loom, allow(dead_code))]
    Polled,
    /// Park until woken or until this deadline (clock time).
    Park(Option<u64>),
}

/// What the pacing of a spinning flusher reads from the shards.
#[derive(Debug, Clone, Copy)]
#[cfg(not(loom))]
pub(crate) struct Load {
    /// The sum of the shards' accepted counts.
    pub(crate) accepted: u64,
    /// The free room of the fullest shard.
    pub(crate) least_room: u64,
}

/// The flusher's spin phase: when it began, and the arrival rate that paces
/// its polls.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// When the current spin phase began.
    #[cfg(not(loom))]
    spin_since: Option<u64>,
    /// Total accepted count and clock time at the last spin poll.
    #[cfg(not(loom))]
    last_poll: (u64, u64),
}

impl Pacer {
    /// A batch was dispatched, or the flusher parked: the next idle phase
    /// spins again from its start.
    pub(crate) fn reset(&mut self) {
        #[cfg(not(loom))]
        {
            self.spin_since = None;
        }
    }

    /// Decides how to wait for work until `deadline` (an item's time
    /// trigger when `pending > 0`, else an idle poll), polling for a while
    /// first if the strategy says so. `interrupted` says whether a flush or
    /// close arrived; `load` reads the shards for the poll pacing.
    #[cfg(not(loom))]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn next(
        &mut self,
        strategy: WaitStrategy,
        clock: &Clock,
        now: u64,
        deadline: Option<u64>,
        pending: u64,
        max_delay_ns: u64,
        load: impl FnOnce() -> Load,
        interrupted: impl Fn() -> bool,
    ) -> Idle {
        match strategy {
            WaitStrategy::BusySpin => {
                // A burst of pauses between polls: polling the shard tails
                // back to back would pull their lines away from the producers
                // on every submit.
                for _ in 0..POLL_PAUSES {
                    spin_hint();
                }
                Idle::Polled
            }
            WaitStrategy::SpinThenPark { spin } => {
                // Close to an item's deadline a timed park would overshoot
                // it: spin to it instead. (An idle poll's deadline needs no
                // such precision.)
                if pending > 0 && deadline.is_some_and(|d| d.saturating_sub(now) <= TIMER_SLACK_NS)
                {
                    thread::yield_now();
                    return Idle::Polled;
                }
                let since = *self.spin_since.get_or_insert(now);
                if now.saturating_sub(since) < duration_to_nanos(spin) {
                    // Each poll yields, never spins on `pause`: on a machine
                    // with more busy threads than cores the producers get the
                    // core at once (see `wait::YieldWait`); on an idle core
                    // the yield returns within a microsecond. Between two
                    // reads of the shard tails it keeps yielding for a gap
                    // paced by the arrival rate.
                    let mut until = now.saturating_add(self.poll_gap(now, load(), max_delay_ns));
                    if pending > 0 {
                        if let Some(d) = deadline {
                            until = until.min(d);
                        }
                    }
                    loop {
                        thread::yield_now();
                        if clock.now() >= until || interrupted() {
                            return Idle::Polled;
                        }
                    }
                }
                // Spin phase over: park, waking early to spin the rest of
                // an item's deadline.
                self.reset();
                if pending > 0 {
                    return Idle::Park(deadline.map(|d| d.saturating_sub(TIMER_SLACK_NS)));
                }
                Idle::Park(deadline)
            }
            WaitStrategy::Park => {
                self.reset();
                Idle::Park(deadline)
            }
        }
    }

    /// Under loom every strategy parks (see the module docs).
    #[cfg(loom)]
    pub(crate) fn next(&mut self, _: WaitStrategy, deadline: Option<u64>) -> Idle {
        Idle::Park(deadline)
    }

    /// How long a spinning flusher may go without re-reading the shard
    /// words: half the time the fullest shard's free room takes to fill at
    /// the arrival rate seen since the last poll (so no producer runs out of
    /// room before the next read), at most `MAX_POLL_GAP_NS` and a quarter
    /// of `max_delay` (0 with `max_delay(ZERO)`: every poll reads).
    #[cfg(not(loom))]
    fn poll_gap(&mut self, now: u64, load: Load, max_delay_ns: u64) -> u64 {
        let (last_total, last_at) = std::mem::replace(&mut self.last_poll, (load.accepted, now));
        let arrived = load.accepted.saturating_sub(last_total);
        let elapsed = now.saturating_sub(last_at);
        // With no arrival seen, assume the fastest submit.
        let per_item = elapsed
            .checked_div(arrived)
            .map_or(FASTEST_SUBMIT_NS, |t| t.max(1));
        (load.least_room.saturating_mul(per_item) / 2)
            .min(MAX_POLL_GAP_NS)
            .min(max_delay_ns / 4)
    }
}
