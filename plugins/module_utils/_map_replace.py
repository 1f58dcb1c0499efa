# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Two-phase replacement of incompatible map pins (kernel side of ``pinned_maps``
states ``migrated``, ``committed`` and ``rolled_back``).

1. ``migrated``: each incompatible pin ``NAME`` is renamed (``rename(2)``,
   atomic within one bpffs) to ``<pin_root>/lqos_bpf_aside/NAME``: the old map
   stays alive and pinned, and the programs that use it keep running. The new
   object is then loaded with every program left out, so libbpf creates and
   pins its maps at the free names; every entry of the moved-aside map is
   converted to the new layout by BTF (``_map_migrate``), all before the first
   write, then written and read back. ``lqos.bpf.attach`` swaps the programs
   atomically afterwards.
2. ``committed`` (after the health check): each moved-aside map is backed up
   to a file (with the BTF shapes of its key and value) and unpinned.
3. ``rolled_back`` (on failure): the new pin at ``NAME`` is unpinned and the
   moved-aside pin renamed back, so re-attaching the previous build reuses the
   live old maps.

A stale pin can also sit over a map the attached programs still use: the pin
was replaced by hand or by another loader while this collection's programs
(pinned under ``<pin_root>/lqos_bpf/``) kept the original map by fd. Then the
live map already has the new layout and holds the programs' data: ``migrated``
moves the stale pin aside as above and pins the live map at ``NAME`` instead
of creating an empty one ("adopt"); the stale map's entries are not copied
(they are the ones the programs never saw), and commit backs it up.

The pins themselves are the journal: a pin under ``lqos_bpf_aside/`` means a
replacement is under way, whatever happened to the process. One small record
per pin_root in ``state_dir`` (``/run``, gone at reboot like the pins) says
which new map was completely filled from which old one, so a rerun never
overwrites entries the new programs wrote. ``LQOS_BPF_TEST_KILL_AT=<step>``
makes the process kill itself with SIGKILL right after that step (tests).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError, MAP_ASIDE_DIR, MAP_STATE_DIR, atomic_write
from ansible_collections.lqos.bpf.plugins.module_utils import _map_migrate as G

try:
    from ansible_collections.lqos.bpf.plugins.module_utils import _libbpf as L
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_btf as B
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps as M
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_object as O  # noqa: E741
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None

ASIDE_DIR = MAP_ASIDE_DIR
PROG_PIN_DIR = "lqos_bpf"  # where lqos.bpf.attach pins the programs it attached (_attach_plan.PIN_SUBDIR)
DEFAULT_STATE_DIR = MAP_STATE_DIR
KILL_ENV = "LQOS_BPF_TEST_KILL_AT"


def step(name: str) -> None:
    """Test hook: SIGKILL this process right after step ``name`` when LQOS_BPF_TEST_KILL_AT names it."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def aside_name(name: str) -> str:
    return ASIDE_DIR + "/" + name


def is_aside(name: str) -> bool:
    return name == ASIDE_DIR or name.startswith(ASIDE_DIR + "/")


def pending(pins: list) -> list:
    """The audited pins that are moved-aside maps: [(original name, aside pin)]."""
    return [(p["name"][len(ASIDE_DIR) + 1:], p) for p in pins if p["kind"] == "map" and is_aside(p["name"])]


# --------------------------------------------------------------------------
# Journal: which new map was filled from which old one
# --------------------------------------------------------------------------

def _journal_path(state_dir: str, pin_root: str) -> str:
    return os.path.join(state_dir, "replace-%s.json" % hashlib.sha256(pin_root.encode()).hexdigest()[:16])


def read_journal(state_dir: str, pin_root: str) -> dict:
    try:
        with open(_journal_path(state_dir, pin_root)) as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def write_journal(state_dir: str, pin_root: str, doc: dict) -> None:
    """Record ``doc``; an empty one removes the record (nothing under way leaves no file behind)."""
    if not doc:
        try:
            os.unlink(_journal_path(state_dir, pin_root))
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            pass  # state_dir is a file: reported by the next write that needs it
        return
    if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
        raise LqosError("state_dir %s is a file, not a folder; nothing was changed." % state_dir,
                        "give a folder (default %s)." % DEFAULT_STATE_DIR)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    atomic_write(_journal_path(state_dir, pin_root), json.dumps(doc, sort_keys=True), mode=0o600)


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
    program pins under ``<pin_root>/lqos_bpf/``) use with the object's own layout. The kernel keeps 15
    characters of a map name; a name two different live maps match is left out (ambiguous)."""
    found: dict = {}
    for pin in pins:
        if pin["kind"] != "prog" or not pin["name"].startswith(PROG_PIN_DIR + "/") or not pin.get("id"):
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
    """One action per incompatible map pin the object makes, and per moved-aside pin not yet filled:
    {action: replace|finish, name, pin, aside, old_id, new_id, live_id, plan}. ``live_id`` is set when the
    attached programs already use a live map of the new layout under that name (it is pinned, not a new
    map created). Raises when a moved-aside pin and an incompatible pin share a name (an earlier
    replacement was never committed or rolled back)."""
    aside = dict(pending(pins))
    live = live_maps(pins, sides)
    actions = []
    for pin in pins:
        if pin["kind"] != "map" or is_aside(pin["name"]):
            continue
        if pin["status"] == "incompatible" and pin["name"] in sides:
            if pin["name"] in aside:
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
        done = journal.get(name)
        if new_id is not None and done and (done.get("aside_id"), done.get("new_id")) == (apin["id"], new_id):
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
        rows = M.map_entries(old_path) if old["type"] in G.MIGRATABLE and live_id is None else None
    except L.LibbpfError:
        rows = None
    plan = G.plan_map(name, old, sides[name], None if rows is None else len(rows), (defaults or {}).get(name))
    if live_id is not None:
        plan["refused"] = []  # nothing moves out of the stale map: the live map is the programs' own
    elif rows and not plan["refused"]:
        try:  # every entry converted once now, so a value that cannot move refuses the plan itself
            G.convert_entries(plan, old, sides[name], rows, L.possible_cpus(), allow_narrowing=allow_narrowing)
        except G.MigrationError as exc:
            plan["refused"].append(exc.msg.split(": ", 1)[1].split("; nothing was changed")[0])
    return {"action": kind, "name": name, "pin": os.path.join(pin_root, name),
            "aside": os.path.join(pin_root, aside_name(name)), "old_id": old["id"], "new_id": new_id,
            "live_id": live_id, "plan": plan, "old": old}


