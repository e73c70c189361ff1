//! The flusher: one thread that waits for a trigger, drains the shards into
//! a reused buffer and hands it to the processor; and the public
//! [`Flusher`] for a thread of the user's.
//!
//! Everything here is the flusher's alone ([`FlusherCore`], run through
//! `&mut self`); what it shares with producers and callers it reaches
//! through the protocols in `shared` (admission's `take`/`release`, the wake
//! protocol's `Sleeper`, the flush barrier's `take_flush_request` and
//! `batch_done`, close's `final_counts` and `end_run`). User code (the
//! processor, the hooks, item drops) runs only where a panic is caught.

use crate::metrics::{trigger_index, Metrics, Tally};
use crate::processor::{
    call_quietly, clear_quietly, drop_quietly, is_rewind, panic_message, BatchInfo, BatchProcessor,
    DiscardHook, ErrorHook, Failure, ProcessError, Trigger,
};
use crate::shared::thread::{after_panic, enter_flusher};
use crate::shared::wake::Sleeper;
use crate::shared::Shared;
use crate::storage::{RingStorage, Storage};
use crate::sync::{thread, Arc, Backoff};
use crate::time::duration_to_nanos;
use crate::wait::strategy::{Idle, Pacer};
use crate::weight::{AvgWeight, WeightLimit};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// The shortest `max_delay` for which an idle flusher polls rather than
/// sleeping until the next item wakes it.
const MIN_POLL_NS: u64 = 100_000;

/// What one [`FlusherCore::step`] did, and what the loop that runs it
/// should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Processed a batch, or one more attempt at a retried one, of this
    /// many items.
    Batch(usize),
    /// Items are reserved whose push is still in flight: again in a moment.
    Busy,
    /// A retried batch waits for its backoff until this clock time.
    Backoff(u64),
    /// Nothing is due before `deadline` (clock time; `None`: until an item
    /// arrives); `pending` items wait; read at `now`.
    Wait {
        deadline: Option<u64>,
        pending: u64,
        now: u64,
    },
    /// Closed and drained: the run is over.
    Finished,
}

/// A batch the processor asked to see again; its items stay in the buffer.
#[derive(Debug)]
struct Retrying {
    /// The info of the attempt that asked.
    info: BatchInfo,
    /// When the first attempt began (the policy's deadline counts from it).
    first_at: u64,
    /// A lower bound on the arrival of the batch's oldest item.
    oldest: u64,
    /// The batch's items, those attempts took out included.
    total: usize,
    /// Their weight (0 without a weight limit).
    total_weight: u64,
    /// When the next attempt is due.
    next_at: u64,
}

/// The flusher's loop and everything only it touches.
pub(crate) struct FlusherCore<T, S: Storage<T>> {
    shared: Arc<Shared<T, S>>,
    processor: Box<dyn BatchProcessor<T>>,
    on_error: Option<ErrorHook>,
    on_discard: Option<DiscardHook<T>>,
    /// The batch buffer, reused: allocated once with `max_batch_size`.
    buf: Vec<T>,
    /// Per shard: items popped (the flusher's own copy), including a
    /// carried item; what it publishes is [`done`](FlusherCore::done).
    popped: Vec<u64>,
    /// Per shard: `done(i)`, filled for `batch_done` (no allocation).
    published: Vec<u64>,
    /// The weight limit (`None`: batches are limited by count only).
    weight: Option<WeightLimit<T>>,
    /// Where the item that did not fit the last batch by weight is, taken
    /// off its queue (`Storage` has no peek): it opens the next batch.
    /// Counted as queued, not popped, in everything published until it is.
    carry: Option<Carried>,
    /// The carried item itself (at most one): a `Vec` allocated once when
    /// a weight limit is set, so that neither a large `T` sits inline in
    /// the flusher's state nor a carry allocates.
    carry_slot: Vec<T>,
    /// The recent average item weight.
    avg_weight: AvgWeight,
    /// Pending items that make a batch due: `max_batch_size`, or fewer
    /// when the average weight says they fill the weight limit.
    due: u64,
    /// Per shard: accepted counts read at the top of the current iteration.
    counts: Vec<u64>,
    /// Per shard: what an active flush (or the shutdown) must reach.
    targets: Vec<u64>,
    flush_active: bool,
    /// Closed: the final drain towards `targets` is under way.
    draining: bool,
    /// A batch waiting for its next attempt.
    retrying: Option<Retrying>,
    /// The wake protocol's thresholds.
    sleeper: Sleeper,
    /// The wait strategy's spin phase.
    pacer: Pacer,
    /// A lower bound on the arrival time of the oldest pending item.
    oldest_at: Option<u64>,
    /// Clock time just before the shard tails were last read.
    counts_read_at: u64,
    /// When the flusher last saw nothing pending (0, the clock's start,
    /// until then: items may be submitted before the first run).
    empty_at: u64,
    /// Did the last park wake on the first item of any shard (every
    /// threshold at `count + 1`)? Only then is the waking producer's stamp
    /// a bound on the oldest pending item's arrival; after a park that let
    /// items arrive without waking it, the bound is `empty_at`.
    parked_for_first_item: bool,
    /// Consecutive idle polls since the last batch.
    idle_polls: u32,
    next_start: usize,
    seq: u64,
    tally: Tally,
}

