# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Entries written into a pinned map by BTF field name (module ``map_entries``).

``encode`` is pure: a key or value given as plain data (an integer, a word
such as ``ifindex:NAME``, ``ifindex_vlan:NAME:TAG`` or ``be16:N``, a mapping of field names, a list for
an array) becomes the bytes of the map's BTF type, described by
``Btf.shape``. ``run_map_entries`` reads the map's own kernel BTF through its
pin, compares every entry with what the map holds, and writes only with
approval, outside check mode.
"""

from __future__ import annotations

import json
import os

from .._common import int_bytes, LqosError, why_not_live
from .._bpffs import confine_pin, require_bpffs


def _what(where: str) -> str:
    return where or "the value"


def encode(shape: dict, value, where: str, lookup) -> bytes:
    """The bytes of ``value`` laid out as ``shape`` (little-endian, as BPF objects here are).

    lookup(NAME) gives an interface index for ``ifindex:NAME``. Fields a mapping leaves out are zero.
    Raises LqosError naming the field (``where``) and the fix."""
    kind = shape["kind"]
    if kind == "int":
        return _encode_int(shape, value, where, lookup)
    if kind == "struct":
        if not isinstance(value, dict):
            if value == 0:
                return bytes(shape["size"])
            raise LqosError("%s is a %s: give a mapping of its fields (%s), got %r."
                            % (_what(where), shape["name"], ", ".join(m["name"] for m in shape["members"]), value),
                            "write it as {field: value, ...}.")
        names = [m["name"] for m in shape["members"]]
        unknown = sorted(str(k) for k in value if k not in names)
        if unknown:
            raise LqosError("%s: %s has no field %s (it has %s)." % (_what(where), shape["name"], ", ".join(unknown),
                                                                     ", ".join(names)),
                            "use the field names of the C struct.")
        out = bytearray(shape["size"])
        for m in shape["members"]:
            if m["name"] in value:
                raw = encode(m["shape"], value[m["name"]], "%s.%s" % (where, m["name"]) if where else m["name"],
                             lookup)
                out[m["offset"]:m["offset"] + len(raw)] = raw
        return bytes(out)
    if kind == "array":
        if not isinstance(value, list) or len(value) > shape["nelems"]:
            raise LqosError("%s is an array of %d: give a list of at most %d elements, got %r."
                            % (_what(where), shape["nelems"], shape["nelems"], value), "write it as a YAML list.")
        stride = shape["elem"]["size"]
        out = bytearray(shape["size"])
        for i, item in enumerate(value):
            out[i * stride:(i + 1) * stride] = encode(shape["elem"], item, "%s[%d]" % (where, i), lookup)
        return bytes(out)
    raise LqosError("%s is a %s, which cannot be written field by field." % (_what(where), shape["name"]),
                    "this module writes integers, structs and arrays of them.")


def _encode_int(shape: dict, value, where: str, lookup) -> bytes:
    size, signed = shape["size"], shape["signed"]
    if isinstance(value, str) and value.startswith("ifindex:"):
        value = lookup(value[len("ifindex:"):])
    elif isinstance(value, str) and value.startswith("ifindex_vlan:"):
        value = _ifindex_vlan(size, value, where, lookup)
    elif isinstance(value, str) and value.startswith("be16:"):
        if size != 2:
            raise LqosError("%s is %d bytes: be16:N fits only a 2-byte field." % (_what(where), size),
                            "give a plain number.")
        try:
            number = int(value[5:], 0)
        except ValueError:
            number = -1
        if not 0 <= number <= 0xFFFF:
            raise LqosError("%s: %r is not be16:N with N from 0 to 65535." % (_what(where), value), "fix the number.")
        return number.to_bytes(2, "big")
    if isinstance(value, bool) or not isinstance(value, int):
        raise LqosError("%s is a %d-byte integer (%s): give a number, ifindex:NAME or be16:N, got %r."
                        % (_what(where), size, shape["name"], value), "write a number.")
    return int_bytes(value, size, signed, _what(where))


def _ifindex_vlan(size: int, value: str, where: str, lookup) -> int:
    """ifindex_vlan:NAME:TAG - NAME's interface index in the high 16 bits, the VLAN id in the low 16 (the one-integer
    key of LibreQoS's VLAN redirect map)."""
    name, _sep, tag = value[len("ifindex_vlan:"):].rpartition(":")
    if size < 4:
        raise LqosError("%s is %d bytes: ifindex_vlan:NAME:TAG needs a field of 4 bytes or more."
                        % (_what(where), size), "give a plain number.")
    if not name or not tag.isdigit() or not 1 <= int(tag) <= 4094:
        raise LqosError("%s: %r is not ifindex_vlan:NAME:TAG with TAG a VLAN id from 1 to 4094."
                        % (_what(where), value), "write e.g. ifindex_vlan:eth0:100.")
    ifindex = lookup(name)
    if ifindex > 0xFFFF:
        raise LqosError("%s: interface %s has index %d, which does not fit the 16 bits ifindex_vlan gives it."
                        % (_what(where), name, ifindex), "this map cannot key interfaces past index 65535.")
    return (ifindex << 16) | int(tag)


