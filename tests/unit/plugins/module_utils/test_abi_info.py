"""abi_info's pure parts: build description, the deploy record, hook judgement and the problem list."""
from __future__ import annotations

import os

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._info import host as A

RECORD = {
    "manifest": {"hash": "f" * 64},
    "outputs": {"object": {"name": "shaper_kern.o", "sha256": "ab" * 32, "size": 4096},
                "skeleton": {"name": "shaper_kern_skel.h", "sha256": "cd" * 32, "size": 9}},
    "skeleton": {"object": "shaper_kern", "programs": ["xdp_shaper", "tc_classify"], "maps": ["cpu_map"]},
    "built_at": "2026-01-01T00:00:00Z",
}
DEPLOYED = {"build_id": "b1", "interfaces": [
    {"name": "eth1", "netns": None, "xdp": {"program": "xdp_shaper", "tag": "aa"},
     "tc": [{"program": "tc_classify", "direction": "egress", "handle": 1, "priority": 0xC02F, "tag": "bb"}]},
    {"name": "veth0", "netns": "ns1", "xdp": None, "tc": []},
]}


def test_describe_build_reads_the_pipeline_manifest():
    build = A.describe_build("/var/lib/lqos-bpf/reference", "/var/lib/lqos-bpf/reference/builds/0123", RECORD)
    assert build == {
        "build_root": "/var/lib/lqos-bpf/reference",
        "build_dir": "/var/lib/lqos-bpf/reference/builds/0123",
        "build_id": "0123",
        "manifest_hash": "f" * 64,
        "built_at": "2026-01-01T00:00:00Z",
        "object": {"path": "/var/lib/lqos-bpf/reference/builds/0123/shaper_kern.o", "sha256": "ab" * 32,
                   "size": 4096},
        "skeleton": {"object": "shaper_kern", "programs": ["xdp_shaper", "tc_classify"], "maps": ["cpu_map"]},
    }
    assert A.describe_build("/x", None, RECORD) is None
    assert A.describe_build("/x", "/x/builds/1", None)["object"] == {"path": None, "sha256": None, "size": None}


def test_summarize_abi_check_keeps_what_the_report_needs():
    doc = {"ok": False, "build_id": "b1", "summary": "s", "problems": ["p1"], "drift": [{"kind": "constant"}],
           "pairs": [{"rust": "FlowKey", "c": "flow_key", "status": "differs", "fields": [1, 2, 3]}]}
    out = A.summarize_abi_check(doc)
    assert out["ok"] is False and out["problems"] == ["p1"] and out["drift"] == [{"kind": "constant"}]
    assert out["pairs"] == [{"rust": "FlowKey", "c": "flow_key", "status": "differs"}]
    assert A.summarize_abi_check(None) is None
    assert A.summarize_abi_check(["not", "a", "dict"]) is None


def test_deployed_hooks_matches_interface_and_netns():
    hooks = A.deployed_hooks(DEPLOYED, "eth1", None)
    assert hooks["xdp"] == {"program": "xdp_shaper", "tag": "aa"}
    assert hooks["tc"][("egress", 1, 0xC02F)]["tag"] == "bb"
    assert A.deployed_hooks(DEPLOYED, "veth0", "ns1") == {"xdp": None, "tc": {}}
    assert A.deployed_hooks(DEPLOYED, "veth0", None) is None       # same name, other namespace
    assert A.deployed_hooks(DEPLOYED, "eth9", None) is None
    assert A.deployed_hooks(None, "eth1", None) is None


@pytest.mark.parametrize("live,expected_program,recorded,known,result", [
    ({"name": "xdp_shaper", "tag": "aa"}, "xdp_shaper", {"program": "xdp_shaper", "tag": "aa"}, True, ("aa", True)),
    ({"name": "xdp_shaper", "tag": "ff"}, "xdp_shaper", {"program": "xdp_shaper", "tag": "aa"}, True, ("aa", False)),
    ({"name": "other", "tag": "aa"}, "xdp_shaper", {"program": "xdp_shaper", "tag": "aa"}, True, ("aa", False)),
    (None, "xdp_shaper", {"program": "xdp_shaper", "tag": "aa"}, True, ("aa", False)),
    # the kernel keeps 15 characters of a program name
    ({"name": "tc_bridge_redir", "tag": "cc"}, "tc_bridge_redirect",
     {"program": "tc_bridge_redirect", "tag": "cc"}, True, ("cc", True)),
    # no deploy record at all: nothing asserted
    ({"name": "other", "tag": "aa"}, "xdp_shaper", None, False, (None, None)),
    # a record for the interface, but not for this hook
    (None, "xdp_shaper", None, True, (None, None)),
    ({"name": "xdp_shaper", "tag": "aa"}, "xdp_shaper", None, True, (None, True)),
    ({"name": "foreign", "tag": "aa"}, "xdp_shaper", None, True, (None, None)),
])
def test_judge(live, expected_program, recorded, known, result):
    assert A.judge(live, expected_program, recorded, known) == result


