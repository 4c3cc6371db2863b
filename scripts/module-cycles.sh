#!/usr/bin/env bash
# Finds import cycles between the modules of a crate (default: crates/gateway/src), from its
# `use crate::...`, `use super::...` lines and inline `crate::x::` paths, test code left out.
#
# Two levels: the crate's top-level modules (a directory module with its files is one node; the
# crate root only declares and re-exports, and a name it re-exports counts as its defining
# module's), and the sibling files inside each directory module (its mod.rs, the facade that
# declares and re-exports them, left out). Prints the edges and every cycle; exits 1 on a cycle.
set -euo pipefail
src="${1:-crates/gateway/src}"
python3 - "$src" <<'PY'
import os, re, sys

src = sys.argv[1]

def strip_tests(text):
    # Test modules sit at the end of a file: cut at the first `#[cfg(test)]` before a `mod`.
    m = re.search(r'(?m)^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\([^)]*\))?\s+)?mod \w+\s*\{', text)
    text = text[:m.start()] if m else text
    # Comments say things like `crate::route`; they are not imports.
    return re.sub(r'//[^\n]*', '', text)

# Module path (tuple) -> file; files declared only for tests are skipped.
files = {}
test_only = set()
for root, _, names in os.walk(src):
    for n in names:
        if not n.endswith('.rs'):
            continue
        rel = os.path.relpath(os.path.join(root, n), src)[:-3].split(os.sep)
        if rel == ['lib']:
            path = ()
        elif rel[-1] == 'mod':
            path = tuple(rel[:-1])
        else:
            path = tuple(rel)
        files[path] = os.path.join(root, n)
for path, f in files.items():
    for m in re.finditer(r'#\[cfg\(test\)\]\s*\n\s*(?:pub(?:\([^)]*\))?\s+)?mod (\w+);', open(f).read()):
        test_only.add(path + (m.group(1),))

# Names each facade (lib.rs, mod.rs) re-exports from a child: `pub use child::{A, B}`.
reexports = {}
for path, f in files.items():
    for m in re.finditer(r'(?m)^pub(?:\([^)]*\))? use (\w+)::(\{[^}]*\}|\w+);', open(f).read()):
        child, items = m.group(1), m.group(2).strip('{}')
        if path + (child,) in files:
            for it in items.split(','):
                it = it.strip().split(' as ')[-1]
                if it:
                    reexports[(path, it)] = path + (child,)

def resolve(base, names):
    """The module a path names: the longest module prefix, or the re-exporting child."""
    path = base
    for n in names:
        if path + (n,) in files:
            path = path + (n,)
        else:
            return reexports.get((path, n), path)
    return path

def targets(path, text):
    out = set()
    for m in re.finditer(r'\b(crate|super)((?:::\w+)*)(?:::\{([^}]*)\})?', text):
        base = () if m.group(1) == 'crate' else path[:-1]
        names = [n for n in m.group(2).split('::') if n]
        if not names and m.group(3) is None:
            continue  # `pub(crate)`, `pub(super)`: visibility, not a path
        if m.group(3) is not None:
            for item in m.group(3).split(','):
                item = item.strip().split('::')[0].split(' as ')[0]
                if item and item != 'self':
                    out.add(resolve(base, names + [item]))
                elif item == 'self':
                    out.add(resolve(base, names))
        else:
            out.add(resolve(base, names))
    return out

deps = {}
for path, f in files.items():
    if any(path[:i] in test_only for i in range(1, len(path) + 1)):
        continue
    text = strip_tests(open(f).read())
    if path == () or f.endswith('mod.rs'):
        # A facade's re-exports expose its children; they are not what it depends on.
        text = re.sub(r'(?m)^pub(?:\([^)]*\))? use \w+::[^;]*;', '', text)
    found = targets(path, text)
    if path == () or f.endswith('mod.rs'):
        # A facade also names its children directly: `proxy::handler`, `context::Ctx`.
        for m in re.finditer(r'(?<![:\w])(\w+)::', text):
            if path + (m.group(1),) in files:
                found.add(path + (m.group(1),))
    deps[path] = {t for t in found if t != path}

def name(p):
    return '::'.join(p) or 'lib'

def cycles(nodes, edges):
    found, seen = [], set()
    def walk(n, stack):
        for t in sorted(edges.get(n, ())):
            if t in stack:
                c = stack[stack.index(t):] + [t]
                key = frozenset(c)
                if key not in seen:
                    seen.add(key)
                    found.append(c)
            elif t in nodes:
                walk(t, stack + [t])
    for n in sorted(nodes):
        walk(n, [n])
    return found

bad = False
# Level 1: top-level modules (and the crate root, `lib`, for what it defines itself).
top = {}
for p, ts in deps.items():
    a = p[:1]
    for t in ts:
        b = t[:1]
        if a != b:
            top.setdefault(a, set()).add(b)
nodes = {p[:1] for p in deps}
print('top-level modules and what they import:')
for n in sorted(nodes):
    print(f'  {name(n):16} -> {", ".join(sorted(name(t) for t in top.get(n, ()))) or "-"}')
c = cycles(nodes, top)
print('cycles between top-level modules:', ' | '.join(' -> '.join(name(x) for x in cy) for cy in c) or 'none')
bad |= bool(c)
# Level 2: files inside each directory module.
for d in sorted({p[:-1] for p in deps if len(p) > 1}):
    inner = {p for p in deps if len(p) == len(d) + 1 and p[:len(d)] == d}
    edges = {p: {t[:len(d) + 1] for t in deps[p] if t[:len(d)] == d and len(t) > len(d)} - {p} for p in inner}
    print(f'inside {name(d)}:')
    for n in sorted(inner):
        print(f'  {name(n):20} -> {", ".join(sorted(name(t) for t in edges[n])) or "-"}')
    c = cycles(inner, edges)
    print(f'cycles inside {name(d)}:', ' | '.join(' -> '.join(name(x) for x in cy) for cy in c) or 'none')
    bad |= bool(c)
sys.exit(1 if bad else 0)
PY
