//! Zero allocations per item and per batch once warm, counted by a global
//! allocator (in its own test binary so nothing else allocates meanwhile).

use microbatch::{BatchInfo, Batcher, WaitStrategy};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_allocates_nothing() {
    counting_alloc::mark_thread();
    // Park: a wake-up per batch exercises the whole wake path too.
    for wait in [WaitStrategy::Park, WaitStrategy::default()] {
        let builder = Batcher::builder()
            .max_batch_size(64)
            .shards(1)
            .max_delay(Duration::MAX)
            .wait_strategy(wait);
        // With feature `metrics`, the exporter thread's publishes (one per
        // interval, not per item or batch) allocate; an interval longer
        // than the test keeps them out of the measured window (the last
        // publish comes at shutdown, after it).
        #[cfg(feature = "metrics")]
        let builder = builder.metrics_interval(Duration::from_secs(3600));
        let batcher = builder
            .build(|batch: &mut Vec<u64>, _: &BatchInfo| {
                std::hint::black_box(batch.iter().sum::<u64>());
            })
            .unwrap();
        // Warm up: thread-locals, the flusher's first batches.
        for i in 0..64 * 20 {
            batcher.submit(i).unwrap();
        }
        while batcher.metrics().processed < 64 * 20 {
            std::thread::yield_now();
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        let n = 64 * 2_000;
        for i in 0..n {
            batcher.submit(i).unwrap();
        }
        while batcher.metrics().processed < 64 * 20 + n {
            std::thread::yield_now();
        }
        let allocs = ALLOCS.load(Ordering::SeqCst) - before;
        let m = batcher.metrics();
        assert!(m.batches() >= 2_000, "{m:?}");
        assert_eq!(
            allocs,
            0,
            "{wait:?}: {allocs} allocations for {n} items in {} batches; the last of {} bytes, \
             on {} thread",
            m.batches(),
            counting_alloc::LAST_SIZE.load(Ordering::SeqCst),
            if counting_alloc::last_on_marked() {
                "the test's"
            } else {
                "another"
            }
        );
        batcher.shutdown();
    }
}
