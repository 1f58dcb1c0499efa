# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""service_topology_mismatch: the service's configuration against the inventory's topology (plain data)."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.filter.service_topology import service_topology_mismatch as mismatch

BRIDGE = {"path": "/etc/lqos.conf", "kind": "lqosd", "mode": "bridge", "use_xdp_bridge": True, "vlans": None,
          "interfaces": [{"name": "eth1", "role": "internet", "netns": None},
                         {"name": "eth2", "role": "isp", "netns": None}]}
STICK = {"path": "/etc/lqos.conf", "kind": "lqosd", "mode": "stick", "use_xdp_bridge": None,
         "vlans": {"internet": 100, "isp": 200}, "interfaces": [{"name": "eth1", "role": "stick", "netns": None}]}


def test_no_topology_agrees_with_any_configuration():
    assert mismatch({}, BRIDGE) == []


def test_the_same_bridge_agrees():
    assert mismatch({"mode": "bridge", "internet": "eth1", "isp": "eth2"}, BRIDGE) == []


def test_swapped_ports_are_named():
    assert mismatch({"mode": "bridge", "internet": "eth2", "isp": "eth1"}, BRIDGE) == [
        "lqos_bpf_topology.internet is eth2, /etc/lqos.conf has eth1",
        "lqos_bpf_topology.isp is eth1, /etc/lqos.conf has eth2"]


def test_pair_is_a_bridge_without_the_xdp_bridge():
    assert mismatch({"mode": "pair", "internet": "eth1", "isp": "eth2"}, BRIDGE) == [
        "lqos_bpf_topology.mode is pair, /etc/lqos.conf has use_xdp_bridge = true (bridge)"]
    assert mismatch({"mode": "pair", "internet": "eth1", "isp": "eth2"}, dict(BRIDGE, use_xdp_bridge=False)) == []


def test_stick_against_bridge_stops_at_the_mode():
    assert mismatch({"mode": "stick", "interface": "eth1"}, BRIDGE) == [
        "lqos_bpf_topology.mode is stick, /etc/lqos.conf configures bridge mode"]


def test_stick_vlans_and_interface():
    assert mismatch({"mode": "stick", "interface": "eth1", "internet_vlan": 100, "isp_vlan": 200}, STICK) == []
    assert mismatch({"mode": "stick", "interface": "eth9", "internet_vlan": 100, "isp_vlan": 201}, STICK) == [
        "lqos_bpf_topology.isp_vlan is 201, /etc/lqos.conf has 200",
        "lqos_bpf_topology.interface is eth9, /etc/lqos.conf has eth1"]


def test_netns_must_be_the_configurations():
    assert mismatch({"mode": "bridge", "internet": "eth1", "isp": "eth2", "netns": "shaper"}, BRIDGE) == [
        "lqos_bpf_topology.netns is shaper, /etc/lqos.conf puts eth1 in the host's namespace",
        "lqos_bpf_topology.netns is shaper, /etc/lqos.conf puts eth2 in the host's namespace"]
