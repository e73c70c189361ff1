#!/usr/bin/env python3
"""Shows that each loom model catches a real break of the protocol it checks.

For each entry: apply a one-spot break to the engine, run the model that
should catch it, print CAUGHT or MISSED, restore the source. Run from the
repository root: python3 loom-tests/mutants.py [index ...]

It edits files under src/ in place (and restores them after each run):
do not build, commit or edit src/ while it runs. It refuses to start on a
src/ with uncommitted changes, so a restore can never lose work.
"""
import subprocess, sys
breaks = [
 ("close_race", "src/batcher.rs",
  "            let prev = shard.prod.word.fetch_or(WORD_CLOSED, Ordering::SeqCst);\n            shard.cons.closed_at.store(prev >> 1, Ordering::SeqCst);",
  "            let prev = shard.prod.word.load(Ordering::SeqCst);\n            shard.cons.closed_at.store(prev >> 1, Ordering::SeqCst);\n            shard.prod.word.fetch_or(WORD_CLOSED, Ordering::SeqCst);",
  "close snapshots the count with a load before setting the closed bit"),
 ("wake", "src/flusher.rs",
  "if prev & (CLOSED | FLUSH_REQ) == 0 && !self.threshold_reached() {",
  "if prev & (CLOSED | FLUSH_REQ) == 0 {",
  "flusher parks without re-checking the shard counts after setting SLEEPING"),
 ("wake", "src/sync.rs",
  "    #[cfg(loom)]\n    fence(Ordering::SeqCst);\n}",
  "}",
  "producer's SeqCst ordering between reservation RMW and state load dropped"),
 ("wake", "src/flusher.rs",
  "                self.wake_at[i] = self.counts[i] + 1;\n",
  "                self.wake_at[i] = self.counts[i] + 2;\n",
  "idle thresholds at count+2: the first item does not wake the idle flusher"),
 ("flush", "src/batcher.rs",
  ".all(|(s, &t)| s.cons.processed.load(Ordering::SeqCst) >= t)",
  ".all(|(s, &t)| s.cons.popped.load(Ordering::SeqCst) >= t)",
  "flush waits for popped instead of processed"),
 ("blocked", "src/batcher.rs",
  "        // Producers blocked for room see the closed bit.\n        self.signal.notify();",
  "",
  "close does not notify producers blocked for room"),
 ("blocked", "src/flusher.rs",
  "        // Room appeared: wake producers blocked on a full shard.\n        shared.signal.notify();",
  "",
  "flusher does not notify after freeing room (only after processing)"),
 ("blocked", "src/sync.rs",
  "        fence(Ordering::SeqCst);\n        if self.waiters.load(Ordering::SeqCst) > 0 {",
  "        if self.waiters.load(Ordering::Relaxed) > 0 {",
  "Signal::notify drops its SeqCst fence (store-buffering with the waiter count)"),
 ("drop_active", "src/batcher.rs",
  "            Some(h) => drop(h.join()),",
  "            Some(h) => drop(h),",
  "drop closes but does not join the flusher"),
 ("reentrant", "src/batcher.rs",
  "        if self.on_flusher_thread() {\n            return Err(FlushError::Reentrant);\n        }",
  "",
  "flush from the processor is not detected"),
 ("order", "src/flusher.rs",
  "            let r = processor.process(buf, &info);",
  "            buf.reverse();\n            let r = processor.process(buf, &info);",
  "batch handed over in reverse order"),
 ("tickets", "src/tracked.rs",
  "        if blocked {\n            self.cv.notify_all();\n        }",
  "",
  "completing a job does not notify a thread blocked in Ticket::wait"),
 ("tickets", "src/tracked.rs",
  "        while !st.done {\n            st.blocked = true;\n            st = self.slot.cv.wait(st)",
  "        while !st.done {\n            st = self.slot.cv.wait(st)",
  "Ticket::wait blocks without saying so, so completion skips the notify"),
 ("tickets", "src/sync.rs",
  "        if !*registered {\n            // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.",
  "        if false {\n            // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.",
  "an async waiter registers its waker but not itself in the waiter count"),
 ("user_flusher", "src/batcher.rs",
  "        for shard in self.shards.iter() {\n            shard.prod.word.fetch_and(!WORD_CLOSED, Ordering::SeqCst);\n        }\n        self.state.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);",
  "        self.state.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);\n        for shard in self.shards.iter() {\n            shard.prod.word.fetch_and(!WORD_CLOSED, Ordering::SeqCst);\n        }",
  "reopen clears is_closed() before the shards open"),
 ("blocked", "src/ring.rs",
  "        self.stamps[i].store(index + 1, Ordering::Release);",
  "        self.stamps[i].store(index + 1, Ordering::Relaxed);",
  "ring slot published with a Relaxed stamp (the consumer may read the value before it is written)"),
 ("blocked", "src/batcher.rs",
  "            let popped = shard.cons.popped.load(Ordering::Acquire);",
  "            let popped = shard.cons.popped.load(Ordering::Relaxed);",
  "admission reads popped Relaxed (a producer may rewrite a ring slot the flusher is still reading)"),
 ("user_flusher", "src/flusher.rs",
  "        shared.status.store(DONE, Ordering::SeqCst);",
  "",
  "the flusher never reports DONE, so shutdown waits forever"),
]
if subprocess.run("git diff --quiet -- src", shell=True).returncode != 0:
    sys.exit("mutants.py: src/ has uncommitted changes; commit or stash them first")
sel = sys.argv[1:]
missed = 0
for i,(test, path, old, new, desc) in enumerate(breaks):
    if sel and str(i) not in sel: continue
    src = open(path).read()
    assert src.count(old) == 1, (i, desc)
    open(path,'w').write(src.replace(old,new))
    try:
        r = subprocess.run(f'RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 timeout 600 cargo test -q --profile loom -p microbatch-loom-tests --test {test} 2>&1', shell=True, capture_output=True, text=True)
        out = r.stdout
        fail = [l for l in out.splitlines() if 'panicked' in l or 'deadlock' in l or 'FAILED' in l]
        verdict = "CAUGHT" if r.returncode != 0 else "MISSED"
        msg = ''
        for l in out.splitlines():
            if 'deadlock' in l or 'Causality' in l or 'assert' in l or 'left:' in l or 'flush returned' in l or 'per-thread' in l:
                msg = l.strip()[:150]; break
        print(f"{i} {test}: {desc}: {verdict} :: {msg}", flush=True)
        missed += verdict == "MISSED"
    finally:
        open(path,'w').write(src)
sys.exit(1 if missed else 0)
