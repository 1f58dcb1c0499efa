# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""A systemd unit as the service module sees it, through ``systemctl`` argument lists.

Pure: the unit name (``unit_name``), the argv of each call (``show_argv``, ``action_argv``), the parse of
``systemctl show`` (``parse_show``, ``exec_start_path``), what a state needs done (``unit_actions``). On the host:
``show`` and ``run_action``, both through ``_common.run_literal`` (no shell, taken literally).

Facts from systemd (systemctl(1), org.freedesktop.systemd1(5)): ``systemctl show --property=A,B UNIT`` prints
``A=value`` lines; a unit systemd has no file for has ``LoadState=not-found``; a masked one ``LoadState=masked``
and ``UnitFileState=masked-runtime`` (``mask --runtime``: a link in /run/systemd/system, gone at reboot) or
``masked`` (in /etc); ``ExecStart`` is printed as ``{ path=/usr/bin/x ; argv[]=/usr/bin/x ARGS ; ... }``, one
group per command (empty for a masked unit); ``MainPID=0`` when no process runs.
"""

from __future__ import annotations

import re
import time

from .._common import LqosError, run_literal

SYSTEMCTL = "systemctl"
SHOW_PROPERTIES = ("ActiveState", "SubState", "MainPID", "NRestarts", "LoadState", "UnitFileState", "ExecStart")
SYSTEMD_STATES = ("stopped", "started", "restarted", "masked", "unmasked")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
_EXEC_PATH = re.compile(r"(?:^|[{;]\s*)path=(\S+)\s*;")


def unit_name(name: str) -> str:
    """``name`` with ``.service`` appended when it has no unit suffix; LqosError for a name systemd refuses."""
    if not isinstance(name, str) or not name or not _UNIT_NAME.match(name) or name.startswith("-") or len(name) > 255:
        raise LqosError("name %r is not a systemd unit name." % (name,),
                        "give the unit, e.g. lqosd or lqosd.service (letters, digits, ':', '_', '.', '@', '-').")
    return name if name.endswith(".service") else name + ".service"


def show_argv(unit: str) -> list:
    return [SYSTEMCTL, "show", "--property=" + ",".join(SHOW_PROPERTIES), unit]


def action_argv(action: str, unit: str) -> list:
    """The argv of one change: ``stop``, ``start``, ``mask`` (runtime), ``unmask`` (runtime)."""
    if action in ("stop", "start"):
        return [SYSTEMCTL, action, unit]
    if action in ("mask", "unmask"):
        return [SYSTEMCTL, action, "--runtime", unit]
    raise ValueError(action)


def exec_start_path(value: str) -> str | None:
    """The program path of the first command of a ``systemctl show`` ExecStart value, or None (no command)."""
    match = _EXEC_PATH.search(value or "")
    return match.group(1) if match else None


def parse_show(text: str, unit: str) -> dict:
    """``systemctl show`` output -> the module's ``unit`` return: {name, active_state, sub_state, main_pid (int),
    n_restarts (int or None), masked (bool), mask (None | "runtime" | "persistent"), load_state,
    unit_file_state, exec_start_path}."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in SHOW_PROPERTIES:
            props[key] = value.strip()

    def number(key):
        value = props.get(key, "")
        return int(value) if value.isdigit() else None

    load, file_state = props.get("LoadState", ""), props.get("UnitFileState", "")
    mask = None
    if load == "masked" or file_state.startswith("masked"):
        mask = "runtime" if file_state == "masked-runtime" else "persistent"
    return {
        "name": unit,
        "active_state": props.get("ActiveState") or None,
        "sub_state": props.get("SubState") or None,
        "main_pid": number("MainPID") or 0,
        "n_restarts": number("NRestarts"),
        "masked": mask is not None,
        "mask": mask,
        "load_state": load or None,
        "unit_file_state": file_state or None,
        "exec_start_path": exec_start_path(props.get("ExecStart", "")),
    }


def is_running(unit: dict) -> bool:
    return unit["active_state"] in ("active", "activating", "reloading")


def unit_actions(state: str, unit: dict) -> list:
    """What ``state`` needs done to a unit as ``parse_show`` gives it: a list of ``stop``/``start``/``mask``/
    ``unmask`` (empty: nothing to do). LqosError when the state cannot be reached by this module."""
    name = unit["name"]
    if state in ("started", "restarted") and unit["masked"]:
        how = unit["unit_file_state"] or unit["load_state"]
        raise LqosError("%s is masked (%s), so systemd refuses to start it." % (name, how),
                        "unmask it first (lqos.bpf.service state=unmasked, as the deploy role does after its "
                        "window), then start it.")
    if state == "stopped":
        return ["stop"] if is_running(unit) else []
    if state == "started":
        return [] if is_running(unit) else ["start"]
    if state == "restarted":
        return ["stop", "start"]
    if state == "masked":
        return [] if unit["masked"] else ["mask"]
    if state == "unmasked":
        if unit["mask"] == "persistent":
            raise LqosError("%s is masked in /etc (UnitFileState=%s), not at runtime: this module lifts only the "
                            "runtime mask it sets." % (name, unit["unit_file_state"]),
                            "run `systemctl unmask %s` if that mask is no longer wanted." % name)
        return ["unmask"] if unit["masked"] else []
    return []


def show(module, unit: str) -> dict:
    """The unit's properties now (parse_show). LqosError when systemctl fails or systemd does not know it."""
    argv = show_argv(unit)
    rc, out, err = run_literal(module, argv)
    if rc != 0:
        raise LqosError("`%s` failed (rc %d): %s." % (" ".join(argv), rc, (err or out).strip() or "no output"),
                        "run on a host whose init is systemd, or give pid for a service another supervisor runs.",
                        rc=rc, stderr=err)
    found = parse_show(out, unit)
    if found["load_state"] == "not-found":
        raise LqosError("systemd has no unit %s (LoadState=not-found)." % unit,
                        "install the service's unit file, or fix name.")
    return found


def run_action(module, action: str, unit: str) -> float:
    """Run one change; returns its duration in seconds. LqosError with systemctl's own words when it fails."""
    argv = action_argv(action, unit)
    started = time.monotonic()
    rc, out, err = run_literal(module, argv)
    took = time.monotonic() - started
    if rc != 0:
        raise LqosError("`%s` failed (rc %d): %s." % (" ".join(argv), rc, (err or out).strip() or "no output"),
                        "see `systemctl status %s` and `journalctl -u %s`." % (unit, unit), rc=rc, stderr=err)
    return took
