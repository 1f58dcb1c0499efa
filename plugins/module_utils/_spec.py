# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Validation of a pipeline spec (docs/pipeline-spec.md).

The YAML is read on the controller (plugin_utils/_spec_loader.py); modules
receive a mapping and validate it here, so a malformed spec fails with one
message that names the key and the fix, whichever side reads it first.
"""

from __future__ import annotations

import os
import re

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError

DEFAULT_CLANG_FLAGS = [
    "-S", "-target", "bpf", "-Wall", "-Wno-unused-value", "-Wno-pointer-sign",
    "-Wno-compare-distinct-pointer-types", "-Werror", "-emit-llvm", "-g", "-O2",
]
DEFAULT_LLC_FLAGS = ["-march=bpf", "-filetype=obj"]
OUTPUT_KEYS = ("ir", "object", "skeleton", "wrapper_object", "archive", "bindings")
TC_DIRECTIONS = ("egress", "ingress")
# What abi_check/pipeline derive from the tree and its object (docs/pipeline-spec.md, `derive`).
DERIVE_DEFAULTS = {"mirrors": True, "constants": True, "calls": True, "flags": False}
SPECIAL_VALUES = ("possible_cpus", "ifindex")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _fail(spec_name: str, key: str, problem: str, fix: str) -> LqosError:
    return LqosError("pipeline spec %r: %s %s." % (spec_name, key, problem), fix)


class _Checker:
    def __init__(self, raw: dict, name: str):
        self.raw = raw
        self.name = name

    def section(self, key: str, required: bool = True) -> dict:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise _fail(self.name, "`%s`" % key, "is missing", "add the `%s:` mapping (see docs/pipeline-spec.md)" % key)
            return {}
        if not isinstance(value, dict):
            raise _fail(self.name, "`%s`" % key, "must be a mapping, got %s" % type(value).__name__,
                        "write `%s:` as key: value pairs" % key)
        return value

    def rel_path(self, key: str, value, allow_dirs: bool = True) -> str:
        if not isinstance(value, str) or not value:
            raise _fail(self.name, "`%s`" % key, "must be a non-empty path string, got %r" % (value,),
                        "give a path relative to the crate root")
        if os.path.isabs(value):
            raise _fail(self.name, "`%s`" % key, "must be relative, got %r" % value,
                        "give it relative to the crate root (the module's `src`)")
        return os.path.normpath(value)

    def file_name(self, key: str, value) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise _fail(self.name, "`%s`" % key, "must be a plain file name (letters, digits, _ . -), got %r" % (value,),
                        "outputs are file names inside the build folder, without '/'")
        return value

    def str_list(self, key: str, value) -> list:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise _fail(self.name, "`%s`" % key, "must be a list of strings, got %r" % (value,),
                        "write it as a YAML list, one flag or name per item")
        return [str(v) for v in value]

    def ident(self, key: str, value) -> str:
        if not isinstance(value, str) or not _IDENT.match(value):
            raise _fail(self.name, "`%s`" % key, "must be a C identifier, got %r" % (value,),
                        "use the name as it is written in the C source")
        return value

    def integer(self, key: str, value, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _fail(self.name, "`%s`" % key, "must be an integer >= %d, got %r" % (minimum, value),
                        "write a number (hex like 0xC02F is fine in YAML)")
        return value


def validate_spec(raw) -> dict:
    """Return a normalised copy of ``raw`` with defaults filled, or raise LqosError."""
    if not isinstance(raw, dict):
        raise LqosError("pipeline spec must be a mapping, got %s." % type(raw).__name__,
                        "pass a built-in name (reference, libreqos), a YAML file path, or a mapping.")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise LqosError("pipeline spec: `name` must be a short identifier, got %r." % (name,),
                        "add e.g. `name: reference` at the top of the spec.")
    known = {"name", "description", "sources", "outputs", "flags", "expect", "cpu_sized_maps", "rust",
             "mirrors", "constants", "pinned_maps", "attach", "toolchain", "derive"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(name, "key(s) %s" % ", ".join("`%s`" % k for k in unknown), "are not known",
                    "remove them or fix the spelling; known keys: %s" % ", ".join(sorted(known)))
    c = _Checker(raw, name)

    src = c.section("sources")
    sources = {
        "workdir": c.rel_path("sources.workdir", src.get("workdir", ".")),
        "kern": c.rel_path("sources.kern", src.get("kern")),
        "wrapper_c": c.rel_path("sources.wrapper_c", src.get("wrapper_c", "wrapper.c")),
        "wrapper_h": c.rel_path("sources.wrapper_h", src.get("wrapper_h", "wrapper.h")),
        "inputs": [c.rel_path("sources.inputs", p) for p in c.str_list("sources.inputs", src.get("inputs"))],
    }

    out = c.section("outputs")
    stem = os.path.splitext(os.path.basename(sources["kern"]))[0]
    defaults = {"ir": stem + ".ll", "object": stem + ".o", "skeleton": stem + "_skel.h",
                "wrapper_object": "libwrapper.o", "archive": "libwrapper.a", "bindings": "bindings.rs"}
    outputs = {k: c.file_name("outputs." + k, out.get(k, defaults[k])) for k in OUTPUT_KEYS}
    if len(set(outputs.values())) != len(outputs):
        raise _fail(name, "`outputs`", "name the same file twice", "give each output its own file name")

    fl = c.section("flags", required=False)
    flags = {
        "clang": c.str_list("flags.clang", fl.get("clang", DEFAULT_CLANG_FLAGS)),
        "llc": c.str_list("flags.llc", fl.get("llc", DEFAULT_LLC_FLAGS)),
        "wrapper": c.str_list("flags.wrapper", fl.get("wrapper")),
        "bindgen": c.str_list("flags.bindgen", fl.get("bindgen")),
        "bindgen_clang": c.str_list("flags.bindgen_clang", fl.get("bindgen_clang")),
    }
    for bad in ("-o", "-c"):
        if bad in flags["clang"]:
            raise _fail(name, "`flags.clang`", "contains %s" % bad, "leave output and mode flags to the module")

    ex = c.section("expect", required=False)
    programs = ex.get("programs") or {}
    if not isinstance(programs, dict):
        raise _fail(name, "`expect.programs`", "must map program name -> section type", "e.g. `xdp_shaper: xdp`")
    expect = {
        "programs": {c.ident("expect.programs", k): str(v) for k, v in programs.items()},
        "maps": [c.ident("expect.maps", m) for m in c.str_list("expect.maps", ex.get("maps"))],
    }

    cpu_sized = []
    for i, item in enumerate(raw.get("cpu_sized_maps") or []):
        key = "cpu_sized_maps[%d]" % i
        if not isinstance(item, dict):
            raise _fail(name, "`%s`" % key, "must be a mapping", "give map, constant and header")
        cpu_sized.append({
            "map": c.ident(key + ".map", item.get("map")),
            "constant": c.ident(key + ".constant", item.get("constant")),
            "header": c.rel_path(key + ".header", item.get("header")),
        })

    rust_raw = c.section("rust", required=False)
    rust = {"roots": [c.rel_path("rust.roots", p) for p in c.str_list("rust.roots", rust_raw.get("roots", ["src"]))]}

    mirrors = []
    for i, item in enumerate(raw.get("mirrors") or []):
        key = "mirrors[%d]" % i
        if not isinstance(item, dict) or not item.get("rust") or not item.get("c"):
            raise _fail(name, "`%s`" % key, "must have both `rust` and `c`", "e.g. `{rust: IpHashData, c: ip_hash_info}`")
        mirrors.append({"rust": str(item["rust"]), "c": c.ident(key + ".c", item["c"])})

    constants = []
    for i, item in enumerate(raw.get("constants") or []):
        key = "constants[%d]" % i
        if not isinstance(item, dict):
            raise _fail(name, "`%s`" % key, "must be a mapping", "give name, header and rust")
        constants.append({
            "name": c.ident(key + ".name", item.get("name")),
            "header": c.rel_path(key + ".header", item.get("header")),
            "rust": c.rel_path(key + ".rust", item.get("rust")) if item.get("rust") else None,
            "rust_name": c.ident(key + ".rust_name", item.get("rust_name", item.get("name"))),
        })

    pinned = []
    for i, item in enumerate(raw.get("pinned_maps") or []):
        key = "pinned_maps[%d]" % i
        if not isinstance(item, dict):
            raise _fail(name, "`%s`" % key, "must be a mapping", "give name, key_size and value_size")
        entry = {"name": c.ident(key + ".name", item.get("name")),
                 "key_size": c.integer(key + ".key_size", item.get("key_size"), 1),
                 "value_size": c.integer(key + ".value_size", item.get("value_size"), 1)}
        pinned.append(entry)

    at = c.section("attach", required=False)
    tc = []
    for i, item in enumerate(at.get("tc") or []):
        key = "attach.tc[%d]" % i
        if not isinstance(item, dict):
            raise _fail(name, "`%s`" % key, "must be a mapping", "give program, direction, handle and priority")
        direction = item.get("direction", "egress")
        if direction not in TC_DIRECTIONS:
            raise _fail(name, "`%s.direction`" % key, "must be egress or ingress, got %r" % (direction,),
                        "use egress for the classifier, ingress for a bridge redirector")
        tc.append({
            "program": c.ident(key + ".program", item.get("program")),
            "direction": direction,
            "handle": c.integer(key + ".handle", item.get("handle", 1), 1),
            "priority": c.integer(key + ".priority", item.get("priority", 0xC02F), 1),
            "optional": bool(item.get("optional", False)),
        })
    variables = {}
    for section in ("rodata", "data"):
        values = at.get(section) or {}
        if not isinstance(values, dict):
            raise _fail(name, "`attach.%s`" % section, "must map variable -> value", "e.g. `num_cpus: possible_cpus`")
        for var, value in values.items():
            c.ident("attach.%s" % section, var)
            if not (isinstance(value, int) and not isinstance(value, bool)) and value not in SPECIAL_VALUES:
                raise _fail(name, "`attach.%s.%s`" % (section, var),
                            "must be an integer or one of %s, got %r" % (", ".join(SPECIAL_VALUES), value),
                            "write a number or a special word")
        variables[section] = dict(values)
    attach = {"xdp": c.ident("attach.xdp", at["xdp"]) if at.get("xdp") else None, "tc": tc,
              "rodata": variables["rodata"], "data": variables["data"]}

    dv = c.section("derive", required=False)
    derive = {}
    for key, default in DERIVE_DEFAULTS.items():
        value = dv.get(key, default)
        if not isinstance(value, bool):
            raise _fail(name, "`derive.%s`" % key, "must be true or false, got %r" % (value,),
                        "write `%s: true` or `%s: false`" % (key, key))
        derive[key] = value
    unknown = sorted(set(dv) - set(DERIVE_DEFAULTS))
    if unknown:
        raise _fail(name, "`derive` key(s) %s" % ", ".join(unknown), "are not known",
                    "known keys: %s" % ", ".join(DERIVE_DEFAULTS))

    tool = c.section("toolchain", required=False)
    minimums = tool.get("minimum_versions") or {}
    if not isinstance(minimums, dict):
        raise _fail(name, "`toolchain.minimum_versions`", "must map tool -> version", "e.g. `clang: '11'`")

    return {
        "name": name,
        "description": str(raw.get("description", "")),
        "sources": sources,
        "outputs": outputs,
        "flags": flags,
        "expect": expect,
        "cpu_sized_maps": cpu_sized,
        "rust": rust,
        "mirrors": mirrors,
        "constants": constants,
        "pinned_maps": pinned,
        "attach": attach,
        "toolchain": {"minimum_versions": {str(k): str(v) for k, v in minimums.items()}},
        "derive": derive,
    }


_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*(?://.*|/\*.*)?$", re.M)


def header_constants(text: str) -> dict:
    """Integer ``#define``s of a header, with simple arithmetic on earlier ones
    (``#define MAX_FLOWS (MAX_TRACKED_IPS * 2)``). Non-integer defines are skipped."""
    values: dict = {}
    for match in _DEFINE.finditer(text):
        name, expr = match.group(1), match.group(2)
        value = eval_int_expr(expr, values)
        if value is not None:
            values[name] = value
    return values


_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+|\d+|[A-Za-z_][A-Za-z0-9_]*|<<|>>|[-+*/()%|&])")


