//! The default shard storage: a ring whose slots are numbered by the
//! batcher's own reservations.
//!
//! A submit already reserves slot number `n` with one `SeqCst` CAS on its
//! shard's word (`batcher::Shared::try_reserve`), admitted only while
//! `n - popped < capacity`. So the ring needs no atomic read-modify-write of
//! its own: the producer writes slot `n % capacity` and publishes it with a
//! release store of its stamp (`n + 1`); the single consumer (the flusher)
//! reads slot `popped % capacity` once its stamp says `popped + 1`. Slot
//! reuse is safe because the producer of `n` has acquired a `popped`
//! greater than `n - capacity`, which the flusher stored after reading the
//! previous occupant.
//!
//! This is the only module with `unsafe` code: two accesses to a slot's
//! value cell, each justified below (under loom the cells are loom's, so the
//! models check them for data races), and a `prefetchw` hint on x86-64.
//!
//! # Taking the slot lines back early
//!
//! The reservation CAS is a locked instruction, and a locked instruction
//! waits until the producer's earlier stores are visible: when the slot
//! line a push writes was last read by the flusher (one lap ago), the next
//! submit's CAS waits for that line to come back from the flusher's core.
//! Where moving a line between cores is cheap that costs little; on the
//! VM of BENCHMARKS.md, in the phase where a line round trip takes ~380 ns
//! instead of ~90, it made one producer 23–24 ns/item instead of ~7. So
//! each push asks for ownership of the stamp and value lines `ahead` slots
//! further on (`prefetchw`, a hint that never faults and that the locked
//! instruction does not wait for). Measured there: one producer 23.0 ->
//! 8.5 ns/item, two 12.1 -> 6.8, 64-byte items with two 15.2 -> 9.7
//! (BENCHMARKS.md); in the normal phase it costs 0.3–0.7 ns/item with 8-byte
//! items (5–10%) and about nothing with 64-byte ones.
#![allow(unsafe_code)]

use crate::storage::Storage;
use crate::sync::{AtomicU64, Ordering, UnsafeSlot};
use crossbeam_utils::CachePadded;
use std::fmt;
use std::mem::MaybeUninit;

/// The batcher's default shard storage: a ring filled in the order of the
/// batcher's reservations, one release store per item and no atomic
/// read-modify-write of its own.
///
/// It is only usable inside a batcher: its plain [`Storage::push`] refuses
/// every item (there is no number to place it by), and items are placed by
/// [`Storage::push_indexed`], which the batcher calls. For a stand-alone
/// queue use [`ArrayStorage`](crate::ArrayStorage).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, RingStorage};
///
/// // The default; naming it changes nothing.
/// let batcher = Batcher::builder()
///     .storage(RingStorage::new)
///     .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
///     .unwrap();
/// batcher.submit(1).unwrap();
/// assert_eq!(batcher.shutdown().processed, 1);
/// ```
pub struct RingStorage<T> {
    /// Per slot: `index + 1` once item `index` is written; 0 while never
    /// written. Apart from the values (not one `(stamp, value)` struct per
    /// slot): an item of 64 bytes then moves one cache line to the flusher,
    /// plus an eighth of a stamp line, instead of two lines (its stamp would
    /// pad the slot to 128 bytes); small items move as many lines either way.
    stamps: Box<[AtomicU64]>,
    values: Box<[UnsafeSlot<MaybeUninit<T>>]>,
    /// `capacity - 1` when the capacity is a power of two, else 0 (then `%`).
    mask: u64,
    cap: u64,
    /// How many slots ahead a push takes the lines for writing; 0: never
    /// (no `prefetchw` on this CPU, or a ring too small to look ahead in).
    ahead: u64,
    /// The next index the consumer takes (written by the consumer only, on
    /// every pop). On its own cache line: next to the slot arrays, `mask` and `cap`,
    /// which every push reads, each pop's store would take that line from
    /// the producers (measured: the flusher drained at 10 ns per item).
    head: CachePadded<AtomicU64>,
}

// SAFETY: the ring hands each item from exactly one producer to the one
// consumer; a slot's value is accessed by one thread at a time, ordered by
// its stamp (release store / acquire load) and by the batcher's admission
// (see the module docs). Sending items across threads needs `T: Send`.
unsafe impl<T: Send> Sync for RingStorage<T> {}
// SAFETY: as above; the ring owns its items.
unsafe impl<T: Send> Send for RingStorage<T> {}

