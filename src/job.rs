//! Per-item completion: the Go original's `Job` / `JobResult`, with the
//! result handed back to the submitter.
//!
//! A tracked batcher carries [`Job`]s. [`Batcher::submit_tracked`] wraps the
//! item in a job and returns a [`Ticket`]; the processor answers each job
//! with [`Job::complete`]; the ticket then yields the answer, by blocking
//! ([`Ticket::wait`], [`Ticket::wait_timeout`]) or as a `Future`. A job the
//! processor does not answer completes as [`JobError::Unanswered`], one whose
//! processor panicked as [`JobError::Panicked`]. Untracked batchers pay
//! nothing for this: it is a different item type, not a branch in `submit`.
//!
//! Each tracked item costs one allocation (the slot the job and the ticket
//! share) and one uncontended lock on completion.
//!
//! # Protocol
//!
//! A job and its ticket share a one-shot slot under a mutex: the first
//! completion (an answer, or the job's drop) wins and is delivered once;
//! a ticket dropped first makes the answer go nowhere. A waiter says so
//! under the lock (`blocked` for a thread, a waker for a task) before it
//! waits, and the completion notifies only what it finds there, after
//! releasing the lock. Checked by the loom model `tickets`; its mutants drop
//! the notify and the `blocked` announcement.

use crate::batcher::Batcher;
use crate::builder::Builder;
use crate::error::{BuildError, SubmitError, TrySubmitError};
use crate::processor::{is_rewind, BatchInfo, ProcessError, ProcessOutcome};
use crate::shared::thread::is_after_panic;
use crate::storage::Storage;
use crate::sync::{thread, Arc, Condvar, Mutex, MutexGuard};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Why a tracked item has no result.
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Job, JobError};
///
/// let batcher = Batcher::builder()
///     .build_tracked(|jobs: &mut Vec<Job<u32, u32, String>>, _: &BatchInfo| {
///         for job in jobs.iter_mut().filter(|j| *j.input() != 0) {
///             let x = *job.input();
///             job.complete(if x > 100 { Err(format!("{x} too big")) } else { Ok(x * 2) });
///         }
///         // jobs with input 0 are left unanswered
///     })
///     .unwrap();
/// assert_eq!(batcher.submit_tracked(5).unwrap().wait(), Ok(10));
/// assert_eq!(batcher.submit_tracked(500).unwrap().wait(), Err(JobError::Failed("500 too big".into())));
/// assert_eq!(batcher.submit_tracked(0).unwrap().wait(), Err(JobError::Unanswered));
/// ```
#[derive(Debug, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum JobError<E = ProcessError> {
    /// The processor answered the job with this error.
    Failed(E),
    /// The processor panicked before answering the job.
    Panicked,
    /// The processor returned (or dropped the job) without answering it.
    Unanswered,
}