impl<T: Send + 'static, S: Storage<T>> FlusherCore<T, S> {
    pub(crate) fn new(
        shared: Arc<Shared<T, S>>,
        processor: Box<dyn BatchProcessor<T>>,
        on_error: Option<ErrorHook>,
        on_discard: Option<DiscardHook<T>>,
        weight: Option<WeightLimit<T>>,
    ) -> Self {
        let n = shared.shards().len();
        let b = shared.cfg().max_batch_size;
        FlusherCore {
            shared,
            processor,
            on_error,
            on_discard,
            buf: Vec::with_capacity(b),
            popped: vec![0; n],
            published: vec![0; n],
            carry_slot: Vec::with_capacity(usize::from(weight.is_some())),
            weight,
            carry: None,
            avg_weight: AvgWeight::default(),
            due: b as u64,
            counts: vec![0; n],
            targets: vec![0; n],
            flush_active: false,
            draining: false,
            retrying: None,
            sleeper: Sleeper::new(n),
            pacer: Pacer::default(),
            oldest_at: None,
            counts_read_at: 0,
            empty_at: 0,
            parked_for_first_item: false,
            idle_polls: 0,
            next_start: 0,
            seq: 0,
            tally: Tally::default(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<T, S>> {
        &self.shared
    }

    /// Drops the user's parts (processor, hooks, anything left in the
    /// buffer) each where a panic is caught: one panicking drop must not
    /// unwind into the next (a double panic aborts).
    pub(crate) fn drop_quietly(self) {
        let FlusherCore {
            processor,
            on_error,
            on_discard,
            mut buf,
            mut carry_slot,
            ..
        } = self;
        clear_quietly(&mut buf);
        clear_quietly(&mut carry_slot);
        drop_quietly(processor);
        drop_quietly(on_error);
        drop_quietly(on_discard);
    }

    /// Runs until the batcher is closed and drained.
    pub(crate) fn run(&mut self) {
        let shared = Arc::clone(&self.shared);
        shared.set_flusher_thread(Some(thread::current()));
        shared.set_poller(false);
        shared.start_run();
        // This thread is the flusher until the run ends (marks nest: this
        // may be another batcher's processor).
        let _mark = enter_flusher(shared.id());
        // Whatever happens below, waiters must not hang: on the way out (even
        // by unwinding, which would be a bug of ours) end the run.
        let _exit = ExitGuard(&*shared);
        // A polled run cut short (its `Flusher` dropped) re-reads the close.
        self.draining = false;
        let backoff = Backoff::new();
        loop {
            match self.step() {
                Step::Batch(_) => backoff.reset(),
                Step::Busy => {
                    // Only reservations still being pushed: they land in
                    // nanoseconds.
                    backoff.snooze();
                    if backoff.is_completed() {
                        thread::yield_now();
                    }
                }
                // Nobody unparks a retry's backoff (SLEEPING is not set):
                // a timed sleep, re-checked.
                Step::Backoff(at) => shared.clock().park_until(Some(at)),
                Step::Wait {
                    deadline,
                    pending,
                    now,
                } => self.wait(deadline, pending, now),
                Step::Finished => return,
            }
        }
    }

    /// A run driven by [`Flusher::poll`] begins.
    pub(crate) fn begin_polled_run(&mut self) {
        self.shared.start_run();
        self.draining = false;
    }

    /// Does at most one batch (or one attempt at a retried batch) of work
    /// and says what is next; never waits, except for a reserved item's push
    /// that is in flight inside `dispatch` (nanoseconds).
    pub(crate) fn step(&mut self) -> Step {
        let shared = Arc::clone(&self.shared);
        let cfg = shared.cfg();
        if let Some(next_at) = self.retrying.as_ref().map(|r| r.next_at) {
            let now = shared.clock().now();
            if now < next_at {
                return Step::Backoff(next_at);
            }
            return Step::Batch(self.attempt_again(now));
        }
        if self.draining {
            return self.drain_step();
        }
        let max_batch = cfg.max_batch_size as u64;
        loop {
            let flags = shared.flags();
            if flags.flush_requested() {
                shared.take_flush_request(&mut self.targets);
                self.flush_active = true;
            }
            let pending = self.read_counts();
            if flags.closed() {
                // Everything accepted before the close is processed.
                shared.final_counts(&mut self.targets);
                self.draining = true;
                return self.drain_step();
            }
            if self.flush_active {
                if self.reached_targets() {
                    self.flush_active = false;
                    continue;
                }
                return self.dispatch_step(Trigger::Flush);
            }
            if pending >= max_batch.min(self.due) {
                return self.dispatch_step(Trigger::Size);
            }
            if pending > 0 {
                let now = shared.clock().now();
                let oldest = self.oldest_bound();
                let deadline = oldest.saturating_add(cfg.max_delay_ns);
                if now >= deadline {
                    return self.dispatch_step(Trigger::Time);
                }
                return Step::Wait {
                    deadline: Some(deadline).filter(|&d| d != u64::MAX),
                    pending,
                    now,
                };
            }
            self.oldest_at = None;
            let now = shared.clock().now();
            // Not `now`: an item reserved between the count loads and
            // that clock read would have arrived before it.
            self.empty_at = self.counts_read_at;
            // Recently busy: poll every `max_delay` instead of asking the
            // next producer to wake us (an unpark costs the producer
            // microseconds). An item that arrives is then dispatched at
            // the next poll, within `max_delay` of its arrival. Idle for
            // `idle_polls` polls: sleep until the first item wakes us.
            let delay = cfg.max_delay_ns;
            let deadline =
                if delay >= MIN_POLL_NS && delay != u64::MAX && self.idle_polls < cfg.idle_polls {
                    self.idle_polls += 1;
                    Some(now.saturating_add(delay))
                } else {
                    None
                };
            return Step::Wait {
                deadline,
                pending: 0,
                now,
            };
        }
    }

    /// One batch of the final drain, or the end of the run.
    fn drain_step(&mut self) -> Step {
        if self.reached_targets() {
            #[cfg(feature = "log")]
            {
                let drained = self.popped.iter().sum::<u64>();
                if call_quietly(|| {
                    log::debug!("microbatch: flusher drained {drained} items and stopped")
                })
                .is_none()
                {
                    self.tally.other_panics += 1;
                    self.shared
                        .stats()
                        .publish_other_panics(self.tally.other_panics);
                }
            }
            Step::Finished
        } else {
            self.dispatch_step(Trigger::Shutdown)
        }
    }

    fn dispatch_step(&mut self, trigger: Trigger) -> Step {
        match self.dispatch(trigger) {
            0 => Step::Busy,
            n => Step::Batch(n),
        }
    }

    /// Is anything left to do: items counted and not taken, a batch being
    /// retried, a flush or the final drain unfinished?
    pub(crate) fn has_work(&self) -> bool {
        self.retrying.is_some()
            || self.draining
            || self.flush_active && !self.reached_targets()
            || (0..self.counts.len()).any(|k| self.counts[k] > self.done(k))
    }

    /// The arrival bound of the oldest pending item, fixed when pending items
    /// are first seen: after the last time nothing was pending, and (after an
    /// idle park) when the producer that woke us saw the flusher asleep.
    fn oldest_bound(&mut self) -> u64 {
        if let Some(t) = self.oldest_at {
            return t;
        }
        let t = if self.parked_for_first_item {
            self.empty_at.max(self.shared.wake_stamp())
        } else {
            self.empty_at
        };
        self.oldest_at = Some(t);
        t
    }

    /// Reads every shard's accepted count; returns the total pending.
    fn read_counts(&mut self) -> u64 {
        // Before the loads: an item reserved after this read is not in
        // `counts`, and arrived after `counts_read_at`.
        self.counts_read_at = self.shared.clock().now();
        let mut pending = 0;
        for (i, shard) in self.shared.shards().iter().enumerate() {
            // SeqCst: pairs with the reservation CAS (`shared::wake`).
            let c = shard.accepted();
            self.counts[i] = c;
            // A carried item is pending (`done`, not `popped`).
            pending += c.saturating_sub(self.done(i));
        }
        pending
    }

    /// Shard `i`'s items taken into batches: `popped[i]` less the carried
    /// item if it came from there. What the flusher publishes to admission
    /// (`release`), to the flush barrier (`batch_done`) and to the metrics.
    fn done(&self, i: usize) -> u64 {
        let carried = self.carry.as_ref().is_some_and(|c| c.shard == i);
        self.popped[i] - u64::from(carried)
    }

    fn reached_targets(&self) -> bool {
        self.targets
            .iter()
            .enumerate()
            .all(|(i, &t)| self.done(i) >= t)
    }

    /// Drains up to one batch and processes it; returns its length, 0 if
    /// nothing was there (only reservations whose push is still in flight).
    fn dispatch(&mut self, trigger: Trigger) -> usize {
        let shared = Arc::clone(&self.shared);
        let b = shared.cfg().max_batch_size;
        let n = shared.shards().len();
        let start = shared.clock().now();
        let oldest = self.oldest_bound();
        let mut exhausted = true;
        let mut batch = Composed::default();
        if let Some(c) = self.carry.take() {
            // The carried item opens the batch: it precedes every later
            // item of its shard. Now it is in a batch like any other taken
            // item: published (room for its slot, in flight in the metrics).
            let i = c.shard;
            let item = self.carry_slot.pop().expect("a carry holds its item");
            self.buf.push(item);
            let limit = self.weight.as_ref().map_or(u64::MAX, |w| w.limit);
            batch.admit(c.weight, c.alone, limit);
            shared.release(i, self.done(i));
        }
        let mut i = self.next_start;
        let backoff = Backoff::new();
        // With a weight limit, items are taken one at a time: one that does
        // not fit must be the last taken (there is one carry slot).
        let weighted = self.weight.is_some();
        for _ in 0..n {
            if batch.closed {
                exhausted = false;
                break;
            }
            let mut got = 0u64;
            // Items counted in `counts` are reserved, so their push is
            // certain and takes nanoseconds: wait for one still in flight
            // rather than dispatch a short batch and strand it.
            let counted = self.counts[i];
            while self.buf.len() < b && !batch.closed {
                let next = self.popped[i] + got;
                let want = if weighted { 1 } else { b - self.buf.len() };
                let took = shared.take(i, next, want, counted, &mut self.buf);
                if took > 0 {
                    got += took as u64;
                    if weighted {
                        self.weigh_last(i, &mut batch);
                    }
                    continue;
                }
                if next >= counted {
                    break;
                }
                backoff.snooze();
                if backoff.is_completed() {
                    thread::yield_now();
                }
            }
            if got > 0 {
                self.popped[i] += got;
                shared.release(i, self.done(i));
            }
            if self.buf.len() >= b || batch.closed {
                exhausted = false;
                break;
            }
            i = (i + 1) % n;
        }
        self.next_start = (self.next_start + 1) % n;
        if self.buf.is_empty() {
            return 0;
        }
        self.pacer.reset();
        self.idle_polls = 0;
        // Room appeared: wake producers blocked on a full shard.
        shared.waiters().notify();

        let len = self.buf.len();
        let trigger = batch.trigger(trigger, weighted, len < b);
        let queue_depth = (0..n)
            .map(|k| self.counts[k].saturating_sub(self.done(k)))
            .sum();
        let info = BatchInfo {
            trigger,
            len,
            queue_depth,
            oldest_age: Duration::from_nanos(start.saturating_sub(oldest)),
            seq: self.seq,
            attempt: 1,
            weight: batch.weight,
            oversize: batch.oversize,
        };
        self.seq += 1;
        self.present(info, start, oldest, len, batch.weight);

        if exhausted {
            // Everything still pending was counted after the counts were
            // read (every take stops at the counted items).
            self.oldest_at = None;
            self.empty_at = self.counts_read_at;
        }
        len
    }

    /// Presents the buffer to the processor as `info` (an attempt at a
    /// batch of `total` items weighing `total_weight`, the first begun at
    /// `first_at`, its oldest item arrived after `oldest`): the batch ends
    /// here, or waits for its next attempt in `retrying`. Until it ends its
    /// items are in flight (not yet published as done), so `flush` and the
    /// drain wait for them.
    fn present(
        &mut self,
        info: BatchInfo,
        first_at: u64,
        oldest: u64,
        total: usize,
        total_weight: u64,
    ) {
        let failed_before = self.tally.failed;
        match self.process(&info, first_at, total) {
            Some(next_at) => {
                self.retrying = Some(Retrying {
                    info,
                    first_at,
                    oldest,
                    total,
                    total_weight,
                    next_at,
                });
            }
            None => {
                let b = self.shared.cfg().max_batch_size;
                if self.buf.capacity() < b {
                    // The processor (or a hook) took the buffer; take a new one.
                    self.buf.reserve_exact(b);
                }
                self.tally.batches[trigger_index(info.trigger)] += 1;
                if let Some(w) = &self.weight {
                    if self.tally.failed == failed_before {
                        self.tally.processed_weight =
                            self.tally.processed_weight.saturating_add(total_weight);
                    }
                    self.tally.oversize += u64::from(info.oversize);
                    self.avg_weight.update(total_weight, total);
                    self.due = self.avg_weight.due_count(w.limit, b as u64);
                    self.sleeper.set_batch(self.due);
                }
                for k in 0..self.published.len() {
                    self.published[k] = self.done(k);
                }
                self.shared
                    .batch_done(&self.published, &self.tally, info.trigger);
            }
        }
    }

    /// The next attempt at the batch in `retrying`, due at `now`; returns
    /// how many items it presented.
    fn attempt_again(&mut self, now: u64) -> usize {
        let r = self.retrying.take().expect("a batch is being retried");
        let info = BatchInfo {
            len: self.buf.len(),
            oldest_age: Duration::from_nanos(now.saturating_sub(r.oldest)),
            attempt: r.info.attempt + 1,
            weight: self.weigh_buffer(),
            ..r.info
        };
        self.tally.retries += 1;
        self.shared.stats().publish_retries(self.tally.retries);
        self.present(info, r.first_at, r.oldest, r.total, r.total_weight);
        info.len
    }

    /// The weight of what is in the buffer (what an attempt left), 0
    /// without a weight limit; an item whose weigher panics counts 0.
    fn weigh_buffer(&mut self) -> u64 {
        let Some(w) = &self.weight else { return 0 };
        let weigh = &w.weigh;
        let mut panics = 0;
        let total = self.buf.iter().fold(0u64, |sum, item| {
            let x = call_quietly(|| weigh(item)).unwrap_or_else(|| {
                panics += 1;
                0
            });
            sum.saturating_add(x)
        });
        self.tally.other_panics += panics;
        total
    }

    /// With a retry policy, when the processor's error `e` asks for a retry
    /// that the policy allows: when the next attempt is due.
    fn retry_at(&self, e: &ProcessError, info: &BatchInfo, first_at: u64) -> Option<u64> {
        let policy = self.shared.cfg().retry?;
        if !is_rewind(e) || self.buf.is_empty() || info.attempt >= policy.attempts {
            return None;
        }
        let clock = self.shared.clock();
        let next_at = clock.deadline_after(policy.delay_before(info.attempt + 1));
        match policy.deadline {
            Some(d) if next_at > first_at.saturating_add(duration_to_nanos(d)) => None,
            _ => Some(next_at),
        }
    }

    /// Weighs the item just taken from shard `i` (the last in the buffer)
    /// into `batch`; one that does not fit is moved to the carry, and
    /// closes the batch.
    fn weigh_last(&mut self, i: usize, batch: &mut Composed) {
        let Some(w) = &self.weight else { return };
        let item = self.buf.last().expect("an item was just taken");
        let weigh = &w.weigh;
        let (weight, alone) = match call_quietly(|| weigh(item)) {
            Some(x) => (x, x > w.limit),
            None => {
                // The weigher panicked: the item goes alone (its weight
                // unknown, counted as 0), and the flusher goes on.
                self.tally.other_panics += 1;
                (0, true)
            }
        };
        // Under `Reject` a heavy item was refused at submit; one that gets
        // here anyway (a weigher that is not deterministic) goes alone, as
        // under `Alone`.
        if batch.fits(weight, alone, w.limit, self.buf.len() - 1) {
            batch.admit(weight, alone, w.limit);
        } else {
            let item = self.buf.pop().expect("an item was just taken");
            self.carry_slot.push(item);
            self.carry = Some(Carried {
                shard: i,
                weight,
                alone,
            });
            batch.closed = true;
            batch.by_weight = true;
        }
    }
    /// Hands the buffer to the processor, and whatever it leaves (or makes:
    /// errors, panic payloads) to the hooks and to drops where a panic is
    /// caught: nothing user code does here can unwind the flusher.
    ///
    /// Returns when to try again if the processor asked for a retry and the
    /// policy allows one (the items it left stay in the buffer).
    fn process(&mut self, info: &BatchInfo, first_at: u64, total: usize) -> Option<u64> {
        let stats = self.shared.stats();
        let entered_at = self.shared.clock().now();
        stats.set_busy_since(entered_at);
        let processor = &mut self.processor;
        let buf = &mut self.buf;
        let outcome = catch_unwind(AssertUnwindSafe(|| processor.process(buf, info)));
        stats.set_busy_since(0);
        let retry_at = match &outcome {
            Ok(Err(e)) => self.retry_at(e, info, first_at),
            _ => None,
        };
        #[cfg(all(feature = "metrics", not(loom)))]
        stats.record_batch(&crate::metrics::BatchSample {
            trigger: info.trigger,
            outcome: match &outcome {
                _ if retry_at.is_some() => crate::metrics::Outcome::Rewind,
                Ok(Ok(())) => crate::metrics::Outcome::Ok,
                Ok(Err(_)) => crate::metrics::Outcome::Error,
                Err(_) => crate::metrics::Outcome::Panic,
            },
            len: info.len as u64,
            processor_ns: self.shared.clock().now().saturating_sub(entered_at),
            oldest_wait_ns: u64::try_from(info.oldest_age.as_nanos()).unwrap_or(u64::MAX),
        });
        if let Some(at) = retry_at {
            if let Ok(Err(e)) = outcome {
                self.tally.other_panics += u64::from(drop_quietly(e));
            }
            #[cfg(feature = "log")]
            {
                self.tally.other_panics += u64::from(
                    call_quietly(|| {
                        log::debug!(
                            "microbatch: batch {} asked for a retry (attempt {})",
                            info.seq,
                            info.attempt
                        )
                    })
                    .is_none(),
                );
            }
            return Some(at);
        }
        let tally = &mut self.tally;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tally.errors += 1;
                Some(Failure::Error(e))
            }
            Err(payload) => {
                tally.panics += 1;
                let message = panic_message(&*payload);
                tally.other_panics += u64::from(drop_quietly(payload));
                Some(Failure::Panic(message))
            }
        };
        let Some(failure) = failure else {
            // Items the processor read and left: processed, now dropped.
            tally.other_panics += clear_quietly(&mut self.buf);
            return None;
        };
        // Every item of the batch, those earlier attempts took too.
        tally.failed += total as u64;
        tally.discarded += self.buf.len() as u64;
        let panicked = matches!(failure, Failure::Panic(_));
        let on_discard = &mut self.on_discard;
        let buf = &mut self.buf;
        let mut other = 0;
        let mut discard = || {
            if let Some(hook) = on_discard.as_mut().filter(|_| !buf.is_empty()) {
                let f = &failure;
                other += u64::from(call_quietly(|| hook(buf, f, info)).is_none());
            }
            other += clear_quietly(buf);
        };
        if panicked {
            // Tracked jobs dropped here resolve as `Panicked`.
            after_panic(discard);
        } else {
            discard();
        }
        #[cfg(feature = "log")]
        {
            let f = &failure;
            other += u64::from(
                call_quietly(|| log::warn!("microbatch: batch {} failed: {f}", info.seq)).is_none(),
            );
        }
        match self.on_error.as_mut() {
            Some(hook) => other += u64::from(call_quietly(|| hook(failure, info)).is_none()),
            None => other += u64::from(drop_quietly(failure)),
        }
        tally.other_panics += other;
        None
    }

    /// Waits for work according to the wait strategy: polls, or parks in
    /// the wake protocol.
    fn wait(&mut self, deadline: Option<u64>, pending: u64, now: u64) {
        let shared = Arc::clone(&self.shared);
        let cfg = shared.cfg();
        #[cfg(not(loom))]
        let idle = {
            let (counts, popped, cap) = (&self.counts, &self.popped, cfg.capacity);
            let load = || crate::wait::strategy::Load {
                accepted: counts.iter().sum(),
                least_room: counts
                    .iter()
                    .zip(popped)
                    .map(|(c, p)| cap.saturating_sub(c.saturating_sub(*p)))
                    .min()
                    .unwrap_or(0),
            };
            self.pacer.next(
                cfg.wait,
                shared.clock(),
                now,
                deadline,
                pending,
                cfg.max_delay_ns,
                load,
                || shared.interrupted(),
            )
        };
        #[cfg(loom)]
        let idle = {
            let _ = now;
            self.pacer.next(cfg.wait, deadline)
        };
        if let Idle::Park(deadline) = idle {
            self.parked_for_first_item =
                self.sleeper.park(&shared, &self.counts, pending, deadline);
        }
    }
}

