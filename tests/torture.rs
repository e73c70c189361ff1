//! Stress with exact accounting: random configurations, producers racing a
//! close at a random moment, a processor that is sometimes slow, sometimes
//! fails, sometimes panics, and (with a retry policy) sometimes writes part
//! of its batch and asks for the rest again. After every run: each item was processed
//! exactly once or handed back to its submitter, never both, never twice;
//! per-thread order held; every item was dropped exactly once; the counters
//! equal the truth.
//!
//! Default: a bounded run for CI. `MICROBATCH_SOAK_ITEMS=100000000` (and
//! optionally `MICROBATCH_SEED`) runs a long soak:
//! `MICROBATCH_SOAK_ITEMS=100000000 cargo test --release --test torture -- --nocapture`.

mod common;

use common::{DropCounted, BOUND};
use microbatch::{
    Backpressure, BatchInfo, Batcher, Failure, Oversize, ProcessError, Retry, Rewind, SubmitError,
    WaitStrategy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*: small, seedable, good enough to pick configurations.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    producers: u32,
    items: u64,
    batch: usize,
    capacity: usize,
    lanes: usize,
    shards: usize,
    /// Submit through a `Producer` handle rather than the thread's queue.
    handles: bool,
    /// Pause (yield or sleep) after about one item in this many, so the
    /// flusher parks often and lane submits race its re-check; 0: never.
    pause_every: u64,
    delay: Duration,
    policy: Backpressure,
    wait: WaitStrategy,
    close_after: Option<u64>,
    fault_every: u64,
    /// A weight limit and its oversize policy; items weigh
    /// [`item_weight`] (0 to one and a half times the limit).
    weight: Option<(u64, Oversize)>,
    /// A retry policy of this many attempts, and a rewind in about one
    /// attempt in this many: the processor writes a random part of the
    /// batch (taking it out) and asks for the rest again.
    retry: Option<(u32, u64)>,
}

