//! Feature `metrics`: the batcher's counters reach a `metrics` recorder.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{hold_a_batch_and_fill, Gate};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use microbatch::{Backpressure, BatchInfo, Batcher, ProcessError, Retry, Rewind};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one recorder of this test binary (tests tell their batchers apart
/// by label). A snapshot of the debugging recorder resets what it read, so
/// the tests take turns ([`serial`]).
fn snapshotter() -> &'static Snapshotter {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        s
    })
}

/// Held by each test for its whole run.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One series of a debugging-recorder snapshot.
type Entry = (
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);
type Snap = Vec<Entry>;

/// In one snapshot `snap`: series `name` with label `batcher` = `batcher`
/// and every label of `labels`.
fn series<'a>(
    snap: &'a Snap,
    batcher: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Entry> {
    snap.iter().find(|(k, _, _, _)| {
        let has = |key: &str, value: &str| {
            k.key()
                .labels()
                .any(|l| l.key() == key && l.value() == value)
        };
        k.key().name() == name && has("batcher", batcher) && labels.iter().all(|(k, v)| has(k, v))
    })
}

/// The value of a series as its Debug text.
fn value_of(snap: &Snap, label: &str, name: &str, extra: Option<(&str, &str)>) -> Option<String> {
    let labels: Vec<(&str, &str)> = extra.into_iter().collect();
    series(snap, label, name, &labels).map(|(_, _, _, v)| format!("{v:?}"))
}

/// Batches of one outcome, summed over the triggers.
fn batches_with_outcome(snap: &Snap, batcher: &str, outcome: &str) -> u64 {
    ["size", "time", "flush", "shutdown"]
        .iter()
        .map(|t| {
            let labels = [("trigger", *t), ("outcome", outcome)];
            match series(snap, batcher, "microbatch_batches_total", &labels) {
                Some((_, _, _, DebugValue::Counter(n))) => *n,
                other => panic!("batches {t} {outcome}: {other:?}"),
            }
        })
        .sum()
}

#[test]
fn counters_reach_the_recorder() {
    let _serial = serial();
    let snapshotter = snapshotter();

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
        let labels: Vec<(&str, &str)> = label.into_iter().collect();
        series(&snap, "orders", name, &labels)
            .map(|(k, _, _, v)| (k.kind(), format!("{v:?}")))
            .unwrap_or_else(|| panic!("{name} {label:?} not exported"))
    };
    assert_eq!(
        value("microbatch_items_submitted_total", None),
        (
            MetricKind::Counter,
            format!("{:?}", DebugValue::Counter(report.submitted))
        )
    );
    assert_eq!(
        value("microbatch_items_processed_total", None),
        (
            MetricKind::Counter,
            format!("{:?}", DebugValue::Counter(95 - report.rejected_full))
        )
    );
    assert_eq!(
        value(
            "microbatch_items_rejected_total",
            Some(("reason", "closed"))
        ),
        (MetricKind::Counter, format!("{:?}", DebugValue::Counter(1)))
    );
    assert_eq!(
        value("microbatch_items_rejected_total", Some(("reason", "full"))).1,
        format!("{:?}", DebugValue::Counter(report.rejected_full))
    );
    // Batches by trigger and outcome: every batch once, all of them ok.
    let batches = |outcome: &str| batches_with_outcome(&snap, "orders", outcome);
    assert_eq!(batches("ok"), report.batches());
    assert_eq!(batches("error") + batches("panic"), 0);
    assert_eq!(
        value("microbatch_queue_depth", None).1,
        format!("{:?}", DebugValue::Gauge(0.0.into()))
    );
}