def plan_entries(entries: list, current: dict, state: str) -> list:
    """[{"key", "value", "before", "action"}] with bytes, ``current`` {key bytes: value bytes or None}; action
    set (new or other value), unchanged, delete, absent."""
    out = []
    for e in entries:
        before = current.get(e["key"])
        if state == "absent":
            action = "delete" if before is not None else "absent"
        else:
            action = "unchanged" if before == e["value"] else "set"
        out.append(dict(e, before=before, action=action))
    return out


def check_capacity(info: dict, path: str, plan: list, count) -> None:
    """Refuse, before anything is written, entries the map has no room for: an array index at or past
    max_entries, or more keys than max_entries in a hash-like map (``count()``: the entries it holds now;
    an LRU map would evict entries to make room). ``info``: map_info_by_path's dict; ``plan``: plan_entries'."""
    limit = info["max_entries"]
    if info["type_name"] == "array":
        past = [e["key"] for e in plan if int.from_bytes(e["key"][:4], "little") >= limit]
        if past:
            raise LqosError("map %s is an array of %d slots; %d of the entries have an index at or past %d (first: "
                            "%d); nothing was written." % (path, limit, len(past), limit,
                                                           int.from_bytes(past[0][:4], "little")),
                            "give indexes from 0 to %d, or grow the map's max_entries." % (limit - 1))
        return
    new_keys = sum(1 for e in plan if e["action"] == "set" and e["before"] is None)
    if not new_keys:
        return
    held = count()
    if held + new_keys > limit:
        raise LqosError("map %s has room for %d entries and holds %d; the %d new keys would make %d, so nothing was "
                        "written." % (path, limit, held, new_keys, held + new_keys),
                        "write at most %d new entries, delete entries first, or grow the map's max_entries."
                        % max(limit - held, 0))


def _write_all_or_none(path: str, todo: list, info: dict, maps, lib_error) -> None:
    """Write every change, or none: a write that fails puts back what this run wrote (_changes.HostChanges)."""
    from .._changes import HostChanges

    def restore(key: bytes, before):
        if before is None:
            maps.map_delete(path, key)
        else:
            maps.map_update(path, key, before)
        return ""

    changes = HostChanges()
    for e in todo:
        try:
            if e["action"] == "set":
                maps.map_update(path, e["key"], e["value"])
            else:
                maps.map_delete(path, e["key"])
        except lib_error as exc:
            err = LqosError("writing %s[%s] failed: %s." % (path, e["key"].hex(), exc.msg.rstrip(".")),
                            "check that the map has room (max_entries %d) and is not read-only, and that the entry "
                            "is valid for a %s map." % (info["max_entries"], info["type_name"]))
            written = len(changes.steps)
            err = changes.fail(err, finish="fix the entry, then run the task again")
            if written and not err.details.get("changes_left"):
                what = "the %d entr%s written before it, put back as %s" % (
                    written, "y" if written == 1 else "ies", "it was" if written == 1 else "they were")
                err.msg += " Rolled back what this run had changed: %s." % what
                err.details["rolled_back"] = [what]
            raise err
        changes.add("%s %s[%s]" % (e["action"], path, e["key"].hex()),
                    lambda k=e["key"], b=e["before"]: restore(k, b),
                    "write %s[%s] back to %s" % (path, e["key"].hex(), "nothing (delete it)" if e["before"] is None
                                                 else e["before"].hex()))


def _hex(blob) -> str | None:
    return None if blob is None else blob.hex()


def _unpinned_plan(path: str, entries: list, state: str, why_not: str) -> dict:
    """The plan for a map not pinned yet (a fresh host, whose attach is only planned too): every entry would be
    set, as given - without the map's BTF the entries cannot be encoded, so their bytes are not shown."""
    if state == "absent":
        return {"changed": False, "applied": False, "map": path, "actions": [], "entries": []}
    actions = ["set %s[%s] = %s (the map is pinned by the attach)"
               % (path, json.dumps(e["key"], sort_keys=True), json.dumps(e["value"], sort_keys=True))
               for e in entries]
    return {"changed": bool(actions), "applied": False, "map": path, "actions": actions, "entries": [],
            "msg": "%s: nothing was written; %s is not pinned yet (the attach pins it), so the %d entries are "
                   "shown as given" % (why_not, path, len(actions))}


