//! Lanes: single-writer queues published with plain stores, ordered
//! against the flusher's park and `close` by the asymmetric barrier (both
//! sides `fence(SeqCst)` under loom, `src/barrier.rs`). The other models
//! run over lanes too (and again over shards with
//! `MICROBATCH_MODEL_LANES=0`); these check what only lanes have: a lane
//! beside a shard, and the lease handed over at thread exit and by a
//! `Producer` handle. (Close racing lane submits is `close_race`, whose
//! producer leases the models' lane.)
#![cfg(loom)]

use loom::thread;
use microbatch::Batcher;
use microbatch_loom_tests::{builder, model, recorder, trace, Seen};
use std::sync::Arc;

/// One lane and one shard, a producer on each, a batch of two: the size
/// trigger must fire whichever queue crosses its threshold last, and the
/// parked flusher must be woken by the lane's plain-store submit or the
/// shard's CAS.
#[test]
fn lane_beside_shard_wakes_for_a_full_batch() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).lanes(1).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        let other = thread::spawn(move || b.submit(2).unwrap());
        batcher.submit(1).unwrap();
        other.join().unwrap();
        seen.wait_for(2);
        let mut v = seen.values();
        v.sort_unstable();
        assert_eq!(v, vec![1, 2]);
    });
}

/// A thread leases the only lane, submits, and exits; its lease is
/// returned by its thread-local destructor (which loom runs after `join`
/// may already have returned, as a real thread's may run late). A second
/// thread submits meanwhile, on the lane if it was back, else on the
/// shard: both items processed once, and the lane is free again once
/// both threads are gone (a lease never returned spins this model into
/// loom's branch limit).
#[test]
fn lane_lease_returned_at_thread_exit() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(1, 1).lanes(1).build(recorder(&seen)).unwrap());
        let b = Arc::clone(&batcher);
        thread::spawn(move || b.submit(1).unwrap()).join().unwrap();
        trace("first thread joined");
        let b = Arc::clone(&batcher);
        thread::spawn(move || b.submit(2).unwrap()).join().unwrap();
        seen.wait_for(2);
        let mut v = seen.values();
        v.sort_unstable();
        assert_eq!(v, vec![1, 2]);
        // Both threads gone: their destructors return the lane (a lease
        // never returned spins here into loom's branch limit).
        while !batcher.producer().is_lane() {
            thread::yield_now();
        }
    });
}

/// A `Producer` handle owns the lane and moves to another thread; its
/// items keep their order, the thread's own submits go to the shard, and
/// dropping the handle returns the lane.
#[test]
fn producer_handle_moves_between_threads() {
    model(|| {
        let seen = Seen::new();
        let batcher: Batcher<u32> = builder(2, 2).lanes(1).build(recorder(&seen)).unwrap();
        let mut p = batcher.producer();
        assert!(p.is_lane());
        p.submit(1).unwrap();
        // Every lane is held by the handle: this thread's submit uses the shard.
        batcher.submit(3).unwrap();
        let h = thread::spawn(move || {
            p.submit(2).unwrap();
        });
        h.join().unwrap();
        let report = batcher.shutdown();
        let v = seen.values();
        let lane: Vec<u32> = v.iter().copied().filter(|&x| x != 3).collect();
        assert_eq!(
            lane,
            vec![1, 2],
            "the handle's items in the order submitted"
        );
        assert_eq!(report.processed, 3);
        assert_eq!(report.lanes_leased, 0, "the handle returned its lane");
    });
}

/// Two handles on two threads, one lane: whoever leases second (if the
/// first has returned the lane by then, which loom explores) learns of the
/// return only through the lease's own Release/Acquire, and must continue
/// after the first owner's tail and see its slot writes — or it would
/// rewrite slot 0 (loom reports the unsynchronised cell access) or lose
/// an item.
#[test]
fn lane_lease_handed_over_between_handles() {
    model(|| {
        let seen = Seen::new();
        let batcher = Arc::new(builder(2, 2).lanes(1).build(recorder(&seen)).unwrap());
        let spawn = |x: u32| {
            let b = Arc::clone(&batcher);
            thread::spawn(move || {
                let mut p = b.producer();
                p.submit(x).unwrap();
                trace(format!("handle {x}: lane {}", p.is_lane()));
            })
        };
        let (first, second) = (spawn(1), spawn(2));
        first.join().unwrap();
        second.join().unwrap();
        let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
        let mut v = seen.values();
        v.sort_unstable();
        assert_eq!(v, vec![1, 2], "each item once");
        assert_eq!((report.processed, report.lanes_leased), (2, 0));
    });
}
