# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Pinned maps: audit every pin under a bpffs root against the ABI the new
object (and the spec) expect, remove incompatible map pins only with approval
and only after a verified backup, and restore such a backup.

Pure logic (expectations, comparison, plans, backup encoding) is kept apart
from the few functions that touch the kernel (``audit``, ``write_backup``,
``remove_pin``, ``restore``), so it can be unit-tested with plain data.
"""

from __future__ import annotations

import errno
import json
import os
import time

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    LqosError, STATE_ROOT, atomic_write, is_bpffs, require_bpffs, sha256_bytes,
)
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

try:
    from ansible_collections.lqos.bpf.plugins.module_utils import _libbpf as L
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None

DEFAULT_BACKUP_DIR = os.path.join(STATE_ROOT, "map-backups")
BACKUP_FORMAT = "lqos.bpf.map-backup/1"
# What libbpf compares before it reuses a pin, in report order.
ATTRIBUTES = ("type", "key_size", "value_size", "max_entries", "flags", "map_extra")
STATUSES = ("compatible", "incompatible", "unknown", "missing", "not_a_map", "vanished")
SOURCE_OBJECT = "object"
SOURCE_SPEC_LIST = "spec.pinned_maps"
SOURCE_SPEC_NAMES = "spec.expect.maps"
PERCPU_TYPES = frozenset(("percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"))
ARRAY_LIKE_TYPES = frozenset(("array", "percpu_array", "prog_array", "perf_event_array", "cgroup_array",
                              "array_of_maps", "devmap", "cpumap", "xskmap", "reuseport_sockarray", "sockmap"))
MAX_DEPTH = 64
MAP_INFO_KEYS = ("id", "map_name", "type", "key_size", "value_size", "max_entries", "flags", "map_extra", "btf_id",
                 "key_type", "value_type")


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
    """The same table from ``_libbpf.object_info``: every map the object pins by name.

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


def normalise_names(pin_root: str, names, option: str = "maps") -> list | None:
    """The ``maps`` (or ``pin``) option as pin names relative to pin_root; refuses anything that leaves it."""
    if not names:
        return None
    out = []
    root = pin_root.rstrip("/") or "/"
    for name in names:
        rel = name
        if os.path.isabs(name):
            norm = os.path.normpath(name)
            if not norm.startswith(root + "/"):
                raise LqosError("%s entry %r is outside pin_root %s." % (option, name, pin_root),
                                "name pins relative to pin_root, e.g. map_traffic.")
            rel = norm[len(root) + 1:]
        if not rel or ".." in rel.split("/"):
            raise LqosError("%s entry %r leaves the pin root %s." % (option, name, pin_root),
                            "name pins relative to pin_root, without '..'.")
        out.append(os.path.normpath(rel))
    return out


# --------------------------------------------------------------------------
# Audit (kernel)
# --------------------------------------------------------------------------

def walk_pins(pin_root: str, keep_dirs=()) -> list:
    """[(name, path, hint)] of every entry under pin_root, depth first and sorted.

    ``hint`` is "symlink", "dir" or "file"; symlinks are never followed.
    Directories are returned only when their name is in ``keep_dirs``.
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
        subdirs = []
        for entry in entries:
            rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
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


def _base(name: str, path: str, kind, status: str, reason: str = "") -> dict:
    return {"name": name, "path": path, "kind": kind, "status": status, "reason": reason,
            "expected": None, "differences": [], "used_by": []}


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
    if hook is not None:
        hook(path)
    try:
        info = L.map_info_by_path(path)
    except L.LibbpfError as exc:
        if exc.errno == errno.ENOENT:
            if not os.path.lexists(path):
                return _vanished(name, path)
            if os.path.islink(path):  # swapped for a symlink after the listing
                return inspect_pin(name, path, "symlink", pin_root)
            return _base(name, path, "other", "not_a_map",
                         "not a pinned BPF object (bpf_obj_get fails), like the kernel's preload "
                         "iterators maps.debug/progs.debug; never touched")
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
            info = L.prog_info_by_path(path)
        except L.LibbpfError as exc:
            if exc.errno == errno.ENOENT and not os.path.lexists(path):
                return _vanished(name, path)
            raise
        pin.update(id=info["id"], prog_name=info["name"], prog_type=info["type_name"], tag=info["tag"])
    return pin


def classify(pin: dict, expectations: dict) -> dict:
    """Attach ``expected``/``differences``/``status`` to an inspected pin (pure)."""
    entry = expectations.get(pin["name"])
    if entry is None:
        if pin["kind"] == "map":
            pin["status"] = "unknown"
            pin["reason"] = "not among the expected maps"
        return pin
    pin["expected"] = expected_view(entry)
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


def missing_pins(pin_root: str, expectations: dict, seen, names=None) -> list:
    out = []
    for name in sorted(expectations):
        if name in seen or (names is not None and name not in names):
            continue
        pin = _base(name, os.path.join(pin_root, name), None, "missing", "expected, but nothing is pinned here")
        pin["expected"] = expected_view(expectations[name])
        out.append(pin)
    return out


def programs_by_map() -> dict:
    """{map id: [{id, name, tag}]} from every loaded program's map_ids."""
    out: dict = {}
    for prog in L.loaded_programs():
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
                pins.append(_base(name, os.path.join(pin_root, name), None, "missing",
                                  "named in maps, but nothing is pinned here"))
    if any(p["kind"] == "map" and p["status"] != "vanished" for p in pins):
        users = programs_by_map()
        for pin in pins:
            if pin["kind"] == "map":
                pin["used_by"] = users.get(pin["id"], [])
    return pins


