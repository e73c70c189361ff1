//! A short tour: the batcher with its defaults, four producer threads, and
//! what it measured.
//!
//! ```text
//! cargo run --release --example tour            # about 4 seconds
//! cargo run --release --example tour -- --quick # about half a second (CI)
//! ```
//!
//! 1. Throughput: four threads submit as fast as they can; the processor sums
//!    each batch. Prints items/s, batches by trigger, the batch-size
//!    distribution and the no-loss check (submitted = processed, and the sum
//!    of what was processed equals the sum of what was accepted).
//! 2. Latency: one thread submits one item every 20 µs; each item carries
//!    when it was due and when it was submitted, the processor stamps the
//!    batch, and the tour prints both submit-to-process percentiles and
//!    intended-time-to-process ones (corrected for coordinated omission: a
//!    late send counts from when it should have happened).
//! 3. An idle item: one submit and nothing after it, dispatched by the time
//!    trigger after `max_delay` (a target: it prints by how much it was
//!    missed).

use microbatch::{BatchInfo, Batcher, Metrics, Trigger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 0.15 } else { 1.0 };
    println!(
        "microbatch tour ({} cores available)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let ok_throughput = throughput(Duration::from_secs_f64(2.0 * scale));
    let ok_latency = latency(Duration::from_secs_f64(1.0 * scale));
    let ok_idle = idle_item();
    if ok_throughput && ok_latency && ok_idle {
        println!("\nall checks passed: nothing lost, nothing duplicated");
    } else {
        eprintln!("\nA CHECK FAILED");
        std::process::exit(1);
    }
}

/// Batch sizes, bucketed by powers of two.
#[derive(Default)]
struct SizeHistogram([u64; 12]);

impl SizeHistogram {
    fn record(&mut self, len: usize) {
        let bucket = (usize::BITS - len.leading_zeros()) as usize;
        self.0[bucket.min(11)] += 1;
    }
    fn print(&self) {
        let total: u64 = self.0.iter().sum();
        println!("  batch sizes:");
        for (i, &n) in self.0.iter().enumerate().filter(|(_, &n)| n > 0) {
            let lo = if i == 0 { 0 } else { 1usize << (i - 1) };
            let hi = (1usize << i) - 1;
            let bar = "#".repeat(((n * 40).div_ceil(total.max(1))) as usize);
            println!("    {lo:>4}..={hi:<4} {n:>8}  {bar}");
        }
    }
}

fn print_triggers(m: &Metrics) {
    println!(
        "  batches: {} (size {}, time {}, flush {}, shutdown {}); flusher wake-ups {}; producer waits {}",
        m.batches(),
        m.batches_size,
        m.batches_time,
        m.batches_flush,
        m.batches_shutdown,
        m.flusher_wakeups,
        m.producer_waits
    );
}

fn throughput(run_for: Duration) -> bool {
    println!("1. throughput: 4 producers, default configuration (batch 512, delay 1 ms, block when full)");
    let sum = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(SizeHistogram::default()));
    let (s, h) = (Arc::clone(&sum), Arc::clone(&hist));
    let batcher = Batcher::builder()
        .build(move |batch: &mut Vec<u64>, info: &BatchInfo| {
            s.fetch_add(batch.iter().sum::<u64>(), Ordering::Relaxed);
            h.lock().unwrap().record(info.len);
        })
        .expect("default configuration is valid");
    let start = Instant::now();
    let accepted_sum: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let b = &batcher;
                scope.spawn(move || {
                    let mut local = 0u64;
                    let mut i = 0u64;
                    while start.elapsed() < run_for {
                        for _ in 0..1024 {
                            let x = t << 40 | i;
                            b.submit(x).expect("open batcher accepts under Block");
                            local = local.wrapping_add(x);
                            i += 1;
                        }
                    }
                    local
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(0u64, u64::wrapping_add)
    });
    let elapsed = start.elapsed();
    let m = batcher.shutdown();
    println!(
        "  {} items in {:.2?}: {:.1} M items/s",
        m.submitted,
        elapsed,
        m.submitted as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "  queues: {} lanes (single-writer, {}) + {} shard(s); {} process-wide barriers in all",
        m.lanes,
        if m.asymmetric_barrier {
            "process-wide barrier: no fence per submit"
        } else {
            "fence mode: one SeqCst fence per submit"
        },
        m.shards,
        m.heavy_barriers
    );
    print_triggers(&m);
    hist.lock().unwrap().print();
    let ok = m.submitted == m.processed
        && sum.load(Ordering::Relaxed) == accepted_sum
        && m.rejected() == 0;
    println!(
        "  no-loss check: submitted {} = processed {}, sums match: {}",
        m.submitted,
        m.processed,
        if ok { "yes" } else { "NO" }
    );
    ok
}

