# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""ABI parity of an lqos_sys-shaped build (target side of lqos.bpf.abi_check).

The Rust half (tree-sitter layouts of the mirror types, size assertions, Rust
constants) is computed on the controller by the action plugin and arrives here
as plain data (the module's ``rust_layouts`` option). This file compares it
with the BTF of the built object, read through libbpf (``_bpf_btf.Btf``), and
checks the chain around the object: skeleton names against the spec and
against what ``wrapper.c`` uses, ``wrapper.h`` against ``bindings.rs``, and
the sizing constants the Rust side restates.

Everything except ``btf_layout``/``check_build`` is pure and works on plain
data, so it is unit-tested without a kernel.
"""

from __future__ import annotations

import difflib
import os
import re

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError

MAX_NESTING = 8

# C integer/float spellings (as BTF names them) -> the Rust primitive of the same size and sign.
_C_TO_RUST = {
    "__u8": "u8", "u8": "u8", "uint8_t": "u8", "u_int8_t": "u8", "unsigned char": "u8",
    "__s8": "i8", "s8": "i8", "int8_t": "i8", "signed char": "i8", "char": "i8",
    "__u16": "u16", "u16": "u16", "uint16_t": "u16", "u_int16_t": "u16", "unsigned short": "u16",
    "short unsigned int": "u16", "__be16": "u16", "__le16": "u16", "__sum16": "u16",
    "__s16": "i16", "s16": "i16", "int16_t": "i16", "short": "i16", "short int": "i16",
    "__u32": "u32", "u32": "u32", "uint32_t": "u32", "u_int32_t": "u32", "unsigned int": "u32",
    "__be32": "u32", "__le32": "u32", "__wsum": "u32",
    "__s32": "i32", "s32": "i32", "int32_t": "i32", "int": "i32",
    "__u64": "u64", "u64": "u64", "uint64_t": "u64", "u_int64_t": "u64", "unsigned long long": "u64",
    "long long unsigned int": "u64", "unsigned long": "u64", "long unsigned int": "u64",
    "__be64": "u64", "__le64": "u64", "__aligned_u64": "u64",
    "__s64": "i64", "s64": "i64", "int64_t": "i64", "long long": "i64", "long long int": "i64",
    "long": "i64", "long int": "i64",
    "_Bool": "bool", "bool": "bool", "float": "f32", "double": "f64",
    "unsigned __int128": "u128", "__int128 unsigned": "u128", "__u128": "u128",
    "__int128": "i128", "__s128": "i128",
}
_C_STRUCT_TO_RUST = {"struct in6_addr": "[u8; 16]", "struct in_addr": "u32"}


# ---------------------------------------------------------------------------
# Field model
# ---------------------------------------------------------------------------
#
# Both sides are normalised to the same shape:
#   {"name", "offset", "size", "type", "array": {"count", "elem_size", "elem_type"} | None,
#    "fields": [nested fields with offsets relative to the field] | None}
# The C side comes from BTF (btf_layout), the Rust side from the controller
# (plugin_utils/_abi_controller.py), which emits the same shape.


def _c_array(member: dict) -> dict | None:
    dims = member.get("nelems")
    if not dims:
        return None
    count = 1
    for n in dims:
        count *= n
    return {"count": count, "elem_size": member["size"] // count if count else 0,
            "elem_type": member.get("elem_type", "")}


def c_rust_spelling(c_type: str, array: dict | None = None, rust_names: dict | None = None,
                    dims: list | None = None) -> str | None:
    """A Rust type that mirrors a C type as BTF spells it ("__u64", "__u8[5]",
    "struct ip_hash_info"), or None when there is no obvious one."""
    rust_names = rust_names or {}
    text = c_type.strip()
    for word in ("const ", "volatile "):
        if text.startswith(word):
            text = text[len(word):]
    m = re.match(r"^(.*?)((?:\[\d+\])+)$", text)
    if m:
        inner = c_rust_spelling(m.group(1), None, rust_names)
        if inner is None:
            return None
        for n in reversed(re.findall(r"\[(\d+)\]", m.group(2))):
            inner = "[%s; %s]" % (inner, n)
        return inner
    if text in _C_TO_RUST:
        return _C_TO_RUST[text]
    if text in _C_STRUCT_TO_RUST:
        return _C_STRUCT_TO_RUST[text]
    bare = re.sub(r"^(struct|union|enum)\s+", "", text)
    if bare in rust_names:
        return rust_names[bare]
    if text.startswith("enum "):
        return "u32"
    if text.endswith("*"):
        return "u64"
    return None


def btf_fields(btf, layout: dict, depth: int = 0) -> list:
    """Normalised fields of a BTF layout (``Btf.layout``), nested structs resolved."""
    out = []
    for m in layout["members"]:
        field = {"name": m["name"], "offset": m["offset"], "size": m["size"], "type": m["type"],
                 "array": _c_array(m), "fields": None}
        if m.get("bitfield_size"):
            field["bitfield"] = m["bitfield_size"]
        if m["kind"] in ("struct", "union") and depth < MAX_NESTING:
            nested = btf.layout("#%d" % m["type_id"])
            field["fields"] = btf_fields(btf, nested, depth + 1)
        out.append(field)
    return out


# ---------------------------------------------------------------------------
# Field matching
# ---------------------------------------------------------------------------

def _lis(seq: list) -> set:
    """Indexes (into seq) of one longest strictly increasing subsequence."""
    if not seq:
        return set()
    best_len = [1] * len(seq)
    prev = [-1] * len(seq)
    for i in range(len(seq)):
        for j in range(i):
            if seq[j] < seq[i] and best_len[j] + 1 > best_len[i]:
                best_len[i], prev[i] = best_len[j] + 1, j
    i = max(range(len(seq)), key=lambda k: (best_len[k], -k))
    out = set()
    while i != -1:
        out.add(i)
        i = prev[i]
    return out


def match_fields(cf: list, rf: list) -> tuple:
    """Pair C fields with Rust fields.

    Names present once on each side pair by name (even out of order); the
    pairs that keep their order are anchors, and between two anchors the
    remaining fields pair by position when both sides have as many, else by
    offset. Returns (pairs, reordered): pairs are (c_index|None, r_index|None)
    in C order, reordered is True when a name pair is out of order.
    """
    cnames = [f["name"] for f in cf]
    rnames = [f["name"] for f in rf]
    by_name = []
    for ci, name in enumerate(cnames):
        if name and cnames.count(name) == 1 and rnames.count(name) == 1:
            by_name.append((ci, rnames.index(name)))
    keep = _lis([ri for _ci, ri in by_name])
    anchors = [by_name[i] for i in sorted(keep)]
    reordered = len(anchors) != len(by_name)
    named_c = {ci for ci, _ri in by_name}
    named_r = {ri for _ci, ri in by_name}
    pairs = list(by_name)
    bounds = [(-1, -1)] + anchors + [(len(cf), len(rf))]
    for (c0, r0), (c1, r1) in zip(bounds, bounds[1:]):
        gc = [i for i in range(c0 + 1, c1) if i not in named_c]
        gr = [i for i in range(r0 + 1, r1) if i not in named_r]
        if len(gc) == len(gr):
            pairs.extend(zip(gc, gr))
            continue
        i = j = 0
        while i < len(gc) or j < len(gr):
            if i < len(gc) and j < len(gr) and cf[gc[i]]["offset"] == rf[gr[j]]["offset"]:
                pairs.append((gc[i], gr[j]))
                i += 1
                j += 1
            elif j >= len(gr) or (i < len(gc) and cf[gc[i]]["offset"] < rf[gr[j]]["offset"]):
                pairs.append((gc[i], None))
                i += 1
            else:
                pairs.append((None, gr[j]))
                j += 1
    # C order; a Rust-only field goes where its offset falls among the C fields.
    pairs.sort(key=lambda p: (cf[p[0]]["offset"] if p[0] is not None else rf[p[1]]["offset"],
                              0 if p[0] is not None else 1, p[0] if p[0] is not None else p[1]))
    return pairs, reordered


def _same_shape(c: dict, r: dict) -> bool:
    ca, ra = c.get("array"), r.get("array")
    return not (ca and ra) or ca["elem_size"] == ra["elem_size"]


def compare_fields(cf: list, rf: list, prefix: str = "", c_base: int = 0, r_base: int = 0,
                   depth: int = 0) -> tuple:
    """Field rows (flat, nested structs expanded with dotted names) and whether
    the Rust fields are out of C order somewhere."""
    rows = []
    pairs, reordered = match_fields(cf, rf)
    level = {"reordered": reordered, "order": [x["name"] for x in cf]}
    for ci, ri in pairs:
        c = cf[ci] if ci is not None else None
        r = rf[ri] if ri is not None else None
        row = {
            "name": prefix + (c["name"] if c is not None else r["name"]),
            "c_name": c["name"] if c is not None else None,
            "c_type": c["type"] if c is not None else None,
            "c_offset": c_base + c["offset"] if c is not None else None,
            "c_size": c["size"] if c is not None else None,
            "rust_name": r["name"] if r is not None else None,
            "rust_type": r["type"] if r is not None else None,
            "rust_offset": r_base + r["offset"] if r is not None else None,
            "rust_size": r["size"] if r is not None else None,
        }
        if c is None:
            row["status"] = "missing_in_c"
        elif r is None:
            row["status"] = "missing_in_rust"
        elif c["size"] != r["size"]:
            row["status"] = "size"
        elif row["c_offset"] != row["rust_offset"]:
            row["status"] = "offset"
        elif not _same_shape(c, r):
            row["status"] = "element"
        else:
            row["status"] = "ok"
        row["_c"], row["_r"], row["_level"] = c, r, level
        rows.append(row)
        if (row["status"] == "ok" and c.get("fields") and r.get("fields") and depth < MAX_NESTING):
            inner, inner_reordered = compare_fields(c["fields"], r["fields"], row["name"] + ".",
                                                    row["c_offset"], row["rust_offset"], depth + 1)
            rows.extend(inner)
            reordered = reordered or inner_reordered
    return rows, reordered


# ---------------------------------------------------------------------------
# Pair report
# ---------------------------------------------------------------------------

def _rust_suggestion(row: dict, rust_names: dict) -> str:
    c = row["_c"]
    want = c_rust_spelling(c["type"], c.get("array"), rust_names)
    rtype = row["rust_type"] or ""
    if want is None and c.get("fields"):
        # A generic mirror of a C struct whose members all share one
        # primitive type: DownUpOrder<u64> for struct { __u64 down; __u64 up; }.
        prims = {c_rust_spelling(f["type"]) for f in c["fields"]}
        m = re.match(r"^([A-Za-z_][\w:]*)<(.+)>$", rtype)
        if m and len(prims) == 1 and None not in prims:
            want = "%s<%s>" % (m.group(1), prims.pop())
    if want is None:
        return "change the Rust field to a %d-byte type (C type %s)" % (c["size"], c["type"])
    return "change the Rust field to %s (C type %s)" % (want, c["type"])


def _row_problem(row: dict, rows: list, rust_names: dict, c_name: str) -> str:
    status = row["status"]
    name = row["name"]
    if status == "missing_in_rust":
        c = row["_c"]
        want = c_rust_spelling(c["type"], c.get("array"), rust_names) or "[u8; %d]" % c["size"]
        prefix = name[:len(name) - len(row["c_name"])]
        before = [r for r in rows[:rows.index(row)]
                  if all((r["rust_name"] is not None, r["name"].startswith(prefix), "." not in r["name"][len(prefix):]))]
        where = ("after `%s` in" % before[-1]["rust_name"]) if before else "as the first field of"
        return ("C field `%s` (offset %d size %d, %s) has no Rust counterpart: add `%s: %s` %s the Rust struct"
                % (name, row["c_offset"], row["c_size"], row["c_type"], row["c_name"], want, where))
    if status == "missing_in_c":
        return ("Rust field `%s` (offset %d size %d, %s) has no C counterpart: remove it from the Rust struct, "
                "or add it to C %s" % (name, row["rust_offset"], row["rust_size"], row["rust_type"], c_name))
    shown = "`%s`" % name if row["rust_name"] == row["c_name"] else "`%s` (Rust `%s`)" % (name, row["rust_name"])
    where = ("%s is at C offset %d size %d but Rust offset %d size %d"
             % (shown, row["c_offset"], row["c_size"], row["rust_offset"], row["rust_size"]))
    if status == "size":
        return "field %s: %s" % (where, _rust_suggestion(row, rust_names))
    if status == "element":
        c, r = row["_c"], row["_r"]
        want = c_rust_spelling(c["type"], c.get("array"), rust_names) or c["type"]
        return ("field %s is C %s but Rust %s (same %d bytes, element size %d vs %d): change the Rust field to %s"
                % (shown, c["type"], r["type"], c["size"], c["array"]["elem_size"], r["array"]["elem_size"], want))
    # offset
    if row["_level"]["reordered"]:
        return ("field %s: the Rust fields are in a different order than in C; reorder them as in C: %s"
                % (where, ", ".join(row["_level"]["order"])))
    return ("field %s: the fields before it line up, so the Rust struct aligns it differently; check "
            "#[repr(C)], packed and align(N) against C" % where)


def compare_pair(entry: dict, c_layout: dict | None, c_fields: list | None, c_error: str | None,
                 rust_names: dict) -> dict:
    """Three-way report of one mirror pair.

    ``entry`` is the controller's data for the pair: rust, c, layout (or
    error) and asserted sizes.
    """
    rust, c_name = entry["rust"], entry["c"]
    lay = entry.get("layout")
    where = "%s:%d" % (lay["file"], lay["line"]) if lay else None
    head = "%s (Rust%s) vs %s (C BTF)" % (rust, ", " + where if where else "", c_name)
    report = {
        "rust": rust, "c": c_name, "rust_file": where, "origin": entry.get("origin", "spec"),
        "maps": list(entry.get("maps", [])),
        "btf_size": c_layout["size"] if c_layout else None,
        "rust_size": lay["size"] if lay else None,
        "btf_align": c_layout["align"] if c_layout else None,
        "rust_align": lay["align"] if lay else None,
        "asserted": [dict(a) for a in entry.get("asserted", [])],
        "fields": [], "first_divergence": None, "problems": [], "status": "ok",
    }
    if entry.get("error"):
        report["problems"].append("%s: %s" % (head, entry["error"]))
    if c_error:
        report["problems"].append("%s: %s" % (head, c_error))
    if report["problems"]:
        report["status"] = "error"
        return report
    rows = compare_fields(c_fields, lay["fields"])[0]
    first = next((r for r in rows if r["status"] != "ok"), None)
    for r in rows:
        r["first_divergence"] = r is first
    if first is not None:
        report["problems"].append("%s: %s" % (head, _row_problem(first, rows, rust_names, c_layout["c_type"])))
        report["first_divergence"] = {k: v for k, v in first.items() if not k.startswith("_")}
    elif report["btf_size"] != report["rust_size"]:
        if report["btf_align"] != report["rust_align"]:
            fix = ("make the alignment match: C aligns it to %d, Rust to %d (check #[repr(C, align(N))] / packed)"
                   % (report["btf_align"], report["rust_align"]))
        else:
            fix = "add %d byte(s) of explicit trailing padding to the %s side" % (
                abs(report["btf_size"] - report["rust_size"]), "Rust" if report["btf_size"] > report["rust_size"] else "C")
        report["problems"].append("%s: size is %d bytes in C BTF but %d bytes in Rust, with every field in line: %s"
                                  % (head, report["btf_size"], report["rust_size"], fix))
    elif lay.get("packed") and report["rust_align"] < report["btf_align"]:
        # Same size, every field in line, but #[repr(C, packed)] gives the type alignment 1 where C aligns it
        # naturally: a struct holding it as a field, or an array of it, is laid out differently on the two sides.
        # BTF keeps no packed or aligned(N) attribute: libbpf's btf__align_of reports 1 for a C struct whose
        # members or size show the packing, and the natural alignment otherwise, so a C struct declared packed
        # whose layout needs no packing reads as naturally aligned (flagged here: declare it packed on both
        # sides only where it packs something). align(N) above C's natural alignment is never flagged: C's
        # aligned(N) is invisible in BTF. A natural difference (byte arrays mirroring in6_addr, as LibreQoS
        # does) is left to the pairs that hold the type, whose field offsets are compared.
        report["problems"].append(
            "%s: alignment is %d in C BTF but %d in Rust (#[repr(C, packed)]), with the same size and every field in "
            "line, so a struct holding it or an array of it is laid out differently: make the Rust alignment %d "
            "(drop packed: plain #[repr(C)] aligns it as C does)"
            % (head, report["btf_align"], report["rust_align"], report["btf_align"]))
    for a in report["asserted"]:
        if a["size"] != report["btf_size"]:
            report["problems"].append(
                "%s: the size assertion at %s:%d (%s) says %d bytes but C BTF says %d (Rust layout: %d): "
                "change the assertion to %d" % (head, a["file"], a["line"], a["style"], a["size"],
                                                report["btf_size"], report["rust_size"], report["btf_size"]))
    report["fields"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    if report["problems"]:
        report["status"] = "mismatch"
    return report


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


# ---------------------------------------------------------------------------
# The check, on the target
# ---------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def btf_side(obj_path: str, pairs: list) -> dict:
    """{c_name: (layout, fields, error)} for every C type of the pairs."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.btf import Btf
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import LibbpfError

    out = {}
    with Btf.from_file(obj_path) as btf:
        for c_name in sorted({p["c"] for p in pairs}):
            try:
                lay = btf.layout(c_name)
                out[c_name] = (lay, btf_fields(btf, lay), None)
            except LibbpfError as exc:
                out[c_name] = (None, None, exc.msg)
    return out


