# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place where a shaper's topology becomes per-interface load-time values.

Pure: plain data in (the deploy role's ``lqos_bpf_topology`` and the pipeline
spec), plain data out (``lqos_bpf_interfaces`` entries and the bridge map's
entries). The spec's ``topology`` section names the object's own variables, so
the same topology deploys the reference pipeline and LibreQoS.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: topology_plan
short_description: Derive the per-interface load-time values of a shaper topology (pair, bridge, stick)
version_added: 0.1.0
description:
  - Turns the deploy role's C(lqos_bpf_topology) into the low-level C(lqos_bpf_interfaces) entries (one object
    instance per interface, each with its own load-time values) and, in bridge mode, the entries of the bridge
    redirector's interface map.
  - The names of the load-time variables come from the spec's C(topology) section (docs/pipeline-spec.md), never
    from this filter - the reference pipeline and LibreQoS name them differently.
  - Each TC program of the spec's C(attach.tc) is attached in the topologies its C(topologies) lists (by default all,
    but the bridge redirector of C(topology.bridge) in bridge mode only). The built-in C(libreqos) spec lists
    C(bifrost) for bridge and stick, as LibreQoS attaches it.
  - V(pair) - direction 1 on the Internet-facing interface, 2 on the ISP-facing one, both interface indexes
    set where the object has such variables; no bridge redirector.
  - V(bridge) - the pair, plus the bridge redirector on TC ingress of both interfaces and the map entries that
    send what arrives on one interface out of the other; with C(vlan_mapping), the entries of the redirector's VLAN
    redirect map (spec C(topology.bridge.vlan)) that rewrite a frame's tag on the way across. VLAN ids there are
    plain integers, host byte order, as both programs compare them.
  - V(stick) - one interface, direction 3, the Internet and ISP VLAN ids (network byte order) and the stick
    offset; when the spec attaches the bridge redirector on a stick (LibreQoS's single-interface mode), its map
    entry sending the interface's frames back out of it with the spec's C(topology.bridge.stick_flag) set to 1,
    and its VLAN map entries rewriting each of the two VLANs to the other.
author: lqos.bpf maintainers (@lqos-bpf)
options:
  _input:
    description: The topology - C(mode), C(internet) and C(isp) (pair, bridge) or C(interface) (stick),
      C(internet_vlan), C(isp_vlan), C(stick_offset) (stick), C(vlan_mapping) (bridge - a list of
      C({parent, tag, redirect_to}) as in LibreQoS's lqos.conf), and optionally C(netns), C(xdp_mode),
      C(probe_target) and C(probe_netns) (the network namespace the health check's probe is sent from, default
      C(netns); on a bridge the shaper has no address of its own, so a host behind the ISP-facing port sends it).
    type: dict
    required: true
  spec:
    description: The pipeline spec, validated - a built-in name, a YAML path (relative to O(basedir)) or a mapping.
    type: raw
    required: true
  basedir:
    description: Folder a relative spec path is relative to (the deploy role passes C(playbook_dir)).
    type: str
"""

EXAMPLES = r"""
- name: Derive the interfaces of a two-interface shaper
  ansible.builtin.set_fact:
    shaper_plan: "{{ {'mode': 'pair', 'internet': 'ens19', 'isp': 'ens20'} | lqos.bpf.topology_plan('libreqos') }}"
# shaper_plan.interfaces[0].topology_data ==
#   {direction: 1, to_internet_ifindex: 'ifindex:ens19', to_isp_ifindex: 'ifindex:ens20'}
"""

RETURN = r"""
_value:
  description:
    - C(mode); C(interfaces) - entries for the deploy role's C(lqos_bpf_interfaces) (C(name), C(netns),
      C(xdp_mode), C(topology_data) (the option of that name of M(lqos.bpf.attach) -
      a variable an older object lacks is left out with a note), C(tc_programs), C(probe_target),
      C(probe_netns), C(probe_direction));
      C(bridge) - null, or
      C(program), C(map), C(netns) and C(entries) (C(key), C(value)) for M(lqos.bpf.map_entries), and C(vlan) -
      null, or the VLAN redirect map's C(map), C(entries) and C(rewrites) (one line per mapping, for the plan).
  type: dict
"""

import re

from ansible_collections.lqos.bpf.plugins.module_utils._spec import VLAN_PACKED_KEY, tc_topologies

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - unit tests run with ansible-core installed
    AnsibleFilterError = ValueError

MODES = ("pair", "bridge", "stick")
KEYS = {
    "pair": ("mode", "internet", "isp", "netns", "xdp_mode", "probe_target", "probe_netns"),
    "bridge": ("mode", "internet", "isp", "netns", "xdp_mode", "probe_target", "probe_netns", "vlan_mapping"),
    "stick": ("mode", "interface", "internet_vlan", "isp_vlan", "stick_offset", "netns", "xdp_mode", "probe_target",
              "probe_netns"),
}
VLAN_KEYS = ("parent", "tag", "redirect_to")   # as LibreQoS's lqos.conf writes its bridge's vlan_mapping
XDP_MODES = ("auto", "hw", "native", "skb")
DIRECTIONS = {"internet": 1, "isp": 2, "stick": 3}
_IFNAME = re.compile(r"^[^/:\s]{1,15}$")


def _fail(problem: str, fix: str):
    return AnsibleFilterError("lqos_bpf_topology: %s Fix: %s" % (problem, fix))


def _ifname(topology: dict, key: str) -> str:
    name = topology.get(key)
    if name is None:
        raise _fail("mode %s needs `%s` (an interface name)." % (topology["mode"], key),
                    "add `%s: <interface>`." % key)
    if not isinstance(name, str) or name in (".", "..") or not _IFNAME.match(name):
        raise _fail("`%s` must be an interface name (1 to 15 characters, no '/', ':' or space), got %r."
                    % (key, name), "give the interface's name as `ip link` shows it.")
    return name


def _integer(topology: dict, key: str, low: int, high: int, where: str = "") -> int:
    value = topology.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail("`%s%s` must be an integer from %d to %d, got %r." % (where, key, low, high, value),
                    "give the number%s." % (" (a VLAN id)" if high == 4094 else ""))
    return value


def _at(path: str, value) -> dict:
    """{a: {b: value}} for the field path a.b of a map's value."""
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def _vlan_entries(mapping, vlan, ports: tuple, spec_name: str) -> list:
    """The VLAN redirect map's entries of a bridge's ``vlan_mapping`` ({parent, tag, redirect_to} each), keyed and
    valued by the spec's names (``topology.bridge.vlan``); VLAN ids are plain integers (host byte order)."""
    if not vlan:
        raise _fail("pipeline spec %r names no VLAN redirect map (topology.bridge.vlan): this object cannot rewrite "
                    "VLAN tags." % spec_name,
                    "remove vlan_mapping, or add `topology.bridge.vlan: {map, key, value}` to the spec "
                    "(docs/pipeline-spec.md).")
    if not isinstance(mapping, list):
        raise _fail("`vlan_mapping` must be a list of {parent, tag, redirect_to}, got %r." % (mapping,),
                    "e.g. vlan_mapping: [{parent: %s, tag: 100, redirect_to: 200}]." % ports[0])
    entries, seen = [], set()
    for i, item in enumerate(mapping):
        where = "vlan_mapping[%d]." % i
        if not isinstance(item, dict) or sorted(str(k) for k in item) != sorted(VLAN_KEYS):
            raise _fail("`vlan_mapping[%d]` must be a mapping with exactly parent, tag and redirect_to, got %r."
                        % (i, item), "write it as {parent: <port>, tag: <VLAN id>, redirect_to: <VLAN id>}.")
        parent = item["parent"]
        if parent not in ports:
            raise _fail("`%sparent` is %r, not a port of this bridge (internet %s, isp %s)."
                        % (where, parent, ports[0], ports[1]),
                        "name the port the tagged frames arrive on: %s or %s." % ports)
        tag = _integer(item, "tag", 1, 4094, where)
        to = _integer(item, "redirect_to", 1, 4094, where)
        if (parent, tag) in seen:
            raise _fail("`vlan_mapping` names VLAN %d on %s twice." % (tag, parent),
                        "keep one entry per port and tag.")
        seen.add((parent, tag))
        if vlan["key"] == VLAN_PACKED_KEY:
            key = "ifindex_vlan:%s:%d" % (parent, tag)
        else:
            key = {vlan["key"]["ifindex"]: "ifindex:%s" % parent, vlan["key"]["tag"]: tag}
        entries.append({"key": key, "value": _at(vlan["value"], to)})
    return entries


def _stick_bridge(bridge: dict, name: str, internet_vlan: int, isp_vlan: int, netns, spec_name: str) -> dict:
    """The redirector's maps on a stick (LibreQoS's single-interface mode): the interface redirects to itself with
    the spec's ``stick_flag`` field set (scan the VLANs), and each of the two VLANs is rewritten to the other."""
    if not bridge.get("stick_flag") or not bridge.get("vlan"):
        raise _fail("pipeline spec %r attaches its bridge redirector %s on a stick but names no %s."
                    % (spec_name, bridge["program"], "stick_flag (topology.bridge.stick_flag)"
                       if not bridge.get("stick_flag") else "VLAN redirect map (topology.bridge.vlan)"),
                    "add it to the spec's topology.bridge, or leave stick out of the redirector's "
                    "attach.tc topologies.")
    value = dict(_at(bridge["target"], "ifindex:%s" % name))
    value.update(_at(bridge["stick_flag"], 1))
    swaps = [{"parent": name, "tag": internet_vlan, "redirect_to": isp_vlan},
             {"parent": name, "tag": isp_vlan, "redirect_to": internet_vlan}]
    return {"program": bridge["program"], "map": bridge["map"], "netns": netns,
            "entries": [{"key": "ifindex:%s" % name, "value": value}],
            "vlan": {"map": bridge["vlan"]["map"],
                     "entries": _vlan_entries(swaps, bridge["vlan"], (name, name), spec_name),
                     "rewrites": ["%s VLAN %d -> %d" % (name, s["tag"], s["redirect_to"]) for s in swaps]}}


def _spec_of(spec, basedir):
    """The validated spec: a built-in name, a YAML path or a mapping (validating a validated spec is a no-op)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option
    try:
        return resolve_spec_option(spec, basedir)
    except LqosError as exc:
        raise AnsibleFilterError(str(exc))


def topology_plan(topology, spec, basedir=None) -> dict:
    """{"mode", "interfaces": [...], "bridge": {...} or None} for ``topology`` and the spec."""
    if not isinstance(topology, dict):
        raise _fail("must be a mapping with `mode`, got %r." % (topology,),
                    "e.g. {mode: pair, internet: ens19, isp: ens20} (docs/roles.md).")
    mode = topology.get("mode")
    if mode not in MODES:
        raise _fail("`mode` must be one of %s, got %r." % (", ".join(MODES), mode),
                    "pair: two interfaces; bridge: two interfaces joined by the TC redirector; stick: one "
                    "interface with two VLANs.")
    if "vlan_mapping" in topology and mode != "bridge":
        raise _fail("`vlan_mapping` needs mode bridge (the bridge redirector rewrites the tags), got mode %s." % mode,
                    "use mode bridge, or remove vlan_mapping.")
    unknown = sorted(str(k) for k in topology if k not in KEYS[mode])
    if unknown:
        raise _fail("%s %s not a key of mode %s." % (", ".join("`%s`" % k for k in unknown),
                                                     "is" if len(unknown) == 1 else "are", mode),
                    "use only %s." % ", ".join(KEYS[mode]))
    spec = _spec_of(spec, basedir)
    names = spec.get("topology")
    if not names:
        raise _fail("pipeline spec %r has no `topology` section naming its load-time variables." % spec["name"],
                    "add `topology: {direction: <variable>, ...}` to the spec (docs/pipeline-spec.md), or write "
                    "lqos_bpf_interfaces with explicit data instead.")
    xdp_mode = topology.get("xdp_mode", "auto")
    if xdp_mode not in XDP_MODES:
        raise _fail("`xdp_mode` must be one of %s, got %r." % (", ".join(XDP_MODES), xdp_mode), "fix xdp_mode.")
    netns = topology.get("netns")
    netns_ok = isinstance(netns, str) and re.match(r"^[A-Za-z0-9_.-]{1,64}$", netns) and netns not in (".", "..")
    if netns is not None and not netns_ok:
        raise _fail("`netns` must be a network namespace name, got %r." % (netns,), "name one under /run/netns.")
    probe = topology.get("probe_target")
    if probe is not None and not isinstance(probe, str):
        raise _fail("`probe_target` must be an address, got %r." % (probe,), "quote it.")
    probe_netns = topology.get("probe_netns")
    netns_name = isinstance(probe_netns, str) and re.match(r"^[A-Za-z0-9_.-]{1,64}$", probe_netns)
    if probe_netns is not None and (not netns_name or probe_netns in (".", "..")):
        raise _fail("`probe_netns` must be a network namespace name, got %r." % (probe_netns,),
                    "name one under /run/netns.")

    bridge = names.get("bridge")
    all_tc = [t["program"] for t in (spec.get("attach") or {}).get("tc") or []]
    if mode == "bridge":
        if not bridge:
            raise _fail("pipeline spec %r names no bridge redirector (topology.bridge)." % spec["name"],
                        "add `topology.bridge: {program, map, target}` to the spec, or use mode pair.")
        if bridge["program"] not in all_tc:
            raise _fail("the bridge redirector %s is not among the spec's TC programs (attach.tc: %s)."
                        % (bridge["program"], ", ".join(all_tc) or "none"),
                        "list it in the spec's attach.tc with direction ingress.")
    # Each TC program in the topologies its spec entry lists (attach.tc[i].topologies): LibreQoS attaches its
    # bridge redirector in XDP-bridge mode and on a stick, never in a plain pair.
    tc_programs = [t["program"] for t in (spec.get("attach") or {}).get("tc") or [] if mode in tc_topologies(spec, t)]
    stick_redirect = bool(mode == "stick" and bridge and bridge["program"] in tc_programs)

    def values(direction: int, internet: str, isp: str) -> dict:
        data = {names["direction"]: direction}
        if names.get("own_ifindex"):
            data[names["own_ifindex"]] = "ifindex"
        if names.get("internet_ifindex"):
            data[names["internet_ifindex"]] = "ifindex:%s" % internet
        if names.get("isp_ifindex"):
            data[names["isp_ifindex"]] = "ifindex:%s" % isp
        return data

    def entry(name: str, data: dict, probe_target, probe_direction: int) -> dict:
        out = {"name": name, "xdp_mode": xdp_mode, "topology_data": data, "tc_programs": list(tc_programs),
               "probe_direction": probe_direction}
        if netns:
            out["netns"] = netns
        if probe_target is not None:
            out["probe_target"] = probe_target
            if probe_target and probe_netns:
                out["probe_netns"] = probe_netns
        return out

    if mode == "stick":
        name = _ifname(topology, "interface")
        data = values(DIRECTIONS["stick"], name, name)
        for key in ("internet_vlan", "isp_vlan"):
            vlan = _integer(topology, key, 1, 4094)
            if not names.get(key):
                raise _fail("pipeline spec %r names no variable for the %s (topology.%s): this object cannot run on "
                            "a stick." % (spec["name"], key.replace("_", " "), key),
                            "add it to the spec's topology section, or use mode pair.")
            data[names[key]] = "be16:%d" % vlan
        if topology["internet_vlan"] == topology["isp_vlan"]:
            raise _fail("`internet_vlan` and `isp_vlan` are both %s." % topology["isp_vlan"],
                        "give the two sides different VLAN ids.")
        if topology.get("stick_offset") is not None:
            offset = _integer(topology, "stick_offset", 0, 0xFFFFFFFF)
            if not names.get("stick_offset"):
                raise _fail("pipeline spec %r names no stick offset variable (topology.stick_offset)." % spec["name"],
                            "leave stick_offset out, or add it to the spec's topology section.")
            data[names["stick_offset"]] = offset
        # The probe's replies come back tagged with the Internet VLAN: counted "down", as on an Internet-facing port.
        plan_bridge = None
        if stick_redirect:
            plan_bridge = _stick_bridge(bridge, name, int(topology["internet_vlan"]), int(topology["isp_vlan"]), netns,
                                        spec["name"])
        return {"mode": mode, "interfaces": [entry(name, data, probe, 1)], "bridge": plan_bridge}

    internet, isp = _ifname(topology, "internet"), _ifname(topology, "isp")
    if internet == isp:
        raise _fail("`internet` and `isp` are both %s." % internet,
                    "give two interfaces, or use mode stick for one interface with two VLANs.")
    interfaces = [entry(internet, values(DIRECTIONS["internet"], internet, isp), probe, 1),
                  # No probe from the ISP side: the customers are not the health check's target.
                  entry(isp, values(DIRECTIONS["isp"], internet, isp), "", 2)]
    plan_bridge = None
    if mode == "bridge":
        plan_bridge = {"program": bridge["program"], "map": bridge["map"], "netns": netns,
                       "entries": [{"key": "ifindex:%s" % internet, "value": _at(bridge["target"], "ifindex:%s" % isp)},
                                   {"key": "ifindex:%s" % isp, "value": _at(bridge["target"], "ifindex:%s" % internet)}],
                       "vlan": None}
        if topology.get("vlan_mapping") not in (None, []):
            entries = _vlan_entries(topology["vlan_mapping"], bridge.get("vlan"), (internet, isp), spec["name"])
            plan_bridge["vlan"] = {"map": bridge["vlan"]["map"], "entries": entries,
                                   "rewrites": ["%(parent)s VLAN %(tag)s -> %(redirect_to)s" % m
                                                for m in topology["vlan_mapping"]]}
    return {"mode": mode, "interfaces": interfaces, "bridge": plan_bridge}


class FilterModule:
    """lqos.bpf.topology_plan"""

    def filters(self):
        return {"topology_plan": topology_plan}
