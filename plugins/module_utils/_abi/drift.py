# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Chain drift: the skeleton names against the spec and against what wrapper.c uses, wrapper.h against
bindings.rs, the sizing constants the Rust side restates and the size assertions. Pure: text and plain data
in, drift rows out."""

from __future__ import annotations

import difflib
import re


# ---------------------------------------------------------------------------
# Chain drift: skeleton, wrapper.c, wrapper.h, bindings.rs, constants
# ---------------------------------------------------------------------------

def strip_c_comments(text: str, keep_strings: bool = False) -> str:
    """C source without comments (and string literals, unless keep_strings); line numbers kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            i = end
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            body = text[i + 1:min(j, n)] if keep_strings else " " * max(0, min(j, n) - i - 1)
            out.append(ch + body + (ch if j < n else ""))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def skeleton_variables(text: str) -> dict:
    """{"rodata": [vars], "data": [...], "bss": [...]} as the skeleton declares them."""
    out = {}
    for m in re.finditer(r"struct \w+__(rodata|data|bss|kconfig)\s*\{(.*?)\}\s*\*(\w+);", text, re.S):
        out[m.group(3)] = re.findall(r"(\w+)(?:\[[^\]]*\])*\s*;", m.group(2))
    return out


_SKEL_REF = re.compile(r"(?:->|\.)\s*(progs|maps|links)\s*\.\s*([A-Za-z_]\w*)")


_SKEL_VAR = re.compile(r"->\s*(rodata|data|bss|kconfig)\s*->\s*([A-Za-z_]\w*)")


_LIBBPF_PREFIXES = ("bpf_", "btf", "libbpf", "ring_buffer", "perf_buffer", "user_ring_buffer", "xsk_")


_SKEL_FN = re.compile(r"\b([A-Za-z_]\w*?)__(open_and_load|open_opts|open|load|attach|detach|destroy|elf_bytes|"
                      r"create_skeleton)\s*\(")


_BY_NAME = re.compile(r"\bbpf_object__find_(program|map)_by_name\s*\([^,;]*,\s*\"([A-Za-z_]\w*)\"\s*\)")


def wrapper_references(text: str) -> list:
    """What wrapper.c uses from the skeleton: [(kind, name, line)] with kind in
    progs, maps, links, rodata, data, bss, kconfig, object, and prog_name /
    map_name for bpf_object__find_{program,map}_by_name(obj, "NAME")."""
    clean = strip_c_comments(text)
    out = []
    with_strings = strip_c_comments(text, keep_strings=True)
    for m in _BY_NAME.finditer(with_strings):
        out.append(("prog_name" if m.group(1) == "program" else "map_name", m.group(2),
                    with_strings.count("\n", 0, m.start()) + 1))
    for rx, fixed in ((_SKEL_REF, None), (_SKEL_VAR, None), (_SKEL_FN, "object")):
        for m in rx.finditer(clean):
            if fixed and m.group(1).startswith(_LIBBPF_PREFIXES):
                continue
            line = clean.count("\n", 0, m.start()) + 1
            kind = fixed or m.group(1)
            out.append((kind, m.group(1) if fixed else m.group(2), line))
    out.sort(key=lambda r: (r[2], r[0], r[1]))
    return out


_BRACKETS = re.compile(r"[()\[\]<>{}]")


def _split_top(params: str) -> list:
    if not _BRACKETS.search(params.replace("->", "")):
        # No nesting (most parameter lists): a plain split gives the same parts, without the walk below.
        return [p.strip() for p in params.split(",") if p.strip()]
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(params):
        ch = params[i]
        if params.startswith("->", i):
            cur.append("->")
            i += 2
            continue
        if ch in "([<{":
            depth += 1
        elif ch in ")]>}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _strip_attributes(text: str) -> str:
    out = text
    while True:
        m = re.search(r"\b__attribute__\s*\(", out)
        if not m:
            return out
        depth, j = 0, m.end() - 1
        while j < len(out):
            if out[j] == "(":
                depth += 1
            elif out[j] == ")":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        out = out[:m.start()] + " " + out[j + 1:]


_C_PROTO = re.compile(r"^(?P<ret>[\w\s\*]*?[\w\*])\s*\b(?P<name>[A-Za-z_]\w*)\s*\((?P<params>.*)\)\s*$", re.S)


