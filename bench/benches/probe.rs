//! Same-second probes: every two-producer e2e adapter (and the one-producer
//! u64 ones) run within about a second, the probe repeated every few seconds,
//! with a two-thread cache-line ping-pong after each probe, so each line
//! compares the adapters in one state of the host and says what a line
//! between the cores cost at the time.
//!
//! A criterion group runs its adapters one after another for seconds each;
//! on a host whose state flips within minutes (the VM of BENCHMARKS.md) a
//! group can compare one adapter in one state with another in the other.
//! These probes cannot.
//!
//! `cargo bench -p microbatch-bench --bench probe -- [probes] [seconds between probes]`
//! (default 30 probes, 10 s apart). Prints one line per probe and the
//! median over the probes of each ratio (faster channel batcher or
//! `Mutex<Vec>` over microbatch, per probe). `cargo test -p microbatch-bench --benches` runs one
//! small probe as a check.

mod common;

use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Median round trip of one cache line between two threads, in ns.
fn ping_pong(rounds: u64) -> f64 {
    #[repr(align(128))]
    struct Line(AtomicU64);
    let trips: Vec<f64> = (0..5)
        .map(|_| {
            let line = Arc::new(Line(AtomicU64::new(0)));
            let other = Arc::clone(&line);
            let echo = std::thread::spawn(move || {
                for i in 0..rounds {
                    while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    other.0.store(2 * i + 2, Ordering::Release);
                }
            });
            let start = Instant::now();
            for i in 0..rounds {
                line.0.store(2 * i + 1, Ordering::Release);
                while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
            }
            let took = start.elapsed();
            echo.join().unwrap();
            took.as_nanos() as f64 / rounds as f64
        })
        .collect();
    median(trips)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let (probes, gap, runs, per, rounds) = if full {
        let probes = numbers.next().unwrap_or(30).max(1);
        let gap = numbers.next().unwrap_or(10);
        (probes, gap, 9, 100_000, 200_000)
    } else {
        (1, 0, 1, 10_000, 10_000)
    };
    println!("same-second probes: ns/item (median of {runs} runs), ping-pong round trip in ns");
    let mut ratios: [Vec<f64>; 5] = Default::default();
    for k in 0..probes {
        let one = [
            per_item(runs, 1, per, || microbatch::<u64>(1, per, None)),
            per_item(runs, 1, per, || rtrb_rings::<u64>(1, per)),
            per_item(runs, 1, per, || std_channel::<u64>(1, per)),
            per_item(runs, 1, per, || crossbeam_channel::<u64>(1, per)),
        ];
        let two = [
            per_item(runs, 2, per, || microbatch::<u64>(2, per, None)),
            per_item(runs, 2, per, || std_channel::<u64>(2, per)),
            per_item(runs, 2, per, || crossbeam_channel::<u64>(2, per)),
            per_item(runs, 2, per, || mutex_vec::<u64>(2, per)),
        ];
        let wide = [
            per_item(runs, 2, per, || microbatch::<Wide>(2, per, None)),
            per_item(runs, 2, per, || std_channel::<Wide>(2, per)),
            per_item(runs, 2, per, || crossbeam_channel::<Wide>(2, per)),
            per_item(runs, 2, per, || mutex_vec::<Wide>(2, per)),
        ];
        let trip = ping_pong(rounds);
        println!(
            "probe {k}: u64 1p microbatch {:.1} rtrb {:.1} std {:.1} crossbeam {:.1} | \
             u64 2p microbatch {:.1} std {:.1} crossbeam {:.1} mutex-vec {:.1} | \
             64B 2p microbatch {:.1} std {:.1} crossbeam {:.1} mutex-vec {:.1} | ping-pong {trip:.0}",
            one[0], one[1], one[2], one[3], two[0], two[1], two[2], two[3], wide[0], wide[1],
            wide[2], wide[3],
        );
        ratios[0].push(one[2].min(one[3]) / one[0]);
        ratios[1].push(two[1].min(two[2]) / two[0]);
        ratios[2].push(two[3] / two[0]);
        ratios[3].push(wide[1].min(wide[2]) / wide[0]);
        ratios[4].push(wide[3] / wide[0]);
        if k + 1 < probes {
            std::thread::sleep(Duration::from_secs(gap));
        }
    }
    let names = [
        "u64 1p: faster channel batcher / microbatch",
        "u64 2p: faster channel batcher / microbatch",
        "u64 2p: mutex-vec / microbatch",
        "64B 2p: faster channel batcher / microbatch",
        "64B 2p: mutex-vec / microbatch",
    ];
    println!("median over {probes} probes (>1: microbatch is faster):");
    for (name, r) in names.iter().zip(ratios) {
        let (lo, hi) = r
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        println!("  {name}: {:.2}x ({lo:.2}-{hi:.2})", median(r));
    }
}
