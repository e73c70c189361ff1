//! The batcher's counters through the `metrics` facade (feature `metrics`).
//!
//! A small exporter thread per batcher publishes a snapshot every
//! `metrics_interval` (default 500 ms, the first one interval after
//! `build()`) and once more when the batcher is shut down: nothing is added to the submit path (the flusher adds a few
//! relaxed stores per batch, for the histograms), and the exported series
//! keep moving while a processor stalls (queue depth,
//! rejections, `microbatch_processor_busy_seconds`). The per-batch
//! histograms come from log-scale bucket counters the flusher bumps
//! (`metrics::BatchRecord`); the exporter records each bucket's new
//! samples with `record_many`. Every series is described (unit, help
//! text) at each publish; the README lists them. Handles are looked up
//! from the installed recorder at every publish, so a recorder installed
//! after `build()` is picked up at the next one. Every series carries the
//! label `batcher`: the builder's `thread_name` when one was set, else
//! `microbatch-<n>`, unique per batcher in the process. A panic in the
//! recorder is caught and counted in `Metrics::other_panics`.

use crate::metrics::{trigger_index, BatchRecord, LogBuckets, Metrics, Outcome};
use crate::processor::{call_quietly, Trigger};
use crate::shared::Shared;
use crate::storage::Storage;
use crate::sync::{Arc, Condvar, Mutex};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use std::time::Duration;

