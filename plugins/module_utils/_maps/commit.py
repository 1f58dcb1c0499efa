# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""After the new maps took their names (``_maps.replace``): the catch-up pass that carries what was written
into the old maps since the copy (rules in ``_maps.window``), ``committed`` (a last catch-up, back up, unpin the
moved-aside maps) and ``rolled_back`` (rename each moved-aside pin back over its name)."""

from __future__ import annotations

import errno
import os

from .._common import LqosError
from . import migrate as G
from . import window as W
from .replace import (
    ASIDE_DIR, TMP_DIR, _pinned_id, aside_name, kernel_side, pending, step,
)
from .window import read_journal, write_journal

try:
    from .._kernel import libbpf as L
    from .._kernel import maps as M
    from .._kernel import batch as BB
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None


def catch_up(pin_root: str, name: str, state_dir: str, counter: bool, allow_narrowing: bool = False) -> dict:
    """Carry what changed in the moved-aside map since the copy into the map now at its name (``_maps.window``
    rules: a newer value in the new map is never replaced, a counter map's increases add up); the snapshot
    is updated. Returns {carried, deleted, kept_newer, added_up}."""
    old_path, new_path = os.path.join(pin_root, aside_name(name)), os.path.join(pin_root, name)
    old, new = kernel_side(old_path), kernel_side(new_path)
    if old["id"] == new["id"] or old["type"] not in G.MIGRATABLE or new["type"] not in G.MIGRATABLE:
        return {"carried": 0, "deleted": 0, "kept_newer": 0, "added_up": 0}
    plan = G.plan_map(name, old, new, None)
    if plan["refused"]:
        return {"carried": 0, "deleted": 0, "kept_newer": 0, "added_up": 0}
    try:
        rows = W.deferred_rows(pin_root, name) or W.load_snapshot(state_dir, pin_root, name)
        rows, stats = W.sync(old_path, new_path, plan, old, new, rows, counter, L.possible_cpus(), allow_narrowing)
    except G.MigrationError as exc:
        raise LqosError(exc.msg + " (written into the old map %s since the copy)" % old_path,
                        "roll back with state: rolled_back, or allow narrowing, then run again.")
    W.save_snapshot(state_dir, pin_root, name, new["key_size"], rows,
                    BB.value_bytes(M.map_info_by_path(old_path)) if counter else 0)
    return stats


def catch_up_all(pin_root: str, state_dir: str) -> dict:
    """catch_up for every replacement the journal records as published: {name: stats}."""
    journal = read_journal(state_dir, pin_root)
    out = {}
    for name, j in sorted(journal.items()):
        if not isinstance(j, dict) or j.get("repinned") or _pinned_id(os.path.join(pin_root, name)) is None \
                or _pinned_id(os.path.join(pin_root, aside_name(name))) != j.get("aside_id"):
            continue
        if _pinned_id(os.path.join(pin_root, name)) == j.get("aside_id"):
            continue   # not renamed yet
        out[name] = catch_up(pin_root, name, state_dir, bool(j.get("counter")))
        step("caught_up:" + name)
    return out


# --------------------------------------------------------------------------
# committed / rolled_back
# --------------------------------------------------------------------------

def commit(pin_root: str, pins: list, backup_dir: str, state_dir: str, write_backup, write: bool) -> list:
    """Carry over the last writes (catch-up), then back up each moved-aside map (with its BTF shapes) and unpin
    it. Refuses while the new pin is absent or not yet renamed over the name."""
    out = []
    journal = read_journal(state_dir, pin_root)
    todo = pending(pins)
    for name, apin in todo:
        new_path = os.path.join(pin_root, name)
        if _pinned_id(new_path) in (None, apin["id"]):
            raise LqosError("moved-aside map %s has no replacement pinned at %s; nothing was committed."
                            % (apin["path"], new_path),
                            "finish the replacement (state: migrated) or roll it back (state: rolled_back).")
    if write:
        W.remove_leftovers(state_dir, backup_dir)
    for name, apin in todo:
        new_path = os.path.join(pin_root, name)
        out.append({"action": "commit", "name": name, "aside": apin["path"], "pin": new_path, "id": apin["id"]})
        if not write:
            continue
        j = journal.get(name, {})
        if not j.get("repinned"):
            out[-1]["caught_up"] = catch_up(pin_root, name, state_dir, bool(j.get("counter")))
            step("caught_up:" + name)
        side = kernel_side(apin["path"])
        why = ("a stale pin over the live map the attached programs use, which took its name back; committed"
               if j.get("repinned") else "replaced by a new layout; committed")
        apin = dict(apin, name=name, pinned_as=new_path, reason=why)
        try:
            backup = write_backup(apin, backup_dir, types={"key": side["key_shape"], "value": side["value_shape"],
                                                           "source": side["source"]})
        except LqosError as exc:
            if side["type"] in G.MIGRATABLE:
                raise
            # A map of kernel objects or without walkable entries (ring buffer, queue, perf events): nothing
            # a file can hold; its loader refills the new map.
            backup = None
            out[-1]["note"] = "not backed up: %s" % exc.msg
        out[-1]["backup"] = backup
        step("backed_up:" + name)
        try:
            os.unlink(apin["path"])
        except FileNotFoundError:
            pass
        journal.pop(name, None)
        W.drop_snapshot(state_dir, pin_root, name)
        write_journal(state_dir, pin_root, journal)
        step("committed:" + name)
    if write:
        _prune_aside_dirs(pin_root)
    return out


def rollback(pin_root: str, pins: list, state_dir: str, write: bool) -> list:
    """Put each moved-aside pin back at its name: rename(2) over the new map's pin, so the name never goes
    missing; a second pin of the old map (a run killed before its rename) and temporary pins are removed."""
    out = []
    journal = read_journal(state_dir, pin_root)
    for name, apin in pending(pins):
        path = os.path.join(pin_root, name)
        new_id = _pinned_id(path)
        out.append({"action": "roll_back", "name": name, "aside": apin["path"], "pin": path, "id": apin["id"],
                    "unpins": new_id if new_id != apin["id"] else None})
        if not write:
            continue
        try:
            if new_id == apin["id"]:
                os.unlink(apin["path"])          # the old map is still at its name: drop its second pin
            else:
                os.rename(apin["path"], path)    # replaces the new map's pin in one step
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise LqosError("putting %s back at %s failed: %s." % (apin["path"], path, exc.strerror),
                                "check that pin_root is writable; run again to finish the rollback.")
        step("unpinned:" + name)
        journal.pop(name, None)
        W.drop_snapshot(state_dir, pin_root, name)
        write_journal(state_dir, pin_root, journal)
    if write:
        for p in pins:
            if p["kind"] == "map" and p["name"].startswith(TMP_DIR + "/") and os.path.lexists(p["path"]):
                os.unlink(p["path"])
        W.remove_leftovers(state_dir)
        # a replacement killed before its second pin left only a record (and a temporary pin, removed above)
        left = {n: j for n, j in journal.items() if os.path.lexists(os.path.join(pin_root, aside_name(n)))}
        if left != journal or not left:
            for n in set(journal) - set(left):
                W.drop_snapshot(state_dir, pin_root, n)
            write_journal(state_dir, pin_root, left)
        _prune_aside_dirs(pin_root)
    return out


def _prune_aside_dirs(pin_root: str) -> None:
    root = os.path.join(pin_root, ASIDE_DIR)
    for cur, dirs, files in os.walk(root, topdown=False):
        if not files:
            try:
                os.rmdir(cur)
            except OSError:
                pass
