//! The default shard storage: a ring whose slots are numbered by the
//! batcher's own reservations.
//!
//! A submit already reserves slot number `n` with one `SeqCst` CAS on its
//! shard's tail (`shared::shard`, `Shared::reserve`), admitted only while
//! `n - popped < capacity`. So the ring needs no atomic read-modify-write of
//! its own: the producer writes slot `n % capacity` and publishes it with a
//! release store of its stamp (`n + 1`); the single consumer (the flusher)
//! reads slot `popped % capacity` once its stamp says `popped + 1`. Slot
//! reuse is safe because the producer of `n` has acquired a `popped`
//! greater than `n - capacity`, which the flusher stored after reading the
//! previous occupant.
//!
//! A lane's ring (`shared::shard`, "Lanes") has no stamps: its one owner
//! writes the slot ([`Ring::push_unstamped`]) and publishes it with the
//! Release store of the lane's tail, which the flusher acquires before it
//! takes that many ([`Ring::take_published`]); items never taken are
//! dropped from the tail by the batcher ([`Ring::drop_published`]). No
//! stamp store per item, and no stamp lines to move between the cores
//! (what that is worth: BENCHMARKS.md, "Lanes").
//!
//! This module holds the crate's `unsafe` code: two accesses to a slot's
//! value cell, each justified below (under loom the cells are loom's, so the
//! models check them for data races), and a `prefetchw` hint on x86-64. The
//! ring's own methods are `unsafe fn`s whose `# Safety` sections state what
//! the caller's admission must guarantee; the two callers (the producer's
//! `Reservation::push` and the flusher's `take`, both in `shared/shard.rs`) say
//! at the call why it holds. Nothing outside this crate can reach a `Ring`: the public
//! [`RingStorage`] wraps one and hands it only to the batcher, through
//! [`Storage`]'s sealed method.
//!
//! # Taking the slot lines back early
//!
//! The reservation CAS is a locked instruction, and a locked instruction
//! waits until the producer's earlier stores are visible: when the slot
//! line a push writes was last read by the flusher (one lap ago), the next
//! submit's CAS waits for that line to come back from the flusher's core.
//! Where moving a line between cores is cheap that costs little; where it is
//! dear (a VM phase in which a line round trip costs four times as much) it
//! makes the CAS the whole cost of a submit. So each push asks for
//! ownership of the stamp and value lines `ahead` slots further on
//! (`prefetchw`, a hint that never faults and that the locked instruction
//! does not wait for). What it gains in that phase and costs in the normal
//! one: BENCHMARKS.md, "What limits us" (the CAS bullet and the slow-phase
//! table).
#![allow(unsafe_code)]

use crate::storage::{sealed::Seal, Storage};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::mem::MaybeUninit;

/// The batcher's default shard storage: a ring filled in the order of the
/// batcher's reservations, one release store per item and no atomic
/// read-modify-write of its own.
///
/// Only the batcher that owns it can fill or drain it: the ring inside is
/// reached through [`Storage`]'s sealed method, which no other crate can
/// call. Used on its own (or wrapped in a storage of your own) it holds
/// nothing: [`push`](Storage::push) refuses every item and
/// [`pop`](Storage::pop) finds none. For a stand-alone queue use
/// [`ArrayStorage`](crate::ArrayStorage).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, RingStorage, Storage};
///
/// // The default; naming it changes nothing.
/// let batcher = Batcher::builder()
///     .storage(RingStorage::new)
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(1).unwrap();
/// assert_eq!(batcher.shutdown().processed, 1);
///
/// // On its own it accepts nothing, so nothing can be taken twice.
/// let ring = RingStorage::new(4);
/// assert_eq!(ring.push(1u64), Err(1));
/// assert_eq!(ring.pop(), None);
/// ```
///
/// The numbered slot access the batcher uses is not part of the public
/// API (it was, and safe code could take one item twice through it):
///
/// ```compile_fail
/// use microbatch::{RingStorage, Storage};
/// let ring = RingStorage::new(4);
/// ring.push_indexed(0, Box::new(1u64)).unwrap();
/// let a = ring.pop_indexed(0);
/// let b = ring.pop_indexed(0);
/// ```
///
pub struct RingStorage<T> {
    ring: Ring<T>,
}

impl<T> RingStorage<T> {
    /// A ring of `capacity` slots.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the builder rejects that before calling this).
    pub fn new(capacity: usize) -> Self {
        RingStorage {
            ring: Ring::new(capacity),
        }
    }
}

impl<T> fmt::Debug for RingStorage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RingStorage").field(&self.ring).finish()
    }
}

