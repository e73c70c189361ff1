//! The Go original's own test scenarios, ported.
//!
//! Provenance: zoomio/microbatch at 5bc9deb (Apache-2.0),
//! `microbatch_test.go` and `storage_test.go`, as summarised in
//! shared/ORIGINAL.md §3. The Go tests slept 1 ms to wait for start-up and
//! counted completions racily (ORIGINAL.md §3, "Test quality"); these ports
//! wait on channels with a bound instead, and check what the Go tests could
//! not: the items themselves, refusals handing the item back, restart-free
//! shutdown.

mod common;

use common::{channel_processor, recv_items, BOUND};
use microbatch::{BatchInfo, Batcher, BuildError, Trigger};
use std::time::Duration;

/// Go: "limit 1 + 3 jobs -> all 3 complete (size trigger)".
#[test]
fn batch_size_one_processes_all_three() {
    let (p, rx) = channel_processor::<u32>();
    let batcher = Batcher::builder().max_batch_size(1).build(p).unwrap();
    for job in [1, 2, 3] {
        batcher.submit(job).unwrap();
    }
    let got = recv_items(&rx, 3, "three size-1 batches");
    assert_eq!(
        got,
        vec![(1, Trigger::Size), (2, Trigger::Size), (3, Trigger::Size)]
    );
    assert_eq!(batcher.shutdown().batches_size, 3);
}

/// Go: "limit 5, cycle 1ms + 3 jobs -> all 3 complete (time trigger)".
#[test]
fn time_trigger_with_one_ms_interval() {
    let (p, rx) = channel_processor::<u32>();
    let batcher = Batcher::builder()
        .max_batch_size(5)
        .max_delay(Duration::from_millis(1))
        .build(p)
        .unwrap();
    for job in [1, 2, 3] {
        batcher.submit(job).unwrap();
    }
    let got = recv_items(&rx, 3, "the time trigger");
    assert_eq!(
        got.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(got.iter().all(|(_, t)| *t == Trigger::Time), "{got:?}");
}

/// Go: "Submit before Start gives ErrIsNotRunning"; "after stop" likewise.
/// Here a batcher whose flusher has not started accepts into its bounded
/// shards (no start-up race, ORIGINAL.md §4.5); a closed batcher refuses
/// with the item back (the Go `ErrIsNotRunning`).
#[test]
fn submit_after_stop_is_refused_with_the_item() {
    let (p, rx) = channel_processor::<String>();
    let (batcher, mut flusher) = Batcher::builder().build_with_flusher(p).unwrap();
    batcher.submit("before start".to_string()).unwrap();
    let closer = batcher.closer();
    let runner = std::thread::spawn(move || flusher.run());
    closer.close();
    let err = batcher.submit("after stop".to_string()).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner(), "after stop");
    let report = runner.join().unwrap();
    assert_eq!(report.processed, 1);
    let got = recv_items(&rx, 1, "the item queued before start");
    assert_eq!(got[0], ("before start".to_string(), Trigger::Shutdown));
    assert!(rx.recv_timeout(Duration::from_millis(10)).is_err());
    let _ = BOUND;
}

/// Go: `New(nil)` gives `ErrBatchProcessorRequired` — here the type system
/// requires a processor; invalid configuration is a typed error instead of
/// the Go panics (`Limit(-1)`, `Cycle(0)`) or the dead loop (`Limit(0)`).
#[test]
fn invalid_configuration_is_a_typed_error() {
    let p = |_: &mut Vec<u8>, _: &BatchInfo| {};
    assert!(matches!(
        Batcher::builder().max_batch_size(0).build(p),
        Err(BuildError::ZeroBatchSize)
    ));
    assert!(matches!(
        Batcher::builder().shards(0).build(p),
        Err(BuildError::ZeroShards)
    ));
    assert!(matches!(
        Batcher::builder().capacity(0).build(p),
        Err(BuildError::ZeroCapacity)
    ));
    // Go's `Cycle(0)` panicked inside Start; here zero delay is valid and
    // means "dispatch whatever is pending at once".
    let b = Batcher::builder()
        .max_delay(Duration::ZERO)
        .build(p)
        .unwrap();
    b.submit(1).unwrap();
    assert_eq!(b.shutdown().processed, 1);
}

/// Go: `Limit(42)` and `Cycle(42s)` set the fields; `New` does not start.
/// Here: the configured batch size bounds every batch, and a batcher built
/// with its flusher does not process until the flusher runs.
#[test]
fn options_take_effect_in_any_order() {
    let (p, rx) = channel_processor::<u32>();
    let batcher = Batcher::builder()
        .max_delay(Duration::from_secs(42))
        .max_batch_size(42)
        .build(p)
        .unwrap();
    for i in 0..42 * 3 {
        batcher.submit(i).unwrap();
    }
    let got = recv_items(&rx, 42 * 3, "three batches of 42");
    assert!(got.iter().all(|(_, t)| *t == Trigger::Size));
    assert_eq!(batcher.shutdown().batches_size, 3);

    let (p, rx) = channel_processor::<u32>();
    let (batcher, flusher) = Batcher::builder()
        .max_batch_size(1)
        .build_with_flusher(p)
        .unwrap();
    batcher.submit(1).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(20)).is_err(),
        "not started, nothing processed"
    );
    drop(batcher);
    // Dropping a flusher that never ran processes what was queued.
    drop(flusher);
    assert_eq!(recv_items(&rx, 1, "the flusher's drop")[0].0, 1);
}

/// Go: "a second Start while running gives ErrSameRunningState; Start can be
/// called again after a cancel". Here two runs at once are impossible
/// (`run` takes `&mut self`), and running again after a close reopens
/// intake; nothing accepted in either run is lost.
#[test]
fn restart_after_a_clean_stop() {
    let (p, rx) = channel_processor::<u32>();
    let (batcher, mut flusher) = Batcher::builder()
        .max_batch_size(2)
        .build_with_flusher(p)
        .unwrap();
    let closer = batcher.closer();
    let runner = std::thread::spawn(move || {
        let first = flusher.run();
        (first, flusher)
    });
    for i in 0..5 {
        batcher.submit(i).unwrap();
    }
    closer.close();
    let (first, mut flusher) = runner.join().unwrap();
    assert_eq!(first.processed, 5);
    assert!(
        batcher.submit(99).unwrap_err().is_closed(),
        "stopped: refused"
    );

    let runner = std::thread::spawn(move || flusher.run());
    let t = std::time::Instant::now();
    while batcher.is_closed() {
        assert!(t.elapsed() < BOUND, "the second run never reopened intake");
        std::thread::yield_now();
    }
    for i in 5..10 {
        batcher.submit(i).unwrap();
    }
    closer.close();
    let second = runner.join().unwrap();
    assert_eq!(second.processed, 10);
    let got: Vec<u32> = recv_items(&rx, 10, "both runs' items")
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}
