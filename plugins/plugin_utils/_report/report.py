# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""The fleet ABI report: per-host ``lqos.bpf.abi_info`` results in, one report out.

Pure logic on plain data (no Ansible objects), so it is unit-tested and
benchmarked without a fleet. Field extraction goes through compiled jmespath
expressions; grouping is plain Python.

A host's ABI status is one of (``LEGEND`` says the same to the report's reader):

- ``drift``: the last ABI check of its current build failed, a pinned map is
  incompatible, an attached program is not the one the deploy recorded, or a
  map pin is missing while programs are attached;
- ``deployed``: built, ABI check passed for this build, its programs attached,
  nothing of the above;
- ``built``: built and ABI-checked, but nothing attached (not deployed, or
  detached);
- ``unchecked``: built, but no ABI check recorded for the current build;
- ``not_built``: no build on the host;
- ``no_data``: abi_info did not run or failed there (unreachable, error).

Only ``drift`` fails the audit. ``render.py`` renders a report: JSON, and
Markdown and HTML from Jinja2 templates (``render``), which a user can replace.
"""

from __future__ import annotations

import traceback
try:
    import jmespath
    HAS_JMESPATH = True
    JMESPATH_IMP_ERR = None
except ImportError:  # the action plugin reports it as one clear error
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMP_ERR = traceback.format_exc()

from ansible_collections.lqos.bpf.plugins.plugin_utils._report.cells import loader_cell, service_cell


STATUSES = ("drift", "deployed", "built", "unchecked", "not_built", "no_data")
LEGEND = {
    "drift": "needs action: a failed ABI check of the current build, an incompatible pinned map, a program that "
             "is not the one the deploy recorded, or a missing map pin under attached programs",
    "deployed": "built, ABI check passed, the programs attached as the deploy recorded them",
    "built": "built and ABI-checked, but nothing attached (not deployed yet, or detached)",
    "unchecked": "built, but no ABI check recorded for the current build",
    "not_built": "no build on the host",
    "no_data": "no facts: abi_info failed or the host was unreachable",
}
# The pin statuses counted in the "pins" column (lqos.bpf.pinned_maps' audit, module_utils/_maps/audit.STATUSES).
PIN_LEGEND = {
    "compatible": "a pinned map whose type, key, value and max_entries match what the object expects",
    "incompatible": "a pinned map with another layout than the object expects (drift: replaced at the next deploy)",
    "unknown": "a pinned map no expectation names (another tool's, or one the object no longer has); never touched",
    "missing": "a map the object pins by name is not pinned (drift only while programs are attached)",
    "not_a_map": "a pinned program or link, a folder, a symlink or the kernel's own debug files; never touched",
    "vanished": "a pin removed while the audit read it",
    "unreadable": "a pin or folder the audit could not open (permissions)",
    "aside": "an old map moved aside by a replacement that is not committed or rolled back yet",
}
SHORT_HASH = 12  # characters of a sha256 shown in tables; the full hash is in the JSON and on hover
# The report's schema version (docs/report-schema.md). Bump it when a field changes meaning or goes away; a new
# field (a column another change adds to a host row) is added within the version. merge() reads this version only.
REPORT_VERSION = 3
SUMMARY_HOSTS = 10  # drifted hosts named in the one-line summary (the report lists them all)

_EXPRESSIONS = {
    "object_sha256": "build.object.sha256",
    "build_id": "build.build_id",
    "skeleton_object": "build.skeleton.object",
    "programs": "build.skeleton.programs",
    "kernel": "kernel.release",
    "toolchain": "toolchain",
    "loader": "loader",
    "service": "service",
    "check_ok": "abi_check.ok",
    "check_build": "abi_check.build_id",
    "check_summary": "abi_check.summary",
    "check_problems": "abi_check.problems",
    "bad_pins": "pins.maps[?status=='incompatible'].{name: name, reason: reason}",
    "missing_pins": "pins.maps[?status=='missing'].name",
    "pin_summary": "pins.summary",
    "pin_error": "pins.error",
    "xdp": "attached[?xdp].{interface: interface, netns: netns, hook: 'xdp', program: xdp.name, "
           "id: xdp.id, tag: xdp.tag, mode: xdp.mode, expected_program: xdp.expected_program, "
           "expected_tag: xdp.expected_tag, matches: xdp.matches}",
    "tc": "attached[].tc[].{interface: interface, netns: netns, hook: join('', ['tc-', direction]), "
          "program: name, id: id, tag: tag, mode: `null`, expected_program: expected_program, "
          "expected_tag: expected_tag, matches: matches}",
    "iface_errors": "attached[?error].{interface: interface, netns: netns, error: error}",
    "verifier": "programs[].{program: name, role: role, verifier: verifier}",
    "errors": "errors",
}
_COMPILED: dict = {}
MISSING_JMESPATH = ("the jmespath Python library is missing on the controller (the fleet report needs it). "
                    "Fix: pip install jmespath (it is in tests/requirements.txt).")


def _q(name: str, data):
    expr = _COMPILED.get(name)
    if expr is None:
        if jmespath is None:
            raise RuntimeError(MISSING_JMESPATH)
        expr = _COMPILED[name] = jmespath.compile(_EXPRESSIONS[name])
    return expr.search(data)


def _drift(host: str, kind: str, subject: str, detail: str) -> dict:
    return {"host": host, "kind": kind, "subject": subject, "detail": detail}


def host_summary(host: str, result) -> dict:
    """One host's row of the report (status, hashes, programs) and its drift items."""
    if not isinstance(result, dict) or result.get("failed") or result.get("unreachable") or "kernel" not in result:
        why = "no abi_info result"
        if isinstance(result, dict):
            why = result.get("msg") or ("unreachable" if result.get("unreachable") else why)
        return {"host": host, "status": "no_data", "object_sha256": None, "build_id": None, "loader": None,
                "service": None,
                "kernel": None, "toolchain": {}, "attached": [], "pins": {}, "abi_check": None,
                "verifier": [], "drift": [], "warnings": [why]}
    drift, warnings = [], []
    build_id = _q("build_id", result)
    check_ok = _q("check_ok", result)
    check_build = _q("check_build", result)
    check_current = check_ok is not None and (check_build is None or check_build == build_id)
    if check_current and check_ok is False:
        problems = _q("check_problems", result) or [_q("check_summary", result) or "ABI check failed"]
        drift.extend(_drift(host, "abi", "build %s" % build_id, str(p)) for p in problems)
    elif check_ok is not None and not check_current:
        warnings.append("the recorded ABI check is for build %s, not the current build %s" % (check_build, build_id))
    for pin in _q("bad_pins", result) or []:
        drift.append(_drift(host, "pin", pin["name"], pin.get("reason") or "incompatible pinned map"))
    if _q("pin_error", result):
        warnings.append("pins: %s" % _q("pin_error", result))
    attached = (_q("xdp", result) or []) + (_q("tc", result) or [])
    for row in attached:
        if row.get("matches") is False:
            where = row["interface"] + ("@" + row["netns"] if row.get("netns") else "")
            if row.get("expected_tag") and (row.get("program") or "")[:15] == (row.get("expected_program") or "")[:15]:
                detail = "%s runs tag %s, the deploy recorded %s" % (row["program"], row["tag"], row["expected_tag"])
            elif row.get("program"):
                detail = "%s (id %s) is attached where %s is expected" % (
                    row["program"], row["id"], row.get("expected_program"))
            else:
                detail = "nothing attached where %s is expected" % row.get("expected_program")
            drift.append(_drift(host, "program", "%s %s" % (where, row["hook"]), detail))
    if any(row.get("id") for row in attached):
        for name in _q("missing_pins", result) or []:
            drift.append(_drift(host, "pin", name, "map pin missing while programs are attached: the map they use "
                                                   "is no longer reachable by its path"))
    for row in _q("iface_errors", result) or []:
        warnings.append("interface %s: %s" % (row["interface"], row["error"]))
    warnings.extend(str(e) for e in _q("errors", result) or [])
    if drift:
        status = "drift"
    elif build_id is None:
        status = "not_built"
    elif not check_current:
        status = "unchecked"
    elif any(row.get("id") for row in attached):
        status = "deployed"
    else:
        status = "built"
    return {
        "host": host, "status": status, "object_sha256": _q("object_sha256", result), "build_id": build_id,
        "skeleton_object": _q("skeleton_object", result), "programs": _q("programs", result) or [],
        "kernel": _q("kernel", result), "toolchain": _q("toolchain", result) or {},
        "loader": loader_cell(_q("loader", result)),
        "service": service_cell(_q("service", result)),
        "attached": attached, "pins": _q("pin_summary", result) or {},
        "verifier": verifier_rows(_q("verifier", result), _q("kernel", result)),
        "abi_check": None if check_ok is None else {"ok": check_ok, "build_id": check_build,
                                                    "summary": _q("check_summary", result)},
        "drift": drift, "warnings": warnings,
    }


