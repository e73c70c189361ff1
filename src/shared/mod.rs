//! The state both sides of a batcher touch, and the protocols over it: one
//! file per handshake, both halves side by side.
//!
//! | file | protocol | producer / caller half | flusher half | loom models |
//! |---|---|---|---|---|
//! | [`shard`] | admission: the shard tail, the thread's shard | `reserve`, `Reservation::push`, `room_ready` | `take`, `release` | `order`, `blocked`, `close_race` |
//! | [`wake`] | waking a parked flusher | `after_push`, `wake_flusher` | [`wake::Sleeper::park`] (thresholds, `SLEEPING`, re-check) | `wake` |
//! | [`flush`] | the flush barrier | `request_flush`, `flush_until` | `take_flush_request`, `batch_done` | `flush`, `reentrant` |
//! | [`close`] | close, drain, reopen; the flusher's phase | `close`, `reopen`, `done` | `final_counts`, `start_run`, `end_run` | `close_race`, `drop_active`, `user_flusher` |
//! | [`thread`] | what a thread remembers: flusher marks | `on_flusher_thread` | `enter_flusher`, `after_panic` | `reentrant`, `tickets` |
//!
//! The fields of [`Shared`] are private to this module and its files; the
//! rest of the crate calls methods. Each file's types keep their own fields
//! private (a shard's wake threshold is `wake`'s, its processed count is
//! `flush`'s, its final count is `close`'s).
//!
//! # The flags word
//!
//! `flags` holds the bits three protocols share, in one word so that the
//! flusher's `fetch_or(SLEEPING)` also returns any flush request or close
//! made before it (none is missed):
//!
//! | bit | set by | cleared by | read by |
//! |---|---|---|---|
//! | `SLEEPING` | the flusher, before it re-checks and parks (`wake`) | the flusher after its park; whoever wakes it (`wake_flusher`, exactly one) | producers past their threshold (`after_push`), `request_flush`, `close` |
//! | `FLUSH_REQ` | `request_flush` (`flush`) | the flusher, before it reads the targets | the flusher's loop and park |
//! | `CLOSING` | `close`, first (`close`) | `reopen`, last | `is_closed` |
//! | `CLOSED` | `close`, after every shard tail is marked and every final count stored | `reopen` | the flusher's loop and park; `close` (idempotence) |

pub(crate) mod close;
pub(crate) mod flush;
pub(crate) mod shard;
pub(crate) mod thread;
pub(crate) mod wake;

use crate::barrier::Barrier;
use crate::config::Config;
use crate::metrics::{FlusherStats, Metrics};
use crate::storage::Storage;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::time::Clock;
use crate::wait::WaitQueue;
use crate::weight::WeightLimit;
use crossbeam_utils::CachePadded;
use std::marker::PhantomData;

/// `flags`: the flusher is parked (or about to park).
const SLEEPING: u64 = 1;
/// `flags`: a flush was requested; its targets are in `flush`.
const FLUSH_REQ: u64 = 2;
/// `flags`: the batcher is closed; every shard's final count is stored.
const CLOSED: u64 = 4;
/// `flags`: `close` has begun (set before any shard refuses an item, so a
/// submit refused as closed always finds `is_closed()` true).
const CLOSING: u64 = 8;

/// What the flusher's loop reads of `flags` at the top of an iteration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags(u64);

impl Flags {
    pub(crate) fn flush_requested(self) -> bool {
        self.0 & FLUSH_REQ != 0
    }
    pub(crate) fn closed(self) -> bool {
        self.0 & CLOSED != 0
    }
}

/// One shard: the line its producers write, the line its flusher writes,
/// and its storage. Each cell's fields are private to the file of the
/// protocol it belongs to.
pub(crate) struct Shard<S> {
    prod: CachePadded<shard::ProducerSide>,
    cons: CachePadded<ConsumerSide>,
    storage: S,
}

