# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Two-phase replacement of incompatible map pins (kernel side of ``pinned_maps``
states ``migrated``, ``committed`` and ``rolled_back``). A map's name is never
missing while it runs:

1. ``migrated``: the new object is loaded with every program left out, so
   libbpf creates each new map pinned at ``<pin_root>/lqos_bpf_aside/lqos_bpf_new/NAME``;
   every entry of the old map is read (``BPF_MAP_LOOKUP_BATCH``), converted to
   the new layout by BTF (``_maps.migrate``), written (``BPF_MAP_UPDATE_BATCH``)
   and read back, and a snapshot of what was copied is kept (``_maps.window``).
   The old map is then pinned a second time at ``lqos_bpf_aside/NAME`` and the
   new pin renamed over ``NAME`` (``rename(2)``: bpffs replaces the name in one
   step). The old programs keep running on the old map; ``lqos.bpf.attach``
   swaps the programs atomically afterwards and runs a catch-up pass.
2. ``committed`` (after the health check): a last catch-up carries what changed
   in the old map since the copy, then each moved-aside map is backed up to a
   file (with the BTF shapes of its key and value) and unpinned.
3. ``rolled_back`` (on failure): each moved-aside pin is renamed back over
   ``NAME``, so re-attaching the previous build reuses the live old maps.

A stale pin can also sit over a map the attached programs still use: the pin
was replaced by hand or by another loader while this collection's programs
(pinned under ``<pin_root>/lqos_bpf/``) kept the original map by fd. Then the
live map already has the new layout and holds the programs' data: ``migrated``
pins the live map at the temporary name and publishes it the same way instead
of creating an empty one ("adopt"); the stale map's entries are not copied, and
commit backs it up.

The pins themselves are the journal: a pin under ``lqos_bpf_aside/`` means a
replacement is under way, whatever happened to the process; a small record per
pin_root in ``state_dir`` (``/run``) says which new map was completely filled
from which old one. ``LQOS_BPF_TEST_KILL_AT=<step>`` makes the process kill
itself with SIGKILL right after that step (tests).
"""

from __future__ import annotations

import os
import signal
import time

from .._common import LqosError, MAP_ASIDE_DIR, MAP_STATE_DIR
from . import migrate as G
from . import window as W
from .._ownership.owners import is_collection_pin
from .window import read_journal, write_journal  # noqa: F401

try:
    from .._kernel import libbpf as L
    from .._kernel import btf as B
    from .._kernel import maps as M
    from .._kernel import objects as O  # noqa: E741
    from .._kernel import batch as BB
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None

ASIDE_DIR = MAP_ASIDE_DIR
DEFAULT_STATE_DIR = MAP_STATE_DIR
KILL_ENV = "LQOS_BPF_TEST_KILL_AT"
TMP_DIR = ASIDE_DIR + "/lqos_bpf_new"  # (bpffs refuses dots in names)  # new maps pinned here while they are filled, then renamed over their names


def step(name: str) -> None:
    """Test hook: SIGKILL this process right after step ``name`` when LQOS_BPF_TEST_KILL_AT names it."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def aside_name(name: str) -> str:
    return ASIDE_DIR + "/" + name


def tmp_name(name: str) -> str:
    return TMP_DIR + "/" + name


def is_aside(name: str) -> bool:
    """A pin under lqos_bpf_aside/: a moved-aside map, or a new map not yet renamed over its name."""
    return name == ASIDE_DIR or name.startswith(ASIDE_DIR + "/")


def pending(pins: list) -> list:
    """The audited pins that are moved-aside maps: [(original name, aside pin)] (temporary pins left out)."""
    maps = [p for p in pins if p["kind"] == "map" and is_aside(p["name"])]
    return [(p["name"][len(ASIDE_DIR) + 1:], p) for p in maps if not p["name"].startswith(TMP_DIR + "/")]


# --------------------------------------------------------------------------
# Both sides of a map
# --------------------------------------------------------------------------