def refusals(actions: list) -> list:
    return ["%s: %s" % (a["name"], "; ".join(a["plan"]["refused"])) for a in actions
            if a["plan"]["refused"] and a["old"]["type"] in G.MIGRATABLE and a["live_id"] is None]


def apply_replacements(pin_root: str, actions: list, obj: str, resize: dict, state_dir: str,
                       allow_narrowing: bool) -> list:
    """Move aside, create the new maps (object loaded with no program), fill and verify. Returns
    [{name, entries_written, entries_total, new_id}], plus ``started_empty`` and ``aside`` for a map that starts
    empty (its ``entries_total``: the entries kept in the old map aside; None for a type whose contents never
    move, such as a ring buffer) and ``repinned`` for a live map pinned again."""
    journal = read_journal(state_dir, pin_root)
    for a in actions:
        if a["action"] != "replace":
            continue
        if _pinned_id(a["pin"]) != a["old_id"]:
            raise LqosError("pin %s no longer holds the audited map id %d; nothing was moved."
                            % (a["pin"], a["old_id"]),
                            "run the task again to audit the current pins.")
        os.makedirs(os.path.dirname(a["aside"]), exist_ok=True)
        if os.path.lexists(a["aside"]):
            raise LqosError("%s already exists; map %s was not moved aside." % (a["aside"], a["name"]),
                            "commit or roll back the earlier replacement first.")
        try:
            os.rename(a["pin"], a["aside"])
        except OSError as exc:
            raise LqosError("moving pin %s aside to %s failed: %s." % (a["pin"], a["aside"], exc.strerror),
                            "check that pin_root is a writable bpffs (root, CAP_SYS_ADMIN).")
        journal.pop(a["name"], None)
        step("aside:" + a["name"])
    for a in actions:
        if a["live_id"] is not None and _pinned_id(a["pin"]) != a["live_id"]:
            _pin_live(a)
            step("repinned:" + a["name"])
    if any(_pinned_id(a["pin"]) is None for a in actions):
        _create_maps(obj, pin_root, resize)
        step("loaded")
    done = []
    for a in actions:
        old, new_path = a["old"], a["pin"]
        new = kernel_side(new_path)
        if a["live_id"] is not None:
            journal[a["name"]] = {"aside_id": a["old_id"], "new_id": new["id"], "repinned": True}
            write_journal(state_dir, pin_root, journal)
            done.append({"name": a["name"], "entries_total": None, "entries_written": 0, "new_id": new["id"],
                         "repinned": True})
            continue
        if a["old"]["type"] not in G.MIGRATABLE or a.get("empty"):
            journal[a["name"]] = {"aside_id": a["old_id"], "new_id": new["id"]}
            write_journal(state_dir, pin_root, journal)
            # Started empty: the old map keeps its entries aside (counted, so the result says what is kept).
            kept = len(M.map_entries(a["aside"])) if a["old"]["type"] in G.MIGRATABLE else None
            done.append({"name": a["name"], "entries_total": kept, "entries_written": 0, "new_id": new["id"],
                         "started_empty": True, "aside": a["aside"]})
            continue
        entries = M.map_entries(a["aside"])
        try:
            converted = G.convert_entries(a["plan"], old, new, entries, L.possible_cpus(),
                                          allow_narrowing=allow_narrowing)
        except G.MigrationError as exc:
            raise LqosError(exc.msg + " The old map stays moved aside at %s." % a["aside"],
                            "roll back with state: rolled_back, or fix the new layout and run again.")
        written = _fill(new_path, converted, a["name"])
        journal[a["name"]] = {"aside_id": a["old_id"], "new_id": new["id"]}
        write_journal(state_dir, pin_root, journal)
        done.append({"name": a["name"], "entries_total": len(entries), "entries_written": written,
                     "new_id": new["id"]})
        step("filled:" + a["name"])
    return done