def summarize(spec_name: str, pairs: list, drift: list, problems: list) -> str:
    bad = sum(1 for p in pairs if p["status"] != "ok")
    if not problems:
        return "spec %r: ABI parity holds: %d mirror pair(s) match their C BTF layout, no chain drift" % (
            spec_name, len(pairs))
    return "spec %r: %d of %d mirror pair(s) differ, %d chain drift finding(s)" % (
        spec_name, bad, len(pairs), len(drift))


def failure_message(spec_name: str, problems: list) -> str:
    if len(problems) == 1:
        return "ABI check failed for spec %r: %s" % (spec_name, problems[0])
    return "ABI check failed for spec %r (%d problems): %s" % (
        spec_name, len(problems), " ".join("%d) %s" % (i + 1, p) for i, p in enumerate(problems)))


def check_build(spec: dict, build_dir: str, obj_path: str, rust: dict | None) -> dict:
    """The whole check; returns the module result (without changed/failed)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as _libbpf
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as _bpf_object
    from ansible_collections.lqos.bpf.plugins.module_utils._abi import derive as dv
    from ansible_collections.lqos.bpf.plugins.module_utils._abi.derive import derive_from_object
    from ansible_collections.lqos.bpf.plugins.module_utils._build.pipeline import skeleton_names

    if not os.path.isfile(obj_path):
        raise LqosError("BPF object %s does not exist." % obj_path,
                        "build it with lqos.bpf.pipeline first, or point build_dir/object at an existing build.")
    outputs = spec["outputs"]
    skipped = []
    entries = list((rust or {}).get("pairs", []))
    if rust is None and spec["mirrors"]:
        not_computed = ("the Rust layout was not computed on the controller; run this module through "
                        "its action plugin (a normal lqos.bpf.abi_check task) with src or rust_src set")
        entries = [dict(m, error=not_computed) for m in spec["mirrors"]]
    info = None
    try:
        info = _bpf_object.object_info(obj_path)
    except _libbpf.LibbpfError as exc:
        skipped.append("object programs and maps: %s" % exc.msg)
    derived = (rust or {}).get("derived")
    derivation, derive_drift = None, []
    if derived is not None:
        derived_entries, derivation, derive_drift = derive_from_object(spec, obj_path, info, derived)
        entries.extend(derived_entries)
    elif spec.get("derive", {}).get("mirrors"):
        skipped.append("derivation: the Rust side was not read on the controller (no src/rust_src)")
    rust_names = {p["c"]: p["rust"] for p in spec["mirrors"]}
    rust_names.update({e["c"]: e["rust"] for e in entries if e.get("origin")})
    c_side = btf_side(obj_path, entries) if entries else {}
    pairs = []
    for e in entries:
        lay, fields, err = c_side.get(e["c"], (None, None, None))
        pairs.append(compare_pair(e, lay, fields, err, rust_names))

    def chain_file(key):
        path = os.path.join(build_dir, outputs[key] if key in outputs else key)
        text = _read(path)
        if text is None:
            skipped.append("%s: %s not found" % (key, path))
        return text

    skel_text = chain_file("skeleton")
    wrapper_c = chain_file(os.path.basename(spec["sources"]["wrapper_c"]))
    wrapper_h = chain_file(os.path.basename(spec["sources"]["wrapper_h"]))
    bindings = chain_file("bindings")
    skel = skeleton_names(skel_text) if skel_text is not None else None
    sections = {p["name"]: p["section"] for p in info["programs"]} if info else None
    files = {"skeleton": outputs["skeleton"], "wrapper_c": os.path.basename(spec["sources"]["wrapper_c"]),
             "wrapper_h": os.path.basename(spec["sources"]["wrapper_h"]), "bindings": outputs["bindings"]}
    drift = chain_drift(spec, skel, skeleton_variables(skel_text) if skel_text else None, sections,
                        wrapper_c, wrapper_h, bindings, files)
    drift.extend(derive_drift)
    if derived is not None:
        drift.extend(dv.skeleton_use_drift(derived.get("skeleton_uses", []), skel, files["skeleton"]))
        if bindings is not None:
            drift.extend(dv.call_drift(derived.get("calls", []), bindings_functions(bindings), files["bindings"]))
    constants, const_drift = constants_report((rust or {}).get("constants", []))
    if rust is None and any(c.get("rust") for c in spec["constants"]):
        skipped.append("constants: not read on the controller (no src/rust_src)")
    drift.extend(const_drift)
    paired = {e["layout"]["name"] for e in entries if e.get("layout")}
    drift.extend(assertion_drift([a for a in (rust or {}).get("assertions", []) if a["type"] not in paired]))
    problems = ["Rust root %s of spec rust.roots is missing: %s does not exist, so the mirrors there were not "
                "compared: give the crate inside its whole tree (its sibling crates next to it), or fix rust.roots"
                % (m["root"], m["path"]) for m in (rust or {}).get("missing_roots", [])]
    problems.extend(p for pair in pairs for p in pair["problems"])
    problems.extend("%s: %s" % (d["message"], d["fix"]) for d in drift)
    return {
        "ok": not problems,
        "pairs": pairs,
        "drift": drift,
        "constants": constants,
        "problems": problems,
        "skipped": skipped,
        "object": obj_path,
        "build_dir": build_dir,
        "skeleton": skel,
        "derivation": derivation,
        "rust_roots": None if rust is None else {"missing": rust.get("missing_roots", []),
                                                 "workspace": rust.get("workspace")},
        "summary": summarize(spec["name"], pairs, drift, problems),
    }


# --------------------------------------------------------------------------
# The whole check as a module runs it: lqos.bpf.abi_check, and lqos.bpf.pipeline's ``check`` option (the build
# role builds and checks in one call)
# --------------------------------------------------------------------------

def run_check(spec: dict, build_dir: str, obj: str, rust: dict | None, record: str | None, fail_on_drift: bool,
              trial_load: bool, check_mode: bool, warn, src: str | None = None) -> dict:
    """check_build, then: an empty comparison is a problem; the outcome written to ``record`` (unless it already
    holds it, never in check mode); a drift raised (``fail_on_drift``) or warned; every program of the object
    trial-loaded on this kernel (``trial_load``). ``warn(text)`` reports a warning. ``changed`` is whether the
    record changed (or would have). With ``src`` (the crate on this host) a build made from other sources is
    refused before anything is compared (``_build_sources.refuse_other_sources``)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._common import check_bpf_object
    if src and os.path.isdir(build_dir):
        from ansible_collections.lqos.bpf.plugins.module_utils._build.sources import refuse_other_sources
        refuse_other_sources(spec, src, build_dir)
    if os.path.lexists(obj):
        check_bpf_object(obj)  # a folder, text, random bytes or a truncated ELF: say so before libbpf does
    result = check_build(spec, build_dir, obj, rust)
    result["changed"] = False
    if not result["pairs"]:
        # Comparing nothing proves nothing: an empty check is a problem, not a pass.
        missing = (rust or {}).get("missing_roots", [])
        if missing:
            why = "Rust root(s) missing from the tree: %s" % ", ".join(
                "%s (%s)" % (m["root"], m["path"]) for m in missing)
        elif not spec["mirrors"]:
            why = "the spec's `mirrors` list is empty"
        else:
            why = "none of the spec's %d mirror pair(s) was found" % len(spec["mirrors"])
        result["problems"].append(
            "no mirror pair was compared (%s), so Rust/C ABI parity is unproven: list the Rust types that mirror "
            "C types under `mirrors:` in the spec (see docs/pipeline-spec.md)" % why)
        result["ok"] = False
        result["summary"] = "spec %r: ABI parity NOT checked: 0 mirror pairs compared (%s), %d chain drift finding(s)" % (
            spec["name"], why, len(result["drift"]))
    if record:
        result["changed"] = write_record(record, spec["name"], build_dir, obj, result, check_mode)
    if not result["ok"]:
        if fail_on_drift:
            raise LqosError(failure_message(spec["name"], result["problems"]), None, **result)
        for problem in result["problems"]:
            warn(problem)
    if trial_load:
        from ansible_collections.lqos.bpf.plugins.module_utils._build.toolchain import object_preflight, require
        checks = object_preflight(spec, obj)
        result["object_checks"] = checks
        require(checks)
        for row in checks["warnings_found"]:
            warn("%s: %s. Fix: %s" % (row["name"], row["message"], row["fix"]))
    return result


def write_record(path: str, spec_name: str, build_dir: str, obj: str, result: dict, check_mode: bool) -> bool:
    """Write the check's outcome to ``path`` unless it already holds exactly that; True when it (would have)
    changed."""
    import json
    from ansible_collections.lqos.bpf.plugins.module_utils._common import atomic_write, os_fault, sha256_file
    record = {
        "spec": spec_name,
        "build_id": os.path.basename(os.path.realpath(build_dir)),
        "object_sha256": sha256_file(obj) if os.path.isfile(obj) else None,
        "ok": result["ok"],
        "summary": result["summary"],
        "problems": result["problems"],
        "drift": result["drift"],
        "pairs": [{k: p.get(k) for k in ("rust", "c", "status")} for p in result["pairs"]],
    }
    text = json.dumps(record, indent=4, sort_keys=True) + "\n"
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    if not check_mode:
        try:
            atomic_write(path, text)
        except OSError as exc:
            raise os_fault(exc, "writing the ABI check record %s failed" % path, path)
    return True
