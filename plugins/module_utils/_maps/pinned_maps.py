# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Pinned maps: audit every pin under a bpffs root against the ABI the new
object (and the spec) expect, remove incompatible map pins only with approval
and only after a verified backup, and restore such a backup.

Pure logic (expectations, comparison, plans) is kept apart from the few
functions that touch the kernel (``audit``), so it can be unit-tested with
plain data. Backup files and restores live in ``_map_backup.py``.
"""

from __future__ import annotations

import errno
import os

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    LqosError,
    MAP_ASIDE_DIR as ASIDE_DIR,
    check_bpf_object,
    errno_name,
    MAP_BACKUP_DIR,
)
from ansible_collections.lqos.bpf.plugins.module_utils._bpffs import normalise_names, refuse_bpffs_folder, require_bpffs

try:
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None

# Only what an audit needs is imported above: the spec, the object, backups, restores and the two-phase states
# are imported by the steps that use them, so the audit (every deploy, every fleet audit) starts without
# compiling them (a module payload carries no bytecode).

# What libbpf compares before it reuses a pin, in report order.
ATTRIBUTES = ("type", "key_size", "value_size", "max_entries", "flags", "map_extra")
STATUSES = ("compatible", "incompatible", "unknown", "missing", "not_a_map", "vanished", "unreadable", "aside")
SOURCE_OBJECT = "object"
SOURCE_SPEC_LIST = "spec.pinned_maps"
SOURCE_SPEC_NAMES = "spec.expect.maps"
MAX_DEPTH = 64


# --------------------------------------------------------------------------
# Expectations (pure)
# --------------------------------------------------------------------------

def _add_check(table: dict, name: str, attribute: str, value, source: str) -> None:
    entry = table.setdefault(name, {"name": name, "checks": [], "sources": []})
    if source not in entry["sources"]:
        entry["sources"].append(source)
    if attribute is not None:
        entry["checks"].append((attribute, value, source))


def expectations_from_spec(spec: dict | None) -> dict:
    """{name: {name, checks: [(attribute, value, source)], sources}} from a validated spec:
    its explicit ``pinned_maps`` list (key/value sizes) and the names in ``expect.maps``."""
    table: dict = {}
    if not spec:
        return table
    for name in spec.get("expect", {}).get("maps", []):
        _add_check(table, name, None, None, SOURCE_SPEC_NAMES)
    for item in spec.get("pinned_maps", []):
        _add_check(table, item["name"], "key_size", item["key_size"], SOURCE_SPEC_LIST)
        _add_check(table, item["name"], "value_size", item["value_size"], SOURCE_SPEC_LIST)
    return table


def expectations_from_object(info: dict, cpu_sized: list | tuple = (), possible_cpus: int | None = None) -> dict:
    """The same table from ``_bpf_object.object_info``: every map the object pins by name.

    Maps named in ``cpu_sized`` are resized to the possible CPUs at load, so their
    expected max_entries is min(object value, possible CPUs).
    """
    table: dict = {}
    for m in info.get("maps", []):
        if not m.get("pinning"):
            continue
        max_entries = m["max_entries"]
        if m["name"] in cpu_sized and possible_cpus:
            max_entries = min(max_entries, possible_cpus)
        for attribute, value in (("type", m["type_name"]), ("key_size", m["key_size"]),
                                 ("value_size", m["value_size"]), ("max_entries", max_entries),
                                 ("flags", m["flags"]), ("map_extra", m.get("map_extra", 0))):
            _add_check(table, m["name"], attribute, value, SOURCE_OBJECT)
    return table


def merge_expectations(*tables) -> dict:
    merged: dict = {}
    for table in tables:
        for name, entry in table.items():
            for source in entry["sources"]:
                _add_check(merged, name, None, None, source)
            merged[name]["checks"].extend(entry["checks"])
    return merged


def expected_view(entry: dict) -> dict:
    """The flat ``expected`` dict of a pin: one value per attribute (the object's
    value wins when sources disagree) plus the sources it came from."""
    view: dict = {}
    for attribute, value, source in entry["checks"]:
        if attribute not in view or source == SOURCE_OBJECT:
            view[attribute] = value
    ordered = {a: view[a] for a in ATTRIBUTES if a in view}
    ordered["sources"] = list(entry["sources"])
    return ordered


def conflicts(expectations: dict) -> list:
    """[{map, attribute, values: {source: value}}] where the sources disagree."""
    out = []
    for name in sorted(expectations):
        by_attr: dict = {}
        for attribute, value, source in expectations[name]["checks"]:
            by_attr.setdefault(attribute, {})[source] = value
        for attribute in ATTRIBUTES:
            values = by_attr.get(attribute, {})
            if len(set(values.values())) > 1:
                out.append({"map": name, "attribute": attribute, "values": values})
    return out


def compare(entry: dict, actual: dict) -> list:
    """[{attribute, expected, actual, sources}] for every expectation the pinned map misses."""
    grouped: dict = {}
    for attribute, value, source in entry["checks"]:
        grouped.setdefault((attribute, value), []).append(source)
    out = []
    for attribute in ATTRIBUTES:
        for (attr, value), sources in grouped.items():
            if attr == attribute and actual.get(attribute) != value:
                out.append({"attribute": attribute, "expected": value, "actual": actual.get(attribute),
                            "sources": sources})
    return out


def describe_differences(differences: list) -> str:
    return "; ".join("%s: expected %s (%s), pinned %s" % (d["attribute"], _fmt(d["attribute"], d["expected"]),
                                                          ", ".join(d["sources"]), _fmt(d["attribute"], d["actual"]))
                     for d in differences)


def _fmt(attribute: str, value) -> str:
    if attribute == "flags" and isinstance(value, int):
        return "0x%x" % value
    return str(value)


# --------------------------------------------------------------------------
# Audit (kernel)
# --------------------------------------------------------------------------

def walk_pins(pin_root: str, keep_dirs=()) -> list:
    """[(name, path, hint)] of every entry under pin_root, depth first and sorted.

    ``hint`` is "symlink", "dir", "file", "unreadable: <why>" (a folder that
    cannot be listed; reported, not fatal) or "badname" (a name that is not
    UTF-8, given with \\x escapes; not descended into); symlinks are never followed.
    Directories are returned only when their name is in ``keep_dirs``.
    Raises LqosError only when pin_root itself cannot be listed.
    """
    out = []
    stack = [("", pin_root, 0)]
    while stack:
        rel_dir, directory, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue  # a directory that vanished mid-walk
        except OSError as exc:
            if not rel_dir:
                raise LqosError("cannot list pin_root %s: %s (%s)." % (pin_root, exc.strerror, errno_name(exc.errno)),
                                "run the task as root (become: true) with CAP_SYS_ADMIN/CAP_BPF.")
            out.append((rel_dir, directory, "unreadable: %s (%s)" % (exc.strerror, errno_name(exc.errno))))
            continue
        subdirs = []
        for entry in entries:
            rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
            if not _is_text(entry.name):
                # Its name cannot travel back to the controller as text: report it escaped, never touch it.
                out.append((_escaped(rel), _escaped(entry.path), "badname"))
                continue
            try:
                if entry.is_symlink():
                    out.append((rel, entry.path, "symlink"))
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
            except FileNotFoundError:
                out.append((rel, entry.path, "file"))  # inspected (and reported vanished) later
                continue
            if is_dir:
                if rel in keep_dirs:
                    out.append((rel, entry.path, "dir"))
                if depth + 1 < MAX_DEPTH:
                    subdirs.append((rel, entry.path, depth + 1))
            else:
                out.append((rel, entry.path, "file"))
        stack.extend(reversed(subdirs))
    return out


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(name: str) -> str:
    """A file name that is not UTF-8, as text with \\x escapes for the bad bytes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _base(name: str, path: str, kind, status: str, reason: str = "") -> dict:
    return {"name": name, "path": path, "kind": kind, "status": status, "reason": reason,
            "expected": None, "differences": [], "used_by": []}