def header_functions(text: str) -> dict:
    """{name: (arity, line)} of the functions a C header declares (not static,
    not typedefs, not function pointers). ``...`` counts as one parameter."""
    clean = strip_c_comments(text)
    # preprocessor lines (with continuations) become blank lines
    clean = re.sub(r"(?m)^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", lambda m: "\n" * m.group(0).count("\n"), clean)
    out = {}
    depth = 0
    start = 0
    for i, ch in enumerate(clean):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                # the end of a definition or a struct body: the next statement starts here
                start = i + 1
        elif ch == ";" and depth == 0:
            stmt = clean[start:i]
            line = clean.count("\n", 0, start + len(stmt) - len(stmt.lstrip())) + 1
            start = i + 1
            stmt = _strip_attributes(stmt).strip()
            if not stmt or re.match(r"^(typedef|static|extern\s+\"C\")\b", stmt):
                continue
            m = _C_PROTO.match(stmt)
            if not m or "(" in m.group("ret") or m.group("ret").strip() in ("", "return"):
                continue
            params = _split_top(m.group("params"))
            arity = 0 if params in ([], ["void"]) else len(params)
            out[m.group("name")] = (arity, line)
    return out


def bindings_functions(text: str) -> dict:
    """{name: arity} of the ``pub fn`` declarations bindgen wrote."""
    out = {}
    for m in re.finditer(r"\bpub\s+fn\s+([A-Za-z_]\w*)\s*\(", text):
        # From close paren to close paren (not character by character): bindings.rs is large.
        depth, j = 1, m.end()
        while depth:
            k = text.find(")", j)
            if k < 0:
                j = len(text)
                break
            depth += text.count("(", j, k) - 1
            j = k + 1
        params = _split_top(text[m.end():j - 1])
        out[m.group(1)] = len(params)
    return out


def _drift(kind: str, subject: str, message: str, fix: str) -> dict:
    return {"kind": kind, "subject": subject, "message": message, "fix": fix}


def _close(name: str, candidates) -> str:
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return near[0] if near else ""


def chain_drift(spec: dict, skel: dict | None, skel_vars: dict | None, sections: dict | None,
                wrapper_c: str | None, wrapper_h: str | None, bindings: str | None, files: dict) -> list:
    """Drift between the spec, the skeleton, wrapper.c, wrapper.h and bindings.rs.

    ``files`` maps skeleton/wrapper_c/wrapper_h/bindings to the file names
    used in messages. Any of the texts may be None (not present: skipped).
    """
    out = []
    expect = spec.get("expect", {})
    skel_file = files.get("skeleton", "the skeleton")
    renames = {}
    if skel is not None:
        progs, maps = skel["programs"], skel["maps"]
        gone = [p for p in expect.get("programs", {}) if p not in progs]
        new = [p for p in progs if p not in expect.get("programs", {})] if expect.get("programs") else []
        if len(gone) == 1 and len(new) == 1:
            renames[gone[0]] = new[0]
        for name in gone:
            renames.setdefault(name, _close(name, new))
        for name in expect.get("programs", {}):
            if name not in progs:
                hint = renames.get(name)
                out.append(_drift(
                    "program", name,
                    "program `%s` is listed in the spec's expect.programs but the skeleton %s has no such program "
                    "(it has: %s)" % (name, skel_file, ", ".join(progs) or "none"),
                    ("it looks renamed to `%s`: rename it back in the BPF source, or update expect.programs, "
                     "attach and wrapper.c to `%s`" % (hint, hint)) if hint else
                    "restore the program in the BPF source, or remove it from expect.programs"))
        if expect.get("programs"):
            for name in progs:
                if name not in expect["programs"]:
                    out.append(_drift(
                        "program", name,
                        "the skeleton %s has program `%s` that the spec's expect.programs does not list" % (skel_file, name),
                        "add `%s: <section type>` to expect.programs, or remove the program from the BPF source" % name))
        for name, want in sorted((expect.get("programs") or {}).items()):
            got = (sections or {}).get(name)
            if got is not None and want and got != want and got.split("/")[0] != want:
                out.append(_drift(
                    "program", name,
                    "program `%s` is in section %s but the spec expects section type %s" % (name, got, want),
                    "fix SEC(\"...\") in the BPF source or expect.programs.%s" % name))
        for name in expect.get("maps", []):
            if name not in maps:
                hint = _close(name, maps)
                out.append(_drift(
                    "map", name,
                    "map `%s` is listed in the spec's expect.maps but the skeleton %s has no such map (it has: %s)"
                    % (name, skel_file, ", ".join(maps) or "none"),
                    ("it looks renamed to `%s`: rename it back in the BPF source, or update the spec and every "
                     "user of the pin name" % hint) if hint else
                    "restore the map in the BPF source, or remove it from expect.maps"))
    wc_file = files.get("wrapper_c", "wrapper.c")
    if skel is not None and wrapper_c is not None:
        have = {"progs": skel["programs"], "links": skel["programs"],
                "maps": skel["maps"] + skel.get("internal_maps", [])}
        have["prog_name"], have["map_name"] = have["progs"], have["maps"]
        have.update(skel_vars or {})
        what = {"progs": "program", "links": "program", "maps": "map", "prog_name": "program", "map_name": "map"}
        seen = set()
        for kind, name, line in wrapper_references(wrapper_c):
            if (kind, name) in seen:
                continue
            if kind == "object":
                if skel.get("object") and name != skel["object"]:
                    seen.add((kind, name))
                    out.append(_drift(
                        "wrapper", name + "__",
                        "%s:%d calls %s__*() but the skeleton object is `%s` (functions %s__*)"
                        % (wc_file, line, name, skel["object"], skel["object"]),
                        "rename the calls in %s to %s__*(), or rename the BPF source back" % (wc_file, skel["object"])))
                continue
            pool = have.get(kind, [])
            if name in pool:
                continue
            seen.add((kind, name))
            if kind in ("progs", "maps", "links"):
                use = "uses skel->%s.%s" % (kind, name)
            elif kind in ("prog_name", "map_name"):
                use = "looks up %s \"%s\" by name" % (what[kind], name)
            else:
                use = "uses skel->%s->%s" % (kind, name)
            hint = (renames.get(name) if kind in ("progs", "links", "prog_name") else None) or _close(name, pool)
            out.append(_drift(
                "wrapper", name,
                "%s:%d %s but the skeleton %s has no %s `%s` (it has: %s)"
                % (wc_file, line, use, skel_file, what.get(kind, "%s variable" % kind), name,
                   ", ".join(pool) or "none"),
                ("update %s to the new skeleton name `%s`, or rename it back in the BPF source" % (wc_file, hint))
                if hint else "update %s to a name the skeleton has, or restore `%s` in the BPF source"
                % (wc_file, name)))
    wh_file = files.get("wrapper_h", "wrapper.h")
    b_file = files.get("bindings", "bindings.rs")
    if wrapper_h is not None and bindings is not None:
        declared = header_functions(wrapper_h)
        bound = bindings_functions(bindings)
        for name, (arity, line) in sorted(declared.items(), key=lambda kv: kv[1][1]):
            if name not in bound:
                out.append(_drift(
                    "binding", name,
                    "%s:%d declares %s() (%d parameter(s)) but %s has no `pub fn %s`"
                    % (wh_file, line, name, arity, b_file, name, ),
                    "regenerate bindings.rs from this wrapper.h (rebuild with lqos.bpf.pipeline), and check "
                    "flags.bindgen allow/block lists"))
            elif bound[name] != arity:
                out.append(_drift(
                    "binding", name,
                    "%s:%d declares %s() with %d parameter(s) but %s has it with %d"
                    % (wh_file, line, name, arity, b_file, bound[name]),
                    "regenerate bindings.rs from this wrapper.h (rebuild with lqos.bpf.pipeline)"))
    return out


