# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Entry migration between two layouts of a map, planned from both sides' BTF (pure).

Inputs are plain data: type *shapes* as ``_kernel.btf.Btf.shape`` returns them
(``{"kind": "int"|"struct"|"array"|"bytes", "size" (bytes), ...}``) for the
old map (kernel BTF of the pinned map, or the types a backup stored) and the
new one (the new object's BTF), and map facts (type name, key/value sizes,
max_entries). Fields are matched by name, recursively:

- same name, same integer width: copied; wider: widened (sign-extended when
  signed); narrower: ``narrowed``, and a value that would not fit is refused
  (``TruncationError``) unless ``allow_narrowing``;
- a field only the new layout has is zero, or the default the caller names
  (``defaults``: {"dotted.path": int});
- a field only the old layout has is reported ``lost``;
- arrays copy their common prefix; a kind change (int to struct, ...) is refused.

``plan_map`` also checks the map kinds (same type, hash <-> LRU hash,
array <-> hash of a 4-byte key, per-CPU kinds among themselves) and the
capacity; ``Converter`` turns one old key or value into the new bytes.
"""

from __future__ import annotations

import struct
from itertools import chain, starmap
from operator import itemgetter

from .._common import int_bytes, LqosError

HASH_KINDS = frozenset(("hash", "lru_hash"))
PERCPU_HASH_KINDS = frozenset(("percpu_hash", "lru_percpu_hash"))
ARRAY_KINDS = frozenset(("array", "percpu_array"))
PERCPU_KINDS = frozenset(("percpu_hash", "lru_percpu_hash", "percpu_array"))
MIGRATABLE = HASH_KINDS | PERCPU_HASH_KINDS | ARRAY_KINDS | frozenset(("lpm_trie",))


class MigrationError(Exception):
    """A migration that cannot be done as asked; ``msg`` names the map and the field."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


class TruncationError(MigrationError):
    pass


def _fmt_int(shape: dict) -> str:
    return "%s%d" % ("s" if shape.get("signed") else "u", shape["size"] * 8)


def plan_fields(old: dict | None, new: dict | None, defaults: dict | None = None, path: str = "") -> dict:
    """{"ops": [...], "copied", "widened", "narrowed", "defaulted", "zeroed", "lost", "refused"}.

    ``old``/``new``: shapes (``raw_plan`` covers a side without BTF). ops are
    (how, src_off, src_size, dst_off, dst_size,
    signed, path) with how in copy/widen/narrow, or ("const", dst_off,
    dst_size, value bytes) for defaults; offsets and sizes in bytes."""
    report = {"ops": [], "copied": [], "widened": [], "narrowed": [], "defaulted": [], "zeroed": [], "lost": [],
              "refused": []}
    defaults = dict(defaults or {})
    _walk(old, new, 0, 0, path, defaults, report)
    unused = sorted(set(defaults) - set(d["field"] for d in report["defaulted"]))
    if unused:
        report["refused"].append("defaults name field(s) the new layout does not add: %s" % ", ".join(unused))
    return report


def raw_plan(old_size: int, new_size: int, what: str) -> dict:
    """The plan for a side that has no BTF on one end: a byte copy when the sizes agree."""
    out = {"ops": [], "copied": [], "widened": [], "narrowed": [], "defaulted": [], "zeroed": [], "lost": [],
           "refused": []}
    if old_size == new_size:
        out["ops"].append(("copy", 0, old_size, 0, new_size, False, what))
        out["copied"].append(what)
    else:
        out["refused"].append("%s: %d bytes before, %d after, and no BTF to match its fields by name"
                              % (what, old_size, new_size))
    return out


def _join(path: str, name: str) -> str:
    return name if not path else path + "." + name