def verifier_rows(programs, kernel) -> list:
    """One host's verifier figures (abi_info ``programs[].verifier``), flat: [{program, kernel, role, status,
    headroom_pct, insns_headroom_pct, stack_headroom_pct, insns, stack, stack_method}]."""
    out = []
    for p in programs or []:
        v = p.get("verifier") or {}
        ins, stack = v.get("insns") or {}, v.get("stack") or {}
        out.append({"program": p.get("program"), "kernel": v.get("kernel") or kernel, "role": p.get("role"),
                    "status": v.get("status") or "no figures", "headroom_pct": v.get("headroom_pct"),
                    "insns_headroom_pct": ins.get("headroom_pct"), "stack_headroom_pct": stack.get("headroom_pct"),
                    "insns": ins.get("used"), "stack": stack.get("used"), "stack_method": stack.get("method")})
    return out


def _worst(a, b):
    """The smaller of two headroom figures (None is unknown, never the smaller)."""
    known = [x for x in (a, b) if x is not None]
    return min(known) if known else None


def verifier_table(rows: list) -> dict:
    """Program x kernel release: the headroom left, the worst over the hosts that run that kernel.

    {"kernels": [release, ...], "programs": [name, ...], "cells": {program: {kernel: {status, headroom_pct,
    insns_headroom_pct, stack_headroom_pct, insns, stack, hosts}}}}. A cell's status is "verified" when any of its
    hosts verified the program, else what the hosts said ("not loaded: refused", "not loaded: left out")."""
    cells: dict = {}
    for row in rows:
        host = row["host"]
        for v in row.get("verifier") or []:
            kernel = v["kernel"] or "unknown"
            cell = cells.setdefault(v["program"], {}).get(kernel)
            if cell is None:
                cell = cells[v["program"]][kernel] = {
                    "status": v["status"], "headroom_pct": None, "insns_headroom_pct": None,
                    "stack_headroom_pct": None, "insns": None, "stack": None, "hosts": []}
            cell["hosts"].append(host)
            if v["status"] == "verified":
                if cell["status"] != "verified" or (v["headroom_pct"] is not None and (
                        cell["headroom_pct"] is None or v["headroom_pct"] < cell["headroom_pct"])):
                    cell.update(insns=v["insns"], stack=v["stack"])
                cell["status"] = "verified"
                for key in ("headroom_pct", "insns_headroom_pct", "stack_headroom_pct"):
                    cell[key] = _worst(cell[key], v[key])
    kernels = sorted({k for per in cells.values() for k in per})
    return {"kernels": kernels, "programs": sorted(cells), "cells": cells}


