#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

// Layers, bottom up (ARCHITECTURE.md): each module imports only from the
// layers below it.
// L0: the shim, errors, the processor interface.
mod error;
mod processor;
mod sync;
// L1: time, configuration, storage, counters, the asymmetric barrier.
mod barrier;
mod config;
mod metrics;
mod storage;
mod time;
mod weight;
// L2: waiting.
mod wait;
// L3: the shared state and its protocols, one file per handshake.
mod shared;
// L4: the producer's policy, the flusher's loop, the metrics exporter.
#[cfg(all(feature = "metrics", not(loom)))]
mod export;
mod flusher;
mod submit;
// L5: the public handles.
mod batcher;
mod future;
mod producer;
// L6: the builder, and tracked jobs built on it.
mod builder;
mod job;

pub use batcher::{Batcher, Closer};
pub use builder::{Builder, WithFlusher};
pub use config::{
    Backpressure, BarrierMode, Retry, WaitStrategy, MAX_CAPACITY, MAX_QUEUE_BYTES, MAX_SHARDS,
};
pub use error::{
    BuildError, FlushError, ShutdownError, SubmitError, SubmitManyError, SubmitTimeoutError,
    TrySubmitError,
};
pub use flusher::{Flusher, PollState, Polled};
pub use future::{FlushFuture, ShutdownFuture, SubmitFuture};
pub use job::{Job, JobError, JobResult, Ticket};
pub use metrics::Metrics;
pub use processor::{
    BatchInfo, BatchProcessor, Failure, ProcessError, ProcessOutcome, Rewind, Trigger,
};
pub use producer::Producer;
pub use storage::{ArrayStorage, RingStorage, Storage};
pub use weight::Oversize;
