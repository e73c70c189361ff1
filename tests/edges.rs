//! The edges: what a faulty processor, odd items, nested batchers and
//! abandoned futures must not break. Each test pins one defect found by an
//! adversarial review (issue 12); each was seen failing before its fix.
//!
//! Tests whose failure mode is an abort (a double panic, a stack overflow)
//! run their scenario in a child process: the parent re-runs this test
//! binary with `MICROBATCH_CHILD=<name>` and checks how the child ended.

mod common;

use common::{channel_processor, hold_a_batch_and_fill, recv, Gate, BOUND};
use microbatch::{BatchInfo, Batcher, FlushError, Job, JobError, WaitStrategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Runs scenario `name` in a child process; `Ok` if it exited with status 0.
fn in_child(name: &str) -> Result<(), String> {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("MICROBATCH_CHILD", name)
        .output()
        .expect("spawn the test binary");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "child {name} ended with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn is_child(name: &str) -> bool {
    std::env::var("MICROBATCH_CHILD").is_ok_and(|v| v == name)
}

/// A value whose drop panics.
#[derive(Debug)]
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("a drop that panics");
    }
}

/// An error whose drop panics.
#[derive(Debug)]
struct BombError(#[allow(dead_code)] Bomb);

impl std::fmt::Display for BombError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an error whose drop panics")
    }
}

impl std::error::Error for BombError {}

// Defect 2: a processor's panic payload that panics on drop.
#[test]
fn panic_payload_that_panics_on_drop() {
    let processed = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&processed);
    let batcher = Batcher::builder()
        .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
            if batch.contains(&0) {
                std::panic::panic_any(Bomb);
            }
            p.fetch_add(batch.len() as u64, Ordering::SeqCst);
        })
        .unwrap();
    batcher.submit(0).unwrap();
    batcher.flush().unwrap();
    for i in 1..=10 {
        batcher.submit(i).expect("the flusher survived the payload");
    }
    batcher.flush().expect("the flusher survived the payload");
    assert_eq!(processed.load(Ordering::SeqCst), 10);
    let m = batcher.shutdown();
    assert_eq!(m.processor_panics, 1);
    assert_eq!(m.processed, 10);
}