/// The item carried over to open the next batch (the item itself is in
/// `FlusherCore::carry_slot`).
struct Carried {
    /// The queue it was taken from.
    shard: usize,
    weight: u64,
    /// Heavier than the limit (or its weigher panicked): it goes alone.
    alone: bool,
}

/// The batch being composed: its weight, and whether a cap closed it.
#[derive(Debug, Default)]
struct Composed {
    /// Total weight, saturating.
    weight: u64,
    /// Nothing more may join (the weight limit closed it).
    closed: bool,
    /// Closed by the weight limit (an item did not fit, the limit was
    /// reached, or an oversize item went alone).
    by_weight: bool,
    /// An oversize item alone.
    oversize: bool,
}

impl Composed {
    /// May an item of `weight` (`alone`: heavier than `limit`) join a
    /// batch of `len` items? An oversize item joins only an empty batch.
    fn fits(&self, weight: u64, alone: bool, limit: u64, len: usize) -> bool {
        if alone {
            return len == 0;
        }
        self.weight.saturating_add(weight) <= limit
    }

    /// Adds an item (one [`fits`](Composed::fits) allowed, or the carried
    /// one, which opens an empty batch); a batch that reaches `limit`, or
    /// holds an oversize item, is closed.
    fn admit(&mut self, weight: u64, alone: bool, limit: u64) {
        self.weight = self.weight.saturating_add(weight);
        if self.weight >= limit && !alone {
            self.closed = true;
            self.by_weight = true;
        }
        if alone {
            self.oversize = true;
            self.closed = true;
            self.by_weight = true;
        }
    }