/// Every series: name, kind, unit, description (Prometheus conventions:
/// base units, `_total` on counters, items and batches told apart).
const SERIES: &[(&str, Kind, Unit, &str)] = &[
    ("microbatch_items_submitted_total", Kind::Counter, Unit::Count, "Items accepted (submit returned Ok)."),
    ("microbatch_items_processed_total", Kind::Counter, Unit::Count, "Items of batches whose processor returned Ok."),
    ("microbatch_items_failed_total", Kind::Counter, Unit::Count, "Items of batches whose processor returned an error or panicked."),
    ("microbatch_items_discarded_total", Kind::Counter, Unit::Count, "Items a failed batch left, handed to on_discard and dropped."),
    ("microbatch_items_rejected_total", Kind::Counter, Unit::Count, "Items refused at submit, by reason (full, timeout, closed, cancelled, oversize)."),
    ("microbatch_batches_total", Kind::Counter, Unit::Count, "Attempts at batches handed to the processor, by trigger and outcome (ok, error, panic; rewind: a retry was granted)."),
    ("microbatch_retries_total", Kind::Counter, Unit::Count, "Attempts after the first at batches whose processor asked for a rewind."),
    ("microbatch_other_panics_total", Kind::Counter, Unit::Count, "Panics caught outside the processor call (hooks, drops, backends)."),
    ("microbatch_flusher_wakeups_total", Kind::Counter, Unit::Count, "Times a producer, flush or close unparked the sleeping flusher."),
    ("microbatch_producer_waits_total", Kind::Counter, Unit::Count, "Times a producer blocked on a full lane or shard."),
    ("microbatch_heavy_barriers_total", Kind::Counter, Unit::Count, "Process-wide barriers run (at most one per flusher park, one per close)."),
    ("microbatch_barrier_failures_total", Kind::Counter, Unit::Count, "Process-wide barriers the kernel refused after registration (0 in a healthy process)."),
    ("microbatch_batches_oversize_total", Kind::Counter, Unit::Count, "Batches of one item heavier than the weight limit, sent alone."),
    ("microbatch_items_processed_weight_total", Kind::Counter, Unit::Count, "Total weight (by the weigher) of the items of batches whose processor returned Ok."),
    ("microbatch_queue_depth", Kind::Gauge, Unit::Count, "Items accepted and not yet taken by the flusher."),
    ("microbatch_queue_capacity", Kind::Gauge, Unit::Count, "Items the lanes and shards can hold in all."),
    ("microbatch_lanes_leased", Kind::Gauge, Unit::Count, "Single-writer lanes leased now, of microbatch_lanes."),
    ("microbatch_lanes", Kind::Gauge, Unit::Count, "Single-writer lanes the batcher has."),
    ("microbatch_items_in_flight", Kind::Gauge, Unit::Count, "Items in the batch the processor is working on."),
    ("microbatch_processor_busy_seconds", Kind::Gauge, Unit::Seconds, "How long the processor has been in the current batch; 0 between batches."),
    ("microbatch_batch_size_items", Kind::Histogram, Unit::Count, "Items per batch."),
    ("microbatch_processor_duration_seconds", Kind::Histogram, Unit::Seconds, "Time in the processor per batch."),
    ("microbatch_batch_oldest_wait_seconds", Kind::Histogram, Unit::Seconds, "How long each batch's oldest item had waited, from its submit to the processor (counted from a bound below its arrival, so it errs long)."),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers every series' unit and description with the installed
/// recorder (again at each publish: a recorder installed late gets them).
fn describe() {
    for &(name, kind, unit, text) in SERIES {
        match kind {
            Kind::Counter => describe_counter!(name, unit, text),
            Kind::Gauge => describe_gauge!(name, unit, text),
            Kind::Histogram => describe_histogram!(name, unit, text),
        }
    }
}

/// The bucket counts the exporter last turned into histogram samples.
struct Seen {
    sizes: Vec<u64>,
    processor_ns: Vec<u64>,
    oldest_wait_ns: Vec<u64>,
}

impl Seen {
    fn new() -> Self {
        let z = || vec![0; LogBuckets::LEN];
        Seen {
            sizes: z(),
            processor_ns: z(),
            oldest_wait_ns: z(),
        }
    }
}

/// Records, into `histogram`, the values of the buckets that moved since
/// `seen` (scaled by `scale`), and remembers the new counts.
fn record_new(h: &metrics::Histogram, buckets: &LogBuckets, seen: &mut [u64], scale: f64) {
    for (i, (now, last)) in buckets.counts().zip(seen.iter_mut()).enumerate() {
        if now > *last {
            h.record_many(LogBuckets::value(i) * scale, (now - *last) as usize);
            *last = now;
        }
    }
}

/// Publishes one snapshot under `label`.
fn publish(label: &str, m: &Metrics, record: &BatchRecord, seen: &mut Seen) {
    describe();
    let b = label.to_owned();
    let set = |name: &'static str, v: u64| counter!(name, "batcher" => b.clone()).absolute(v);
    set("microbatch_items_submitted_total", m.submitted);
    set("microbatch_items_processed_total", m.processed);
    set("microbatch_items_failed_total", m.failed);
    set("microbatch_items_discarded_total", m.discarded);
    set("microbatch_other_panics_total", m.other_panics);
    set("microbatch_flusher_wakeups_total", m.flusher_wakeups);
    set("microbatch_producer_waits_total", m.producer_waits);
    set("microbatch_heavy_barriers_total", m.heavy_barriers);
    set("microbatch_barrier_failures_total", m.barrier_failures);
    set("microbatch_batches_oversize_total", m.batches_oversize);
    set("microbatch_retries_total", m.retries);
    set(
        "microbatch_items_processed_weight_total",
        m.processed_weight,
    );
    for (reason, v) in [
        ("full", m.rejected_full),
        ("timeout", m.rejected_timeout),
        ("closed", m.rejected_closed),
        ("cancelled", m.rejected_cancelled),
        ("oversize", m.rejected_oversize),
    ] {
        counter!("microbatch_items_rejected_total", "batcher" => b.clone(), "reason" => reason)
            .absolute(v);
    }
    for trigger in [
        Trigger::Size,
        Trigger::Time,
        Trigger::Flush,
        Trigger::Shutdown,
        Trigger::Weight,
    ] {
        for outcome in Outcome::ALL {
            let v = record.outcomes[trigger_index(trigger)][outcome as usize]
                .load(std::sync::atomic::Ordering::Relaxed);
            counter!(
                "microbatch_batches_total",
                "batcher" => b.clone(),
                "trigger" => trigger_label(trigger),
                "outcome" => outcome.label()
            )
            .absolute(v);
        }
    }
    gauge!("microbatch_queue_depth", "batcher" => b.clone()).set(m.queue_depth as f64);
    gauge!("microbatch_queue_capacity", "batcher" => b.clone()).set(m.capacity as f64);
    gauge!("microbatch_lanes_leased", "batcher" => b.clone()).set(m.lanes_leased as f64);
    gauge!("microbatch_lanes", "batcher" => b.clone()).set(m.lanes as f64);
    gauge!("microbatch_items_in_flight", "batcher" => b.clone()).set(m.in_flight as f64);
    gauge!("microbatch_processor_busy_seconds", "batcher" => b.clone())
        .set(m.processor_busy_for.as_secs_f64());
    let h = |name: &'static str| histogram!(name, "batcher" => b.clone());
    record_new(
        &h("microbatch_batch_size_items"),
        &record.sizes,
        &mut seen.sizes,
        1.0,
    );
    record_new(
        &h("microbatch_processor_duration_seconds"),
        &record.processor_ns,
        &mut seen.processor_ns,
        1e-9,
    );
    record_new(
        &h("microbatch_batch_oldest_wait_seconds"),
        &record.oldest_wait_ns,
        &mut seen.oldest_wait_ns,
        1e-9,
    );
}

fn trigger_label(t: Trigger) -> &'static str {
    match t {
        Trigger::Size => "size",
        Trigger::Time => "time",
        Trigger::Flush => "flush",
        Trigger::Shutdown => "shutdown",
        Trigger::Weight => "weight",
    }
}