/// What the flusher writes for one shard (and `close`, once). Producers
/// only read it: `popped` on every submit, the threshold after it.
struct ConsumerSide {
    popped: shard::Popped,
    threshold: wake::Threshold,
    progress: flush::Progress,
    final_count: close::FinalCount,
}

impl<S> Shard<S> {
    fn new(storage: S, lane: bool) -> Self {
        Shard {
            prod: CachePadded::new(shard::ProducerSide::new(lane)),
            cons: CachePadded::new(ConsumerSide {
                popped: shard::Popped::new(),
                threshold: wake::Threshold::new(),
                progress: flush::Progress::new(),
                final_count: close::FinalCount::new(),
            }),
            storage,
        }
    }
}

/// The state of one batcher that its producers, its callers and its
/// flusher share.
pub(crate) struct Shared<T, S: Storage<T>> {
    /// The lanes (`..lanes`), then the shards.
    shards: Box<[Shard<S>]>,
    lanes: usize,
    /// How lane producers are ordered against the flusher and `close`.
    barrier: Barrier,
    /// See the module docs. Read by every producer after a threshold
    /// crossing; written only on sleep, wake, flush and close.
    flags: CachePadded<AtomicU64>,
    wake: CachePadded<wake::FlusherWake>,
    stats: CachePadded<FlusherStats>,
    waiters: WaitQueue,
    flush: flush::FlushTargets,
    close: close::CloseState,
    /// Never reused: what threads key their shard and flusher marks by.
    id: u64,
    /// Who holds each lane. Threads hold a `Weak` of it, to return their
    /// lanes and to forget batchers that are gone.
    leases: std::sync::Arc<shard::Leases>,
    /// The next shard to assign to a thread this batcher has not seen.
    next_shard: AtomicUsize,
    /// The [`thread_no`](thread::thread_no) of the thread polling the
    /// flusher, 0 if none. A plain std atomic, not a modelled one: it tells
    /// a thread whether it is the poller, no protocol orders it.
    poller: std::sync::atomic::AtomicU64,
    clock: Clock,
    cfg: Config,
    /// The weight limit, when items heavier than it are refused at submit
    /// (`Oversize::Reject`); `None` otherwise (the submit path's one check).
    heavy: Option<WeightLimit<T>>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T, S: Storage<T>> Drop for Shared<T, S> {
    fn drop(&mut self) {
        self.drop_lane_leftovers();
    }
}

/// A process-wide number for a new batcher, never reused (unlike its
/// address): the key of everything a thread remembers about a batcher.
fn next_batcher_id() -> u64 {
    // Not a modelled atomic: ids only need to be distinct.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<T, S: Storage<T>> Shared<T, S> {
    /// A batcher over `storages`, the first `lanes` of them lanes; with
    /// lanes, `asymmetric` asks for the process-wide barrier (`barrier`);
    /// `heavy` refuses items heavier than its limit at submit.
    pub(crate) fn new(
        storages: Vec<S>,
        lanes: usize,
        asymmetric: bool,
        cfg: Config,
        heavy: Option<WeightLimit<T>>,
    ) -> Self {
        let n = storages.len();
        assert!(lanes < n, "at least one shard");
        Shared {
            shards: storages
                .into_iter()
                .enumerate()
                .map(|(i, s)| Shard::new(s, i < lanes))
                .collect(),
            lanes,
            barrier: Barrier::new(asymmetric && lanes > 0),
            flags: CachePadded::new(AtomicU64::new(0)),
            wake: CachePadded::new(wake::FlusherWake::new()),
            stats: CachePadded::new(FlusherStats::new()),
            waiters: WaitQueue::new(),
            flush: flush::FlushTargets::new(n),
            close: close::CloseState::new(),
            id: next_batcher_id(),
            leases: std::sync::Arc::new(shard::Leases::new(lanes)),
            next_shard: AtomicUsize::new(0),
            poller: std::sync::atomic::AtomicU64::new(0),
            clock: Clock::new(),
            cfg,
            heavy,
            _items: PhantomData,
        }
    }

    /// Every queue: the lanes, then the shards.
    pub(crate) fn shards(&self) -> &[Shard<S>] {
        &self.shards
    }

    pub(crate) fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Is `item` to be refused as heavier than the weight limit? Only
    /// under `Oversize::Reject` does this call the weigher; otherwise it is
    /// one check of an `Option`.
    #[inline]
    pub(crate) fn too_heavy(&self, item: &T) -> bool {
        match &self.heavy {
            None => false,
            Some(h) => h.too_heavy(item),
        }
    }

    /// Is a weight limit with `Oversize::Reject` configured?
    #[inline]
    pub(crate) fn refuses_heavy(&self) -> bool {
        self.heavy.is_some()
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Where producers wait for room, and callers for a flush or the end.
    pub(crate) fn waiters(&self) -> &WaitQueue {
        &self.waiters
    }

    pub(crate) fn stats(&self) -> &FlusherStats {
        &self.stats
    }

    /// The batcher's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The flags, for the flusher's loop (`SeqCst`: ordered with every
    /// RMW on them).
    pub(crate) fn flags(&self) -> Flags {
        Flags(self.flags.load(Ordering::SeqCst))
    }

    /// Has a flush or a close arrived? (For a spinning flusher's poll: a
    /// hint, the loop re-reads the flags.)
    #[cfg(not(loom))]
    pub(crate) fn interrupted(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (FLUSH_REQ | CLOSED) != 0
    }

    /// Is the calling thread running this batcher's flusher (its
    /// processor), or the thread that polls it ([`Flusher::poll`](crate::Flusher::poll))?
    /// Either must not wait for the flusher: it would wait for itself.
    pub(crate) fn on_flusher_thread(&self) -> bool {
        thread::is_flusher_of(self.id) || {
            let p = self.poller.load(std::sync::atomic::Ordering::Relaxed);
            p != 0 && p == thread::thread_no()
        }
    }

    /// The calling thread polls the flusher from now on (`true`), or no
    /// thread does (`false`).
    pub(crate) fn set_poller(&self, polling: bool) {
        let no = if polling { thread::thread_no() } else { 0 };
        // Relaxed: each thread compares with its own number, which only it
        // stores; another thread's stale read can only find a number that
        // is not its own, or its own from when it polled.
        if self.poller.load(std::sync::atomic::Ordering::Relaxed) != no {
            self.poller.store(no, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A snapshot of the counters (see [`FlusherStats`] for why the item
    /// counts are consistent).
    pub(crate) fn metrics(&self) -> Metrics {
        // Only loads inside the read: the values are consistent (and the
        // differences below non-negative) once the read has been validated.
        let (accepted, popped, completed, failed) = self.stats.read(|| {
            let (mut accepted, mut popped, mut completed) = (0, 0, 0);
            for s in self.shards.iter() {
                popped += s.popped();
                completed += s.cons.progress.processed_relaxed();
            }
            let failed = self.stats.failed();
            // After the flusher's counts: a reservation admitted by a
            // newer `popped` than the one read here makes the sequence
            // differ (it happens-before this load).
            for s in self.shards.iter() {
                accepted += s.accepted();
            }
            (accepted, popped, completed, failed)
        });
        let mut m = Metrics {
            submitted: accepted,
            queue_depth: accepted - popped,
            in_flight: popped - completed,
            processed: completed - failed,
            failed,
            ..Metrics::default()
        };
        for s in self.shards.iter() {
            s.fill_counters(&mut m);
        }
        m.capacity = self.cfg.capacity * self.shards.len() as u64;
        m.lanes = self.lanes as u64;
        m.shards = (self.shards.len() - self.lanes) as u64;
        m.lanes_leased = self.leases.leased();
        m.asymmetric_barrier = self.barrier.mode() == crate::barrier::Mode::Asymmetric;
        m.heavy_barriers = self.barrier.heavy_calls();
        m.barrier_failures = self.barrier.failures();
        self.stats.fill(&mut m, self.clock.now());
        m.flusher_wakeups = self.wake.wakeups();
        m
    }
}