def _unreadable(name: str, path: str, kind, why: str) -> dict:
    return _base(name, path, kind, "unreadable", "%s; run the task as root (become: true, with CAP_DAC_OVERRIDE) "
                 "or fix the permissions of %s" % (why, path))


def _vanished(name: str, path: str) -> dict:
    return _base(name, path, None, "vanished", "the pin disappeared while it was being audited")


def inspect_pin(name: str, path: str, hint: str, pin_root: str, hook=None) -> dict:
    """One entry's facts. Never raises for a pin that vanished or is not a map."""
    if hint == "symlink":
        try:
            target = os.readlink(path)
        except FileNotFoundError:
            return _vanished(name, path)
        except OSError:  # replaced by something else meanwhile
            return inspect_pin(name, path, "file", pin_root)
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        where = "inside" if resolved.startswith(pin_root.rstrip("/") + "/") else "outside"
        pin = _base(name, path, "symlink", "not_a_map",
                    "symlink to %s (%s the pin root); symlinks are never followed or touched" % (target, where))
        pin["target"] = target
        return pin
    if hint == "dir":
        return _base(name, path, "directory", "not_a_map", "a directory, not a pinned object")
    if hint == "badname":
        return _base(name, path, "other", "not_a_map", "its name is not valid UTF-8 (shown with \\x escapes); never "
                     "touched: rename or remove it by hand if it is yours")
    if hint.startswith("unreadable"):
        return _unreadable(name, path, "directory", "cannot list this folder: %s; the pins inside it were not "
                           "audited" % hint.split(": ", 1)[1])
    if hook is not None:
        hook(path)
    try:
        info = M.map_info_by_path(path)
    except L.LibbpfError as exc:
        if exc.errno == errno.ENOENT:
            if not os.path.lexists(path):
                return _vanished(name, path)
            if os.path.islink(path):  # swapped for a symlink after the listing
                return inspect_pin(name, path, "symlink", pin_root)
            return _base(name, path, "other", "not_a_map",
                         "not a pinned BPF object (bpf_obj_get fails), like the kernel's preload "
                         "iterators maps.debug/progs.debug; never touched")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return _unreadable(name, path, None, "cannot open this pin: %s (%s)" % (exc.msg, errno_name(exc.errno)))
        if exc.errno != errno.EINVAL:
            raise
        return _inspect_non_map(name, path)
    pin = _base(name, path, "map", "unknown")
    pin.update(
        id=info["id"], map_name=info["name"], type=info["type_name"], key_size=info["key_size"],
        value_size=info["value_size"], max_entries=info["max_entries"], flags=info["flags"],
        map_extra=info["map_extra"], btf_id=info["btf_id"], key_type=info["key_type_name"],
        value_type=info["value_type_name"],
    )
    return pin


