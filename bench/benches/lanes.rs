//! Lanes against their floor and their peers, same run: the targets of the
//! lanes work, measured in interleaved rounds (every adapter once per
//! round, the order fixed) so each ratio compares adapters in one state of
//! the host.
//!
//! Rows (ns/item end to end, u64 and 64-byte items, batch 512, capacity
//! 1024 per queue):
//! - `lanes`: the default batcher (a lane per core, the process-wide
//!   barrier where the process may use it); `lanes-fence`: the same in
//!   fence mode; `shards`: `lanes(0)`, one CAS per submit (the engine
//!   before lanes);
//! - `floor`: one `rtrb` ring per producer, the consumer taking whole
//!   batches (`common::rtrb_floor`); `std`, `crossbeam`: the channel
//!   batchers;
//! - 8 producers on 2 lanes + 1 shard against `lanes(0)` (2 shards);
//! - submit alone with the flusher parked, against `ArrayQueue::push`;
//!   the same through a `Producer` handle; and submit alone on a thread
//!   that polls the flusher itself (the slot lines never leave its core,
//!   as `ArrayQueue`'s here);
//! - sparse traffic: heavy barriers per batch and per wake-up; then, for
//!   lanes, lanes in fence mode and `lanes(0)`: the CPU an idle batcher
//!   uses, the CPU per item at one item per 300 µs, and a lone item's
//!   dispatch time past `max_delay`.
//!
//! `cargo bench -p microbatch-bench --bench lanes -- [rounds]` (default 9);
//! `cargo test -p microbatch-bench --benches` runs one small round.

mod common;

use common::*;
use crossbeam_queue::ArrayQueue;
use microbatch::{BarrierMode, BatchInfo, Batcher, WaitStrategy};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ns per item of `item`, called with `n` numbers (rounded up to whole
/// chunks) in timed chunks of 256, with `between` run untimed after each
/// chunk.
fn chunked(n: usize, mut item: impl FnMut(u64), mut between: impl FnMut()) -> f64 {
    let mut timed = Duration::ZERO;
    let mut done = 0u64;
    while done < n as u64 {
        let start = Instant::now();
        for i in 0..256 {
            item(std::hint::black_box(done + i));
        }
        timed += start.elapsed();
        done += 256;
        between();
    }
    timed.as_nanos() as f64 / done as f64
}

/// ns per submit on one thread into a batcher whose flusher sleeps (no
/// time trigger, chunks of 256 below the batch size, capacity 1024): as
/// the criterion `submit` bench, a `flush` between chunks (untimed)
/// empties the queue, so every slot is warm; through a `Producer` handle
/// (no thread-local lookup per submit) if `handle`; median of `runs`.
fn submit_parked(runs: usize, n: usize, mode: Option<BarrierMode>, handle: bool) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let mut b = Batcher::builder()
                    .max_batch_size(512)
                    .capacity(1024)
                    .max_delay(Duration::MAX)
                    .wait_strategy(WaitStrategy::Park);
                b = match mode {
                    Some(m) => b.barrier(m),
                    None => b.lanes(0),
                };
                let batcher = b
                    .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
                    .unwrap();
                let flush = || batcher.flush().unwrap();
                let ns = if handle {
                    let mut p = batcher.producer();
                    chunked(n, |x| p.submit(x).unwrap(), flush)
                } else {
                    chunked(n, |x| batcher.submit(x).unwrap(), flush)
                };
                batcher.shutdown();
                ns
            })
            .collect(),
    )
}

/// ns per submit on one thread that also runs the flusher (poll mode):
/// chunks of 256, one batch each, dispatched by a `poll` between chunks
/// (untimed) on the same thread, so the slot lines never leave its core,
/// as `ArrayQueue`'s pops in `array_queue_push`; median of `runs`.
fn submit_polled(runs: usize, n: usize) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let (batcher, mut flusher) = Batcher::builder()
                    .max_batch_size(256)
                    .capacity(1024)
                    .max_delay(Duration::MAX)
                    .build_with_flusher(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
                    .unwrap();
                let ns = chunked(
                    n,
                    |x| batcher.submit(x).unwrap(),
                    || assert_eq!(flusher.poll().items, 256, "one poll dispatches the chunk"),
                );
                batcher.close();
                let t = Instant::now();
                while flusher.poll().state != microbatch::PollState::Closed {
                    assert!(
                        t.elapsed() < Duration::from_secs(10),
                        "the drain did not end"
                    );
                }
                ns
            })
            .collect(),
    )
}

