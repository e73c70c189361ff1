//! An order journal with group commit.
//!
//! Trading threads append order events; the processor writes each batch to a
//! real file with one `write` and one `fsync` (group commit), so the cost of
//! durability is paid once per batch instead of once per event. In the same
//! run, the same events are journaled the naive way — one write and one
//! `fsync` per event under a mutex — and the two are compared: events/s and
//! commit latency (submit to fsync done) p50 / p99.
//!
//! The disk is made to fail now and then (every 7th batch, half way through
//! its write: a transient `EIO`). The processor keeps what it wrote and
//! durably synced, takes those events out of the batch and returns a
//! [`Rewind`]: under the [`Retry`] policy the rest comes again after a
//! backoff, alone, in order. After shutdown the journal is reopened and
//! verified: every event whose submit returned `Ok` is there exactly once,
//! in its thread's order, failures and all.
//!
//! ```text
//! cargo run --release --example order_journal             # ~3 s
//! cargo run --release --example order_journal -- --quick  # smoke (CI)
//! ```

use microbatch::{BatchInfo, Batcher, Metrics, Retry, Rewind};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One order event. Serialised as a fixed-width text line so the journal is
/// human-readable and easy to verify.
#[derive(Clone, Copy)]
struct OrderEvent {
    thread: u16,
    seq: u64,
    price_ticks: i64,
    qty: u32,
    /// When the event was submitted, for the commit-latency figure.
    submitted_at: Instant,
}

/// The length of an event's line, newline included.
const LINE: usize = 4 + 1 + 12 + 1 + 12 + 1 + 8 + 1;

impl OrderEvent {
    fn write_line(&self, out: &mut Vec<u8>) {
        writeln!(
            out,
            "{:04} {:012} {:+012} {:08}",
            self.thread, self.seq, self.price_ticks, self.qty
        )
        .unwrap();
    }
}

fn percentile(v: &mut [u64], p: f64) -> Duration {
    v.sort_unstable();
    Duration::from_nanos(v[((v.len() - 1) as f64 * p) as usize])
}

/// A disk that fails now and then: every `every`-th batch's first attempt
/// gets a transient error half way through its write.
struct FlakyDisk {
    file: File,
    every: u64,
    failures: u64,
}

impl FlakyDisk {
    /// Writes and syncs the events of `lines` (one line each, `len` bytes
    /// per line); returns how many are durably written, and the error that
    /// stopped it, if one did.
    fn write_synced(
        &mut self,
        lines: &[u8],
        len: usize,
        info: &BatchInfo,
    ) -> (usize, Option<std::io::Error>) {
        let events = lines.len() / len;
        if info.attempt == 1 && info.seq % self.every == self.every - 1 && events > 1 {
            let half = events / 2;
            let ok = self
                .file
                .write_all(&lines[..half * len])
                .and_then(|()| self.file.sync_data());
            self.failures += 1;
            return match ok {
                Ok(()) => (
                    half,
                    Some(std::io::Error::other("EIO (injected, transient)")),
                ),
                Err(e) => (0, Some(e)),
            };
        }
        match self
            .file
            .write_all(lines)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => (events, None),
            Err(e) => (0, Some(e)),
        }
    }
}

/// Group commit: one write + one fsync per batch; a failed write is retried
/// for the events it did not get to disk.
fn run_batched(path: &Path, threads: u16, per_thread: u64) -> (Duration, Vec<u64>, Metrics, u64) {
    let file = File::create(path).expect("create journal");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let lat = Arc::clone(&latencies);
    let failures = Arc::new(Mutex::new(0));
    let fails = Arc::clone(&failures);
    let mut buf = Vec::with_capacity(512 * 48);
    let mut disk = FlakyDisk {
        file,
        every: 7,
        failures: 0,
    };
    let batcher = Batcher::builder()
        .max_batch_size(512)
        .max_delay(Duration::from_millis(2))
        .retry(Retry::attempts(5).backoff(Duration::from_millis(1), Duration::from_millis(20)))
        .build(
            move |batch: &mut Vec<OrderEvent>, info: &BatchInfo| -> Result<(), Rewind> {
                buf.clear();
                for e in batch.iter() {
                    e.write_line(&mut buf);
                }
                let (written, error) = disk.write_synced(&buf, LINE, info);
                *fails.lock().unwrap() = disk.failures;
                // What is on disk is committed: out of the batch, so a retry
                // presents only the rest.
                let done = Instant::now();
                lat.lock().unwrap().extend(
                    batch
                        .drain(..written)
                        .map(|e| (done - e.submitted_at).as_nanos() as u64),
                );
                match error {
                    None => Ok(()),
                    Some(e) => Err(Rewind::new(e)),
                }
            },
        )
        .unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let b = &batcher;
            s.spawn(move || {
                for seq in 0..per_thread {
                    let e = OrderEvent {
                        thread: t,
                        seq,
                        price_ticks: 10_000 + (seq as i64 % 50) - 25,
                        qty: 1 + (seq % 100) as u32,
                        submitted_at: Instant::now(),
                    };
                    b.submit(e).expect("open journal");
                }
            });
        }
    });
    let m = batcher.shutdown();
    let elapsed = start.elapsed();
    assert_eq!(
        (m.processor_errors, m.failed),
        (0, 0),
        "journal writes failed for good"
    );
    let lat = std::mem::take(&mut *latencies.lock().unwrap());
    let failures = *failures.lock().unwrap();
    (elapsed, lat, m, failures)
}