def _walk(old: dict, new: dict, so: int, do: int, path: str, defaults: dict, r: dict) -> None:
    ok, nk = old["kind"], new["kind"]
    label = path or "<whole>"
    if ok == "int" and nk == "int":
        if old["size"] == new["size"]:
            r["ops"].append(("copy", so, old["size"], do, new["size"], False, label))
            r["copied"].append(label)
        elif new["size"] > old["size"]:
            r["ops"].append(("widen", so, old["size"], do, new["size"], bool(old.get("signed")), label))
            r["widened"].append("%s: %s -> %s" % (label, _fmt_int(old), _fmt_int(new)))
        else:
            r["ops"].append(("narrow", so, old["size"], do, new["size"], bool(old.get("signed")), label))
            r["narrowed"].append("%s: %s -> %s" % (label, _fmt_int(old), _fmt_int(new)))
        return
    if ok == "struct" and nk == "struct":
        olds = {m["name"]: m for m in old["members"]}
        news = {m["name"] for m in new["members"]}
        for m in new["members"]:
            sub = _join(path, m["name"])
            if m["name"] in olds:
                om = olds[m["name"]]
                _walk(om["shape"], m["shape"], so + om["offset"], do + m["offset"], sub, defaults, r)
            else:
                _new_field(m["shape"], do + m["offset"], sub, defaults, r)
        for m in old["members"]:
            if m["name"] not in news:
                r["lost"].append(_join(path, m["name"]))
        return
    if ok == "array" and nk == "array":
        n = min(old["nelems"], new["nelems"])
        oe, ne = old["elem"], new["elem"]
        if n and oe["kind"] == ne["kind"] and oe["size"] == ne["size"] and oe["kind"] in ("int", "bytes") \
                and (oe["kind"] == "int" or oe.get("name") == ne.get("name")):
            r["ops"].append(("copy", so, n * oe["size"], do, n * ne["size"], False, "%s[0..%d]" % (label, n - 1)))
            r["copied"].append("%s[0..%d]" % (label, n - 1) if n > 1 else "%s[0]" % label)
        else:
            for i in range(n):
                _walk(oe, ne, so + i * oe["size"], do + i * ne["size"], "%s[%d]" % (label, i), defaults, r)
        if new["nelems"] > n:
            r["zeroed"].append("%s[%d..%d]" % (label, n, new["nelems"] - 1))
        if old["nelems"] > n:
            r["lost"].append("%s[%d..%d]" % (label, n, old["nelems"] - 1))
        return
    same_bytes = ok == nk == "bytes" and old.get("name") == new.get("name")
    if old["size"] == new["size"] and (same_bytes or {ok, nk} <= {"int", "bytes"}):
        r["ops"].append(("copy", so, old["size"], do, new["size"], False, label))
        r["copied"].append(label)
        return
    r["refused"].append("%s: was %s (%d bytes), is now %s (%d bytes); no field-by-field copy exists"
                        % (label, old.get("name") or ok, old["size"], new.get("name") or nk, new["size"]))


def _new_field(shape: dict, do: int, path: str, defaults: dict, r: dict) -> None:
    if path in defaults:
        value = defaults[path]
        if shape["kind"] != "int" or isinstance(value, bool) or not isinstance(value, int):
            r["refused"].append("default for %s: only integer fields take a default (it is %s, the default %r)"
                                % (path, shape.get("name") or shape["kind"], value))
            return
        try:
            raw = int_bytes(value, shape["size"], bool(shape.get("signed")), "default for %s" % path)
        except LqosError as exc:  # the one range check of load-time values and map fields
            r["refused"].append(exc.msg.rstrip("."))
            return
        r["ops"].append(("const", do, shape["size"], raw))
        r["defaulted"].append({"field": path, "value": value})
        return
    r["zeroed"].append(path)


