//! The async edge, on tokio and on a minimal executor.

mod common;

use common::{DropCounted, Gate, BOUND};
use microbatch::{BatchInfo, Batcher, Job};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

fn gated_batcher(gate: &Gate, capacity: usize) -> Batcher<u64> {
    Batcher::builder()
        .max_batch_size(capacity)
        .capacity(capacity)
        .shards(1)
        .build(gate.processor::<u64>())
        .unwrap()
}

#[test]
fn submit_async_waits_for_room_without_blocking_the_thread() {
    let gate = Gate::default();
    let batcher = gated_batcher(&gate, 2);
    {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Submit until the shard is full (the processor holds a batch at the
        // gate): then the future must be pending, and polling it must return
        // at once rather than block the thread.
        let mut next = 0u64;
        let mut fut = Box::pin(batcher.submit_async(next));
        let mut pending = false;
        for _ in 0..100 {
            match fut.as_mut().poll(&mut cx) {
                Poll::Pending => {
                    pending = true;
                    break;
                }
                Poll::Ready(r) => {
                    r.unwrap();
                    next += 1;
                    fut = Box::pin(batcher.submit_async(next));
                }
            }
        }
        assert!(pending, "a full shard leaves the submit pending");
        gate.open();
        futures::executor::block_on(async {
            fut.await.unwrap();
            batcher.flush_async().await.unwrap();
        });
    }
    let m = batcher.shutdown();
    assert_eq!(m.processed, m.submitted);
}

#[test]
fn tokio_producers_and_tracked_tickets() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(16)
            .capacity(16)
            .shards(2)
            .build_tracked(|jobs: &mut Vec<Job<u64, u64, ()>>, _: &BatchInfo| {
                for job in jobs.iter_mut() {
                    let x = *job.input();
                    job.complete(Ok(x * 2));
                }
            })
            .unwrap(),
    );
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let b = Arc::clone(&batcher);
            tasks.push(tokio::spawn(async move {
                let mut sum = 0;
                for i in 0..500 {
                    let ticket = b.submit_tracked_async(t * 1000 + i).await.unwrap();
                    sum += ticket.await.unwrap();
                }
                b.flush_async().await.unwrap();
                sum
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += tokio::time::timeout(BOUND, t)
                .await
                .expect("tasks finish")
                .unwrap();
        }
        let expect: u64 = (0..8u64)
            .flat_map(|t| (0..500).map(move |i| 2 * (t * 1000 + i)))
            .sum();
        assert_eq!(total, expect);
    });
    let m = Arc::try_unwrap(batcher).unwrap().shutdown();
    assert_eq!(m.processed, 4000);
}

#[test]
fn tokio_current_thread_submit_async_under_backpressure() {
    // One runtime thread: if submit_async blocked the thread, the test
    // would hang (bounded by the timeout) instead of interleaving.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let sum = Arc::new(AtomicU64::new(0));
    let s = Arc::clone(&sum);
    let batcher = Arc::new(
        Batcher::builder()
            .max_batch_size(4)
            .capacity(4)
            .shards(1)
            .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
                s.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
            })
            .unwrap(),
    );
    rt.block_on(async {
        let b1 = Arc::clone(&batcher);
        let b2 = Arc::clone(&batcher);
        let a = tokio::spawn(async move {
            for i in 0..5_000u64 {
                b1.submit_async(i).await.unwrap();
            }
        });
        let c = tokio::spawn(async move {
            for i in 5_000..10_000u64 {
                b2.submit_async(i).await.unwrap();
            }
        });
        tokio::time::timeout(BOUND, async {
            a.await.unwrap();
            c.await.unwrap();
        })
        .await
        .expect("no task blocked the runtime thread");
        batcher.flush_async().await.unwrap();
    });
    assert_eq!(sum.load(Ordering::Relaxed), (0..10_000u64).sum::<u64>());
}

#[test]
fn dropping_a_pending_submit_drops_only_its_item() {
    let drops = Arc::new(AtomicU64::new(0));
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .max_batch_size(1)
        .capacity(1)
        .shards(1)
        .build(gate.processor::<DropCounted>())
        .unwrap();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut accepted = 0;
    let mut dropped_pending = 0;
    for _ in 0..5 {
        let mut fut = Box::pin(batcher.submit_async(DropCounted::counting(&drops)));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => {
                r.map_err(|_| ()).unwrap();
                accepted += 1;
            }
            Poll::Pending => dropped_pending += 1, // dropped here: cancelled
        }
    }
    assert!(dropped_pending > 0);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        dropped_pending,
        "cancelled items dropped with their futures"
    );
    gate.open();
    let m = batcher.shutdown();
    assert_eq!(m.processed, accepted, "accepted items processed");
    assert_eq!(
        drops.load(Ordering::Relaxed),
        5,
        "every item dropped exactly once"
    );
    let _ = Duration::ZERO;
}
