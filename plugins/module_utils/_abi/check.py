# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""ABI parity of an lqos_sys-shaped build (target side of lqos.bpf.abi_check).

The Rust half (tree-sitter layouts of the mirror types, size assertions, Rust
constants) is computed on the controller by the action plugin and arrives here
as plain data (the module's ``rust_layouts`` option). This file runs the check
on the target: it reads the BTF of the built object through libbpf
(``_kernel.btf.Btf``) and the chain files, compares each mirror pair
(``parity``) and checks the chain around the object (``drift``: skeleton names
against the spec and against what ``wrapper.c`` uses, ``wrapper.h`` against
``bindings.rs``, the sizing constants the Rust side restates), then records.

``parity`` and ``drift`` are pure and work on plain data, so they are
unit-tested without a kernel.
"""

from __future__ import annotations

import os

from .._common import LqosError
from .drift import (
    assertion_drift,
    bindings_functions,
    chain_drift,
    constants_report,
    skeleton_variables,
)
from .parity import btf_fields, compare_pair


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
    from .._kernel.btf import Btf
    from .._kernel.libbpf import LibbpfError

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
    from .._kernel import libbpf as _libbpf
    from .._kernel import objects as _objects
    from . import derive as dv
    from .derive import derive_from_object
    from .._build.pipeline import skeleton_names

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
        info = _objects.object_info(obj_path)
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
    refused before anything is compared (``_build.sources.refuse_other_sources``)."""
    from .._common import check_bpf_object
    if src and os.path.isdir(build_dir):
        from .._build.sources import refuse_other_sources
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
        from .._build.toolchain import object_preflight, require
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
    from .._common import atomic_write, os_fault, sha256_file
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