// Defect 2: an error whose drop panics, with no `on_error` hook to take it.
#[test]
fn error_that_panics_on_drop() {
    let batcher = Batcher::builder()
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), BombError> {
                if batch.contains(&0) {
                    return Err(BombError(Bomb));
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    batcher.submit(0).unwrap();
    batcher.flush().unwrap();
    batcher.submit(1).expect("the flusher survived the error");
    batcher.flush().expect("the flusher survived the error");
    let m = batcher.shutdown();
    assert_eq!(m.processor_errors, 1);
    assert_eq!(m.processed, 1);
}

/// An item whose drop panics when armed.
struct Armed(bool);

impl Drop for Armed {
    fn drop(&mut self) {
        if self.0 {
            panic!("an item whose drop panics");
        }
    }
}

// Defect 2: two items with panicking drops left in one batch (a double
// panic aborts the process unless each drop is caught on its own).
#[test]
fn items_that_panic_on_drop() {
    if is_child("items_that_panic_on_drop") {
        let batcher = Batcher::builder()
            .build(|_: &mut Vec<Armed>, _: &BatchInfo| {})
            .unwrap();
        let mut items = vec![Armed(true), Armed(true), Armed(false)];
        batcher.submit_many(&mut items).unwrap();
        batcher.flush().unwrap();
        batcher.submit(Armed(false)).unwrap();
        batcher.flush().unwrap();
        let m = batcher.shutdown();
        assert_eq!(m.processed, 4);
        assert!(m.other_panics >= 2, "{m:?}");
        return;
    }
    in_child("items_that_panic_on_drop").unwrap();
}

// Defect 3: the time trigger counts from the oldest item, not from the
// arrival that woke the flusher. Item A waits on one shard while the
// flusher sleeps in a poll park; 150 ms later a burst on another shard
// crosses its wake threshold. A must be dispatched about `max_delay`
// (200 ms) after it was submitted, not `max_delay` after the burst
// (about 350 ms). Scheduling only makes dispatch later, never earlier, so
// the bound below cannot pass by chance.
#[test]
fn time_trigger_counts_from_the_oldest_item() {
    let delay = Duration::from_millis(200);
    let (p, rx) = channel_processor::<u32>();
    let batcher = Arc::new(
        Batcher::builder()
            .shards(2)
            .max_batch_size(512)
            .capacity(4096)
            .max_delay(delay)
            .wait_strategy(WaitStrategy::Park)
            .build(p)
            .unwrap(),
    );
    // Two threads, one shard each (the first two threads a batcher sees).
    let (to_a, a_rx) = mpsc::channel::<u32>();
    let (to_b, b_rx) = mpsc::channel::<u32>();
    let ba = Arc::clone(&batcher);
    let ta = std::thread::spawn(move || {
        for n in a_rx {
            ba.submit(n).unwrap();
        }
    });
    let bb = Arc::clone(&batcher);
    let tb = std::thread::spawn(move || {
        for n in b_rx {
            for i in 0..n {
                bb.submit(1_000_000 + i).unwrap();
            }
        }
    });
    // Warm up: one batch from each thread, so the flusher is "recently
    // busy" and polls with a deadline instead of sleeping until woken.
    to_a.send(1).unwrap();
    to_b.send(1).unwrap();
    let mut seen = 0;
    while seen < 2 {
        seen += recv(&rx, "warm-up").0.len();
    }
    let start = Instant::now();
    to_a.send(7).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    to_b.send(300).unwrap();
    let waited = loop {
        let (batch, _) = recv(&rx, "item 7");
        if batch.contains(&7) {
            break start.elapsed();
        }
    };
    assert!(
        waited < delay + Duration::from_millis(100),
        "item 7 waited {waited:?} with max_delay {delay:?}"
    );
    drop((to_a, to_b));
    ta.join().unwrap();
    tb.join().unwrap();
}

// Defect 4: threads first seen by different batchers share no shard of a
// third.
#[test]
fn shards_are_assigned_per_batcher() {
    let (x, _fx) = Batcher::builder()
        .build_with_flusher(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .unwrap();
    let (y, _fy) = Batcher::builder()
        .build_with_flusher(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .unwrap();
    let (z, _fz) = Batcher::builder()
        .shards(2)
        .capacity(4)
        .max_batch_size(4)
        .build_with_flusher(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .unwrap();
    let (x, y, z) = (&x, &y, &z);
    std::thread::scope(|s| {
        let (go1, wait1) = mpsc::channel::<()>();
        let (go2, wait2) = mpsc::channel::<()>();
        let t1 = s.spawn(move || {
            x.try_submit(1).unwrap();
            wait1.recv().unwrap();
            (0..4).filter(|&i| z.try_submit(i).is_ok()).count()
        });
        let t2 = s.spawn(move || {
            y.try_submit(1).unwrap();
            wait2.recv().unwrap();
            (0..4).filter(|&i| z.try_submit(i).is_ok()).count()
        });
        go1.send(()).unwrap();
        go2.send(()).unwrap();
        let accepted = t1.join().unwrap() + t2.join().unwrap();
        assert_eq!(accepted, 8, "two threads, two shards of 4: all fit");
    });
}

type Shared<T> = Arc<OnceLock<Arc<Batcher<T>>>>;

// Defect 5: running (or dropping) another batcher's flusher inside a
// processor must not clear the outer flusher's mark.
#[test]
fn nested_flusher_keeps_the_outer_mark() {
    let me: Shared<u32> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let m = Arc::clone(&me);
    let outer = Arc::new(
        Batcher::builder()
            .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
                batch.clear();
                let (inner, flusher) = Batcher::builder()
                    .build_with_flusher(|b: &mut Vec<u8>, _: &BatchInfo| b.clear())
                    .unwrap();
                inner.submit(1).unwrap();
                drop(inner);
                drop(flusher); // runs the inner engine here, on this thread
                let outer = m.get().expect("set before the first submit");
                let _ = tx.send(outer.flush());
            })
            .unwrap(),
    );
    me.set(Arc::clone(&outer)).ok().unwrap();
    outer.submit(1).unwrap();
    let r = rx
        .recv_timeout(BOUND)
        .expect("the processor's flush of its own batcher hung");
    assert_eq!(r, Err(FlushError::Reentrant));
    // Break the cycle: the processor holds a handle of its own.
    outer.close();
}

// Defect 6: a processor that holds the last handle to its own batcher.
#[test]
fn processor_holds_the_last_handle() {
    if is_child("processor_holds_the_last_handle") {
        // Any panic (the flusher joining itself) ends the child with 3.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("panicked: {info}");
            std::process::exit(3);
        }));
        struct Signal(mpsc::Sender<()>);
        impl Drop for Signal {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let me: Shared<u32> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let m = Arc::clone(&me);
        // Fields drop in order: the batcher handle first, then the signal.
        let state = (m, Signal(tx));
        let batcher = Batcher::builder()
            .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
                // The whole tuple is captured (not just `state.0`).
                let (me, _signal) = &state;
                if batch.contains(&99) {
                    me.get().unwrap().close();
                }
                batch.clear();
            })
            .unwrap();
        let batcher = Arc::new(batcher);
        me.set(Arc::clone(&batcher)).ok().unwrap();
        batcher.submit(99).unwrap();
        drop(batcher); // the processor now holds the only handle
        drop(me);
        rx.recv_timeout(BOUND)
            .expect("the processor (and the handle it held) was never dropped");
        return;
    }
    in_child("processor_holds_the_last_handle").unwrap();
}

