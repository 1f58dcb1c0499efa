"""The topology filter: LibreQoS's three topologies as per-interface load-time values, named by the spec."""
from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.lqos.bpf.plugins.filter.topology_plan import FilterModule, topology_plan
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

REF_TC = ["tc_classify", "tc_bridge_redirect"]


def test_the_filter_is_registered():
    assert FilterModule().filters()["topology_plan"] is topology_plan


def test_pair_on_libreqos_sets_direction_and_both_indexes():
    plan = topology_plan({"mode": "pair", "internet": "ens19", "isp": "ens20"}, "libreqos")
    both = {"to_internet_ifindex": "ifindex:ens19", "to_isp_ifindex": "ifindex:ens20"}
    assert plan == {"mode": "pair", "bridge": None, "interfaces": [
        {"name": "ens19", "xdp_mode": "auto", "topology_data": dict(both, direction=1), "tc_programs": ["tc_iphash_to_cpu"],
         "probe_direction": 1},
        {"name": "ens20", "xdp_mode": "auto", "topology_data": dict(both, direction=2), "tc_programs": ["tc_iphash_to_cpu"],
         "probe_direction": 2, "probe_target": ""}]}


def test_pair_on_the_reference_uses_its_own_names():
    plan = topology_plan({"mode": "pair", "internet": "wan0", "isp": "lan0", "netns": "shaper",
                          "probe_target": "192.0.2.1", "xdp_mode": "skb"}, "reference")
    wan, lan = plan["interfaces"]
    assert wan == {"name": "wan0", "netns": "shaper", "xdp_mode": "skb", "probe_target": "192.0.2.1",
                   "probe_direction": 1, "topology_data": {"direction": 1, "attach_ifindex": "ifindex"},
                   "tc_programs": ["tc_classify"]}
    assert lan["topology_data"] == {"direction": 2, "attach_ifindex": "ifindex"} and lan["probe_target"] == ""


def test_bridge_adds_the_redirector_and_its_map_entries():
    plan = topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": "s"}, "reference")
    assert [i["tc_programs"] for i in plan["interfaces"]] == [REF_TC, REF_TC]
    assert plan["bridge"] == {"program": "tc_bridge_redirect", "map": "bridge_redirect", "netns": "s", "entries": [
        {"key": "ifindex:wan0", "value": {"to_ifindex": "ifindex:lan0"}},
        {"key": "ifindex:lan0", "value": {"to_ifindex": "ifindex:wan0"}}], "vlan": None}
    lq = topology_plan({"mode": "bridge", "internet": "a", "isp": "b"}, "libreqos")
    assert lq["bridge"]["map"] == "bifrost_interface_map"
    assert lq["bridge"]["entries"][0] == {"key": "ifindex:a", "value": {"redirect_to": "ifindex:b"}}
    assert lq["interfaces"][0]["tc_programs"] == ["tc_iphash_to_cpu", "bifrost"]


MAPPING = [{"parent": "wan0", "tag": 100, "redirect_to": 200}, {"parent": "lan0", "tag": "200", "redirect_to": 100}]


def test_a_bridge_s_vlan_mapping_becomes_the_vlan_map_s_entries_by_the_spec_s_names():
    """VLAN ids are plain integers (host byte order, as both programs compare them); the key is the spec's
    struct fields on the reference, and LibreQoS's one integer (ifindex << 16 | tag) on bifrost_vlan_map."""
    topology = {"mode": "bridge", "internet": "wan0", "isp": "lan0", "vlan_mapping": MAPPING}
    ref = topology_plan(topology, "reference")["bridge"]
    assert ref["vlan"] == {"map": "bridge_vlan_map", "entries": [
        {"key": {"ifindex": "ifindex:wan0", "vlan_id": 100}, "value": {"vlan_id": 200}},
        {"key": {"ifindex": "ifindex:lan0", "vlan_id": 200}, "value": {"vlan_id": 100}}],
        "rewrites": ["wan0 VLAN 100 -> 200", "lan0 VLAN 200 -> 100"]}
    assert len(ref["entries"]) == 2   # the interface map is written as without a mapping
    lq = topology_plan(topology, "libreqos")["bridge"]
    assert lq["vlan"] == {"map": "bifrost_vlan_map", "entries": [
        {"key": "ifindex_vlan:wan0:100", "value": {"redirect_to": 200}},
        {"key": "ifindex_vlan:lan0:200", "value": {"redirect_to": 100}}],
        "rewrites": ["wan0 VLAN 100 -> 200", "lan0 VLAN 200 -> 100"]}
    # an empty mapping is no mapping: nothing to write
    assert topology_plan(dict(topology, vlan_mapping=[]), "reference")["bridge"]["vlan"] is None


