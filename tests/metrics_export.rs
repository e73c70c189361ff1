//! Feature `metrics`: the batcher's counters reach a `metrics` recorder.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use microbatch::{Backpressure, BatchInfo, Batcher};

#[test]
fn counters_reach_the_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder in this test binary");

    let batcher = Batcher::builder()
        .thread_name("orders")
        .max_batch_size(10)
        .capacity(10)
        .shards(1)
        .backpressure(Backpressure::Reject)
        .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
        .unwrap();
    for i in 0..95 {
        let _ = batcher.submit(i);
    }
    batcher.close();
    let _ = batcher.submit(1000);
    let report = batcher.shutdown();

    let snap = snapshotter.snapshot().into_vec();
    let value = |name: &str, label: Option<(&str, &str)>| {
        snap.iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "batcher" && l.value() == "orders")
                    && label.map_or(true, |(lk, lv)| {
                        k.key().labels().any(|l| l.key() == lk && l.value() == lv)
                    })
            })
            .map(|(k, _, _, v)| (k.kind(), format!("{v:?}")))
            .unwrap_or_else(|| panic!("{name} {label:?} not exported"))
    };
    assert_eq!(
        value("microbatch_submitted_total", None),
        (
            MetricKind::Counter,
            format!("{:?}", DebugValue::Counter(report.submitted))
        )
    );
    assert_eq!(
        value("microbatch_processed_total", None),
        (
            MetricKind::Counter,
            format!("{:?}", DebugValue::Counter(95 - report.rejected_full))
        )
    );
    assert_eq!(
        value("microbatch_rejected_total", Some(("reason", "closed"))),
        (MetricKind::Counter, format!("{:?}", DebugValue::Counter(1)))
    );
    assert_eq!(
        value("microbatch_rejected_total", Some(("reason", "full"))).1,
        format!("{:?}", DebugValue::Counter(report.rejected_full))
    );
    let batches: u64 = ["size", "time", "flush", "shutdown"]
        .iter()
        .map(|t| {
            let v = value("microbatch_batches_total", Some(("trigger", t))).1;
            v.trim_start_matches("Counter(")
                .trim_end_matches(')')
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(batches, report.batches());
    assert_eq!(
        value("microbatch_queue_depth", None).1,
        format!("{:?}", DebugValue::Gauge(0.0.into()))
    );
}
