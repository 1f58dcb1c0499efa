"""The pure half of attach's kprobes option: names, decisions and the plan's wording (plain data)."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._attach.kprobe import (
    decide_kprobes, kprobe_action, kprobe_programs, refusal_error, resolve_kprobes,
)
from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError

SECTIONS = {"xdp_shaper": "xdp", "tc_classify": "tc", "flow_reader": "iter/bpf_map_elem",
            "xmit_counter": "kprobe/dev_hard_start_xmit", "ret": "kretprobe/tcp_sendmsg"}
AVAILABLE = {"xmit_counter": "dev_hard_start_xmit", "ret": "tcp_sendmsg"}
ROLES = {"xmit_counter": "optional", "ret": "disabled"}
PIN = "/sys/fs/bpf/lqos_bpf/host/eth1/xmit_counter"
LINK = {"path": PIN, "kind": "link", "link_id": 7, "prog_id": 70}


def kinds(rows):
    return [(r["program"], r["kind"]) for r in rows]


def test_kprobe_programs_are_the_kprobe_and_kretprobe_sections():
    assert kprobe_programs(SECTIONS) == AVAILABLE


def test_entries_are_names_or_sections():
    assert resolve_kprobes(None, SECTIONS) is None
    assert resolve_kprobes([], SECTIONS) == []
    assert resolve_kprobes(["kprobe/dev_hard_start_xmit"], SECTIONS) == ["xmit_counter"]
    assert resolve_kprobes(["xmit_counter", "kprobe/dev_hard_start_xmit"], SECTIONS) == ["xmit_counter"]
    assert resolve_kprobes(["kprobe/nope"], SECTIONS) == ["kprobe/nope"]     # refused by decide_kprobes
    assert resolve_kprobes(["xdp"], SECTIONS) == ["xdp"]                     # not a kprobe section


def test_left_out_touches_nothing_not_even_a_pinned_link():
    assert decide_kprobes(None, AVAILABLE, ROLES, {"xmit_counter": LINK}, {}, "fp") == []


def test_asked_and_not_pinned_attaches():
    rows = decide_kprobes(["xmit_counter"], AVAILABLE, ROLES, {}, {}, "fp")
    assert kinds(rows) == [("xmit_counter", "attach")]
    assert rows[0]["target"] == "dev_hard_start_xmit" and rows[0]["pin"] is None


def test_asked_and_pinned_by_the_same_load_is_kept():
    rec = {"xmit_counter": {"prog_id": 70, "fingerprint": "fp"}}
    assert kinds(decide_kprobes(["xmit_counter"], AVAILABLE, ROLES, {"xmit_counter": LINK}, rec, "fp")) == [
        ("xmit_counter", "keep")]


@pytest.mark.parametrize("rec, fp", [
    ({"xmit_counter": {"prog_id": 70, "fingerprint": "old"}}, "fp"),   # a newer object
    ({"xmit_counter": {"prog_id": 71, "fingerprint": "fp"}}, "fp"),    # the pin holds another program
    ({}, "fp"),                                                        # no record (state file lost)
])
def test_asked_and_pinned_otherwise_is_replaced(rec, fp):
    rows = decide_kprobes(["xmit_counter"], AVAILABLE, ROLES, {"xmit_counter": LINK}, rec, fp)
    assert kinds(rows) == [("xmit_counter", "replace")] and rows[0]["link_id"] == 7


def test_pinned_but_no_longer_asked_is_detached():
    rows = decide_kprobes([], AVAILABLE, ROLES, {"xmit_counter": LINK}, {}, "fp")
    assert kinds(rows) == [("xmit_counter", "detach")] and rows[0]["pin"] == PIN


def test_a_name_that_is_no_kprobe_program_is_refused_with_the_fix():
    with pytest.raises(LqosError) as err:
        decide_kprobes(["xdp_shaper", "nope"], AVAILABLE, ROLES, {}, {}, "fp")
    assert str(err.value) == ("kprobes names nope, xdp_shaper, which are no kprobe program of the object (it has "
                              "ret, xmit_counter). Fix: name kprobe programs of the object or their sections "
                              "(kprobe/<function>), or leave kprobes out.")


def test_a_disabled_program_is_refused():
    with pytest.raises(LqosError) as err:
        decide_kprobes(["ret"], AVAILABLE, ROLES, {}, {}, "fp")
    assert str(err.value).startswith("kprobes names ret, but spec programs.ret is disabled. Fix: ")


def test_something_else_in_the_way_of_the_link_pin_is_refused():
    pinned = {"xmit_counter": dict(LINK, kind="prog")}
    with pytest.raises(LqosError) as err:
        decide_kprobes(["xmit_counter"], AVAILABLE, ROLES, pinned, {}, "fp")
    assert str(err.value) == ("%s is in the way of the kprobe link of xmit_counter: it is a pinned prog, not a "
                              "bpf_link. Fix: remove it (rm %s), then attach again." % (PIN, PIN))


def test_the_plan_says_what_happens():
    row = {"program": "xmit_counter", "target": "dev_hard_start_xmit", "pin": PIN, "link_id": 7, "prog_id": 70}
    assert kprobe_action(dict(row, kind="attach"), "eth1") == (
        "attach kprobe program xmit_counter to kernel function dev_hard_start_xmit (asked on eth1) and pin its "
        "link at %s" % PIN)
    assert kprobe_action(dict(row, kind="replace"), "eth1") == (
        "replace the kprobe link %s (link id 7, program id 70) by xmit_counter of the new load" % PIN)
    assert kprobe_action(dict(row, kind="detach"), "eth1") == (
        "detach kprobe program xmit_counter: unpin its link %s (link id 7)" % PIN)
    assert kprobe_action(dict(row, kind="keep"), "eth1") is None


def test_a_kernel_without_kprobes_is_one_line_with_the_fix():
    row = {"reason": 'program xmit_counter (SEC("kprobe/dev_hard_start_xmit")) is a kprobe and this kernel is built '
                     'without CONFIG_KPROBES=y: it loads but can never be attached',
           "fix": "boot a kernel with CONFIG_KPROBES=y, or leave it out (spec programs: {xmit_counter: optional or "
                  "disabled})"}
    text = str(refusal_error("xmit_counter", "dev_hard_start_xmit", row))
    assert "\n" not in text
    assert text == ('kprobe program xmit_counter (kernel function dev_hard_start_xmit) cannot be attached on this '
                    'host: program xmit_counter (SEC("kprobe/dev_hard_start_xmit")) is a kprobe and this kernel is '
                    'built without CONFIG_KPROBES=y: it loads but can never be attached; nothing was changed. Fix: '
                    'boot a kernel with CONFIG_KPROBES=y; or take xmit_counter out of kprobes (deploy role: '
                    'lqos_bpf_xmit_kprobe: false).')
