//! Lanes at their edges: user storages on lanes (shared between queues, one
//! that submits from inside its own `push`, a slow one), `Producer` handles
//! beyond the lanes, and a handle outliving its batcher. The protocol
//! itself is model-checked (`loom-tests/tests/lanes.rs`).

mod common;

use common::BOUND;
use microbatch::{BatchInfo, Batcher, Storage};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

/// One `ArrayQueue` of capacity 2 behind every queue (allowed by the
/// `Storage` contract); the first push of each of two producers waits for
/// the other's, so both second pushes find the shared queue full.
struct SharedQueue {
    q: crossbeam_queue::ArrayQueue<u32>,
    first_pushes: AtomicUsize,
    gate: Barrier,
}

#[derive(Clone)]
struct SharedStorage(Arc<SharedQueue>);

impl Storage<u32> for SharedStorage {
    fn push(&self, item: u32) -> Result<(), u32> {
        if self.0.first_pushes.fetch_add(1, Ordering::SeqCst) < 2 {
            self.0.gate.wait();
            let r = self.0.q.push(item);
            self.0.gate.wait();
            return r;
        }
        self.0.q.push(item)
    }
    fn pop(&self) -> Option<u32> {
        self.0.q.pop()
    }
    fn len(&self) -> usize {
        self.0.q.len()
    }
    fn capacity(&self) -> usize {
        self.0.q.capacity()
    }
}

