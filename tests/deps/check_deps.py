#!/usr/bin/python3
"""check_deps.py: every package a target needs must come from that target's install list.

`make` / `make all` must build with only what `deploy/install-deps.sh build` installs, and
`make demo` must run with only what `deploy/install-deps.sh demo` installs. On a developer's
machine every package is present, so a target that quietly needs one more (cmocka.h in
`make all`, a tool in demo.sh) passes there and fails on a fresh machine. This script makes
that visible in `make test` (target `check-deps`). It checks, on the installed system:

  1. `make -n -B all` mentions no test-only tool (cmocka, pytest, clang, valgrind, the test
     trees);
  2. every program that `make -n -B all` runs, every header that the daemons' sources
     include (the exact compile commands of `make -n -B all`, run with -M) and every library
     they link (-lX) belongs to a package inside the dependency closure of the `build` list;
  3. every program that deploy/demo/demo.sh runs (and the scripts it runs, mkcerts.sh)
     belongs to a package inside the closure of the `demo` list.

"Closure" means the listed packages plus their Depends and Pre-Depends, recursively (what
`apt-get install --no-install-recommends` brings), plus every Essential or Priority: required
package (on every Debian system) and theirs. Owners come from `dpkg -S`, dependencies from
`dpkg-query` on the installed packages, so the check needs no network and installs nothing.
The package lists come from `deploy/install-deps.sh --list WHAT` (one source of truth).

A command that demo.sh only uses behind `if command -v NAME` / `elif command -v NAME` is a
fallback and is not required. `--self-test` feeds the checks a header owned by libcmocka-dev,
a -lcmocka link and a valgrind command and fails unless each one is reported.

Exit status: 0 all good, 1 a target needs a package its list lacks, 2 the check itself failed.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INSTALL_DEPS = os.path.join(REPO, "deploy", "install-deps.sh")
DEMO_SCRIPT = os.path.join(REPO, "deploy", "demo", "demo.sh")
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Words that must never appear in what `make all` runs: test-only tools and test trees.
TEST_ONLY = re.compile(r"(cmocka|pytest|\bclang\b|valgrind|-fsanitize=fuzzer|tests/unit/|"
                       r"tests/integration/|tests/fuzz/)")

# POSIX sh builtins and keywords (dash): never a package's program.
SH_BUILTINS = {
    ".", ":", "[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec",
    "exit", "export", "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf",
    "pwd", "read", "readonly", "return", "set", "shift", "test", "times", "trap", "true",
    "type", "ulimit", "umask", "unalias", "unset", "wait",
}
KEYWORDS_BEFORE_COMMAND = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}",
                           "fi", "done", "esac"}


class CheckError(Exception):
    """The check itself cannot run (exit 2), as opposed to a finding (exit 1)."""


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------------------------
# packages

def install_list(what):
    r = run(["sh", INSTALL_DEPS, "--list", what])
    if r.returncode != 0 or not r.stdout.split():
        raise CheckError("deploy/install-deps.sh --list %s failed: %s" % (what, r.stderr.strip()))
    return r.stdout.split()


def dep_names(field):
    """A Depends/Pre-Depends field -> list of alternative groups, each a list of names."""
    groups = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip().split(":")[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


class Packages:
    """The installed packages, their dependencies and what they provide (from dpkg-query)."""

    def __init__(self):
        r = run(["dpkg-query", "-W", "-f",
                 "${Package}\t${Status}\t${Essential}\t${Priority}\t${Provides}\t"
                 "${Pre-Depends}\t${Depends}\n"])
        if r.returncode != 0:
            raise CheckError("dpkg-query failed: %s" % r.stderr.strip())
        self.deps = {}
        self.providers = {}
        self.base = set()
        for line in r.stdout.splitlines():
            f = line.split("\t")
            if len(f) != 7 or not f[1].endswith(" installed"):
                continue
            name = f[0]
            self.deps.setdefault(name, []).extend(dep_names(f[5]) + dep_names(f[6]))
            for p in dep_names(f[4]):
                self.providers.setdefault(p[0], set()).add(name)
            if f[2] == "yes" or f[3] == "required":
                self.base.add(name)
        self._base_closure = None

    def installed(self, name):
        return name in self.deps

    def closure(self, names):
        """names plus their Depends/Pre-Depends, recursively, as apt would pick them on a
        fresh machine: for "a | b" the first alternative that is installed here."""
        seen = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            for alts in self.deps.get(n, []):
                for a in alts:
                    if a in self.deps:
                        todo.append(a)
                        break
                    if a in self.providers:
                        todo.extend(self.providers[a])
                        break
        return seen

    def allowed(self, list_name, names):
        if self._base_closure is None:
            self._base_closure = self.closure(self.base)
        missing = [n for n in names if not self.installed(n)]
        if missing:
            raise CheckError("packages of the %s list are not installed: %s (run make deps-test)"
                             % (list_name, " ".join(missing)))
        return self.closure(names) | self._base_closure


def path_candidates(path):
    """dpkg knows a file by the path its package ships; /usr-merge gives it several names."""
    out = [os.path.normpath(path), os.path.realpath(path)]
    for p in list(out):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
            if p.startswith(a):
                out.append(b + p[len(a):])
            elif p.startswith(b):
                out.append(a + p[len(b):])
    return list(dict.fromkeys(out))


def owners(paths):
    """{path: set of owning packages} for each path dpkg knows (one dpkg -S per name tried)."""
    result = {}
    pending = {p: path_candidates(p) for p in paths}
    while pending:
        ask = {}
        for p, cands in pending.items():
            if cands:
                ask.setdefault(cands.pop(0), []).append(p)
        if not ask:
            break
        r = run(["dpkg", "-S"] + sorted(ask))
        for line in r.stdout.splitlines():
            if line.startswith("diversion ") or ": " not in line:
                continue
            pkgs, path = line.split(": ", 1)
            for orig in ask.get(path, []):
                result[orig] = {x.strip().split(":")[0] for x in pkgs.split(",")}
        pending = {p: c for p, c in pending.items() if p not in result and c}
    return result


# ---------------------------------------------------------------------------------------------
# what `make all` uses

def make_dry_run(target):
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CFLAGS", "LDFLAGS"):
        env.pop(k, None)
    r = run(["make", "-n", "-B", "--no-print-directory", "-C", REPO, "SAN=0", target], env=env)
    if r.returncode != 0:
        raise CheckError("make -n -B %s failed:\n%s" % (target, r.stderr))
    return [l for l in r.stdout.splitlines() if l.strip()]


def split_commands(line):
    """A recipe line -> argv lists, split at ; && || | (no quoting games in our Makefile)."""
    out = []
    for part in re.split(r"\s*(?:;|&&|\|\||\|)\s*", line):
        if part.strip():
            try:
                out.append(shlex.split(part))
            except ValueError:
                out.append(part.split())
    return out


def test_only_findings(target, lines):
    """One finding per test-only word, with the first command that uses it."""
    found = {}
    for l in lines:
        for m in TEST_ONLY.finditer(l):
            if m.group(1) not in found:
                a, b = max(0, m.start() - 60), m.end() + 60
                found[m.group(1)] = "make %s runs a test-only tool or file, %s: `%s%s%s`" % (
                    target, m.group(1), "..." if a else "", l[a:b].strip(),
                    "..." if b < len(l) else "")
    return list(found.values())


def compile_groups(lines):
    """The compile commands of a dry run -> {argv of the preprocessor (-M): [sources]}."""
    groups = {}
    for line in lines:
        for argv in split_commands(line):
            if not any(a.endswith(".c") and not a.startswith("-") for a in argv):
                continue
            flags, srcs, skip = [], [], False
            for i, a in enumerate(argv):
                if skip:
                    skip = False
                elif a in ("-o", "-MF", "-MT", "-MQ"):
                    skip = True
                elif a in ("-c", "-MMD", "-MD", "-MP", "-Werror") or a.startswith("-l") or \
                        a.endswith((".o", ".a", ".so")) or a.startswith(("-fsanitize", "-Wl,")):
                    pass
                elif a.endswith(".c") and not a.startswith("-"):
                    srcs.append(a)
                else:
                    flags.append(a)
            groups.setdefault(tuple(flags + ["-M"]), []).extend(srcs)
    return groups


def included_headers(groups):
    """{absolute header path: first source that includes it} (project headers left out)."""
    headers = {}
    for argv, srcs in groups.items():
        r = run(list(argv) + srcs, cwd=REPO)
        if r.returncode != 0:
            raise CheckError("%s failed:\n%s" % (" ".join(argv[:3]) + " ... -M", r.stderr[-2000:]))
        # make-style rules: "obj.o: src.c h1 h2 \\\n h3"; one rule per source, in order
        text = r.stdout.replace("\\\n", " ")
        for rule in text.splitlines():
            if ":" not in rule:
                continue
            words = rule.split(":", 1)[1].split()
            if not words:
                continue
            src = words[0]
            for h in words[1:]:
                p = os.path.normpath(h if os.path.isabs(h) else os.path.join(REPO, h))
                if not p.startswith(REPO + os.sep):
                    headers.setdefault(p, src)
    return headers


def linked_libraries(lines):
    """{"-lX": (path of the file the linker takes, the command)} for every link command."""
    libs = {}
    for line in lines:
        for argv in split_commands(line):
            if "-c" in argv or "-o" not in argv:
                continue
            for a in argv:
                if a.startswith("-l") and a not in libs:
                    libs[a] = None
                    for fname in ("lib%s.so" % a[2:], "lib%s.a" % a[2:]):
                        r = run([argv[0], "-print-file-name=" + fname])
                        p = os.path.normpath(r.stdout.strip())
                        if os.path.isabs(p) and os.path.exists(p):
                            libs[a] = p
                            break
                    libs[a] = libs[a] or "?lib%s.so" % a[2:]
    return libs


def recipe_programs(lines):
    """{program: the recipe line} for the first word of every command of a dry run."""
    progs = {}
    for line in lines:
        for argv in split_commands(line):
            while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
                argv = argv[1:]
            if argv and argv[0] not in SH_BUILTINS:
                progs.setdefault(argv[0], line.strip())
    return progs


# ---------------------------------------------------------------------------------------------
# what a shell script runs

def _balanced(text, i):
    """text[i] opens "(": index just past its matching ")" (quotes respected)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = text.index("'", i + 1)
        elif c == '"':
            i = _dquote_end(text, i)
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise CheckError("unbalanced parenthesis in shell text")