/// A waker that counts its live clones.
struct CountingWaker;

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(_: &Arc<Self>) {}
}

fn gated(gate: &Gate) -> Batcher<u32> {
    Batcher::builder()
        .shards(1)
        .capacity(1)
        .max_batch_size(1)
        .build(gate.processor())
        .unwrap()
}

// Defect 7: a pending `SubmitFuture` that is dropped releases its waker, and
// its item is counted.
#[test]
fn dropped_submit_futures_release_their_wakers() {
    use std::future::Future;
    let gate = Gate::default();
    let batcher = gated(&gate);
    // One item in the processor (held at the gate), one filling the shard.
    batcher.submit(0).unwrap();
    // Until the flusher has taken item 0, the one-slot shard is full: each
    // refused try is an item given to a submit call too.
    let mut given = 2;
    while batcher.try_submit(1).is_err() {
        given += 1;
        std::thread::yield_now();
    }
    let w = Arc::new(CountingWaker);
    let waker = futures::task::waker(Arc::clone(&w));
    let mut cx = std::task::Context::from_waker(&waker);
    for i in 0..1000 {
        let mut fut = Box::pin(batcher.submit_async(10 + i));
        assert!(fut.as_mut().poll(&mut cx).is_pending(), "the shard is full");
        drop(fut);
    }
    drop(waker);
    assert_eq!(
        Arc::strong_count(&w),
        1,
        "dropped futures kept their wakers"
    );
    gate.open();
    let m = batcher.shutdown();
    assert_eq!(m.submitted, 2);
    assert_eq!(m.rejected_cancelled, 1000);
    assert_eq!(
        m.submitted + m.rejected(),
        given + 1000,
        "every item given to a submit call is counted: {m:?}"
    );
}

