#!/usr/bin/env python3
"""Fail when a SQLSTATE-looking string appears in C code outside common/sqlstate.h.

Every SQLSTATE the daemons send or act on is named once in common/sqlstate.h; code uses the
names. This check strips comments, then looks in the remaining string literals for a
five-character [0-9A-Z] literal with a digit in it ("08006") or a "sqlstate=XXXXX" spelled
out in a format string. tests/ may use the literals (they check the wire).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIRS = ("agent", "relay", "common", "proto")
ALLOWED = {pathlib.Path("common/sqlstate.h")}
# files whose literals are being replaced by a change in progress: reported, not failed;
# remove an entry once its file is converted
PENDING: set[pathlib.Path] = set()

# a string literal, a character literal, or a comment (so that comments can be dropped and
# quotes inside comments or character literals do not confuse the scan)
TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|/\*.*?\*/|//[^\n]*', re.S)
LITERAL = re.compile(r'^"(?=[0-9A-Z]{5}")[0-9A-Z]*[0-9][0-9A-Z]*"$')
SPELLED = re.compile(r"sqlstate=[0-9A-Z]{5}", re.I)


def scan(path: pathlib.Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    found = []
    for m in TOKEN.finditer(text):
        tok = m.group(0)
        if not tok.startswith('"'):
            continue
        if LITERAL.match(tok) or SPELLED.search(tok):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {tok}")
    return found


def main() -> int:
    bad = []
    for d in DIRS:
        for path in sorted((ROOT / d).glob("*.[ch]")):
            rel = path.relative_to(ROOT)
            if rel in PENDING:
                if scan(path):
                    print(f"{rel}: SQLSTATE literals left (pending)", file=sys.stderr)
            elif rel not in ALLOWED:
                bad += scan(path)
    for b in bad:
        print(f"{b}: SQLSTATE literal; use a name from common/sqlstate.h", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