class Converter(object):
    """old bytes -> new bytes for one side (key or value) of one map, from a plan_fields result.

    ``stride_in``/``stride_out`` and ``copies`` convert per-CPU blobs copy by copy
    (round_up(value_size, 8) bytes per possible CPU, as the kernel returns them)."""

    def __init__(self, plan: dict, new_size: int, order: str = "little", allow_narrowing: bool = False):
        self.new_size = new_size
        self.order = order
        self.allow_narrowing = allow_narrowing
        template = bytearray(new_size)
        ops = []
        for op in plan["ops"]:
            if op[0] == "const":
                _how, do, dsz, raw = op
                template[do:do + dsz] = raw if order == "little" else raw[::-1]
            else:
                ops.append(op)
        self.template = bytes(template)
        self.ops = _merge(ops)
        self.identity = len(self.ops) == 1 and tuple(self.ops[0][:4]) == ("copy", 0, new_size, 0) and not any(template)
        self.truncated = 0

    def one(self, old: bytes) -> bytes:
        if self.identity and len(old) == self.new_size:
            return old
        buf = bytearray(self.template)
        order = self.order
        for how, so, ssz, do, dsz, signed, path in self.ops:
            if how == "copy":
                buf[do:do + dsz] = old[so:so + ssz]
                continue
            value = int.from_bytes(old[so:so + ssz], order, signed=signed)
            try:
                buf[do:do + dsz] = value.to_bytes(dsz, order, signed=signed)
            except OverflowError:
                if not self.allow_narrowing:
                    raise TruncationError("%s = %d does not fit in %d bytes" % (path, value, dsz))
                self.truncated += 1
                buf[do:do + dsz] = (value & ((1 << (8 * dsz)) - 1)).to_bytes(dsz, order)
        return bytes(buf)

    def blob(self, old: bytes, stride_in: int, stride_out: int, copies: int) -> bytes:
        """A per-CPU blob: each copy converted and padded to ``stride_out``."""
        pad = b"\0" * (stride_out - self.new_size)
        return b"".join(self.one(old[i * stride_in:i * stride_in + stride_in]) + pad for i in range(copies))


def _merge(ops: list) -> list:
    """Adjacent plain copies become one slice copy (fewer steps per entry)."""
    out = []
    for op in sorted(ops, key=lambda o: o[3]):
        if out and op[0] == "copy" and out[-1][0] == "copy":
            how, so, ssz, do, dsz, signed, path = out[-1]
            if so + ssz == op[1] and do + dsz == op[3]:
                out[-1] = ("copy", so, ssz + op[2], do, dsz + op[4], False, path)
                continue
        out.append(op)
    return out


def kinds_compatible(old: dict, new: dict) -> str | None:
    """None when entries of ``old["type"]`` can live in ``new["type"]``, else why not."""
    ot, nt = old["type"], new["type"]
    if ot not in MIGRATABLE or nt not in MIGRATABLE:
        which = ot if ot not in MIGRATABLE else nt
        return "%s maps hold kernel objects or cannot be walked, not data this module copies" % which
    if ot == nt:
        return None
    if (ot in PERCPU_KINDS) != (nt in PERCPU_KINDS):
        return "%s and %s differ in per-CPU kind" % (ot, nt)
    if {ot, nt} <= HASH_KINDS or {ot, nt} <= PERCPU_HASH_KINDS:
        return None
    if (ot in ARRAY_KINDS or nt in ARRAY_KINDS) and "lpm_trie" not in (ot, nt):
        if old["key_size"] == 4 and new["key_size"] == 4:
            return None
        return "%s <-> %s needs a 4-byte index key on both sides" % (ot, nt)
    return "%s entries cannot live in a %s map" % (ot, nt)