@pytest.mark.parametrize("mapping, message", [
    ([{"parent": "wan0", "tag": 0, "redirect_to": 200}],
     "lqos_bpf_topology: `vlan_mapping[0].tag` must be an integer from 1 to 4094, got 0. Fix: give the number "
     "(a VLAN id)."),
    ([MAPPING[0], {"parent": "lan0", "tag": 5, "redirect_to": 4095}],
     "lqos_bpf_topology: `vlan_mapping[1].redirect_to` must be an integer from 1 to 4094, got 4095."),
    ([{"parent": "eth9", "tag": 5, "redirect_to": 6}],
     "lqos_bpf_topology: `vlan_mapping[0].parent` is 'eth9', not a port of this bridge (internet wan0, isp lan0). "
     "Fix: name the port the tagged frames arrive on: wan0 or lan0."),
    ([{"parent": "wan0", "tag": 5}],
     "lqos_bpf_topology: `vlan_mapping[0]` must be a mapping with exactly parent, tag and redirect_to, got "
     "{'parent': 'wan0', 'tag': 5}. Fix: write it as {parent: <port>, tag: <VLAN id>, redirect_to: <VLAN id>}."),
    ([MAPPING[0], dict(MAPPING[0], redirect_to=300)],
     "lqos_bpf_topology: `vlan_mapping` names VLAN 100 on wan0 twice. Fix: keep one entry per port and tag."),
    ({"parent": "wan0", "tag": 5, "redirect_to": 6},
     "lqos_bpf_topology: `vlan_mapping` must be a list of {parent, tag, redirect_to}, got"),
])
def test_a_bad_vlan_mapping_is_one_clear_error(mapping, message):
    with pytest.raises(AnsibleFilterError) as exc:
        topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "vlan_mapping": mapping}, "reference")
    assert str(exc.value).startswith(message)


def test_a_vlan_mapping_needs_bridge_mode_and_a_spec_that_names_the_map():
    for topology in ({"mode": "pair", "internet": "a", "isp": "b"},
                     {"mode": "stick", "interface": "a", "internet_vlan": 1, "isp_vlan": 2}):
        with pytest.raises(AnsibleFilterError) as exc:
            topology_plan(dict(topology, vlan_mapping=MAPPING), "libreqos")
        assert str(exc.value) == (
            "lqos_bpf_topology: `vlan_mapping` needs mode bridge (the bridge redirector rewrites the tags), got mode "
            "%s. Fix: use mode bridge, or remove vlan_mapping." % topology["mode"])
    spec = resolve_spec_option("reference")
    no_vlan = dict(spec, topology=dict(spec["topology"], bridge=dict(spec["topology"]["bridge"], vlan=None)))
    with pytest.raises(AnsibleFilterError) as exc:
        topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "vlan_mapping": MAPPING}, no_vlan)
    assert str(exc.value) == (
        "lqos_bpf_topology: pipeline spec 'reference' names no VLAN redirect map (topology.bridge.vlan): this object "
        "cannot rewrite VLAN tags. Fix: remove vlan_mapping, or add `topology.bridge.vlan: {map, key, value}` to the "
        "spec (docs/pipeline-spec.md).")


def test_stick_sets_direction_3_the_vlans_big_endian_and_the_offset():
    plan = topology_plan({"mode": "stick", "interface": "ens19", "internet_vlan": 100, "isp_vlan": "200",
                          "stick_offset": 1}, "libreqos")
    # As LibreQoS's single-interface mode: bifrost on ingress, the interface redirecting to itself with
    # scan_vlans set, and each VLAN rewritten to the other (one-integer keys ifindex << 16 | tag).
    assert plan["bridge"] == {
        "program": "bifrost", "map": "bifrost_interface_map", "netns": None,
        "entries": [{"key": "ifindex:ens19", "value": {"redirect_to": "ifindex:ens19", "scan_vlans": 1}}],
        "vlan": {"map": "bifrost_vlan_map",
                 "entries": [{"key": "ifindex_vlan:ens19:100", "value": {"redirect_to": 200}},
                             {"key": "ifindex_vlan:ens19:200", "value": {"redirect_to": 100}}],
                 "rewrites": ["ens19 VLAN 100 -> 200", "ens19 VLAN 200 -> 100"]}}
    assert plan["interfaces"] == [{
        "name": "ens19", "xdp_mode": "auto", "tc_programs": ["tc_iphash_to_cpu", "bifrost"], "probe_direction": 1,
        "topology_data": {"direction": 3, "to_internet_ifindex": "ifindex:ens19", "to_isp_ifindex": "ifindex:ens19",
                          "internet_vlan": "be16:100", "isp_vlan": "be16:200", "stick_offset": 1}}]
    ref = topology_plan({"mode": "stick", "interface": "eth1", "internet_vlan": 100, "isp_vlan": 200}, "reference")
    assert ref["bridge"] is None and ref["interfaces"][0]["tc_programs"] == ["tc_classify"]
    assert ref["interfaces"][0]["topology_data"] == {"direction": 3, "attach_ifindex": "ifindex",
                                                     "stick_vlan_internet": "be16:100", "stick_vlan_lan": "be16:200"}