// Defect 10: `Ticket::wait_timeout(Duration::MAX)` waits, it does not panic.
#[test]
fn ticket_wait_timeout_max() {
    let batcher = Batcher::builder()
        .build_tracked(|jobs: &mut Vec<Job<u32, u32, ()>>, _: &BatchInfo| {
            for j in jobs.iter_mut() {
                let x = *j.input();
                j.complete(Ok(x));
            }
        })
        .unwrap();
    let t = batcher.submit_tracked(5).unwrap();
    assert_eq!(t.wait_timeout(Duration::MAX).ok(), Some(Ok(5)));
}

// Defect 10: jobs of a panicking processor resolve `Panicked`, whichever
// constructor built the batcher.
#[test]
fn jobs_of_a_panicking_processor_outside_build_tracked() {
    let batcher = Batcher::builder()
        .build(|_: &mut Vec<Job<u32, u32, ()>>, _: &BatchInfo| -> () { panic!("boom") })
        .unwrap();
    let t = batcher.submit_tracked(1).unwrap();
    assert_eq!(t.wait(), Err(JobError::Panicked));
}

// Defect 10: `BatchInfo::oldest_age` is an upper bound on the oldest item's
// wait for flush batches and for size batches the flusher finds full.
#[test]
fn oldest_age_of_flush_and_size_batches() {
    let (p, rx) = channel_processor::<u32>();
    let batcher = Batcher::builder()
        .max_delay(Duration::from_secs(60))
        .build(p)
        .unwrap();
    batcher.submit(1).unwrap();
    let submitted = Instant::now();
    std::thread::sleep(Duration::from_millis(30));
    batcher.flush().unwrap();
    let waited = submitted.elapsed();
    let (_, info) = recv(&rx, "the flush batch");
    assert!(
        info.oldest_age >= Duration::from_millis(30) && info.oldest_age <= waited + BOUND,
        "flush batch: oldest_age {:?}",
        info.oldest_age
    );
    drop(batcher);

    let (p, rx) = channel_processor::<u32>();
    let (batcher, mut flusher) = Batcher::builder()
        .max_batch_size(4)
        .build_with_flusher(p)
        .unwrap();
    for i in 0..4 {
        batcher.submit(i).unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    let closer = batcher.closer();
    let t = std::thread::spawn(move || flusher.run());
    let (_, info) = recv(&rx, "the size batch");
    assert!(
        info.oldest_age >= Duration::from_millis(30),
        "size batch: oldest_age {:?}",
        info.oldest_age
    );
    closer.close();
    t.join().unwrap();
}

// Defect 10: a snapshot's queue depth never exceeds what the shards can
// hold: the batch in the processor is counted apart (`in_flight`), and the
// counts are read as one consistent snapshot. Deterministic: one batch held
// in the processor, the shard full behind it.
#[test]
fn snapshot_queue_depth_within_the_bound() {
    // A lane (the one producer leases it), then a shard alone.
    for lanes in [1, 0] {
        snapshot_queue_depth_within_the_bound_on(lanes);
    }
}

fn snapshot_queue_depth_within_the_bound_on(lanes: usize) {
    let gate = Gate::default();
    let batcher = Batcher::builder()
        .lanes(lanes)
        .shards(1)
        .capacity(4)
        .max_batch_size(4)
        .build(gate.processor::<u64>())
        .unwrap();
    hold_a_batch_and_fill(&batcher, 4, |i| i as u64);
    let m = batcher.metrics();
    let queues = lanes as u64 + 1;
    assert_eq!(
        (m.queue_depth, m.in_flight, m.capacity),
        (4, 4, 4 * queues),
        "{m:?}"
    );
    gate.open();
    assert_eq!(batcher.shutdown().processed, 8);
}

// The same bounds and the exact sum in every snapshot taken while two
// producers and the flusher run flat out.
#[test]
fn snapshots_under_load_are_consistent() {
    struct Stop<'a>(&'a AtomicU64);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(1, Ordering::Relaxed);
        }
    }
    let batcher = Batcher::builder()
        .shards(2)
        .capacity(4)
        .max_batch_size(4)
        .max_delay(Duration::ZERO)
        .build(|b: &mut Vec<u64>, _: &BatchInfo| b.clear())
        .unwrap();
    let stop = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (b, stop) = (&batcher, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while stop.load(Ordering::Relaxed) == 0 {
                    b.submit(t << 32 | i).unwrap();
                    i += 1;
                }
            });
        }
        // Stops the producers even if an assertion below fails.
        let _stop = Stop(&stop);
        for _ in 0..20_000 {
            let m = batcher.metrics();
            assert_eq!(
                m.processed + m.failed + m.in_flight + m.queue_depth,
                m.submitted,
                "{m:?}"
            );
            assert!(m.queue_depth <= m.capacity && m.in_flight <= 4, "{m:?}");
        }
    });
}

