//! Submit-to-process latency at paced loads, and the idle-item overshoot.
//!
//! Not a criterion bench (criterion times iterations; this needs
//! distributions): one producer submits one item every `period`, each item
//! carrying its *intended* send time, so a late send counts from when it
//! should have happened (no coordinated omission). The consumer reads the
//! clock once per batch — the moment the batch is processed — and records
//! `now - intended` for every item in it. Peers in the same run:
//! crossbeam-channel (blocking `recv`, then drain) and the `disruptor` crate.
//!
//! `cargo bench -p microbatch-bench --bench latency` runs 300 ms per cell; `cargo test -p microbatch-bench --benches`
//! runs 10 ms per cell, to check that it works.

use microbatch::{BatchInfo, Batcher, WaitStrategy};
use std::sync::atomic::Ordering;

#[path = "../../tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Two producers, default configuration: flusher wake-ups per batch and
/// allocations per item once warm.
fn steady_state(per_producer: u64) -> (f64, f64, u64, u64) {
    let batcher = Batcher::builder()
        .build(|batch: &mut Vec<u64>, _: &BatchInfo| {
            std::hint::black_box(batch.iter().sum::<u64>());
        })
        .unwrap();
    let run = |n: u64| {
        std::thread::scope(|s| {
            for p in 0..2u64 {
                let b = &batcher;
                s.spawn(move || (0..n).for_each(|i| b.submit(p * n + i).unwrap()));
            }
        });
        batcher.flush().unwrap();
    };
    run(per_producer / 10); // warm-up: threads' first use, buffers
    let before_m = batcher.metrics();
    let before = ALLOCS.load(Ordering::SeqCst);
    run(per_producer);
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;
    let m = batcher.shutdown();
    let batches = m.batches() - before_m.batches();
    let wakeups = m.flusher_wakeups - before_m.flusher_wakeups;
    // The scoped threads themselves allocate (stacks, names): counted, and
    // reported as is, per item.
    (
        wakeups as f64 / batches as f64,
        allocs as f64 / (2 * per_producer) as f64,
        batches,
        allocs,
    )
}
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Samples(Mutex<Vec<u64>>);

impl Samples {
    /// Room for every sample of a run, touched in advance: growing the
    /// vector inside `record` copied megabytes on the consumer's clock
    /// (18 times in a 300 ms run at 1 µs), and those stalls showed up as
    /// every adapter's p99.
    fn for_run(period: Duration, run_for: Duration) -> Arc<Samples> {
        let n = (run_for.as_nanos() / period.as_nanos()) as usize;
        let mut v = vec![1u64; n];
        v.clear();
        Arc::new(Samples(Mutex::new(v)))
    }

    /// The samples, once the consumer holding the other handle is gone.
    fn into_vec(samples: Arc<Samples>) -> Vec<u64> {
        Arc::try_unwrap(samples)
            .ok()
            .expect("the consumer still holds the samples")
            .0
            .into_inner()
            .unwrap()
    }

    fn record(&self, epoch: Instant, intended: impl Iterator<Item = u64>) {
        let now = epoch.elapsed().as_nanos() as u64;
        self.0
            .lock()
            .unwrap()
            .extend(intended.map(|t| now.saturating_sub(t)));
    }
}

/// Paces `n` submits `period` apart; returns the samples once `wait_all`
/// says everything was processed.
fn paced(period: Duration, run_for: Duration, epoch: Instant, mut submit: impl FnMut(u64)) -> u64 {
    let n = (run_for.as_nanos() / period.as_nanos()) as u64;
    let start = epoch.elapsed().as_nanos() as u64 + 1_000_000;
    for k in 0..n {
        let intended = start + k * period.as_nanos() as u64;
        while (epoch.elapsed().as_nanos() as u64) < intended {
            std::hint::spin_loop();
        }
        submit(intended);
    }
    n
}

/// Appends `v`'s distribution to the CDF file `bench/charts.py` draws:
/// a ladder of quantiles, denser towards the tail.
fn write_cdf(out: &mut String, period: Duration, name: &str, v: &mut [u64]) {
    v.sort_unstable();
    let mut qs: Vec<f64> = (0..100).map(|k| k as f64 / 100.0).collect();
    qs.extend((1..10).map(|k| 0.99 + k as f64 / 1000.0));
    qs.extend((1..10).map(|k| 0.999 + k as f64 / 10_000.0));
    qs.push(1.0);
    for q in qs {
        let ns = v[((v.len() - 1) as f64 * q).round() as usize];
        out.push_str(&format!("{period:?},{name},{q},{ns}\n"));
    }
}

fn percentiles(mut v: Vec<u64>) -> [Duration; 4] {
    v.sort_unstable();
    let at = |p: f64| Duration::from_nanos(v[((v.len() - 1) as f64 * p).round() as usize]);
    [at(0.5), at(0.99), at(0.999), at(1.0)]
}