fn latency(run_for: Duration) -> bool {
    let period = Duration::from_micros(20);
    println!("\n2. latency: one item every {period:?}, default configuration");
    // Each item carries when it was due and when its submit was called;
    // the processor stamps the batch.
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let sm = Arc::clone(&samples);
    let epoch = Instant::now();
    let batcher = Batcher::builder()
        .build(move |batch: &mut Vec<(u64, u64)>, _: &BatchInfo| {
            let now = epoch.elapsed().as_nanos() as u64;
            sm.lock().unwrap().extend(
                batch
                    .iter()
                    .map(|&(due, sent)| (now.saturating_sub(sent), now.saturating_sub(due))),
            );
        })
        .unwrap();
    let n = (run_for.as_nanos() / period.as_nanos()) as u64;
    for k in 0..n {
        let due = Duration::from_nanos(k * period.as_nanos() as u64);
        while epoch.elapsed() < due {
            std::hint::spin_loop();
        }
        let sent = epoch.elapsed().as_nanos() as u64;
        batcher.submit((due.as_nanos() as u64, sent)).unwrap();
    }
    let m = batcher.shutdown();
    let s = samples.lock().unwrap();
    let line = |what: &str, mut v: Vec<u64>| {
        v.sort_unstable();
        let pct = |p: f64| Duration::from_nanos(v[((v.len() - 1) as f64 * p) as usize]);
        println!(
            "  {what}: p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, p99.9 {:.1?}, max {:.1?}",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
    };
    println!("  {} items", s.len());
    line(
        "submit -> processor  ",
        s.iter().map(|&(from_submit, _)| from_submit).collect(),
    );
    line(
        "intended -> processor",
        s.iter().map(|&(_, from_due)| from_due).collect(),
    );
    print_triggers(&m);
    println!("  (submit -> processor counts from the call to submit; intended -> processor from");
    println!("   when the item was due, so a sender held up by a stall adds its own lateness");
    println!("   instead of hiding it: the coordinated-omission-corrected figure)");
    let per_batch = m.processed as f64 / m.batches().max(1) as f64;
    if m.batches_size == 0 {
        println!(
            "  (no batch filled: {per_batch:.0} items per batch against max_batch_size 512, so every"
        );
        println!(
            "   batch went when its oldest item had waited max_delay (1 ms): an item waits up to"
        );
        println!("   max_delay for company. max_delay(Duration::ZERO) dispatches whatever is pending at once)");
    } else {
        println!(
            "  ({} of {} batches filled up: there, latency is the time a batch takes to fill)",
            m.batches_size,
            m.batches()
        );
    }
    s.len() as u64 == n && m.processed == n
}

fn idle_item() -> bool {
    let delay = Duration::from_millis(5);
    println!("\n3. one idle item, max_delay {delay:?}, nothing after it");
    let (tx, rx) = std::sync::mpsc::channel();
    let batcher = Batcher::builder()
        .max_delay(delay)
        .build(move |batch: &mut Vec<Instant>, info: &BatchInfo| {
            let _ = tx.send((batch[0].elapsed(), info.trigger));
        })
        .unwrap();
    batcher.submit(Instant::now()).unwrap();
    let (waited, trigger) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the time trigger fires");
    let miss = if waited >= delay {
        format!("{:.2?} past it", waited - delay)
    } else {
        format!("{:.2?} before it", delay - waited)
    };
    println!("  dispatched by the {trigger:?} trigger after {waited:.2?}: max_delay is a target, this is {miss}");
    println!(
        "  (the deadline counts from a lower bound on the item's arrival, so it can come early;"
    );
    println!(
        "   the wake-up after a timed park, and on a busy machine the scheduler, make it late)"
    );
    batcher.shutdown();
    trigger == Trigger::Time
}
