# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The hooks of a service's interfaces, read from the kernel, and what the service module checks on them.

- ``read_hooks``: per configured interface, the XDP program (``bpf_xdp_query``) and the TC programs at the slot
  lqosd and shaperd use (handle 0x1, priority 0xC02F on the clsact qdisc; LibreQoS ``wrapper.c``, shaperd
  ``hooks.c``), each with its kernel name, tag and owner (``_ownership.owners.owner_of``).
- ``trial_tags``: the kernel tags of an object's XDP and TC programs, from a load that pins nothing and reuses no
  pin (the kernel computes a program's tag from its instructions with map references zeroed, ``kernel/bpf/core.c``
  ``bpf_prog_calc_tag``, so a load with other load-time values and maps gives the tag the service runs with).
- ``hooks_ready`` and ``problems`` (pure): whether every interface holds the service's XDP program, and what
  differs from what a verified service runs.
"""

from __future__ import annotations

from .._kernel import hooks as _hooks
from .._kernel import maps as _kmaps
from .._common import LqosError
from .._kernel.libbpf import LibbpfError
from .._ownership.owners import owner_of

TC_HANDLE, TC_PRIORITY = 0x1, 0xC02F
KERNEL_NAME_LEN = 15        # BPF_OBJ_NAME_LEN - 1: the kernel keeps the first 15 bytes of a program's name
HOOK_TYPES = ("xdp", "sched_cls")


def tc_directions(config: dict) -> list:
    """The TC hooks the service attaches on each interface: egress always; ingress (the bridge redirector) on a
    stick and in a bridge with ``use_xdp_bridge`` (LibreQoS ``lqos_kernel.rs``; shaperd ``hooks.c``)."""
    if config["mode"] == "stick" or config.get("use_xdp_bridge"):
        return ["egress", "ingress"]
    return ["egress"]


def where(iface: dict) -> str:
    return "%s (netns %s)" % (iface["name"], iface["netns"]) if iface.get("netns") else iface["name"]


class _In(object):
    """Inside an interface's netns (or where we are); LqosError naming the interface when netns is missing."""

    def __init__(self, iface: dict):
        self.iface = iface
        self.ns = None

    def __enter__(self):
        if self.iface.get("netns"):
            try:
                self.ns = _hooks.netns(self.iface["netns"]).__enter__()
            except LibbpfError as exc:
                raise LqosError("interface %s of the service's configuration: %s." % (
                    where(self.iface), exc.msg.rstrip(".")), "create the namespace, or fix netns in the configuration.")
        return self

    def __exit__(self, *exc):
        if self.ns is not None:
            self.ns.__exit__(None, None, None)
        return False


def _missing(config: dict, iface: dict) -> LqosError:
    return LqosError("interface %s of %s (%s) does not exist on this host%s." % (
        iface["name"], config["path"], iface["role"],
        " in network namespace %s" % iface["netns"] if iface.get("netns") else ""),
        "fix the configuration, or create the interface before the service starts.")


def check_interfaces(config: dict) -> None:
    """LqosError for the first configured interface the host does not have (named with its netns)."""
    for iface in config["interfaces"]:
        with _In(iface):
            try:
                _hooks.ifindex(iface["name"])
            except LibbpfError:
                raise _missing(config, iface)


def owner(prog_id: int, collection_ids, service_ids) -> str:
    """``collection``, ``service`` or ``foreign``: the one ownership decision (``_ownership.owners.owner_of``) asked with
    the configured service's main process as the only holder (``service_ids``: the ids it holds) - from this
    module's point of view a program another process holds is not the service's."""
    return owner_of(prog_id, collection_ids, {i: [{"pid": 0}] for i in service_ids or ()})[0]


def _prog(prog_id: int, collection_ids, service_ids, mode: str | None = None) -> dict | None:
    if not prog_id:
        return None
    try:
        info = _kmaps.prog_info_by_id(prog_id)
        name, tag = info["name"], info["tag"]
    except LibbpfError:   # unloaded since the query
        name = tag = None
    out = {"id": prog_id, "name": name, "tag": tag, "owner": owner(prog_id, collection_ids, service_ids)}
    if mode is not None:
        out["mode"] = mode
    return out


def read_hooks(config: dict, collection_ids, service_ids) -> list:
    """[{interface, netns, xdp: {id, name, tag, mode, owner} | None, tc_egress: {id, name, tag, owner} | None,
    tc_ingress: ...}] for the configured interfaces, in configuration order."""
    out = []
    for iface in config["interfaces"]:
        with _In(iface):
            try:
                idx = _hooks.ifindex(iface["name"])
            except LibbpfError:
                raise _missing(config, iface)
            q = _hooks.xdp_query(idx)
            row = {"interface": iface["name"], "netns": iface.get("netns"),
                   "xdp": _prog(q["prog_id"], collection_ids, service_ids, q["attach_mode"])}
            for direction in ("egress", "ingress"):
                row["tc_" + direction] = _prog(_hooks.tc_query(idx, direction, TC_HANDLE, TC_PRIORITY),
                                               collection_ids, service_ids)
        out.append(row)
    return out


