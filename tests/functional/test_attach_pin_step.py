"""lqos.bpf.attach's ``pinned_maps`` option: the pin step and the attach in one module run, on the real kernel.

The upgrade of test_map_migrate (v1 attached with 10,000 entries in its maps, v2 changes two value layouts) done
the way the deploy role does it: one attach per interface that first replaces the incompatible pins (entries
migrated, old maps kept aside), then swaps the programs. Pins, hooks and map contents are read back from the
kernel.
"""
from __future__ import annotations

import os

import pytest

from lqos_testlib import run_module
# The fixtures versions and world are used by name.
from test_map_migrate import (  # noqa: F401 pylint: disable=unused-import
    assert_migrated, entries, fill_v1, map_id, ok, pins, synthetic_flows, versions, world,
)

pytestmark = pytest.mark.usefixtures("tools")

REPLACED = ["flow_table", "ip_to_shaper", "shaper_hotcache"]


def attach_args(w, **kw):
    args = dict(spec=w.v["spec2"], object=w.v["v2"], pin_root=w.bpffs, interface=w.pair.if_a, netns=w.pair.ns_a,
                state_dir=w.state_dir,
                pinned_maps=dict(state="migrated", state_dir=w.maps_state, backup_dir=w.backups))
    args.update(kw)
    return args


def test_one_attach_run_replaces_the_stale_pins_keeping_their_entries_then_swaps_the_programs(world, versions):
    w = world
    w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    old_flows, old_ips = synthetic_flows(w.bpffs), entries(os.path.join(w.bpffs, "ip_to_shaper"))
    before, old_prog = pins(w.bpffs), w.xdp_prog()

    # Without approval: the pin step's plan, and the attach planned behind the pins it would replace.
    plan = ok(run_module("attach", attach_args(w)))
    assert plan["changed"] and not plan["applied"]
    assert plan["actions"] == ["attach on %s once the incompatible pins are replaced" % w.pair.if_a]
    assert sorted(a["name"] for a in plan["pinned_maps"]["actions"]) == REPLACED
    assert pins(w.bpffs) == before and w.xdp_prog() == old_prog

    done = ok(run_module("attach", attach_args(w, approve=True)))
    assert done["applied"] and done["xdp"]["action"] == "replace"
    assert sorted(d["name"] for d in done["pinned_maps"]["migrated"]) == REPLACED
    now = pins(w.bpffs)
    for name in REPLACED:
        assert now["lqos_bpf_aside/" + name] == before[name] and now[name] != before[name]
    new_prog = w.xdp_prog()
    assert new_prog != old_prog and map_id(os.path.join(w.bpffs, "ip_to_shaper")) in w.prog_maps(new_prog)
    assert_migrated(old_flows, old_ips, w.bpffs, versions)

    again = ok(run_module("attach", attach_args(w, approve=True)))
    assert not again["changed"] and not again["pinned_maps"]["changed"]
    assert again["xdp"]["action"] == "keep" and w.xdp_prog() == new_prog


def test_the_pin_step_with_state_absent_is_one_clear_error(world):
    w = world
    res = run_module("attach", dict(spec=w.v["spec1"], pin_root=w.bpffs, interface=w.pair.if_a, netns=w.pair.ns_a,
                                    state="absent", state_dir=w.state_dir, pinned_maps={}, approve=True))
    assert res["failed"] and res["msg"] == (
        "pinned_maps is a step before an attach; it has no meaning with state: absent. Fix: leave pinned_maps out "
        "when detaching (lqos.bpf.pinned_maps audits or cleans pins on its own).")


def test_without_object_the_pin_step_checks_the_object_the_attach_would_load(world):
    # No object given: the attach loads the spec's current build (<state root>/<spec name>/current/<object>), and
    # the pin step must audit against that same object - not stop on "state: migrated needs object".
    w = world
    res = run_module("attach", dict(spec="reference", pin_root=w.bpffs, interface=w.pair.if_a, netns=w.pair.ns_a,
                                    state_dir=w.state_dir, pinned_maps=dict(state="migrated")))
    # conftest mounts an empty tmpfs over /var/lib/lqos-bpf: there is no such build here.
    default = "/var/lib/lqos-bpf/reference/current/shaper_kern.o"
    assert res["failed"] and res["msg"] == (
        "object %s does not exist. Fix: give the BPF object built by lqos.bpf.pipeline (its outputs.object.path, "
        "e.g. <dest>/current/<spec outputs.object>); rebuild it if it was damaged." % default), res


def test_an_attach_that_fails_after_the_pin_step_rolls_the_pin_step_back_too(world, versions):
    """xdp_mode: hw on a veth fails after the pin step moved three maps aside and pinned new ones: the step is
    rolled back with the attach (it reported changed: false with the maps left moved aside), and the message
    says what both rolled back. All or nothing: pins, hooks and entries are as before."""
    w = world
    w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    old_flows, old_ips = synthetic_flows(w.bpffs), entries(os.path.join(w.bpffs, "ip_to_shaper"))
    before, old_prog = pins(w.bpffs), w.xdp_prog()
    res = run_module("attach", attach_args(w, approve=True, xdp_mode="hw"))
    assert res["failed"] is True and res["changed"] is False, res
    msg = res["msg"]
    assert "in hw mode failed" in msg, msg
    assert "Rolled back what this run had changed: " in msg, msg
    assert ("Rolled back what the pin step had changed: %s." % "; ".join(
        "map %s put back at %s (the new map pinned there was unpinned)" % (n, n)
        for n in sorted(d["name"] for d in res["pinned_maps"]["migrated"]))) in msg, msg
    assert sorted(d["name"] for d in res["pinned_maps"]["migrated"]) == REPLACED
    assert "changes_left" not in res
    assert pins(w.bpffs) == before and w.xdp_prog() == old_prog
    assert synthetic_flows(w.bpffs) == old_flows and entries(os.path.join(w.bpffs, "ip_to_shaper")) == old_ips