impl<E: fmt::Display> fmt::Display for JobError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Failed(e) => write!(f, "job failed: {e}"),
            JobError::Panicked => f.write_str("the processor panicked before answering the job"),
            JobError::Unanswered => f.write_str("the processor did not answer the job"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> Error for JobError<E> {}

/// What a ticket resolves to.
pub type JobResult<R, E = ProcessError> = Result<R, JobError<E>>;

struct SlotState<R, E> {
    outcome: Option<JobResult<R, E>>,
    done: bool,
    ticket_gone: bool,
    /// A thread is blocked in `wait`/`wait_timeout` (only then is the
    /// condvar notified: a notify is a system call even with no waiter).
    blocked: bool,
    waker: Option<Waker>,
}

/// The one-shot cell a job and its ticket share.
struct Slot<R, E> {
    state: Mutex<SlotState<R, E>>,
    cv: Condvar,
}

impl<R, E> Slot<R, E> {
    fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState {
                outcome: None,
                done: false,
                ticket_gone: false,
                blocked: false,
                waker: None,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<R, E>> {
        self.state.lock()
    }

    /// Completes once; later calls return `false`.
    fn complete(&self, outcome: JobResult<R, E>) -> bool {
        let mut st = self.lock();
        if st.done {
            return false;
        }
        st.done = true;
        if !st.ticket_gone {
            st.outcome = Some(outcome);
        }
        let waker = st.waker.take();
        let blocked = st.blocked;
        drop(st);
        if blocked {
            self.cv.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

/// A tracked item, as the processor sees it: the input, and the means to
/// answer its submitter.
///
/// Dropping a job without calling [`complete`](Job::complete) answers
/// [`JobError::Unanswered`] (or [`JobError::Panicked`] while the processor
/// is unwinding).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Job};
///
/// // One "round trip" per batch, one answer per job.
/// let batcher = Batcher::builder()
///     .build_tracked(|jobs: &mut Vec<Job<String, usize, ()>>, _: &BatchInfo| {
///         let lens: Vec<usize> = jobs.iter().map(|j| j.input().len()).collect();
///         for (job, len) in jobs.iter_mut().zip(lens) {
///             job.complete(Ok(len));
///         }
///     })
///     .unwrap();
/// assert_eq!(batcher.submit_tracked("hello".to_string()).unwrap().wait(), Ok(5));
/// ```
pub struct Job<T, R, E = ProcessError> {
    input: Option<T>,
    slot: Option<Arc<Slot<R, E>>>,
}

impl<T, R, E> fmt::Debug for Job<T, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("answered", &self.slot.is_none())
            .finish_non_exhaustive()
    }
}

impl<T, R, E> Job<T, R, E> {
    /// The submitted item.
    pub fn input(&self) -> &T {
        self.input
            .as_ref()
            .expect("the input is only taken by the batcher")
    }

    /// The submitted item, mutably.
    pub fn input_mut(&mut self) -> &mut T {
        self.input
            .as_mut()
            .expect("the input is only taken by the batcher")
    }

    /// Answers the submitter. Returns `false` if the job was already
    /// answered (the first answer stands).
    pub fn complete(&mut self, result: Result<R, E>) -> bool {
        match self.slot.take() {
            Some(slot) => slot.complete(result.map_err(JobError::Failed)),
            None => false,
        }
    }

    /// Has this job been answered?
    pub fn is_answered(&self) -> bool {
        self.slot.is_none()
    }

    fn answer(&mut self, e: JobError<E>) {
        if let Some(slot) = self.slot.take() {
            slot.complete(Err(e));
        }
    }

    /// Takes the input back from a job that was never queued, disarming it.
    fn into_input(mut self) -> T {
        self.slot = None;
        self.input.take().expect("input present")
    }
}

impl<T, R, E> Drop for Job<T, R, E> {
    fn drop(&mut self) {
        if self.slot.is_some() {
            // Unwinding out of a processor, or dropped by the flusher after
            // its processor panicked (whichever constructor built it).
            let e = if thread::panicking() || is_after_panic() {
                JobError::Panicked
            } else {
                JobError::Unanswered
            };
            self.answer(e);
        }
    }
}

/// The submitter's handle on a tracked item: resolves to the processor's
/// answer once the item's batch has been processed.
///
/// # Cancel safety
///
/// Dropping a ticket abandons the answer, not the item: the item is still
/// processed exactly once, and its answer is dropped when the processor
/// gives it. Nothing leaks (the shared slot is freed when both the job and
/// the ticket are gone).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Job};
/// use std::time::Duration;
///
/// let batcher = Batcher::builder()
///     .build_tracked(|jobs: &mut Vec<Job<u64, u64, ()>>, _: &BatchInfo| {
///         for job in jobs.iter_mut() {
///             let x = *job.input();
///             job.complete(Ok(x + 1));
///         }
///     })
///     .unwrap();
/// let ticket = batcher.submit_tracked(1).unwrap();
/// let answer = match ticket.wait_timeout(Duration::from_secs(10)) {
///     Ok(answer) => answer,
///     Err(ticket) => ticket.wait(), // still pending: wait longer, or drop it
/// };
/// assert_eq!(answer, Ok(2));
/// // Or, in async code: `batcher.submit_tracked_async(x).await?.await`.
/// ```
#[must_use = "a ticket does nothing unless waited on or awaited"]
pub struct Ticket<R, E = ProcessError> {
    slot: Arc<Slot<R, E>>,
}

impl<R, E> fmt::Debug for Ticket<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("done", &self.is_done())
            .finish()
    }
}

impl<R, E> Ticket<R, E> {
    /// Has the item's batch been processed (is the answer ready)?
    pub fn is_done(&self) -> bool {
        self.slot.lock().done
    }

    /// Blocks until the answer is there.
    ///
    /// Do not wait, from a processor, for a ticket of the same batcher: its
    /// batch cannot be processed while the processor waits.
    pub fn wait(self) -> JobResult<R, E> {
        let mut st = self.slot.lock();
        while !st.done {
            st.blocked = true;
            st = self.slot.cv.wait(st);
        }
        st.outcome.take().expect("a ticket takes its answer once")
    }

    /// Blocks until the answer is there or `timeout` passes; on timeout the
    /// ticket comes back.
    ///
    /// # Errors
    ///
    /// The ticket itself, when `timeout` passed first.
    pub fn wait_timeout(self, timeout: Duration) -> Result<JobResult<R, E>, Self> {
        #[cfg(not(loom))]
        {
            // A timeout too long to add to now (`Duration::MAX`) waits for
            // good.
            let Some(deadline) = std::time::Instant::now().checked_add(timeout) else {
                return Ok(self.wait());
            };
            let mut st = self.slot.lock();
            while !st.done {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    drop(st);
                    return Err(self);
                }
                st.blocked = true;
                st = self.slot.cv.wait_timeout(st, left);
            }
            Ok(st.outcome.take().expect("a ticket takes its answer once"))
        }
        #[cfg(loom)]
        {
            // Loom has no time: the timeout elapses at once unless done.
            let _ = timeout;
            let mut st = self.slot.lock();
            if st.done {
                Ok(st.outcome.take().expect("a ticket takes its answer once"))
            } else {
                drop(st);
                Err(self)
            }
        }
    }
}

