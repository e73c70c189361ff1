//! Builder validation: every bad value is a `BuildError` naming it.

use microbatch::{BatchInfo, Batcher, BuildError, Storage, MAX_CAPACITY, MAX_SHARDS};

fn p<T>(_: &mut Vec<T>, _: &BatchInfo) {}

#[test]
fn zero_values() {
    assert!(matches!(
        Batcher::<u8>::builder().max_batch_size(0).build(p),
        Err(BuildError::ZeroBatchSize)
    ));
    assert!(matches!(
        Batcher::<u8>::builder().shards(0).build(p),
        Err(BuildError::ZeroShards)
    ));
    assert!(matches!(
        Batcher::<u8>::builder().capacity(0).build(p),
        Err(BuildError::ZeroCapacity)
    ));
}

#[test]
fn capacity_below_batch_size() {
    let e = Batcher::<u8>::builder()
        .max_batch_size(100)
        .capacity(99)
        .build(p)
        .unwrap_err();
    assert!(matches!(
        e,
        BuildError::CapacityBelowBatchSize {
            capacity: 99,
            max_batch_size: 100
        }
    ));
    assert_eq!(
        e.to_string(),
        "capacity 99 is below max_batch_size 100: a shard could never hold a full batch"
    );
}

#[test]
fn absurd_sizes() {
    assert!(matches!(
        Batcher::<u8>::builder().lanes(0).shards(MAX_SHARDS + 1).build(p),
        Err(BuildError::TooManyShards { shards }) if shards == MAX_SHARDS + 1
    ));
    // Lanes and shards count together.
    assert!(matches!(
        Batcher::<u8>::builder().lanes(MAX_SHARDS).shards(1).build(p),
        Err(BuildError::TooManyShards { shards }) if shards == MAX_SHARDS + 1
    ));
    assert!(matches!(
        Batcher::<u8>::builder().lanes(usize::MAX).build(p),
        Err(BuildError::TooManyShards { shards }) if shards == usize::MAX
    ));
    assert!(matches!(
        Batcher::<u8>::builder().lanes(3).shards(0).build(p),
        Err(BuildError::ZeroShards)
    ));
    assert!(matches!(
        Batcher::<u8>::builder().capacity(MAX_CAPACITY + 1).build(p),
        Err(BuildError::CapacityTooLarge { .. })
    ));
    // A huge batch size implies a huge default capacity: refused, not an
    // allocation failure.
    assert!(matches!(
        Batcher::<u8>::builder().max_batch_size(usize::MAX).build(p),
        Err(BuildError::CapacityTooLarge { .. })
    ));
    // Large items times many slots overflow the address space.
    assert!(matches!(
        Batcher::<[u8; 1 << 20]>::builder()
            .lanes(2)
            .shards(MAX_SHARDS - 2)
            .capacity(MAX_CAPACITY)
            .build(p),
        Err(BuildError::MemoryOverflow { .. })
    ));
}

#[test]
fn storage_of_wrong_capacity() {
    struct Tiny;
    impl Storage<u8> for Tiny {
        fn push(&self, item: u8) -> Result<(), u8> {
            Err(item)
        }
        fn pop(&self) -> Option<u8> {
            None
        }
        fn len(&self) -> usize {
            0
        }
        fn capacity(&self) -> usize {
            1
        }
    }
    let e = Batcher::<u8>::builder()
        .capacity(8)
        .max_batch_size(8)
        .storage(|_| Tiny)
        .build(p)
        .unwrap_err();
    assert!(matches!(
        e,
        BuildError::StorageCapacity { asked: 8, got: 1 }
    ));
}

#[test]
fn defaults() {
    let b = Batcher::<u64>::builder().build(p).unwrap();
    let m = b.metrics();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(m.lanes, cores, "a lane per core by default");
    assert_eq!(m.shards, cores, "a shard per core by default");
    assert_eq!(
        m.capacity,
        2 * cores * 2 * 512,
        "default capacity is 2 x 512 per lane and per shard"
    );
    assert_eq!(m.lanes_leased, 0);
    b.submit(1).unwrap();
    assert_eq!(
        b.metrics().lanes_leased,
        1,
        "the first submit leases a lane"
    );
    b.shutdown();
    // Without lanes: a shard per core, as before lanes.
    let b = Batcher::<u64>::builder().lanes(0).build(p).unwrap();
    let m = b.metrics();
    assert_eq!((m.lanes, m.capacity), (0, cores * 2 * 512));
    assert!(!m.asymmetric_barrier, "no lanes, no barrier");
    b.shutdown();
}
