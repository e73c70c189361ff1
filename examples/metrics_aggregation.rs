//! Metrics aggregation inside a hot loop.
//!
//! Worker threads record a counter increment and a latency sample per
//! operation. Instead of touching shared state per record, they submit a
//! small `Sample` to the batcher; the processor folds each batch into
//! per-key counters and HDR histograms (`hdrhistogram`) on the flusher
//! thread, and prints a periodic report.
//!
//! The same workload runs three ways in one process, so the per-record cost
//! is compared in the same run:
//! 1. microbatch: `submit(Sample)`, folded per batch;
//! 2. a shared `Mutex<HashMap<key, (count, Histogram)>>` updated per record;
//! 3. per-record atomics: a counter per key and a fixed log-bucket histogram
//!    of `AtomicU64`s (no percentile precision, but no lock).
//!
//! ```text
//! cargo run --release --example metrics_aggregation             # ~3 s
//! cargo run --release --example metrics_aggregation -- --quick  # smoke (CI)
//! ```

use hdrhistogram::Histogram;
use microbatch::{BatchInfo, Batcher};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: [&str; 4] = ["orders.new", "orders.cancel", "quotes.update", "risk.check"];
const THREADS: usize = 4;

/// One record: which metric, and a latency sample in nanoseconds.
#[derive(Clone, Copy)]
struct Sample {
    key: u8,
    nanos: u32,
}

/// A pseudo-random latency, cheap enough not to dominate the loop.
fn latency(state: &mut u64) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    200 + (*state % 50_000) as u32
}

struct Aggregate {
    count: u64,
    hist: Histogram<u64>,
}

impl Aggregate {
    fn new() -> Self {
        Aggregate {
            count: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
        }
    }
}

fn report(title: &str, per_key: &[(u64, u64, u64, u64)]) {
    println!("  {title}");
    for (k, (count, p50, p99, max)) in KEYS.iter().zip(per_key) {
        println!("    {k:<14} count {count:>9}  p50 {p50:>6} ns  p99 {p99:>6} ns  max {max:>6} ns");
    }
}

fn run_microbatch(records: u64) -> Duration {
    let aggs: Arc<Mutex<Vec<Aggregate>>> =
        Arc::new(Mutex::new(KEYS.iter().map(|_| Aggregate::new()).collect()));
    let a = Arc::clone(&aggs);
    let mut last_report = Instant::now();
    let batcher = Batcher::builder()
        .max_batch_size(1024)
        .max_delay(Duration::from_millis(5))
        .build(move |batch: &mut Vec<Sample>, _: &BatchInfo| {
            let mut aggs = a.lock().unwrap();
            for s in batch.iter() {
                let agg = &mut aggs[s.key as usize];
                agg.count += 1;
                agg.hist.saturating_record(u64::from(s.nanos));
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                let total: u64 = aggs.iter().map(|a| a.count).sum();
                println!("    [periodic] {total} samples folded so far");
            }
        })
        .unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let b = &batcher;
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                for i in 0..records {
                    let sample = Sample {
                        key: (i % 4) as u8,
                        nanos: latency(&mut rng),
                    };
                    b.submit(sample).expect("open batcher");
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let m = batcher.shutdown();
    let aggs = aggs.lock().unwrap();
    let rows: Vec<_> = aggs
        .iter()
        .map(|a| {
            (
                a.count,
                a.hist.value_at_quantile(0.5),
                a.hist.value_at_quantile(0.99),
                a.hist.max(),
            )
        })
        .collect();
    report("microbatch: folded per batch", &rows);
    println!(
        "    {} batches (size {}, time {}), no-loss: submitted {} = folded {}",
        m.batches(),
        m.batches_size,
        m.batches_time,
        m.submitted,
        rows.iter().map(|r| r.0).sum::<u64>()
    );
    assert_eq!(
        rows.iter().map(|r| r.0).sum::<u64>(),
        THREADS as u64 * records
    );
    elapsed
}

fn run_mutex(records: u64) -> Duration {
    let map: Mutex<HashMap<u8, Aggregate>> = Mutex::new(HashMap::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let map = &map;
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                for i in 0..records {
                    let key = (i % 4) as u8;
                    let nanos = latency(&mut rng);
                    let mut m = map.lock().unwrap();
                    let agg = m.entry(key).or_insert_with(Aggregate::new);
                    agg.count += 1;
                    agg.hist.saturating_record(u64::from(nanos));
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let map = map.into_inner().unwrap();
    let rows: Vec<_> = (0..4u8)
        .map(|k| {
            let a = &map[&k];
            (
                a.count,
                a.hist.value_at_quantile(0.5),
                a.hist.value_at_quantile(0.99),
                a.hist.max(),
            )
        })
        .collect();
    report("Mutex<HashMap>: one lock per record", &rows);
    assert_eq!(
        rows.iter().map(|r| r.0).sum::<u64>(),
        THREADS as u64 * records
    );
    elapsed
}

fn run_atomics(records: u64) -> Duration {
    // Per key: a counter and 40 power-of-two latency buckets.
    let counts: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let buckets: Vec<Vec<AtomicU64>> = (0..4)
        .map(|_| (0..40).map(|_| AtomicU64::new(0)).collect())
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (counts, buckets) = (&counts, &buckets);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                for i in 0..records {
                    let key = (i % 4) as usize;
                    let nanos = latency(&mut rng);
                    counts[key].fetch_add(1, Ordering::Relaxed);
                    buckets[key][(32 - nanos.leading_zeros()) as usize]
                        .fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let rows: Vec<_> = (0..4)
        .map(|k| {
            let n = counts[k].load(Ordering::Relaxed);
            // Upper edge of the bucket holding the p-quantile.
            let q = |p: f64| {
                let target = ((n as f64 * p) as u64).clamp(1, n.max(1));
                let mut acc = 0;
                for (b, c) in buckets[k].iter().enumerate() {
                    acc += c.load(Ordering::Relaxed);
                    if acc >= target {
                        return 1u64 << b;
                    }
                }
                0
            };
            (n, q(0.5), q(0.99), q(1.0))
        })
        .collect();
    report(
        "per-record atomics (power-of-two buckets: coarse percentiles)",
        &rows,
    );
    assert_eq!(
        rows.iter().map(|r| r.0).sum::<u64>(),
        THREADS as u64 * records
    );
    elapsed
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let records: u64 = if quick { 50_000 } else { 1_500_000 };
    let total = THREADS as u64 * records;
    println!(
        "metrics aggregation: {THREADS} threads x {records} records, {} keys\n",
        KEYS.len()
    );
    let results = [
        ("microbatch", run_microbatch(records)),
        ("Mutex<HashMap>", run_mutex(records)),
        ("per-record atomics", run_atomics(records)),
    ];
    println!("\n  per-record cost (wall time x threads / records), same run:");
    let ours = results[0].1;
    for (name, d) in results {
        println!(
            "    {name:<20} {:>7.1} ns/record   {:>5.2}x microbatch",
            d.as_nanos() as f64 * THREADS as f64 / total as f64,
            d.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
