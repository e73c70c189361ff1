//! Helpers shared by the integration tests.
#![allow(dead_code)]

use microbatch::{BatchInfo, Trigger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// The longest any test waits for an event before failing with a message.
/// Generous: the machine is shared and noisy; a healthy run takes
/// milliseconds, a hang fails here instead of wedging CI.
pub const BOUND: Duration = Duration::from_secs(20);

/// An item that counts its drops, so loss and duplication are visible.
#[derive(Debug)]
pub struct DropCounted {
    pub producer: u32,
    pub seq: u64,
    drops: Arc<AtomicU64>,
}

impl DropCounted {
    pub fn new(producer: u32, seq: u64, drops: &Arc<AtomicU64>) -> Self {
        DropCounted {
            producer,
            seq,
            drops: Arc::clone(drops),
        }
    }

    /// An item whose only job is to count its drop.
    pub fn counting(drops: &Arc<AtomicU64>) -> Self {
        DropCounted::new(0, 0, drops)
    }
}

impl Drop for DropCounted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The receiving end of [`channel_processor`].
pub type Batches<T> = mpsc::Receiver<(Vec<T>, BatchInfo)>;

/// A processor that sends every batch (items and info) down a channel.
pub fn channel_processor<T: Send + 'static>() -> (
    impl FnMut(&mut Vec<T>, &BatchInfo) + Send + 'static,
    Batches<T>,
) {
    let (tx, rx) = mpsc::channel();
    let p = move |batch: &mut Vec<T>, info: &BatchInfo| {
        let _ = tx.send((std::mem::take(batch), *info));
    };
    (p, rx)
}

/// Receives one batch or fails the test after `BOUND`.
pub fn recv<T>(rx: &mpsc::Receiver<(Vec<T>, BatchInfo)>, what: &str) -> (Vec<T>, BatchInfo) {
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|e| panic!("no batch within {BOUND:?} waiting for {what}: {e}"))
}

/// Receives batches until `n` items have arrived, or fails after `BOUND`.
pub fn recv_items<T>(
    rx: &mpsc::Receiver<(Vec<T>, BatchInfo)>,
    n: usize,
    what: &str,
) -> Vec<(T, Trigger)> {
    let mut out = Vec::new();
    while out.len() < n {
        let (batch, info) = recv(rx, what);
        out.extend(batch.into_iter().map(|x| (x, info.trigger)));
    }
    out
}

/// Waits until producers of `batcher` have blocked `times` times in all
/// (`Metrics::producer_waits` counts each time a producer blocks on a full
/// queue), failing after [`BOUND`].
pub fn wait_for_blocked<T, S: microbatch::Storage<T>>(
    batcher: &microbatch::Batcher<T, S>,
    times: u64,
) {
    let t = std::time::Instant::now();
    loop {
        let waits = batcher.metrics().producer_waits;
        if waits >= times {
            return;
        }
        assert!(
            t.elapsed() < BOUND,
            "producers blocked {waits} times within {BOUND:?}, not {times}"
        );
        std::thread::yield_now();
    }
}

/// A gate a processor can wait on, opened by the test (no sleeps).
#[derive(Clone, Default)]
pub struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn wait(&self) {
        let (open, cv) = &*self.0;
        let (_g, res) = cv
            .wait_timeout_while(open.lock().unwrap(), BOUND, |o| !*o)
            .unwrap();
        assert!(!res.timed_out(), "gate not opened within {BOUND:?}");
    }
    pub fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl Gate {
    /// A processor that holds each batch at this gate, then empties it.
    pub fn processor<T>(&self) -> impl FnMut(&mut Vec<T>, &BatchInfo) + Send + 'static {
        let g = self.clone();
        move |batch: &mut Vec<T>, _: &BatchInfo| {
            g.wait();
            batch.clear();
        }
    }
}

/// With a processor held at a gate and one shard of capacity `n` (batch
/// size `n`): submits `n` items and waits until the processor holds them,
/// then `n` more, which fill the shard behind it.
pub fn hold_a_batch_and_fill<T, S: microbatch::Storage<T>>(
    batcher: &microbatch::Batcher<T, S>,
    n: usize,
    item: impl Fn(usize) -> T,
) {
    for i in 0..n {
        assert!(
            batcher.submit(item(i)).is_ok(),
            "item {i} of the held batch"
        );
    }
    while batcher.metrics().in_flight < n as u64 {
        std::thread::yield_now();
    }
    for i in n..2 * n {
        assert!(
            batcher.submit(item(i)).is_ok(),
            "item {i} filling the shard"
        );
    }
}

/// Runs `f` on a thread and fails the test if it does not finish within
/// `BOUND` (a hang becomes a failure with a message, not a stuck CI).
pub fn bounded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}
