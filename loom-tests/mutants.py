#!/usr/bin/env python3
"""Shows that each loom model catches a real break of the protocol it checks.

Each break is a patch file in loom-tests/mutants/: two header lines
(`model: <loom test file>` and `break: <what it breaks>`), optionally a
third (`lanes: 0`: run the model over shards alone, for a break of the
shard protocol, which the models' default lane would not reach), then a
`git diff` against the library. For each one this applies the patch in a
temporary git worktree of HEAD (never to the files you are editing, so a
mutant can never leak into a commit and you can keep working while it runs),
runs the model that should catch it, and prints CAUGHT or MISSED. A patch
that no longer applies stops the script: a refactor that moves the code a
break targets fails loudly instead of reporting MISSED.

Run from the repository root, after committing what you want checked:
    python3 loom-tests/mutants.py [number ...]

To add a break: edit the library, `git diff > loom-tests/mutants/NN-name.patch`,
put the two header lines at the top of the file, and undo the edit.
"""
import glob, os, re, shutil, subprocess, sys, tempfile

root = os.getcwd()
patches = sorted(glob.glob(os.path.join(root, "loom-tests", "mutants", "*.patch")))
if not patches:
    sys.exit("mutants.py: no patches in loom-tests/mutants (run from the repository root)")
sel = sys.argv[1:]
target = os.path.join(root, "target", "mutants")
tree = tempfile.mkdtemp(prefix="microbatch-mutants-")
subprocess.run(["git", "worktree", "add", "--detach", tree, "HEAD"], check=True, capture_output=True)
# Lines worth showing from a failing model.
telling = re.compile(r"deadlock|Causality|overflow|assert|left:|flush returned|per-thread|panicked")
missed = 0
try:
    for path in patches:
        name = os.path.basename(path)[: -len(".patch")]
        number = name.split("-", 1)[0]
        if sel and number not in sel and str(int(number)) not in sel:
            continue
        text = open(path).read()
        model = re.search(r"^model: (\S+)$", text, re.M)
        desc = re.search(r"^break: (.+)$", text, re.M)
        lanes = re.search(r"^lanes: (\d+)$", text, re.M)
        if not model or not desc:
            sys.exit(f"mutants.py: {name}: missing its 'model:' or 'break:' header")
        check = subprocess.run(["git", "apply", "--check", path], cwd=tree, capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"mutants.py: {name} no longer applies (the code it breaks moved):\n{check.stderr}")
        subprocess.run(["git", "apply", path], cwd=tree, check=True)
        try:
            env = dict(os.environ, CARGO_TARGET_DIR=target, RUSTFLAGS="--cfg loom", LOOM_MAX_PREEMPTIONS="2")
            if lanes:
                env["MICROBATCH_MODEL_LANES"] = lanes.group(1)
            r = subprocess.run(
                ["timeout", "600", "cargo", "test", "-q", "--profile", "loom",
                 "-p", "microbatch-loom-tests", "--test", model.group(1)],
                cwd=tree, env=env, capture_output=True, text=True)
            out = r.stdout + r.stderr
            if "error[" in out and "could not compile" in out:
                sys.exit(f"mutants.py: {name} does not compile:\n{out[-2000:]}")
            verdict = "CAUGHT" if r.returncode != 0 else "MISSED"
            msg = next((l.strip()[:150] for l in out.splitlines() if telling.search(l)), "")
            print(f"{name} [{model.group(1)}]: {desc.group(1)}: {verdict} :: {msg}", flush=True)
            missed += verdict == "MISSED"
        finally:
            subprocess.run(["git", "checkout", "--", "."], cwd=tree, check=True)
finally:
    subprocess.run(["git", "worktree", "remove", "--force", tree], capture_output=True)
    shutil.rmtree(tree, ignore_errors=True)
sys.exit(1 if missed else 0)
