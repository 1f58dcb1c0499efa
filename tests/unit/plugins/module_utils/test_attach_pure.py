"""Pure planning logic of lqos.bpf.attach: names, load parameters, fingerprints and the
decision for each hook slot, on plain data (the kernel side is in tests/functional)."""
from __future__ import annotations

import json

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._attach import plan as A
from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

SPEC = validate_spec({
    "name": "reference",
    "sources": {"kern": "shaper_kern.c"},
    "outputs": {"object": "shaper_kern.o"},
    "cpu_sized_maps": [{"map": "cpu_map", "constant": "MAX_CPUS", "header": "common/maximums.h"}],
    "attach": {
        "xdp": "xdp_shaper",
        "tc": [{"program": "tc_classify", "direction": "egress", "handle": 1, "priority": 0xC02F},
               {"program": "tc_bridge_redirect", "direction": "ingress", "handle": 1, "priority": 0xC02F,
                "optional": True}],
        "rodata": {"cpu_count": "possible_cpus"},
        "data": {"attach_ifindex": "ifindex", "direction": 1},
    },
})
PROGRAMS = {"xdp_shaper": "xdp", "tc_classify": "sched_cls", "tc_bridge_redirect": "sched_cls",
            "flow_reader": "tracing"}
FP = "f" * 64
SLOT = {"program": "tc_classify", "direction": "egress", "handle": 1, "priority": 0xC02F}


@pytest.mark.parametrize("name,component", [
    ("eth0", "eth0"), ("eth0.100", "eth0%2E100"), ("50%.x", "50%25%2Ex"), ("a/b", "a%2Fb")])
def test_pin_component_never_contains_a_dot_or_slash(name, component):
    assert A.pin_component(name) == component
    assert "." not in component and "/" not in component


def test_pin_dir_and_state_file_names():
    assert A.pin_rel_dir(None, "eth1") == "lqos_bpf/host/eth1"
    assert A.pin_rel_dir("ns1", "br0.5") == "lqos_bpf/ns1/br0%2E5"
    one = A.state_file_name("/sys/fs/bpf", "ns1", "eth1")
    assert one.startswith("ns1-eth1-") and one.endswith(".json")
    assert one != A.state_file_name("/other/bpffs", "ns1", "eth1")
    assert one != A.state_file_name("/sys/fs/bpf", None, "eth1")
    assert A.default_object(SPEC) == "/var/lib/lqos-bpf/reference/current/shaper_kern.o"


@pytest.mark.parametrize("bad", ["", "a" * 16, "eth 0", "eth0:1", "a/b", ".", ".."])
def test_bad_interface_names_are_refused(bad):
    with pytest.raises(LqosError, match="is not a valid interface name"):
        A.validate_ifname(bad)


@pytest.mark.parametrize("bad", ["host", "../x", "a/b", "-x", ""])
def test_bad_netns_names_are_refused(bad):
    with pytest.raises(LqosError, match="is not a network namespace name"):
        A.validate_netns(bad)


def test_load_params_resolve_the_special_words():
    params = A.load_params(SPEC, ncpus=4, ifindex=7)
    assert params == {"resize": {"cpu_map": 4}, "rodata": {"cpu_count": 4},
                      "data": {"attach_ifindex": 7, "direction": 1}}
    assert A.describe_params(params) == ("cpu_map max_entries=4, rodata cpu_count=4, data attach_ifindex=7, "
                                         "data direction=1")


def test_fingerprint_covers_the_object_and_every_load_value():
    params = A.load_params(SPEC, 4, 7)
    base = A.fingerprint("a" * 64, params)
    assert base == A.fingerprint("a" * 64, json.loads(json.dumps(params)))
    assert base != A.fingerprint("b" * 64, params)
    assert base != A.fingerprint("a" * 64, A.load_params(SPEC, 4, 8))     # another ifindex
    assert base != A.fingerprint("a" * 64, A.load_params(SPEC, 2, 7))     # another CPU count


def test_wanted_slots_checks_names_and_types():
    xdp, tc, notes = A.wanted_slots(SPEC, PROGRAMS, True, "/o.o")
    assert xdp == "xdp_shaper"
    assert [A.slot_id(s) for s in tc] == ["egress:0x1:0xc02f", "ingress:0x1:0xc02f"]
    assert notes == []
    assert A.wanted_slots(SPEC, PROGRAMS, False, "/o.o")[1] == []
    # An optional program missing from the object is skipped with a note; a required one fails.
    progs = dict(PROGRAMS)
    del progs["tc_bridge_redirect"]
    xdp, tc, notes = A.wanted_slots(SPEC, progs, True, "/o.o")
    assert [s["program"] for s in tc] == ["tc_classify"]
    assert notes == ["optional program tc_bridge_redirect (attach.tc[1]) is not in /o.o: skipped"]
    del progs["xdp_shaper"]
    with pytest.raises(LqosError) as exc:
        A.wanted_slots(SPEC, progs, True, "/o.o")
    assert str(exc.value) == ("program xdp_shaper (spec attach.xdp) is not in /o.o; it has flow_reader, tc_classify. "
                              "Fix: rebuild the object with lqos.bpf.pipeline, or fix spec attach.xdp.")
    with pytest.raises(LqosError) as exc:
        A.wanted_slots(SPEC, dict(PROGRAMS, tc_classify="xdp"), True, "/o.o")
    assert str(exc.value) == ("program tc_classify (spec attach.tc[0]) in /o.o is a xdp program, not sched_cls. "
                              "Fix: name a SEC(\"tc\") program there.")


