//! Adapters for the end-to-end benches: our batcher and the batchers users
//! build today, each fed by `producers` threads and summing every batch.
//!
//! Every adapter reports `(elapsed, count, sum)`: the clock starts when the
//! producers are released together and stops when the consumer has
//! processed every item. When the producers are done, each adapter ends the
//! stream the way its users would (microbatch: `flush`; `Mutex<Vec>`: its
//! closing flag; channels: nothing to do, their consumer drains at once), so
//! no adapter's last partial batch waits out a timer inside the timing.
//! The bench asserts count and sum after each run, so
//! an adapter that drops or duplicates an item fails instead of looking fast.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Batch size and queue depth shared by every adapter.
pub const BATCH: usize = 512;
pub const DEPTH: usize = 1024;

/// An item of the bench: `u64`, or 64 bytes.
pub trait Item: Send + Sync + Copy + 'static {
    const NAME: &'static str;
    fn new(v: u64) -> Self;
    fn val(&self) -> u64;
}

impl Item for u64 {
    const NAME: &'static str = "u64";
    fn new(v: u64) -> Self {
        v
    }
    fn val(&self) -> u64 {
        *self
    }
}

/// 64 bytes: an order event or a span header.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Wide([u64; 8]);

impl Item for Wide {
    const NAME: &'static str = "64B";
    fn new(v: u64) -> Self {
        Wide([v; 8])
    }
    fn val(&self) -> u64 {
        self.0[7]
    }
}

/// The sum of the values `0..total` as submitted by `producers` threads.
pub fn expected(producers: usize, per: u64) -> (u64, u64) {
    let total = producers as u64 * per;
    (total, (0..total).sum())
}

/// What every consumer does with a batch: count and sum it.
#[derive(Default)]
pub struct Tally {
    pub count: AtomicU64,
    pub sum: AtomicU64,
}

impl Tally {
    pub fn add<T: Item>(&self, batch: &[T]) {
        let s: u64 = batch.iter().map(Item::val).sum();
        self.sum.fetch_add(s, Ordering::Relaxed);
        self.count.fetch_add(batch.len() as u64, Ordering::Release);
    }
    pub fn wait_for(&self, n: u64) {
        let start = Instant::now();
        while self.count.load(Ordering::Acquire) < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "consumer stalled"
            );
            thread::yield_now();
        }
    }
    pub fn result(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Acquire),
            self.sum.load(Ordering::Relaxed),
        )
    }
}

/// Spawns `producers` threads that wait on a barrier and then call
/// `submit(value)` for their share of `0..producers*per`; returns the time
/// from release until `done()` returns.
fn drive<T: Item, S>(
    producers: usize,
    per: u64,
    make: impl Fn() -> S,
    done: impl FnOnce(),
) -> Duration
where
    S: FnMut(T) + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(producers + 1));
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let b = Arc::clone(&barrier);
            let mut submit = make();
            thread::spawn(move || {
                b.wait();
                let base = p as u64 * per;
                for i in 0..per {
                    submit(T::new(base + i));
                }
            })
        })
        .collect();
    // The clock starts before the release: taken after it, a main thread
    // descheduled at the barrier would start it after the work was done.
    let start = Instant::now();
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    done();
    start.elapsed()
}

pub type Outcome = (Duration, u64, u64);

pub fn microbatch<T: Item>(producers: usize, per: u64, shards: Option<usize>) -> Outcome {
    microbatch_with::<T>(producers, per, |b| match shards {
        Some(s) => b.shards(s),
        None => b,
    })
}

/// [`microbatch`] with the builder configured by `configure` (lanes,
/// barrier mode, shards).
pub fn microbatch_with<T: Item>(
    producers: usize,
    per: u64,
    configure: impl FnOnce(microbatch::Builder<T>) -> microbatch::Builder<T>,
) -> Outcome {
    let tally = Arc::new(Tally::default());
    let t = Arc::clone(&tally);
    let b = configure(microbatch::Batcher::builder());
    let batcher = Arc::new(
        b.build(move |batch: &mut Vec<T>, _: &microbatch::BatchInfo| t.add(batch))
            .unwrap(),
    );
    let (n, _) = expected(producers, per);
    let elapsed = drive::<T, _>(
        producers,
        per,
        || {
            let b = Arc::clone(&batcher);
            move |x| b.submit(x).unwrap()
        },
        || {
            // The end of the stream: without it the last partial batch would
            // wait for its time trigger (`max_delay`) inside the timing.
            batcher.flush().unwrap();
            tally.wait_for(n)
        },
    );
    let r = tally.result();
    drop(batcher);
    (elapsed, r.0, r.1)
}