def plan_map(name: str, old: dict, new: dict, entries: int | None, defaults: dict | None = None) -> dict:
    """Everything a replacement of one map will do, for plans, check mode and diff mode.

    old/new: {type, key_size, value_size, max_entries, key_shape, value_shape}
    (shapes may be None: no BTF). entries: how many the old map holds (None:
    not counted). Returns {map, from, to, key, value, entries, refused: [..]};
    key/value are plan_fields results (their ``ops`` drive ``Converter``)."""
    defaults = dict(defaults or {})
    refused = []
    why = kinds_compatible(old, new)
    if why:
        refused.append(why)
    key = _side(old.get("key_shape"), new.get("key_shape"), old["key_size"], new["key_size"], "key", {})
    value = _side(old.get("value_shape"), new.get("value_shape"), old["value_size"], new["value_size"], "value",
                  defaults)
    refused += ["key " + r for r in key["refused"]] + ["value " + r for r in value["refused"]]
    if new["type"] == "lpm_trie" and not why:
        if not any(op[0] == "copy" and op[1] == 0 and op[3] == 0 and op[2] >= 4 for op in key["ops"]):
            refused.append("LPM trie key: the prefix length (first 4 bytes) must copy to the first 4 bytes")
    if entries is not None and new["type"] not in ARRAY_KINDS and entries > new["max_entries"]:
        refused.append("%d entries do not fit in max_entries %d" % (entries, new["max_entries"]))
    return {"map": name, "from": _kind_text(old), "to": _kind_text(new), "key": _public(key),
            "value": _public(value), "entries": entries, "refused": refused,
            "_key_plan": key, "_value_plan": value}


def _side(old_shape, new_shape, old_size: int, new_size: int, what: str, defaults: dict) -> dict:
    if old_shape is None or new_shape is None:
        return raw_plan(old_size, new_size, what)
    return plan_fields(old_shape, new_shape, defaults)


def _kind_text(m: dict) -> str:
    return "%s key %d B value %d B max_entries %d" % (m["type"], m["key_size"], m["value_size"], m["max_entries"])


def _public(side: dict) -> dict:
    return {k: v for k, v in side.items() if k != "ops"}


def public_plan(plan: dict) -> dict:
    """The plan without its internal op lists (what the module returns)."""
    return {k: v for k, v in plan.items() if not k.startswith("_")}


def describe(plan: dict) -> str:
    """One line per map for diff mode and messages."""
    v, k = plan["value"], plan["key"]
    parts = ["%s: %s -> %s" % (plan["map"], plan["from"], plan["to"])]
    if plan["entries"] is not None:
        parts.append("%d entries" % plan["entries"])
    for label, side in (("key", k), ("value", v)):
        bits = []
        if side["copied"]:
            bits.append("copy %s" % ", ".join(side["copied"]))
        if side["widened"]:
            bits.append("widen %s" % ", ".join(side["widened"]))
        if side["narrowed"]:
            bits.append("narrow %s" % ", ".join(side["narrowed"]))
        if side["defaulted"]:
            bits.append("default %s" % ", ".join("%s=%s" % (d["field"], d["value"]) for d in side["defaulted"]))
        if side["zeroed"]:
            bits.append("zero %s" % ", ".join(side["zeroed"]))
        if side["lost"]:
            bits.append("LOST %s" % ", ".join(side["lost"]))
        parts.append("%s: %s" % (label, "; ".join(bits) or "nothing"))
    if plan["refused"]:
        parts.append("REFUSED: %s" % "; ".join(plan["refused"]))
    return " | ".join(parts)


