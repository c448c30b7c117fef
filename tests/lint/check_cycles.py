#!/usr/bin/env python3
"""Report source files that call each other in a loop.

For every C file under agent/, relay/, common/ and proto/, the functions it defines with
external linkage are found by their definitions (a line starting at column 0 with a name and
an opening parenthesis, not `static`); a file depends on another when it calls one of them.
A strongly connected set of two or more files is a circle: printed, and the exit status is 1.
Function pointers handed over at run time are not calls: that is how a circle is broken.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIRS = ("agent", "relay", "common", "proto")
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)
DEFINITION = re.compile(r"^(?!static\b)[A-Za-z_][\w \t\*]*?\b([a-z_]\w*)\(", re.M)
CALL = re.compile(r"\b([a-z_]\w*)\s*\(")


def strip(text: str) -> str:
    return TOKEN.sub(lambda m: '""' if m.group(0).startswith('"') else " ", text)


def graph() -> dict[str, set[str]]:
    files = {str(p.relative_to(ROOT)): strip(p.read_text(errors="replace"))
             for d in DIRS for p in sorted((ROOT / d).glob("*.c"))}
    owner = {}
    for f, text in files.items():
        for m in DEFINITION.finditer(text):
            line_end = text.find("\n", m.end())
            rest = text[m.end():text.find("{", m.end()) if "{" in text[m.end():] else line_end]
            if ";" not in rest:  # a definition, not a prototype
                owner.setdefault(m.group(1), f)
    deps = {f: set() for f in files}
    for f, text in files.items():
        for m in CALL.finditer(text):
            g = owner.get(m.group(1))
            if g and g != f:
                deps[f].add(g)
    return deps


def circles(deps: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    deps = graph()
    found = circles(deps)
    for comp in found:
        print("files calling each other in a loop: " + ", ".join(comp), file=sys.stderr)
        for f in comp:
            inside = sorted(deps[f] & set(comp))
            print(f"  {f} -> {', '.join(inside)}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