/// The exporter thread of one batcher; stopped (with a last publish) by
/// [`Exporter::stop`] or on drop.
pub(crate) struct Exporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    pub(crate) fn spawn<T: Send + 'static, S: Storage<T> + 'static>(
        shared: Arc<Shared<T, S>>,
        label: String,
        every: Duration,
        thread_name: String,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = Arc::clone(&stop);
        // Made here, not on the new thread: a thread that starts late (it
        // may, under a sanitizer or a busy scheduler) must not allocate in
        // the batcher's steady state.
        let mut seen = Seen::new();
        // The build returns only once the thread runs our code: the
        // standard library's start of a thread allocates on the new thread
        // (26 bytes: tests/alloc.rs failed 12 runs in 200 with the CPUs
        // busy, 0 in 200 since), which must not land in the batcher's
        // steady state either.
        let started = Arc::new(std::sync::Barrier::new(2));
        let ready = Arc::clone(&started);
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                ready.wait();
                drop(ready);
                let (lock, cv) = &*s;
                let mut stopped = lock.lock();
                loop {
                    // The first publish comes one interval after the build
                    // (or at the stop): nothing is allocated for export
                    // while a short-lived batcher starts. The wait is
                    // measured against the clock, not taken as one
                    // `wait_timeout`: a condvar may wake spuriously, and a
                    // publish on every such wake-up allocated inside a
                    // window meant to have none (seen as a rare failure of
                    // tests/alloc.rs under AddressSanitizer).
                    let due = std::time::Instant::now().checked_add(every);
                    while !*stopped {
                        let now = std::time::Instant::now();
                        stopped = match due {
                            Some(at) if now >= at => break,
                            Some(at) => cv.wait_timeout(stopped, at - now),
                            None => cv.wait(stopped),
                        };
                    }
                    let done = *stopped;
                    drop(stopped);
                    let m = shared.metrics();
                    let record = shared.stats().batch_record();
                    if call_quietly(|| publish(&label, &m, record, &mut seen)).is_none() {
                        shared.stats().count_export_panic();
                    }
                    if done {
                        return;
                    }
                    stopped = lock.lock();
                }
            })?;
        started.wait();
        Ok(Exporter {
            stop,
            handle: Some(handle),
        })
    }

    /// Publishes a last snapshot and ends the thread (joined unless this is
    /// the exporter thread itself).
    pub(crate) fn stop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock() = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}
