# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""The fleet ABI report: per-host ``lqos.bpf.abi_info`` results in, one report out.

Pure logic on plain data (no Ansible objects), so it is unit-tested and
benchmarked without a fleet. Field extraction goes through compiled jmespath
expressions; grouping is plain Python.

A host's ABI status is one of:

- ``drift``: the last ABI check of its current build failed, a pinned map is
  incompatible, or an attached program is not the one the deploy recorded;
- ``ok``: built, ABI check passed for this build, nothing of the above;
- ``unchecked``: built, but no ABI check recorded for the current build;
- ``not_built``: no build on the host;
- ``no_data``: abi_info did not run or failed there (unreachable, error).

Only ``drift`` fails the audit.
"""

from __future__ import annotations

import html
import json
import traceback

try:
    import jmespath
    HAS_JMESPATH = True
    JMESPATH_IMP_ERR = None
except ImportError:  # the action plugin reports it as one clear error
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMP_ERR = traceback.format_exc()

STATUSES = ("drift", "ok", "unchecked", "not_built", "no_data")
REPORT_VERSION = 1
SUMMARY_HOSTS = 10  # drifted hosts named in the one-line summary (the report lists them all)

_EXPRESSIONS = {
    "object_sha256": "build.object.sha256",
    "build_id": "build.build_id",
    "skeleton_object": "build.skeleton.object",
    "programs": "build.skeleton.programs",
    "kernel": "kernel.release",
    "toolchain": "toolchain",
    "check_ok": "abi_check.ok",
    "check_build": "abi_check.build_id",
    "check_summary": "abi_check.summary",
    "check_problems": "abi_check.problems",
    "bad_pins": "pins.maps[?status=='incompatible'].{name: name, reason: reason}",
    "pin_summary": "pins.summary",
    "pin_error": "pins.error",
    "xdp": "attached[?xdp].{interface: interface, netns: netns, hook: 'xdp', program: xdp.name, "
           "id: xdp.id, tag: xdp.tag, mode: xdp.mode, expected_program: xdp.expected_program, "
           "expected_tag: xdp.expected_tag, matches: xdp.matches}",
    "tc": "attached[].tc[].{interface: interface, netns: netns, hook: join('', ['tc-', direction]), "
          "program: name, id: id, tag: tag, mode: `null`, expected_program: expected_program, "
          "expected_tag: expected_tag, matches: matches}",
    "iface_errors": "attached[?error].{interface: interface, netns: netns, error: error}",
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
        return {"host": host, "status": "no_data", "object_sha256": None, "build_id": None,
                "kernel": None, "toolchain": {}, "attached": [], "pins": {}, "abi_check": None,
                "drift": [], "warnings": [why]}
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
    for row in _q("iface_errors", result) or []:
        warnings.append("interface %s: %s" % (row["interface"], row["error"]))
    warnings.extend(str(e) for e in _q("errors", result) or [])
    if drift:
        status = "drift"
    elif build_id is None:
        status = "not_built"
    elif not check_current:
        status = "unchecked"
    else:
        status = "ok"
    return {
        "host": host, "status": status, "object_sha256": _q("object_sha256", result), "build_id": build_id,
        "skeleton_object": _q("skeleton_object", result), "programs": _q("programs", result) or [],
        "kernel": _q("kernel", result), "toolchain": _q("toolchain", result) or {},
        "attached": attached, "pins": _q("pin_summary", result) or {},
        "abi_check": None if check_ok is None else {"ok": check_ok, "build_id": check_build,
                                                    "summary": _q("check_summary", result)},
        "drift": drift, "warnings": warnings,
    }


def aggregate(results: dict) -> dict:
    """``results``: {host: abi_info result (or None)} -> the report (a JSON-able dict)."""
    rows = [host_summary(h, results[h]) for h in sorted(results)]
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
    return {
        "version": REPORT_VERSION,
        "hosts_total": len(rows),
        "ok": not drifted,
        "status_counts": counts,
        "objects": len([k for k in by_object if k != "none"]),
        "groups": ordered,
        "by_object": by_object,
        "drifted_hosts": drifted,
        "drift": drift,
        "hosts": {r["host"]: r for r in rows},
    }


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


# ---------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------

def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def _md(text) -> str:
    return str("" if text is None else text).replace("|", "\\|").replace("\n", " ")


def _short(sha) -> str:
    return sha[:12] if sha else "(none)"


def to_markdown(report: dict) -> str:
    out = ["# Fleet ABI report", "", summary_line(report), ""]
    out += ["## Hosts by object hash and ABI status", "",
            "| status | object sha256 | build ids | hosts |", "|---|---|---|---|"]
    for g in report["groups"]:
        out.append("| %s | `%s` | %s | %s |" % (
            g["status"], _short(g["object_sha256"]), _md(", ".join(g["build_ids"]) or "-"),
            _md(", ".join(g["hosts"]))))
    out += ["", "## Drift", ""]
    if report["drift"]:
        out += ["| host | kind | subject | detail |", "|---|---|---|---|"]
        out += ["| %s | %s | %s | %s |" % (_md(d["host"]), d["kind"], _md(d["subject"]), _md(d["detail"]))
                for d in report["drift"]]
    else:
        out.append("No drift.")
    out += ["", "## Hosts", "", "| host | status | kernel | object | attached | pins | notes |",
            "|---|---|---|---|---|---|---|"]
    for name in sorted(report["hosts"]):
        h = report["hosts"][name]
        attached = "; ".join("%s %s %s %s" % (a["interface"], a["hook"], a.get("program") or "-", a.get("tag") or "")
                             for a in h["attached"])
        pins = ", ".join("%d %s" % (v, k) for k, v in sorted(h["pins"].items()) if v and k != "total")
        out.append("| %s | %s | %s | `%s` | %s | %s | %s |" % (
            _md(name), h["status"], _md(h["kernel"] or "-"), _short(h["object_sha256"]), _md(attached or "-"),
            _md(pins or "-"), _md("; ".join(h["warnings"]) or "-")))
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} code{font-size:.9em}
.drift{background:#fde2e1} .ok{background:#e3f6e5} .unchecked,.not_built{background:#fff6d6}
.no_data{background:#eee}
"""


