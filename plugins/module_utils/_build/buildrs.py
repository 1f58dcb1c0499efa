# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The chain's flags as a crate's own ``build.rs`` passes them (spec ``derive.flags``).

Runs on the target (pure Python, no Rust parser): build.rs spells each step
as ``Command::new("clang")`` ... ``.args([ "...", ... ])``; the literal
arguments of the step that compiles ``sources.kern`` are the clang flags,
those of ``Command::new("llc")`` the llc flags, and those of the clang step
that compiles ``sources.wrapper_c`` the wrapper flags. Output/input
arguments (``-o``, the source file, ``-c`` and ``-I OUT_DIR`` of the wrapper
step, which the pipeline adds itself) are dropped. LibreQoS v1.4's clang step
passes ``-c`` as well; it is kept, as build.rs passes it.
"""

from __future__ import annotations

import os
import re

from .._common import LqosError

_COMMAND = re.compile(r'Command::new\(\s*"([^"]+)"\s*\)')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _args_list(text: str, start: int):
    """(items, line) of the first ``.args([...])`` after ``start``, before the next Command."""
    nxt = _COMMAND.search(text, start)
    end_limit = nxt.start() if nxt else len(text)
    m = re.compile(r"\.args\(\s*\[").search(text, start, end_limit)
    if not m:
        return None, 0
    depth, i = 1, m.end()
    items, cur = [], ""
    while i < len(text) and depth:
        ch = text[i]
        if ch == '"':
            s = _STRING.match(text, i)
            cur += s.group(0)
            i = s.end()
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                break
        if ch == "," and depth == 1:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    if cur.strip():
        items.append(cur.strip())
    return items, text.count("\n", 0, m.start()) + 1


def _literal(item: str):
    m = _STRING.fullmatch(item)
    return m.group(1) if m else None


def build_rs_flags(src: str, spec: dict) -> dict:
    """{"clang": [...], "llc": [...], "wrapper": [...], "source": "build.rs:L1,L2,L3"}.

    Raises LqosError naming build.rs and the step it cannot find."""
    path = os.path.join(src, "build.rs")
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = _strip_comments(fh.read())
    except OSError as exc:
        raise LqosError("spec %r derives its flags from build.rs, but %s cannot be read (%s)."
                        % (spec["name"], path, exc.strerror),
                        "point src at the crate root that holds build.rs, or set derive.flags: false and give "
                        "flags in the spec.")
    kern = os.path.basename(spec["sources"]["kern"])
    wrapper = os.path.basename(spec["sources"]["wrapper_c"])
    steps = {}
    for m in _COMMAND.finditer(text):
        tool = m.group(1)
        items, line = _args_list(text, m.end())
        if items is None:
            continue
        literals = [_literal(i) for i in items]
        if tool == "clang" and kern in literals:
            steps.setdefault("clang", (_flags(items, (kern,)), line))
        elif tool == "clang" and wrapper in literals:
            steps.setdefault("wrapper", ([v for v in _flags(items, (wrapper, "-c")) if not v.startswith("-I")], line))
        elif tool == "llc":
            steps.setdefault("llc", (_flags(items, ()), line))
    missing = [s for s in ("clang", "llc", "wrapper") if s not in steps]
    if missing:
        what = {"clang": 'Command::new("clang") with .args([...]) naming %s' % kern,
                "llc": 'Command::new("llc") with .args([...])',
                "wrapper": 'Command::new("clang") with .args([...]) naming %s' % wrapper}
        raise LqosError("spec %r derives its flags from build.rs, but %s has no %s: this build.rs spells its "
                        "steps in a way the derivation does not understand."
                        % (spec["name"], path, "; no ".join(what[s] for s in missing)),
                        "set derive.flags: false in the spec and give flags.clang/llc/wrapper as this build.rs "
                        "passes them.")
    return {"clang": steps["clang"][0], "llc": steps["llc"][0], "wrapper": steps["wrapper"][0],
            "source": "build.rs:%d,%d,%d" % (steps["clang"][1], steps["llc"][1], steps["wrapper"][1])}


def _flags(items: list, drop: tuple) -> list:
    """The literal arguments, without ``-o X`` and the ``drop`` words."""
    out, skip = [], False
    for item in items:
        if skip:
            skip = False
            continue
        value = _literal(item)
        if value == "-o":
            skip = True
        elif value is not None and value not in drop:
            out.append(value)
    return out


def apply_build_rs_flags(spec: dict, src: str) -> dict:
    """A copy of ``spec`` whose flags are build.rs's when ``derive.flags`` is on;
    ``flags_source`` says where they came from ("spec" or "build.rs:L1,L2,L3")."""
    spec = dict(spec)
    if not spec.get("derive", {}).get("flags") or not os.path.isdir(src):  # a missing src is named later
        spec["flags_source"] = "spec"
        return spec
    found = build_rs_flags(src, spec)
    flags = dict(spec["flags"])
    flags.update(clang=found["clang"], llc=found["llc"], wrapper=found["wrapper"])
    spec["flags"] = flags
    spec["flags_source"] = found["source"]
    return spec