def kernel_side(path: str) -> dict:
    """{type, key_size, value_size, max_entries, key_shape, value_shape, id, source} of a pinned map;
    shapes from the kernel BTF the map was created with (None without BTF)."""
    info = M.map_info_by_path(path)
    side = {"type": info["type_name"], "key_size": info["key_size"], "value_size": info["value_size"],
            "max_entries": info["max_entries"], "key_shape": None, "value_shape": None, "id": info["id"],
            "source": "kernel map id %d" % info["id"]}
    if info["btf_id"]:
        with B.Btf.from_kernel_id(info["btf_id"]) as btf:
            if info["btf_key_type_id"]:
                side["key_shape"] = btf.shape(info["btf_key_type_id"])
            if info["btf_value_type_id"]:
                side["value_shape"] = btf.shape(info["btf_value_type_id"])
        side["source"] += " (BTF id %d)" % info["btf_id"]
    return side


def object_sides(obj: str, pin_root: str, resize: dict) -> dict:
    """{map name: side} for every map the object pins by name, as it will be created (resizes applied);
    shapes from the object's BTF."""
    info = O.object_info(obj, pin_root)
    out = {}
    with B.Btf.from_file(obj) as btf:
        for m in info["maps"]:
            if not m["pinning"]:
                continue
            try:
                kt, vt = btf.map_types(m["name"])
            except L.LibbpfError:
                kt = vt = 0
            out[m["name"]] = {"type": m["type_name"], "key_size": m["key_size"], "value_size": m["value_size"],
                              "max_entries": resize.get(m["name"], m["max_entries"]),
                              "key_shape": btf.shape(kt) if kt else None,
                              "value_shape": btf.shape(vt) if vt else None, "source": obj}
    return out


# --------------------------------------------------------------------------
# migrated
# --------------------------------------------------------------------------

def _matches(info: dict, side: dict) -> bool:
    return all(info[k] == side[k] for k in ("key_size", "value_size", "max_entries")) \
        and info["type_name"] == side["type"]


def live_maps(pins: list, sides: dict) -> dict:
    """{map name: live map id} for each map of the object that this collection's attached programs (the
    program pins under ``<pin_root>/lqos_bpf/``: the ownership model's ``_ownership.owners.is_collection_pin``) use with
    the object's own layout. The kernel keeps 15
    characters of a map name; a name two different live maps match is left out (ambiguous)."""
    found: dict = {}
    for pin in pins:
        if pin["kind"] != "prog" or not is_collection_pin(pin["name"]) or not pin.get("id"):
            continue
        try:
            map_ids = M.prog_info_by_id(pin["id"])["map_ids"]
        except L.LibbpfError:
            continue  # unloaded since the audit
        for map_id in map_ids:
            try:
                info = M.map_info_by_id(map_id)
            except L.LibbpfError:
                continue
            for name, side in sides.items():
                if info["name"] == name[:15] and _matches(info, side):
                    found.setdefault(name, set()).add(map_id)
    return {name: ids.pop() for name, ids in found.items() if len(ids) == 1}


def plan_replacements(pin_root: str, pins: list, sides: dict, journal: dict, defaults: dict,
                      allow_narrowing: bool = False) -> list:
    """One action per incompatible map pin the object makes, and per moved-aside pin whose replacement is not
    published: {action: replace|finish, name, pin, aside, old_id, new_id, live_id, plan}. ``live_id`` is set
    when the attached programs already use a live map of the new layout under that name (it is pinned, not a
    new map created). An incompatible pin pinned a second time at its aside path is a replacement a killed run
    left before the rename: it continues. Raises when a moved-aside pin and a different incompatible pin share
    a name (an earlier replacement was never committed or rolled back)."""
    aside = dict(pending(pins))
    live = live_maps(pins, sides)
    actions = []
    for pin in pins:
        if pin["kind"] != "map" or is_aside(pin["name"]):
            continue
        if pin["status"] == "incompatible" and pin["name"] in sides:
            if pin["name"] in aside and aside[pin["name"]]["id"] != pin.get("id"):
                raise LqosError("map %s has both an incompatible pin and a moved-aside pin %s from an earlier "
                                "replacement; nothing was changed." % (pin["name"], aside[pin["name"]]["path"]),
                                "finish that replacement first: state: committed (keep the new maps) or "
                                "state: rolled_back (go back to the old ones).")
            live_id = live.get(pin["name"]) if live.get(pin["name"]) != pin.get("id") else None
            actions.append(_action("replace", pin_root, pin["name"], pin["path"], sides, defaults,
                                   allow_narrowing=allow_narrowing, live_id=live_id))
    for name, apin in sorted(aside.items()):
        if name not in sides:
            continue
        path = os.path.join(pin_root, name)
        new_id = _pinned_id(path)
        if new_id == apin["id"]:
            continue  # the old map pinned twice: the incompatible pin above continues it
        done = journal.get(name)
        if new_id is not None and done and done.get("aside_id") == apin["id"] \
                and new_id in (done.get("new_id"), done.get("tmp_id")):
            continue
        live_id = live.get(name) if new_id in (None, live.get(name)) else None
        actions.append(_action("finish", pin_root, name, apin["path"], sides, defaults, new_id, allow_narrowing,
                               live_id))
    return actions


