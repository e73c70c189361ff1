#!/usr/bin/env python3
"""Shows that each loom model catches a real break of the protocol it checks.

For each entry: apply a one-spot break to the engine, run the model that
should catch it, print CAUGHT or MISSED. Run from the repository root:
python3 loom-tests/mutants.py [index ...]

The breaks are applied in a temporary git worktree of HEAD (never to the
files you are editing), so a mutant can never leak into a commit and you
can keep working while it runs; it builds in target/mutants. Each break's
anchor must occur exactly once, or the script stops: a refactor that loses
an anchor fails loudly instead of reporting MISSED.
"""
import subprocess, sys
breaks = [
 ("close_race", "src/batcher.rs",
  "                let prev = shard.prod.word.fetch_or(WORD_CLOSED, Ordering::SeqCst);\n                shard.cons.closed_at.store(prev >> 1, Ordering::SeqCst);",
  "                let prev = shard.prod.word.load(Ordering::SeqCst);\n                shard.cons.closed_at.store(prev >> 1, Ordering::SeqCst);\n                shard.prod.word.fetch_or(WORD_CLOSED, Ordering::SeqCst);",
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
  "                if let Err(payload) = h.join() {\n                    crate::processor::drop_quietly(payload);\n                }",
  "                drop(h);",
  "drop closes but does not join the flusher"),
 ("reentrant", "src/batcher.rs",
  "        if self.on_flusher_thread() {\n            return Err(FlushError::Reentrant);\n        }",
  "",
  "flush from the processor is not detected"),
 ("order", "src/flusher.rs",
  "        let outcome = catch_unwind(AssertUnwindSafe(|| processor.process(buf, info)));",
  "        buf.reverse();\n        let outcome = catch_unwind(AssertUnwindSafe(|| processor.process(buf, info)));",
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
  "                // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.\n                self.waiters.fetch_add(1, Ordering::SeqCst);",
  "                // SeqCst RMW: pairs with the fence in `notify`, as in `wait`.",
  "an async waiter registers its waker but not itself in the waiter count"),
 ("user_flusher", "src/batcher.rs",
  "            for shard in self.shards.iter() {\n                shard.prod.word.fetch_and(!WORD_CLOSED, Ordering::SeqCst);\n            }\n            self.state.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);",
  "            self.state.fetch_and(!(CLOSED | CLOSING), Ordering::SeqCst);\n            for shard in self.shards.iter() {\n                shard.prod.word.fetch_and(!WORD_CLOSED, Ordering::SeqCst);\n            }",
  "reopen clears is_closed() before the shards open"),
 ("blocked", "src/ring.rs",
  "        self.stamps[i].store(index + 1, Ordering::Release);",
  "        self.stamps[i].store(index + 1, Ordering::Relaxed);",
  "ring slot published with a Relaxed stamp (the consumer may read the value before it is written)"),
 ("blocked", "src/batcher.rs",
  "            let popped = shard.cons.popped.load(Ordering::Acquire);",
  "            let popped = shard.cons.popped.load(Ordering::Relaxed);",
  "admission reads popped Relaxed (a producer may rewrite a ring slot the flusher is still reading)"),
 ("metrics", "src/batcher.rs",
  "                if st.seq.load(Ordering::Relaxed) == s1 {",
  "                if true {",
  "metrics() does not re-check the sequence number (a snapshot can mix two flusher states)"),
 ("metrics", "src/flusher.rs",
  "                shared.stats.begin_write();\n                // SeqCst store: pairs with the Acquire in `try_reserve` (the",
  "                // SeqCst store: pairs with the Acquire in `try_reserve` (the",
  "the flusher stores popped outside the sequence lock"),
 ("user_flusher", "src/batcher.rs",
  "            if self.state.load(Ordering::SeqCst) & CLOSED == 0\n                || self.close_calls.load(Ordering::SeqCst)\n                    > self.closes_consumed.load(Ordering::SeqCst)\n            {",
  "            if self.state.load(Ordering::SeqCst) & CLOSED == 0 {",
  "reopen ignores a close made after the last run ended (that close is lost)"),
 ("user_flusher", "src/flusher.rs",
  "        shared.status.store(DONE, Ordering::SeqCst);",
  "",
  "the flusher never reports DONE, so shutdown waits forever"),
]
import os, shutil, tempfile
root = os.getcwd()
tree = tempfile.mkdtemp(prefix="microbatch-mutants-")
subprocess.run(["git", "worktree", "add", "--detach", tree, "HEAD"], check=True, capture_output=True)
target = os.path.join(root, "target", "mutants")
sel = sys.argv[1:]
missed = 0
try:
    for i,(test, path, old, new, desc) in enumerate(breaks):
        if sel and str(i) not in sel: continue
        file = os.path.join(tree, path)
        src = open(file).read()
        if src.count(old) != 1:
            sys.exit(f"mutants.py: break {i} ({desc}): anchor found {src.count(old)} times in {path}")
        open(file,'w').write(src.replace(old,new))
        try:
            r = subprocess.run(f'cd {tree} && CARGO_TARGET_DIR={target} RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 timeout 600 cargo test -q --profile loom -p microbatch-loom-tests --test {test} 2>&1', shell=True, capture_output=True, text=True)
            out = r.stdout
            verdict = "CAUGHT" if r.returncode != 0 else "MISSED"
            msg = ''
            for l in out.splitlines():
                if 'deadlock' in l or 'Causality' in l or 'overflow' in l or 'assert' in l or 'left:' in l or 'flush returned' in l or 'per-thread' in l:
                    msg = l.strip()[:150]; break
            print(f"{i} {test}: {desc}: {verdict} :: {msg}", flush=True)
            missed += verdict == "MISSED"
        finally:
            open(file,'w').write(src)
finally:
    subprocess.run(["git", "worktree", "remove", "--force", tree], capture_output=True)
    shutil.rmtree(tree, ignore_errors=True)
sys.exit(1 if missed else 0)
