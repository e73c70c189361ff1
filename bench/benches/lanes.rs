//! Lanes against their floor and their peers, same run: the targets of the
//! lanes work, measured in interleaved rounds (every adapter once per
//! round, the order fixed) so each ratio compares adapters in one state of
//! the host.
//!
//! Rows (ns/item end to end, u64 and 64-byte items, batch 512, capacity
//! 1024 per queue):
//! - `lanes`: the default batcher (a lane per core, membarrier where the
//!   process may use it); `lanes-fence`: the same in fence mode; `shards`:
//!   `lanes(0)`, one CAS per submit (the engine before lanes);
//! - `floor`: one `rtrb` ring per producer, the consumer taking whole
//!   batches (`common::rtrb_floor`); `std`, `crossbeam`: the channel
//!   batchers;
//! - 8 producers on 2 lanes + 1 shard against `lanes(0)` (2 shards);
//! - submit alone with the flusher parked, against `ArrayQueue::push`;
//! - sparse traffic: heavy barriers per batch and per wake-up.
//!
//! `cargo bench -p microbatch-bench --bench lanes -- [rounds]` (default 9);
//! `cargo test -p microbatch-bench --benches` runs one small round.

mod common;

use common::*;
use crossbeam_queue::ArrayQueue;
use microbatch::{BarrierMode, BatchInfo, Batcher, WaitStrategy};
use std::time::{Duration, Instant};

/// ns per submit on one thread into a batcher whose flusher sleeps (no
/// time trigger, chunks of 256 below the batch size, capacity 1024): as
/// the criterion `submit` bench, a `flush` between chunks (untimed)
/// empties the queue, so every slot is warm; median of `runs`.
fn submit_parked(runs: usize, n: usize, mode: Option<BarrierMode>) -> f64 {
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
                let mut timed = Duration::ZERO;
                let mut done = 0u64;
                while done < n as u64 {
                    let start = Instant::now();
                    for i in 0..256 {
                        batcher.submit(std::hint::black_box(done + i)).unwrap();
                    }
                    timed += start.elapsed();
                    done += 256;
                    batcher.flush().unwrap();
                }
                batcher.shutdown();
                timed.as_nanos() as f64 / done as f64
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
                let mut timed = Duration::ZERO;
                let mut done = 0u64;
                while done < n as u64 {
                    let start = Instant::now();
                    for i in 0..256 {
                        q.push(std::hint::black_box(done + i)).unwrap();
                    }
                    timed += start.elapsed();
                    done += 256;
                    while q.pop().is_some() {}
                }
                timed.as_nanos() as f64 / done as f64
            })
            .collect(),
    )
}

/// One item every `gap`, `items` times: heavy barriers per batch and per
/// flusher wake-up, and the metrics' verdict on the mode.
fn sparse(items: u64, gap: Duration) -> (f64, f64, bool) {
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
        m.heavy_barriers as f64 / m.flusher_wakeups.max(1) as f64,
        m.asymmetric_barrier,
    )
}

fn main() {
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
    let mut alone: Vec<[f64; 4]> = Vec::new();
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
            submit_parked(runs, n, Some(BarrierMode::Auto)),
            submit_parked(runs, n, Some(BarrierMode::Fence)),
            submit_parked(runs, n, None),
            array_queue_push(runs, n),
        ];
        println!(
            "round {r} submit alone, flusher parked: lane {:.2} lane-fence {:.2} shard {:.2} ArrayQueue::push {:.2}",
            a[0], a[1], a[2], a[3]
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
    let (items, gap) = if full {
        (2000, Duration::from_micros(300))
    } else {
        (50, Duration::from_micros(300))
    };
    let (per_batch, per_wake, asym) = sparse(items, gap);
    println!(
        "  sparse ({items} items, one per {gap:?}): heavy barriers per batch {per_batch:.2}, per flusher wake-up {per_wake:.2} (membarrier mode: {asym})"
    );
}