impl<T> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("head", &self.head.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Send> Storage<T> for RingStorage<T> {
    /// Refuses: a ring slot is chosen by the batcher's reservation number.
    fn push(&self, item: T) -> Result<(), T> {
        Err(item)
    }

    /// Finds nothing: only the owning batcher takes items, by number.
    fn pop(&self) -> Option<T> {
        None
    }

    /// Items written and not yet taken (a scan of the slots: for reports,
    /// not for hot paths).
    fn len(&self) -> usize {
        self.ring.len()
    }

    fn capacity(&self) -> usize {
        self.ring.cap as usize
    }

    #[inline(always)]
    fn __ring(&self, _: Seal) -> Option<&Ring<T>> {
        Some(&self.ring)
    }
}

/// The ring itself: slots numbered by the batcher's reservations. Its
/// methods are `unsafe fn`s: their callers' admission is what makes each
/// slot access exclusive.
pub struct Ring<T> {
    /// Per slot: `index + 1` once item `index` is written; 0 while never
    /// written. Apart from the values (not one `(stamp, value)` struct per
    /// slot): an item of 64 bytes then moves one cache line to the flusher,
    /// plus an eighth of a stamp line, instead of two lines (its stamp would
    /// pad the slot to 128 bytes); small items move as many lines either way.
    stamps: Box<[AtomicU64]>,
    values: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1` when the capacity is a power of two, else 0 (then `%`).
    mask: u64,
    cap: u64,
    /// How many slots ahead a push takes the lines for writing; 0: never
    /// (no `prefetchw` on this CPU, or a ring too small to look ahead in).
    ahead: u64,
    /// The next index the consumer takes (written by the consumer only, on
    /// every take). On its own cache line: next to the slot arrays, `mask`
    /// and `cap`, which every push reads, each take's store would pull that
    /// line from the producers (BENCHMARKS.md has the figure).
    head: CachePadded<AtomicU64>,
}

// SAFETY: the ring hands each item from exactly one producer to the one
// consumer; a slot's value is accessed by one thread at a time, ordered by
// its stamp (release store / acquire load) and by the callers' admission
// (the `# Safety` sections below). Sending items across threads needs
// `T: Send`.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its items.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be non-zero");
        let cap = capacity as u64;
        Ring {
            stamps: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            values: (0..capacity)
                .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
                .collect(),
            mask: if cap.is_power_of_two() { cap - 1 } else { 0 },
            cap,
            ahead: if prefetch_supported() {
                PREFETCH_AHEAD.min(cap / 2)
            } else {
                0
            },
            head: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The slot of item `index`.
    #[inline(always)]
    fn slot(&self, index: u64) -> usize {
        (if self.mask != 0 || self.cap == 1 {
            index & self.mask
        } else {
            index % self.cap
        }) as usize
    }

    /// Items written and not yet taken (a scan of the stamps).
    fn len(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        self.stamps
            .iter()
            .filter(|s| s.load(Ordering::Acquire) > head)
            .count()
    }

    /// Writes item `index` into its slot and publishes it.
    ///
    /// # Safety
    ///
    /// - `index` is handed to exactly one `push` call over the ring's life
    ///   (the batcher's reservation CAS hands each number out once), and the
    ///   indices pushed are 0, 1, 2, … with none skipped for good;
    /// - the slot's previous occupant, item `index - capacity` (if any), has
    ///   been taken by [`take_into`](Ring::take_into), and that take
    ///   happens-before this call (the batcher admits `index` only after an
    ///   Acquire load of a `popped` count above `index - capacity`, which the
    ///   consumer stored with Release semantics after the take).
    #[inline]
    pub(crate) unsafe fn push(&self, index: u64, item: T) {
        if self.ahead != 0 {
            let j = self.slot(index + self.ahead);
            prefetch_for_write(&self.stamps[j]);
            prefetch_for_write(&self.values[j]);
        }
        let i = self.slot(index);
        // SAFETY: by the contract, no other thread accesses this slot's
        // value now: its previous occupant was taken before this call, and
        // no other push has this index.
        self.values[i].with_mut(|p| unsafe { (*p).write(item) });
        // Release: pairs with the Acquire load in `take`; the write above
        // is visible to the consumer that sees this stamp.
        self.stamps[i].store(index + 1, Ordering::Release);
    }

    /// Writes item `index` into its slot without a stamp: a lane's, whose
    /// tail (stored with Release by its one owner after this call)
    /// publishes it.
    ///
    /// # Safety
    ///
    /// As [`push`](Ring::push), and: every push to this ring is a
    /// `push_unstamped` and every take a [`take_published`](Ring::take_published),
    /// and the caller publishes the item (a Release store the consumer
    /// acquires before it takes it).
    #[inline]
    pub(crate) unsafe fn push_unstamped(&self, index: u64, item: T) {
        if self.ahead != 0 {
            prefetch_for_write(&self.values[self.slot(index + self.ahead)]);
        }
        let i = self.slot(index);
        // SAFETY: as in `push`: the previous occupant was taken before this
        // call, and no other push has this index.
        self.values[i].with_mut(|p| unsafe { (*p).write(item) });
    }

    /// Takes the `count` items numbered `index`, … into `out` (a lane's
    /// ring: no stamps to check).
    ///
    /// # Safety
    ///
    /// One consumer, as [`take_into`](Ring::take_into); the items
    /// `index..index + count` were pushed with
    /// [`push_unstamped`](Ring::push_unstamped) and published to this
    /// thread (the consumer acquired a tail at or above `index + count`).
    #[inline]
    pub(crate) unsafe fn take_published(&self, index: u64, count: usize, out: &mut Vec<T>) {
        out.reserve(count);
        for k in index..index + count as u64 {
            let i = self.slot(k);
            // SAFETY: item `k` was written and its write is visible (the
            // contract: published, and the tail acquired); each index is
            // taken once by the one consumer, and no producer rewrites the
            // slot before the consumer publishes a `popped` above `k`.
            out.push(self.values[i].with_mut(|p| unsafe { (*p).assume_init_read() }));
        }
        if count > 0 {
            self.head.store(index + count as u64, Ordering::Relaxed);
        }
    }

    /// Drops the items `head..tail` of a lane's ring, never taken (the
    /// batcher going away with items its flusher never drained).
    ///
    /// # Safety
    ///
    /// `&mut`-exclusive in effect (the batcher's shared state is being
    /// dropped: no producer or consumer is left), and `tail` is the lane's
    /// published count: the items `head..tail` were pushed with
    /// [`push_unstamped`](Ring::push_unstamped) and not taken.
    pub(crate) unsafe fn drop_published(&self, tail: u64) {
        let head = self.head.load(Ordering::Relaxed);
        for k in head..tail {
            // SAFETY: the contract: item `k` is written, not taken, and
            // nobody else can reach the slot any more.
            self.values[self.slot(k)].with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
        self.head.store(tail, Ordering::Relaxed);
    }

    /// Takes the items numbered `index`, `index + 1`, … into `out`, up to
    /// `max` of them, stopping at the first not yet written; returns how
    /// many it took.
    ///
    /// # Safety
    ///
    /// One consumer: calls to `take_into` on a ring never overlap, and each
    /// passes the `index` the previous call stopped at (0 for the first), so
    /// every item is taken once and `head` only moves forward.
    #[inline]
    pub(crate) unsafe fn take_into(&self, index: u64, max: usize, out: &mut Vec<T>) -> usize {
        out.reserve(max);
        let mut taken = 0;
        while taken < max {
            let k = index + taken as u64;
            let i = self.slot(k);
            // Acquire: pairs with the Release store in `push`.
            if self.stamps[i].load(Ordering::Acquire) != k + 1 {
                break;
            }
            // SAFETY: the stamp says item `k` was written, and the write is
            // visible (Acquire above); the single consumer takes each index
            // once (the contract), and no producer rewrites this slot before
            // the consumer publishes a `popped` count above `k`, which the
            // batcher does after this call returns.
            out.push(self.values[i].with_mut(|p| unsafe { (*p).assume_init_read() }));
            taken += 1;
        }
        if taken > 0 {
            self.head.store(index + taken as u64, Ordering::Relaxed);
        }
        taken
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Items written and never taken (a batcher dropped with its flusher
        // never run, during a panic) are dropped here; a lane's ring has no
        // stamps, and its batcher drops them first (`drop_published`).
        let head = self.head.load(Ordering::Relaxed);
        for (stamp, value) in self.stamps.iter().zip(self.values.iter()) {
            if stamp.load(Ordering::Acquire) > head {
                // SAFETY: `&mut self`: no other access; `head` only moves
                // forward past taken items (`take_into`'s contract), so a
                // stamp above it marks an item written and not taken,
                // initialised once.
                value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

/// Slots ahead of the one being written whose lines a push asks for: four
/// lines of stamps, and of values for 8-byte items; nearer than that, the
/// hint does not arrive before the push that needs the line (distances
/// 8, 16 and 32 compared in BENCHMARKS.md, "What limits us").
const PREFETCH_AHEAD: u64 = 32;

/// Whether this CPU has `prefetchw` (CPUID PRFCHW, AMD's 3DNowPrefetch bit).
fn prefetch_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    {
        use std::arch::x86_64::__cpuid;
        // `is_x86_feature_detected!` has no name for this bit: leaf
        // 0x8000_0001, ECX bit 8, if the extended leaves go that far.
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    {
        false
    }
}

/// Asks for the line holding `target` in a writable state, without waiting.
#[inline(always)]
fn prefetch_for_write<U>(target: &U) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: `prefetchw` is a hint: it changes no register, flag or memory
    // content and raises no exception for any address (Intel SDM, AMD APM),
    // and `target` is a live reference anyway. It is only reached when
    // `prefetch_supported()` saw the CPUID bit (`ahead != 0`), so it cannot
    // be an undefined opcode here.
    unsafe {
        std::arch::asm!(
            "prefetchw [{0}]",
            in(reg) target as *const U,
            options(nostack, preserves_flags, readonly),
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = target;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Ring;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicU64>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The ring under the protocol the batcher keeps (each index pushed
    /// once, taken in order by one consumer): items come out in number
    /// order, a slot is not readable before it is written, slots are reused
    /// after a lap, and items never taken are dropped with the ring.
    #[test]
    fn numbered_slots_and_drop() {
        let drops = Arc::new(AtomicU64::new(0));
        let ring = Ring::new(3);
        let item = |i| Counted(i, Arc::clone(&drops));
        let mut out = Vec::new();
        // SAFETY: for every call below: one thread, each index pushed once,
        // each take starting where the last one stopped, and an index
        // pushed only after the item a lap before it was taken.
        unsafe {
            assert_eq!(ring.take_into(0, 8, &mut out), 0, "nothing written yet");
            ring.push(1, item(1));
            assert_eq!(ring.take_into(0, 8, &mut out), 0, "item 0 still in flight");
            ring.push(0, item(0));
            assert_eq!(ring.len(), 2);
            assert_eq!(ring.take_into(0, 1, &mut out), 1, "max respected");
            assert_eq!(ring.take_into(1, 8, &mut out), 1);
            // Slot reuse: items 2..5 wrap around the three slots.
            for i in 2..5 {
                ring.push(i, item(i));
            }
            assert_eq!(ring.take_into(2, 1, &mut out), 1);
        }
        assert_eq!(out.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2]);
        drop(out);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        drop(ring); // items 3 and 4 were never taken
        assert_eq!(
            drops.load(Ordering::Relaxed),
            5,
            "left-overs dropped with the ring"
        );
    }

    /// A lane's ring: unstamped pushes, taken by count, left-overs dropped
    /// by `drop_published` (and not again by the ring's own drop).
    #[test]
    fn unstamped_lane_ring() {
        let drops = Arc::new(AtomicU64::new(0));
        let ring = Ring::new(4);
        let item = |i| Counted(i, Arc::clone(&drops));
        let mut out = Vec::new();
        // SAFETY: one thread; each index pushed once, unstamped, and taken
        // in order once "published" (pushed before the take on this thread);
        // an index pushed only after the item a lap before it was taken.
        unsafe {
            for i in 0..4 {
                ring.push_unstamped(i, item(i));
            }
            assert_eq!(ring.len(), 0, "no stamps: len cannot see a lane's items");
            ring.take_published(0, 3, &mut out);
            for i in 4..7 {
                ring.push_unstamped(i, item(i));
            }
            ring.take_published(3, 2, &mut out);
            assert_eq!(out.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
            drop(out);
            assert_eq!(drops.load(Ordering::Relaxed), 5);
            ring.drop_published(7); // items 5 and 6 were never taken
        }
        assert_eq!(drops.load(Ordering::Relaxed), 7);
        drop(ring);
        assert_eq!(drops.load(Ordering::Relaxed), 7, "not dropped twice");
    }

    /// Capacities that are not powers of two index by `%`.
    #[test]
    fn odd_capacity_wraps() {
        let ring = Ring::new(5);
        let mut out = Vec::new();
        for lap in 0..4u64 {
            // SAFETY: as in `numbered_slots_and_drop`.
            unsafe {
                for i in 0..5 {
                    ring.push(lap * 5 + i, lap * 5 + i);
                }
                assert_eq!(ring.take_into(lap * 5, 8, &mut out), 5);
            }
        }
        assert_eq!(out, (0..20).collect::<Vec<u64>>());
    }
}
