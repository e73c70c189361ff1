//! Helpers for the loom models in `tests/`. Every model is tiny (at most 4
//! threads counting the flusher, capacity 1–2, at most 3 items) and runs
//! under [`model`], with the preemption bound taken from
//! `LOOM_MAX_PREEMPTIONS` (CI uses 2). Which protocol each model checks,
//! and which break of it it was seen to catch, is in ARCHITECTURE.md and
//! `mutants/`.
#![cfg(loom)]

use loom::sync::{Condvar, Mutex};
use microbatch::{BatchInfo, Batcher, Builder, Trigger, WaitStrategy};
use std::sync::Arc;
use std::time::Duration;

/// What the processor saw, shared with the test thread.
///
/// Items go into a plain `std` mutex (no loom operation happens while it is
/// held, so it cannot block the model); `processed` is a loom
/// mutex + condvar so a test can wait for the flusher and loom detects the
/// deadlock if it never comes.
#[derive(Default)]
pub struct Seen {
    pub items: std::sync::Mutex<Vec<(u32, Trigger)>>,
    count: Mutex<usize>,
    cv: Condvar,
}

impl Seen {
    pub fn new() -> Arc<Self> {
        Arc::new(Seen {
            items: std::sync::Mutex::new(Vec::new()),
            count: Mutex::new(0),
            cv: Condvar::new(),
        })
    }

    pub fn record(&self, batch: &mut Vec<u32>, info: &BatchInfo) {
        let n = batch.len();
        trace(format!(
            "processor: batch {} {:?} {:?}",
            info.seq, info.trigger, batch
        ));
        self.items
            .lock()
            .unwrap()
            .extend(batch.drain(..).map(|x| (x, info.trigger)));
        *self.count.lock().unwrap() += n;
        self.cv.notify_all();
    }

    /// Blocks until at least `n` items were processed. If the flusher never
    /// gets there (a lost wake-up), every thread is blocked and loom reports
    /// a deadlock.
    pub fn wait_for(&self, n: usize) {
        let mut c = self.count.lock().unwrap();
        while *c < n {
            c = self.cv.wait(c).unwrap();
        }
    }

    pub fn values(&self) -> Vec<u32> {
        self.items.lock().unwrap().iter().map(|(x, _)| *x).collect()
    }

    pub fn triggers(&self) -> Vec<Trigger> {
        self.items.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }
}

/// A builder for the models: one shard unless told, the flusher parks (the
/// protocol worth checking), no time trigger unless told. One lane and the
/// shard (a first producer thread leases the lane, a second one uses the
/// shard), or no lane with `MICROBATCH_MODEL_LANES=0`: CI runs every model
/// both ways, so each protocol is checked over lanes (plain stores, the
/// asymmetric barrier) and over shards alone (the CAS). One lane, not the
/// default two: every queue more multiplies the interleavings of the
/// flusher's reads.
pub fn builder(batch: usize, capacity: usize) -> Builder<u32> {
    let lanes = std::env::var("MICROBATCH_MODEL_LANES").map_or(1, |n| {
        n.parse().expect("MICROBATCH_MODEL_LANES is a number")
    });
    Batcher::builder()
        .lanes(lanes)
        .shards(1)
        .max_batch_size(batch)
        .capacity(capacity)
        .max_delay(Duration::MAX)
        .wait_strategy(WaitStrategy::Park)
}

/// A processor that records into `seen`.
pub fn recorder(seen: &Arc<Seen>) -> impl FnMut(&mut Vec<u32>, &BatchInfo) + Send + 'static {
    let seen = Arc::clone(seen);
    move |batch: &mut Vec<u32>, info: &BatchInfo| seen.record(batch, info)
}

/// The events of the execution being explored (cleared at the start of
/// each one), printed only if it fails.
static TRACE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records an event of the current execution, with the loom thread that
/// made it. Printed only when the execution fails (see [`model`]).
pub fn trace(event: impl Into<String>) {
    let who = format!("{:?}", loom::thread::current().id());
    let mut t = TRACE.lock().unwrap_or_else(|e| e.into_inner());
    t.push(format!("{who}: {}", event.into()));
}

/// Runs a model with the preemption bound from `LOOM_MAX_PREEMPTIONS`
/// (default 2). Each execution starts with an empty trace; when one fails
/// (an assertion, a deadlock, a causality violation), the panic hook prints
/// that execution's trace before loom's own report, so only the failing
/// interleaving is shown (thingbuf's `loom::model` does the same with
/// `tracing`).
pub fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let t = TRACE.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "--- trace of the failing execution ({} events) ---",
                t.len()
            );
            for e in t.iter() {
                eprintln!("  {e}");
            }
            drop(t);
            previous(info);
        }));
    });
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&executions);
    b.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TRACE.lock().unwrap_or_else(|e| e.into_inner()).clear();
        f();
    });
    println!(
        "loom: {} executions explored",
        executions.load(std::sync::atomic::Ordering::Relaxed)
    );
}
