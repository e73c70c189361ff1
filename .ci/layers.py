#!/usr/bin/env python3
"""Checks the library's module layering: prints the module tree with line
counts and the import graph, and fails on an import circle or on a module
importing from a layer above its own (the layers are listed in
ARCHITECTURE.md and here). Imports are `crate::<module>` paths in the
source (comments and doc comments excluded; `super::` inside `shared/`
counts as `shared`)."""
import os, re, sys

LAYERS = {
    "error": 0, "processor": 0, "sync": 0,
    "time": 1, "config": 1, "weight": 1, "storage": 1, "metrics": 1, "barrier": 1,
    "wait": 2,
    "shared": 3,
    "submit": 4, "flusher": 4, "export": 4,
    "batcher": 5, "future": 5, "producer": 5,
    "builder": 6, "job": 6,
}
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
root = os.path.normpath(root)

def module_of(rel):
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top

edges, lines = {}, {}
for dirpath, _, files in os.walk(root):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        text = open(path).read()
        lines[rel] = text.count("\n")
        if rel == "lib.rs":
            continue
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        me = module_of(rel)
        deps = set(re.findall(r"\bcrate::([a-z_]+)", code))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"use crate::\{([^}]*)\}", code):
            deps |= set(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
        deps -= {me, "Batcher", "Builder"}
        deps = {d for d in deps if d in LAYERS}
        edges.setdefault(me, set()).update(deps)

print("module tree (lines):")
tops = sorted({rel.split(os.sep)[0] for rel in lines})
for top in tops:
    if top in lines:
        print(f"  {top:<22}{lines[top]:>5}")
        continue
    kids = sorted(r for r in lines if r.startswith(top + os.sep))
    print(f"  {top}/{'':<{21 - len(top)}}{sum(lines[k] for k in kids):>5}")
    for k in kids:
        print(f"    {os.path.basename(k):<20}{lines[k]:>5}")
print(f"  {'total':<22}{sum(lines.values()):>5}")
print("imports (module -> modules it uses), by layer:")
bad = []
for m in sorted(edges, key=lambda m: (LAYERS.get(m, 99), m)):
    print(f"  L{LAYERS.get(m, '?')} {m} -> {', '.join(sorted(edges[m])) or '-'}")
    for d in edges[m]:
        if LAYERS[d] > LAYERS.get(m, 99):
            bad.append(f"{m} (L{LAYERS[m]}) imports {d} (L{LAYERS[d]}), a layer above it")

for m in edges:
    if m not in LAYERS:
        bad.append(f"module {m} has no layer (add it to LAYERS and ARCHITECTURE.md)")

# The asymmetric barrier is sound only light-against-heavy (src/barrier.rs):
# the light side only on the lane submit path, the heavy side only where a
# partner of it reads the lanes (the park's re-check, close).
allowed = {"light": {"barrier.rs", "shared/shard.rs"},
           "heavy": {"barrier.rs", "shared/wake.rs", "shared/close.rs"}}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        code = "\n".join(l for l in open(os.path.join(dirpath, f)).read().splitlines()
                         if not l.lstrip().startswith("//"))
        for side, files_ok in allowed.items():
            if re.search(r"\.%s\(\)" % side, code) and rel not in files_ok:
                bad.append(f"{rel} calls the barrier's {side} side (allowed only in {sorted(files_ok)})")
print("barrier sides: light only in the lane submit path, heavy only in park and close: checked")

# Inside shared/: each protocol file may use `super` (mod.rs: Shared,
# Shard, the flags) and `shard` (admission), nothing else in shared/.
sibling_bad = []
shared_dir = os.path.join(root, "shared")
children = sorted(f[:-3] for f in os.listdir(shared_dir) if f.endswith(".rs") and f != "mod.rs")
print("inside shared/ (file -> sibling files it uses):")
for c in children:
    code = "\n".join(l for l in open(os.path.join(shared_dir, c + ".rs")).read().splitlines()
                     if not l.lstrip().startswith("//"))
    uses = set(re.findall(r"\bsuper::([a-z_]+)::", code))
    uses |= set(re.findall(r"\bcrate::shared::([a-z_]+)::", code))
    uses &= set(children)
    uses.discard(c)
    print(f"  {c} -> {', '.join(sorted(uses)) or '-'}")
    for u in uses - {"shard"}:
        bad.append(f"shared/{c}.rs uses shared/{u}.rs (only shard and super are allowed)")

# circles
state, stack, circles = {}, [], []
def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(edges.get(m, ())):
        if state.get(d) == 1:
            circles.append(stack[stack.index(d):] + [d])
        elif d not in state:
            visit(d)
    stack.pop()
    state[m] = 2
for m in sorted(edges):
    if m not in state:
        visit(m)
for c in circles:
    bad.append("import circle: " + " -> ".join(c))
if bad:
    print("\n".join(bad))
    sys.exit(1)
print("no import circle; every import points to the same layer or below")