def constants_report(entries: list) -> tuple:
    """(constants, drift) from the controller's constant data:
    [{name, header, c_value, rust, rust_name, rust_value, c_error, rust_error}]; the
    errors are {message, fix} or None."""
    rows, drift = [], []
    for e in entries:
        row = {"name": e["name"], "header": e["header"], "c_value": e.get("c_value"), "rust": e.get("rust"),
               "rust_name": e.get("rust_name"), "rust_value": e.get("rust_value")}
        if e.get("c_error") or e.get("rust_error"):
            row["status"] = "error"
            for err in (e.get("c_error"), e.get("rust_error")):
                if err:
                    drift.append(_drift("constant", e["name"], err["message"], err["fix"]))
        elif not e.get("rust"):
            row["status"] = "c_only"
        elif e["c_value"] == e["rust_value"]:
            row["status"] = "ok"
        else:
            row["status"] = "mismatch"
            drift.append(_drift(
                "constant", e["name"],
                "%s is %d in %s but the Rust side restates it as %s = %d in %s"
                % (e["name"], e["c_value"], e["header"], e.get("rust_name") or e["name"], e["rust_value"], e["rust"]),
                "change the Rust const to %d (the C value sizes the maps), or change both" % e["c_value"]))
        rows.append(row)
    return rows, drift


def assertion_drift(entries: list) -> list:
    """Size assertions on Rust types that are not mirror pairs but whose layout
    the controller computed: [{type, size, style, file, line, rust_size}]."""
    out = []
    for a in entries:
        if a.get("rust_size") is not None and a["rust_size"] != a["size"]:
            out.append(_drift(
                "asserted_size", a["type"],
                "the size assertion at %s:%d (%s) says size_of::<%s>() is %d but the Rust layout is %d bytes"
                % (a["file"], a["line"], a["style"], a["type"], a["size"], a["rust_size"]),
                "change the assertion to %d, or the type back to %d bytes" % (a["rust_size"], a["size"])))
    return out