def _h(text) -> str:
    return html.escape(str("" if text is None else text))


def to_html(report: dict) -> str:
    """A self-contained page: inline CSS, no script, no external resource."""
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>Fleet ABI report</title><style>%s</style></head><body>" % _CSS,
             "<h1>Fleet ABI report</h1>", "<p>%s</p>" % _h(summary_line(report)),
             "<h2>Hosts by object hash and ABI status</h2>",
             "<table><tr><th>status</th><th>object sha256</th><th>build ids</th><th>hosts</th></tr>"]
    for g in report["groups"]:
        parts.append("<tr class=\"%s\"><td>%s</td><td><code>%s</code></td><td>%s</td><td>%s</td></tr>" % (
            _h(g["status"]), _h(g["status"]), _h(g["object_sha256"] or "(none)"), _h(", ".join(g["build_ids"])),
            _h(", ".join(g["hosts"]))))
    parts.append("</table><h2>Drift</h2>")
    if report["drift"]:
        parts.append("<table><tr><th>host</th><th>kind</th><th>subject</th><th>detail</th></tr>")
        parts += ["<tr class=\"drift\"><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            _h(d["host"]), _h(d["kind"]), _h(d["subject"]), _h(d["detail"])) for d in report["drift"]]
        parts.append("</table>")
    else:
        parts.append("<p>No drift.</p>")
    parts.append("<h2>Hosts</h2><table><tr><th>host</th><th>status</th><th>kernel</th><th>object</th>"
                 "<th>attached</th><th>pins</th><th>notes</th></tr>")
    for name in sorted(report["hosts"]):
        h = report["hosts"][name]
        attached = "<br>".join(_h("%s %s %s %s" % (a["interface"], a["hook"], a.get("program") or "-",
                                                   a.get("tag") or "")) for a in h["attached"])
        pins = ", ".join("%d %s" % (v, k) for k, v in sorted(h["pins"].items()) if v and k != "total")
        parts.append("<tr class=\"%s\"><td>%s</td><td>%s</td><td>%s</td><td><code>%s</code></td><td>%s</td>"
                     "<td>%s</td><td>%s</td></tr>" % (
                         _h(h["status"]), _h(name), _h(h["status"]), _h(h["kernel"] or "-"),
                         _h(_short(h["object_sha256"])), attached or "-", _h(pins or "-"),
                         "<br>".join(_h(w) for w in h["warnings"]) or "-"))
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


RENDERERS = {"json": (".json", to_json), "markdown": (".md", to_markdown), "html": (".html", to_html)}
