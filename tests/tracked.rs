//! Per-item completion: tickets carry the processor's answer back.

mod common;

use common::{Gate, BOUND};
use microbatch::{BatchInfo, Batcher, Job, JobError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Lookup = Job<u64, String, String>;

#[test]
fn answers_reach_their_submitters() {
    let batcher = Batcher::builder()
        .max_batch_size(32)
        .build_tracked(|jobs: &mut Vec<Lookup>, _: &BatchInfo| {
            for job in jobs.iter_mut() {
                let k = *job.input();
                let r = if k % 10 == 0 {
                    Err(format!("no key {k}"))
                } else {
                    Ok(format!("value-{k}"))
                };
                assert!(job.complete(r));
                assert!(!job.complete(Ok("second answer ignored".into())));
            }
        })
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let b = &batcher;
            s.spawn(move || {
                let tickets: Vec<_> = (0..500)
                    .map(|i| (t * 1000 + i, b.submit_tracked(t * 1000 + i).unwrap()))
                    .collect();
                for (k, ticket) in tickets {
                    let got = ticket.wait();
                    if k % 10 == 0 {
                        assert_eq!(got, Err(JobError::Failed(format!("no key {k}"))));
                    } else {
                        assert_eq!(got, Ok(format!("value-{k}")));
                    }
                }
            });
        }
    });
    assert_eq!(batcher.shutdown().processed, 2000);
}

#[test]
fn unanswered_and_panicked_jobs_say_so() {
    let batcher = Batcher::builder()
        .max_batch_size(4)
        .build_tracked(|jobs: &mut Vec<Lookup>, _: &BatchInfo| {
            for job in jobs.iter_mut() {
                match *job.input() {
                    1 => drop(job.complete(Ok("one".into()))),
                    2 => {} // left unanswered
                    3 => panic!("processor fails on 3"),
                    _ => {}
                }
            }
        })
        .unwrap();
    let t1 = batcher.submit_tracked(1).unwrap();
    let t2 = batcher.submit_tracked(2).unwrap();
    batcher.flush().unwrap();
    assert_eq!(t1.wait(), Ok("one".to_string()));
    assert_eq!(t2.wait(), Err(JobError::Unanswered));
    let t3 = batcher.submit_tracked(3).unwrap();
    let t4 = batcher.submit_tracked(4).unwrap();
    assert_eq!(t3.wait(), Err(JobError::Panicked));
    assert_eq!(
        t4.wait(),
        Err(JobError::Panicked),
        "the rest of a panicked batch"
    );
    let m = batcher.shutdown();
    assert_eq!(m.processor_panics, 1);
}

#[test]
fn wait_timeout_hands_the_ticket_back() {
    let gate = Gate::default();
    let g = gate.clone();
    let batcher = Batcher::builder()
        .max_delay(Duration::ZERO)
        .build_tracked(move |jobs: &mut Vec<Job<u32, u32, ()>>, _: &BatchInfo| {
            g.wait();
            for job in jobs.iter_mut() {
                let x = *job.input();
                job.complete(Ok(x + 1));
            }
        })
        .unwrap();
    let ticket = batcher.submit_tracked(41).unwrap();
    let ticket = ticket
        .wait_timeout(Duration::from_millis(5))
        .expect_err("held at the gate");
    assert!(!ticket.is_done());
    gate.open();
    assert_eq!(ticket.wait_timeout(BOUND).unwrap(), Ok(42));
}

#[test]
fn refused_items_come_back_and_dropped_tickets_lose_nothing() {
    struct Answer(Arc<AtomicU64>);
    impl Drop for Answer {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let answers_dropped = Arc::new(AtomicU64::new(0));
    let processed = Arc::new(AtomicU64::new(0));
    let (a, p) = (Arc::clone(&answers_dropped), Arc::clone(&processed));
    let batcher = Batcher::builder()
        .build_tracked(move |jobs: &mut Vec<Job<u32, Answer, ()>>, _: &BatchInfo| {
            for job in jobs.iter_mut() {
                p.fetch_add(1, Ordering::Relaxed);
                job.complete(Ok(Answer(Arc::clone(&a))));
            }
        })
        .unwrap();
    for i in 0..100 {
        drop(batcher.submit_tracked(i).unwrap()); // nobody waits for these
    }
    batcher.flush().unwrap();
    assert_eq!(
        processed.load(Ordering::Relaxed),
        100,
        "dropped tickets: items still processed"
    );
    assert_eq!(
        answers_dropped.load(Ordering::Relaxed),
        100,
        "and their answers dropped, not leaked"
    );
    batcher.close();
    match batcher.submit_tracked(7) {
        Err(e) => assert_eq!((e.is_closed(), e.into_inner()), (true, 7)),
        Ok(_) => panic!("closed"),
    }
    match batcher.try_submit_tracked(8) {
        Err(e) => assert_eq!((e.is_closed(), e.into_inner()), (true, 8)),
        Ok(_) => panic!("closed"),
    }
}