def run_map_entries(module) -> dict:
    from .._kernel import btf as _btf
    from .._kernel import hooks as _hooks
    from .._kernel import maps as _kmaps
    from .._attach.plan import validate_ifname, validate_netns
    from .._kernel.libbpf import LibbpfError
    from .._kernel.declarations import PERCPU_MAP_TYPES

    p = module.params
    state, netns = p["state"], p["netns"]
    validate_netns(netns)
    root = require_bpffs(p["pin_root"])
    path = confine_pin(root, p["map"])
    for i, e in enumerate(p["entries"]):
        if not isinstance(e, dict) or "key" not in e or (state == "present" and "value" not in e):
            raise LqosError("entries[%d] must be a mapping with key%s, got %r."
                            % (i, " and value" if state == "present" else "", e),
                            "write each entry as {key: ..., value: ...}.")
        unknown = sorted(str(k) for k in e if k not in ("key", "value"))
        if unknown:
            raise LqosError("entries[%d]: %s is not a key of an entry." % (i, ", ".join(unknown)),
                            "an entry has only key and value.")
    why_not = why_not_live(module)
    if not os.path.lexists(path):
        if why_not:
            return _unpinned_plan(path, p["entries"], state, why_not)
        raise LqosError("no map is pinned at %s." % path,
                        "attach the programs first (lqos.bpf.attach pins their maps under pin_root), or fix map.")
    if os.path.isdir(path):  # confine_pin refused symlinks: this is a real folder under the pin root
        raise LqosError("%s is a folder, not a pinned map." % path,
                        "name the map pin itself in map (a path relative to pin_root, e.g. %s/<map name>)."
                        % os.path.relpath(path, root))
    try:
        info = _kmaps.map_info_by_path(path)
    except LibbpfError as exc:
        raise LqosError("%s is not a pinned map: %s." % (path, exc.msg.rstrip(".")), "name a map pin.")
    if info["type"] in PERCPU_MAP_TYPES:
        raise LqosError("map %s is a %s map: one value per CPU is not written by this module." % (path, info["type_name"]),
                        "write per-CPU maps from the program's own loader.")
    if not info["btf_id"] or not info["btf_key_type_id"] or not info["btf_value_type_id"]:
        raise LqosError("map %s carries no BTF for its key and value, so fields cannot be named." % path,
                        "build the object with clang -g and BTF-defined maps (__type(key, ...)).")
    with _btf.Btf.from_kernel_id(info["btf_id"]) as btf:
        key_shape = btf.shape(info["btf_key_type_id"])
        value_shape = btf.shape(info["btf_value_type_id"])

    def lookup(name: str) -> int:
        validate_ifname(name)
        where = "network namespace %s" % netns if netns else "the host's network namespace"
        try:
            ns = _hooks.netns(netns).__enter__() if netns else None
        except LibbpfError:
            raise LqosError("network namespace %s does not exist (no /run/netns/%s)." % (netns, netns),
                            "create it (ip netns add %s) or fix netns." % netns)
        try:
            return _hooks.ifindex(name)
        except LibbpfError:
            raise LqosError("interface %s (ifindex:%s) does not exist in %s." % (name, name, where),
                            "fix the name, or set netns to the namespace that holds it.")
        finally:
            if ns is not None:
                ns.__exit__(None, None, None)

    wanted = []
    for i, e in enumerate(p["entries"]):
        key = encode(key_shape, e["key"], "entries[%d].key" % i, lookup)
        value = encode(value_shape, e["value"], "entries[%d].value" % i, lookup) if state == "present" else None
        wanted.append({"key": key, "value": value})
    keys = [w["key"] for w in wanted]
    if len(set(keys)) != len(keys):
        raise LqosError("two entries have the same key.", "give each key once.")
    current = {k: _kmaps.map_lookup(path, k) for k in keys}
    plan = plan_entries(wanted, current, state)
    todo = [e for e in plan if e["action"] in ("set", "delete")]
    actions = ["%s %s[%s]%s" % ("set" if e["action"] == "set" else "delete", path, e["key"].hex(),
                                " = %s" % e["value"].hex() if e["action"] == "set" else "") for e in todo]
    if todo and state == "present":
        check_capacity(info, path, plan, lambda: len(_kmaps.map_entries(path)))
    if todo and not why_not:
        _write_all_or_none(path, todo, info, _kmaps, LibbpfError)
    result = {
        "changed": bool(todo),
        "applied": bool(todo) and not why_not,
        "map": path,
        "actions": actions,
        "entries": [{"key": e["key"].hex(), "value": _hex(e["value"]), "before": _hex(e["before"]),
                     "action": e["action"]} for e in plan],
    }
    if todo and why_not:
        result["msg"] = "%s: nothing was written; approve: true (outside check mode) makes these %d change(s)" % (
            why_not, len(todo))
    if module._diff:
        # Only the entries named: what the map holds under those keys before and after.
        after = [(e["key"], e["value"]) for e in plan if state == "present"]
        result["diff"] = {
            "before": "".join("%s = %s\n" % (e["key"].hex(), e["before"].hex()) for e in plan
                              if e["before"] is not None),
            "after": "".join("%s = %s\n" % (k.hex(), v.hex()) for k, v in after),
            "before_header": path, "after_header": path,
        }
    return result
