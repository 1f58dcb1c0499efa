# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""The controller half of lqos.bpf.abi_check.

Parses the Rust mirror types with tree-sitter (``_rust/crate.RustCrate``), computes
their ``#[repr(C)]`` layouts, finds the size assertions, reads the sizing
constants from the C header and the Rust source, and hands all of it to the
module as plain data (its ``rust_layouts`` option). Targets never need
tree-sitter.

May import: _rust, module_utils._common, module_utils._spec."""

from __future__ import annotations

import os
import re

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import header_constants
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.derive import RustDerivation, restated_constants
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.crate import RustCrate
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import RustLayoutError
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.workspace import rust_roots

MAX_NESTING = 8
_PRIMITIVE = re.compile(r"^(u|i)(8|16|32|64|128|size)$|^(f32|f64|bool|char)$")
_ARRAY = re.compile(r"^\[(.*);\s*([^;\]]+)\]$", re.S)


class _Paths:
    """Show paths relative to the crate root (src/x.rs, ../utils/src/y.rs)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def rel(self, path: str) -> str:
        if not path:
            return path
        return os.path.relpath(os.path.abspath(path), self.root)

    def text(self, message: str) -> str:
        parent = os.path.dirname(self.root)
        out = message.replace(self.root + os.sep, "")
        return out.replace(parent + os.sep, ".." + os.sep) if parent != os.sep else out


def _array(crate: RustCrate, text: str, size: int) -> dict | None:
    """{count, elem_size, elem_type} of a Rust array type (nested arrays flattened)."""
    m = _ARRAY.match(text.strip())
    if not m:
        return None
    elem = m.group(1).strip()
    inner = _array(crate, elem, 0)
    if inner is not None:
        elem_size, elem_type = inner["elem_size"], inner["elem_type"]
    else:
        try:
            elem_size, elem_type = crate.layout(elem).size, elem
        except RustLayoutError:
            return None
    count = size // elem_size if elem_size and size else (inner["count"] if inner else 0)
    return {"count": count, "elem_size": elem_size, "elem_type": elem_type}


def layout_data(crate: RustCrate, layout, paths: _Paths, depth: int = 0) -> dict:
    """A Rust Layout as plain data, with nested struct fields and array shapes."""
    fields = []
    for f in layout.fields:
        entry = {"name": f.name, "offset": f.offset, "size": f.size, "type": f.type, "array": None, "fields": None}
        arr = _array(crate, f.type, f.size)
        if arr is not None:
            entry["array"] = arr
        elif not _PRIMITIVE.match(f.type) and depth < MAX_NESTING:
            try:
                sub = crate.layout(f.type)
            except RustLayoutError:
                sub = None
            if sub is not None and sub.fields:
                entry["fields"] = layout_data(crate, sub, paths, depth + 1)["fields"]
        fields.append(entry)
    return {"name": layout.name, "size": layout.size, "align": layout.align, "file": paths.rel(layout.file),
            "line": layout.line, "packed": layout.packed, "repr_align": layout.repr_align, "fields": fields}


def _constant(crate: RustCrate | None, name: str, path: str, paths: _Paths):
    if crate is not None:
        try:
            return crate.constant(name, path)
        except RustLayoutError as exc:
            if "is not under spec rust.roots" not in str(exc):
                raise
    return RustCrate([path]).constant(name, path)