    /// The trigger to report for a dispatch asked for as `asked`: a batch
    /// the weight limit closed (before `max_batch_size` did) is `Weight`
    /// unless a flush or the shutdown asked for it; with a weight limit, a
    /// short batch asked for by count was due by the weight estimate.
    fn trigger(&self, asked: Trigger, weighted: bool, short: bool) -> Trigger {
        match asked {
            Trigger::Size | Trigger::Time if self.by_weight && short => Trigger::Weight,
            Trigger::Size if weighted && short => Trigger::Weight,
            t => t,
        }
    }
}

/// Ends the run on the way out, even by unwinding: the flusher's thread is
/// forgotten, and everyone waiting for the flusher is woken.
struct ExitGuard<'a, T, S: Storage<T>>(&'a Shared<T, S>);

impl<T, S: Storage<T>> Drop for ExitGuard<'_, T, S> {
    fn drop(&mut self) {
        self.0.set_flusher_thread(None);
        self.0.end_run();
    }
}

/// Ends a polled run if a poll unwinds (a bug of ours: user code's panics
/// are caught), so that nobody waits for it forever.
struct PollGuard<'a, T, S: Storage<T>>(&'a Shared<T, S>);

impl<T, S: Storage<T>> Drop for PollGuard<'_, T, S> {
    fn drop(&mut self) {
        self.0.set_poller(false);
        self.0.end_run();
    }
}