def convert_entries(plan: dict, old: dict, new: dict, entries: list, ncpus: int, order: str = "little",
                    allow_narrowing: bool = False) -> list:
    """[(new key, new value)] for every (old key, old value); per-CPU values per CPU.

    Raises MigrationError before returning anything when one entry cannot
    convert (a truncation not allowed, an array index beyond max_entries)."""
    if plan["refused"]:
        raise MigrationError("map %s cannot be migrated: %s" % (plan["map"], "; ".join(plan["refused"])))
    kc = Converter(plan["_key_plan"], new["key_size"], order, allow_narrowing)
    vc = Converter(plan["_value_plan"], new["value_size"], order, allow_narrowing)
    percpu = old["type"] in PERCPU_KINDS
    si, so = (old["value_size"] + 7) // 8 * 8, (new["value_size"] + 7) // 8 * 8
    out = []
    bad = []
    for key, value in entries:
        try:
            nk = kc.one(key)
            nv = vc.blob(value, si, so, ncpus) if percpu else vc.one(value)
        except TruncationError as exc:
            bad.append("key %s: %s" % (key.hex(), exc.msg))
            continue
        index = int.from_bytes(nk, order)
        if new["type"] in ARRAY_KINDS and index >= new["max_entries"]:
            bad.append("key %s: index %d is beyond max_entries %d" % (key.hex(), index, new["max_entries"]))
            continue
        out.append((nk, nv))
    if bad:
        fix = ("allow narrowing (allow_narrowing: true) to truncate them, or widen the field again"
               if any("does not fit" in b for b in bad) else "grow the new map or delete those entries first")
        raise MigrationError("map %s: %d of %d entries cannot be migrated (%s%s); nothing was changed. Fix: %s."
                             % (plan["map"], len(bad), len(entries), "; ".join(bad[:3]),
                                ", ..." if len(bad) > 3 else "", fix))
    if new["type"] not in ARRAY_KINDS and len(out) > new["max_entries"]:
        raise MigrationError("map %s: %d entries do not fit in max_entries %d; nothing was changed."
                             % (plan["map"], len(out), new["max_entries"]))
    return out


def _unit(*numbers) -> int:
    """The widest of 8, 4, 2, 1 bytes that divides every number (offsets, sizes, strides)."""
    for u in (8, 4, 2, 1):
        if all(n % u == 0 for n in numbers):
            return u
    return 1


_FORMATS = {8: "Q", 4: "I", 2: "H", 1: "B"}
STRIDED_COLUMNS = 8     # _columns: at most this many strided column copies per record, else pieces joined


