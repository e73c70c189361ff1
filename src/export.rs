//! The batcher's counters through the `metrics` facade (feature `metrics`).
//!
//! The flusher registers its handles once, when it starts (so install your
//! recorder before building the batcher), and publishes a snapshot after
//! every batch and at shutdown: nothing is added to the submit path, and
//! nothing is allocated per batch. Every series carries the label
//! `batcher` = the builder's `thread_name`.

use crate::metrics::Metrics;
use metrics::{counter, gauge, Counter, Gauge};

pub(crate) struct Exporter {
    submitted: Counter,
    rejected_full: Counter,
    rejected_timeout: Counter,
    rejected_closed: Counter,
    processed: Counter,
    batches: [Counter; 4],
    errors: Counter,
    panics: Counter,
    wakeups: Counter,
    waits: Counter,
    depth: Gauge,
    capacity: Gauge,
}

impl Exporter {
    pub(crate) fn new(name: &str) -> Self {
        let b = name.to_owned();
        let rejected = |reason: &'static str| counter!("microbatch_rejected_total", "batcher" => b.clone(), "reason" => reason);
        let batches = |trigger: &'static str| counter!("microbatch_batches_total", "batcher" => b.clone(), "trigger" => trigger);
        Exporter {
            submitted: counter!("microbatch_submitted_total", "batcher" => b.clone()),
            rejected_full: rejected("full"),
            rejected_timeout: rejected("timeout"),
            rejected_closed: rejected("closed"),
            processed: counter!("microbatch_processed_total", "batcher" => b.clone()),
            batches: [
                batches("size"),
                batches("time"),
                batches("flush"),
                batches("shutdown"),
            ],
            errors: counter!("microbatch_processor_errors_total", "batcher" => b.clone()),
            panics: counter!("microbatch_processor_panics_total", "batcher" => b.clone()),
            wakeups: counter!("microbatch_flusher_wakeups_total", "batcher" => b.clone()),
            waits: counter!("microbatch_producer_waits_total", "batcher" => b.clone()),
            depth: gauge!("microbatch_queue_depth", "batcher" => b.clone()),
            capacity: gauge!("microbatch_capacity", "batcher" => b),
        }
    }

    pub(crate) fn publish(&self, m: &Metrics) {
        self.submitted.absolute(m.submitted);
        self.rejected_full.absolute(m.rejected_full);
        self.rejected_timeout.absolute(m.rejected_timeout);
        self.rejected_closed.absolute(m.rejected_closed);
        self.processed.absolute(m.processed);
        let by = [
            m.batches_size,
            m.batches_time,
            m.batches_flush,
            m.batches_shutdown,
        ];
        for (c, v) in self.batches.iter().zip(by) {
            c.absolute(v);
        }
        self.errors.absolute(m.processor_errors);
        self.panics.absolute(m.processor_panics);
        self.wakeups.absolute(m.flusher_wakeups);
        self.waits.absolute(m.producer_waits);
        self.depth.set(m.queue_depth as f64);
        self.capacity.set(m.capacity as f64);
    }
}