def constants_data(spec: dict, root: str, crate: RustCrate | None, paths: _Paths) -> list:
    out = []
    workdir = os.path.join(root, spec["sources"]["workdir"])
    headers: dict = {}
    for c in spec["constants"]:
        header_rel = os.path.normpath(os.path.join(spec["sources"]["workdir"], c["header"]))
        entry = {"name": c["name"], "header": header_rel, "c_value": None, "c_error": None,
                 "rust": c["rust"], "rust_name": c["rust_name"], "rust_value": None, "rust_error": None,
                 "origin": c.get("origin", "spec")}
        path = os.path.join(workdir, c["header"])
        if path not in headers:
            try:
                with open(path) as fh:
                    headers[path] = header_constants(fh.read())
            except OSError as exc:
                headers[path] = exc
        values = headers[path]
        if isinstance(values, OSError):
            entry["c_error"] = {"message": "cannot read %s for constant %s (%s)" % (header_rel, c["name"], values.strerror),
                                "fix": "fix constants[].header in the spec (relative to sources.workdir)"}
        elif c["name"] not in values:
            entry["c_error"] = {"message": "%s has no integer #define %s" % (header_rel, c["name"]),
                                "fix": "fix the constant's name or header in the spec"}
        else:
            entry["c_value"] = values[c["name"]]
        if c["rust"]:
            rpath = os.path.join(root, c["rust"])
            if not os.path.isfile(rpath):
                entry["rust_error"] = {"message": "Rust file %s for constant %s does not exist" % (c["rust"], c["name"]),
                                       "fix": "fix constants[].rust in the spec (relative to the crate root)"}
            else:
                try:
                    entry["rust_value"] = _constant(crate, c["rust_name"], rpath, paths)
                except RustLayoutError as exc:
                    detail = paths.text(str(exc))
                    entry["rust_error"] = {"message": "Rust constant %s (%s): %s" % (c["rust_name"], c["rust"], detail),
                                           "fix": "define `const %s: <int> = N;` in %s or fix the spec"
                                                  % (c["rust_name"], c["rust"])}
        out.append(entry)
    return out


