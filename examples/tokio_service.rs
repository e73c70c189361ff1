//! A tokio service: request handlers (tasks) that batch their lookups and
//! await each answer, telemetry that is dropped rather than waited for
//! under overload, and a graceful shutdown with a deadline.
//!
//! ```text
//! cargo run --release --example tokio_service            # about 2 seconds
//! cargo run --release --example tokio_service -- --quick # CI
//! ```
//!
//! - **Lookups** (a tracked batcher): each handler task submits its key with
//!   `submit_tracked_async` (waiting for room without blocking a runtime
//!   thread) and awaits its `Ticket`: one round trip to the "database" per
//!   batch, one answer per request.
//! - **Telemetry** (`Backpressure::Reject`): handlers record an event with
//!   `try_submit`, which never waits; when the sink falls behind, events
//!   come back and are counted, and the handler moves on.
//! - **Shutdown**: after the run the service stops taking requests, lets
//!   the handlers in flight finish, then `shutdown_async` under
//!   `tokio::time::timeout`: every accepted lookup is answered and every
//!   accepted event written, or the timeout says what was left.
//!
//! The flushers are the batchers' own threads; nothing here blocks a tokio
//! worker.

use microbatch::{Backpressure, BatchInfo, Batcher, Job};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lookup: a key in, its value out ("the database" computes it).
fn value_of(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let run_for = Duration::from_millis(if quick { 200 } else { 2_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let ok = runtime.block_on(service(run_for));
    if !ok {
        eprintln!("A CHECK FAILED");
        std::process::exit(1);
    }
    println!(
        "all checks passed: every accepted lookup answered correctly, every accepted event written"
    );
}

/// Closes `batcher` and waits at most `deadline` for its flusher to
/// process everything accepted; `None` (and what was left) if it did not.
async fn shut_down<T: Send + 'static>(
    what: &str,
    batcher: &Batcher<T>,
    deadline: Duration,
) -> Option<microbatch::Metrics> {
    match tokio::time::timeout(deadline, batcher.shutdown_async()).await {
        Ok(Ok(m)) => Some(m),
        Ok(Err(e)) => panic!("{what}: shutdown: {e}"),
        Err(_) => {
            eprintln!(
                "{what}: not drained within {deadline:?}: {:?}",
                batcher.metrics()
            );
            None
        }
    }
}

async fn service(run_for: Duration) -> bool {
    // Lookups: one round trip per batch, at most 2 ms wait. The batch size
    // fits the concurrency: 64 handlers each waiting for its answer never
    // fill a batch of more than 64, so a larger size would make every
    // request wait out `max_delay`.
    let round_trips = Arc::new(AtomicU64::new(0));
    let trips = Arc::clone(&round_trips);
    let lookups = Arc::new(
        Batcher::builder()
            .max_batch_size(32)
            .max_delay(Duration::from_millis(2))
            .thread_name("lookups")
            .build_tracked(
                move |jobs: &mut Vec<Job<u64, u64, String>>, _: &BatchInfo| {
                    trips.fetch_add(1, Ordering::Relaxed);
                    for job in jobs.iter_mut() {
                        let v = value_of(*job.input());
                        job.complete(Ok(v));
                    }
                },
            )
            .expect("valid lookup configuration"),
    );

    // Telemetry: a deliberately slow sink with little room, so that under
    // load some events are refused (and counted) instead of waited for.
    let written = Arc::new(AtomicU64::new(0));
    let w = Arc::clone(&written);
    let telemetry = Arc::new(
        Batcher::builder()
            .max_batch_size(64)
            .capacity(64)
            .shards(1)
            .backpressure(Backpressure::Reject)
            .thread_name("telemetry")
            .build(move |events: &mut Vec<(u64, Duration)>, _: &BatchInfo| {
                std::thread::sleep(Duration::from_micros(100)); // the sink's write
                w.fetch_add(events.len() as u64, Ordering::Relaxed);
                events.clear();
            })
            .expect("valid telemetry configuration"),
    );

    // The service: 64 handler tasks taking requests until told to stop.
    let stopping = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let (dropped_events, attempted_events) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut handlers = Vec::new();
    for task in 0..64u64 {
        let (lookups, telemetry) = (Arc::clone(&lookups), Arc::clone(&telemetry));
        let (stopping, answered, wrong) = (
            Arc::clone(&stopping),
            Arc::clone(&answered),
            Arc::clone(&wrong),
        );
        let (dropped, attempted) = (Arc::clone(&dropped_events), Arc::clone(&attempted_events));
        handlers.push(tokio::spawn(async move {
            let mut request = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let key = task << 32 | request;
                request += 1;
                let t0 = Instant::now();
                // Wait for room if the batcher is full, then for the answer.
                let ticket = match lookups.submit_tracked_async(key).await {
                    Ok(ticket) => ticket,
                    Err(e) => panic!("the lookup batcher refused a request while open: {e}"),
                };
                match ticket.await {
                    Ok(v) if v == value_of(key) => answered.fetch_add(1, Ordering::Relaxed),
                    _ => wrong.fetch_add(1, Ordering::Relaxed),
                };
                // Telemetry never holds a request up: a refused event is
                // counted and dropped.
                attempted.fetch_add(1, Ordering::Relaxed);
                if telemetry.try_submit((key, t0.elapsed())).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    tokio::time::sleep(run_for).await;

    // Graceful shutdown: stop taking requests, let the handlers in flight
    // finish (each awaits its answer), then close both batchers and wait
    // for their flushers, at most 5 s.
    stopping.store(true, Ordering::Relaxed);
    for h in handlers {
        h.await.expect("a handler panicked");
    }
    let deadline = Duration::from_secs(5);
    let (Some(lookup_report), Some(telemetry_report)) = (
        shut_down("lookups", &lookups, deadline).await,
        shut_down("telemetry", &telemetry, deadline).await,
    ) else {
        return false;
    };
    let elapsed = started.elapsed();

    let answered = answered.load(Ordering::Relaxed);
    let trips = round_trips.load(Ordering::Relaxed);
    println!("tokio service, 64 handler tasks on 2 runtime threads, {elapsed:.2?}");
    println!(
        "lookups:   {answered} answered in {trips} round trips ({:.1} keys per trip), {} wrong; {:.0} lookups/s",
        answered as f64 / trips.max(1) as f64,
        wrong.load(Ordering::Relaxed),
        answered as f64 / elapsed.as_secs_f64()
    );
    let attempted = attempted_events.load(Ordering::Relaxed);
    let dropped = dropped_events.load(Ordering::Relaxed);
    println!(
        "telemetry: {attempted} events, {} written, {dropped} dropped: the sink is slower than the service, and under Reject nobody waits for it",
        written.load(Ordering::Relaxed)
    );

    let mut ok = true;
    let mut check = |what: &str, good: bool| {
        if !good {
            eprintln!("check failed: {what}");
            ok = false;
        }
    };
    check("no wrong answers", wrong.load(Ordering::Relaxed) == 0);
    check(
        "every accepted lookup answered",
        lookup_report.processed == answered && lookup_report.submitted == answered,
    );
    check(
        "nothing left in the lookup batcher",
        lookup_report.queue_depth == 0 && lookup_report.in_flight == 0,
    );
    check(
        "events: accepted + refused = attempted",
        telemetry_report.submitted + telemetry_report.rejected() == attempted,
    );
    check(
        "every refused event counted",
        telemetry_report.rejected_full == dropped,
    );
    check(
        "every accepted event written",
        written.load(Ordering::Relaxed) == telemetry_report.submitted
            && telemetry_report.processed == telemetry_report.submitted,
    );
    ok
}