def _pin_live(a: dict) -> None:
    """Pin the live map the attached programs use at the name the stale pin left."""
    try:
        fd = M.map_fd_by_id(a["live_id"])
    except L.LibbpfError as exc:
        raise LqosError("the live map %s (id %d) the attached programs used is gone: %s. The stale pin stays "
                        "moved aside at %s." % (a["name"], a["live_id"], exc.msg, a["aside"]),
                        "run again: with the map gone, a new map is created and the entries migrated.")
    try:
        L.obj_pin(fd, a["pin"])
    except L.LibbpfError as exc:
        raise LqosError("pinning the live map %s (id %d) at %s failed: %s. The stale pin stays moved aside at %s."
                        % (a["name"], a["live_id"], a["pin"], exc.msg, a["aside"]),
                        "check that pin_root is a writable bpffs, then run again or roll back with "
                        "state: rolled_back.")
    finally:
        os.close(fd)


def _create_maps(obj: str, pin_root: str, resize: dict) -> None:
    """Load the object with every program left out: libbpf creates (and pins by name) the maps that are
    missing under pin_root, with the object's BTF, and reuses the others; nothing is attached."""
    programs = [p["name"] for p in O.object_info(obj, pin_root)["programs"]]
    try:
        loaded = O.load_object(obj, pin_root=pin_root, resize=resize, disabled=programs)
    except L.LibbpfError as exc:
        raise LqosError("creating the new maps of %s failed: %s. The old maps stay moved aside under %s."
                        % (obj, exc.msg, os.path.join(pin_root, ASIDE_DIR)),
                        "fix the cause, then run again (it finishes the replacement) or roll back with "
                        "state: rolled_back.")
    loaded.close()


def _fill(path: str, converted: list, name: str = "") -> int:
    """Write converted entries (skipping those already equal), then read every one back.
    Test hook step ``half:<name>``: after half of them."""
    fd = L._obj_get(path)
    try:
        current = dict(M.map_entries(fd))
        written = 0
        ffi, lib = L._ffi_lib()
        M.map_info_by_fd(fd)  # checks it is a map once; the sizes were checked by the conversion
        for key, value in converted:
            if current.get(key) != value:
                ret = lib.bpf_map_update_elem(fd, ffi.from_buffer(key), ffi.from_buffer(value), 0)
                if ret < 0:
                    M.map_update(fd, key, value)  # the same write again, for its error message
                written += 1
                if written == len(converted) // 2:
                    step("half:" + name)
        after = dict(M.map_entries(fd))
    finally:
        os.close(fd)
    wrong = sum(1 for k, v in converted if after.get(k) != v)
    if wrong:
        raise LqosError("after migrating into %s, %d of %d entries are not there as written (an LRU map "
                        "evicting, or a program writing?)." % (path, wrong, len(converted)),
                        "grow the new map's max_entries, then run again; the old map is still moved aside.")
    return written


# --------------------------------------------------------------------------
# committed / rolled_back
# --------------------------------------------------------------------------

def commit(pin_root: str, pins: list, backup_dir: str, state_dir: str, write_backup, write: bool) -> list:
    """Back up each moved-aside map (with its BTF shapes) and unpin it. Refuses while the new pin is absent."""
    out = []
    journal = read_journal(state_dir, pin_root)
    for name, apin in pending(pins):
        new_path = os.path.join(pin_root, name)
        if _pinned_id(new_path) is None:
            raise LqosError("moved-aside map %s has no replacement pinned at %s; nothing was committed."
                            % (apin["path"], new_path),
                            "finish the replacement (state: migrated) or roll it back (state: rolled_back).")
        out.append({"action": "commit", "name": name, "aside": apin["path"], "pin": new_path, "id": apin["id"]})
        if not write:
            continue
        side = kernel_side(apin["path"])
        why = ("a stale pin over the live map the attached programs use, which took its name back; committed"
               if journal.get(name, {}).get("repinned") else "replaced by a new layout; committed")
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
        write_journal(state_dir, pin_root, journal)
    if write:
        _prune_aside_dirs(pin_root)
    return out


def rollback(pin_root: str, pins: list, state_dir: str, write: bool) -> list:
    """Put each moved-aside pin back at its name (unpinning the new map that took it)."""
    out = []
    journal = read_journal(state_dir, pin_root)
    for name, apin in pending(pins):
        path = os.path.join(pin_root, name)
        new_id = _pinned_id(path)
        out.append({"action": "roll_back", "name": name, "aside": apin["path"], "pin": path, "id": apin["id"],
                    "unpins": new_id})
        if not write:
            continue
        if new_id is not None and new_id != apin["id"]:
            os.unlink(path)
            step("unpinned:" + name)
        try:
            os.rename(apin["path"], path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise LqosError("putting %s back at %s failed: %s." % (apin["path"], path, exc.strerror),
                                "check that pin_root is writable; run again to finish the rollback.")
        journal.pop(name, None)
        write_journal(state_dir, pin_root, journal)
    if write:
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
