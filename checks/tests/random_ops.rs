//! Property-based state-machine test: random sequences of API calls on a
//! randomly configured batcher, checked against a simple model (a list of
//! accepted items, a closed flag, refusal counts).
//!
//! The sequences run on one thread: proptest shrinks sequential programs;
//! the concurrent interleavings are the loom models' and the torture test's
//! job.

use microbatch::{
    Backpressure, BatchInfo, Batcher, FlushError, SubmitError, SubmitManyError, SubmitTimeoutError,
    TrySubmitError,
};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Submit(u16),
    TrySubmit(u16),
    SubmitTimeout(u16),
    SubmitMany(Vec<u16>),
    TrySubmitMany(Vec<u16>),
    Flush,
    FlushTimeout,
    Close,
    Metrics,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u16>().prop_map(Op::Submit),
        3 => any::<u16>().prop_map(Op::TrySubmit),
        2 => any::<u16>().prop_map(Op::SubmitTimeout),
        2 => prop::collection::vec(any::<u16>(), 0..20).prop_map(Op::SubmitMany),
        1 => prop::collection::vec(any::<u16>(), 0..20).prop_map(Op::TrySubmitMany),
        2 => Just(Op::Flush),
        1 => Just(Op::FlushTimeout),
        1 => Just(Op::Close),
        2 => Just(Op::Metrics),
    ]
}

#[derive(Debug, Clone)]
struct Config {
    batch: usize,
    capacity_factor: usize,
    shards: usize,
    delay: Duration,
    policy: Backpressure,
    drop_at_end: bool,
}

fn config() -> impl Strategy<Value = Config> {
    (
        1usize..8,
        1usize..4,
        1usize..4,
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_micros(500)),
            Just(Duration::MAX)
        ],
        prop_oneof![
            Just(Backpressure::Block),
            Just(Backpressure::Reject),
            Just(Backpressure::BlockTimeout(Duration::from_millis(1)))
        ],
        any::<bool>(),
    )
        .prop_map(
            |(batch, capacity_factor, shards, delay, policy, drop_at_end)| Config {
                batch,
                capacity_factor,
                shards,
                delay,
                policy,
                drop_at_end,
            },
        )
}

#[derive(Default)]
struct Model {
    accepted: Vec<u16>,
    closed: bool,
    full: u64,
    timeout: u64,
    closed_refusals: u64,
}

