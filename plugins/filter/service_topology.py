# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a service's own configuration and the inventory's topology disagree.

Pure: the deploy role's ``lqos_bpf_topology`` and the ``config`` that
``lqos.bpf.service`` read from the service's configuration file (LibreQoS's
``/etc/lqos.conf``, the stand-in's ``/etc/shaperd.conf``) in, one line per
difference out. With ``lqos_bpf_loader: service`` the service decides its
interfaces; a host whose inventory says otherwise stops before anything changes.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: service_topology_mismatch
short_description: List where a service's configuration differs from the inventory's shaper topology
version_added: 0.1.0
description:
  - Compares the deploy role's C(lqos_bpf_topology) with the configuration a service loads its programs by
    (RV(lqos.bpf.service#module:config)), as LibreQoS's lqosd reads it from C(/etc/lqos.conf).
  - V(pair) is a bridge configuration without the XDP bridge (C(use_xdp_bridge=false)), V(bridge) one with it;
    C(internet) and C(isp) are the bridge's C(to_internet) and C(to_network). V(stick) is the single-interface
    configuration; C(internet_vlan) and C(isp_vlan) are its C(internet_vlan) and C(network_vlan).
  - A C(netns) of the topology must be the configuration's (the stand-in daemon's C(netns) key); lqosd has none.
  - An empty topology differs from nothing (the configuration is taken as it is).
author: lqos.bpf maintainers (@lqos-bpf)
options:
  _input:
    description: The topology (C(lqos_bpf_topology)).
    type: dict
    required: true
  config:
    description: The C(config) returned by M(lqos.bpf.service).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Stop a host whose lqosd is configured for other interfaces
  ansible.builtin.fail:
    msg: "{{ mismatch | join('; ') }}"
  when: mismatch | length > 0
  vars:
    mismatch: "{{ lqos_bpf_topology | lqos.bpf.service_topology_mismatch(service_info.config) }}"
"""

RETURN = r"""
_value:
  description: One line per difference, naming the topology's key, its value and the configuration's; empty when
    they agree.
  type: list
  elements: str
"""

_MODES = {"pair": ("bridge", False), "bridge": ("bridge", True), "stick": ("stick", None)}


def _iface(config: dict, role: str):
    for entry in config.get("interfaces") or []:
        if entry.get("role") == role:
            return entry
    return None


def service_topology_mismatch(topology, config) -> list:
    """Lines naming each difference (str); [] when ``topology`` is empty or agrees with ``config``."""
    if not topology:
        return []
    config = config or {}
    where = config.get("path") or "the service's configuration"
    mode = topology.get("mode")
    out = []
    if mode not in _MODES:
        return ["lqos_bpf_topology.mode is %r; a service runs pair, bridge or stick" % (mode,)]
    want_mode, want_xdp_bridge = _MODES[mode]
    if config.get("mode") != want_mode:
        return ["lqos_bpf_topology.mode is %s, %s configures %s mode" % (mode, where, config.get("mode"))]
    if want_xdp_bridge is not None and bool(config.get("use_xdp_bridge")) != want_xdp_bridge:
        out.append("lqos_bpf_topology.mode is %s, %s has use_xdp_bridge = %s (%s)"
                   % (mode, where, str(bool(config.get("use_xdp_bridge"))).lower(),
                      "bridge" if config.get("use_xdp_bridge") else "pair"))
    if mode == "stick":
        pairs = [("interface", "stick")]
        vlans = config.get("vlans") or {}
        for key, cfg in (("internet_vlan", "internet"), ("isp_vlan", "isp")):
            if key in topology and topology[key] != vlans.get(cfg):
                out.append("lqos_bpf_topology.%s is %s, %s has %s" % (key, topology[key], where, vlans.get(cfg)))
    else:
        pairs = [("internet", "internet"), ("isp", "isp")]
    for key, role in pairs:
        entry = _iface(config, role)
        got = entry.get("name") if entry else None
        if topology.get(key) != got:
            out.append("lqos_bpf_topology.%s is %s, %s has %s" % (key, topology.get(key), where, got))
        netns = topology.get("netns")
        if entry and netns and (entry.get("netns") or None) != netns:
            out.append("lqos_bpf_topology.netns is %s, %s puts %s in %s"
                       % (netns, where, got, entry.get("netns") or "the host's namespace"))
    return out


class FilterModule:
    """lqos.bpf.service_topology_mismatch"""

    def filters(self):
        return {"service_topology_mismatch": service_topology_mismatch}
