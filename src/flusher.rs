//! The flusher: one thread that waits for a trigger, drains the shards into a
//! reused buffer and hands it to the processor.

use crate::batcher::{Shard, Shared, CLOSED, DONE, FLUSH_REQ, RUNNING, SLEEPING};
#[cfg(not(loom))]
use crate::builder::WaitStrategy;
use crate::metrics::Metrics;
use crate::processor::{
    call_quietly, clear_quietly, drop_quietly, panic_message, BatchInfo, BatchProcessor,
    DiscardHook, ErrorHook, Failure, Trigger,
};
use crate::storage::{sealed::Seal, RingStorage, Storage};
use crate::sync::{self, fence, thread, Arc, Backoff, Ordering};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// How early a spinning flusher wakes from a timed park to spin to its
/// deadline: the timer slack plus the wake-up latency measured here.
#[cfg(not(loom))]
const TIMER_SLACK_NS: u64 = 120_000;

/// The longest a spinning flusher goes without re-reading the shard words.
#[cfg(not(loom))]
const MAX_POLL_GAP_NS: u64 = 3_000;

/// The per-item interval a spinning flusher assumes before it has seen
/// items arrive (a submit costs about 5 ns here).
#[cfg(not(loom))]
const FASTEST_SUBMIT_NS: u64 = 4;

/// Pauses between two polls of a busy-spinning flusher.
#[cfg(not(loom))]
const POLL_PAUSES: u32 = 32;

/// The shortest `max_delay` for which an idle flusher polls rather than
/// sleeping until the next item wakes it.
const MIN_POLL_NS: u64 = 100_000;

/// The flusher's loop and everything only it touches.
pub(crate) struct Engine<T, S: Storage<T>> {
    shared: Arc<Shared<T, S>>,
    processor: Box<dyn BatchProcessor<T>>,
    on_error: Option<ErrorHook>,
    on_discard: Option<DiscardHook<T>>,
    /// The batch buffer, reused: allocated once with `max_batch_size`.
    buf: Vec<T>,
    /// Per shard: items popped (the flusher's own copy).
    popped: Vec<u64>,
    /// Per shard: accepted counts read at the top of the current iteration.
    counts: Vec<u64>,
    /// Per shard: counts when thresholds were last set (arrival weights).
    seen: Vec<u64>,
    /// Per shard: the wake thresholds last published.
    wake_at: Vec<u64>,
    /// Per shard: what an active flush (or the shutdown) must reach.
    targets: Vec<u64>,
    flush_active: bool,
    /// A lower bound on the arrival time of the oldest pending item.
    oldest: Option<u64>,
    /// Clock time just before the shard words were last read.
    counts_read_at: u64,
    /// When the flusher last saw nothing pending (0, the clock's start,
    /// until then: items may be submitted before the first run).
    empty_at: u64,
    /// Did the last park wake on the first item of any shard (every
    /// threshold at `count + 1`)? Only then is the waking producer's stamp
    /// a bound on the oldest pending item's arrival; after a park that let
    /// items arrive without waking it, the bound is `empty_at`.
    parked_for_first_item: bool,
    /// When the current spin phase began.
    spin_since: Option<u64>,
    /// Consecutive idle polls since the last batch.
    idle_polls: u32,
    /// Total accepted count and clock time at the last spin poll (the
    /// arrival rate that paces the next one).
    #[cfg(not(loom))]
    last_poll: (u64, u64),
    next_start: usize,
    seq: u64,
    batches: [u64; 4],
    errors: u64,
    panics: u64,
    other_panics: u64,
    /// Items of failed batches, and of those the ones left to discard.
    failed: u64,
    discarded: u64,
}

/// Takes up to `want` items numbered from `next` off one shard into `buf`.
#[inline]
#[allow(unsafe_code)]
fn take<T, S: Storage<T>>(
    shard: &Shard<S>,
    next: u64,
    want: usize,
    counted: u64,
    buf: &mut Vec<T>,
) -> usize {
    match shard.storage.__ring(Seal(())) {
        // SAFETY: `Ring::take_into`'s contract holds: the engine, the only
        // caller, is the shard's one consumer (one engine per batcher, run
        // through `&mut self`), and `next` is where its previous take on
        // this shard stopped (`popped` plus what the current dispatch took).
        Some(ring) => unsafe { ring.take_into(next, want, buf) },
        // A storage of the user's: take no more than this shard has
        // counted, so a queue shared by several shards (allowed) cannot
        // leave another shard's count short.
        None => {
            // Counted by what arrived in `buf`, not by what the storage says;
            // a storage that hands over more than asked breaks its contract,
            // and the excess is dropped (the counts must stay exact).
            let ask = want.min(counted.saturating_sub(next) as usize);
            let before = buf.len();
            shard.storage.pop_into(ask, buf);
            buf.truncate(before + ask);
            buf.len().saturating_sub(before)
        }
    }
}