def _dquote_end(text, i):
    """text[i] is an opening double quote: index just past the closing one."""
    i += 1
    while text[i] != '"':
        if text[i] == "\\":
            i += 2
        elif text.startswith("$(", i):
            i = _balanced(text, i + 1)
        else:
            i += 1
    return i + 1


def shell_lex(text, subs):
    """Tokens of POSIX sh text: ("w", word, line) and ("op", op, line). Quotes are removed
    from words; $(...) and `...` bodies are appended to subs (for a recursive scan) and
    stand as "$(...)" in the word; heredoc bodies and redirection targets are dropped."""
    toks = []
    heredocs = []
    i, line, word, in_word = 0, 1, "", False

    def end_word():
        nonlocal word, in_word
        if in_word:
            toks.append(("w", word, line))
        word, in_word = "", False

    while i < len(text):
        c = text[i]
        if c == "\\" and text.startswith("\\\n", i):
            i, line = i + 2, line + 1
        elif c == "\\":
            word, in_word, i = word + text[i + 1:i + 2], True, i + 2
        elif c in " \t":
            end_word()
            i += 1
        elif c == "\n":
            end_word()
            toks.append(("op", "\n", line))
            i, line = i + 1, line + 1
            for delim, strip in heredocs:
                while i < len(text):
                    j = text.find("\n", i)
                    j = len(text) if j < 0 else j
                    body_line = text[i:j]
                    i, line = j + 1, line + 1
                    if (body_line.lstrip("\t") if strip else body_line) == delim:
                        break
            heredocs = []
        elif c == "#" and not in_word:
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif c == "'":
            j = text.index("'", i + 1)
            word, in_word, i = word + text[i + 1:j], True, j + 1
        elif c == '"':
            j = _dquote_end(text, i)
            inner = text[i + 1:j - 1]
            for m in re.finditer(r"\$\(", inner):
                if not inner.startswith("$((", m.start()):
                    end = _balanced(inner, m.start() + 1)
                    subs.append((line, inner[m.start() + 2:end - 1]))
            word, in_word, i = word + inner, True, j
        elif text.startswith("$((", i):
            j = _balanced(text, i + 1)
            word, in_word, i = word + text[i:j], True, j
        elif text.startswith("$(", i):
            j = _balanced(text, i + 1)
            subs.append((line, text[i + 2:j - 1]))
            word, in_word, i = word + "$(...)", True, j
        elif c == "`":
            j = text.index("`", i + 1)
            subs.append((line, text[i + 1:j]))
            word, in_word, i = word + "$(...)", True, j + 1
        elif text.startswith("${", i):
            j = text.index("}", i)
            word, in_word, i = word + text[i:j + 1], True, j + 1
        elif c in "<>":
            if in_word and word.isdigit():
                word, in_word = "", False  # an fd number: 2>/dev/null
            end_word()
            m = re.match(r"<<-?|>>|>&|<&|>\||<>|<|>", text[i:])
            op = m.group(0)
            i += len(op)
            while i < len(text) and text[i] in " \t":
                i += 1
            m = re.match(r"""('[^']*'|"[^"]*"|[^\s;&|<>()])+""", text[i:])
            target = m.group(0) if m else ""
            i += len(target)
            if op.startswith("<<"):
                heredocs.append((target.replace("'", "").replace('"', ""), op == "<<-"))
        elif c in ";&|()":
            end_word()
            m = re.match(r";;|&&|\|\||[;&|()]", text[i:])
            toks.append(("op", m.group(0), line))
            i += len(m.group(0))
        else:
            word, in_word, i = word + c, True, i + 1
    end_word()
    return toks