def test_tc_programs_picks_among_the_spec_s_tc_programs():
    xdp, tc, notes = A.wanted_slots(SPEC, PROGRAMS, True, "/o.o", only=["tc_classify"])
    assert notes == []
    assert xdp == "xdp_shaper" and [s["program"] for s in tc] == ["tc_classify"]
    assert A.wanted_slots(SPEC, PROGRAMS, True, "/o.o", only=[])[1] == []
    with pytest.raises(LqosError) as exc:
        A.wanted_slots(SPEC, PROGRAMS, True, "/o.o", only=["bifrost"])
    assert str(exc.value) == ("tc_programs: bifrost is not among the spec's TC programs (attach.tc: tc_classify, "
                              "tc_bridge_redirect). Fix: name programs of attach.tc, or leave tc_programs out to "
                              "attach all of them.")


def test_a_spec_that_attaches_nothing_is_an_error():
    spec = validate_spec({"name": "empty", "sources": {"kern": "k.c"}, "outputs": {}})
    with pytest.raises(LqosError, match="attaches nothing"):
        A.wanted_slots(spec, PROGRAMS, True, "/o.o")


def xdp_now(mode=None, prog_id=0, name="xdp_shaper"):
    if not prog_id:
        return {"ids": {}, "info": {}}
    return {"ids": {mode: prog_id}, "info": {prog_id: {"name": name, "tag": "ab" * 8}}}


def record(prog_id, fp=FP, program="xdp_shaper"):
    return {"id": prog_id, "fingerprint": fp, "program": program}


@pytest.mark.parametrize("want_mode,current,ours,rec,force,kind,mode", [
    # empty hook: attach in the wanted mode
    ("auto", xdp_now(), set(), None, False, A.ATTACH, "auto"),
    ("skb", xdp_now(), set(), None, False, A.ATTACH, "skb"),
    # ours, recorded with the same fingerprint: keep (auto accepts the mode it runs in)
    ("auto", xdp_now("skb", 5), {5}, record(5), False, A.KEEP, "skb"),
    ("native", xdp_now("native", 5), {5}, record(5), False, A.KEEP, "native"),
    # ours, other fingerprint or program: atomic replace in the mode it runs in
    ("auto", xdp_now("native", 5), {5}, record(5, fp="0" * 64), False, A.REPLACE, "native"),
    ("auto", xdp_now("native", 5), {5}, record(5, program="other"), False, A.REPLACE, "native"),
    # ours without a record of this id: verify by loading (or replace when the name differs)
    ("auto", xdp_now("native", 5), {5}, record(4), False, A.VERIFY, "native"),
    ("auto", xdp_now("native", 5), {5}, None, False, A.VERIFY, "native"),
    ("auto", xdp_now("native", 5, name="old_prog"), {5}, None, False, A.REPLACE, "native"),
    # ours in another mode than asked: reattach (not atomic)
    ("native", xdp_now("skb", 5), {5}, record(5), False, A.REATTACH, "native"),
    # foreign: refused, or replaced with force
    ("auto", xdp_now("native", 9), {5}, record(5), False, A.REFUSE, "native"),
    ("auto", xdp_now("native", 9), set(), None, True, A.REPLACE_FOREIGN, "native"),
    ("skb", xdp_now("native", 9), set(), None, True, A.REATTACH, "skb"),
])
def test_decide_xdp(want_mode, current, ours, rec, force, kind, mode):
    d = A.decide_xdp("xdp_shaper", want_mode, current, ours, rec, FP, force)
    assert (d["kind"], d["mode"]) == (kind, mode)


def test_decide_xdp_without_a_wanted_program_detaches_only_ours():
    assert A.decide_xdp(None, "auto", xdp_now("native", 5), {5}, None, FP, False)["kind"] == A.DETACH
    assert A.decide_xdp(None, "auto", xdp_now("native", 9), {5}, None, FP, False)["kind"] == A.LEAVE
    assert A.decide_xdp(None, "auto", xdp_now(), set(), None, FP, False)["kind"] == A.NONE


def test_decide_xdp_refuses_programs_in_several_modes():
    current = {"ids": {"native": 5, "hw": 6}, "info": {}}
    d = A.decide_xdp("xdp_shaper", "auto", current, {5, 6}, None, FP, True)
    assert d["kind"] == A.REFUSE and d["msg"] == ("XDP programs are attached in several modes at once "
                                                  "(id 6 in hw mode, id 5 in native mode).")