def summarise(pins: list) -> dict:
    counts = {status: 0 for status in STATUSES}
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


def timestamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + ".%06dZ" % int((now % 1) * 1e6)


def backup_file_name(name: str, stamp: str) -> str:
    return "%s.%s.json" % (name.replace("/", "__"), stamp)


def encode_backup(pin: dict, entries: list, possible_cpus: int, created: str, reason: str = "") -> dict:
    """The backup document: where the map was pinned, its layout, every entry hex-encoded."""
    percpu = pin["type"] in PERCPU_TYPES
    stride = (pin["value_size"] + 7) // 8 * 8
    return {
        "format": BACKUP_FORMAT,
        "created": created,
        "pin": pin["path"],
        "name": pin["name"],
        "reason": reason,
        "map": {a: pin.get(a) for a in MAP_INFO_KEYS},
        "layout": {
            "key_size": pin["key_size"],
            "value_size": pin["value_size"],
            "percpu": percpu,
            "value_stride": stride if percpu else pin["value_size"],
            "possible_cpus": possible_cpus if percpu else None,
            "value_bytes": stride * possible_cpus if percpu else pin["value_size"],
        },
        "entry_count": len(entries),
        "entries": [{"key": k.hex(), "value": v.hex()} for k, v in entries],
    }


def decode_backup(doc, path: str) -> dict:
    """Validate a backup document; entries become (key bytes, value bytes)."""
    def bad(problem):
        return LqosError("backup %s %s." % (path, problem),
                         "give a file written by lqos.bpf.pinned_maps state=clean (format %s)." % BACKUP_FORMAT)

    if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
        raise bad("is not a pinned-map backup (format is not %s)" % BACKUP_FORMAT)
    layout = doc.get("layout")
    if not isinstance(layout, dict) or not isinstance(doc.get("pin"), str) or not isinstance(doc.get("entries"), list):
        raise bad("lacks pin, layout or entries")
    ksz, vlen = layout.get("key_size"), layout.get("value_bytes")
    if not isinstance(ksz, int) or not isinstance(vlen, int):
        raise bad("has no key_size/value_bytes in its layout")
    entries = []
    for i, item in enumerate(doc["entries"]):
        try:
            key, value = bytes.fromhex(item["key"]), bytes.fromhex(item["value"])
        except (TypeError, KeyError, ValueError):
            raise bad("entry %d is not a {key, value} pair of hex strings" % i)
        if len(key) != ksz or len(value) != vlen:
            raise bad("entry %d has a %d-byte key and %d-byte value, not %d and %d as its layout says"
                      % (i, len(key), len(value), ksz, vlen))
        entries.append((key, value))
    out = dict(doc)
    out["entries"] = entries
    out["file"] = path
    return out


