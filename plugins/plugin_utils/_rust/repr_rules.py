# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
"""The ``#[repr]`` rules: primitive sizes and alignments on the target (x86_64 Linux, LP64), the repr
attributes of a definition (``C``, ``transparent``, ``packed(N)``, ``align(N)``, an enum's integer type)
and rounding up to an alignment."""
from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    RustLayoutError,
    _INT_TYPES,
    _attributes,
    _int_literal,
    _text,
)

# ---------------------------------------------------------------------------
# Target model.
#
# Layouts are computed for x86_64 Linux (LP64), the controller/shaper host that
# runs the Rust side; its pointer and integer sizes match the 64-bit BPF target.
# u128/i128 are 16 bytes with 16-byte alignment: that is what Rust >= 1.77 uses on
# x86_64 (matching C's __int128 and clang's BPF target). Older Rust toolchains
# aligned them to 8; mirrors of C structs holding __int128 need Rust >= 1.77.
# A field-less #[repr(C)] enum is treated like a C `int`-sized enum (4 bytes).
# ---------------------------------------------------------------------------
_PRIMITIVES = {
    "u8": (1, 1), "i8": (1, 1), "bool": (1, 1),
    "u16": (2, 2), "i16": (2, 2),
    "u32": (4, 4), "i32": (4, 4), "f32": (4, 4), "char": (4, 4),
    "u64": (8, 8), "i64": (8, 8), "f64": (8, 8), "usize": (8, 8), "isize": (8, 8),
    "u128": (16, 16), "i128": (16, 16),
}


class _Repr:
    __slots__ = ("c", "transparent", "packed", "align", "int_type")

    def __init__(self):
        self.c = False
        self.transparent = False
        self.packed = None      # cap in bytes, or None
        self.align = None       # requested minimum alignment, or None
        self.int_type = None    # enum discriminant type


def _parse_repr(d):
    rep = _Repr()
    for name, args in _attributes(d.node):
        if name != "repr" or args is None:
            continue
        kids = args.children
        for i, tok in enumerate(kids):
            if tok.type not in ("identifier", "primitive_type"):
                continue
            word = _text(tok)
            arg = None
            if i + 1 < len(kids) and kids[i + 1].type == "token_tree":
                inner = list(kids[i + 1].named_children)
                if len(inner) != 1 or inner[0].type != "integer_literal":
                    raise RustLayoutError(
                        "`%s` (%s) has repr `%s%s`: write %s(N) with an integer literal N"
                        % (d.name, d.where, word, _text(kids[i + 1]), word))
                arg = _int_literal(_text(inner[0]))
            if word == "C":
                rep.c = True
            elif word == "transparent":
                rep.transparent = True
            elif word == "packed":
                rep.packed = 1 if arg is None else arg
                _check_pow2(d, "packed", rep.packed)
            elif word == "align":
                if arg is None:
                    raise RustLayoutError("`%s` (%s) has repr `align` without a value: write align(N)"
                                          % (d.name, d.where))
                _check_pow2(d, "align", arg)
                rep.align = arg if rep.align is None else max(rep.align, arg)
            elif word in _INT_TYPES:
                rep.int_type = word
    return rep


def _check_pow2(d, word, value):
    if value is None or value <= 0 or value & (value - 1):
        raise RustLayoutError("`%s` (%s) has %s(%s): the value must be a power of two; fix the repr"
                              % (d.name, d.where, word, value))


def _align_up(value, align):
    return (value + align - 1) // align * align