def _pinned_id(path: str):
    try:
        return M.map_info_by_path(path)["id"]
    except L.LibbpfError:
        return None


def _action(kind: str, pin_root: str, name: str, old_path: str, sides: dict, defaults: dict,
            new_id=None, allow_narrowing: bool = False, live_id=None) -> dict:
    old = kernel_side(old_path)
    try:  # a stale pin over a live map is not copied: its entries are not read
        table = BB.dump(old_path) if old["type"] in G.MIGRATABLE and live_id is None else None
    except L.LibbpfError:
        table = None
    plan = G.plan_map(name, old, sides[name], None if table is None else table.n, (defaults or {}).get(name))
    if live_id is not None:
        plan["refused"] = []  # nothing moves out of the stale map: the live map is the programs' own
    elif table and table.n and not plan["refused"]:
        try:  # every entry converted once now, so a value that cannot move refuses the plan itself
            G.convert_table(plan, old, sides[name], table.keys, table.values, table.n, L.possible_cpus(),
                            allow_narrowing=allow_narrowing)
        except G.MigrationError as exc:
            plan["refused"].append(exc.msg.split(": ", 1)[1].split("; nothing was changed")[0])
    return {"action": kind, "name": name, "pin": os.path.join(pin_root, name),
            "aside": os.path.join(pin_root, aside_name(name)), "tmp": os.path.join(pin_root, tmp_name(name)),
            "old_id": old["id"], "new_id": new_id, "live_id": live_id, "plan": plan, "old": old}


def refusals(actions: list) -> list:
    return ["%s: %s" % (a["name"], "; ".join(a["plan"]["refused"])) for a in actions
            if a["plan"]["refused"] and a["old"]["type"] in G.MIGRATABLE and a["live_id"] is None]