def test_problems_lists_what_is_wrong_in_words():
    facts = {
        "build": {"build_id": "b2"},
        "abi_check": {"ok": False, "build_id": "b2", "summary": "1 of 9 mirror pair(s) differ"},
        "attached": [
            {"interface": "eth1", "netns": None, "error": None,
             "xdp": {"name": "xdp_shaper", "id": 5, "tag": "ff", "expected_program": "xdp_shaper",
                     "expected_tag": "aa", "matches": False},
             "tc": [{"direction": "egress", "name": None, "id": None, "tag": None, "expected_program": "tc_classify",
                     "expected_tag": "bb", "matches": False},
                    {"direction": "ingress", "name": "x", "id": 1, "tag": "t", "matches": None}]},
            {"interface": "veth0", "netns": "ns1", "error": "interface veth0 does not exist", "xdp": None, "tc": []},
        ],
        "pins": {"error": None, "maps": [{"name": "host_traffic", "status": "incompatible",
                                          "reason": "value_size: expected 112 (object), pinned 128"},
                                         {"name": "maps.debug", "status": "not_a_map"},
                                         {"name": "shaper_control", "status": "missing"}]},
    }
    assert A.problems(facts) == [
        "the ABI check of build b2 failed: 1 of 9 mirror pair(s) differ",
        "eth1 XDP: xdp_shaper (id 5, tag ff) is attached, the deploy attached xdp_shaper (tag aa)",
        "eth1 TC egress: nothing attached, the deploy attached tc_classify (tag bb)",
        "veth0 (netns ns1): interface veth0 does not exist",
        "pinned map host_traffic is incompatible: value_size: expected 112 (object), pinned 128",
        "pinned map shaper_control is missing while programs are attached: the map they use is reachable by no "
        "pin (run the deploy again: lqos.bpf.attach pins it again)",
    ]


def test_a_missing_pin_is_no_problem_while_nothing_is_attached():
    facts = {"build": None, "abi_check": None, "attached": [{"interface": "eth1", "xdp": None, "tc": []}],
             "pins": {"maps": [{"name": "shaper_control", "status": "missing"}]}}
    assert A.problems(facts) == []


def test_no_problems_on_a_healthy_host_and_stale_checks_are_not_problems():
    facts = {"build": {"build_id": "b2"}, "abi_check": {"ok": False, "build_id": "b1", "summary": "old"},
             "attached": [], "pins": {"error": "pin_root /x is not a bpffs mount", "maps": []}}
    assert A.problems(facts) == ["pins: pin_root /x is not a bpffs mount"]
    assert A.problems({"build": None, "abi_check": None, "attached": [], "pins": {}}) == []


def test_counter_keys_and_field_offsets():
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.counters import address_key, field_at
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    assert address_key("10.1.2.3") == b"\0" * 10 + b"\xff\xff\x0a\x01\x02\x03"
    assert address_key("2001:db8::1")[:2] == b"\x20\x01"
    with pytest.raises(LqosError) as err:
        address_key("eth0")
    assert err.value.msg == "counters: 'eth0' is not an IP address."
    layouts = {
        "host_counter": {"c_type": "struct host_counter", "members": [
            {"name": "bytes", "offset": 0, "size": 16, "kind": "struct", "type": "struct down_up_u64"},
            {"name": "icmp_packets", "offset": 64, "size": 16, "kind": "struct", "type": "struct down_up_u64"}]},
        "down_up_u64": {"c_type": "struct down_up_u64", "members": [
            {"name": "down", "offset": 0, "size": 8, "kind": "int", "type": "__u64"},
            {"name": "up", "offset": 8, "size": 8, "kind": "int", "type": "__u64"}]},
    }
    assert field_at(layouts.__getitem__, "host_counter", "icmp_packets.up") == (72, 8)
    with pytest.raises(LqosError) as err:
        field_at(layouts.__getitem__, "host_counter", "tcp_packets.down")
    assert err.value.msg == ("health field tcp_packets.down: struct host_counter has no member tcp_packets (it has "
                             "bytes, icmp_packets).")
    with pytest.raises(LqosError, match="is a struct down_up_u64 of 16 bytes, not a counter"):
        field_at(layouts.__getitem__, "host_counter", "icmp_packets")