/// ns per `ArrayQueue::push`, chunks of 256 popped between (untimed).
fn array_queue_push(runs: usize, n: usize) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let q = ArrayQueue::new(1024);
                chunked(n, |x| q.push(x).unwrap(), || while q.pop().is_some() {})
            })
            .collect(),
    )
}

/// One item every `gap`, `items` times (`max_delay` 100 µs): heavy
/// barriers per batch, the unparks by producers, `flush` and `close`
/// (`flusher_wakeups` counts only those: a flusher that parked until its
/// time trigger wakes by itself), and the metrics' verdict on the mode.
fn sparse(items: u64, gap: Duration) -> (f64, u64, bool) {
    let batcher = Batcher::builder()
        .max_delay(Duration::from_micros(100))
        .build(|batch: &mut Vec<u64>, _: &BatchInfo| batch.clear())
        .unwrap();
    for i in 0..items {
        batcher.submit(i).unwrap();
        std::thread::sleep(gap);
    }
    let m = batcher.shutdown();
    (
        m.heavy_barriers as f64 / m.batches().max(1) as f64,
        m.flusher_wakeups,
        m.asymmetric_barrier,
    )
}

/// CPU time (user + system) this process has used so far; zero where
/// there is no `getrusage` (the CPU rows then read 0).
#[cfg(not(unix))]
fn cpu_time() -> Duration {
    Duration::ZERO
}

/// CPU time (user + system) this process has used so far.
#[cfg(unix)]
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the struct it is given and reads nothing
    // else; a zeroed `rusage` (integers and `timeval`s) is a valid value.
    let (rc, u) = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut u), u)
    };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The three modes the sparse rows compare: lanes with the process-wide
/// barrier (the default), lanes in fence mode, `lanes(0)` (CAS shards,
/// the engine before lanes).
const SPARSE_MODES: [&str; 3] = ["lanes", "lanes-fence", "lanes(0)"];

/// The sparse rows' `max_delay` (the default).
const SPARSE_MAX_DELAY: Duration = Duration::from_millis(1);

fn sparse_builder(mode: usize) -> microbatch::Builder<u64> {
    let b = Batcher::builder().max_delay(SPARSE_MAX_DELAY);
    match mode {
        0 => b,
        1 => b.barrier(BarrierMode::Fence),
        _ => b.lanes(0),
    }
}

/// Sparse traffic, `max_delay` 1 ms (the default): CPU the process uses per
/// second while the batcher sits idle, and per item at one item per
/// `gap`; then the lone item's dispatch time past `max_delay`, the
/// flusher parked for 30 ms before each submit (median of `lone`).
/// Returns (idle CPU in % of one CPU, CPU µs per sparse item, µs past
/// `max_delay`).
fn sparse_cost(mode: usize, idle: Duration, items: u64, gap: Duration, lone: usize) -> [f64; 3] {
    let seen = Arc::new(Mutex::new(None::<Instant>));
    let s = Arc::clone(&seen);
    let batcher = sparse_builder(mode)
        .build(move |batch: &mut Vec<u64>, _: &BatchInfo| {
            *s.lock().unwrap() = Some(Instant::now());
            batch.clear();
        })
        .unwrap();
    // The flusher has started and handled an item; then it goes idle.
    batcher.submit(0).unwrap();
    batcher.flush().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let c0 = cpu_time();
    std::thread::sleep(idle);
    let idle_cpu = (cpu_time() - c0).as_secs_f64() / idle.as_secs_f64() * 100.0;
    let c0 = cpu_time();
    for i in 0..items {
        batcher.submit(i).unwrap();
        std::thread::sleep(gap);
    }
    let per_item = (cpu_time() - c0).as_secs_f64() * 1e6 / items as f64;
    let max_delay = SPARSE_MAX_DELAY;
    let mut past = Vec::new();
    for i in 0..lone {
        batcher.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        *seen.lock().unwrap() = None;
        let at = Instant::now();
        batcher.submit(i as u64).unwrap();
        let done = loop {
            if let Some(t) = *seen.lock().unwrap() {
                break t;
            }
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "the lone item was never processed"
            );
            std::thread::yield_now();
        };
        past.push((done - at).as_secs_f64() * 1e6 - max_delay.as_secs_f64() * 1e6);
    }
    batcher.shutdown();
    [idle_cpu, per_item, median(past)]
}

