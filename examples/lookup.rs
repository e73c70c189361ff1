//! Request/response batching with per-item results: batched lookups.
//!
//! Client threads each look up keys in a table that is expensive to reach
//! per request (a simulated round trip of 20 µs, like a database or a remote
//! cache) but cheap per key once there. Each client submits its key with
//! `submit_tracked` and waits on the ticket for its own answer; the
//! processor does one round trip per batch and answers every job — found,
//! or an error for a missing key. The same lookups done one round trip each
//! run in the same process for comparison, and every answer is checked.
//!
//! ```text
//! cargo run --release --example lookup             # ~2 s
//! cargo run --release --example lookup -- --quick  # smoke (CI)
//! ```

use microbatch::{BatchInfo, Batcher, Job, JobError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUND_TRIP: Duration = Duration::from_micros(20);
const CLIENTS: u64 = 32;

/// The remote table: a fixed cost per visit, then cheap per key.
struct Table(HashMap<u64, String>);

impl Table {
    fn new() -> Self {
        // Every key but multiples of 7 exists.
        Table(
            (0..100_000u64)
                .filter(|k| k % 7 != 0)
                .map(|k| (k, format!("user-{k}")))
                .collect(),
        )
    }

    fn visit<R>(&self, f: impl FnOnce(&HashMap<u64, String>) -> R) -> R {
        let until = Instant::now() + ROUND_TRIP;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        f(&self.0)
    }
}

type Lookup = Job<u64, String, String>;

fn check(key: u64, answer: Result<String, JobError<String>>) {
    if key.is_multiple_of(7) {
        assert_eq!(answer, Err(JobError::Failed(format!("no user {key}"))));
    } else {
        assert_eq!(answer, Ok(format!("user-{key}")));
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let per_client: u64 = if quick { 50 } else { 1_500 };
    let table = Arc::new(Table::new());

    let t = Arc::clone(&table);
    let batcher = Batcher::builder()
        .max_batch_size(64)
        .max_delay(Duration::from_micros(200))
        .build_tracked(move |jobs: &mut Vec<Lookup>, _: &BatchInfo| {
            t.visit(|rows| {
                for job in jobs.iter_mut() {
                    let key = *job.input();
                    let answer = rows
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| format!("no user {key}"));
                    job.complete(answer);
                }
            })
        })
        .unwrap();

    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let b = &batcher;
            s.spawn(move || {
                for i in 0..per_client {
                    let key = (c * 7919 + i * 31) % 100_000;
                    let ticket = b.submit_tracked(key).expect("open batcher");
                    check(key, ticket.wait());
                }
            });
        }
    });
    let batched = start.elapsed();
    let m = batcher.shutdown();
    let n = CLIENTS * per_client;

    // The same lookups, one round trip each (clients share the table's one
    // connection, as the batcher does).
    let conn = std::sync::Mutex::new(());
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (table, conn) = (&table, &conn);
            s.spawn(move || {
                for i in 0..per_client / 10 {
                    let key = (c * 7919 + i * 31) % 100_000;
                    let _one_connection = conn.lock().unwrap();
                    let answer = table.visit(|rows| {
                        rows.get(&key)
                            .cloned()
                            .ok_or_else(|| format!("no user {key}"))
                    });
                    check(key, answer.map_err(JobError::Failed));
                }
            });
        }
    });
    let single = start.elapsed();
    let n_single = CLIENTS * (per_client / 10);

    println!(
        "batched lookups: {CLIENTS} client threads, one {ROUND_TRIP:?} round trip per batch\n"
    );
    println!(
        "  batched:    {n:>6} lookups in {batched:>9.2?}: {:>8.0}/s, {} round trips (avg batch {:.1}), every answer checked",
        n as f64 / batched.as_secs_f64(),
        m.batches(),
        n as f64 / m.batches() as f64
    );
    println!(
        "  one by one: {n_single:>6} lookups in {single:>9.2?}: {:>8.0}/s, {n_single} round trips",
        n_single as f64 / single.as_secs_f64()
    );
    println!(
        "  batching gives {:.1}x the lookups per second",
        (n as f64 / batched.as_secs_f64()) / (n_single as f64 / single.as_secs_f64())
    );
}