// Defect 10: a NUL byte in the thread name is a build error, not a panic.
#[test]
fn nul_in_thread_name() {
    let r = Batcher::builder()
        .thread_name("flusher\0")
        .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear());
    assert!(
        matches!(r, Err(microbatch::BuildError::ThreadName { .. })),
        "{r:?}"
    );
}

// The failure path: what a failed batch leaves goes to `on_discard`, in
// order, with the failure; the counters tell success from failure; the
// failure is an `Error` with its source.
#[test]
fn failed_batches_are_handed_to_on_discard() {
    use microbatch::Failure;
    use std::error::Error as _;
    let discarded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (d, src) = (Arc::clone(&discarded), Arc::clone(&sources));
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .on_discard(move |items: &mut Vec<u32>, f: &Failure, info: &BatchInfo| {
            assert_eq!(info.len, 4, "the whole batch's info");
            let kind = matches!(f, Failure::Panic(_));
            d.lock().unwrap().extend(items.drain(..).map(|x| (x, kind)));
        })
        .on_error(move |f: Failure, _: &BatchInfo| {
            src.lock().unwrap().push(f.source().map(|e| e.to_string()));
        })
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
                match batch[0] {
                    // Takes one item, then fails: three are left to discard.
                    0 => {
                        batch.remove(0);
                        Err("sink refused".into())
                    }
                    4 => panic!("sink crashed"),
                    _ => {
                        batch.clear();
                        Ok(())
                    }
                }
            },
        )
        .unwrap();
    let mut items: Vec<u32> = (0..12).collect();
    batcher.submit_many(&mut items).unwrap();
    batcher.flush().unwrap();
    let m = batcher.shutdown();
    assert_eq!(
        *discarded.lock().unwrap(),
        [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, true),
            (6, true),
            (7, true)
        ]
    );
    assert_eq!(
        *sources.lock().unwrap(),
        [Some("sink refused".to_owned()), None]
    );
    assert_eq!((m.processed, m.failed, m.discarded), (4, 8, 7), "{m:?}");
    assert_eq!((m.processor_errors, m.processor_panics), (1, 1));
}

// A hook that panics is caught and counted; the flusher goes on.
#[test]
fn panicking_hooks_are_contained() {
    let batcher = Batcher::builder()
        .on_discard(|_: &mut Vec<u32>, _: &microbatch::Failure, _: &BatchInfo| panic!("hook"))
        .on_error(|_: microbatch::Failure, _: &BatchInfo| panic!("hook"))
        .build(|b: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
            if b.contains(&0) {
                return Err("no".into());
            }
            b.clear();
            Ok(())
        })
        .unwrap();
    batcher.submit(0).unwrap();
    batcher.flush().unwrap();
    batcher.submit(1).unwrap();
    batcher.flush().unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.processed, m.failed, m.other_panics), (1, 1, 2), "{m:?}");
}

