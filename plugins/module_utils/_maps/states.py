# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The ``pinned_maps`` states of a two-phase replacement, as module results:
``migrated`` (move aside, create, migrate entries by BTF), ``committed`` (back
up and unpin the moved-aside maps) and ``rolled_back`` (put them back). The
kernel work is in ``_maps/replace.py``, the planning in ``_maps/migrate.py``;
this file adds the approval gate, check and diff mode, and messages."""

from __future__ import annotations

from .._changes import as_error, failure, probe_writable
from .._common import LqosError, check_bpf_object, why_not_live
from . import migrate as G
from . import replace as R
from . import commit as C
from .backup import prepare_backup_dir, write_backup

try:
    from .._kernel import libbpf as L
    from .._kernel import maps as M
except ImportError:  # pragma: no cover
    L = M = None


def _public(action: dict, backup_dir: str) -> dict:
    out = {k: v for k, v in action.items() if k not in ("plan", "old")}
    out["migration"] = G.public_plan(action["plan"])
    out["reason"] = describe(action)
    plan = action["plan"]
    if action["live_id"] is not None:
        out["change"] = ("re-pin live map %s (id %d) at %s, the map the attached programs use; the incompatible "
                         "map pinned there (id %d) stays pinned aside until the health check passes, then is "
                         "backed up to %s" % (action["name"], action["live_id"], action["pin"], action["old_id"],
                                              backup_dir))
        return out
    if action.get("empty") or action["old"]["type"] not in G.MIGRATABLE:
        why = "; ".join(plan["refused"]) or "%s maps are not copied" % action["old"]["type"]
        how = "the new map starts empty (%s)" % why
    else:
        how = "migrating its %s entries" % ("?" if plan["entries"] is None else plan["entries"])
    out["change"] = ("%s map pin %s, %s; the old map stays pinned aside until the health check passes, then is "
                     "backed up to %s" % ("replace incompatible" if action["action"] == "replace" else
                                          "finish the replacement of", action["pin"], how, backup_dir))
    return out


def describe(action: dict) -> str:
    """One line per action for messages and diff mode."""
    if action["live_id"] is not None:
        return ("%s: keep the live map id %d the attached programs use (re-pinned); the stale pin id %d (%s) "
                "is not copied" % (action["name"], action["live_id"], action["old_id"], action["plan"]["from"]))
    return G.describe(action["plan"])


def run_migrated(module, pin_root: str, spec: dict | None, pins: list, found_conflicts: list) -> dict:
    params = module.params
    obj = params.get("object")
    if not obj:
        raise LqosError("state: migrated needs object (the new build's .o): it says which layout the maps move to.",
                        "give object: {{ build.outputs.object.path }}.")
    check_bpf_object(obj)
    resize = {c["map"]: L.possible_cpus() for c in (spec or {}).get("cpu_sized_maps", [])}
    sides = R.object_sides(obj, pin_root, resize)
    journal = R.read_journal(params["state_dir"], pin_root)
    actions = R.plan_replacements(pin_root, pins, sides, journal, params.get("defaults") or {},
                                  params["allow_narrowing"])
    torn = [c for c in found_conflicts if c["map"] in {a["name"] for a in actions}]
    if torn:
        raise LqosError("the spec and the object disagree about %s; refusing to replace pins while the expectations "
                        "contradict each other." % ", ".join(sorted({c["map"] for c in torn})),
                        "fix the spec's pinned_maps (or rebuild the object) so both agree, then run again.")
    refused = R.refusals(actions)
    if refused and params["unmigratable"] == "start_empty":
        for a in actions:
            if a["plan"]["refused"] and a["live_id"] is None:
                a["empty"] = True
                module.warn("map %s: its entries cannot move to the new layout (%s); the new map starts empty and "
                            "the old one is backed up at commit" % (a["name"], "; ".join(a["plan"]["refused"])))
        refused = []
    public = [_public(a, params["backup_dir"]) for a in actions]
    result = {"actions": public, "changed": bool(actions), "migrated": []}
    if module._diff:
        result["diff"] = {"before": "".join("%s: %s\n" % (a["name"], a["old"]["source"]) for a in actions),
                          "after": "".join(describe(a) + "\n" for a in actions),
                          "before_header": pin_root, "after_header": pin_root}
    if refused:
        raise LqosError("the entries of %d map(s) cannot move to the new layout, so nothing was changed: %s."
                        % (len(refused), " | ".join(refused)),
                        "give defaults or allow_narrowing where the plan says so, grow the new map, or let those "
                        "maps start empty (unmigratable: start_empty; the old ones are backed up at commit).",
                        actions=public)
    if not actions:
        result["msg"] = "no incompatible pin and no unfinished replacement under %s; nothing to migrate" % pin_root
        return result
    why = why_not_live(module)
    if why:
        result["msg"] = "%d map(s) would be replaced, keeping their entries: %s; nothing was changed (%s)." % (
            len(actions), "; ".join(describe(a) for a in actions), why)
        return result
    # The journal must be writable before any pin moves: a full or read-only state_dir stops here, nothing changed.
    probe_writable(params["state_dir"], 4096 + 256 * len(actions), "the replacement journal")
    counters = {m["name"] for m in (spec or {}).get("pinned_maps", []) if m.get("counter")}
    try:
        done = R.apply_replacements(pin_root, actions, obj, resize, params["state_dir"], params["allow_narrowing"],
                                    counters=counters, backup_dir=params.get("backup_dir"))
    except (LqosError, OSError) as exc:
        raise _half_done(as_error(exc, "replacing the map pins under %s" % pin_root), pin_root, actions,
                         params["state_dir"])
    result["migrated"] = done
    result["msg"] = ("replaced %d map(s) keeping their entries (old maps moved aside under %s/%s until "
                     "state: committed): %s" % (len(done), pin_root, R.ASIDE_DIR, ", ".join(_done_text(d) for d in done)))
    return result


def _pinned_map_id(path: str):
    try:
        return M.map_info_by_path(path)["id"]
    except L.LibbpfError:
        return None


def _half_done(err: LqosError, pin_root: str, actions: list, state_dir: str) -> LqosError:
    """A replacement that failed part-way: the error says which pins this run moved aside and which new maps
    it pinned (changed: true), how to finish (run migrated again: it completes the replacement) and how to undo
    (state: rolled_back). A replacement resumes from its pins, so nothing is rolled back automatically."""
    left = []
    undo = "lqos.bpf.pinned_maps state: rolled_back approve: true (pin_root %s, state_dir %s)" % (pin_root, state_dir)
    for a in actions:
        new_id = _pinned_map_id(a["pin"])
        moved = a["action"] == "replace" and _pinned_map_id(a["aside"]) == a["old_id"]
        tmp_id = _pinned_map_id(a["tmp"]) if a.get("tmp") else None
        if not moved and tmp_id is None and new_id in (None, a["old_id"], a.get("new_id")):
            continue
        # The old map is pinned a second time aside before the new one takes its name (never missing).
        parts = ["map %s pinned aside at %s" % (a["name"], a["aside"])] if moved else []
        if tmp_id is not None:
            parts.append("a new map (id %d) pinned at the temporary %s" % (tmp_id, a["tmp"]))
        if new_id is not None and new_id not in (a["old_id"], a.get("new_id")):   # new_id: pinned by an earlier run
            which = "the live" if a["live_id"] == new_id else "a new"
            parts.append("%s map (id %d) pinned at %s" % (which, new_id, a["pin"]))
        left.append({"change": " and ".join(parts), "undo": undo})
    return failure(err, [], left, "fix the cause, then run state: migrated again (it finishes the replacement "
                                  "from the pins)")


def _done_text(d: dict) -> str:
    """One replaced map in the result's message."""
    if d.get("repinned"):
        return "%s re-pinned (live map id %d)" % (d["name"], d["new_id"])
    if d.get("started_empty"):
        if d["entries_total"] is None:
            return "%s started empty (its contents never move; the old map is kept aside at %s)" % (
                d["name"], d["aside"])
        return "%s started empty (its %d entr%s could not move to the new layout and are kept in the old map " \
               "aside at %s; state: committed backs them up, state: rolled_back puts the map back)" % (
                   d["name"], d["entries_total"], "y" if d["entries_total"] == 1 else "ies", d["aside"])
    if d.get("caught_up") is not None:   # a rerun that found the new map published: it only caught up
        return "%s finished (%d write(s) of the window carried over)" % (d["name"], d["entries_written"])
    return "%s %s/%s entries" % (d["name"], d["entries_written"], d["entries_total"])