def _inspect_non_map(name: str, path: str) -> dict:
    kind = L.pinned_kind(path)
    if kind is None:
        if not os.path.lexists(path):
            return _vanished(name, path)
        return _base(name, path, "other", "not_a_map", "not a pinned BPF object; never touched")
    pin = _base(name, path, kind, "not_a_map", "a pinned BPF %s, not a map; never touched" % kind)
    if kind == "prog":
        try:
            info = M.prog_info_by_path(path)
        except L.LibbpfError as exc:
            if exc.errno == errno.ENOENT and not os.path.lexists(path):
                return _vanished(name, path)
            raise
        pin.update(id=info["id"], prog_name=info["name"], prog_type=info["type_name"], tag=info["tag"])
    return pin


def classify(pin: dict, expectations: dict) -> dict:
    """Attach ``expected``/``differences``/``status`` to an inspected pin (pure)."""
    if pin["name"].startswith(ASIDE_DIR + "/") and pin["kind"] == "map":
        pin["status"] = "aside"
        if pin["name"].startswith(ASIDE_DIR + "/lqos_bpf_new/"):
            pin["reason"] = ("new map of %s, being filled by a replacement before it is renamed over that name; "
                             "run state: migrated again to finish it, or state: rolled_back"
                             % pin["name"][len(ASIDE_DIR + "/lqos_bpf_new/"):])
            return pin
        pin["reason"] = ("old map of %s, moved aside by a replacement that is not finished: the programs attached "
                         "before it still use it; commit (state: committed) or roll back (state: rolled_back)"
                         % pin["name"][len(ASIDE_DIR) + 1:])
        return pin
    entry = expectations.get(pin["name"])
    if entry is None:
        if pin["kind"] == "map":
            pin["status"] = "unknown"
            pin["reason"] = "not among the expected maps"
        return pin
    pin["expected"] = expected_view(entry)
    if pin["status"] == "unreadable":
        return pin
    if pin["kind"] != "map":
        if pin["status"] == "not_a_map":
            pin["reason"] = ("expected map %s, but %s; libbpf cannot pin the map here, remove or move it "
                             "by hand" % (pin["name"], pin["reason"]))
        return pin
    pin["differences"] = compare(entry, pin)
    if pin["differences"]:
        pin["status"] = "incompatible"
        pin["reason"] = describe_differences(pin["differences"])
    else:
        pin["status"] = "compatible"
        pin["reason"] = ""
    return pin


def through_symlink(pin_root: str, name: str):
    """The first folder on the way from ``pin_root`` to ``name`` that is a symlink, as (path, target); or None.

    A pin behind a symlinked folder is never reached (the walk does not follow symlinks), so it is refused as
    going through a symlink rather than reported missing."""
    probe = pin_root
    for part in name.split("/")[:-1]:
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            try:
                return probe, os.readlink(probe)
            except OSError:
                return probe, "?"
        if not os.path.isdir(probe):
            return None
    return None