impl<R, E> Future for Ticket<R, E> {
    type Output = JobResult<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.slot.lock();
        if st.done {
            return Poll::Ready(st.outcome.take().expect("Ticket polled after completion"));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<R, E> Drop for Ticket<R, E> {
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        st.ticket_gone = true;
        let answer = st.outcome.take();
        st.waker = None;
        drop(st);
        drop(answer);
    }
}

impl<T, R, E> Builder<Job<T, R, E>>
where
    T: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Builds a tracked batcher (see [`Batcher::submit_tracked`]): the
    /// processor receives [`Job`]s and answers each with
    /// [`Job::complete`]. If it panics, the jobs it has not answered complete
    /// as [`JobError::Panicked`] (and the panic is counted as usual).
    ///
    /// The processor returns `()` or `Result<(), E>`, as for
    /// [`build`](Builder::build). With a [`retry`](Builder::retry) policy it
    /// may return a [`Rewind`](crate::Rewind): the jobs it has not answered
    /// come again at the next attempt (those it answered are taken out of
    /// the batch first, whether or not it left them there). Jobs still
    /// unanswered when the batch ends as failed resolve as
    /// [`JobError::Unanswered`], after the
    /// [`on_discard`](Builder::on_discard) hook has seen them.
    ///
    /// # Errors
    ///
    /// As [`build`](Builder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, Job};
    ///
    /// let batcher = Batcher::builder()
    ///     .build_tracked(|jobs: &mut Vec<Job<u32, u64, String>>, _: &BatchInfo| {
    ///         for job in jobs.iter_mut() {
    ///             let x = u64::from(*job.input());
    ///             job.complete(Ok(x * x));
    ///         }
    ///     })
    ///     .unwrap();
    /// let ticket = batcher.submit_tracked(12).unwrap();
    /// assert_eq!(ticket.wait(), Ok(144));
    /// ```
    ///
    /// A write that fails part way, retried for the jobs it did not answer:
    ///
    /// ```
    /// use microbatch::{Batcher, BatchInfo, Job, Retry, Rewind};
    ///
    /// let mut fail_once = true;
    /// let batcher = Batcher::builder()
    ///     .max_batch_size(4)
    ///     .retry(Retry::attempts(3))
    ///     .build_tracked(move |jobs: &mut Vec<Job<u32, u32, String>>, info: &BatchInfo| {
    ///         for job in jobs.iter_mut() {
    ///             if *job.input() == 3 && std::mem::take(&mut fail_once) {
    ///                 return Err(Rewind::new("connection reset"));
    ///             }
    ///             job.complete(Ok(info.attempt));
    ///         }
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// let tickets: Vec<_> = (1..=4).map(|i| batcher.submit_tracked(i).unwrap()).collect();
    /// let answers: Vec<_> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    /// assert_eq!(answers, [1, 1, 2, 2]); // 3 and 4 came again, at attempt 2
    /// ```
    pub fn build_tracked<P, O>(self, mut processor: P) -> Result<Batcher<Job<T, R, E>>, BuildError>
    where
        P: FnMut(&mut Vec<Job<T, R, E>>, &BatchInfo) -> O + Send + 'static,
        O: ProcessOutcome,
    {
        self.build(move |batch: &mut Vec<Job<T, R, E>>, info: &BatchInfo| {
            match catch_unwind(AssertUnwindSafe(|| processor(batch, info))) {
                Ok(outcome) => {
                    let result = outcome.into_result();
                    if result.as_ref().is_err_and(is_rewind) {
                        // Only what is unanswered comes again (without a
                        // retry policy the batch fails, and only what is
                        // unanswered is discarded).
                        batch.retain(|job| !job.is_answered());
                    }
                    result
                }
                Err(payload) => {
                    for job in batch.iter_mut() {
                        job.answer(JobError::Panicked);
                    }
                    resume_unwind(payload);
                }
            }
        })
    }
}