fn trigger_index(t: Trigger) -> usize {
    match t {
        Trigger::Size => 0,
        Trigger::Time => 1,
        Trigger::Flush => 2,
        Trigger::Shutdown => 3,
    }
}

impl<T: Send + 'static, S: Storage<T>> Engine<T, S> {
    pub(crate) fn new(
        shared: Arc<Shared<T, S>>,
        processor: Box<dyn BatchProcessor<T>>,
        on_error: Option<ErrorHook>,
        on_discard: Option<DiscardHook<T>>,
    ) -> Self {
        let n = shared.shards.len();
        let b = shared.cfg.max_batch_size;
        Engine {
            shared,
            processor,
            on_error,
            on_discard,
            buf: Vec::with_capacity(b),
            popped: vec![0; n],
            counts: vec![0; n],
            seen: vec![0; n],
            wake_at: vec![0; n],
            targets: vec![0; n],
            flush_active: false,
            oldest: None,
            counts_read_at: 0,
            empty_at: 0,
            parked_for_first_item: false,
            spin_since: None,
            idle_polls: 0,
            #[cfg(not(loom))]
            last_poll: (0, 0),
            next_start: 0,
            seq: 0,
            batches: [0; 4],
            errors: 0,
            panics: 0,
            other_panics: 0,
            failed: 0,
            discarded: 0,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<T, S>> {
        &self.shared
    }

    /// Drops the user's parts (processor, hooks, anything left in the
    /// buffer) each where a panic is caught: one panicking drop must not
    /// unwind into the next (a double panic aborts).
    pub(crate) fn drop_quietly(self) {
        let Engine {
            processor,
            on_error,
            on_discard,
            mut buf,
            ..
        } = self;
        clear_quietly(&mut buf);
        drop_quietly(processor);
        drop_quietly(on_error);
        drop_quietly(on_discard);
    }

    /// Runs until the batcher is closed and drained.
    pub(crate) fn run(&mut self) {
        let shared = Arc::clone(&self.shared);
        *shared.wake.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        shared.status.store(RUNNING, Ordering::SeqCst);
        // This thread is the flusher until the run ends (marks nest: this
        // may be another batcher's processor).
        let _mark = sync::enter_flusher(shared.id);
        // Whatever happens below, waiters must not hang: on the way out (even
        // by unwinding, which would be a bug of ours) mark the flusher done.
        let _exit = ExitGuard(&*shared);
        self.run_loop();
    }

    fn run_loop(&mut self) {
        let shared = Arc::clone(&self.shared);
        let max_batch = shared.cfg.max_batch_size as u64;
        let backoff = Backoff::new();
        loop {
            let st = shared.state.load(Ordering::SeqCst);
            if st & FLUSH_REQ != 0 {
                self.take_flush_request();
            }
            let pending = self.read_counts();
            if st & CLOSED != 0 {
                self.finish();
                return;
            }
            if self.flush_active {
                if self.reached_targets() {
                    self.flush_active = false;
                    continue;
                }
                if self.dispatch(Trigger::Flush) {
                    backoff.reset();
                } else {
                    // Only reservations still being pushed: they land in
                    // nanoseconds.
                    backoff.snooze();
                }
                continue;
            }
            if pending >= max_batch {
                if !self.dispatch(Trigger::Size) {
                    backoff.snooze();
                }
                continue;
            }
            if pending > 0 {
                let now = shared.clock.now();
                let oldest = self.oldest_bound();
                let deadline = oldest.saturating_add(shared.cfg.max_delay_ns);
                if now >= deadline {
                    if !self.dispatch(Trigger::Time) {
                        backoff.snooze();
                    }
                    continue;
                }
                self.wait(Some(deadline).filter(|&d| d != u64::MAX), pending, now);
            } else {
                self.oldest = None;
                let now = shared.clock.now();
                // Not `now`: an item reserved between the count loads and
                // that clock read would have arrived before it.
                self.empty_at = self.counts_read_at;
                // Recently busy: poll every `max_delay` instead of asking the
                // next producer to wake us (an unpark costs the producer
                // microseconds). An item that arrives is then dispatched at
                // the next poll, within `max_delay` of its arrival. Idle for
                // `idle_polls` polls: sleep until the first item wakes us.
                let delay = shared.cfg.max_delay_ns;
                if delay >= MIN_POLL_NS
                    && delay != u64::MAX
                    && self.idle_polls < shared.cfg.idle_polls
                {
                    self.idle_polls += 1;
                    self.wait(Some(now.saturating_add(delay)), 0, now);
                } else {
                    self.wait(None, 0, now);
                }
            }
        }
    }

    /// The arrival bound of the oldest pending item, fixed when pending items
    /// are first seen: after the last time nothing was pending, and (after an
    /// idle park) when the producer that woke us saw the flusher asleep.
    fn oldest_bound(&mut self) -> u64 {
        if let Some(t) = self.oldest {
            return t;
        }
        let t = if self.parked_for_first_item {
            // Acquire: pairs with the Release store in `Shared::wake_flusher`.
            let stamp = self.shared.wake.stamp.load(Ordering::Acquire);
            self.empty_at.max(stamp)
        } else {
            self.empty_at
        };
        self.oldest = Some(t);
        t
    }

    fn take_flush_request(&mut self) {
        let shared = &*self.shared;
        // Clear the bit before reading the targets: a request that sets it
        // again after this is seen on the next iteration.
        shared.state.fetch_and(!FLUSH_REQ, Ordering::SeqCst);
        let targets = shared
            .flush_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (mine, &t) in self.targets.iter_mut().zip(targets.iter()) {
            *mine = (*mine).max(t);
        }
        self.flush_active = true;
    }

    /// Reads every shard's accepted count; returns the total pending.
    fn read_counts(&mut self) -> u64 {
        // Before the loads: an item reserved after this read is not in
        // `counts`, and arrived after `counts_read_at`.
        self.counts_read_at = self.shared.clock.now();
        let mut pending = 0;
        for (i, shard) in self.shared.shards.iter().enumerate() {
            // SeqCst: pairs with the reservation CAS (see `park`).
            let c = shard.prod.word.load(Ordering::SeqCst) >> 1;
            self.counts[i] = c;
            pending += c.saturating_sub(self.popped[i]);
        }
        pending
    }

    fn reached_targets(&self) -> bool {
        self.popped.iter().zip(&self.targets).all(|(p, t)| p >= t)
    }

    /// Drains up to one batch and processes it. `false` if nothing was
    /// there (only reservations whose push is still in flight).
    fn dispatch(&mut self, trigger: Trigger) -> bool {
        let shared = Arc::clone(&self.shared);
        let b = shared.cfg.max_batch_size;
        let n = shared.shards.len();
        let start = shared.clock.now();
        let oldest = self.oldest_bound();
        let mut exhausted = true;
        let mut i = self.next_start;
        let backoff = Backoff::new();
        for _ in 0..n {
            let shard = &shared.shards[i];
            let before = self.buf.len();
            // Items counted in `counts` are reserved, so their push is
            // certain and takes nanoseconds: wait for one still in flight
            // rather than dispatch a short batch and strand it.
            let counted = self.counts[i];
            while self.buf.len() < b {
                let next = self.popped[i] + self.buf.len().saturating_sub(before) as u64;
                let want = b - self.buf.len();
                if take(shard, next, want, counted, &mut self.buf) > 0 {
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
            let got = self.buf.len().saturating_sub(before) as u64;
            if got > 0 {
                self.popped[i] += got;
                // A count of the snapshot protocol (`FlusherStats`); the
                // write is this one store, never a wait.
                shared.stats.begin_write();
                // SeqCst store: pairs with the Acquire in `try_reserve` (the
                // freed room) and is the progress `Signal::notify` publishes.
                shard.cons.popped.store(self.popped[i], Ordering::SeqCst);
                shared.stats.end_write();
            }
            if self.buf.len() >= b {
                exhausted = false;
                break;
            }
            i = (i + 1) % n;
        }
        self.next_start = (self.next_start + 1) % n;
        if self.buf.is_empty() {
            return false;
        }
        self.spin_since = None;
        self.idle_polls = 0;
        // Room appeared: wake producers blocked on a full shard.
        shared.signal.notify();

        let len = self.buf.len();
        let queue_depth = self
            .counts
            .iter()
            .zip(&self.popped)
            .map(|(c, p)| c.saturating_sub(*p))
            .sum();
        let info = BatchInfo {
            trigger,
            len,
            queue_depth,
            oldest_age: Duration::from_nanos(start.saturating_sub(oldest)),
            seq: self.seq,
        };
        self.seq += 1;
        self.process(&info);
        if self.buf.capacity() < b {
            // The processor (or a hook) took the buffer; take a new one.
            self.buf.reserve_exact(b);
        }

        self.batches[trigger_index(trigger)] += 1;
        let stats = &shared.stats;
        stats.batches[trigger_index(trigger)]
            .store(self.batches[trigger_index(trigger)], Ordering::Relaxed);
        stats.errors.store(self.errors, Ordering::Relaxed);
        stats.panics.store(self.panics, Ordering::Relaxed);
        stats
            .other_panics
            .store(self.other_panics, Ordering::Relaxed);
        stats.discarded.store(self.discarded, Ordering::Relaxed);
        stats.begin_write();
        for (shard, &p) in shared.shards.iter().zip(&self.popped) {
            // SeqCst: the progress flush waiters re-check (Signal protocol).
            shard.cons.processed.store(p, Ordering::SeqCst);
        }
        stats.failed.store(self.failed, Ordering::Relaxed);
        stats.end_write();
        shared.signal.notify();

        if exhausted {
            // Everything still pending was reserved after the counts were
            // read (the take stops at the counted items only for storages
            // of the user's; the ring may take more, which is harmless).
            self.oldest = None;
            self.empty_at = self.counts_read_at;
        }
        true
    }

    /// Hands the buffer to the processor, and whatever it leaves (or makes:
    /// errors, panic payloads) to the hooks and to drops where a panic is
    /// caught: nothing user code does here can unwind the flusher.
    fn process(&mut self, info: &BatchInfo) {
        let stats = &self.shared.stats;
        // Relaxed: a reading for `metrics()`, not a synchronising store.
        stats
            .busy_since
            .store(self.shared.clock.now(), Ordering::Relaxed);
        let processor = &mut self.processor;
        let buf = &mut self.buf;
        let outcome = catch_unwind(AssertUnwindSafe(|| processor.process(buf, info)));
        stats.busy_since.store(0, Ordering::Relaxed);
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                self.errors += 1;
                Some(Failure::Error(e))
            }
            Err(payload) => {
                self.panics += 1;
                let message = panic_message(&*payload);
                self.other_panics += u64::from(drop_quietly(payload));
                Some(Failure::Panic(message))
            }
        };
        let Some(failure) = failure else {
            // Items the processor read and left: processed, now dropped.
            self.other_panics += clear_quietly(&mut self.buf);
            return;
        };
        self.failed += info.len as u64;
        self.discarded += self.buf.len() as u64;
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
            sync::after_panic(discard);
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
        self.other_panics += other;
    }

    /// Waits for work according to the wait strategy.
    fn wait(&mut self, deadline: Option<u64>, pending: u64, now: u64) {
        #[cfg(not(loom))]
        match self.shared.cfg.wait {
            WaitStrategy::BusySpin => {
                // A burst of pauses between polls: polling the shard words
                // back to back would pull their lines away from the producers
                // on every submit.
                for _ in 0..POLL_PAUSES {
                    sync::spin_hint();
                }
                return;
            }
            WaitStrategy::SpinThenPark { spin } => {
                // A timed park overshoots by the timer slack and the wake-up
                // latency (~100 µs here): close to an item's deadline, spin
                // to it. (An idle poll's deadline needs no such precision.)
                if pending > 0 && deadline.is_some_and(|d| d.saturating_sub(now) <= TIMER_SLACK_NS)
                {
                    thread::yield_now();
                    return;
                }
                let since = *self.spin_since.get_or_insert(now);
                if now.saturating_sub(since) < crate::err::duration_to_nanos(spin) {
                    // Each poll yields, never spins on `pause`: on a machine
                    // with more busy threads than cores the producers get the
                    // core at once (see `sync::YieldWait` for the figures);
                    // on an idle core the yield returns within a microsecond.
                    // Between two reads of the shard words (each one takes
                    // their lines from the producers' CAS) it keeps yielding
                    // for a gap paced by the arrival rate.
                    let mut until = now.saturating_add(self.poll_gap(now));
                    if pending > 0 {
                        if let Some(d) = deadline {
                            until = until.min(d);
                        }
                    }
                    loop {
                        thread::yield_now();
                        if self.shared.clock.now() >= until
                            || self.shared.state.load(Ordering::Relaxed) & (FLUSH_REQ | CLOSED) != 0
                        {
                            return;
                        }
                    }
                }
            }
            WaitStrategy::Park => {}
        }
        // Under loom every strategy parks: the mock clock does not move while
        // spinning, and parking is the protocol worth checking.
        #[cfg(loom)]
        let _ = (now, self.shared.cfg.wait);
        self.park(deadline, pending);
        self.spin_since = None;
    }

    /// How long a spinning flusher may go without re-reading the shard words:
    /// half the time the fullest shard's free room takes to fill at the
    /// arrival rate seen since the last poll (so no producer runs out of
    /// room before the next read), at most `MAX_POLL_GAP_NS` and a quarter of
    /// `max_delay` (0 with `max_delay(ZERO)`: every poll reads). Measured
    /// in the VM phase where polling hurt most, one producer: 31.5 ->
    /// 23.7 ns/item with a 3 µs gap; a 10 µs gap, which let producers run
    /// out of room, made the normal phase worse (7.3 -> 10.9).
    #[cfg(not(loom))]
    fn poll_gap(&mut self, now: u64) -> u64 {
        let cfg = &self.shared.cfg;
        let total: u64 = self.counts.iter().sum();
        let (last_total, last_at) = std::mem::replace(&mut self.last_poll, (total, now));
        let room = self
            .counts
            .iter()
            .zip(&self.popped)
            .map(|(c, p)| cfg.capacity.saturating_sub(c.saturating_sub(*p)))
            .min()
            .unwrap_or(0);
        let arrived = total.saturating_sub(last_total);
        let elapsed = now.saturating_sub(last_at);
        // With no arrival seen, assume the fastest submit measured here.
        let per_item = elapsed
            .checked_div(arrived)
            .map_or(FASTEST_SUBMIT_NS, |t| t.max(1));
        (room.saturating_mul(per_item) / 2)
            .min(MAX_POLL_GAP_NS)
            .min(cfg.max_delay_ns / 4)
    }

    /// Publishes wake thresholds, announces `SLEEPING`, re-checks, parks.
    fn park(&mut self, deadline: Option<u64>, pending: u64) {
        // Spinning strategies wake early and spin the rest (see `wait`).
        #[cfg(not(loom))]
        let deadline = match self.shared.cfg.wait {
            WaitStrategy::SpinThenPark { .. } if pending > 0 => {
                deadline.map(|d| d.saturating_sub(TIMER_SLACK_NS))
            }
            _ => deadline,
        };
        let shared = Arc::clone(&self.shared);
        self.parked_for_first_item = self.set_thresholds(pending, deadline);
        // SeqCst RMW: pairs with the producers' reservation CAS + SeqCst load
        // of `state` in `after_push`; also returns any FLUSH_REQ / CLOSED set
        // before it (same word, so no request is missed).
        let prev = shared.state.fetch_or(SLEEPING, Ordering::SeqCst);
        // Orders the RMW above before the re-check loads below.
        fence(Ordering::SeqCst);
        if prev & (CLOSED | FLUSH_REQ) == 0 && !self.threshold_reached() {
            shared.clock.park_until(deadline);
        }
        shared.state.fetch_and(!SLEEPING, Ordering::SeqCst);
    }

    /// Wake thresholds with `sum(wake_at - count) <= room + shards - 1`,
    /// weighted by each shard's recent arrivals. `true` if they are the
    /// first-item thresholds (`count + 1` everywhere).
    fn set_thresholds(&mut self, pending: u64, deadline: Option<u64>) -> bool {
        let n = self.counts.len() as u64;
        // With nothing pending and no deadline, the first item must wake us
        // to start its time trigger; with a poll deadline, or with the time
        // trigger off, only a full batch needs to.
        let first_item =
            pending == 0 && deadline.is_none() && self.shared.cfg.max_delay_ns != u64::MAX;
        if first_item {
            for i in 0..self.counts.len() {
                self.wake_at[i] = self.counts[i] + 1;
            }
        } else {
            let room = (self.shared.cfg.max_batch_size as u64)
                .saturating_sub(pending)
                .max(1);
            let weights: u64 = self
                .counts
                .iter()
                .zip(&self.seen)
                .map(|(c, s)| c.saturating_sub(*s))
                .sum();
            for i in 0..self.counts.len() {
                let extra = if weights == 0 {
                    (room - 1) / n
                } else {
                    let w = self.counts[i].saturating_sub(self.seen[i]);
                    (u128::from(room - 1) * u128::from(w) / u128::from(weights)) as u64
                };
                self.wake_at[i] = self.counts[i] + 1 + extra;
            }
        }
        self.seen.copy_from_slice(&self.counts);
        for (shard, &w) in self.shared.shards.iter().zip(&self.wake_at) {
            // SeqCst store, before fetch_or(SLEEPING): a producer whose
            // reservation comes after the re-check sees it.
            shard.cons.wake_at.store(w, Ordering::SeqCst);
        }
        first_item
    }

    fn threshold_reached(&self) -> bool {
        self.shared
            .shards
            .iter()
            .zip(&self.wake_at)
            .any(|(s, &w)| (s.prod.word.load(Ordering::SeqCst) >> 1) >= w)
    }

    /// The batcher is closed: process everything accepted before the close.
    fn finish(&mut self) {
        for (t, shard) in self.targets.iter_mut().zip(self.shared.shards.iter()) {
            // Written by `close` before it set CLOSED, which we have read.
            *t = shard.cons.closed_at.load(Ordering::SeqCst);
        }
        let backoff = Backoff::new();
        while !self.reached_targets() {
            if self.dispatch(Trigger::Shutdown) {
                backoff.reset();
            } else {
                // Reservations made before the close whose push is in flight.
                backoff.snooze();
                if backoff.is_completed() {
                    thread::yield_now();
                }
            }
        }
        #[cfg(feature = "log")]
        {
            let drained = self.popped.iter().sum::<u64>();
            if call_quietly(|| {
                log::debug!("microbatch: flusher drained {drained} items and stopped")
            })
            .is_none()
            {
                self.other_panics += 1;
                self.shared
                    .stats
                    .other_panics
                    .store(self.other_panics, Ordering::Relaxed);
            }
        }
    }
}

/// Marks the flusher done on the way out and wakes everyone waiting for it.
struct ExitGuard<'a, T, S: Storage<T>>(&'a Shared<T, S>);