def apply_replacements(pin_root: str, actions: list, obj: str, resize: dict, state_dir: str,
                       allow_narrowing: bool, counters=(), backup_dir: str | None = None) -> list:
    """Publish each new map without its name ever going missing: create it pinned at
    ``lqos_bpf_aside/lqos_bpf_new/NAME`` (the object loaded with no program), fill and verify it there, keep the
    snapshot, pin the old map a second time at ``lqos_bpf_aside/NAME``, then rename(2) the new pin over NAME
    (bpffs replaces the old name in one step). ``counters``: names of maps whose fields add up. Returns
    [{name, entries_written, entries_total, new_id, copied_at, published_at}] (times: seconds since the
    epoch), plus ``started_empty`` and ``aside`` for a map that starts empty (its ``entries_total``: the entries
    kept in the old map aside; None for a type whose contents never move, such as a ring buffer) and
    ``repinned`` for a live map pinned again."""
    W.remove_leftovers(state_dir, backup_dir)
    journal = read_journal(state_dir, pin_root)
    for a in actions:
        cur = _pinned_id(a["pin"])
        if a["action"] == "replace" and cur != a["old_id"]:
            raise LqosError("pin %s no longer holds the audited map id %d; nothing was moved."
                            % (a["pin"], a["old_id"]), "run the task again to audit the current pins.")
        if a["action"] == "replace" and os.path.lexists(a["aside"]) and _pinned_id(a["aside"]) != a["old_id"]:
            raise LqosError("%s already exists; map %s was not moved aside." % (a["aside"], a["name"]),
                            "commit or roll back the earlier replacement first.")
        a["old_path"] = a["pin"] if cur == a["old_id"] else a["aside"]
        a["sync_only"] = a["action"] == "finish" and cur is not None   # a new map is there already
        j = journal.get(a["name"]) or {}
        tid = _pinned_id(a["tmp"])
        if tid is not None and (a["sync_only"] or (j.get("tmp_id"), j.get("old_id")) != (tid, a["old_id"])):
            os.unlink(a["tmp"])   # a killed run's new map, not completely filled: start it again
            tid = None
        a["filled"] = tid is not None
    os.makedirs(os.path.join(pin_root, TMP_DIR), exist_ok=True)
    for a in actions:
        if a["live_id"] is not None and not a["sync_only"] and not a["filled"]:
            _pin_live(a)
            step("repinned:" + a["name"])
    if any(not a["sync_only"] and not a["filled"] and a["live_id"] is None for a in actions):
        # every replaced map at its temporary pin: libbpf creates the missing ones and reuses the others
        _create_maps(obj, pin_root, resize, {a["name"]: a["tmp"] for a in actions if not a["sync_only"]})
        step("loaded")
    ncpus = L.possible_cpus()
    done = []
    for a in actions:
        name = a["name"]
        counter = name in counters
        if a["sync_only"]:
            from .commit import catch_up
            out = catch_up(pin_root, name, state_dir, counter, allow_narrowing)
            journal[name] = {"aside_id": a["old_id"], "new_id": a["new_id"], "counter": counter}
            write_journal(state_dir, pin_root, journal)
            done.append({"name": name, "entries_total": None, "entries_written": out["carried"],
                         "new_id": a["new_id"], "caught_up": out})
            continue
        row = {"name": name, "entries_total": None, "entries_written": 0, "copied_at": time.time()}
        tmp_id = _pinned_id(a["tmp"])
        if not a["filled"]:
            if a["live_id"] is None and a["old"]["type"] in G.MIGRATABLE and not a.get("empty"):
                row["entries_total"], row["entries_written"], row["timings"] = _fill(
                    a, kernel_side(a["tmp"]), state_dir, pin_root, counter, ncpus, allow_narrowing)
            elif a["live_id"] is None:
                # Started empty: the old map keeps its entries aside (counted, so the result says what is kept).
                row["entries_total"] = (len(M.map_entries(a["old_path"])) if a["old"]["type"] in G.MIGRATABLE
                                        else None)
                row.update(started_empty=True, aside=a["aside"])
            journal[name] = {"old_id": a["old_id"], "tmp_id": tmp_id, "aside_id": a["old_id"], "counter": counter,
                             "repinned": a["live_id"] is not None}
            write_journal(state_dir, pin_root, journal)
            step("filled:" + name)
        if not os.path.lexists(a["aside"]):
            os.makedirs(os.path.dirname(a["aside"]), exist_ok=True)
            fd = L._obj_get(a["old_path"])
            try:
                L.obj_pin(fd, a["aside"])
            finally:
                os.close(fd)
            step("aside:" + name)
        try:
            os.rename(a["tmp"], a["pin"])     # bpffs: the name holds the old map, then the new one, never nothing
        except OSError as exc:
            raise LqosError("publishing the new map %s (rename %s over %s) failed: %s. The old map is still "
                            "pinned at %s and at %s."
                            % (name, a["tmp"], a["pin"], exc.strerror, a["old_path"], a["aside"]),
                            "check that pin_root is a writable bpffs, then run again (it continues) or roll back "
                            "with state: rolled_back.")
        row["published_at"] = time.time()
        step("renamed:" + name)
        journal[name] = dict(journal.get(name) or {}, aside_id=a["old_id"], new_id=tmp_id)
        write_journal(state_dir, pin_root, journal)
        row["new_id"] = tmp_id
        if a["live_id"] is not None:
            row["repinned"] = True
        done.append(row)
    try:
        os.rmdir(os.path.join(pin_root, TMP_DIR))
    except OSError:
        pass
    return done