def _columns(conv: Converter, src, n: int, stride_in: int, stride_out: int):
    """All n records of ``src`` (stride_in bytes apart) converted at once, in C loops of the standard library: the
    pieces each record keeps are cut with ``struct.Struct.iter_unpack`` and put together with ``bytes.join`` (one
    piece) or ``Struct.pack`` (several), else column by column (``_strided``). Plain Python, no numpy. Returns the
    new bytes (stride_out bytes per record), or None when an op needs the value itself (a signed widening, a
    narrowing whose high bytes are not all zero, a big-endian layout): the caller converts record by record then."""
    if conv.order != "little":
        return None
    tmpl = conv.template + bytes(stride_out - conv.new_size)
    if not n:
        return b""
    moves = []
    for how, so, ssz, do, dsz, signed, _path in conv.ops:
        if how == "copy":
            moves.append((so, do, min(ssz, dsz)))
        elif how == "widen" and not signed:
            moves.append((so, do, ssz))          # the low bytes; the template holds zeros above
        elif how == "narrow" and not signed:
            high = memoryview(src)
            for b in range(dsz, ssz):            # every dropped byte must be zero in every record
                if high[so + b::stride_in].tobytes().count(0) != n:
                    return None
            moves.append((so, do, dsz))
        else:
            return None
    src = memoryview(src)[:n * stride_in]
    by_src = sorted(moves)
    columns = sum(size // _unit(so, do, size, stride_in, stride_out) for so, do, size in moves)
    # a few columns copy faster strided than a bytes object per record (measured: up to about 8 columns)
    if columns <= STRIDED_COLUMNS or any(a[0] + a[2] > b[0] for a, b in zip(by_src, by_src[1:])):
        return _strided(tmpl, moves, src, n, stride_in, stride_out)
    cut = struct.Struct("<" + _layout([(so, size) for so, _do, size in by_src], stride_in))
    if len(moves) == 1:
        (so, do, size), = moves
        head, tail = tmpl[:do], tmpl[do + size:]
        if not head:   # record = piece + tail: the tail joins them (and ends the last)
            return tail.join(chain(map(itemgetter(0), cut.iter_unpack(src)), (b"",)))
        return head + (tail + head).join(map(itemgetter(0), cut.iter_unpack(src))) + tail
    if any(tmpl):
        return _strided(tmpl, moves, src, n, stride_in, stride_out)
    by_dst = sorted(moves, key=lambda m: m[1])
    put = struct.Struct("<" + _layout([(do, size) for _so, do, size in by_dst], stride_out))
    pieces = cut.iter_unpack(src)
    order = [by_src.index(m) for m in by_dst]
    if order != sorted(order):
        pieces = map(itemgetter(*order), pieces)
    return b"".join(starmap(put.pack, pieces))


def _layout(spans: list, stride: int) -> str:
    """A struct format of ``stride`` bytes: an ``Ns`` field per (offset, size) span (ascending, apart), pad bytes
    around them."""
    fmt, at = [], 0
    for off, size in spans:
        if off > at:
            fmt.append("%dx" % (off - at))
        fmt.append("%ds" % size)
        at = off + size
    if stride > at:
        fmt.append("%dx" % (stride - at))
    return "".join(fmt)


def _strided(tmpl: bytes, moves: list, src, n: int, stride_in: int, stride_out: int) -> bytearray:
    """``_columns`` column by column: one strided slice assignment per 8, 4, 2 or 1-byte column of every move."""
    out = bytearray(tmpl) * n
    for so, do, size in moves:
        u = _unit(so, do, size, stride_in, stride_out)
        si, sd = stride_in // u, stride_out // u
        with memoryview(src).cast(_FORMATS[u]) as mi, memoryview(out).cast(_FORMATS[u]) as mo:
            for j in range(size // u):
                mo[do // u + j::sd] = mi[so // u + j::si]
    return out


def convert_table(plan: dict, old: dict, new: dict, keys: bytes, values: bytes, n: int, ncpus: int,
                  order: str = "little", allow_narrowing: bool = False) -> tuple:
    """(new keys, new values) as flat buffers for n entries given as flat buffers (``keys``: n x old key_size
    bytes; ``values``: n x the old value bytes, per-CPU blobs whole). Converts column by column where it can
    (``_columns``), else through ``convert_entries``; raises MigrationError like it, before returning anything."""
    if plan["refused"]:
        raise MigrationError("map %s cannot be migrated: %s" % (plan["map"], "; ".join(plan["refused"])))
    kc = Converter(plan["_key_plan"], new["key_size"], order, allow_narrowing)
    vc = Converter(plan["_value_plan"], new["value_size"], order, allow_narrowing)
    percpu = old["type"] in PERCPU_KINDS
    copies = ncpus if percpu else 1
    si = (old["value_size"] + 7) // 8 * 8 if percpu else old["value_size"]
    so = (new["value_size"] + 7) // 8 * 8 if percpu else new["value_size"]
    if kc.identity and new["key_size"] == old["key_size"]:
        nkeys = keys
    else:
        nkeys = _columns(kc, keys, n, old["key_size"], new["key_size"])
    nvalues = values if vc.identity and si == so else _columns(vc, values, n * copies, si, so)
    fits = new["type"] not in ARRAY_KINDS or all(
        int.from_bytes(nkeys[i * new["key_size"]:(i + 1) * new["key_size"]], order) < new["max_entries"]
        for i in range(n)) if nkeys is not None else False
    if nkeys is None or nvalues is None or not fits:
        ksz, vsz = old["key_size"], si * copies
        rows = [(keys[i * ksz:(i + 1) * ksz], values[i * vsz:(i + 1) * vsz]) for i in range(n)]
        out = convert_entries(plan, old, new, rows, ncpus, order, allow_narrowing)
        return b"".join(k for k, v in out), b"".join(v for k, v in out)
    if new["type"] not in ARRAY_KINDS and n > new["max_entries"]:
        raise MigrationError("map %s: %d entries do not fit in max_entries %d; nothing was changed."
                             % (plan["map"], n, new["max_entries"]))
    return nkeys, nvalues