impl<T, S: Storage<T>> Drop for ExitGuard<'_, T, S> {
    fn drop(&mut self) {
        let shared = self.0;
        if thread::panicking() {
            // A bug of ours: refuse further items so nobody waits forever.
            shared.close();
        }
        *shared.wake.thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
        shared.consume_closes();
        shared.status.store(DONE, Ordering::SeqCst);
        shared.signal.notify();
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
    engine: Option<Engine<T, S>>,
    runs: u64,
}

impl<T: Send + 'static, S: Storage<T>> fmt::Debug for Flusher<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, S: Storage<T>> Flusher<T, S> {
    pub(crate) fn new(engine: Engine<T, S>) -> Self {
        Flusher {
            engine: Some(engine),
            runs: 0,
        }
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
        let engine = self
            .engine
            .as_mut()
            .expect("the engine is present until drop");
        if self.runs > 0 {
            // Reopens (and marks the flusher running, in the same critical
            // section) unless a close came after the last run ended.
            engine.shared().reopen();
        }
        self.runs += 1;
        engine.run();
        engine.shared().metrics()
    }
}

impl<T: Send + 'static, S: Storage<T>> Drop for Flusher<T, S> {
    fn drop(&mut self) {
        if let Some(mut engine) = self.engine.take() {
            engine.shared().close();
            if !thread::panicking() {
                // Drains what a never-run flusher left queued; after a run
                // the batcher is closed and drained, and this returns at once.
                engine.run();
            }
            // The processor and hooks are the user's: their drops may panic.
            engine.drop_quietly();
        }
    }
}
