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

from .._common import LqosError, possible_cpus


# How a 16-byte address key holds an IPv4 address (spec ``health.ipv4``): the bytes before the four address bytes.
IPV4_PREFIXES = {
    "mapped": b"\0" * 10 + b"\xff\xff",   # ::ffff:a.b.c.d (RFC 4291 IPv4-mapped; the reference pipeline)
    "ff_prefix": b"\xff" * 12,            # twelve 0xff bytes, then the address (LibreQoS's map_traffic, ip hash)
}
DEFAULT_IPV4 = "mapped"
NEAREST = 3


def address_key(address: str, ipv4: str = DEFAULT_IPV4, key_size: int = 16) -> bytes:
    """The key of a host in a per-host counter map whose keys are ``key_size`` bytes (the map's own, from the
    kernel): 16 bytes hold an IPv6 address, or an IPv4 address behind the prefix ``ipv4`` names
    (``IPV4_PREFIXES``: ``mapped`` ::ffff:a.b.c.d, ``ff_prefix`` twelve 0xff bytes); 4 bytes hold an IPv4
    address only. Raises LqosError naming the address, the encoding or the key size that does not fit."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise LqosError("counters: %r is not an IP address." % (address,), "give IPv4 or IPv6 addresses.")
    if ipv4 not in IPV4_PREFIXES:
        raise LqosError("counters: unknown IPv4 key encoding %r." % (ipv4,),
                        "set spec health.ipv4 to one of %s." % ", ".join(sorted(IPV4_PREFIXES)))
    if key_size == 4:
        if ip.version == 6:
            raise LqosError("counters: %s is an IPv6 address, but the counter map's keys are 4 bytes (IPv4 only)."
                            % address, "probe an IPv4 address.")
        return ip.packed
    if key_size != 16:
        raise LqosError("counters: the counter map's keys are %d bytes, not an address (4 or 16 bytes)." % key_size,
                        "name a per-host counter map keyed by address in spec health.map.")
    if ip.version == 4:
        return IPV4_PREFIXES[ipv4] + ip.packed
    return ip.packed


def nearest_keys(key: bytes, keys, count: int = NEAREST) -> list:
    """The ``count`` keys of ``keys`` most like ``key``, as hex, best first: most equal bytes among the last four
    (an IPv4 address, whatever prefix encodes it; an IPv6 interface id's tail), then most leading bytes in
    common (an IPv6 prefix), then in key order."""
    def leading(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n
    scored = sorted(keys, key=lambda k: (-sum(x == y for x, y in zip(key[-4:], k[-4:])), -leading(key, k), k))
    return [k.hex() for k in scored[:count]]


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


def counter_facts(pin_root: str, spec: dict, addresses: list, detail: bool = False) -> dict:
    """{address: {"down": n, "up": n} or None (no entry)} from the spec's ``health`` counter map, read through
    its pin and decoded with the map's own BTF (kernel), per-CPU values summed. Keys are encoded for the map's
    key size and the spec's ``health.ipv4`` (``address_key``). With ``detail`` every address maps to
    {"key": hex, "map": name, "counts": the dict above or None, "nearest": [hex keys] (only without an entry:
    ``nearest_keys`` of the map's keys, so a key looked up in another encoding shows next to the real ones)}."""
    from . import btf as _btf
    from . import maps as _kmaps
    from .libbpf import LibbpfError
    from .declarations import PERCPU_MAP_TYPES

    health = spec.get("health")
    if not health:
        raise LqosError("spec %r names no counter map (health)." % spec["name"],
                        "add `health: {map: <per-host counter map>, down: <field>, up: <field>}` to the spec.")
    path = os.path.join(pin_root, health["map"])
    try:
        info = _kmaps.map_info_by_path(path)
        keys = {a: address_key(a, health.get("ipv4") or DEFAULT_IPV4, info["key_size"]) for a in addresses}
        if not info["btf_id"] or not info["value_type_name"]:
            raise LqosError("map %s carries no BTF for its value, so its counters cannot be decoded." % path,
                            "build the object with clang -g.")
        with _btf.Btf.from_kernel_id(info["btf_id"]) as btf:
            value_type = info["value_type_name"].replace("struct ", "")
            fields = {d: field_at(btf.layout, value_type, health[d]) for d in ("down", "up")}
        ncpus = possible_cpus() if info["type"] in PERCPU_MAP_TYPES else 1
        stride = (info["value_size"] + 7) & ~7 if ncpus > 1 else info["value_size"]
        out, held = {}, None
        for address, key in keys.items():
            blob = _kmaps.map_lookup(path, key)
            counts = None if blob is None else {
                d: sum(int.from_bytes(blob[c * stride + off:c * stride + off + size], "little")
                       for c in range(ncpus)) for d, (off, size) in fields.items()}
            if not detail:
                out[address] = counts
                continue
            nearest = []
            if counts is None:
                if held is None:
                    held = [k for k, _v in _kmaps.map_entries(path)]
                nearest = nearest_keys(key, held)
            out[address] = {"key": key.hex(), "map": health["map"], "counts": counts, "nearest": nearest}
        return out
    except LibbpfError as exc:
        raise LqosError("reading the counters of %s failed: %s." % (path, exc.msg.rstrip(".")),
                        "check that the programs are attached and pin_root is where they pin their maps.")


def probe_source(target: str, netns: str | None) -> str:
    """The local address this host sends from to reach ``target`` (inside ``netns``): a connected UDP
    socket asks the routing table without sending anything."""
    import socket
    from . import hooks as _hooks

    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    ctx = _hooks.netns(netns) if netns else None
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
    count, key, map, found, nearest}]; count is None when the spec names no counter map (``health``); key is the
    hex key looked up in ``map``, found whether it has an entry, nearest the map's keys most like it when it has
    no entry (``counter_facts``). Direction 1 (the interface faces
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
    counts = counter_facts(pin_root, spec, sorted({r["address"] for r in rows}), detail=True) \
        if rows and spec.get("health") else {}
    for r in rows:
        got = counts.get(r["address"])
        if got is None:
            r["count"] = None
            continue
        r["count"] = (got["counts"] or {}).get(r["field"], 0)
        r.update(key=got["key"], map=got["map"], found=got["counts"] is not None, nearest=got["nearest"])
    return rows
