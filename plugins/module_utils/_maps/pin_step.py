# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The pin step of lqos.bpf.pinned_maps, run inside another module's process.

lqos.bpf.attach's ``pinned_maps`` option audits (or migrates) the pinned maps
right before it attaches, in the same process: one module run instead of two
for every deploy (each module run costs an AnsiballZ build on the controller
and a Python start on the target). The step is exactly ``run_pinned_maps``,
fed the options lqos.bpf.pinned_maps would get, with the caller's spec,
pin root, object, approval and check mode. Where it decides whether the programs using a
map are this collection's (a live map re-pinned instead of copied: ``_maps.replace.live_maps``),
it asks the one ownership model (``_ownership.owners.is_collection_pin``).
"""

from __future__ import annotations

import os

from .._common import MAP_BACKUP_DIR, MAP_STATE_DIR, why_not_live
from .._bpffs import require_bpffs
from .pinned_maps import run_pinned_maps

# lqos.bpf.pinned_maps' options a caller may set, with that module's defaults; the rest come from the caller.
STEP_OPTIONS = dict(
    state=dict(type="str", choices=["audited", "migrated"], default="migrated"),
    unmigratable=dict(type="str", choices=["fail", "start_empty"], default="fail"),
    backup_dir=dict(type="path", default=MAP_BACKUP_DIR),
    state_dir=dict(type="path", default=MAP_STATE_DIR),
    allow_narrowing=dict(type="bool", default=False),
)
_FIXED = dict(derive_from_object=True, defaults={}, restore_from=None, pin=None, maps=None)


class _StepModule:
    """What run_pinned_maps reads of an AnsibleModule (params, check mode, diff, warn, ...), over the caller's."""

    def __init__(self, module, params: dict):
        self._module = module
        self.params = params

    def __getattr__(self, name):
        return getattr(self._module, name)


def step_params(caller: dict, options: dict) -> dict:
    """lqos.bpf.pinned_maps' params: ``options`` (STEP_OPTIONS) over its defaults, the caller's spec, pin root,
    object and approval."""
    params = {k: v["default"] for k, v in STEP_OPTIONS.items()}
    params.update((k, v) for k, v in (options or {}).items() if k in STEP_OPTIONS and v is not None)
    params.update(_FIXED)
    params.update(spec=caller.get("spec"), object=caller.get("object"), pin_root=caller["pin_root"],
                  approve=bool(caller.get("approve")))
    return params


def run_pin_step(module, options: dict, obj: str | None = None) -> dict:
    """Run the pin step with the caller module's params; returns lqos.bpf.pinned_maps' result dict.

    ``obj``: the object the caller will load, when it is not its ``object`` param (e.g. the build's default path).
    Raises LqosError as lqos.bpf.pinned_maps would (the caller's run fails with that message)."""
    caller = dict(module.params, object=obj or module.params.get("object"))
    from . import window as _window
    _window.DEFER[0] = True   # the snapshots are computed by catch_up() after the swap, or by flush()
    return run_pinned_maps(_StepModule(module, step_params(caller, options)))


def flush() -> None:
    """Write the copy-time snapshots the step kept in this process (an attach that failed before its catch-up)."""
    from . import window as _window
    _window.flush_snapshots()
    _window.DEFER[0] = False


def pending(module, result: dict) -> bool:
    """True when the step planned pin changes it did not carry out (no approval, or check mode)."""
    return bool(result.get("changed")) and why_not_live(module) is not None


def roll_back_step(module, result: dict, err):
    """The attach after an applied pin step failed: put back what the step changed in this run (the maps it
    moved aside, by pinned_maps' state: rolled_back limited to them), and return ``err`` saying so
    (``_changes.failure``: changed: false when everything is back, else changed: true with what is left and how
    to undo it)."""
    from .._changes import failure
    from . import replace as R
    from . import commit as C
    from .._kernel.maps import map_info_by_path
    names = [d["name"] for d in result.get("migrated") or []]
    if not names or why_not_live(module) is not None:
        return err
    flush()   # the copy-time snapshots kept in this process: written now, so the rollback drops them with the rest
    pin_root = require_bpffs(module.params["pin_root"])
    state_dir = (module.params.get("pinned_maps") or {}).get("state_dir") or STEP_OPTIONS["state_dir"]["default"]
    undo = ("lqos.bpf.pinned_maps state: rolled_back approve: true (pin_root %s, state_dir %s)"
            % (pin_root, state_dir))
    rolled, left = [], []
    for name in names:
        aside = os.path.join(pin_root, R.aside_name(name))
        change = "map %s moved aside to %s and a new map pinned at %s" % (name, aside, os.path.join(pin_root, name))
        try:
            pin = {"name": R.aside_name(name), "kind": "map", "path": aside, "id": map_info_by_path(aside)["id"]}
            C.rollback(pin_root, [pin], state_dir, True)
        except Exception as exc:  # pylint: disable=broad-except
            left.append({"change": change, "undo": undo, "rollback_error": getattr(exc, "msg", None) or str(exc)})
            continue
        rolled.append("map %s put back at %s (the new map pinned there was unpinned)" % (name, name))
    return failure(err, rolled, left, "fix the cause, then run the task again (the pin step finishes the "
                                      "replacement)", who="the pin step")


def catch_up(module, options: dict) -> dict:
    """After the attach swapped the programs: one catch-up pass over every published replacement under the
    caller's pin root ({map: {carried, deleted, kept_newer, added_up}}; empty when none is under way, in check
    mode or without approval)."""
    if why_not_live(module) is not None:
        flush()
        return {}
    from .commit import catch_up_all
    params = step_params(dict(module.params), options)
    if params["state"] != "migrated":
        flush()
        return {}
    from .._common import LqosError
    from .._bpffs import require_bpffs
    from .._kernel.libbpf import LibbpfError
    try:
        return catch_up_all(require_bpffs(params["pin_root"]), params["state_dir"])
    except (LqosError, LibbpfError) as exc:
        flush()
        # the swap is done and stays: the commit's pass tries again, with the same rules
        module.warn("the catch-up after the swap stopped (%s); state: committed carries the writes over before it "
                    "unpins the old maps" % getattr(exc, "msg", exc))
        return {}