def shell_commands(text, first_line=1):
    """(line, argv) of every simple command in sh text, $(...) bodies included, plus the
    names of the functions it defines."""
    subs = []
    toks = shell_lex(text, subs)
    cmds, funcs = [], set()
    argv, at_start, case_state = None, True, []  # case_state: stack of "pattern"/"body"
    k = 0
    while k < len(toks):
        kind, val, line = toks[k]
        if case_state and case_state[-1] == "pattern":
            if kind == "w" and val == "esac":
                case_state.pop()
            elif kind == "op" and val == ")":
                case_state[-1] = "body"
                at_start = True
            k += 1
            continue
        if kind == "op":
            if argv:
                cmds.append(argv)
            argv = None
            at_start = True
            if val == ";;" and case_state:
                case_state[-1] = "pattern"
            k += 1
            continue
        if at_start:
            if val == "esac" and case_state:
                case_state.pop()
            elif val == "case":
                case_state.append("pattern")
                while k + 1 < len(toks) and toks[k + 1][1] != "in":
                    k += 1
                k += 1
            elif val == "for":
                while k + 1 < len(toks) and toks[k + 1][1] != "do":
                    k += 1
            elif val in KEYWORDS_BEFORE_COMMAND:
                pass
            elif re.match(r"^[A-Za-z_]\w*=", val):
                pass
            elif k + 2 < len(toks) and toks[k + 1][1] == "(" and toks[k + 2][1] == ")":
                funcs.add(val)
                k += 2
            else:
                argv = (first_line + line - 1, [val])
                at_start = False
            k += 1
            continue
        argv[1].append(val)
        k += 1
    if argv:
        cmds.append(argv)
    for line, body in subs:
        sub_cmds, sub_funcs = shell_commands(body, first_line + line - 1)
        cmds += sub_cmds
        funcs |= sub_funcs
    return cmds, funcs