def eval_int_expr(expr: str, names: dict):
    """Evaluate a small C integer expression (literals with U/L suffixes, + - * / % << >> | &,
    parentheses, known names). Returns None for anything else; never calls eval()."""
    expr = re.sub(r"(?<=[0-9a-fA-F])[uUlL]+\b", "", expr.strip())
    tokens = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    try:
        value, rest = _parse_or(tokens, names)
    except (ValueError, KeyError, ZeroDivisionError, IndexError):
        return None
    return value if not rest else None


def _parse_or(t, n):
    v, t = _parse_shift(t, n)
    while t and t[0] in ("|", "&"):
        op = t[0]
        r, t = _parse_shift(t[1:], n)
        v = v | r if op == "|" else v & r
    return v, t


def _parse_shift(t, n):
    v, t = _parse_add(t, n)
    while t and t[0] in ("<<", ">>"):
        op = t[0]
        r, t = _parse_add(t[1:], n)
        v = v << r if op == "<<" else v >> r
    return v, t


def _parse_add(t, n):
    v, t = _parse_mul(t, n)
    while t and t[0] in ("+", "-"):
        op = t[0]
        r, t = _parse_mul(t[1:], n)
        v = v + r if op == "+" else v - r
    return v, t


def _parse_mul(t, n):
    v, t = _parse_atom(t, n)
    while t and t[0] in ("*", "/", "%"):
        op = t[0]
        r, t = _parse_atom(t[1:], n)
        v = v * r if op == "*" else (v // r if op == "/" else v % r)
    return v, t


def _parse_atom(t, n):
    tok = t[0]
    if tok == "(":
        v, rest = _parse_or(t[1:], n)
        if not rest or rest[0] != ")":
            raise ValueError("unbalanced")
        return v, rest[1:]
    if tok == "-":
        v, rest = _parse_atom(t[1:], n)
        return -v, rest
    if tok[0].isdigit():
        return int(tok, 0), t[1:]
    return n[tok], t[1:]