@pytest.mark.parametrize("current,info,ours,rec,force,kind", [
    (None, None, set(), None, False, A.ATTACH),
    (7, {"name": "tc_classify"}, {7}, record(7, program="tc_classify"), False, A.KEEP),
    (7, {"name": "tc_classify"}, {7}, record(7, fp="0" * 64, program="tc_classify"), False, A.REPLACE),
    (7, {"name": "tc_classify"}, {7}, None, False, A.VERIFY),
    (7, {"name": "other"}, {7}, None, False, A.REPLACE),
    (7, {"name": "x"}, {5}, None, False, A.REFUSE),
    (7, {"name": "x"}, {5}, None, True, A.REPLACE_FOREIGN),
])
def test_decide_tc(current, info, ours, rec, force, kind):
    assert A.decide_tc(SLOT, current, info, ours, rec, FP, force)["kind"] == kind


def test_decide_tc_for_a_slot_the_spec_dropped():
    assert A.decide_tc(None, 7, None, {7}, SLOT, FP, False)["kind"] == A.DETACH
    assert A.decide_tc(None, 7, None, {5}, SLOT, FP, False)["kind"] == A.LEAVE
    assert A.decide_tc(None, None, None, set(), SLOT, FP, False)["kind"] == A.NONE


def test_action_texts():
    old = A.prog_desc(42, {"name": "xdp_shaper", "tag": "0123456789abcdef"})
    assert old == "id 42 (xdp_shaper, tag 0123456789abcdef)"
    d = {"mode": "native", "old_mode": "skb"}
    assert A.xdp_action(A.ATTACH, "xdp_shaper", "eth1", {"mode": "auto"}, "") == \
        "attach XDP program xdp_shaper to eth1 in mode auto (hw, then native, then skb)"
    assert A.xdp_action(A.REPLACE, "xdp_shaper", "eth1", d, old) == \
        "replace XDP program %s on eth1 with the new xdp_shaper atomically (native mode)" % old
    assert A.xdp_action(A.REATTACH, "xdp_shaper", "eth1", d, old) == (
        "detach XDP program %s from eth1 (skb mode), then attach xdp_shaper in native mode: not atomic "
        "(XDP mode change)" % old)
    assert A.xdp_action(A.KEEP, "xdp_shaper", "eth1", d, old) is None
    assert A.tc_action(A.ATTACH, SLOT, "eth1", "") == \
        "attach tc_classify to TC egress of eth1 at handle 0x1 priority 0xc02f"
    assert A.tc_action(A.DETACH, SLOT, "eth1", "id 7") == "detach id 7 from TC egress of eth1 at handle 0x1 priority 0xc02f"


def test_refuse_error_names_the_program_and_the_fix():
    err = A.refuse_error("XDP", "eth1", "ns1", "id 9 (other, tag 00)", "native")
    assert str(err) == ("XDP on eth1 (netns ns1) holds program id 9 (other, tag 00) in native mode, which this "
                        "collection did not attach; it is left in place and nothing was changed. Fix: detach it "
                        "yourself, or set force: true to replace it.")


def test_read_state_ignores_missing_broken_and_foreign_versions(tmp_path):
    path = tmp_path / "s.json"
    assert A.read_state(str(path)) == {}
    path.write_text("{not json")
    assert A.read_state(str(path)) == {}
    path.write_text(json.dumps({"version": 999}))
    assert A.read_state(str(path)) == {}
    path.write_text(json.dumps({"version": A.STATE_VERSION, "xdp": {"id": 1}}))
    assert A.read_state(str(path))["xdp"] == {"id": 1}


def test_load_values_resolve_interfaces_and_network_byte_order():
    out = A.resolve_values({"n": "possible_cpus", "me": "ifindex", "isp": "ifindex:eth1", "vlan": "be16:100",
                            "hexvlan": "be16:0x0102", "plain": 7}, 4, 2, {"eth1": 9}.get)
    assert out == {"n": 4, "me": 2, "isp": 9, "vlan": 0x6400, "hexvlan": 0x0201, "plain": 7}


def test_spec_values_for_variables_an_older_object_lacks_are_left_out_with_a_note():
    spec = {"attach": {"rodata": {}, "data": {"direction": 1, "to_isp_ifindex": "ifindex:eth1"}}, "cpu_sized_maps": []}
    notes = []
    params = A.load_params(spec, 2, 5, {"data": {"direction": 2}}, {"eth1": 9}.get, {"direction": True}.get, notes)
    assert params["data"] == {"direction": 2}
    assert notes == ["spec attach.data.to_isp_ifindex is not set: the object has no such variable"]
    with pytest.raises(A.LqosError) as err:
        A.load_params(spec, 2, 5, {"data": {"stick_offset": 4}}, None, {"direction": True}.get, [])
    assert err.value.msg == "data stick_offset: the object has no such global variable."