/// (steal, busy, all) clock ticks of the whole machine so far
/// (`/proc/stat`'s first line; busy: all but idle and iowait; `None` where
/// there is no such file): how much CPU time the host took from this VM
/// while the probe ran.
fn host_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let all: u64 = fields.iter().take(8).sum();
    let busy = all - fields.get(3)? - fields.get(4)?;
    Some((*fields.get(7)?, busy, all))
}

fn main() {
    let ticks_at_start = host_ticks();
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full {
        std::env::args()
            .skip(1)
            .filter_map(|a| a.parse::<usize>().ok())
            .next()
            .unwrap_or(9)
    } else {
        1
    };
    let (runs, per) = if full { (5, 200_000) } else { (1, 10_000) };
    let lanes = |b: microbatch::Builder<u64>| b;
    let names = ["u64 1p", "u64 2p", "64B 1p", "64B 2p"];
    // Per round: [case][lanes, lanes-fence, shards, floor, std, crossbeam]
    let mut table: Vec<Vec<[f64; 6]>> = vec![Vec::new(); 4];
    let mut many: Vec<[f64; 2]> = Vec::new();
    let mut alone: Vec<[f64; 6]> = Vec::new();
    println!("lanes probe: ns/item, median of {runs} runs per cell, {rounds} rounds");
    for r in 0..rounds {
        for (case, &(producers, wide)) in [(1, false), (2, false), (1, true), (2, true)]
            .iter()
            .enumerate()
        {
            let row = if wide {
                [
                    per_item(runs, producers, per, || {
                        microbatch_with::<Wide>(producers, per, |b| b)
                    }),
                    per_item(runs, producers, per, || {
                        microbatch_with::<Wide>(producers, per, |b| b.barrier(BarrierMode::Fence))
                    }),
                    per_item(runs, producers, per, || {
                        microbatch_with::<Wide>(producers, per, |b| b.lanes(0))
                    }),
                    per_item(runs, producers, per, || rtrb_floor::<Wide>(producers, per)),
                    per_item(runs, producers, per, || std_channel::<Wide>(producers, per)),
                    per_item(runs, producers, per, || {
                        crossbeam_channel::<Wide>(producers, per)
                    }),
                ]
            } else {
                [
                    per_item(runs, producers, per, || {
                        microbatch_with::<u64>(producers, per, lanes)
                    }),
                    per_item(runs, producers, per, || {
                        microbatch_with::<u64>(producers, per, |b| b.barrier(BarrierMode::Fence))
                    }),
                    per_item(runs, producers, per, || {
                        microbatch_with::<u64>(producers, per, |b| b.lanes(0))
                    }),
                    per_item(runs, producers, per, || rtrb_floor::<u64>(producers, per)),
                    per_item(runs, producers, per, || std_channel::<u64>(producers, per)),
                    per_item(runs, producers, per, || {
                        crossbeam_channel::<u64>(producers, per)
                    }),
                ]
            };
            println!(
                "round {r} {}: lanes {:.2} lanes-fence {:.2} shards {:.2} floor {:.2} std {:.2} crossbeam {:.2}",
                names[case], row[0], row[1], row[2], row[3], row[4], row[5]
            );
            table[case].push(row);
        }
        let per8 = per / 4;
        let m = [
            per_item(runs, 8, per8, || {
                microbatch_with::<u64>(8, per8, |b| b.lanes(2))
            }),
            per_item(runs, 8, per8, || {
                microbatch_with::<u64>(8, per8, |b| b.lanes(0))
            }),
        ];
        println!(
            "round {r} 8p: lanes(2)+1 shard {:.2} lanes(0) {:.2}",
            m[0], m[1]
        );
        many.push(m);
        let n = if full { 1 << 14 } else { 1 << 10 };
        let a = [
            submit_parked(runs, n, Some(BarrierMode::Auto), false),
            submit_parked(runs, n, Some(BarrierMode::Fence), false),
            submit_parked(runs, n, None, false),
            array_queue_push(runs, n),
            submit_polled(runs, n),
            submit_parked(runs, n, Some(BarrierMode::Auto), true),
        ];
        println!(
            "round {r} submit alone, flusher parked: lane {:.2} lane-fence {:.2} shard {:.2} ArrayQueue::push {:.2} | lane, polled on the same thread {:.2} | lane, Producer handle {:.2}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        );
        alone.push(a);
    }
    let ratio = |xs: Vec<f64>| {
        let (lo, hi) = xs
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        format!("{:.2}x ({lo:.2}-{hi:.2})", median(xs))
    };
    println!("medians over {rounds} rounds of the per-round ratios:");
    for (case, rows) in table.iter().enumerate() {
        println!(
            "  {}: lanes/floor {} | lanes-fence/floor {} | shards/lanes {} | faster channel/lanes {}",
            names[case],
            ratio(rows.iter().map(|x| x[0] / x[3]).collect()),
            ratio(rows.iter().map(|x| x[1] / x[3]).collect()),
            ratio(rows.iter().map(|x| x[2] / x[0]).collect()),
            ratio(rows.iter().map(|x| x[4].min(x[5]) / x[0]).collect()),
        );
    }
    println!(
        "  8p: lanes(2)/lanes(0) {}",
        ratio(many.iter().map(|x| x[0] / x[1]).collect())
    );
    println!(
        "  submit alone: lane/ArrayQueue::push {} | lane-fence/ArrayQueue::push {} | shard/ArrayQueue::push {}",
        ratio(alone.iter().map(|x| x[0] / x[3]).collect()),
        ratio(alone.iter().map(|x| x[1] / x[3]).collect()),
        ratio(alone.iter().map(|x| x[2] / x[3]).collect()),
    );
    println!(
        "  submit alone, the slot lines on the submitting core (poll mode, both take on the same thread): lane/ArrayQueue::push {}",
        ratio(alone.iter().map(|x| x[4] / x[3]).collect()),
    );
    println!(
        "  submit alone, flusher parked, through a Producer handle: lane/ArrayQueue::push {}",
        ratio(alone.iter().map(|x| x[5] / x[3]).collect()),
    );
    let (items, gap) = if full {
        (2000, Duration::from_micros(300))
    } else {
        (50, Duration::from_micros(300))
    };
    let (per_batch, wakeups, asym) = sparse(items, gap);
    println!(
        "  sparse ({items} items, one per {gap:?}): heavy barriers per batch {per_batch:.2}, flusher woken by a producer, flush or close {wakeups} times (asymmetric barrier: {asym})"
    );
    let (idle, sparse_items, lone, reps) = if full {
        (Duration::from_secs(1), 2000, 15, 3)
    } else {
        (Duration::from_millis(50), 20, 2, 1)
    };
    let mut cost: Vec<Vec<[f64; 3]>> = vec![Vec::new(); 3];
    for _ in 0..reps {
        for (mode, c) in cost.iter_mut().enumerate() {
            c.push(sparse_cost(mode, idle, sparse_items, gap, lone));
        }
    }
    for (mode, c) in cost.iter().enumerate() {
        let col = |k: usize| {
            c.iter()
                .map(|x| format!("{:.2}", x[k]))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "  sparse, {}: idle CPU {}% of a CPU | CPU per item at one per {gap:?} {} µs | lone item dispatched max_delay + {} µs (median of {lone}; per repetition)",
            SPARSE_MODES[mode],
            col(0),
            col(1),
            col(2),
        );
    }
    if let (Some((s0, b0, a0)), Some((s1, b1, a1))) = (ticks_at_start, host_ticks()) {
        println!(
            "  steal: the host took {:.1}% of this machine's CPU time during the probe ({:.1}% of its busy time)",
            (s1 - s0) as f64 * 100.0 / (a1 - a0).max(1) as f64,
            (s1 - s0) as f64 * 100.0 / (b1 - b0).max(1) as f64
        );
    }
}