def aggregate(results: dict, meta: dict | None = None) -> dict:
    """``results``: {host: abi_info result (or None)} -> the report (a JSON-able dict).

    ``meta`` (``generated_at``, ``spec``, ``collection``) goes into the report as it is."""
    return aggregate_rows([host_summary(h, results[h]) for h in sorted(results)], meta)


class ReportMergeError(Exception):
    """A partial report that cannot be merged (wrong schema version, a host in two parts that disagree)."""


def merge(parts: list, rows: list | None = None, meta: dict | None = None) -> dict:
    """Partial reports (each a report dict of this schema, e.g. one per AWX job slice) and this run's own host
    ``rows`` -> one report over every host, aggregated as if one run had audited them all.

    A host in several parts must have the same row in each (the same audit seen twice); otherwise
    ReportMergeError names the host. Raises ReportMergeError for a part of another ``schema_version``."""
    by_host: dict = {}
    sources: dict = {}
    for index, part in enumerate(parts):
        label = (part.get("_source") if isinstance(part, dict) else None) or "input %d" % (index + 1)
        if not isinstance(part, dict) or not isinstance(part.get("hosts"), dict):
            raise ReportMergeError("%s is not a fleet ABI report (no hosts)" % label)
        version = part.get("schema_version", part.get("version"))
        if version != REPORT_VERSION:
            raise ReportMergeError("%s has report schema_version %r; this collection reads %d (docs/report-schema.md)"
                                   % (label, version, REPORT_VERSION))
        for host, row in part["hosts"].items():
            if host in by_host and by_host[host] != row:
                raise ReportMergeError("host %s is in %s and in %s with different results: audit it in one part only"
                                       % (host, sources[host], label))
            by_host[host], sources[host] = row, label
    for row in rows or []:
        by_host[row["host"]] = row  # this run's own hosts: the newest audit of them
    return aggregate_rows([by_host[h] for h in sorted(by_host)], meta)


