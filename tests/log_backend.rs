//! Feature `log`: a log backend that ships its records through a microbatch
//! batcher (a telemetry agent's usual wiring) neither recurses nor
//! deadlocks, and failures are logged at `warn`.

use microbatch::{BatchInfo, Batcher};
use std::sync::{Mutex, OnceLock};

/// What the backend saw: (level, message).
static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
/// The batcher the backend ships records through.
static SHIP: OnceLock<Batcher<String>> = OnceLock::new();
/// A batcher under test, which the backend also pokes (closing it is the
/// worst a backend can do from inside a `log` call).
static WATCHED: OnceLock<Batcher<u32>> = OnceLock::new();

struct Shipper;

impl log::Log for Shipper {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args().to_string();
        RECORDS.lock().unwrap().push((record.level(), msg.clone()));
        if let Some(ship) = SHIP.get() {
            // Every record becomes an item: a per-item log on the submit
            // path would recurse here until the stack overflows.
            let _ = ship.try_submit(msg);
        }
        if let Some(w) = WATCHED.get() {
            // Re-entering the batcher that is logging.
            let _ = w.is_closed();
            if record.args().to_string().contains("closed") {
                w.close();
            }
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_backend_that_ships_through_a_batcher() {
    log::set_logger(&Shipper).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let ship = Batcher::builder()
        .build(|batch: &mut Vec<String>, _: &BatchInfo| batch.clear())
        .unwrap();
    assert!(SHIP.set(ship).is_ok());
    let watched = Batcher::builder()
        .build(
            |batch: &mut Vec<u32>, _: &BatchInfo| -> Result<(), String> {
                if batch.contains(&7) {
                    return Err("sink down".into());
                }
                batch.clear();
                Ok(())
            },
        )
        .unwrap();
    assert!(WATCHED.set(watched).is_ok());
    let w = WATCHED.get().unwrap();
    for i in 0..10_000 {
        w.submit(i % 7 + 1).unwrap();
    }
    w.flush().unwrap();
    // `close` logs while the backend closes the batcher again: no lock is
    // held across the log call, so this returns.
    common::bounded("close with a re-entrant log backend", || {
        WATCHED.get().unwrap().close();
    });
    let m = w.metrics();
    assert_eq!(m.submitted, 10_000);
    let records = RECORDS.lock().unwrap();
    assert!(
        records.len() < 1_000,
        "no per-item records on the submit path: {} records",
        records.len()
    );
    let failed: Vec<_> = records
        .iter()
        .filter(|(_, m)| m.contains("failed"))
        .collect();
    assert!(!failed.is_empty(), "a failed batch is logged");
    assert!(
        failed.iter().all(|(l, _)| *l == log::Level::Warn),
        "failures at warn: {failed:?}"
    );
}

mod common;