def read_backup(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise LqosError("backup file %s does not exist." % path,
                        "give a file from the `backups` list of a state=clean run (default folder %s)."
                        % DEFAULT_BACKUP_DIR)
    except OSError as exc:
        raise LqosError("cannot read backup file %s: %s." % (path, exc.strerror), "check its permissions.")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise LqosError("backup file %s is not valid JSON (%s)." % (path, exc),
                        "give an intact backup; a truncated file was never written by this module (writes are atomic).")
    return decode_backup(doc, path)


def prepare_backup_dir(backup_dir: str) -> None:
    if not os.path.isabs(backup_dir):
        raise LqosError("backup_dir %r is not an absolute path." % backup_dir,
                        "give a folder on a persistent filesystem, e.g. %s." % DEFAULT_BACKUP_DIR)
    try:
        os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise LqosError("cannot create backup_dir %s: %s; nothing was removed." % (backup_dir, exc.strerror),
                        "give a writable folder on a persistent filesystem.")
    if is_bpffs(backup_dir):
        raise LqosError("backup_dir %s is on a bpffs, which cannot hold backup files; nothing was removed."
                        % backup_dir, "give a folder on a persistent filesystem, e.g. %s." % DEFAULT_BACKUP_DIR)


def _still_same_map(pin: dict) -> None:
    try:
        now = L.map_info_by_path(pin["path"])
    except L.LibbpfError as exc:
        raise LqosError("pin %s changed since the audit (%s); nothing was removed." % (pin["path"], exc.msg),
                        "run the task again to audit the current pins.")
    if now["id"] != pin["id"] or os.path.islink(pin["path"]):
        raise LqosError("pin %s now holds map id %d, not the audited id %d; nothing was removed."
                        % (pin["path"], now["id"], pin["id"]), "run the task again to audit the current pins.")


def write_backup(pin: dict, backup_dir: str, now: float | None = None) -> dict:
    """Dump the pinned map's entries to a new, verified, timestamped backup file."""
    _still_same_map(pin)
    try:
        entries = L.map_entries(pin["path"])
    except L.LibbpfError as exc:
        raise LqosError("backing up %s failed: %s; the pin was NOT removed." % (pin["path"], exc.msg),
                        "save what you need from it yourself, then remove the pin by hand (rm %s)." % pin["path"])
    stamp = timestamp(now)
    doc = encode_backup(pin, entries, L.possible_cpus() if pin["type"] in PERCPU_TYPES else 0, stamp,
                        pin.get("reason", ""))
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    path = os.path.join(backup_dir, backup_file_name(pin["name"], stamp))
    n = 0
    while os.path.lexists(path):
        n += 1
        path = os.path.join(backup_dir, backup_file_name(pin["name"], "%s-%d" % (stamp, n)))
    try:
        atomic_write(path, text, mode=0o600)
        check = read_backup(path)
    except (OSError, LqosError) as exc:
        raise LqosError("writing backup %s of %s failed (%s); the pin was NOT removed."
                        % (path, pin["path"], getattr(exc, "strerror", None) or exc),
                        "give a writable backup_dir with free space.")
    if check["entries"] != entries:
        raise LqosError("backup %s of %s does not read back as written; the pin was NOT removed."
                        % (path, pin["path"]), "check the filesystem of backup_dir.")
    return {"pin": pin["path"], "name": pin["name"], "file": path, "entries": len(entries),
            "sha256": sha256_bytes(text.encode("utf-8"))}


def remove_pin(pin: dict) -> None:
    """Unlink one map pin after checking it still is the audited map."""
    _still_same_map(pin)
    try:
        os.unlink(pin["path"])
    except OSError as exc:
        raise LqosError("removing pin %s failed: %s (its backup is kept)." % (pin["path"], exc.strerror),
                        "check that pin_root is writable (root, CAP_SYS_ADMIN).")


# --------------------------------------------------------------------------
# Restore
# --------------------------------------------------------------------------

def restore_target(pin_root: str, backup: dict, pin_option: str | None) -> tuple:
    """(name, path) of the map to restore into: O(pin) or the backup's own pin, under pin_root."""
    root = pin_root.rstrip("/") or "/"
    wanted = pin_option or backup["pin"]
    rel = normalise_names(pin_root, [wanted], "pin")[0] if (pin_option or backup["pin"].startswith(root + "/")) else None
    if rel is None:
        raise LqosError("the backup's pin %s is outside pin_root %s." % (backup["pin"], pin_root),
                        "give pin: NAME (relative to pin_root) to restore into another map.")
    path = os.path.join(root, rel)
    probe = root
    for part in rel.split("/"):
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            raise LqosError("pin path %s is a symlink (-> %s); symlinks are never followed under the pin root."
                            % (probe, os.readlink(probe)), "name the real pin.")
    return rel, path


def plan_restore(backup: dict, target: dict, current: dict) -> list:
    """The entries of ``backup`` whose value differs in the target map (pure).

    Raises when the layouts differ or the map cannot hold them.
    """
    layout = backup["layout"]
    tpercpu = target["type"] in PERCPU_TYPES
    if layout["key_size"] != target["key_size"] or layout["value_size"] != target["value_size"]:
        raise LqosError("backup %s holds key_size %d / value_size %d, but map %s has key_size %d / value_size %d; "
                        "nothing was written." % (backup["file"], layout["key_size"], layout["value_size"],
                                                  target["path"], target["key_size"], target["value_size"]),
                        "restore into a map with the same key and value layout (pin: NAME).")
    if bool(layout.get("percpu")) != tpercpu:
        raise LqosError("backup %s is of a %sper-CPU map, but map %s (%s) is %sper-CPU; nothing was written."
                        % (backup["file"], "" if layout.get("percpu") else "non-", target["path"], target["type"],
                           "" if tpercpu else "not "),
                        "restore into a map of the same kind.")
    todo = [(k, v) for k, v in backup["entries"] if current.get(k) != v]
    if target["type"] not in ARRAY_LIKE_TYPES:
        new_keys = sum(1 for entry in todo if entry[0] not in current)
        if len(current) + new_keys > target["max_entries"]:
            raise LqosError("map %s (max_entries %d, %d entries in use) cannot take the %d new entries of backup %s; "
                            "nothing was written." % (target["path"], target["max_entries"], len(current), new_keys,
                                                      backup["file"]),
                            "grow the map or delete stale entries first.")
    else:
        for entry in todo:
            key = entry[0]
            index = int.from_bytes(key[:4], "little") if len(key) >= 4 else int.from_bytes(key, "little")
            if index >= target["max_entries"]:
                raise LqosError("backup %s has index %d, beyond map %s (max_entries %d); nothing was written."
                                % (backup["file"], index, target["path"], target["max_entries"]),
                                "restore into a map with at least %d entries." % (index + 1))
    return todo


def restore(pin_root: str, backup: dict, pin_option: str | None, write: bool) -> dict:
    """Compare, and with ``write`` load, a backup into its compatible pinned map."""
    name, path = restore_target(pin_root, backup, pin_option)
    try:
        info = L.map_info_by_path(path)
    except L.LibbpfError as exc:
        if exc.errno == errno.ENOENT:
            raise LqosError("no map is pinned at %s to restore backup %s into." % (path, backup["file"]),
                            "load the new object first so it pins the map, or name another map with pin:.")
        if exc.errno == errno.EINVAL:
            raise LqosError("%s is not a map pin (%s); nothing was written." % (path, exc.msg),
                            "name a pinned map with pin:.")
        raise
    target = {"path": path, "type": info["type_name"], "key_size": info["key_size"],
              "value_size": info["value_size"], "max_entries": info["max_entries"]}
    current = dict(L.map_entries(path))
    todo = plan_restore(backup, target, current)
    result = {"pin": path, "name": name, "backup": backup["file"], "entries_total": len(backup["entries"]),
              "entries_to_write": len(todo), "entries_written": 0, "todo": todo}
    if write and todo:
        for key, value in todo:
            try:
                L.map_update(path, key, value)
            except L.LibbpfError as exc:
                raise LqosError("restoring backup %s into %s failed after %d of %d entries: %s."
                                % (backup["file"], path, result["entries_written"], len(todo), exc.msg),
                                "fix the cause and run again; entries already equal are skipped.")
            result["entries_written"] += 1
        after = dict(L.map_entries(path))
        wrong = sum(1 for k, v in todo if after.get(k) != v)
        if wrong:
            raise LqosError("after restoring backup %s, %d entries of %s still differ (a program is writing them?)."
                            % (backup["file"], wrong, path), "stop the writer and run again.")
    return result


# --------------------------------------------------------------------------
# The module's run
# --------------------------------------------------------------------------

def build_expectations(module, pin_root: str, spec: dict | None) -> dict:
    params = module.params
    tables = [expectations_from_spec(spec)]
    obj = params.get("object")
    if obj and params.get("derive_from_object", True):
        if not os.path.isfile(obj):
            raise LqosError("object %s does not exist." % obj,
                            "build it with lqos.bpf.pipeline and pass outputs.object.path, or leave object unset.")
        info = L.object_info(obj, pin_root)
        cpu_sized = [c["map"] for c in spec.get("cpu_sized_maps", [])] if spec else []
        tables.append(expectations_from_object(info, cpu_sized, L.possible_cpus() if cpu_sized else None))
    return merge_expectations(*tables)


def _conflict_text(c: dict) -> str:
    return "map %s %s: %s" % (c["map"], c["attribute"],
                              ", ".join("%s says %s" % (s, v) for s, v in sorted(c["values"].items())))


def _clean(module, pin_root: str, pins: list, found_conflicts: list) -> dict:
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
    spec = validate_spec(params["spec"]) if params.get("spec") is not None else None
    names = normalise_names(pin_root, params.get("maps"))
    expectations = build_expectations(module, pin_root, spec)
    found_conflicts = conflicts(expectations)
    for c in found_conflicts:
        module.warn("expectations disagree: %s" % _conflict_text(c))
    state = params["state"]
    result = {"changed": False, "actions": [], "removed": [], "backups": [], "conflicts": found_conflicts}

    if state == "restored":
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
                counts["total"], pin_root, ", ".join("%d %s" % (counts[s], s) for s in STATUSES if counts[s]))
    result["pins"] = pins
    result["summary"] = summarise(pins)
    result["pin_root"] = pin_root
    return result