def aggregate_rows(rows: list, meta: dict | None = None) -> dict:
    """Host rows (host_summary) -> the report; aggregate() and merge() share it."""
    counts = {s: 0 for s in STATUSES}
    groups: dict = {}
    by_object: dict = {}
    drift = []
    for row in rows:
        counts[row["status"]] += 1
        key = (row["object_sha256"] or "", row["status"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"object_sha256": row["object_sha256"], "status": row["status"],
                                   "build_ids": [], "hosts": []}
        group["hosts"].append(row["host"])
        if row["build_id"] and row["build_id"] not in group["build_ids"]:
            group["build_ids"].append(row["build_id"])
        by_object.setdefault(row["object_sha256"] or "none", []).append(row["host"])
        drift.extend(row["drift"])
    ordered = sorted(groups.values(), key=lambda g: (STATUSES.index(g["status"]), -len(g["hosts"]),
                                                     g["object_sha256"] or ""))
    drifted = [r["host"] for r in rows if r["status"] == "drift"]
    meta = meta or {}
    return {
        "schema_version": REPORT_VERSION,
        "version": REPORT_VERSION,  # the same number under its first name (reports of schema 2 had only this)
        "generated_at": meta.get("generated_at"),
        "spec": meta.get("spec"),
        "collection": meta.get("collection") or {"name": "lqos.bpf", "version": None},
        "legend": LEGEND,
        "pin_legend": PIN_LEGEND,
        "hosts_total": len(rows),
        "ok": not drifted,
        "status_counts": counts,
        "objects": len([k for k in by_object if k != "none"]),
        "groups": ordered,
        "by_object": by_object,
        "drifted_hosts": drifted,
        "drift": drift,
        "verifier_headroom": verifier_table(rows),
        "hosts": {r["host"]: r for r in rows},
    }


def artifact(report: dict) -> dict:
    """What the audit returns as set_stats data (ansible-runner / AWX job artifacts): the report without its
    legends, so a later job (a workflow node after sliced audits) can merge it as a partial report."""
    return {k: v for k, v in report.items() if k not in ("legend", "pin_legend")}


def summary_line(report: dict) -> str:
    counts = report["status_counts"]
    parts = ", ".join("%d %s" % (counts[s], s) for s in STATUSES if counts[s])
    line = "fleet ABI audit: %d host(s), %d object hash(es): %s" % (report["hosts_total"], report["objects"],
                                                                    parts or "no hosts")
    drifted = report["drifted_hosts"]
    if drifted:
        names = ", ".join(drifted[:SUMMARY_HOSTS])
        if len(drifted) > SUMMARY_HOSTS:
            names += " and %d more" % (len(drifted) - SUMMARY_HOSTS)
        line += "; %d drift finding(s) on %s" % (len(report["drift"]), names)
    return line
