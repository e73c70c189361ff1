#![doc = include_str!("../README.md")]
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod asynch;
mod batcher;
mod builder;
mod err;
#[cfg(all(feature = "metrics", not(loom)))]
mod export;
mod flusher;
mod metrics;
mod processor;
mod ring;
mod storage;
mod sync;
mod tracked;

pub use asynch::{FlushFuture, ShutdownFuture, SubmitFuture};
pub use batcher::{Batcher, Closer};
pub use builder::{
    Backpressure, Builder, WaitStrategy, WithFlusher, MAX_CAPACITY, MAX_QUEUE_BYTES, MAX_SHARDS,
};
pub use err::{
    BuildError, FlushError, ShutdownError, SubmitError, SubmitManyError, SubmitTimeoutError,
    TrySubmitError,
};
pub use flusher::Flusher;
pub use metrics::Metrics;
pub use processor::{BatchInfo, BatchProcessor, Failure, ProcessError, ProcessOutcome, Trigger};
pub use storage::{ArrayStorage, RingStorage, Storage};
pub use tracked::{Job, JobError, JobResult, Ticket};
