# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Parity of a mirror pair (a Rust mirror struct against its C struct: size, offsets, padding, field by field): the
C struct as the object's BTF lays it out (its fields normalised to one shape) against the Rust mirror's layout
from the controller, matched field by field, and the pair's report with the problem and fix of each row. Pure:
plain data in and out."""

from __future__ import annotations

import re


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