def trial_tags(path: str, what: str | None = None) -> dict:
    """{program name: kernel tag (hex)} of the XDP and TC programs of the object at ``path``, from a trial load
    (nothing pinned, no pin reused, closed again; other programs left out; a CPU map larger than this host's
    possible CPUs shrunk to them, as the services do, since the kernel refuses more). ``what`` names the object
    in the message (default its path). LqosError when it does not load."""
    from .._kernel import objects as _objects
    from .._kernel.loaded import LoadedObject
    from .._kernel.libbpf import _STATE, _errno_of

    what = what or path
    try:
        info = _objects.object_info(path)
        progs = info["programs"]
        keep = [p["name"] for p in progs if p["type_name"] in HOOK_TYPES]
        if not keep:
            raise LqosError("%s has no XDP or TC program, so it gives no tags to verify against." % what,
                            "give the service's object, or expected_tags.")
        others = [p["name"] for p in progs if p["name"] not in keep]
        cpus = _objects.possible_cpus()
        resize = {m["name"]: cpus for m in info["maps"] if m["type_name"] == "cpumap" and m["max_entries"] > cpus}
        obj, bufs = _objects._prepare(path, None, resize, {}, {}, set(others), 64 * 1024, no_pins=True,
                                      shrink_to=max(cpus, 64))
        lib = _STATE["lib"]
        loaded = None
        try:
            ret = lib.bpf_object__load(obj)
            if ret < 0:
                _objects._explain_load_failure(obj, path, None, _errno_of(ret), bufs, [])
            loaded = LoadedObject(obj, path, None, bufs)   # closes the object from now on
            return {name: loaded.prog_info(name)["tag"] for name in keep}
        finally:
            if loaded is not None:
                loaded.close()
            else:
                lib.bpf_object__close(obj)
    except LibbpfError as exc:
        raise LqosError("the trial load of %s (for the tags the service should run) failed: %s." % (
            what, exc.msg.replace(path, what).rstrip(".")), "give expected_tags, or check the object with lqos.bpf.abi_check.")


def hooks_ready(hooks: list) -> bool:
    """Every configured interface holds an XDP program held by the service's main process."""
    return all(h["xdp"] and h["xdp"]["owner"] == "service" for h in hooks)


def _describe(prog: dict) -> str:
    return "%s (id %d, tag %s, owner %s)" % (prog["name"] or "?", prog["id"], prog["tag"] or "?", prog["owner"])


def problems(config: dict, hooks: list, expected: dict, main_pid: int, source: str = "the embedded object") -> list:
    """What differs from a verified service (pure): per interface and hook, a program that is missing, not held
    by the service's main process, or whose kernel tag is not the expected one of its name. ``expected``:
    {program name: tag} taken from ``source`` (named in the text); names are compared on their first 15 characters, as the kernel keeps them.
    [str], each naming the interface, what was found and what was expected."""
    want = {}
    for name, tag in (expected or {}).items():
        want[name[:KERNEL_NAME_LEN]] = str(tag).lower()
    names = ", ".join(sorted(want)) or "none"
    holder = "the service's main process %d" % main_pid if main_pid else "the service (no main process runs)"
    out = []
    by_name = {h["interface"]: h for h in hooks}
    for iface in config["interfaces"]:
        h = by_name.get(iface["name"])
        slots = [("XDP", h["xdp"] if h else None)] + [
            ("TC " + d, h["tc_" + d] if h else None) for d in tc_directions(config)]
        for label, prog in slots:
            at = "%s %s" % (where(iface), label)
            if prog is None:
                out.append("%s: no program; expected one of %s held by %s." % (at, names, holder))
                continue
            if prog["owner"] != "service":
                out.append("%s: %s is not held by %s; expected one of %s held by it." % (
                    at, _describe(prog), holder, names))
            if prog["name"] not in want:
                out.append("%s: %s is not one of the expected programs (%s)." % (at, _describe(prog), names))
            elif prog["tag"] != want[prog["name"]]:
                out.append("%s: %s (id %d, owner %s) has tag %s; expected %s (the tag of %s in %s)." % (
                    at, prog["name"], prog["id"], prog["owner"], prog["tag"], want[prog["name"]], prog["name"], source))
    return out
