# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""lqos.bpf.abi_info's ``service`` section: what a service that loads the programs itself (LibreQoS' lqosd, the
stand-in shaperd) runs, against the object its installed binary embeds and the collection's own build.

The service is read exactly as lqos.bpf.service reads it (``_service.run.ServiceRun.read``: configuration, unit or
``pid``, binary, embedded object; ``_service.hooks.read_hooks``: the programs on its hooks and their owners). The
tags of a trial load of the embedded object (``ServiceRun.expected``) and of the build's object
(``_service.hooks.trial_tags``) are compared with the running ones by ``_service.hooks.problems``, the service
module's own verification. The ABI check is the record the deploy role's service loader writes when it checks the
embedded object (``<state_dir>/service/<unit>/abi-check.json``, lqos.bpf.abi_check ``record``).

Pure: ``running_programs``, ``compare``, ``abi_check_verdict``, ``service_problems``. Read-only; a part that cannot
be read is an ``unknown`` with its reason (or the section's ``error``), never a failure.
"""

from __future__ import annotations

import json
import os

from .._common import LqosError
from .._service.config import SERVICE_ARGS

MATCH, DIFFER, UNKNOWN = "match", "differ", "unknown"
PASSED, FAILED = "passed", "failed"
ABI_CHECK_RECORD = "abi-check.json"
DEFAULT_STATE_DIR = "/var/lib/lqos-bpf"
HOOKS = ("xdp", "tc_egress", "tc_ingress")
SHORT = 12

# abi_info's ``service`` option (the service module's options of the same names, plus the deploy role's state dir).
SERVICE_OPTIONS = dict(SERVICE_ARGS, state_dir=dict(type="path", default=DEFAULT_STATE_DIR))


def record_path(state_dir: str, unit: str) -> str:
    """Where the deploy role's service loader records the ABI check of the embedded object: its records folder is
    ``<state_dir>/service/<unit without .service>/`` (roles/deploy/tasks/service.yml, ``deploy_svc_dir``)."""
    name = unit[:-len(".service")] if unit.endswith(".service") else unit
    return os.path.join(state_dir, "service", name, ABI_CHECK_RECORD)


def _text(exc) -> str:
    return str(exc) if isinstance(exc, LqosError) else getattr(exc, "msg", None) or str(exc)


# ---------------------------------------------------------------------------
# Pure
# ---------------------------------------------------------------------------

def running_programs(hooks: list) -> list:
    """The programs on the configured hooks that the service's main process holds, from ``read_hooks`` rows:
    [{interface, netns, hook (xdp, tc_egress, tc_ingress), id, name, tag}], in configuration order."""
    out = []
    for row in hooks or []:
        for hook in HOOKS:
            prog = row.get(hook)
            if prog and prog.get("owner") == "service":
                out.append({"interface": row["interface"], "netns": row.get("netns"), "hook": hook,
                            "id": prog["id"], "name": prog["name"], "tag": prog["tag"]})
    return out


def compare(config: dict, hooks: list, expected, main_pid: int, source: str) -> tuple:
    """(verdict, differences, reason) of the running programs against ``expected``: {name: tag} of a trial load
    of ``source``, or the text saying why there are none. ``match`` when ``_service.hooks.problems`` finds nothing
    (every hook of the configuration holds a program of the main process with the expected tag), ``differ`` with
    its sentences, ``unknown`` with the reason when the service does not run or there is nothing to compare."""
    from .._service.hooks import problems

    if not main_pid:
        return UNKNOWN, [], "the service is not running, so no programs of it run"
    if not isinstance(expected, dict):
        return UNKNOWN, [], str(expected)
    found = problems(config, hooks, expected, main_pid, source)
    return (DIFFER, found, None) if found else (MATCH, [], None)


def abi_check_verdict(record, path: str, embedded_sha256: str | None, main_pid: int, tags_vs_embedded: str,
                      no_object: str | None = None) -> tuple:
    """(verdict, reason) of the ABI check of the object the service runs, from the deploy role's ``record``
    (abi_check's JSON: ``object_sha256``, ``ok``, ``summary``; None when there is none, or the text saying why it
    cannot be read). ``passed``/``failed`` only when the service runs the embedded object (``tags_vs_embedded``
    ``match``) and the record is of that object (same sha256); ``unknown`` with the reason otherwise (``no_object``:
    why there is no embedded object)."""
    if embedded_sha256 is None:
        return UNKNOWN, "no check can be said to be of the object the service runs: %s" % (
            no_object or "the object its binary embeds is not known")
    if isinstance(record, str):
        return UNKNOWN, record
    if not isinstance(record, dict):
        return UNKNOWN, ("no ABI check of the embedded object is recorded at %s (the deploy role's service loader "
                         "writes it when it checks the installed build)" % path)
    checked = record.get("object_sha256")
    if checked != embedded_sha256:
        return UNKNOWN, ("the ABI check recorded at %s is of object %s, not of the object embedded in the installed "
                         "binary (%s): this build was not checked by the deploy" % (
                             path, (checked or "none")[:SHORT], embedded_sha256[:SHORT]))
    outcome = "passed" if record.get("ok") else "failed"
    if not main_pid:
        return UNKNOWN, ("the service is not running (its embedded object %s the ABI check recorded at %s)"
                         % (outcome, path))
    if tags_vs_embedded != MATCH:
        return UNKNOWN, ("the running programs are not known to be the embedded object's (tags_vs_embedded: %s), "
                         "so its check (%s) does not speak for them" % (tags_vs_embedded, outcome))
    if record.get("ok"):
        return PASSED, None
    return FAILED, "the ABI check recorded at %s failed: %s" % (path, record.get("summary") or "no summary")


def service_problems(service: dict) -> list:
    """What is wrong with the service now (abi_info's ``problems``): running programs that are not the installed
    binary's embedded object's, a running object whose ABI check failed. [str], each naming the unit and the fix."""
    if not isinstance(service, dict):
        return []
    unit, out = service.get("unit"), []
    if service.get("tags_vs_embedded") == DIFFER:
        diffs = (service.get("differences") or {}).get("embedded") or []
        out.append("service %s does not run the object embedded in its installed binary %s (%d difference(s): %s). "
                   "Fix: run the deploy (lqos_bpf_loader: service) so the installed build is checked and the "
                   "service restarted in its window, or reinstall the build it runs." % (
                       unit, (service.get("binary") or {}).get("path"), len(diffs), " ".join(diffs)))
    if service.get("abi_check") == FAILED:
        out.append("service %s runs an object that failed the ABI check: %s. Fix: install a build whose embedded "
                   "object passes (the Rust mirrors and the C agree) and deploy it, or roll back to the previous "
                   "build." % (unit, (service.get("reasons") or {}).get("abi_check")))
    return out


# ---------------------------------------------------------------------------
# Reading the host
# ---------------------------------------------------------------------------

def read_record(path: str):
    """The ABI check record at ``path`` (dict), None when there is none, or the text saying why it is unreadable."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return "the ABI check record %s cannot be read: %s" % (path, getattr(exc, "strerror", None) or exc)
    return doc if isinstance(doc, dict) else "the ABI check record %s is not a JSON object" % path


def _unit_state(run) -> dict:
    if run.unit is not None:
        return {k: run.unit[k] for k in ("active_state", "sub_state", "n_restarts")}
    alive = bool(run.pid) and os.path.isdir("/proc/%d" % run.pid)   # run by another supervisor (pid)
    return {"active_state": "active" if alive else "inactive", "sub_state": None, "n_restarts": None}


def _tags(run, build: dict | None, main_pid: int) -> tuple:
    """(embedded tags or why not, build tags or why not); trial loads only while the service runs."""
    from .._service.hooks import trial_tags

    if not main_pid:
        return None, None
    try:
        embedded = run.expected()[0]
    except LqosError as exc:
        embedded = _text(exc)
    obj = ((build or {}).get("object") or {})
    if not obj.get("path") or not os.path.isfile(obj["path"]):
        return embedded, "there is no current build of the collection under build_root to compare with"
    if isinstance(embedded, dict) and run.embedded is not None and obj.get("sha256") == _sha(run.embedded):
        return embedded, dict(embedded)   # the same bytes: the same tags
    try:
        return embedded, trial_tags(obj["path"], "the collection's build %s" % obj["path"])
    except LqosError as exc:
        return embedded, _text(exc)


def _sha(data: bytes) -> str:
    from .._common import sha256_bytes
    return sha256_bytes(data)


def service_facts(module, options: dict, build: dict | None) -> dict:
    """abi_info's ``service`` section (shape: RETURN ``service`` of plugins/modules/abi_info.py) for the ``service``
    option {name, kind, config, binary, pid, state_dir}; ``build`` is abi_info's ``build`` (its object is the
    collection's build). Never raises LqosError: what cannot be read is the section's ``error`` and ``unknown``s."""
    from .._service.run import read_params, ServiceRun

    out = {"unit": options["name"], "active_state": None, "sub_state": None, "main_pid": None, "n_restarts": None,
           "binary": None, "embedded": None, "running": [], "tags_vs_embedded": UNKNOWN, "tags_vs_build": UNKNOWN,
           "abi_check": UNKNOWN, "differences": {"embedded": [], "build": []}, "abi_check_record": None,
           "reasons": {}, "error": None}
    try:
        run = ServiceRun(module, read_params(**{k: options.get(k) for k in ("name", "kind", "config", "binary",
                                                                            "pid")}))
        out["unit"] = run.unit_name
        run.read()
        out.update(_unit_state(run))
        main_pid = run.main_pid()
        out["binary"] = {"path": run.binary_path, "sha256": _sha(run.binary_data) if run.binary_data else None}
        out["embedded"] = None if run.embedded is None else {"sha256": _sha(run.embedded), "size": len(run.embedded)}
        if main_pid and not os.path.isdir("/proc/%d" % main_pid):
            main_pid = 0   # the process given has exited: it runs no programs
        out["main_pid"] = main_pid or None
        hooks = run.read_hooks() if main_pid else []
        out["running"] = running_programs(hooks)
        embedded, built = _tags(run, build, main_pid)
    except LqosError as exc:
        out["error"] = _text(exc)
        out["reasons"] = {k: "the service cannot be read: %s" % out["error"]
                          for k in ("tags_vs_embedded", "tags_vs_build", "abi_check")}
        return out
    where = "the object embedded in %s" % run.binary_path
    out["tags_vs_embedded"], out["differences"]["embedded"], why_e = compare(
        run.config, hooks, embedded, main_pid, where)
    out["tags_vs_build"], out["differences"]["build"], why_b = compare(
        run.config, hooks, built, main_pid, "the collection's build")
    path = record_path(options.get("state_dir") or DEFAULT_STATE_DIR, run.unit_name)
    record = read_record(path)
    if isinstance(record, dict):
        out["abi_check_record"] = {"path": path, "object_sha256": record.get("object_sha256"),
                                   "ok": bool(record.get("ok")), "summary": record.get("summary")}
    no_object = _text(run.embedded_error) if run.embedded_error is not None else (
        None if run.binary_path else "the service's binary is not known (give binary)")
    out["abi_check"], why_c = abi_check_verdict(record, path, (out["embedded"] or {}).get("sha256"), main_pid,
                                                out["tags_vs_embedded"], no_object)
    out["reasons"] = {"tags_vs_embedded": why_e, "tags_vs_build": why_b, "abi_check": why_c}
    for text in run.warnings:
        module.warn(text)
    return out
