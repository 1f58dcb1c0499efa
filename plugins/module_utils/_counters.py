# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Per-host counters of the attached programs, for a health check that proves they see traffic.

The spec's ``health`` names the per-host counter map and its down/up fields;
the map is read through its pin and decoded with its own kernel BTF (per-CPU
values summed). A traffic probe's replies are counted on an address and in a
direction that depend on the interface's ``direction`` (``probe_facts``).
"""

from __future__ import annotations

import os

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError, possible_cpus


def address_key(address: str) -> bytes:
    """The 16-byte key of a host in the per-host counter maps: an IPv6 address, or IPv4 mapped into IPv6
    (::ffff:a.b.c.d), as both the reference pipeline and LibreQoS key them. Raises LqosError when invalid."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise LqosError("counters: %r is not an IP address." % (address,), "give IPv4 or IPv6 addresses.")
    if ip.version == 4:
        return b"\0" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def field_at(layout_of, type_name: str, path: str) -> tuple:
    """(byte offset, size) of the field ``path`` ("icmp_packets.down") in struct ``type_name``.

    layout_of(name) returns a Btf.layout dict; raises LqosError naming the missing member."""
    offset, current = 0, type_name
    parts = path.split(".")
    for i, part in enumerate(parts):
        lay = layout_of(current)
        member = next((m for m in lay["members"] if m["name"] == part), None)
        if member is None:
            raise LqosError("health field %s: %s has no member %s (it has %s)." % (
                path, lay["c_type"], part, ", ".join(m["name"] for m in lay["members"])),
                "fix spec health.down/health.up to name the counter fields of the map's value.")
        offset += member["offset"]
        if i < len(parts) - 1:
            current = member["type"].replace("struct ", "").replace("union ", "")
        elif member["size"] not in (1, 2, 4, 8) or member["kind"] not in ("int", "enum"):
            raise LqosError("health field %s is a %s of %d bytes, not a counter." % (path, member["type"], member["size"]),
                            "name an integer field.")
        else:
            return offset, member["size"]
    raise LqosError("health field %s is empty." % path, "name a field.")


def counter_facts(pin_root: str, spec: dict, addresses: list) -> dict:
    """{address: {"down": n, "up": n} or None (no entry)} from the spec's ``health`` counter map, read through
    its pin and decoded with the map's own BTF (kernel), per-CPU values summed."""
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_btf, _bpf_maps
    from ansible_collections.lqos.bpf.plugins.module_utils._libbpf import LibbpfError, PERCPU_MAP_TYPES

    health = spec.get("health")
    if not health:
        raise LqosError("spec %r names no counter map (health)." % spec["name"],
                        "add `health: {map: <per-host counter map>, down: <field>, up: <field>}` to the spec.")
    path = os.path.join(pin_root, health["map"])
    keys = {a: address_key(a) for a in addresses}
    try:
        info = _bpf_maps.map_info_by_path(path)
        if not info["btf_id"] or not info["value_type_name"]:
            raise LqosError("map %s carries no BTF for its value, so its counters cannot be decoded." % path,
                            "build the object with clang -g.")
        with _bpf_btf.Btf.from_kernel_id(info["btf_id"]) as btf:
            value_type = info["value_type_name"].replace("struct ", "")
            fields = {d: field_at(btf.layout, value_type, health[d]) for d in ("down", "up")}
        ncpus = possible_cpus() if info["type"] in PERCPU_MAP_TYPES else 1
        stride = (info["value_size"] + 7) & ~7 if ncpus > 1 else info["value_size"]
        out = {}
        for address, key in keys.items():
            blob = _bpf_maps.map_lookup(path, key)
            if blob is None:
                out[address] = None
                continue
            out[address] = {d: sum(int.from_bytes(blob[c * stride + off:c * stride + off + size], "little")
                                   for c in range(ncpus)) for d, (off, size) in fields.items()}
        return out
    except LibbpfError as exc:
        raise LqosError("reading the counters of %s failed: %s." % (path, exc.msg.rstrip(".")),
                        "check that the programs are attached and pin_root is where they pin their maps.")


def probe_source(target: str, netns: str | None) -> str:
    """The local address this host sends from to reach ``target`` (inside ``netns``): a connected UDP
    socket asks the routing table without sending anything."""
    import socket
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_hooks

    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    ctx = _bpf_hooks.netns(netns) if netns else None
    try:
        if ctx:
            ctx.__enter__()
        with socket.socket(family, socket.SOCK_DGRAM) as sk:
            sk.connect((target, 9))
            return sk.getsockname()[0]
    except OSError as exc:
        where = " in netns %s" % netns if netns else ""
        raise LqosError("no route to probe target %s%s: %s." % (target, where, exc.strerror or exc),
                        "fix probe_target, or the interface's addresses and routes.")
    finally:
        if ctx:
            ctx.__exit__(None, None, None)


def probe_facts(pin_root: str, spec: dict, probes: list) -> list:
    """Where each traffic probe is counted, and the count now: [{target, netns, direction, address, field,
    count}]; count is None when the spec names no counter map (``health``). Direction 1 (the interface faces
    the Internet): the replies come in towards this host, counted ``down`` on its own address; 2 (faces the
    customers): they come in from the target, counted ``up`` on the target's address. (Both the reference
    pipeline and LibreQoS count a host on ingress this way.)"""
    rows = []
    for p in probes:
        direction = int(p.get("direction") or 1)
        if direction not in (1, 2):
            raise LqosError("probe direction %r: only 1 (faces the Internet) and 2 (faces the customers) count a "
                            "ping's replies." % (p.get("direction"),), "probe an interface with direction 1 or 2.")
        if direction == 1:
            address, field = probe_source(p["target"], p.get("netns")), "down"
        else:
            address, field = p["target"], "up"
        rows.append({"target": p["target"], "netns": p.get("netns"), "direction": direction, "address": address,
                     "field": field})
    counts = counter_facts(pin_root, spec, sorted({r["address"] for r in rows})) if rows and spec.get("health") else {}
    for r in rows:
        r["count"] = (counts.get(r["address"]) or {}).get(r["field"], 0) if spec.get("health") else None
    return rows
