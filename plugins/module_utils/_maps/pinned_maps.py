# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Pinned maps: audit every pin under a bpffs root against the ABI the new
object (and the spec) expect, remove incompatible map pins only with approval
and only after a verified backup, and restore such a backup.

This file is the module's run and the cleanup plan; the expectations and
their comparison (``expectations``, pure) and the audit, the few functions
that touch the kernel (``audit``), are apart, so the pure parts are
unit-tested with plain data. Backup files and restores live in ``backup.py``.
"""

from __future__ import annotations

from .._common import LqosError, check_bpf_object, MAP_BACKUP_DIR
from .._bpffs import normalise_names, refuse_bpffs_folder, require_bpffs
from .._kernel import libbpf as L
from .audit import STATUSES, audit, listing, summarise
from .expectations import (
    conflicts,
    expectations_from_object,
    expectations_from_spec,
    merge_expectations,
)

# Only what an audit needs is imported above: the spec, the object, backups, restores and the two-phase states
# are imported by the steps that use them, so the audit (every deploy, every fleet audit) starts without
# compiling them (a module payload carries no bytecode).


# --------------------------------------------------------------------------
# Cleanup
# --------------------------------------------------------------------------

def plan_cleanup(pins: list, backup_dir: str) -> list:
    """One ``remove`` action per incompatible map pin, with its reason (pure)."""
    actions = []
    for pin in pins:
        if pin["status"] != "incompatible" or pin["kind"] != "map":
            continue
        actions.append({
            "action": "remove",
            "pin": pin["path"],
            "name": pin["name"],
            "id": pin["id"],
            "reason": pin["reason"],
            "differences": pin["differences"],
            "used_by": pin["used_by"],
            "backup_dir": backup_dir,
        })
    return actions


# --------------------------------------------------------------------------
# The module's run
# --------------------------------------------------------------------------

def build_expectations(module, pin_root: str, spec: dict | None) -> dict:
    params = module.params
    tables = [expectations_from_spec(spec)]
    obj = params.get("object")
    if obj and params.get("derive_from_object", True):
        check_bpf_object(obj)
        from .._kernel import objects as O  # noqa: E741
        info = O.object_info(obj, pin_root)
        cpu_sized = [c["map"] for c in spec.get("cpu_sized_maps", [])] if spec else []
        tables.append(expectations_from_object(info, cpu_sized, L.possible_cpus() if cpu_sized else None))
    return merge_expectations(*tables)


def _conflict_text(c: dict) -> str:
    return "map %s %s: %s" % (c["map"], c["attribute"],
                              ", ".join("%s says %s" % (s, v) for s, v in sorted(c["values"].items())))


def _clean(module, pin_root: str, pins: list, found_conflicts: list) -> dict:
    from .backup import prepare_backup_dir, remove_pin, write_backup
    params = module.params
    backup_dir = params["backup_dir"]
    actions = plan_cleanup(pins, backup_dir)
    result = {"actions": actions, "removed": [], "backups": [], "changed": bool(actions)}
    if not actions:
        result["msg"] = "no incompatible pins under %s; nothing to remove" % pin_root
        return result
    torn = [c for c in found_conflicts if c["map"] in {a["name"] for a in actions}]
    if torn:
        raise LqosError("the spec and the object disagree about %s; refusing to remove pins while the "
                        "expectations contradict each other." % "; ".join(_conflict_text(c) for c in torn),
                        "fix the spec's pinned_maps (or rebuild the object) so both agree, then run again.")
    if not params["approve"] or module.check_mode:
        why = "check mode" if module.check_mode else "approve is false"
        result["msg"] = ("%d incompatible pin(s) would be removed (after a backup to %s): %s; nothing was changed "
                         "(%s)." % (len(actions), backup_dir, ", ".join(a["name"] for a in actions), why))
        return result
    prepare_backup_dir(backup_dir)
    by_path = {p["path"]: p for p in pins}
    failures = []
    for action in actions:
        pin = by_path[action["pin"]]
        try:
            backup = write_backup(pin, backup_dir)
            result["backups"].append(backup)
            action["backup"] = backup["file"]
            if pin["used_by"]:
                module.warn("removed pin %s is still used by program(s) %s: they keep the old map until "
                            "they are replaced" % (pin["path"], ", ".join("%s (id %d)" % (u["name"], u["id"])
                                                                          for u in pin["used_by"])))
            remove_pin(pin)
            result["removed"].append(pin["path"])
        except LqosError as exc:
            failures.append(str(exc))
    result["changed"] = bool(result["removed"])
    if failures:
        raise LqosError("cleanup of %s incomplete: %s" % (pin_root, " | ".join(failures)), None,
                        changed=result["changed"], removed=result["removed"], backups=result["backups"],
                        actions=actions, pins=pins)
    result["msg"] = "removed %d incompatible pin(s) after backing them up to %s: %s" % (
        len(result["removed"]), backup_dir, ", ".join(a["name"] for a in actions))
    return result


def run_pinned_maps(module) -> dict:
    """Everything lqos.bpf.pinned_maps does, returned as the module's result dict."""
    params = module.params
    pin_root = require_bpffs(params["pin_root"])
    if params.get("backup_dir"):  # every state: refused before anything is created
        refuse_bpffs_folder(params["backup_dir"], "backup_dir",
                            "give a folder on a persistent filesystem, e.g. %s." % MAP_BACKUP_DIR)
    spec = None
    if params.get("spec") is not None:
        from .._spec import validate_spec
        spec = validate_spec(params["spec"])
    names = normalise_names(pin_root, params.get("maps"))
    expectations = build_expectations(module, pin_root, spec)
    found_conflicts = conflicts(expectations)
    for c in found_conflicts:
        module.warn("expectations disagree: %s" % _conflict_text(c))
    state = params["state"]
    result = {"changed": False, "actions": [], "removed": [], "backups": [], "conflicts": found_conflicts}

    if state == "restored":
        from .backup import read_backup, restore
        backup = read_backup(params["restore_from"])
        write = params["approve"] and not module.check_mode
        outcome = restore(pin_root, backup, params.get("pin"), write)
        todo = outcome.pop("todo")
        pins = audit(pin_root, expectations, [outcome["name"]])
        if todo:
            result["actions"] = [{"action": "restore", "pin": outcome["pin"], "name": outcome["name"],
                                  "backup": outcome["backup"], "entries": len(todo),
                                  "reason": "%d of %d backup entries differ in the map"
                                            % (len(todo), outcome["entries_total"])}]
        result["changed"] = bool(todo)
        result["restored"] = outcome
        if not todo:
            result["msg"] = "all %d entries of backup %s are already in %s" % (
                outcome["entries_total"], outcome["backup"], outcome["pin"])
        elif write:
            result["msg"] = "restored %d entries of backup %s into %s" % (
                outcome["entries_written"], outcome["backup"], outcome["pin"])
        else:
            result["msg"] = "%d entries of backup %s would be written into %s; nothing was changed (%s)." % (
                len(todo), outcome["backup"], outcome["pin"], "check mode" if module.check_mode else "approve is false")
        if module._diff:
            result["diff"] = {
                "before": "%s: %d of %d backup entries differ\n" % (outcome["name"], len(todo), outcome["entries_total"]),
                "after": "%s: all %d backup entries present\n" % (outcome["name"], outcome["entries_total"]),
                "before_header": outcome["pin"], "after_header": outcome["pin"],
            }
    elif state in ("migrated", "committed", "rolled_back"):
        from . import states as S
        pins = audit(pin_root, expectations)
        if state == "migrated":
            result.update(S.run_migrated(module, pin_root, spec, pins, found_conflicts))
        elif state == "committed":
            result.update(S.run_committed(module, pin_root, pins))
        else:
            result.update(S.run_rolled_back(module, pin_root, pins))
    else:
        pins = audit(pin_root, expectations, names)
        if state == "clean":
            result.update(_clean(module, pin_root, pins, found_conflicts))
            if module._diff:
                drop = set(a["pin"] for a in result["actions"]) if result["changed"] else set()
                result["diff"] = {"before": listing(pins), "after": listing(pins, drop),
                                  "before_header": pin_root, "after_header": pin_root}
        else:
            counts = summarise(pins)
            result["msg"] = "%d pin(s) under %s: %s" % (
                counts["total"], pin_root, ", ".join("%d %s" % (counts[s], s) for s in STATUSES if counts.get(s)))
    result["pins"] = pins
    result["summary"] = summarise(pins)
    result["pin_root"] = pin_root
    return result
