//! Model 9: per-item completion. A ticket's answer racing the ticket's drop
//! and the batcher's close: the waiter always gets the answer, a dropped
//! ticket's answer is dropped exactly once, nothing deadlocks. And the async
//! submit's waker registration racing the flusher's notification.
#![cfg(loom)]

use loom::sync::{Condvar, Mutex};
use loom::thread;
use microbatch::{BatchInfo, Job};
use microbatch_loom_tests::{builder, model};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

struct Answer(Arc<AtomicUsize>);

impl Drop for Answer {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn doubling(
    drops: &Arc<AtomicUsize>,
) -> impl FnMut(&mut Vec<Job<u32, Answer, ()>>, &BatchInfo) + Send + 'static {
    let d = Arc::clone(drops);
    move |jobs: &mut Vec<Job<u32, Answer, ()>>, _: &BatchInfo| {
        for job in jobs.iter_mut() {
            job.complete(Ok(Answer(Arc::clone(&d))));
        }
    }
}

#[test]
fn ticket_waited_while_batcher_closes() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(
            microbatch::Builder::<Job<u32, Answer, ()>>::new()
                .shards(1)
                .max_batch_size(2)
                .capacity(2)
                .max_delay(std::time::Duration::MAX)
                .wait_strategy(microbatch::WaitStrategy::Park)
                .build_tracked(doubling(&drops))
                .unwrap(),
        );
        let ticket = batcher.submit_tracked(1).unwrap();
        let waiter = thread::spawn(move || ticket.wait().is_ok());
        batcher.close();
        assert!(
            waiter.join().unwrap(),
            "an accepted item's ticket gets its answer"
        );
        drop(batcher);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the answer dropped once, by its taker"
        );
    });
}

#[test]
fn ticket_dropped_while_answered() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(
            microbatch::Builder::<Job<u32, Answer, ()>>::new()
                .shards(1)
                .max_batch_size(1)
                .capacity(1)
                .wait_strategy(microbatch::WaitStrategy::Park)
                .build_tracked(doubling(&drops))
                .unwrap(),
        );
        let ticket = batcher.submit_tracked(1).unwrap();
        let dropper = thread::spawn(move || drop(ticket));
        let closer = batcher.closer();
        closer.close();
        dropper.join().unwrap();
        drop(batcher);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "an abandoned answer is dropped, not leaked"
        );
    });
}

/// A waker that records its wake-up in loom-visible state.
struct Flag(Mutex<bool>, Condvar);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }
}

#[test]
fn async_submit_woken_when_room_appears() {
    model(|| {
        let batcher = builder(1, 1)
            .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
            .unwrap();
        batcher.submit(1).unwrap();
        let flag = Arc::new(Flag(Mutex::new(false), Condvar::new()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(batcher.submit_async(2));
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => {
                    r.unwrap();
                    break;
                }
                Poll::Pending => {
                    // Only the flusher's notification can wake us: a lost
                    // waker leaves every thread blocked (loom: deadlock).
                    let mut woken = flag.0.lock().unwrap();
                    while !*woken {
                        woken = flag.1.wait(woken).unwrap();
                    }
                    *woken = false;
                }
            }
        }
        drop(fut);
        assert_eq!(batcher.shutdown().processed, 2);
    });
}
