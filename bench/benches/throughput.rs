//! End-to-end throughput: producers submit, one consumer sums each batch.
//!
//! Peers in the same group: hand-built batchers on std `sync_channel` and
//! crossbeam-channel (recv_timeout + drain), `Mutex<Vec>` swap, the
//! `disruptor` crate (multi-producer, batching through end-of-batch), the
//! single-writer floor (`rtrb-floor`: one `rtrb` ring per producer, the
//! consumer taking whole batches, no batching semantics), the same rings
//! with a greedy polling consumer (`rtrb-rings`), and microbatch three ways:
//! the default (lanes; membarrier where the process may use it), lanes in
//! fence mode, and `lanes(0)` (CAS shards only, the engine before lanes).
//! Every run's count and sum are checked before its time counts.

mod common;

use common::{expected, Item, Outcome, Wide};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

const PER_PRODUCER: u64 = 100_000;

fn checked(name: &str, producers: usize, per: u64, run: impl Fn() -> Outcome) -> Duration {
    let (elapsed, count, sum) = run();
    let (n, s) = expected(producers, per);
    assert_eq!((count, sum), (n, s), "{name}: delivered count/sum wrong");
    elapsed
}

fn group<T: Item + Default>(c: &mut Criterion) {
    for producers in [1usize, 2] {
        let mut g = c.benchmark_group(format!("e2e/{}/{}p", T::NAME, producers));
        g.throughput(Throughput::Elements(producers as u64 * PER_PRODUCER));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(3));
        g.warm_up_time(Duration::from_millis(500));
        type Adapter = fn(usize, u64) -> Outcome;
        let adapters: [(&str, Adapter); 9] = [
            ("microbatch", |p, n| common::microbatch::<T>(p, n, None)),
            ("microbatch-fence", |p, n| {
                common::microbatch_with::<T>(p, n, |b| b.barrier(microbatch::BarrierMode::Fence))
            }),
            ("microbatch-shards", |p, n| {
                common::microbatch_with::<T>(p, n, |b| b.lanes(0))
            }),
            ("rtrb-floor", common::rtrb_floor::<T>),
            ("std-sync-channel", common::std_channel::<T>),
            ("crossbeam-channel", common::crossbeam_channel::<T>),
            ("mutex-vec", common::mutex_vec::<T>),
            ("disruptor", common::disruptor::<T>),
            ("rtrb-rings", common::rtrb_rings::<T>),
        ];
        for (name, run) in adapters {
            g.bench_function(BenchmarkId::new(name, producers), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            checked(name, producers, PER_PRODUCER, || {
                                run(producers, PER_PRODUCER)
                            })
                        })
                        .sum()
                })
            });
        }
        g.finish();
    }
}

fn e2e_u64(c: &mut Criterion) {
    group::<u64>(c);
}

fn e2e_wide(c: &mut Criterion) {
    group::<Wide>(c);
}

criterion_group!(benches, e2e_u64, e2e_wide);
criterion_main!(benches);