/// Naive: one write + one fsync per event, under a mutex.
fn run_per_event(path: &Path, threads: u16, per_thread: u64) -> (Duration, Vec<u64>) {
    let file = Mutex::new(File::create(path).expect("create journal"));
    let latencies = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (file, latencies) = (&file, &latencies);
            s.spawn(move || {
                let mut line = Vec::with_capacity(48);
                for seq in 0..per_thread {
                    let e = OrderEvent {
                        thread: t,
                        seq,
                        price_ticks: 10_000,
                        qty: 1,
                        submitted_at: Instant::now(),
                    };
                    line.clear();
                    e.write_line(&mut line);
                    let mut f = file.lock().unwrap();
                    f.write_all(&line).unwrap();
                    f.sync_data().unwrap();
                    drop(f);
                    latencies
                        .lock()
                        .unwrap()
                        .push(e.submitted_at.elapsed().as_nanos() as u64);
                }
            });
        }
    });
    (start.elapsed(), latencies.into_inner().unwrap())
}

/// Reopens the journal: every event present once, each thread in order.
fn verify(path: &Path, threads: u16, per_thread: u64) -> u64 {
    let mut next = vec![0u64; threads as usize];
    let mut lines = 0;
    for line in BufReader::new(File::open(path).unwrap()).lines() {
        let line = line.unwrap();
        let mut f = line.split_whitespace();
        let t: usize = f.next().unwrap().parse().unwrap();
        let seq: u64 = f.next().unwrap().parse().unwrap();
        assert_eq!(
            seq, next[t],
            "thread {t}: event {seq} out of order or duplicated (expected {})",
            next[t]
        );
        next[t] += 1;
        lines += 1;
    }
    assert!(
        next.iter().all(|&n| n == per_thread),
        "missing events: {next:?}"
    );
    lines
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads: u16 = 4;
    let (batched_n, naive_n) = if quick { (2_000, 50) } else { (50_000, 500) };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("microbatch-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let journal = dir.join("orders.journal");
    let naive = dir.join("orders-naive.journal");

    println!("order journal: {threads} threads, group commit (write + fsync per batch) vs fsync per event\n");
    let (t1, mut lat1, m, failures) = run_batched(&journal, threads, batched_n);
    let n1 = threads as u64 * batched_n;
    println!(
        "  group commit:  {n1:>7} events in {t1:>8.2?}: {:>9.0} events/s, {} fsyncs; commit latency p50 {:.2?}, p99 {:.2?}",
        n1 as f64 / t1.as_secs_f64(),
        m.batches() + m.retries,
        percentile(&mut lat1, 0.5),
        percentile(&mut lat1, 0.99)
    );
    println!(
        "                 {failures} writes failed half way ({} batches); {} retries wrote the rest: {} processed, {} failed",
        m.batches(),
        m.retries,
        m.processed,
        m.failed
    );
    assert_eq!(m.retries, failures, "each injected failure retried once");
    let (t2, mut lat2) = run_per_event(&naive, threads, naive_n);
    let n2 = threads as u64 * naive_n;
    println!(
        "  per event:     {n2:>7} events in {t2:>8.2?}: {:>9.0} events/s, {n2} fsyncs; commit latency p50 {:.2?}, p99 {:.2?}",
        n2 as f64 / t2.as_secs_f64(),
        percentile(&mut lat2, 0.5),
        percentile(&mut lat2, 0.99)
    );
    println!(
        "  group commit is {:.0}x the events/s of fsync-per-event",
        (n1 as f64 / t1.as_secs_f64()) / (n2 as f64 / t2.as_secs_f64())
    );
    let lines = verify(&journal, threads, batched_n);
    println!("  reopened the journal: {lines} events, each exactly once, every thread in order");
    verify(&naive, threads, naive_n);
    std::fs::remove_dir_all(&dir).ok();
}
