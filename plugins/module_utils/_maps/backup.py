# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Pinned-map backups: the backup document (encode, decode, validate), writing
one verified backup before a pin is removed, removing that pin, and restoring a
backup into a compatible pinned map.

A backup file is JSON (format ``lqos.bpf.map-backup/1``): where the map was
pinned, its layout (key_size, value_size, percpu, value_stride, possible_cpus,
value_bytes, all in bytes) and every entry hex-encoded. The pure parts
(``encode_backup``, ``decode_backup``, ``plan_restore``) take plain data; the
rest reads or changes the kernel through ``_kernel.libbpf``.
"""

from __future__ import annotations

import errno
import json
import os
import time

from .._common import (
    LqosError,
    MAP_BACKUP_DIR,
    atomic_write,
    sha256_bytes,
)
from .._bpffs import is_bpffs, normalise_names
from . import migrate as G
from .replace import kernel_side

try:
    from .._kernel import libbpf as L
    from .._kernel import maps as M
except ImportError:  # pragma: no cover - _libbpf itself has no hard imports
    L = None

DEFAULT_BACKUP_DIR = MAP_BACKUP_DIR
BACKUP_FORMAT = "lqos.bpf.map-backup/1"
PERCPU_TYPES = frozenset(("percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"))
ARRAY_LIKE_TYPES = frozenset(("array", "percpu_array", "prog_array", "perf_event_array", "cgroup_array",
                              "array_of_maps", "devmap", "cpumap", "xskmap", "reuseport_sockarray", "sockmap"))
MAP_INFO_KEYS = ("id", "map_name", "type", "key_size", "value_size", "max_entries", "flags", "map_extra", "btf_id",
                 "key_type", "value_type")


def timestamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + ".%06dZ" % int((now % 1) * 1e6)


def backup_file_name(name: str, stamp: str) -> str:
    return "%s.%s.json" % (name.replace("/", "__"), stamp)


def encode_backup(pin: dict, entries: list, possible_cpus: int, created: str, reason: str = "",
                  types: dict | None = None) -> dict:
    """The backup document: where the map was pinned, its layout, every entry hex-encoded, and
    (``types``) the BTF shapes of its key and value ({key, value, source}; ``Btf.shape``), so a
    restore can migrate the entries into a newer layout."""
    percpu = pin["type"] in PERCPU_TYPES
    stride = (pin["value_size"] + 7) // 8 * 8
    return {
        "format": BACKUP_FORMAT,
        "created": created,
        "pin": pin.get("pinned_as") or pin["path"],  # a moved-aside map is restored to the name it had
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
        "types": types,
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
    for field in ("key_size", "value_size", "value_bytes"):
        value = layout.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if field == "key_size" else 1):
            raise bad("has %s layout.%s, not a byte count" % ("no" if value is None else "%r as" % (value,), field))
    if not isinstance(layout.get("percpu", False), bool):
        raise bad("has %r as layout.percpu, not true or false" % (layout["percpu"],))
    ksz, vlen = layout["key_size"], layout["value_bytes"]
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
    if os.path.lexists(backup_dir) and not os.path.isdir(backup_dir):
        raise LqosError("backup_dir %s is a file, not a folder; nothing was removed." % backup_dir,
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
        now = M.map_info_by_path(pin["path"])
    except L.LibbpfError as exc:
        raise LqosError("pin %s changed since the audit (%s); nothing was removed." % (pin["path"], exc.msg),
                        "run the task again to audit the current pins.")
    if now["id"] != pin["id"] or os.path.islink(pin["path"]):
        raise LqosError("pin %s now holds map id %d, not the audited id %d; nothing was removed."
                        % (pin["path"], now["id"], pin["id"]), "run the task again to audit the current pins.")


def write_backup(pin: dict, backup_dir: str, now: float | None = None, types: dict | None = None) -> dict:
    """Dump the pinned map's entries to a new, verified, timestamped backup file (with ``types``, the
    BTF shapes of key and value; by default read from the map's kernel BTF)."""
    _still_same_map(pin)
    try:
        entries = M.map_entries(pin["path"])
    except L.LibbpfError as exc:
        raise LqosError("backing up %s failed: %s; the pin was NOT removed." % (pin["path"], exc.msg),
                        "save what you need from it yourself, then remove the pin by hand (rm %s)." % pin["path"])
    stamp = timestamp(now)
    if types is None:
        types = _kernel_types(pin["path"])
    doc = encode_backup(pin, entries, L.possible_cpus() if pin["type"] in PERCPU_TYPES else 0, stamp,
                        pin.get("reason", ""), types)
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