/// Exported series keep moving while the processor is stuck: rejections,
/// queue depth and the time in the processor reach a scrape within about a
/// second (here the interval is 100 ms; the test allows 5 s of scheduling).
#[test]
fn series_move_during_a_stall() {
    let _serial = serial();
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .thread_name("stalled")
        .shards(1)
        .capacity(4)
        .max_batch_size(4)
        .backpressure(Backpressure::Reject)
        .metrics_interval(Duration::from_millis(100))
        .build(gate.processor::<u32>())
        .unwrap();
    hold_a_batch_and_fill(&batcher, 4, |i| i as u32);
    for i in 0..10 {
        assert!(batcher.submit(i).is_err());
    }
    // Each snapshot resets what it reads; the exporter publishes again
    // every 100 ms: remember what any snapshot showed.
    let (mut rejected, mut depth, mut busy) = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(rejected && depth && busy) {
        let snap = snapshotter().snapshot().into_vec();
        rejected |= value_of(
            &snap,
            "stalled",
            "microbatch_items_rejected_total",
            Some(("reason", "full")),
        ) == Some(format!("{:?}", DebugValue::Counter(10)));
        depth |= value_of(&snap, "stalled", "microbatch_queue_depth", None)
            == Some(format!("{:?}", DebugValue::Gauge(4.0.into())));
        busy |= value_of(&snap, "stalled", "microbatch_processor_busy_seconds", None)
            .is_some_and(|b| b != format!("{:?}", DebugValue::Gauge(0.0.into())));
        assert!(
            Instant::now() < deadline,
            "a scrape during the stall saw: rejected {rejected}, depth {depth}, busy {busy}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gate.open();
    batcher.shutdown();
}

/// Batchers built with the default name export under distinct labels.
#[test]
fn default_labels_are_unique() {
    let _serial = serial();
    let _ = snapshotter();
    let build = || {
        Batcher::builder()
            .metrics_interval(Duration::from_millis(50))
            .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
            .unwrap()
    };
    let (a, b) = (build(), build());
    for i in 0..13 {
        a.submit(i).unwrap();
    }
    for i in 0..10 {
        b.submit(i).unwrap();
    }
    a.flush().unwrap();
    b.flush().unwrap();
    // Labels `microbatch-<n>` seen with 13 and with 10 submitted items.
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let has = |seen: &[(String, String)], n: u64| {
        seen.iter()
            .any(|(_, v)| *v == format!("{:?}", DebugValue::Counter(n)))
    };
    while !(has(&seen, 13) && has(&seen, 10)) {
        assert!(
            Instant::now() < deadline,
            "one series per batcher: {seen:?}"
        );
        for (k, _, _, v) in snapshotter().snapshot().into_vec() {
            if k.key().name() != "microbatch_items_submitted_total" {
                continue;
            }
            if let Some(l) = k.key().labels().find(|l| l.key() == "batcher") {
                if l.value().starts_with("microbatch-") {
                    seen.push((l.value().to_owned(), format!("{v:?}")));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let label_of = |n: u64| {
        seen.iter()
            .find(|(_, v)| *v == format!("{:?}", DebugValue::Counter(n)))
            .map(|(l, _)| l.clone())
    };
    assert_ne!(label_of(13), label_of(10), "{seen:?}");
    a.shutdown();
    b.shutdown();
}

/// Every batch reaches the histograms (batch size, time in the processor,
/// the oldest item's wait) and the batch counter by outcome; every series
/// carries its unit and description.
#[test]
fn histograms_outcomes_and_descriptions() {
    let _serial = serial();
    let snapshotter = snapshotter();

    // Batches of 10 from one thread: ids 0..10, 10..20, ...; the batch
    // holding 13 fails with an error, the one holding 27 panics.
    let batcher = Batcher::builder()
        .thread_name("shaped")
        .max_batch_size(10)
        .shards(1)
        .max_delay(Duration::MAX)
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
                if batch.contains(&27) {
                    panic!("a deliberate panic for the outcome label");
                }
                if batch.contains(&13) {
                    return Err("a deliberate error".into());
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    for i in 0..100 {
        batcher.submit(i).unwrap();
    }
    let report = batcher.shutdown();
    assert_eq!(report.batches(), 10, "{report:?}");
    assert_eq!((report.processor_errors, report.processor_panics), (1, 1));

    let snap = snapshotter.snapshot().into_vec();
    let find = |name: &str, extra: &[(&str, &str)]| {
        series(&snap, "shaped", name, extra)
            .unwrap_or_else(|| panic!("{name} {extra:?} not exported"))
    };
    // Summed over the triggers (the last batches may go at shutdown).
    let count = |outcome: &str| batches_with_outcome(&snap, "shaped", outcome);
    assert_eq!((count("ok"), count("error"), count("panic")), (8, 1, 1));

    let samples = |name: &str| match &find(name, &[]).3 {
        DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect::<Vec<f64>>(),
        other => panic!("{name} is not a histogram: {other:?}"),
    };
    // One sample per batch, each standing for 10 items (within a bucket:
    // 10 lands in [10, 12), whose middle is 11).
    let sizes = samples("microbatch_batch_size_items");
    assert_eq!(sizes.len(), 10, "{sizes:?}");
    assert!(
        sizes.iter().all(|&v| (10.0..12.0).contains(&v)),
        "{sizes:?}"
    );
    let durations = samples("microbatch_processor_duration_seconds");
    assert_eq!(durations.len(), 10);
    assert!(
        durations.iter().all(|&v| (0.0..60.0).contains(&v)),
        "{durations:?}"
    );
    assert_eq!(samples("microbatch_batch_oldest_wait_seconds").len(), 10);

    // Units and descriptions, Prometheus-style names.
    let (_, unit, description, _) = find("microbatch_processor_duration_seconds", &[]);
    assert_eq!(*unit, Some(metrics::Unit::Seconds));
    assert!(description
        .as_ref()
        .is_some_and(|d| d.contains("processor")));
    let (_, unit, _, _) = find("microbatch_queue_capacity", &[]);
    assert_eq!(*unit, Some(metrics::Unit::Count));
}

/// Retried batches: each attempt that asked for a rewind (and got it) is
/// counted under outcome `rewind`, the attempt that ends the batch under
/// its own outcome, and the retries in `microbatch_retries_total`.
#[test]
fn rewinds_are_an_outcome_of_their_own() {
    let _serial = serial();
    let snapshotter = snapshotter();

    // Batches of 5 from one thread; every batch's first attempt rewinds,
    // and the batch holding 12 fails for good at its second.
    let batcher = Batcher::builder()
        .thread_name("rewinding")
        .max_batch_size(5)
        .shards(1)
        .lanes(0)
        .max_delay(Duration::MAX)
        .retry(Retry::attempts(3).backoff(Duration::ZERO, Duration::ZERO))
        .build(
            |batch: &mut Vec<u32>, info: &BatchInfo| -> Result<(), ProcessError> {
                if info.attempt == 1 {
                    return Err(Rewind::new("transient").into());
                }
                if batch.contains(&12) {
                    return Err("a deliberate error".into());
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    for i in 0..20 {
        batcher.submit(i).unwrap();
    }
    let report = batcher.shutdown();
    assert_eq!((report.batches(), report.retries), (4, 4), "{report:?}");
    assert_eq!((report.processed, report.failed), (15, 5));

    let snap = snapshotter.snapshot().into_vec();
    let count = |outcome: &str| batches_with_outcome(&snap, "rewinding", outcome);
    assert_eq!(
        (count("ok"), count("error"), count("panic"), count("rewind")),
        (3, 1, 0, 4)
    );
    assert_eq!(
        value_of(&snap, "rewinding", "microbatch_retries_total", None),
        Some(format!("{:?}", DebugValue::Counter(4)))
    );
}