def script_programs(path, variables, seen=None):
    """{program: (script, line)} that a shell script runs (and the repository scripts it
    runs with sh/bash), minus fallbacks guarded by `if command -v NAME`."""
    seen = set() if seen is None else seen
    if path in seen:
        return {}
    seen.add(path)
    with open(path) as f:
        text = f.read()
    rel = os.path.relpath(path, REPO)
    cmds, funcs = shell_commands(text)
    # A function that runs its arguments ("$@") is a wrapper: its first argument is a program.
    wrappers = {m.group(1) for m in re.finditer(r"(?ms)^(\w+)\(\)\s*\{(.*?)^\}", text)
                if re.search(r'(^|\s)"\$@"', m.group(2))}
    optional = set(re.findall(r"\b(?:if|elif)\s+command\s+-v\s+([\w.+-]+)", text))
    local_vars = dict(variables)
    for name, value in re.findall(r"(?m)^\s*([A-Za-z_]\w*)=(/[^\s$;]*)\s*$", text):
        local_vars.setdefault(name, value)

    def expand(word):
        w = re.sub(r"\$\{?([A-Za-z_]\w*)\}?",
                   lambda m: local_vars.get(m.group(1), m.group(0)), word)
        return None if "$" in w or not w else w

    progs = {}
    for line, argv in cmds:
        argv = list(argv)
        while argv:
            head = argv[0]
            if head in wrappers or head in ("setsid", "nohup", "exec", "env", "runuser"):
                if head not in SH_BUILTINS and head not in wrappers:
                    progs.setdefault(head, (rel, line))
                if head == "runuser":
                    argv = argv[argv.index("--") + 1:] if "--" in argv else []
                else:
                    argv = [a for a in argv[1:] if not re.match(r"^[A-Za-z_]\w*=", a)]
                continue
            if head == "command" and len(argv) > 2 and argv[1] == "-v":
                argv = argv[2:3]
                continue
            break
        if not argv:
            continue
        prog = expand(argv[0])
        if prog is None or prog in SH_BUILTINS or prog in funcs or prog in optional:
            continue
        if prog in ("sh", "bash") and len(argv) > 1:
            sub = expand(argv[1])
            if sub and sub.startswith(REPO + os.sep) and os.path.isfile(sub):
                progs.update({k: v for k, v in script_programs(sub, variables, seen).items()
                              if k not in progs})
        progs.setdefault(prog, (rel, line))
    return progs