/// The single-writer floor: one `rtrb` ring per producer, the consumer
/// taking a ring's items only as whole batches of `BATCH` (or the rest at
/// the end of the stream) and yielding otherwise, as a flusher paces
/// itself — no time trigger, no close, no flush, no wake-up protocol.
pub fn rtrb_floor<T: Item>(producers: usize, per: u64) -> Outcome {
    rtrb_per_producer::<T>(producers, per, true)
}

/// One `rtrb` ring per producer. `paced`: the consumer takes whole
/// batches and yields when there are none, and a producer on a full ring
/// yields (the floor); else it takes whatever is there and spins, as does
/// a producer on a full ring (the greedy rings).
fn rtrb_per_producer<T: Item>(producers: usize, per: u64, paced: bool) -> Outcome {
    let tally = Arc::new(Tally::default());
    let mut consumers = Vec::new();
    let mut rings = Vec::new();
    for _ in 0..producers {
        let (p, c) = rtrb::RingBuffer::<T>::new(DEPTH);
        rings.push(Mutex::new(Some(p)));
        consumers.push(c);
    }
    let (n, _) = expected(producers, per);
    let t = Arc::clone(&tally);
    let idle = move || {
        if paced {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    let consumer = thread::spawn(move || {
        let mut buf = Vec::with_capacity(BATCH);
        while t.count.load(Ordering::Relaxed) < n {
            let mut nothing = true;
            // Near the end, take partial batches (the stream's tail).
            let ending = n - t.count.load(Ordering::Relaxed) < (BATCH * consumers.len()) as u64;
            for c in consumers.iter_mut() {
                let avail = c.slots();
                if avail >= BATCH || (avail > 0 && (ending || !paced)) {
                    nothing = false;
                    let chunk = c.read_chunk(avail.min(BATCH)).unwrap();
                    buf.extend(chunk);
                    t.add(&buf);
                    buf.clear();
                }
            }
            if nothing {
                idle();
            }
        }
    });
    let next = AtomicU64::new(0);
    let elapsed = drive::<T, _>(
        producers,
        per,
        || {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            let mut p = rings[i].lock().unwrap().take().unwrap();
            move |x: T| {
                let mut x = x;
                loop {
                    match p.push(x) {
                        Ok(()) => break,
                        Err(rtrb::PushError::Full(back)) => {
                            x = back;
                            idle();
                        }
                    }
                }
            }
        },
        || tally.wait_for(n),
    );
    consumer.join().unwrap();
    let r = tally.result();
    (elapsed, r.0, r.1)
}

/// The drain loop users write around a channel: wait up to 1 ms for the
/// first item, then take what is there up to a batch. One body for both
/// channel flavours: they differ only in their types.
macro_rules! channel_batcher {
    ($name:ident, $make:expr, $timeout:pat) => {
        pub fn $name<T: Item>(producers: usize, per: u64) -> Outcome {
            let tally = Arc::new(Tally::default());
            let (tx, rx) = $make;
            let t = Arc::clone(&tally);
            let consumer = thread::spawn(move || {
                let mut buf = Vec::with_capacity(BATCH);
                loop {
                    match rx.recv_timeout(Duration::from_millis(1)) {
                        Ok(x) => {
                            buf.push(x);
                            while buf.len() < BATCH {
                                match rx.try_recv() {
                                    Ok(x) => buf.push(x),
                                    Err(_) => break,
                                }
                            }
                            t.add(&buf);
                            buf.clear();
                        }
                        Err($timeout) => continue,
                        Err(_) => break,
                    }
                }
            });
            let (n, _) = expected(producers, per);
            let elapsed = drive::<T, _>(
                producers,
                per,
                || {
                    let tx = tx.clone();
                    move |x| tx.send(x).unwrap()
                },
                || tally.wait_for(n),
            );
            drop(tx);
            consumer.join().unwrap();
            let r = tally.result();
            (elapsed, r.0, r.1)
        }
    };
}

channel_batcher!(
    std_channel,
    mpsc::sync_channel::<T>(DEPTH),
    mpsc::RecvTimeoutError::Timeout
);
channel_batcher!(
    crossbeam_channel,
    crossbeam_channel::bounded::<T>(DEPTH),
    crossbeam_channel::RecvTimeoutError::Timeout
);

/// `Mutex<Vec>` swapped by the consumer: bounded at `DEPTH`, the consumer
/// woken when a batch is ready or every millisecond.
pub fn mutex_vec<T: Item>(producers: usize, per: u64) -> Outcome {
    struct Shared<T> {
        items: Mutex<(Vec<T>, bool)>,
        ready: Condvar,
        room: Condvar,
    }
    let shared = Arc::new(Shared {
        items: Mutex::new((Vec::with_capacity(DEPTH), false)),
        ready: Condvar::new(),
        room: Condvar::new(),
    });
    let tally = Arc::new(Tally::default());
    let (s, t) = (Arc::clone(&shared), Arc::clone(&tally));
    let consumer = thread::spawn(move || {
        let mut mine = Vec::with_capacity(DEPTH);
        loop {
            let mut g = s.items.lock().unwrap();
            while g.0.len() < BATCH && !g.1 {
                let (ng, to) = s.ready.wait_timeout(g, Duration::from_millis(1)).unwrap();
                g = ng;
                if to.timed_out() {
                    break;
                }
            }
            let closing = g.1;
            std::mem::swap(&mut g.0, &mut mine);
            drop(g);
            s.room.notify_all();
            if !mine.is_empty() {
                t.add(&mine);
                mine.clear();
            } else if closing {
                break;
            }
        }
    });
    let (n, _) = expected(producers, per);
    let elapsed = drive::<T, _>(
        producers,
        per,
        || {
            let s = Arc::clone(&shared);
            move |x| {
                let mut g = s.items.lock().unwrap();
                while g.0.len() >= DEPTH {
                    g = s.room.wait(g).unwrap();
                }
                g.0.push(x);
                if g.0.len() == BATCH {
                    s.ready.notify_one();
                }
            }
        },
        || {
            // The end of the stream: the consumer swaps what is left at once
            // instead of at its next 1 ms tick.
            shared.items.lock().unwrap().1 = true;
            shared.ready.notify_one();
            tally.wait_for(n)
        },
    );
    consumer.join().unwrap();
    let r = tally.result();
    (elapsed, r.0, r.1)
}

/// The `disruptor` crate, multi-producer, batching through end-of-batch.
pub fn disruptor<T: Item + Default>(producers: usize, per: u64) -> Outcome {
    let tally = Arc::new(Tally::default());
    let t = Arc::clone(&tally);
    let mut buf: Vec<T> = Vec::with_capacity(BATCH);
    let handler = move |e: &T, _seq: disruptor::Sequence, end_of_batch: bool| {
        buf.push(*e);
        if end_of_batch || buf.len() == BATCH {
            t.add(&buf);
            buf.clear();
        }
    };
    let producer =
        disruptor::build_multi_producer(DEPTH, T::default, disruptor::BusySpinWithSpinLoopHint)
            .handle_events_with(handler)
            .build();
    let (n, _) = expected(producers, per);
    let template = Mutex::new(producer);
    let elapsed = drive::<T, _>(
        producers,
        per,
        || {
            let mut p = template.lock().unwrap().clone();
            move |x: T| disruptor::Producer::publish(&mut p, |e| *e = x)
        },
        || tally.wait_for(n),
    );
    drop(template);
    let r = tally.result();
    (elapsed, r.0, r.1)
}

/// One `rtrb` ring per producer and one consumer polling them all: no
/// batching semantics, just the hand-off — the ceiling.
pub fn rtrb_rings<T: Item>(producers: usize, per: u64) -> Outcome {
    rtrb_per_producer::<T>(producers, per, false)
}

/// Median ns per item over `runs` runs, each checked for exact delivery.
pub fn per_item(runs: usize, producers: usize, per: u64, run: impl Fn() -> Outcome) -> f64 {
    let (count, sum) = expected(producers, per);
    median(
        (0..runs)
            .map(|_| {
                let (took, c, s) = run();
                assert_eq!((c, s), (count, sum), "an adapter lost or duplicated items");
                took.as_nanos() as f64 / count as f64
            })
            .collect(),
    )
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
