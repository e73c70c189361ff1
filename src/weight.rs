//! Weight limits: the user's weigher, the oversize policy, and the
//! flusher's estimate of how many items fill the limit.
//!
//! Composition (which items go into a batch) is the flusher's alone
//! (`flusher::FlusherCore::dispatch`); the submit path only asks
//! [`WeightLimit::too_heavy`], and only under [`Oversize::Reject`]. With no
//! weight limit nothing here runs.

use std::sync::Arc;

/// What happens to an item heavier than the weight limit of
/// [`Builder::max_batch_weight`](crate::Builder::max_batch_weight).
///
/// # Examples
///
/// ```
/// use microbatch::{Batcher, BatchInfo, Oversize};
///
/// let batcher = Batcher::builder()
///     .max_batch_weight(1000, |line: &String| line.len() as u64 + 1)
///     .oversize(Oversize::Alone)
///     .build(|batch: &mut Vec<String>, info: &BatchInfo| {
///         assert!(info.oversize || info.weight <= 1000);
///         batch.clear();
///     })
///     .unwrap();
/// batcher.submit("x".repeat(5000)).unwrap(); // accepted, sent alone
/// assert_eq!(batcher.shutdown().batches_oversize, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Oversize {
    /// Refuse it at submit, before any room is looked for, handing it back
    /// as `TooHeavy` (counted in
    /// [`Metrics::rejected_oversize`](crate::Metrics::rejected_oversize)).
    /// The weigher then also runs on the submitting thread. The default.
    #[default]
    Reject,
    /// Accept it; when it reaches the head of the queue the batch before it
    /// closes and it is dispatched alone, a batch of one with
    /// [`BatchInfo::oversize`](crate::BatchInfo::oversize) set (counted in
    /// [`Metrics::batches_oversize`](crate::Metrics::batches_oversize)).
    Alone,
}

/// The user's weigher.
pub(crate) type WeighFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync + 'static>;

/// A configured weight limit: at least 1 (checked by `build`).
pub(crate) struct WeightLimit<T> {
    pub(crate) limit: u64,
    pub(crate) weigh: WeighFn<T>,
    pub(crate) oversize: Oversize,
}

impl<T> Clone for WeightLimit<T> {
    fn clone(&self) -> Self {
        WeightLimit {
            limit: self.limit,
            weigh: Arc::clone(&self.weigh),
            oversize: self.oversize,
        }
    }
}

impl<T> WeightLimit<T> {
    /// The submit side's check (under `Reject` only): is `item` heavier
    /// than the limit? A panicking weigher unwinds into the caller.
    #[inline]
    pub(crate) fn too_heavy(&self, item: &T) -> bool {
        (self.weigh)(item) > self.limit
    }
}

/// The recent average item weight, and from it the count of items that
/// fills the limit: what the flusher's count-based triggers (its poll and
/// its wake thresholds) use as the batch size.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AvgWeight {
    /// Weight per item in sixteenths, averaged over recent batches (each
    /// batch moves it a quarter of the way to its own average); `None`
    /// until a batch has been weighed.
    per_item_x16: Option<u64>,
}

impl AvgWeight {
    /// Folds in a dispatched batch of `len` items weighing `weight`.
    pub(crate) fn update(&mut self, weight: u64, len: usize) {
        if len == 0 {
            return;
        }
        let batch = (u128::from(weight) * 16 / len as u128).min(u128::from(u64::MAX / 4)) as u64;
        self.per_item_x16 = Some(match self.per_item_x16 {
            None => batch,
            Some(old) => (old / 4) * 3 + batch / 4,
        });
    }

    /// How many pending items are (by the estimate) a full batch:
    /// `min(max_batch, ceil(limit / average))`, at least 1; `max_batch`
    /// before any estimate, or when items weigh (about) nothing.
    pub(crate) fn due_count(&self, limit: u64, max_batch: u64) -> u64 {
        match self.per_item_x16 {
            None | Some(0) => max_batch,
            Some(a) => {
                let n = (u128::from(limit) * 16).div_ceil(u128::from(a));
                (n.min(u128::from(max_batch)) as u64).max(1)
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::AvgWeight;

    #[test]
    fn due_count_follows_the_average() {
        let mut a = AvgWeight::default();
        assert_eq!(a.due_count(1000, 512), 512, "no estimate yet");
        a.update(1000, 10); // 100 per item
        assert_eq!(a.due_count(1000, 512), 10);
        assert_eq!(a.due_count(1000, 4), 4, "the count cap binds first");
        a.update(0, 10); // weightless items pull the average down
        assert!(a.due_count(1000, 512) > 10);
        let mut z = AvgWeight::default();
        z.update(0, 100);
        assert_eq!(z.due_count(1000, 512), 512, "weight zero: count only");
        let mut h = AvgWeight::default();
        h.update(u64::MAX, 1);
        assert_eq!(h.due_count(1, 512), 1, "at least one");
    }
}