/// A lane counts its slots when it publishes: while its owner waits for a
/// shared storage to make room, the slots it filled are published, so the
/// flusher takes them and the room appears (before, both owners spun
/// forever with their items unknown to the flusher).
#[test]
fn storage_shared_by_two_lanes_drains() {
    let shared = SharedStorage(Arc::new(SharedQueue {
        q: crossbeam_queue::ArrayQueue::new(2),
        first_pushes: AtomicUsize::new(0),
        gate: Barrier::new(2),
    }));
    let processed = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&processed);
    let batcher = Batcher::builder()
        .lanes(2)
        .shards(1)
        .max_batch_size(2)
        .capacity(2)
        .storage(move |_| shared.clone())
        .build(move |batch: &mut Vec<u32>, _: &BatchInfo| {
            p.fetch_add(batch.len(), Ordering::SeqCst);
            batch.clear();
        })
        .unwrap();
    let (mut a, mut b) = (batcher.producer(), batcher.producer());
    assert!(a.is_lane() && b.is_lane());
    let ta = std::thread::spawn(move || a.submit_many(&mut vec![1, 2]).unwrap());
    let tb = std::thread::spawn(move || b.submit_many(&mut vec![3, 4]).unwrap());
    let start = Instant::now();
    while !(ta.is_finished() && tb.is_finished()) {
        assert!(
            start.elapsed() < BOUND,
            "lane owners stuck on a shared storage"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    ta.join().unwrap();
    tb.join().unwrap();
    let m = batcher.shutdown();
    assert_eq!((m.submitted, m.processed), (4, 4));
    assert_eq!(processed.load(Ordering::SeqCst), 4);
}

/// An `ArrayQueue` whose `push` first calls a hook with the item.
struct Hooked<F>(crossbeam_queue::ArrayQueue<u32>, F);

impl<F: Fn(u32) + Send + Sync> Storage<u32> for Hooked<F> {
    fn push(&self, item: u32) -> Result<(), u32> {
        (self.1)(item);
        self.0.push(item)
    }
    fn pop(&self) -> Option<u32> {
        self.0.pop()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

type Reentrant = Hooked<fn(u32)>;

static REENTRANT: OnceLock<Batcher<u32, Reentrant>> = OnceLock::new();

/// The push of item 1 submits item 100 to its own batcher, on the same
/// thread, while the lane's reservation is open.
fn submit_from_push(item: u32) {
    if item == 1 {
        REENTRANT.get().unwrap().submit(100).unwrap();
    }
}

/// A submit nested inside a lane reservation goes to a shard instead of
/// opening a second window on the same lane (which would lose an item).
#[test]
fn submit_from_inside_a_lane_push() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(1)
        .shards(1)
        .storage(|c| {
            Hooked(
                crossbeam_queue::ArrayQueue::new(c),
                submit_from_push as fn(u32),
            )
        })
        .build(move |batch: &mut Vec<u32>, _: &BatchInfo| s.lock().unwrap().append(batch))
        .unwrap();
    assert!(REENTRANT.set(batcher).is_ok());
    let b = REENTRANT.get().unwrap();
    for i in 0..5 {
        b.submit(i).unwrap();
    }
    b.flush().unwrap();
    let mut v = seen.lock().unwrap().clone();
    v.sort_unstable();
    assert_eq!(v, vec![0, 1, 2, 3, 4, 100], "each item once");
    let m = b.metrics();
    assert_eq!((m.submitted, m.processed), (6, 6));
}

/// A flusher that finds a lane busy waits up to a millisecond for it
/// before it gives up parking, so a stuck owner costs at most about one
/// heavy barrier per millisecond (measured before the wait: 2,500 in the
/// 200 ms, each an IPI to every CPU running a thread of the process).
#[test]
fn a_busy_lane_does_not_make_the_flusher_hammer_the_barrier() {
    let batcher = Batcher::builder()
        .lanes(1)
        .shards(1)
        // The push of item 7 takes 200 ms: the lane's owner sits inside its
        // reservation all that time.
        .storage(|c| {
            Hooked(crossbeam_queue::ArrayQueue::new(c), |item| {
                if item == 7 {
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .build(|batch: &mut Vec<u32>, _: &BatchInfo| batch.clear())
        .unwrap();
    batcher.submit(1).unwrap();
    batcher.flush().unwrap();
    let before = batcher.metrics();
    let start = Instant::now();
    batcher.submit(7).unwrap();
    let took = start.elapsed();
    let after = batcher.metrics();
    let heavy = after.heavy_barriers - before.heavy_barriers;
    let bound = 2 * took.as_millis() as u64 + 20;
    assert!(
        heavy <= bound,
        "{heavy} heavy barriers while a lane was busy for {took:?} (bound {bound})"
    );
    assert_eq!(batcher.shutdown().processed, 2);
}

/// Handles beyond the lanes get shards; every handle's items arrive in its
/// order; a handle outliving its batcher gets its items back as `Closed`.
#[test]
fn handles_beyond_the_lanes_and_after_the_batcher() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .shards(1)
        .max_batch_size(16)
        .build(move |batch: &mut Vec<(u32, u32)>, _: &BatchInfo| s.lock().unwrap().append(batch))
        .unwrap();
    let mut handles: Vec<_> = (0..4).map(|_| batcher.producer()).collect();
    let lanes = handles.iter().filter(|h| h.is_lane()).count();
    assert_eq!(lanes, 2, "two lanes, then the shard");
    assert_eq!(batcher.metrics().lanes_leased, 2);
    let threads: Vec<_> = handles
        .drain(..)
        .enumerate()
        .map(|(k, mut h)| {
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    h.submit((k as u32, i)).unwrap();
                }
                h
            })
        })
        .collect();
    let mut kept: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    batcher.flush().unwrap();
    let v = seen.lock().unwrap().clone();
    for k in 0..4 {
        let mine: Vec<u32> = v.iter().filter(|(p, _)| *p == k).map(|(_, i)| *i).collect();
        assert_eq!(
            mine,
            (0..10_000).collect::<Vec<_>>(),
            "handle {k} out of order"
        );
    }
    let m = batcher.shutdown();
    assert_eq!(m.processed, 40_000);
    let e = kept[0].submit((9, 9)).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner(), (9, 9));
}

/// A batcher dropped with its user-run flusher never run: the items in its
/// lanes (unstamped rings, dropped from the published tail) and in its
/// shards (stamped) are each dropped exactly once.
#[test]
fn items_left_in_lanes_are_dropped_once() {
    use common::DropCounted;
    let drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (batcher, flusher) = Batcher::builder()
        .lanes(1)
        .shards(1)
        .capacity(8)
        .max_batch_size(8)
        .build_with_flusher(|b: &mut Vec<DropCounted>, _: &BatchInfo| b.clear())
        .unwrap();
    let mut lane = batcher.producer();
    let mut shard = batcher.producer();
    assert!(lane.is_lane() && !shard.is_lane());
    for i in 0..5 {
        lane.try_submit(DropCounted::counting(&drops)).unwrap();
        if i < 3 {
            shard.try_submit(DropCounted::counting(&drops)).unwrap();
        }
    }
    assert_eq!(batcher.metrics().queue_depth, 8);
    drop((lane, shard, flusher, batcher));
    assert_eq!(
        drops.load(Ordering::Relaxed),
        8,
        "every queued item dropped once"
    );
}