def _unseen(pin_root: str, name: str, reason: str) -> dict:
    """A named or expected pin the walk did not find: through a symlinked folder (refused), else missing."""
    path = os.path.join(pin_root, name)
    link = through_symlink(pin_root, name)
    if link is None:
        return _base(name, path, None, "missing", reason)
    pin = _base(name, path, "symlink", "not_a_map",
                "refused: the path goes through the symlink %s (-> %s); symlinks are never followed or touched. "
                "Name the real pin instead" % link)
    pin["target"] = link[1]
    return pin


def missing_pins(pin_root: str, expectations: dict, seen, names=None) -> list:
    out = []
    for name in sorted(expectations):
        if name in seen or (names is not None and name not in names):
            continue
        pin = _unseen(pin_root, name, "expected, but nothing is pinned here")
        pin["expected"] = expected_view(expectations[name])
        out.append(pin)
    return out


def programs_by_map() -> dict:
    """{map id: [{id, name, tag}]} from every loaded program's map_ids."""
    out: dict = {}
    for prog in M.loaded_programs():
        for map_id in prog["map_ids"]:
            out.setdefault(map_id, []).append({"id": prog["id"], "name": prog["name"], "tag": prog["tag"]})
    return out


def audit(pin_root: str, expectations: dict, names=None, hook=None) -> list:
    """Every pin under pin_root (or only ``names``), classified, plus the missing ones.

    ``hook(path)`` runs right before a pin is opened (tests use it to make a pin
    vanish at a known moment).
    """
    wanted = set(names) if names is not None else None
    keep_dirs = set(expectations) if wanted is None else set(expectations) & wanted
    pins = []
    for name, path, hint in walk_pins(pin_root, keep_dirs):
        if wanted is not None and name not in wanted:
            continue
        pins.append(classify(inspect_pin(name, path, hint, pin_root, hook), expectations))
    seen = {p["name"] for p in pins}
    pins.extend(missing_pins(pin_root, expectations, seen, wanted))
    if names is not None:
        for name in names:
            if name not in seen and name not in expectations:
                pins.append(_unseen(pin_root, name, "named in maps, but nothing is pinned here"))
    if any(p["kind"] == "map" and p["status"] != "vanished" for p in pins):
        users = programs_by_map()
        for pin in pins:
            if pin["kind"] == "map":
                pin["used_by"] = users.get(pin["id"], [])
    return pins


def summarise(pins: list) -> dict:
    counts = {status: 0 for status in STATUSES if status != "aside"}  # "aside" only while a replacement runs
    for pin in pins:
        counts[pin["status"]] = counts.get(pin["status"], 0) + 1
    counts["total"] = len(pins)
    return counts


def listing(pins: list, drop=()) -> str:
    """A one-line-per-pin listing for diff mode (missing pins are not listed)."""
    lines = []
    for pin in sorted(pins, key=lambda p: p["name"]):
        if pin["status"] == "missing" or pin["path"] in drop:
            continue
        if pin["kind"] == "map":
            lines.append("%s: %s key_size=%s value_size=%s max_entries=%s flags=0x%x id=%s [%s]"
                         % (pin["name"], pin["type"], pin["key_size"], pin["value_size"], pin["max_entries"],
                            pin["flags"], pin["id"], pin["status"]))
        else:
            lines.append("%s: %s [%s]" % (pin["name"], pin["kind"] or "?", pin["status"]))
    return "".join(line + "\n" for line in lines)


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
        from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O  # noqa: E741
        info = O.object_info(obj, pin_root)
        cpu_sized = [c["map"] for c in spec.get("cpu_sized_maps", [])] if spec else []
        tables.append(expectations_from_object(info, cpu_sized, L.possible_cpus() if cpu_sized else None))
    return merge_expectations(*tables)


def _conflict_text(c: dict) -> str:
    return "map %s %s: %s" % (c["map"], c["attribute"],
                              ", ".join("%s says %s" % (s, v) for s, v in sorted(c["values"].items())))


def _clean(module, pin_root: str, pins: list, found_conflicts: list) -> dict:
    from ansible_collections.lqos.bpf.plugins.module_utils._maps.backup import prepare_backup_dir, remove_pin, write_backup
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
        from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec
        spec = validate_spec(params["spec"])
    names = normalise_names(pin_root, params.get("maps"))
    expectations = build_expectations(module, pin_root, spec)
    found_conflicts = conflicts(expectations)
    for c in found_conflicts:
        module.warn("expectations disagree: %s" % _conflict_text(c))
    state = params["state"]
    result = {"changed": False, "actions": [], "removed": [], "backups": [], "conflicts": found_conflicts}

    if state == "restored":
        from ansible_collections.lqos.bpf.plugins.module_utils._maps.backup import read_backup, restore
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
        from ansible_collections.lqos.bpf.plugins.module_utils._maps import states as S
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