def _kernel_types(path: str) -> dict | None:
    """{key, value, source} shapes from the kernel BTF of a pinned map, or None without BTF."""
    try:
        side = kernel_side(path)
    except L.LibbpfError:
        return None
    if side["key_shape"] is None and side["value_shape"] is None:
        return None
    return {"key": side["key_shape"], "value": side["value_shape"], "source": side["source"]}


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
        info = M.map_info_by_path(path)
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
    current = dict(M.map_entries(path))
    migration = None
    if _layout_differs(backup, target) and backup.get("types"):
        backup, migration = _migrated_backup(backup, path)
    todo = plan_restore(backup, target, current)
    result = {"pin": path, "name": name, "backup": backup["file"], "entries_total": len(backup["entries"]),
              "entries_to_write": len(todo), "entries_written": 0, "todo": todo, "migration": migration}
    if write and todo:
        for key, value in todo:
            try:
                M.map_update(path, key, value)
            except L.LibbpfError as exc:
                raise LqosError("restoring backup %s into %s failed after %d of %d entries: %s."
                                % (backup["file"], path, result["entries_written"], len(todo), exc.msg),
                                "fix the cause and run again; entries already equal are skipped.")
            result["entries_written"] += 1
        after = dict(M.map_entries(path))
        wrong = sum(1 for k, v in todo if after.get(k) != v)
        if wrong:
            raise LqosError("after restoring backup %s, %d entries of %s still differ (a program is writing them?)."
                            % (backup["file"], wrong, path), "stop the writer and run again.")
    return result


def _layout_differs(backup: dict, target: dict) -> bool:
    layout = backup["layout"]
    return (layout["key_size"], layout["value_size"]) != (target["key_size"], target["value_size"]) \
        or backup.get("map", {}).get("type") not in (None, target["type"])


def _migrated_backup(backup: dict, path: str) -> tuple:
    """The backup with its entries converted into the layout of the map at ``path`` (by the BTF shapes
    the backup stored and the map's kernel BTF), and the public migration plan."""
    layout, types = backup["layout"], backup["types"] or {}
    old = {"type": (backup.get("map") or {}).get("type") or ("percpu_hash" if layout.get("percpu") else "hash"),
           "key_size": layout["key_size"], "value_size": layout["value_size"],
           "max_entries": (backup.get("map") or {}).get("max_entries") or 0,
           "key_shape": types.get("key"), "value_shape": types.get("value")}
    new = kernel_side(path)
    plan = G.plan_map(backup.get("name") or path, old, new, len(backup["entries"]))
    try:
        converted = G.convert_entries(plan, old, new, backup["entries"], L.possible_cpus())
    except G.MigrationError as exc:
        raise LqosError("backup %s cannot be restored into %s: %s" % (backup["file"], path, exc.msg),
                        "restore into a map whose layout the backup's entries can migrate to (pin: NAME).")
    percpu = new["type"] in PERCPU_TYPES
    stride = (new["value_size"] + 7) // 8 * 8
    out = dict(backup)
    out["entries"] = converted
    out["layout"] = {"key_size": new["key_size"], "value_size": new["value_size"], "percpu": percpu,
                     "value_stride": stride if percpu else new["value_size"],
                     "value_bytes": stride * L.possible_cpus() if percpu else new["value_size"]}
    return out, G.public_plan(plan)