def test_the_spec_may_be_a_validated_mapping_or_a_raw_one():
    spec = resolve_spec_option("reference")
    assert topology_plan({"mode": "pair", "internet": "a", "isp": "b"}, spec)["interfaces"][0]["topology_data"]["direction"] == 1


@pytest.mark.parametrize("topology, message", [
    ("pair", "lqos_bpf_topology: must be a mapping with `mode`, got 'pair'. Fix: e.g. {mode: pair, internet: ens19, "
             "isp: ens20} (docs/roles.md)."),
    ({"mode": "ring"}, "lqos_bpf_topology: `mode` must be one of pair, bridge, stick, got 'ring'."),
    ({"mode": "pair", "internet": "a"}, "lqos_bpf_topology: mode pair needs `isp` (an interface name). "
                                        "Fix: add `isp: <interface>`."),
    ({"mode": "pair", "internet": "a", "isp": "a"}, "lqos_bpf_topology: `internet` and `isp` are both a."),
    ({"mode": "pair", "internet": "a", "isp": "b", "internet_vlan": 3},
     "lqos_bpf_topology: `internet_vlan` is not a key of mode pair. Fix: use only mode, internet, isp, netns, "
     "xdp_mode, probe_target, probe_netns."),
    ({"mode": "stick", "interface": "a/b", "internet_vlan": 1, "isp_vlan": 2},
     "lqos_bpf_topology: `interface` must be an interface name (1 to 15 characters, no '/', ':' or space), "
     "got 'a/b'."),
    ({"mode": "stick", "interface": "a", "internet_vlan": 4095, "isp_vlan": 2},
     "lqos_bpf_topology: `internet_vlan` must be an integer from 1 to 4094, got 4095. Fix: give the number "
     "(a VLAN id)."),
    ({"mode": "stick", "interface": "a", "internet_vlan": 7, "isp_vlan": 7},
     "lqos_bpf_topology: `internet_vlan` and `isp_vlan` are both 7."),
    ({"mode": "stick", "interface": "a", "internet_vlan": 7, "isp_vlan": 8, "stick_offset": -1},
     "lqos_bpf_topology: `stick_offset` must be an integer from 0 to 4294967295, got -1."),
])
def test_bad_input_is_one_clear_error(topology, message):
    with pytest.raises(AnsibleFilterError) as exc:
        topology_plan(topology, "reference")
    assert str(exc.value).startswith(message)


def test_a_spec_without_the_names_is_an_error_naming_the_fix():
    spec = resolve_spec_option("reference")
    bare = dict(spec, topology=None)
    with pytest.raises(AnsibleFilterError) as exc:
        topology_plan({"mode": "pair", "internet": "a", "isp": "b"}, bare)
    assert str(exc.value).startswith("lqos_bpf_topology: pipeline spec 'reference' has no `topology` section")
    no_vlans = dict(spec, topology=dict(spec["topology"], internet_vlan=None))
    with pytest.raises(AnsibleFilterError) as exc:
        topology_plan({"mode": "stick", "interface": "a", "internet_vlan": 1, "isp_vlan": 2}, no_vlans)
    assert "names no variable for the internet vlan (topology.internet_vlan): this object cannot run on a stick" \
        in str(exc.value)
    no_bridge = dict(spec, topology=dict(spec["topology"], bridge=None))
    with pytest.raises(AnsibleFilterError, match="names no bridge redirector"):
        topology_plan({"mode": "bridge", "internet": "a", "isp": "b"}, no_bridge)
    with pytest.raises(AnsibleFilterError, match="no built-in pipeline spec named 'nosuch'"):
        topology_plan({"mode": "pair", "internet": "a", "isp": "b"}, "nosuch")


def test_each_tc_program_is_attached_in_the_topologies_its_spec_entry_lists():
    """LibreQoS: bifrost in bridge and stick mode, never in a plain pair; the reference redirector in bridge mode."""
    for mode, topo, want in (("pair", {"internet": "a", "isp": "b"}, ["tc_iphash_to_cpu"]),
                             ("bridge", {"internet": "a", "isp": "b"}, ["tc_iphash_to_cpu", "bifrost"]),
                             ("stick", {"interface": "a", "internet_vlan": 1, "isp_vlan": 2},
                              ["tc_iphash_to_cpu", "bifrost"])):
        plan = topology_plan(dict(topo, mode=mode), "libreqos")
        assert [i["tc_programs"] for i in plan["interfaces"]] == [want] * len(plan["interfaces"]), mode
    spec = resolve_spec_option("libreqos")
    spec["topology"]["bridge"].pop("stick_flag")
    with pytest.raises(Exception, match=r"attaches its bridge redirector bifrost on a stick but names no stick_flag"):
        topology_plan({"mode": "stick", "interface": "a", "internet_vlan": 1, "isp_vlan": 2}, spec)