impl<T, R, E, S> Batcher<Job<T, R, E>, S>
where
    S: Storage<Job<T, R, E>>,
{
    fn job(item: T) -> (Job<T, R, E>, Ticket<R, E>) {
        let slot = Arc::new(Slot::new());
        let ticket = Ticket {
            slot: Arc::clone(&slot),
        };
        (
            Job {
                input: Some(item),
                slot: Some(slot),
            },
            ticket,
        )
    }

    /// Submits an item under the configured policy and returns its
    /// [`Ticket`].
    ///
    /// # Errors
    ///
    /// As [`submit`](Batcher::submit), with the item back.
    pub fn submit_tracked(&self, item: T) -> Result<Ticket<R, E>, SubmitError<T>> {
        let (job, ticket) = Self::job(item);
        match self.submit(job) {
            Ok(()) => Ok(ticket),
            Err(e) => Err(e.map(Job::into_input)),
        }
    }

    /// Submits an item if there is room now and returns its [`Ticket`].
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Batcher::try_submit), with the item back.
    pub fn try_submit_tracked(&self, item: T) -> Result<Ticket<R, E>, TrySubmitError<T>> {
        let (job, ticket) = Self::job(item);
        match self.try_submit(job) {
            Ok(()) => Ok(ticket),
            Err(e) => Err(e.map(Job::into_input)),
        }
    }

    /// Submits an item, waiting for room without blocking the thread (see
    /// [`submit_async`](Batcher::submit_async)), and returns its [`Ticket`],
    /// which can itself be awaited. Items keep the order of the thread that
    /// submits them, not of the task (a task that migrates between threads
    /// may see its items processed out of its order).
    ///
    /// # Errors
    ///
    /// `Closed(item)` once the batcher is closed.
    pub async fn submit_tracked_async(&self, item: T) -> Result<Ticket<R, E>, SubmitError<T>> {
        let (job, ticket) = Self::job(item);
        match self.submit_async(job).await {
            Ok(()) => Ok(ticket),
            Err(e) => Err(e.map(Job::into_input)),
        }
    }
}
