//! The asymmetric barrier: a free *light* side for lane producers, a
//! process-wide *heavy* side for the few who must pair with them.
//!
//! A lane producer stores its busy mark, passes [`Barrier::light`], then
//! loads `flags`; the flusher before it parks, and `close`, set a bit of
//! `flags` with an RMW, pass [`Barrier::heavy`], then load the lane words.
//! That store→load pair on both sides is a Dekker handshake: it needs a
//! full fence on *both* sides, or either side may read the other's old
//! value. The heavy side makes one fence serve both:
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` runs a full memory
//! barrier on every CPU that is running a thread of this process at that
//! moment (an IPI), so in every interleaving the producer's light barrier
//! (a compiler fence) and the heavy one behave as two `SeqCst` fences
//! ordered one way or the other (P1202R4's semantics, which folly's
//! `asymmetric_thread_fence_*`, liburcu and Seastar rely on).
//!
//! # Modes, decided once per batcher
//!
//! - [`Mode::Asymmetric`]: light = compiler fence, heavy = the system's
//!   process-wide barrier. On Linux that is the membarrier above, once the
//!   process's registration is accepted. On Windows it is
//!   `FlushProcessWriteBuffers` (kernel32, since Vista; it cannot fail and
//!   needs no registration): an IPI to every processor of the process's
//!   affinity that flushes its write queue, returning once all have
//!   acknowledged, documented to make each processor's writes visible to
//!   the others (the .NET runtime's process-wide barrier). That contract
//!   speaks of writes only, so the caller adds a `SeqCst` fence after it,
//!   to keep its own later loads after the flush on weakly ordered CPUs
//!   (ARM64); membarrier documents that ordering itself.
//! - [`Mode::Fence`] (no process-wide barrier: another OS, an old kernel, a
//!   sandbox that refuses membarrier — EPERM in old Docker profiles, ENOSYS
//!   in gVisor — or asked for with [`BarrierMode::Fence`](crate::BarrierMode)
//!   or `MICROBATCH_BARRIER=fence`): light = heavy = `fence(SeqCst)`, one
//!   locked instruction per submit (still no CAS).
//!
//! The mode never changes while producers run. A heavy barrier refused
//! *after* a successful registration (a seccomp filter installed later)
//! is counted ([`Barrier::failures`]); the flusher then parks for at most
//! a millisecond at a time, and `close` waits a millisecond for store
//! buffers to drain before it reads the lanes — see ARCHITECTURE.md for
//! why that is a mitigation, not a proof.
//!
//! # Under loom
//!
//! Both sides are `loom::sync::atomic::fence(SeqCst)`, which loom models
//! exactly. That is sound for every light–heavy pair, and only for those:
//! a light barrier must never be relied on against a plain fence or an
//! RMW of another thread (loom would accept it, hardware would not). So
//! `light` is called only on the lane producer path (`shared::shard`) and
//! every partner of it calls `heavy` (`Sleeper::park`, `close`); CI's
//! `.ci/layers.py` checks that no other file calls either.

use crate::sync::Ordering;
use crossbeam_utils::CachePadded;
// Plain counters, not modelled under loom: nothing is ordered by them, and
// a modelled RMW per park would multiply the interleavings explored.
use std::sync::atomic::AtomicU64;

/// How a batcher's lanes are fenced (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Light = compiler fence; heavy = `membarrier` (Linux) or
    /// `FlushProcessWriteBuffers` (Windows).
    Asymmetric,
    /// Light = heavy = `fence(SeqCst)`.
    Fence,
}

/// One batcher's barrier: its mode and how often the heavy side ran.
#[derive(Debug)]
pub(crate) struct Barrier {
    /// Read by every lane submit (`light`).
    mode: Mode,
    /// Written at every park (and by `close`): on a line of their own, so
    /// a park does not take the line holding `mode`, or any field `Shared`
    /// would pack beside it, away from the producers.
    counts: CachePadded<Counts>,
}

/// How often the heavy side ran, and how often the kernel refused it.
#[derive(Debug)]
struct Counts {
    heavy_calls: AtomicU64,
    failures: AtomicU64,
}

impl Barrier {
    /// The barrier for a new batcher: `Asymmetric` if `want_asymmetric`
    /// and this process could register for it, else `Fence`.
    pub(crate) fn new(want_asymmetric: bool) -> Self {
        let mode = if want_asymmetric && !env_forces_fence() && sys::register() {
            Mode::Asymmetric
        } else {
            Mode::Fence
        };
        Barrier {
            mode,
            counts: CachePadded::new(Counts {
                heavy_calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The producer's side: orders its earlier stores before its later
    /// loads against any thread's [`heavy`](Barrier::heavy).
    #[inline(always)]
    pub(crate) fn light(&self) {
        #[cfg(not(loom))]
        match self.mode {
            Mode::Asymmetric => std::sync::atomic::compiler_fence(Ordering::SeqCst),
            Mode::Fence => std::sync::atomic::fence(Ordering::SeqCst),
        }
        #[cfg(loom)]
        crate::sync::fence(Ordering::SeqCst);
    }

    /// The partner's side: a full fence here and on every CPU running a
    /// thread of this process. `false` if the kernel refused it (counted;
    /// only possible after a sandbox tightened since `build()`).
    #[cold]
    pub(crate) fn heavy(&self) -> bool {
        self.counts
            .heavy_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::fence(Ordering::SeqCst);
        #[cfg(not(loom))]
        if self.mode == Mode::Asymmetric && !sys::heavy() {
            self.counts
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Heavy barriers run so far.
    pub(crate) fn heavy_calls(&self) -> u64 {
        self.counts
            .heavy_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Heavy barriers the kernel refused.
    pub(crate) fn failures(&self) -> u64 {
        self.counts
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// `MICROBATCH_BARRIER=fence` opts every batcher of the process out of the
/// process-wide barrier (for sandboxes that kill on an unknown syscall,
/// where even membarrier's probe is fatal).
fn env_forces_fence() -> bool {
    #[cfg(not(loom))]
    {
        std::env::var_os("MICROBATCH_BARRIER").is_some_and(|v| v == "fence")
    }
    #[cfg(loom)]
    {
        false
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
mod sys {
    use std::sync::OnceLock;

    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    #[allow(unsafe_code)]
    fn membarrier(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: `membarrier(2)` takes a command and two integer
        // arguments, reads and writes no memory of ours, and reports every
        // failure (ENOSYS, EPERM, EINVAL) through its return value.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    /// Registers the process for private expedited barriers, once: the
    /// kernel may wait for an RCU grace period (≈12 ms measured with other
    /// threads alive), a second registration costs a microsecond.
    pub(super) fn register() -> bool {
        static REGISTERED: OnceLock<bool> = OnceLock::new();
        *REGISTERED.get_or_init(|| {
            let supported = membarrier(MEMBARRIER_CMD_QUERY);
            supported >= 0
                && supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
                && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        })
    }

    pub(super) fn heavy() -> bool {
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0
    }
}

#[cfg(all(windows, not(loom)))]
mod sys {
    // Declared here rather than through a bindings crate: one function of
    // kernel32, which every Rust program on Windows links already.
    #[link(name = "kernel32")]
    extern "system" {
        fn FlushProcessWriteBuffers();
    }

    /// Nothing to register: the call exists on every supported Windows
    /// (Vista and later).
    pub(super) fn register() -> bool {
        true
    }

    #[allow(unsafe_code)]
    pub(super) fn heavy() -> bool {
        // SAFETY: `FlushProcessWriteBuffers` takes no arguments, touches no
        // memory of ours, cannot fail and returns nothing (processthreadsapi.h).
        unsafe { FlushProcessWriteBuffers() };
        // The call's contract is about other processors' writes; this keeps
        // the caller's loads of the lane words after it (see the module
        // docs).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        true
    }
}

#[cfg(not(any(all(target_os = "linux", not(loom)), all(windows, not(loom)))))]
mod sys {
    // No process-wide barrier on this system: every batcher uses fences.
    pub(super) fn register() -> bool {
        false
    }

    #[allow(dead_code)]
    pub(super) fn heavy() -> bool {
        false
    }
}

#[cfg(all(test, any(target_os = "linux", windows), not(loom)))]
mod litmus {
    //! The store→load pair on real hardware: A stores `x`, passes a
    //! light barrier, loads `y`; B stores `y`, passes a heavy barrier (or
    //! not), loads `x`. Both loads reading 0 is the outcome the barrier
    //! forbids. Without the heavy side x86 shows it (store buffering);
    //! with it, never.
    use super::{Barrier, Mode};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Runs `rounds` aligned attempts; returns how many ended `r1 == r2 == 0`.
    fn forbidden(rounds: usize, heavy: bool, barrier: Arc<Barrier>) -> usize {
        let x = Arc::new(AtomicU64::new(0));
        let y = Arc::new(AtomicU64::new(0));
        // Round number each side has reached; each waits for the other.
        let go = Arc::new(AtomicUsize::new(0));
        let r1s = Arc::new((0..rounds).map(|_| AtomicU64::new(9)).collect::<Vec<_>>());
        let a = {
            let (x, y, go, r1s, barrier) = (
                x.clone(),
                y.clone(),
                go.clone(),
                r1s.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..rounds {
                    while go.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    x.store(1, Ordering::Relaxed);
                    barrier.light();
                    r1s[i].store(y.load(Ordering::Relaxed), Ordering::Relaxed);
                    go.fetch_add(1, Ordering::AcqRel);
                }
            })
        };
        let mut bad = 0;
        for i in 0..rounds {
            x.store(0, Ordering::Relaxed);
            y.store(0, Ordering::Relaxed);
            go.fetch_add(1, Ordering::AcqRel); // 2i + 1: A may go
            y.store(1, Ordering::Relaxed);
            if heavy {
                assert!(
                    barrier.heavy(),
                    "the heavy barrier was refused after registration"
                );
            } else {
                std::sync::atomic::compiler_fence(Ordering::SeqCst);
            }
            let r2 = x.load(Ordering::Relaxed);
            while go.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
            if r2 == 0 && r1s[i].load(Ordering::Relaxed) == 0 {
                bad += 1;
            }
        }
        a.join().unwrap();
        bad
    }

    #[test]
    fn heavy_barrier_forbids_store_buffering() {
        let barrier = Arc::new(Barrier::new(true));
        if barrier.mode() != Mode::Asymmetric {
            eprintln!("litmus: no process-wide barrier here; fence mode is fences on both sides");
            return;
        }
        let rounds = 50_000;
        let without = forbidden(rounds, false, barrier.clone());
        let with = forbidden(rounds, true, barrier.clone());
        eprintln!(
            "litmus: r1 = r2 = 0 in {without} of {rounds} rounds without the heavy barrier, {with} with it"
        );
        assert_eq!(with, 0, "the heavy barrier let a store→load pair reorder");
    }
}