/// The flusher of a batcher built with
/// [`Builder::build_with_flusher`](crate::Builder::build_with_flusher), to
/// run on a thread of your choosing.
///
/// [`run`](Flusher::run) processes batches until the batcher is closed
/// (by [`Batcher::close`](crate::Batcher::close), a [`Closer`](crate::Closer),
/// `shutdown` or drop) and everything accepted is processed — the Go
/// original's `Start(ctx)`, with the close as the cancel signal. Two runs at
/// once are impossible by construction (`run` takes `&mut self`); running
/// again after a run ended reopens the batcher (the Go original's restart).
///
/// Dropping a `Flusher` that never ran closes the batcher and processes what
/// was queued on the dropping thread, so nothing accepted is lost (unless the
/// thread is already unwinding from a panic: then the queued items are
/// dropped with the batcher, as running a processor during unwinding could
/// abort the process).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo};
///
/// let (batcher, mut flusher) = Batcher::builder()
///     .build_with_flusher(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// let closer = batcher.closer();
/// let worker = std::thread::spawn(move || (flusher.run(), flusher));
/// for i in 0..10 {
///     batcher.submit(i).unwrap();
/// }
/// closer.close();
/// let (report, mut flusher) = worker.join().unwrap();
/// assert_eq!(report.processed, 10);
/// assert!(batcher.submit(10).is_err(), "closed");
///
/// // Start again: intake reopens until the next close.
/// let worker = std::thread::spawn(move || flusher.run());
/// # while batcher.is_closed() { std::thread::yield_now(); }
/// batcher.submit(10).unwrap();
/// closer.close();
/// assert_eq!(worker.join().unwrap().processed, 11);
/// ```
pub struct Flusher<T: Send + 'static, S: Storage<T> = RingStorage<T>> {
    core: Option<FlusherCore<T, S>>,
    runs: u64,
    /// A run driven by [`poll`](Flusher::poll) is under way.
    polling: bool,
    /// When the last poll said the next thing is due (clock time).
    due_at: Option<u64>,
}