/// An item's weight, random but fixed by its producer and number (so the
/// processor can check each batch's weight): 0 up to 1.5 × `limit`.
fn item_weight(producer: u32, seq: u64, limit: u64) -> u64 {
    let x = (u64::from(producer) << 40 ^ seq ^ 0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    (x >> 33) % (limit + limit / 2 + 1)
}

impl Plan {
    fn random(rng: &mut Rng, items_per_run: u64) -> Plan {
        let batch = rng.pick(&[1, 2, 7, 64, 512]);
        let capacity = batch * rng.pick(&[1, 2, 4]);
        Plan {
            producers: rng.pick(&[1, 2, 3, 5]),
            items: items_per_run,
            batch,
            capacity,
            lanes: rng.pick(&[0, 1, 2, 4]),
            shards: rng.pick(&[1, 2, 3, 8]),
            handles: rng.below(3) == 0,
            pause_every: rng.pick(&[0, 0, 10, 50, 1000]),
            delay: rng.pick(&[
                Duration::ZERO,
                Duration::from_micros(100),
                Duration::from_millis(1),
                Duration::MAX,
            ]),
            policy: rng.pick(&[
                Backpressure::Block,
                Backpressure::Block,
                Backpressure::Reject,
                Backpressure::BlockTimeout(Duration::from_micros(200)),
            ]),
            wait: rng.pick(&[
                WaitStrategy::Park,
                WaitStrategy::default(),
                WaitStrategy::SpinThenPark {
                    spin: Duration::from_micros(5),
                },
            ]),
            close_after: if rng.below(3) == 0 {
                None
            } else {
                Some(rng.below(items_per_run))
            },
            fault_every: rng.pick(&[0, 0, 7, 31]),
            weight: match rng.below(4) {
                0 => Some((rng.pick(&[1, 10, 1000]), Oversize::Reject)),
                1 => Some((rng.pick(&[1, 10, 1000]), Oversize::Alone)),
                _ => None,
            },
            retry: (rng.below(3) == 0).then(|| (rng.pick(&[1, 2, 4]), rng.pick(&[2, 5, 20]))),
        }
    }
}

#[derive(Default)]
struct Truth {
    /// Per producer: the sequence numbers processed, in processing order.
    processed: Vec<Vec<u64>>,
    /// Items of the batches a fault was injected into, or given up on.
    failed: u64,
    /// Items left in those batches (what `on_discard` must be handed).
    discarded: u64,
    /// What `on_discard` was handed.
    discard_hook: u64,
    /// Rewinds the policy allowed.
    retries: u64,
    batches: u64,
    injected_panics: u64,
    injected_errors: u64,
    /// Processor calls (attempts).
    calls: u64,
    /// Weight of the batches the processor returned `Ok` for.
    ok_weight: u64,
    oversize_batches: u64,
}

fn run(plan: Plan, seed: u64) -> u64 {
    let drops = Arc::new(AtomicU64::new(0));
    let truth = Arc::new(Mutex::new(Truth {
        processed: vec![Vec::new(); plan.producers as usize],
        failed: 0,
        ..Truth::default()
    }));
    let t = Arc::clone(&truth);
    let mut slow = Rng(seed ^ 0x5151);
    let mut builder = Batcher::builder();
    if let Some((attempts, _)) = plan.retry {
        let backoff = rng_backoff(seed);
        builder = builder.retry(Retry::attempts(attempts).backoff(backoff, backoff * 4));
    }
    let hook_truth = Arc::clone(&truth);
    builder = builder.on_discard(move |left: &mut Vec<DropCounted>, _: &Failure, info| {
        // What the last attempt left of the `info.len` items it was shown
        // (the totals are checked against the processor's own count).
        assert!(!left.is_empty() && left.len() <= info.len);
        hook_truth.lock().unwrap().discard_hook += left.len() as u64;
    });
    // This batch's items and weight, fixed at its first attempt.
    let mut current = (0u64, 0u64);
    if let Some((limit, policy)) = plan.weight {
        builder = builder
            .max_batch_weight(limit, move |d: &DropCounted| {
                item_weight(d.producer, d.seq, limit)
            })
            .oversize(policy);
    }
    let batcher = Arc::new(
        builder
            .max_batch_size(plan.batch)
            .capacity(plan.capacity)
            .lanes(plan.lanes)
            .shards(plan.shards)
            .max_delay(plan.delay)
            .backpressure(plan.policy)
            .wait_strategy(plan.wait)
            .build(
                move |batch: &mut Vec<DropCounted>, info: &BatchInfo| -> Result<(), ProcessError> {
                    assert!(
                        !batch.is_empty() && batch.len() <= plan.batch,
                        "batch of {}",
                        batch.len()
                    );
                    assert_eq!(batch.len(), info.len);
                    let weight = plan.weight.map_or(0, |(limit, policy)| {
                        let w = batch
                            .iter()
                            .map(|d| item_weight(d.producer, d.seq, limit))
                            .fold(0u64, u64::saturating_add);
                        assert_eq!(w, info.weight, "the batch's weight");
                        if info.oversize {
                            assert_eq!(policy, Oversize::Alone);
                            assert!(batch.len() == 1 && w > limit, "oversize: {w} > {limit}");
                        } else {
                            assert!(w <= limit, "batch of weight {w} over the limit {limit}");
                        }
                        w
                    });
                    let mut g = t.lock().unwrap();
                    if info.attempt == 1 {
                        current = (batch.len() as u64, weight);
                        g.oversize_batches += u64::from(info.oversize);
                        g.batches += 1;
                    }
                    let (total, total_weight) = current;
                    g.calls += 1;
                    let n = g.calls;
                    if let Some((attempts, every)) = plan.retry {
                        if slow.below(every) == 0 {
                            // Writes a random part (maybe none) and asks for
                            // the rest; at the last attempt the policy
                            // gives up and the rest is discarded.
                            let written = slow.below(batch.len() as u64) as usize;
                            let last = info.attempt >= attempts;
                            let upto = if last { batch.len() } else { written };
                            for item in &batch[..upto] {
                                g.processed[item.producer as usize].push(item.seq);
                            }
                            batch.drain(..written);
                            if last {
                                g.failed += total;
                                g.discarded += batch.len() as u64;
                                g.injected_errors += 1;
                            } else {
                                g.retries += 1;
                            }
                            return Err(Rewind::new("transient").into());
                        }
                    }
                    for item in batch.iter() {
                        g.processed[item.producer as usize].push(item.seq);
                    }
                    drop(g);
                    if slow.below(50) == 0 {
                        // A slow batch: producers fill the shards meanwhile.
                        let until = Instant::now() + Duration::from_micros(300);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    if plan.fault_every > 0 && n.is_multiple_of(plan.fault_every) {
                        {
                            let mut g = t.lock().unwrap();
                            // Every item of the batch, earlier attempts'.
                            g.failed += total;
                            g.discarded += batch.len() as u64;
                        }
                        if n.is_multiple_of(2) {
                            t.lock().unwrap().injected_panics += 1;
                            panic!("injected fault in batch {n}");
                        }
                        t.lock().unwrap().injected_errors += 1;
                        return Err(format!("injected error in batch {n}").into());
                    }
                    t.lock().unwrap().ok_weight += total_weight;
                    Ok(())
                },
            )
            .unwrap(),
    );
    let mut handles = Vec::new();
    for p in 0..plan.producers {
        let b = Arc::clone(&batcher);
        let d = Arc::clone(&drops);
        handles.push(std::thread::spawn(move || {
            let mut accepted = Vec::new();
            let mut returned = Vec::new();
            let mut handle = plan.handles.then(|| b.producer());
            let mut pauses = Rng(seed ^ u64::from(p) << 32 | 1);
            for seq in 0..plan.items {
                if p == 0 && Some(seq) == plan.close_after {
                    b.close();
                }
                if plan.pause_every > 0 && pauses.below(plan.pause_every) == 0 {
                    if pauses.below(4) == 0 {
                        std::thread::sleep(Duration::from_micros(pauses.below(100)));
                    } else {
                        std::thread::yield_now();
                    }
                }
                let item = DropCounted::new(p, seq, &d);
                let result = match handle.as_mut() {
                    Some(h) => h.submit(item),
                    None => b.submit(item),
                };
                match result {
                    Ok(()) => {
                        accepted.push(seq);
                    }
                    Err(e) => {
                        let reason = match &e {
                            SubmitError::Full(_) => "full",
                            SubmitError::Timeout(_) => "timeout",
                            SubmitError::Closed(_) => "closed",
                            SubmitError::TooHeavy(_) => "heavy",
                            other => panic!("a refusal of an unknown kind: {other:?}"),
                        };
                        let item = e.into_inner();
                        assert_eq!(
                            (item.producer, item.seq),
                            (p, seq),
                            "the refused item itself comes back"
                        );
                        returned.push((seq, reason));
                        if reason == "heavy" {
                            let (limit, policy) = plan.weight.expect("a weight limit");
                            assert_eq!(policy, Oversize::Reject);
                            assert!(item_weight(p, seq, limit) > limit, "refused, not heavy");
                        }
                        if reason == "closed" {
                            assert!(b.is_closed());
                        }
                    }
                }
            }
            (accepted, returned)
        }));
    }
    let mut accepted: Vec<Vec<u64>> = Vec::new();
    let mut refused = [0u64; 4];
    for h in handles {
        let (a, r) = h.join().expect("producer");
        for (_, reason) in &r {
            refused[match *reason {
                "full" => 0,
                "timeout" => 1,
                "closed" => 2,
                _ => 3,
            }] += 1;
        }
        accepted.push(a);
    }
    let report = Arc::try_unwrap(batcher).expect("sole owner").shutdown();
    let truth = truth.lock().unwrap();
    let mut total = 0;
    for (p, acc) in accepted.iter().enumerate() {
        assert_eq!(
            &truth.processed[p], acc,
            "producer {p}: processed != accepted (in order), plan {plan:?} seed {seed}"
        );
        total += acc.len() as u64;
    }
    assert_eq!(report.submitted, total, "plan {plan:?} seed {seed}");
    assert_eq!(report.processed + report.failed, total);
    assert_eq!(report.failed, truth.failed, "items of failed batches");
    assert_eq!(report.queue_depth, 0);
    assert_eq!(
        [
            report.rejected_full,
            report.rejected_timeout,
            report.rejected_closed,
            report.rejected_oversize
        ],
        refused
    );
    assert_eq!(report.processed_weight, truth.ok_weight, "plan {plan:?}");
    assert_eq!(report.batches_oversize, truth.oversize_batches);
    if plan.weight.is_none() {
        assert_eq!((report.processed_weight, refused[3]), (0, 0));
    }
    assert_eq!(
        report.processor_panics, truth.injected_panics,
        "plan {plan:?}"
    );
    assert_eq!(
        report.processor_errors, truth.injected_errors,
        "plan {plan:?}"
    );
    assert_eq!(report.batches(), truth.batches);
    assert_eq!(report.retries, truth.retries, "plan {plan:?}");
    assert_eq!(report.discarded, truth.discarded, "plan {plan:?}");
    assert_eq!(
        truth.discard_hook, truth.discarded,
        "what on_discard was handed"
    );
    let attempted = plan.producers as u64 * plan.items;
    assert_eq!(total + refused.iter().sum::<u64>(), attempted);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        attempted,
        "every item dropped exactly once"
    );
    if plan.close_after.is_none() {
        assert_eq!(refused[2], 0);
    }
    attempted
}

/// A run's retry backoff: none, or up to 50 µs.
fn rng_backoff(seed: u64) -> Duration {
    Duration::from_micros(Rng(seed ^ 0xBAC0).below(3) * 25)
}

#[test]
fn stress_random_configurations() {
    let soak: Option<u64> = std::env::var("MICROBATCH_SOAK_ITEMS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed = std::env::var("MICROBATCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let budget = soak.unwrap_or(if cfg!(debug_assertions) {
        1_500_000
    } else {
        10_000_000
    });
    let started = Instant::now();
    let mut items = 0u64;
    let mut runs = 0u64;
    let mut faults = 0u64;
    let mut rewinding = 0u64;
    while items < budget {
        let per_run = rng.pick(&[200u64, 2_000, 20_000, 100_000]);
        let plan = Plan::random(&mut rng, per_run);
        let run_seed = rng.next();
        items += run(plan, run_seed);
        runs += 1;
        if plan.fault_every > 0 {
            faults += 1;
        }
        if plan.retry.is_some() {
            rewinding += 1;
        }
        assert!(
            soak.is_some() || started.elapsed() < BOUND * 6,
            "stress ran past its bound"
        );
    }
    println!(
        "stress: seed {seed}: {items} items in {runs} runs ({faults} with injected processor faults, {rewinding} with random rewinds) in {:.1?}: nothing lost, nothing duplicated",
        started.elapsed()
    );
}