def _pin_live(a: dict) -> None:
    """Pin the live map the attached programs use at the temporary name (renamed over the stale pin next)."""
    try:
        fd = M.map_fd_by_id(a["live_id"])
    except L.LibbpfError as exc:
        raise LqosError("the live map %s (id %d) the attached programs used is gone: %s. The stale pin stays "
                        "at %s." % (a["name"], a["live_id"], exc.msg, a["old_path"]),
                        "run again: with the map gone, a new map is created and the entries migrated.")
    try:
        L.obj_pin(fd, a["tmp"])
    except L.LibbpfError as exc:
        raise LqosError("pinning the live map %s (id %d) at %s failed: %s. The stale pin stays at %s."
                        % (a["name"], a["live_id"], a["tmp"], exc.msg, a["old_path"]),
                        "check that pin_root is a writable bpffs, then run again or roll back with "
                        "state: rolled_back.")
    finally:
        os.close(fd)


def _create_maps(obj: str, pin_root: str, resize: dict, pin_paths: dict) -> None:
    """Load the object with every program left out: libbpf creates the maps of ``pin_paths`` pinned at those
    temporary paths, creates (and pins by name) other maps missing under pin_root, and reuses the rest;
    nothing is attached."""
    programs = [p["name"] for p in O.object_info(obj, pin_root)["programs"]]
    try:
        loaded = O.load_object(obj, pin_root=pin_root, resize=resize, disabled=programs, pin_paths=pin_paths)
    except L.LibbpfError as exc:
        raise LqosError("creating the new maps of %s failed: %s. The old maps stay pinned at their names."
                        % (obj, exc.msg),
                        "fix the cause, then run again (it continues) or roll back with state: rolled_back.")
    loaded.close()


def _fill(a: dict, new: dict, state_dir: str, pin_root: str, counter: bool, ncpus: int,
          allow_narrowing: bool) -> tuple:
    """Copy every entry of the old map into the new one at its temporary pin (batch operations), count them
    back, keep the snapshot. Returns (entries read, entries written, {read, convert, fill, check, snapshot}:
    seconds each). Test hook step ``half:<name>``."""
    clock = [time.perf_counter()]
    took = {}

    def lap(what):
        clock.append(time.perf_counter())
        took[what] = round(clock[-1] - clock[-2], 6)

    old_t = BB.dump(a["old_path"])
    lap("read")
    try:
        nk, nv = G.convert_table(a["plan"], a["old"], new, old_t.keys, old_t.values, old_t.n, ncpus,
                                 allow_narrowing=allow_narrowing)
    except G.MigrationError as exc:
        raise LqosError(exc.msg + " The old map stays pinned at %s." % a["old_path"],
                        "roll back with state: rolled_back, or fix the new layout and run again.")
    lap("convert")
    kb, vb = new["key_size"], len(nv) // old_t.n if old_t.n else 0
    new_t = BB.Table(nk, nv, kb, vb)
    half = new_t.n // 2
    mk, mv = memoryview(nk), memoryview(nv)     # the halves without a copy
    BB.fill(a["tmp"], BB.Table(mk[:half * kb], mv[:half * vb], kb, vb), a["tmp"])
    step("half:" + a["name"])
    BB.fill(a["tmp"], BB.Table(mk[half * kb:], mv[half * vb:], kb, vb), a["tmp"])
    mk.release()
    mv.release()
    lap("fill")
    # Only an LRU map drops entries without an error (it evicts); a full hash or trie refuses the write instead.
    if new["type"].startswith("lru_") and BB.count(a["tmp"]) != new_t.n:
        # Nothing but this run writes the map at its temporary pin, so the kernel dropped them.
        back = BB.dump(a["tmp"])
        have = back.as_dict()
        missing = sum(1 for i in range(new_t.n) if new_t.key(i) not in have)
        raise LqosError("after migrating into the new map %s (pinned at %s until it is complete), %d of %d entries "
                        "are missing: a %s map evicts entries when it is nearly full (max_entries %d)."
                        % (a["name"], a["tmp"], missing or abs(new_t.n - back.n), new_t.n, new["type"],
                           new["max_entries"]),
                        "grow the new map's max_entries, then run again; the old map is still pinned at %s."
                        % a["old_path"])
    lap("check")
    W.keep_snapshot(state_dir, pin_root, a["name"], kb, old_t, new_t, counter)
    lap("snapshot")
    return old_t.n, new_t.n, took