impl Model {
    fn refused_closed(&mut self, n: u64) {
        assert!(self.closed, "refused as closed while open");
        self.closed_refusals += n;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn api_sequences_match_the_model(cfg in config(), ops in prop::collection::vec(op(), 1..40)) {
        let seen: Arc<Mutex<Vec<u16>>> = Arc::default();
        let s = Arc::clone(&seen);
        let batcher = Batcher::builder()
            .max_batch_size(cfg.batch)
            .capacity(cfg.batch * cfg.capacity_factor)
            .shards(cfg.shards)
            .max_delay(cfg.delay)
            .backpressure(cfg.policy)
            .build(move |batch: &mut Vec<u16>, info: &BatchInfo| {
                assert!(batch.len() <= info.len.max(1));
                s.lock().unwrap().extend(batch.drain(..));
            })
            .unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Submit(x) => match batcher.submit(x) {
                    Ok(()) => { prop_assert!(!m.closed); m.accepted.push(x) }
                    Err(SubmitError::Closed(y)) => { prop_assert_eq!(y, x); m.refused_closed(1) }
                    Err(SubmitError::Full(y)) => {
                        prop_assert_eq!(y, x);
                        prop_assert_eq!(cfg.policy, Backpressure::Reject);
                        m.full += 1;
                    }
                    Err(SubmitError::Timeout(y)) => {
                        prop_assert_eq!(y, x);
                        prop_assert!(matches!(cfg.policy, Backpressure::BlockTimeout(_)));
                        m.timeout += 1;
                    }
                    Err(e) => prop_assert!(false, "a refusal of an unknown kind: {e:?}"),
                },
                Op::TrySubmit(x) => match batcher.try_submit(x) {
                    Ok(()) => { prop_assert!(!m.closed); m.accepted.push(x) }
                    Err(TrySubmitError::Closed(y)) => { prop_assert_eq!(y, x); m.refused_closed(1) }
                    Err(TrySubmitError::Full(y)) => { prop_assert_eq!(y, x); prop_assert!(!m.closed); m.full += 1 }
                    Err(e) => prop_assert!(false, "a refusal of an unknown kind: {e:?}"),
                },
                Op::SubmitTimeout(x) => match batcher.submit_timeout(x, Duration::from_millis(1)) {
                    Ok(()) => { prop_assert!(!m.closed); m.accepted.push(x) }
                    Err(SubmitTimeoutError::Closed(y)) => { prop_assert_eq!(y, x); m.refused_closed(1) }
                    Err(SubmitTimeoutError::Timeout(y)) => { prop_assert_eq!(y, x); m.timeout += 1 }
                    Err(e) => prop_assert!(false, "a refusal of an unknown kind: {e:?}"),
                },
                Op::SubmitMany(xs) | Op::TrySubmitMany(xs) if xs.is_empty() => {
                    let mut v = xs;
                    prop_assert!(batcher.submit_many(&mut v).is_ok());
                }
                Op::SubmitMany(xs) => {
                    let mut v = xs.clone();
                    let r = batcher.submit_many(&mut v);
                    let taken = xs.len() - v.len();
                    prop_assert_eq!(&xs[taken..], &v[..], "the rest comes back in order");
                    m.accepted.extend_from_slice(&xs[..taken]);
                    match r {
                        Ok(()) => prop_assert!(v.is_empty()),
                        Err(SubmitManyError::Closed) => m.refused_closed(v.len() as u64),
                        Err(SubmitManyError::Full) => { prop_assert_eq!(cfg.policy, Backpressure::Reject); m.full += v.len() as u64 }
                        Err(SubmitManyError::Timeout) => m.timeout += v.len() as u64,
                        Err(e) => prop_assert!(false, "a refusal of an unknown kind: {e:?}"),
                    }
                }
                Op::TrySubmitMany(xs) => {
                    let mut v = xs.clone();
                    let r = batcher.try_submit_many(&mut v);
                    let taken = xs.len() - v.len();
                    prop_assert_eq!(&xs[taken..], &v[..]);
                    m.accepted.extend_from_slice(&xs[..taken]);
                    match r {
                        Ok(()) => prop_assert!(v.is_empty()),
                        Err(SubmitManyError::Closed) => m.refused_closed(v.len() as u64),
                        Err(SubmitManyError::Full) => m.full += v.len() as u64,
                        Err(SubmitManyError::Timeout) => prop_assert!(false, "try never times out"),
                        Err(e) => prop_assert!(false, "a refusal of an unknown kind: {e:?}"),
                    }
                }
                Op::Flush => {
                    let r = batcher.flush();
                    if m.closed {
                        prop_assert_eq!(r, Err(FlushError::Closed));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        prop_assert_eq!(&*seen.lock().unwrap(), &m.accepted, "flush is a barrier");
                    }
                }
                Op::FlushTimeout => {
                    let r = batcher.flush_timeout(Duration::from_secs(20));
                    prop_assert_eq!(r.is_ok(), !m.closed);
                }
                Op::Close => { batcher.close(); m.closed = true }
                Op::Metrics => {
                    let x = batcher.metrics();
                    prop_assert_eq!(x.submitted, m.accepted.len() as u64);
                    prop_assert_eq!(x.processed + x.failed + x.in_flight + x.queue_depth, x.submitted);
                    prop_assert_eq!(x.rejected_full, m.full);
                    prop_assert_eq!(x.rejected_timeout, m.timeout);
                    prop_assert_eq!(x.rejected_closed, m.closed_refusals);
                }
            }
        }
        let processed = if cfg.drop_at_end {
            drop(batcher);
            seen.lock().unwrap().len() as u64
        } else {
            let report = batcher.shutdown();
            prop_assert_eq!(report.submitted, m.accepted.len() as u64);
            prop_assert_eq!(report.queue_depth, 0);
            report.processed
        };
        prop_assert_eq!(processed, m.accepted.len() as u64);
        prop_assert_eq!(&*seen.lock().unwrap(), &m.accepted, "processed = accepted, in order");
    }
}
