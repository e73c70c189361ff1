//! Feature `metrics`: a recorder installed after `build()` still gets the
//! batcher's series (handles are looked up at every publish).

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use microbatch::{BatchInfo, Batcher};

#[test]
fn recorder_installed_after_build() {
    let batcher = Batcher::builder()
        .thread_name("late")
        .build(|b: &mut Vec<u32>, _: &BatchInfo| b.clear())
        .unwrap();
    // The flusher (and anything it sets up) is running before the recorder.
    batcher.submit(0).unwrap();
    batcher.flush().unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    for i in 1..5 {
        batcher.submit(i).unwrap();
    }
    batcher.shutdown();
    let found = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, _, _, _)| {
            k.key().name() == "microbatch_items_submitted_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "batcher" && l.value() == "late")
        })
        .map(|(_, _, _, v)| format!("{v:?}"));
    assert_eq!(found, Some(format!("{:?}", DebugValue::Counter(5))));
}
