//! Per-item overhead of request/response batching: many async tasks each
//! submit an item and await its own result. microbatch (tracked submit +
//! awaited ticket, flusher on its own thread) against `batch-aint-one`
//! (tokio worker task), both on the same 2-worker tokio runtime, the
//! processor doubling every input. Every run checks the sum of the answers
//! before its time counts.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use microbatch::{BatchInfo, Batcher, Job};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TASKS: u64 = 64;
const PER_TASK: u64 = 200;

#[derive(Debug, Clone)]
struct Doubler;

impl batch_aint_one::Processor for Doubler {
    type Key = ();
    type Input = u64;
    type Output = u64;
    type Error = String;
    type Resources = ();

    async fn acquire_resources(&self, _key: ()) -> Result<(), String> {
        Ok(())
    }

    async fn process(
        &self,
        _key: (),
        inputs: impl Iterator<Item = u64> + Send,
        _resources: (),
    ) -> Result<Vec<u64>, String> {
        Ok(inputs.map(|x| x * 2).collect())
    }
}

fn expected() -> u64 {
    (0..TASKS * PER_TASK).map(|x| x * 2).sum()
}

fn run_microbatch(rt: &tokio::runtime::Runtime) -> Duration {
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(64)
            .max_delay(Duration::ZERO)
            .build_tracked(|jobs: &mut Vec<Job<u64, u64, ()>>, _: &BatchInfo| {
                for job in jobs.iter_mut() {
                    let x = *job.input();
                    job.complete(Ok(x * 2));
                }
            })
            .unwrap(),
    );
    let start = Instant::now();
    let sum = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let b = Arc::clone(&batcher);
                tokio::spawn(async move {
                    let mut s = 0;
                    for i in 0..PER_TASK {
                        let ticket = b.submit_tracked_async(t * PER_TASK + i).await.unwrap();
                        s += ticket.await.unwrap();
                    }
                    s
                })
            })
            .collect();
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        sum
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, expected(), "microbatch answers");
    elapsed
}

fn run_batch_aint_one(rt: &tokio::runtime::Runtime) -> Duration {
    let batcher = rt.block_on(async {
        Arc::new(
            batch_aint_one::Batcher::builder()
                .name("bench")
                .processor(Doubler)
                .limits(
                    batch_aint_one::Limits::builder()
                        .max_batch_size(64)
                        .max_key_concurrency(1)
                        .build(),
                )
                .batching_policy(batch_aint_one::BatchingPolicy::Immediate)
                .build(),
        )
    });
    let start = Instant::now();
    let sum = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let b = Arc::clone(&batcher);
                tokio::spawn(async move {
                    let mut s = 0;
                    for i in 0..PER_TASK {
                        s += b.add((), t * PER_TASK + i).await.unwrap();
                    }
                    s
                })
            })
            .collect();
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        sum
    });
    let elapsed = start.elapsed();
    assert_eq!(sum, expected(), "batch-aint-one answers");
    rt.block_on(async move { drop(batcher) });
    elapsed
}

fn tracked(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group(format!("tracked/{TASKS}tasks"));
    g.throughput(Throughput::Elements(TASKS * PER_TASK));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    g.bench_function(BenchmarkId::new("microbatch", ""), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_microbatch(&rt)).sum())
    });
    g.bench_function(BenchmarkId::new("batch-aint-one", ""), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| run_batch_aint_one(&rt)).sum())
    });
    g.finish();
}

criterion_group!(benches, tracked);
criterion_main!(benches);