# ---------------------------------------------------------------------------------------------
# the checks

def resolve_program(prog):
    """The program's path, or "?NAME" when it is not installed here."""
    if "/" in prog:
        return prog if os.path.exists(prog) else "?" + prog
    return shutil.which(prog, path=STD_PATH) or "?" + prog


def check_files(pk, list_name, what, items):
    """items: {path or "?NAME": description}; a finding for each file that is missing or whose
    package is outside the list's closure."""
    findings = []
    allowed = pk.allowed(list_name, install_list(list_name))
    own = owners([p for p in items if not p.startswith("?")])
    for path, desc in items.items():
        if path.startswith("?"):
            findings.append("%s: %s is not installed on this machine" % (what, desc))
            continue
        pkgs = own.get(path)
        if not pkgs:
            findings.append("%s: %s (%s) belongs to no Debian package" % (what, path, desc))
        elif not pkgs & allowed:
            findings.append("%s: %s (%s) comes from %s, which `deploy/install-deps.sh %s` "
                            "does not install (nor anything it depends on): add it to the %s "
                            "list or stop needing it" % (what, path, desc, " or ".join(sorted(pkgs)),
                                                        list_name, list_name))
    return findings


def check_make_all(pk):
    lines = make_dry_run("all")
    findings = test_only_findings("all", lines)
    items = {}
    for prog, line in recipe_programs(lines).items():
        items[resolve_program(prog)] = "program %s, run by `%s`" % (prog, line[:80])
    for h, src in included_headers(compile_groups(lines)).items():
        items.setdefault(h, "header included by %s" % src)
    for flag, path in linked_libraries(lines).items():
        items.setdefault(path, "library %s" % flag)
    return findings + check_files(pk, "build", "make all", items), len(items)