/// What one [`Flusher::poll`] did, and the state it left the batcher in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Polled {
    /// Items handed to the processor by this poll (one batch, or one more
    /// attempt at a retried batch); 0 if none.
    pub items: usize,
    /// What is left.
    pub state: PollState,
}

/// The state a [`Flusher::poll`] leaves the batcher in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PollState {
    /// Nothing is queued and no batch is waiting for a retry: nothing will
    /// be due until a producer submits.
    Idle,
    /// Something is queued, or a batch waits for its retry, or a flush or
    /// the drain after a close is unfinished: poll again by
    /// [`next_deadline`](Flusher::next_deadline).
    Pending,
    /// The batcher is closed and everything accepted is processed: the run
    /// is over. Later polls return `Closed` at once.
    Closed,
}

impl<T: Send + 'static, S: Storage<T>> fmt::Debug for Flusher<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, S: Storage<T>> Flusher<T, S> {
    pub(crate) fn new(core: FlusherCore<T, S>) -> Self {
        Flusher {
            core: Some(core),
            runs: 0,
            polling: false,
            due_at: None,
        }
    }

    /// Does at most one batch of work on the calling thread and returns at
    /// once: for an event loop that owns its thread (a trading gateway
    /// polling its socket, an Agrona-style duty cycle) instead of a thread
    /// given to [`run`](Flusher::run).
    ///
    /// One poll dispatches at most one batch — by size, by time (the oldest
    /// item has waited `max_delay`), for a `flush`, or for the drain after a
    /// close — or makes one more attempt at a batch being retried once its
    /// backoff has passed. It never parks and never sleeps (at most it waits
    /// for a reserved item whose push is in flight: nanoseconds), so
    /// producers never have to wake it: with a polled flusher no submit
    /// makes a system call. The wait strategy is not used; the caller's
    /// loop decides how to idle, by [`next_deadline`](Flusher::next_deadline).
    ///
    /// - `flush()` from another thread returns once the owner has polled the
    ///   flushed items through; from the polling thread it is refused
    ///   ([`FlushError::Reentrant`](crate::FlushError::Reentrant)): it would
    ///   wait for itself.
    /// - A submit from the polling thread that finds its queue full is
    ///   refused at once (`Full`, or `Timeout` with
    ///   [`Backpressure::BlockTimeout`](crate::Backpressure::BlockTimeout))
    ///   instead of blocking on the thread that must make the room (the
    ///   LMAX Disruptor's #168 hang).
    /// - After a close (by [`Batcher::close`](crate::Batcher::close), a
    ///   [`Closer`](crate::Closer), a `shutdown` from another thread, or the
    ///   last handle dropped) keep polling until [`PollState::Closed`]:
    ///   everything accepted before the close is processed by then, and a
    ///   `shutdown` waiting on another thread returns. From the polling
    ///   thread, `shutdown` only closes (it cannot wait for itself).
    ///
    /// The first poll starts a run, as [`run`](Flusher::run) does; a poll
    /// after a run ended (polled to `Closed`, or run) returns `Closed`
    /// without reopening the batcher: `run` reopens it. A `Flusher`
    /// dropped in the middle of a polled run closes the batcher and drains
    /// it on the dropping thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, PollState};
    ///
    /// let (batcher, mut flusher) = Batcher::builder()
    ///     .max_batch_size(2)
    ///     .build_with_flusher(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
    ///     .unwrap();
    /// batcher.submit(1).unwrap();
    /// batcher.submit(2).unwrap();
    /// batcher.submit(3).unwrap();
    /// let p = flusher.poll(); // a full batch: dispatched
    /// assert_eq!((p.items, p.state), (2, PollState::Pending));
    /// // Item 3 waits for `max_delay`, and the next poll after it.
    /// assert!(flusher.next_deadline().is_some());
    /// batcher.close();
    /// while flusher.poll().state != PollState::Closed {}
    /// assert_eq!(batcher.metrics().processed, 3);
    /// ```
    pub fn poll(&mut self) -> Polled {
        let core = self.core.as_mut().expect("the core is present until drop");
        if !self.polling {
            if self.runs > 0 {
                self.due_at = None;
                return Polled {
                    items: 0,
                    state: PollState::Closed,
                };
            }
            self.runs += 1;
            self.polling = true;
            core.begin_polled_run();
        }
        let shared = Arc::clone(core.shared());
        shared.set_poller(true);
        // A bug of ours unwinding out of the step must not leave waiters
        // hanging on a run that never ends.
        let guard = PollGuard(&*shared);
        let step = core.step();
        std::mem::forget(guard);
        let now = || shared.clock().now();
        let (items, state, due_at) = match step {
            Step::Finished => {
                shared.set_poller(false);
                shared.end_run();
                self.polling = false;
                (0, PollState::Closed, None)
            }
            Step::Batch(n) => {
                let state = if core.has_work() {
                    PollState::Pending
                } else {
                    PollState::Idle
                };
                (n, state, (state == PollState::Pending).then(now))
            }
            Step::Busy => (0, PollState::Pending, Some(now())),
            Step::Backoff(at) => (0, PollState::Pending, Some(at)),
            Step::Wait {
                deadline, pending, ..
            } if pending > 0 => (0, PollState::Pending, deadline),
            Step::Wait { .. } => (0, PollState::Idle, None),
        };
        self.due_at = due_at;
        Polled { items, state }
    }

    /// When the next thing is due, as of the last [`poll`](Flusher::poll):
    /// the time trigger of the oldest queued item, a retry's next attempt,
    /// or now (a batch is ready, a flush or the drain is under way: poll
    /// again at once). `None` when nothing is due by time: idle, closed, or
    /// items queued with no time trigger (`max_delay` of `Duration::MAX`).
    /// A producer's submit can make a batch due earlier (by size): a loop
    /// that sleeps until the deadline bounds its latency by it, one that
    /// polls between its other duties sees it at the next poll.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        let core = self.core.as_ref()?;
        self.due_at.map(|at| core.shared().clock().instant_at(at))
    }

    /// Runs the flusher loop on the calling thread until the batcher is
    /// closed and drained; returns the counters at that point.
    ///
    /// Running it again after a run has ended (the Go original's `Start`
    /// after a cancelled context) reopens the batcher's intake first: submits
    /// are accepted again until the next close. A close made after the last
    /// run ended (a `shutdown` racing the restart, say) is kept: the run
    /// then drains what is there and returns without reopening. A batcher closed before its
    /// flusher ever ran is drained, not reopened. A run only ends with a
    /// close: keep a [`Closer`](crate::Closer) if the batcher's handles may
    /// all be gone by then.
    pub fn run(&mut self) -> Metrics {
        let core = self.core.as_mut().expect("the core is present until drop");
        if self.runs > 0 {
            // Reopens (and marks the flusher running, in the same critical
            // section) unless a close came after the last run ended.
            core.shared().reopen();
        }
        self.runs += 1;
        self.polling = false;
        self.due_at = None;
        core.run();
        core.shared().metrics()
    }
}

impl<T: Send + 'static, S: Storage<T>> Drop for Flusher<T, S> {
    fn drop(&mut self) {
        if let Some(mut core) = self.core.take() {
            core.shared().close();
            if !thread::panicking() {
                // Drains what a never-run flusher left queued; after a run
                // the batcher is closed and drained, and this returns at once.
                core.run();
            }
            // The processor and hooks are the user's: their drops may panic.
            core.drop_quietly();
        }
    }
}
