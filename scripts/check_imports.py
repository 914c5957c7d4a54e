#!/usr/bin/env python
"""Fails on an import cycle inside a package, function-level imports included (`make lint` runs it).

Usage: python scripts/check_imports.py [package directory, default poisson_tf]

The graph has one node per module (a package is its __init__.py) and an arrow for every import statement
anywhere in a module's source (top level or inside a function) that names a module of the package: `import a.b`,
`from a import b` (b a module, or else a's names), relative imports alike. Importing a.b.c also runs the
__init__ of every package on the way, so those are arrows too, except the importer's own packages, which are
already running when it is imported. Prints each cycle as a chain of modules and exits 1 when there is one.
"""
from __future__ import annotations

import ast
import os
import sys


def modules(root: str) -> dict:
    """{dotted module name: path} of every .py file under the package directory root."""
    base = os.path.dirname(os.path.abspath(root))
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return out


def _ancestors(name: str) -> list:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports(name: str, path: str, known: dict) -> set:
    """The modules of `known` that module `name` (at `path`) imports, with the packages that run on the way."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    explicit = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    explicit.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            hits = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
            named_other = any(f"{base}.{alias.name}" not in known for alias in node.names)
            if base in known and (named_other or base not in _ancestors(name)):
                explicit.add(base)
            explicit |= hits
    own = set(_ancestors(name))
    out = set()
    for target in explicit:
        out.add(target)
        out |= {a for a in _ancestors(target) if a in known and a not in own}
    out.discard(name)
    return out


def graph(root: str) -> dict:
    """{module: sorted modules it imports} of the package directory root."""
    known = modules(root)
    return {name: sorted(imports(name, path, known)) for name, path in sorted(known.items())}


def cycles(edges: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each as a cycle [a, b, ..., a]."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), edges))

    sys.setrecursionlimit(max(1000, 10 * len(edges)))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _cycle_through(component: list, edges: dict) -> list:
    """A shortest cycle from the component's first module back to it, staying inside the component."""
    start, inside = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        grown = []
        for path in paths:
            for w in edges.get(path[-1], ()):
                if w == start:
                    return path + [start]
                if w in inside and w not in seen:
                    seen.add(w)
                    grown.append(path + [w])
        paths = grown
    return component


def main(argv) -> int:
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "poisson_tf")
    found = cycles(graph(root))
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
    if not found:
        print(f"no import cycles in {os.path.normpath(root)} ({len(graph(root))} modules)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