fn microbatch(wait: WaitStrategy, period: Duration, run_for: Duration) -> Vec<u64> {
    let epoch = Instant::now();
    let samples = Samples::for_run(period, run_for);
    let s = Arc::clone(&samples);
    let batcher = Batcher::builder()
        .shards(1)
        .max_delay(Duration::ZERO)
        .wait_strategy(wait)
        .build(move |batch: &mut Vec<u64>, _: &BatchInfo| s.record(epoch, batch.iter().copied()))
        .unwrap();
    let n = paced(period, run_for, epoch, |t| batcher.submit(t).unwrap());
    let m = batcher.shutdown();
    assert_eq!(m.processed, n);
    Samples::into_vec(samples)
}

fn crossbeam(period: Duration, run_for: Duration) -> Vec<u64> {
    let epoch = Instant::now();
    let samples = Samples::for_run(period, run_for);
    let s = Arc::clone(&samples);
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
    let consumer = thread::spawn(move || {
        let mut buf = Vec::with_capacity(512);
        while let Ok(x) = rx.recv() {
            buf.push(x);
            buf.extend(rx.try_iter().take(511));
            s.record(epoch, buf.drain(..));
        }
    });
    let n = paced(period, run_for, epoch, |t| tx.send(t).unwrap());
    drop(tx);
    consumer.join().unwrap();
    let v = Samples::into_vec(samples);
    assert_eq!(v.len() as u64, n);
    v
}

fn disruptor(period: Duration, run_for: Duration) -> Vec<u64> {
    use disruptor::Producer;
    let epoch = Instant::now();
    let samples = Samples::for_run(period, run_for);
    let s = Arc::clone(&samples);
    let mut buf = Vec::with_capacity(512);
    let mut producer =
        disruptor::build_single_producer(1024, || 0u64, disruptor::BusySpinWithSpinLoopHint)
            .handle_events_with(move |e: &u64, _, end: bool| {
                buf.push(*e);
                if end {
                    s.record(epoch, buf.drain(..));
                }
            })
            .build();
    let n = paced(period, run_for, epoch, |t| producer.publish(|e| *e = t));
    drop(producer);
    let v = Samples::into_vec(samples);
    assert_eq!(v.len() as u64, n);
    v
}

/// One item into an idle batcher with the default `max_delay` (1 ms): how
/// long after `max_delay` it is dispatched.
fn idle_overshoot(rounds: usize) -> Vec<u64> {
    let mut over = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let batcher = Batcher::builder()
        .build(move |batch: &mut Vec<Instant>, _: &BatchInfo| {
            tx.send(batch[0].elapsed()).unwrap();
        })
        .unwrap();
    for _ in 0..rounds {
        // Let the flusher go fully idle (past its idle polls) first.
        thread::sleep(Duration::from_millis(80));
        batcher.submit(Instant::now()).unwrap();
        let waited = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        over.push(waited.saturating_sub(Duration::from_millis(1)).as_nanos() as u64);
    }
    over
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let run_for = if full {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(10)
    };
    println!(
        "submit-to-process latency, 1 producer, one item per period (intended-time corrected)"
    );
    println!("| period | adapter | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|");
    let mut cdf = String::from("period,adapter,quantile,ns\n");
    for period in [
        Duration::from_micros(1),
        Duration::from_micros(5),
        Duration::from_micros(50),
    ] {
        let mut rows: Vec<(String, Vec<u64>)> = vec![
            (
                "microbatch busy-spin".into(),
                microbatch(WaitStrategy::BusySpin, period, run_for),
            ),
            (
                "microbatch spin-then-park".into(),
                microbatch(WaitStrategy::default(), period, run_for),
            ),
            (
                "microbatch park".into(),
                microbatch(WaitStrategy::Park, period, run_for),
            ),
            ("crossbeam-channel".into(), crossbeam(period, run_for)),
            ("disruptor".into(), disruptor(period, run_for)),
        ];
        for (name, mut v) in rows.drain(..) {
            write_cdf(&mut cdf, period, &name, &mut v);
            let [p50, p99, p999, max] = percentiles(v);
            println!("| {period:?} | {name} | {p50:.1?} | {p99:.1?} | {p999:.1?} | {max:.1?} |");
        }
    }
    if full {
        // For bench/charts.py; only from a full run (a test run's 10 ms
        // cells are too short to draw).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/latency-cdf.csv");
        std::fs::write(path, &cdf).expect("writing target/latency-cdf.csv");
        println!("\n(distributions written to target/latency-cdf.csv)");
    }
    let (wakes, allocs_per_item, batches, allocs) =
        steady_state(if full { 2_000_000 } else { 20_000 });
    println!(
        "\nsteady state, 2 producers, default configuration: {wakes:.3} flusher wake-ups per batch ({batches} batches); \
         {allocs} allocations in all ({allocs_per_item:.2e} per item; spawning the two producer threads included)"
    );
    let rounds = if full { 20 } else { 2 };
    let [p50, p99, _, max] = percentiles(idle_overshoot(rounds));
    println!("\nidle item, default max_delay 1 ms, {rounds} rounds: dispatched max_delay + {p50:.1?} (median), + {max:.1?} (max); p99 {p99:.1?}");
}