// A processor that sleeps past `shutdown_timeout`: the call returns what it
// knows (the stuck batch in flight, how long it has been there), from a
// shared handle; a second call after the processor returns gets the final
// counters.
#[test]
fn shutdown_timeout_with_a_stuck_processor() {
    let gate = Gate::default();
    let batcher = Arc::new(Batcher::builder().build(gate.processor::<u32>()).unwrap());
    batcher.submit(1).unwrap();
    while batcher.metrics().in_flight == 0 {
        std::thread::yield_now();
    }
    let b = Arc::clone(&batcher);
    let started = Instant::now();
    let r = std::thread::spawn(move || b.shutdown_timeout(Duration::from_millis(50)))
        .join()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    match r {
        Err(microbatch::ShutdownError::Timeout(m)) => {
            assert_eq!((m.in_flight, m.processed), (1, 0), "{m:?}");
            assert!(m.processor_busy_for > Duration::ZERO, "{m:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        batcher.submit(2).unwrap_err().is_closed(),
        "closed either way"
    );
    gate.open();
    let m = batcher.shutdown_timeout(BOUND).unwrap();
    assert_eq!(
        (m.processed, m.in_flight, m.processor_busy_for),
        (1, 0, Duration::ZERO)
    );
}

// The awaitable form, and the processor asking for its own shutdown.
#[test]
fn shutdown_async_and_reentrant_shutdown() {
    let me: Shared<u32> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let m2 = Arc::clone(&me);
    let batcher = Arc::new(
        Batcher::builder()
            .build(move |b: &mut Vec<u32>, _: &BatchInfo| {
                b.clear();
                if let Some(me) = m2.get() {
                    let _ = tx.send(me.shutdown_timeout(BOUND).is_err());
                }
            })
            .unwrap(),
    );
    me.set(Arc::clone(&batcher)).ok().unwrap();
    batcher.submit(1).unwrap();
    assert_eq!(rx.recv_timeout(BOUND), Ok(true), "Reentrant, at once");
    let m = futures::executor::block_on(batcher.shutdown_async()).unwrap();
    assert_eq!(m.processed, 1);
    // The processor's handle: dropped with the processor, on its thread.
    drop(batcher);
}

// A close after a user-run flusher's run ended keeps the batcher closed:
// the next run drains and returns instead of reopening (a shutdown racing
// the restart must not be lost, nor leave a run nobody ends).
#[test]
fn close_between_runs_is_kept() {
    let (batcher, mut flusher) = Batcher::builder()
        .build_with_flusher(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .unwrap();
    batcher.submit(1).unwrap();
    batcher.close();
    assert_eq!(flusher.run().processed, 1);
    batcher.close(); // after the run ended
    let m = common::bounded("a run after a later close", move || flusher.run());
    assert_eq!(m.processed, 1);
    assert!(batcher.submit(2).unwrap_err().is_closed());
}

/// A waker whose `wake` panics.
struct PanickingWaker;

impl futures::task::ArcWake for PanickingWaker {
    fn wake_by_ref(_: &Arc<Self>) {
        panic!("a waker that panics");
    }
}

// A runtime's waker that panics when the flusher wakes it cannot unwind the
// flusher: later batches are processed and the waiting future still gets in.
#[test]
fn a_panicking_waker_is_contained() {
    use std::future::Future;
    let gate = Gate::default();
    let batcher = gated(&gate);
    batcher.submit(0).unwrap();
    while batcher.try_submit(1).is_err() {
        std::thread::yield_now();
    }
    let waker = futures::task::waker(Arc::new(PanickingWaker));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = Box::pin(batcher.submit_async(2));
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    gate.open(); // the flusher frees room and wakes the future: a panic
    while batcher.metrics().processed < 2 {
        std::thread::yield_now();
    }
    // Poll again (its waker could not tell us): room is there now.
    let r = loop {
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            break r;
        }
        std::thread::yield_now();
    };
    assert!(r.is_ok());
    drop(fut);
    batcher.flush().unwrap();
    assert_eq!(batcher.shutdown().processed, 3);
}
