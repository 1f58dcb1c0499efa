# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The ``pinned_maps`` states of a two-phase replacement, as module results:
``migrated`` (move aside, create, migrate entries by BTF), ``committed`` (back
up and unpin the moved-aside maps) and ``rolled_back`` (put them back). The
kernel work is in ``_map_replace.py``, the planning in ``_map_migrate.py``;
this file adds the approval gate, check and diff mode, and messages."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError, check_bpf_object, why_not_live
from ansible_collections.lqos.bpf.plugins.module_utils import _map_migrate as G
from ansible_collections.lqos.bpf.plugins.module_utils import _map_replace as R
from ansible_collections.lqos.bpf.plugins.module_utils import _map_commit as C
from ansible_collections.lqos.bpf.plugins.module_utils._map_backup import prepare_backup_dir, write_backup

try:
    from ansible_collections.lqos.bpf.plugins.module_utils import _libbpf as L
except ImportError:  # pragma: no cover
    L = None


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
    counters = {m["name"] for m in (spec or {}).get("pinned_maps", []) if m.get("counter")}
    done = R.apply_replacements(pin_root, actions, obj, resize, params["state_dir"], params["allow_narrowing"],
                                counters=counters, backup_dir=params.get("backup_dir"))
    result["migrated"] = done
    result["msg"] = ("replaced %d map(s) keeping their entries (old maps moved aside under %s/%s until "
                     "state: committed): %s" % (len(done), pin_root, R.ASIDE_DIR,
                                                ", ".join(("%s re-pinned (live map id %d)" % (d["name"], d["new_id"]))
                                                          if d.get("repinned") else
                                                          "%s %s/%s entries" % (d["name"], d["entries_written"],
                                                                                d["entries_total"]) for d in done)))
    return result


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
