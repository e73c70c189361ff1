#!/usr/bin/env python3
"""Draws the README's and BENCHMARKS.md's pictures from bench output.

Run from the repository root after
    cargo bench -p microbatch-bench --bench throughput
    cargo bench -p microbatch-bench --bench latency
It reads target/criterion/e2e*/**/new/estimates.json (criterion's medians)
and target/latency-cdf.csv (written by the latency bench), and writes
bench/charts/throughput.svg (ns per item against the peers, per group) and
bench/charts/latency.svg (the latency CDF per adapter at one period). Each
chart names the machine, the rustc version and the commit it was made on.
`python3 bench/charts.py throughput` (or `latency`) draws one chart only.
Plain SVG from the standard library: nothing to install.
"""
import csv, json, math, os, subprocess, sys
from collections import defaultdict
from xml.sax.saxutils import escape

ROOT = os.getcwd()
OUT = os.path.join(ROOT, "bench", "charts")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def provenance():
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or "unknown CPU"
    dirty = " (dirty)" if sh("git status --porcelain --untracked-files=no") else ""
    return f"{cpu}, {os.cpu_count()} vCPUs · {sh('rustc --version')} · commit {sh('git rev-parse --short HEAD')}{dirty}"


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" font-size="{size}" '
            f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">{escape(s)}</text>')


def throughput_chart():
    root = os.path.join(ROOT, "target", "criterion")
    groups = defaultdict(dict)
    for dirpath, _, files in os.walk(root):
        if "estimates.json" in files and dirpath.endswith(os.sep + "new"):
            bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
            if not bench["group_id"].startswith("e2e/"):
                continue
            est = json.load(open(os.path.join(dirpath, "estimates.json")))
            elems = (bench.get("throughput") or {}).get("Elements", 1)
            name = bench["function_id"] or os.path.basename(os.path.dirname(dirpath))
            groups[bench["group_id"]][name] = est["median"]["point_estimate"] / elems
    if not groups:
        sys.exit("charts.py: no e2e results under target/criterion (run the throughput bench first)")
    names = sorted({n for g in groups.values() for n in g}, key=lambda n: (not n.startswith("microbatch"), n))
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    order = sorted(groups)
    bar_h, gap, left, width = 16, 18, 230, 460
    height = 70 + sum(len(groups[g]) * bar_h + gap + 18 for g in order) + 30
    worst = max(v for g in groups.values() for v in g.values())
    scale = width / worst
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}">',
             '<rect width="100%" height="100%" fill="white"/>',
             text(10, 22, "End to end: ns per item (shorter is faster), criterion medians", 15, weight="bold"),
             text(10, 40, provenance(), 11, fill="#555")]
    y = 62
    for g in order:
        parts.append(text(10, y + 12, g, 13, weight="bold"))
        y += 18
        for n, v in sorted(groups[g].items(), key=lambda kv: kv[1]):
            w = max(v * scale, 1)
            parts.append(text(left - 8, y + bar_h - 4, n, 12, anchor="end"))
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 3}" fill="{color[n]}"/>')
            parts.append(text(left + w + 6, y + bar_h - 4, f"{v:.1f} ns", 11))
            y += bar_h
        y += gap
    parts.append("</svg>")
    return "\n".join(parts)


def latency_chart(period="5µs"):
    path = os.path.join(ROOT, "target", "latency-cdf.csv")
    if not os.path.exists(path):
        sys.exit("charts.py: no target/latency-cdf.csv (run the latency bench first)")
    curves = defaultdict(list)
    for row in csv.DictReader(open(path)):
        if row["period"] == period:
            curves[row["adapter"]].append((float(row["quantile"]), int(row["ns"])))
    if not curves:
        sys.exit(f"charts.py: no latency rows for period {period}")
    left, top, width, height = 70, 60, 560, 300
    lo = max(1, min(ns for c in curves.values() for _, ns in c))
    hi = max(ns for c in curves.values() for _, ns in c)
    lx0, lx1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    # y: the fraction of items at or below x, stretched towards the tail
    # (-log10(1 - q): 0.9 -> 1, 0.99 -> 2, 0.999 -> 3).
    ymax = 4.0
    def px(ns):
        return left + (math.log10(max(ns, 1)) - lx0) / (lx1 - lx0) * width
    def py(q):
        v = min(-math.log10(max(1 - q, 10 ** -ymax)), ymax)
        return top + height - v / ymax * height
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 200}" height="{top + height + 60}">',
             '<rect width="100%" height="100%" fill="white"/>',
             text(10, 22, f"Submit-to-process latency, one item every {period} (intended-time corrected)", 15, weight="bold"),
             text(10, 40, provenance(), 11, fill="#555")]
    for e in range(lx0, lx1 + 1):
        x = px(10 ** e)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="#ddd"/>')
        label = {0: "1 ns", 1: "10 ns", 2: "100 ns", 3: "1 µs", 4: "10 µs", 5: "100 µs", 6: "1 ms", 7: "10 ms", 8: "100 ms", 9: "1 s"}.get(e, f"1e{e} ns")
        parts.append(text(x, top + height + 16, label, 11, anchor="middle"))
    for v, label in [(0, "p0"), (0.301, "p50"), (1, "p90"), (2, "p99"), (3, "p99.9"), (4, "p99.99")]:
        y = top + height - v / ymax * height
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(text(left - 6, y + 4, label, 11, anchor="end"))
    for i, (name, pts) in enumerate(sorted(curves.items())):
        pts.sort()
        d = " ".join(f"{'M' if k == 0 else 'L'}{px(ns):.1f},{py(q):.1f}" for k, (q, ns) in enumerate(pts))
        c = COLORS[i % len(COLORS)]
        parts.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<rect x="{left + width + 14}" y="{top + 8 + i * 18}" width="12" height="4" fill="{c}"/>')
        parts.append(text(left + width + 32, top + 13 + i * 18, name, 11))
    parts.append(text(left + width / 2, top + height + 36, "latency (log scale); a curve further left is faster, a curve that bends right late has a long tail", 11, anchor="middle", fill="#555"))
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":
    charts = {"throughput": throughput_chart, "latency": latency_chart}
    wanted = sys.argv[1:] or list(charts)
    unknown = [w for w in wanted if w not in charts]
    if unknown:
        sys.exit(f"charts.py: no chart {', '.join(unknown)} (choose from {', '.join(charts)})")
    os.makedirs(OUT, exist_ok=True)
    # Every chart drawn before any file is written: each names the commit,
    # and a file half-written would mark the tree dirty in the next one.
    drawn = [(f"{w}.svg", charts[w]()) for w in wanted]
    for name, svg in drawn:
        with open(os.path.join(OUT, name), "w") as f:
            f.write(svg + "\n")
        print(f"wrote bench/charts/{name}")