@pytest.mark.parametrize("address,ipv4,key_size,key", [
    ("10.232.1.1", "ff_prefix", 16, "ff" * 12 + "0ae80101"),          # LibreQoS
    ("10.232.1.1", "mapped", 16, "00" * 10 + "ffff" + "0ae80101"),    # ::ffff:a.b.c.d, the reference pipeline
    ("2001:db8::1", "ff_prefix", 16, "20010db8" + "00" * 11 + "01"),  # IPv6 is the same in every encoding
    ("10.232.1.1", "mapped", 4, "0ae80101"),                          # a map keyed by IPv4 only
])
def test_address_keys_follow_the_spec_and_the_maps_key_size(address, ipv4, key_size, key):
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.counters import address_key
    assert address_key(address, ipv4, key_size).hex() == key


def test_address_keys_that_cannot_fit_are_one_clear_error():
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.counters import address_key
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    with pytest.raises(LqosError, match=r"2001:db8::1 is an IPv6 address, but the counter map's keys are 4 bytes"):
        address_key("2001:db8::1", "mapped", 4)
    with pytest.raises(LqosError, match=r"keys are 20 bytes, not an address"):
        address_key("10.0.0.1", "mapped", 20)
    with pytest.raises(LqosError, match=r"unknown IPv4 key encoding 'zeros'"):
        address_key("10.0.0.1", "zeros")


def test_nearest_keys_put_the_same_address_in_another_encoding_first():
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.counters import nearest_keys
    looked = bytes.fromhex("00" * 10 + "ffff0ae80101")
    held = [bytes.fromhex("ff" * 12 + a) for a in ("0ae80102", "0ae80101", "c0a80001")] + [bytes(16)]
    assert nearest_keys(looked, held) == ["ff" * 12 + "0ae80101", "ff" * 12 + "0ae80102", "ff" * 12 + "c0a80001"]
    assert nearest_keys(looked, []) == []


def test_spec_health_ipv4_is_checked_and_defaults_to_mapped():
    from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert validate_spec(resolve_spec_option("libreqos", repo))["health"]["ipv4"] == "ff_prefix"
    raw = resolve_spec_option("reference", repo)
    raw["health"].pop("ipv4")
    assert validate_spec(raw)["health"]["ipv4"] == "mapped"
    raw["health"]["ipv4"] = "v4mapped"
    with pytest.raises(LqosError, match=r"`health.ipv4` must be mapped or ff_prefix, got 'v4mapped'"):
        validate_spec(raw)


def test_mark_owners_gives_each_hook_its_owner_and_the_host_its_loader():
    lqosd = {"pid": 812, "comm": "lqosd", "unit": "lqosd.service"}
    attached = [
        {"interface": "eth1", "xdp": {"id": 41}, "tc": [{"id": 42}, {"id": None}]},
        {"interface": "eth2", "xdp": None, "tc": [{"id": 50}]},
        {"interface": "eth3", "error": "no such device", "xdp": None, "tc": []},
    ]
    loader = A.mark_owners(attached, {50}, {41: [lqosd], 42: [lqosd]})
    assert attached[0]["xdp"] == {"id": 41, "owner": "service", "holders": [lqosd]}
    assert attached[0]["tc"] == [{"id": 42, "owner": "service", "holders": [lqosd]},
                                 {"id": None, "owner": None, "holders": None}]
    assert attached[1]["tc"] == [{"id": 50, "owner": "collection", "holders": None}]
    assert loader == {"kind": "mixed", "units": ["lqosd.service"],
                      "counts": {"collection": 1, "service": 2, "foreign": 0}}
    assert A.mark_owners([], set(), {})["kind"] == "none"