impl<T> RingStorage<T> {
    /// A ring of `capacity` slots.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (the builder rejects that before calling this).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be non-zero");
        let cap = capacity as u64;
        RingStorage {
            stamps: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            values: (0..capacity)
                .map(|_| UnsafeSlot::new(MaybeUninit::uninit()))
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
}

/// Slots ahead of the one being written whose lines a push asks for: four
/// lines of stamps, and of values for 8-byte items. Measured in the slow
/// phase, one producer (a build with the distance read at run time): 32
/// ahead 9.4–9.8 ns/item, 16 ahead 9.8–10.2, 8 ahead 13.5 (too close to
/// hide a ~190 ns transfer).
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

impl<T: Send> RingStorage<T> {
    /// Reads item `index` if its stamp says it was written; the caller (the
    /// single consumer) then moves `head`.
    #[inline(always)]
    fn take(&self, index: u64) -> Option<T> {
        let i = self.slot(index);
        // Acquire: pairs with the Release store in `push_indexed`.
        if self.stamps[i].load(Ordering::Acquire) != index + 1 {
            return None;
        }
        // SAFETY: the stamp says item `index` was written (and the write is
        // visible, by the Acquire above); the single consumer takes each
        // index once (it asks for `index` only until it gets it), and no
        // producer rewrites this slot before the consumer publishes a
        // `popped` count above `index`, which happens after this read.
        Some(self.values[i].with_mut(|p| unsafe { (*p).assume_init_read() }))
    }
}

impl<T> fmt::Debug for RingStorage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingStorage")
            .field("capacity", &self.cap)
            .field("head", &self.head.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Send> Storage<T> for RingStorage<T> {
    /// Refuses: a ring slot is chosen by the batcher's reservation number
    /// (see [`push_indexed`](Storage::push_indexed)).
    fn push(&self, item: T) -> Result<(), T> {
        Err(item)
    }

    fn pop(&self) -> Option<T> {
        self.pop_indexed(self.head.load(Ordering::Relaxed))
    }

    /// Items written and not yet taken (a scan of the slots: for reports,
    /// not for hot paths).
    fn len(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        self.stamps
            .iter()
            .filter(|s| s.load(Ordering::Acquire) > head)
            .count()
    }

    fn capacity(&self) -> usize {
        self.cap as usize
    }

    #[inline]
    fn push_indexed(&self, index: u64, item: T) -> Result<(), T> {
        if self.ahead != 0 {
            let j = self.slot(index + self.ahead);
            prefetch_for_write(&self.stamps[j]);
            prefetch_for_write(&self.values[j]);
        }
        let i = self.slot(index);
        // SAFETY: reservation `index` is this caller's alone (the batcher's
        // CAS handed it out once), and the slot's previous occupant,
        // `index - capacity`, has been taken: the caller was admitted only
        // after acquiring a `popped` count above it, which the consumer
        // published after its read. No other thread touches the value now.
        self.values[i].with_mut(|p| unsafe { (*p).write(item) });
        // Release: pairs with the Acquire load in `pop_indexed`; the write
        // above is visible to the consumer that sees this stamp.
        self.stamps[i].store(index + 1, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn pop_indexed(&self, index: u64) -> Option<T> {
        let item = self.take(index)?;
        self.head.store(index + 1, Ordering::Relaxed);
        Some(item)
    }

    #[inline]
    fn pop_indexed_into(&self, index: u64, max: usize, out: &mut Vec<T>) -> usize {
        out.reserve(max);
        let mut taken = 0;
        while taken < max {
            match self.take(index + taken as u64) {
                Some(item) => out.push(item),
                None => break,
            }
            taken += 1;
        }
        if taken > 0 {
            self.head.store(index + taken as u64, Ordering::Relaxed);
        }
        taken
    }
}

impl<T> Drop for RingStorage<T> {
    fn drop(&mut self) {
        // Items written and never taken (a batcher dropped with its flusher
        // never run, during a panic) are dropped here.
        let head = self.head.load(Ordering::Relaxed);
        for (stamp, value) in self.stamps.iter().zip(self.values.iter()) {
            if stamp.load(Ordering::Acquire) > head {
                // SAFETY: `&mut self`: no other access; a stamp above `head`
                // marks an item written and not taken, initialised once.
                value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}
