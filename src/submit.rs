//! The producer's policy over admission: one attempt, waiting for room
//! under a [`Backpressure`] policy, many items at once, and the counting of
//! refusals. The protocols it uses (admission, wake, the wait queue) are in
//! `shared::shard`, `shared::wake` and `wait`.

use crate::config::Backpressure;
use crate::error::{Refusal, SubmitManyError};
use crate::shared::{Shard, Shared};
use crate::storage::Storage;
use crate::time::Clock;
use crate::wait::YieldWait;
use std::time::Duration;

/// How long a submit may wait for room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all: a full shard refuses at once.
    Never,
    /// Until there is room (or the batcher closes).
    Forever,
    /// Until this clock time.
    Until(u64),
}

impl Wait {
    /// The wait a policy allows, starting now.
    pub(crate) fn from_policy(policy: Backpressure, clock: &Clock) -> Self {
        match policy {
            Backpressure::Block => Wait::Forever,
            Backpressure::BlockTimeout(d) => Wait::Until(clock.deadline_after(d)),
            Backpressure::Reject => Wait::Never,
        }
    }

    /// At most `d` from now.
    pub(crate) fn at_most(d: Duration, clock: &Clock) -> Self {
        Wait::Until(clock.deadline_after(d))
    }
}

impl<T, S: Storage<T>> Shared<T, S> {
    /// One attempt on the calling thread's queue; refusals are not counted.
    #[inline]
    pub(crate) fn try_push(&self, item: T) -> Result<(), (Refusal, T)> {
        self.try_push_on(self.shard(), item)
    }

    /// One attempt on `shard` (the caller's own queue); refusals are not
    /// counted. An item heavier than the weight limit (under
    /// `Oversize::Reject`) is refused before any reservation.
    #[inline]
    pub(crate) fn try_push_on(&self, shard: &Shard<S>, item: T) -> Result<(), (Refusal, T)> {
        if self.too_heavy(&item) {
            return Err((Refusal::TooHeavy, item));
        }
        self.push_on(shard, item)
    }

    /// One attempt on `shard`, the weight already checked.
    #[inline]
    fn push_on(&self, shard: &Shard<S>, item: T) -> Result<(), (Refusal, T)> {
        match self.reserve(shard, 1) {
            Ok(mut slots) => {
                slots.push(item);
                self.after_push(slots);
                Ok(())
            }
            Err(r) => Err((r, item)),
        }
    }

    /// Attempts on the calling thread's queue, waiting for room between
    /// them as `wait` allows; a refusal is counted.
    #[inline]
    pub(crate) fn push_waiting(&self, item: T, wait: Wait) -> Result<(), (Refusal, T)> {
        self.push_waiting_on(self.shard(), item, wait)
    }

    /// [`push_waiting`](Shared::push_waiting) on `shard`.
    pub(crate) fn push_waiting_on(
        &self,
        shard: &Shard<S>,
        mut item: T,
        wait: Wait,
    ) -> Result<(), (Refusal, T)> {
        // Weighed once here, not at every attempt (a `submit` that found its
        // queue full has weighed it once before, in its first attempt).
        if self.too_heavy(&item) {
            shard.count_refusal(Refusal::TooHeavy, 1);
            return Err((Refusal::TooHeavy, item));
        }
        loop {
            match self.push_on(shard, item) {
                Ok(()) => return Ok(()),
                Err((Refusal::Full, back)) => {
                    item = back;
                    if let Err(r) = self.refused_full(shard, wait) {
                        shard.count_refusal(r, 1);
                        return Err((r, item));
                    }
                }
                Err((r, back)) => {
                    shard.count_refusal(r, 1);
                    return Err((r, back));
                }
            }
        }
    }

    /// Counts a refusal on the calling thread's queue.
    pub(crate) fn count_refusal(&self, r: Refusal) {
        self.shard().count_refusal(r, 1);
    }

    /// Counts an item whose `submit_async` future was dropped unaccepted
    /// (on the last shard: a future may be dropped on a thread that never
    /// submitted, which must not lease a lane for it).
    pub(crate) fn count_cancelled(&self) {
        self.shards()[self.shards().len() - 1].count_cancelled();
    }

    /// Reserves room on the calling thread's queue for as many of `items`
    /// as fit with one reservation per attempt, accepted from the front,
    /// waiting as `wait` allows.
    pub(crate) fn submit_many(
        &self,
        items: &mut Vec<T>,
        wait: Wait,
    ) -> Result<(), SubmitManyError> {
        self.submit_many_on(self.shard(), items, wait)
    }

    /// [`submit_many`](Shared::submit_many) on `shard`.
    pub(crate) fn submit_many_on(
        &self,
        shard: &Shard<S>,
        items: &mut Vec<T>,
        wait: Wait,
    ) -> Result<(), SubmitManyError> {
        // Under `Oversize::Reject`: how many items come before the first
        // one too heavy (each weighed once, before any reservation).
        let mut light = if self.refuses_heavy() {
            items
                .iter()
                .position(|item| self.too_heavy(item))
                .unwrap_or(items.len())
        } else {
            items.len()
        };
        while !items.is_empty() {
            if light == 0 {
                // The heavy item stays first in `items`, the rest behind it;
                // all of them are counted as refused.
                shard.count_refusal(Refusal::TooHeavy, items.len() as u64);
                return Err(SubmitManyError::TooHeavy);
            }
            match self.reserve(shard, light as u64) {
                Ok(mut slots) => {
                    let granted = slots.len() as usize;
                    for item in items.drain(..granted) {
                        slots.push(item);
                    }
                    self.after_push(slots);
                    light -= granted;
                }
                Err(r) => {
                    let r = if r == Refusal::Full {
                        match self.refused_full(shard, wait) {
                            Ok(()) => continue,
                            Err(r) => r,
                        }
                    } else {
                        r
                    };
                    shard.count_refusal(r, items.len() as u64);
                    return Err(r.submit_many());
                }
            }
        }
        Ok(())
    }

    /// The shard was full: wait for room if allowed. `Ok` means try again.
    fn refused_full(&self, shard: &Shard<S>, wait: Wait) -> Result<(), Refusal> {
        let deadline = match wait {
            Wait::Never => return Err(Refusal::Full),
            Wait::Forever => None,
            Wait::Until(at) => Some(at),
        };
        if self.on_flusher_thread() {
            // The processor itself: waiting for room would wait for itself.
            return Err(if deadline.is_some() {
                Refusal::Timeout
            } else {
                Refusal::Full
            });
        }
        self.wait_for_room(shard, deadline)
    }

    /// Waits until the shard has room (`room_ready`), the batcher closes,
    /// or the deadline passes: yielding first, then in the wait queue.
    fn wait_for_room(&self, shard: &Shard<S>, deadline: Option<u64>) -> Result<(), Refusal> {
        let ready = || self.room_ready(shard);
        // Yield, not spin: the flusher that makes room may need this core.
        let short = YieldWait::new();
        while !short.is_completed() {
            if let Some(r) = ready() {
                return r;
            }
            if deadline.is_some_and(|at| self.clock().now() >= at) {
                return Err(Refusal::Timeout);
            }
            short.snooze();
        }
        shard.count_wait();
        self.waiters()
            .wait(self.clock(), deadline, ready)
            .unwrap_or(Err(Refusal::Timeout))
    }
}