def run_committed(module, pin_root: str, pins: list) -> dict:
    params = module.params
    write = why_not_live(module) is None
    if write and R.pending(pins):
        prepare_backup_dir(params["backup_dir"])
    done = C.commit(pin_root, pins, params["backup_dir"], params["state_dir"], write_backup, write)
    result = {"actions": done, "changed": bool(done), "removed": [d["aside"] for d in done] if write else [],
              "backups": [d["backup"] for d in done if d.get("backup")]}
    for d in done:
        if d.get("note"):
            module.warn("moved-aside map %s was unpinned without a backup (%s)" % (d["aside"], d["note"]))
    if not done:
        result["msg"] = "no moved-aside map under %s; nothing to commit" % pin_root
    elif write:
        result["msg"] = "committed %d replacement(s): old maps backed up to %s and unpinned: %s" % (
            len(done), params["backup_dir"], ", ".join(d["name"] for d in done))
    else:
        result["msg"] = "%d moved-aside map(s) would be backed up and unpinned: %s; nothing was changed (%s)." % (
            len(done), ", ".join(d["name"] for d in done), why_not_live(module))
    return result


def run_rolled_back(module, pin_root: str, pins: list) -> dict:
    write = why_not_live(module) is None
    done = C.rollback(pin_root, pins, module.params["state_dir"], write)
    result = {"actions": done, "changed": bool(done), "rolled_back": [d["name"] for d in done] if write else []}
    if not done:
        result["msg"] = "no moved-aside map under %s; nothing to roll back" % pin_root
    elif write:
        result["msg"] = "put %d old map(s) back at their names (the new maps there were unpinned): %s" % (
            len(done), ", ".join(d["name"] for d in done))
    else:
        result["msg"] = "%d old map(s) would be put back at their names: %s; nothing was changed (%s)." % (
            len(done), ", ".join(d["name"] for d in done), why_not_live(module))
    return result