def check_demo(pk):
    variables = {"REPO": REPO, "here": os.path.dirname(DEMO_SCRIPT)}
    items = {}
    for prog, (script, line) in script_programs(DEMO_SCRIPT, variables).items():
        items.setdefault(resolve_program(prog), "command %s, run at %s:%d" % (prog, script, line))
    return check_files(pk, "demo", "make demo", items), len(items)


def self_test(pk):
    """Each injected fault must be reported; returns a list of failures of the self-test."""
    failures = []
    if not test_only_findings("all", ["cc -o build/release/tests/test_x tests/unit/test_x.c "
                                      "-lcmocka"]):
        failures.append("a -lcmocka recipe in make all was not reported")
    cmocka_h = "/usr/include/cmocka.h"
    if not os.path.exists(cmocka_h):
        raise CheckError("the self-test needs %s (libcmocka-dev; run make deps-test)" % cmocka_h)
    f = check_files(pk, "build", "make all", {cmocka_h: "header included by common/x.c"})
    if not any("libcmocka-dev" in x and "install-deps.sh build" in x for x in f):
        failures.append("a header owned by libcmocka-dev was not reported: %r" % f)
    script = "if command -v fallback >/dev/null; then x=1; fi\n" \
             "as() { runuser -u nobody -- \"$@\"; }\n" \
             "case \"$1\" in a) as \"$BIN/valgrind\" --x ;; *) y=$(openssl rand 4) ;; esac\n"
    cmds, funcs = shell_commands(script)
    names = [argv[0] for _, argv in cmds]
    if "as" not in funcs or "openssl" not in names or "runuser" not in names:
        failures.append("shell scan missed commands: %r %r" % (names, funcs))
    valgrind = resolve_program("valgrind")
    if valgrind is None:
        raise CheckError("the self-test needs valgrind (run make deps-test)")
    f = check_files(pk, "demo", "make demo", {valgrind: "command valgrind"})
    if not any("valgrind" in x and "install-deps.sh demo" in x for x in f):
        failures.append("a demo command from valgrind was not reported: %r" % f)
    return failures


def main(argv):
    try:
        pk = Packages()
        failures = self_test(pk)
        if failures:
            for x in failures:
                print("check-deps: SELF-TEST FAILED: %s" % x, file=sys.stderr)
            return 2
        if argv[1:] == ["--self-test"]:
            print("check-deps: self-test passed")
            return 0
        f_all, n_all = check_make_all(pk)
        f_demo, n_demo = check_demo(pk)
    except CheckError as e:
        print("check-deps: cannot check: %s" % e, file=sys.stderr)
        return 2
    for x in f_all + f_demo:
        print("check-deps: %s" % x, file=sys.stderr)
    if f_all or f_demo:
        return 1
    print("check-deps: make all needs %d programs, headers and libraries, all from the build "
          "list; demo.sh runs %d programs, all from the demo list" % (n_all, n_demo))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
