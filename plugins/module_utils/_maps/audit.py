# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The audit of the pins under a bpffs root: every pin walked (symlinks and the aside folder included), read
through libbpf, classified against the expectations (compatible, incompatible, unknown, missing, not_a_map,
vanished, unreadable, aside), the programs that use each map, the summary and the listing."""

from __future__ import annotations

import errno
import os

from .._common import LqosError, MAP_ASIDE_DIR as ASIDE_DIR, errno_name
from .._kernel import libbpf as L
from .._kernel import maps as M
from .expectations import (
    compare,
    describe_differences,
    expected_view,
)


STATUSES = ("compatible", "incompatible", "unknown", "missing", "not_a_map", "vanished", "unreadable", "aside")
MAX_DEPTH = 64


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
