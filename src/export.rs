//! The batcher's counters through the `metrics` facade (feature `metrics`).
//!
//! A small exporter thread per batcher publishes a snapshot every
//! `metrics_interval` (default 500 ms) and once more when the batcher is
//! shut down: nothing is added to the submit path or to the flusher, and the
//! exported series keep moving while a processor stalls (queue depth,
//! rejections, `microbatch_processor_busy_seconds`). Handles are looked up
//! from the installed recorder at every publish, so a recorder installed
//! after `build()` is picked up at the next one. Every series carries the
//! label `batcher`: the builder's `thread_name` when one was set, else
//! `microbatch-<n>`, unique per batcher in the process. A panic in the
//! recorder is caught and counted in `Metrics::other_panics`.

use crate::metrics::Metrics;
use crate::processor::call_quietly;
use crate::shared::Shared;
use crate::storage::Storage;
use crate::sync::{Arc, Condvar, Mutex};
use metrics::{counter, gauge};
use std::time::Duration;

/// Publishes one snapshot under `label`.
fn publish(label: &str, m: &Metrics) {
    let b = label.to_owned();
    let set = |name: &'static str, v: u64| counter!(name, "batcher" => b.clone()).absolute(v);
    set("microbatch_submitted_total", m.submitted);
    set("microbatch_processed_total", m.processed);
    set("microbatch_failed_total", m.failed);
    set("microbatch_discarded_total", m.discarded);
    set("microbatch_processor_errors_total", m.processor_errors);
    set("microbatch_processor_panics_total", m.processor_panics);
    set("microbatch_other_panics_total", m.other_panics);
    set("microbatch_flusher_wakeups_total", m.flusher_wakeups);
    set("microbatch_producer_waits_total", m.producer_waits);
    for (reason, v) in [
        ("full", m.rejected_full),
        ("timeout", m.rejected_timeout),
        ("closed", m.rejected_closed),
        ("cancelled", m.rejected_cancelled),
    ] {
        counter!("microbatch_rejected_total", "batcher" => b.clone(), "reason" => reason)
            .absolute(v);
    }
    for (trigger, v) in [
        ("size", m.batches_size),
        ("time", m.batches_time),
        ("flush", m.batches_flush),
        ("shutdown", m.batches_shutdown),
    ] {
        counter!("microbatch_batches_total", "batcher" => b.clone(), "trigger" => trigger)
            .absolute(v);
    }
    gauge!("microbatch_queue_depth", "batcher" => b.clone()).set(m.queue_depth as f64);
    gauge!("microbatch_in_flight", "batcher" => b.clone()).set(m.in_flight as f64);
    gauge!("microbatch_capacity", "batcher" => b.clone()).set(m.capacity as f64);
    gauge!("microbatch_processor_busy_seconds", "batcher" => b)
        .set(m.processor_busy_for.as_secs_f64());
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
        let handle = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock();
                loop {
                    let done = *stopped;
                    drop(stopped);
                    let m = shared.metrics();
                    if call_quietly(|| publish(&label, &m)).is_none() {
                        shared.stats().count_export_panic();
                    }
                    if done {
                        return;
                    }
                    stopped = lock.lock();
                    if !*stopped {
                        stopped = cv.wait_timeout(stopped, every);
                    }
                }
            })?;
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