def _find_headers(workdir: str, name: str) -> list:
    found = []
    for dirpath, dirnames, filenames in os.walk(workdir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if name in filenames:
            found.append(os.path.join(dirpath, name))
    return sorted(found)


def derived_constants(spec: dict, root: str, crate: RustCrate, paths: _Paths) -> list:
    """Constants entries for every Rust integer const named like a ``#define``
    of a ``maximums.h`` under sources.workdir (spec ``derive.constants``).
    Explicit ``constants`` entries of the same name win."""
    workdir = os.path.join(root, spec["sources"]["workdir"])
    explicit = {c["rust_name"] for c in spec["constants"]}
    out = []
    for header in _find_headers(workdir, "maximums.h"):
        try:
            with open(header) as fh:
                values = header_constants(fh.read())
        except OSError:
            continue
        for item in restated_constants(crate, values, paths.rel):
            if item["name"] in explicit:
                continue
            explicit.add(item["name"])
            out.append({"name": item["name"], "header": os.path.relpath(header, workdir), "rust": item["file"],
                        "rust_name": item["name"], "origin": "derived (%s:%d)" % (item["file"], item["line"])})
    return out


def _type_entry(crate: RustCrate, rust: str, paths: _Paths) -> dict:
    try:
        return {"layout": layout_data(crate, crate.layout(rust), paths), "error": None, "asserted": []}
    except RustLayoutError as exc:
        return {"layout": None, "error": paths.text(str(exc)), "asserted": []}


def derived_side(crate: RustCrate, spec: dict, paths: _Paths) -> dict:
    """The controller half of the derivation (``_rust.derive``), plus the
    layout of every Rust type it may pair: map keys/values and ``#[repr(C)]``
    structs (generic ones need their arguments and are left out)."""
    data = RustDerivation(crate, paths.rel).derive()
    types = {}
    for m in data["maps"]:
        for side in ("key", "value"):
            if m[side] not in types:
                types[m[side]] = _type_entry(crate, m[side], paths)
    for r in data["repr_c"]:
        if r["name"] not in types and not crate.type_params(r["name"]):
            entry = _type_entry(crate, r["name"], paths)
            if entry["layout"] is not None:
                types[r["name"]] = entry
    data["repr_c"] = [r for r in data["repr_c"] if r["name"] in types]
    data["types"] = types
    if not spec["derive"]["calls"]:
        data["calls"] = []
    return data


def rust_side(spec: dict, root: str) -> dict:
    """Everything the module needs from the Rust side, as plain data."""
    paths = _Paths(root)
    crate = None
    crate_error = None
    missing_roots, workspace = [], None
    derive = spec.get("derive", {})
    if spec["mirrors"] or any(c["rust"] for c in spec["constants"]) or derive.get("mirrors") \
            or derive.get("constants"):
        found = rust_roots(spec, paths.root)
        roots, missing_roots, workspace = found["roots"], found["missing"], found["workspace"]
        try:
            crate = RustCrate(roots)
        except RustLayoutError as exc:
            message = paths.text(str(exc))
            if "tree-sitter" in message:
                raise LqosError(message.split(":", maxsplit=1)[0] + ".", "pip install tree-sitter tree-sitter-rust on the controller.")
            crate_error = message
    derived = None
    if crate is not None and derive.get("mirrors"):
        derived = derived_side(crate, spec, paths)
    pairs = []
    labels = {}
    for m in spec["mirrors"]:
        entry = {"rust": m["rust"], "c": m["c"], "layout": None, "error": None, "asserted": []}
        if crate is None:
            entry["error"] = crate_error
        else:
            try:
                lay = crate.layout(m["rust"])
                entry["layout"] = layout_data(crate, lay, paths)
                labels.setdefault(lay.name, []).append(entry)
            except RustLayoutError as exc:
                entry["error"] = paths.text(str(exc))
        pairs.append(entry)
    if derived is not None:
        for rust, entry in derived["types"].items():
            if entry["layout"] is not None:
                labels.setdefault(entry["layout"]["name"], []).append(entry)
    assertions = []
    if crate is not None:
        for a in crate.size_assertions():
            item = {"type": a.type, "size": a.size, "style": a.style, "file": paths.rel(a.file), "line": a.line}
            try:
                lay = crate.layout(a.type)
            except RustLayoutError:
                continue  # not a type this crate defines (e.g. a generic parameter): nothing to check
            item["rust_size"] = lay.size
            if lay.name in labels:
                for entry in labels[lay.name]:
                    entry["asserted"].append({k: item[k] for k in ("size", "style", "file", "line")})
            if not any(lay.name == e["layout"]["name"] for e in pairs if e.get("layout")):
                assertions.append(item)  # checked against the Rust layout unless a mirror pair reports it
    constants = list(spec["constants"])
    if crate is not None and derive.get("constants"):
        constants += derived_constants(spec, paths.root, crate, paths)
    return {"root": paths.root, "pairs": pairs, "assertions": assertions, "derived": derived,
            "constants": constants_data(dict(spec, constants=constants), paths.root, crate, paths),
            "missing_roots": missing_roots,
            "workspace": None if workspace is None else {
                "path": workspace["path"],
                "members": [{"crate": m["crate"], "src": paths.rel(m["src"]), "maps": m["maps"]}
                            for m in workspace["members"]]}}


def prepare_args(args: dict, basedir: str | None) -> dict:
    """The action plugin's controller work: add ``rust_layouts`` to the module args (unless the task gives
    them). ``args["spec"]`` is already a validated mapping."""
    if args.get("rust_layouts") is not None:
        return args
    spec = args["spec"]
    rust_src = args.get("rust_src") or args.get("src")
    derive = spec.get("derive", {})
    wanted = bool(spec["mirrors"] or spec["constants"] or derive.get("mirrors") or derive.get("constants"))
    if not rust_src:
        if wanted:
            derived = " and derives the rest from the Rust code (derive)" if derive.get("mirrors") else ""
            raise LqosError("spec %r has %d mirror pair(s) and %d constant(s) to compare%s, but neither rust_src "
                            "nor src is given." % (spec["name"], len(spec["mirrors"]), len(spec["constants"]),
                                                   derived),
                            "set rust_src to the crate root on the controller (or src, when the crate is at the "
                            "same path there).")
        return args
    path = os.path.expanduser(str(rust_src))
    if not os.path.isabs(path) and basedir:
        path = os.path.join(basedir, path)
    if not os.path.isdir(path):
        raise LqosError("%s %s does not exist on the controller; the Rust mirror types and header constants are "
                        "read where Ansible runs." % ("rust_src" if args.get("rust_src") else "src", path),
                        "set rust_src to the crate root of a checkout on the controller.")
    args = dict(args)
    args["rust_layouts"] = rust_side(spec, path)
    return args
