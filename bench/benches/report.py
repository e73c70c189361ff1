#!/usr/bin/env python3
"""Prints the latest criterion results as one table of ratios.

Run after `cargo bench`: reads target/criterion/**/new/estimates.json and
prints, per group, each entry's median time per iteration (with the
confidence interval criterion reports) and its ratio to microbatch in the
same group (>1 means microbatch is faster). Names the machine, the rustc
version and the commit, so a table can be pasted into BENCHMARKS.md as is.
"""
import json, os, subprocess, sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"

def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns * 1000:.3g} ps"

groups = defaultdict(dict)
for dirpath, _, files in os.walk(root):
    if "estimates.json" in files and dirpath.endswith(os.sep + "new"):
        rel = os.path.relpath(os.path.dirname(dirpath), root).split(os.sep)
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        group = bench["group_id"]
        name = bench["function_id"] or rel[-1]
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        med = est["median"]
        thr = bench.get("throughput") or {}
        elems = thr.get("Elements", 1)
        groups[group][name] = (med["point_estimate"], med["confidence_interval"]["lower_bound"],
                               med["confidence_interval"]["upper_bound"], elems)

cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
print(f"machine: {cpu}, {os.cpu_count()} vCPUs (shared)")
print(f"rustc: {sh('rustc --version')}")
print(f"commit: {sh('git rev-parse --short HEAD')}{' (dirty)' if sh('git status --porcelain --untracked-files=no') else ''}")
print()
for group in sorted(groups):
    rows = groups[group]
    ours = next((v for k, v in rows.items() if k == "microbatch"), None)
    if ours is None:
        ours = next((v for k, v in rows.items() if k.startswith("microbatch")), None)
    print(f"| {group} | median per item | 95% CI of median | ratio to microbatch |")
    print("|---|---|---|---|")
    for name, (med, lo, hi, elems) in sorted(rows.items(), key=lambda kv: kv[1][0]):
        ratio = f"{med / ours[0]:.2f}" if ours else "-"
        print(f"| {name} | {fmt(med / elems)} | {fmt(lo / elems)} – {fmt(hi / elems)} | {ratio} |")
    print()
