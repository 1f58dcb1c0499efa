"""A hook held by a running service is the service's, not foreign (issue 23, the ownership model): the stand-in
daemon shaperd runs as a plain process on a bridge of veth ports in its own netns with a private bpffs, and
lqos.bpf.attach refuses to replace its programs with or without force, in a plan, in check mode and approved,
leaving the kernel's hooks exactly as the daemon set them. Once the daemon has exited, the TC programs it left on
the hooks are held by no process: foreign again, the old path."""
from __future__ import annotations

import os
import signal

import pytest

from lqos_testlib import run_module
from standin import bridge_config, start

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.owners import unit_of_cgroup
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import held_prog_ids

pytestmark = pytest.mark.usefixtures("tools")

TC_HANDLE, TC_PRIORITY = 0x1, 0xC02F


def hooks(pair) -> dict:
    """{(ifname, hook): prog id} of both bridge ports, read from the kernel."""
    out = {}
    with H.netns(pair.ns_a):
        for ifname in (pair.if_a, pair.if_c):
            idx = H.ifindex(ifname)
            out[(ifname, "xdp")] = H.xdp_query(idx)["prog_id"]
            for direction in ("egress", "ingress"):
                out[(ifname, direction)] = H.tc_query(idx, direction, TC_HANDLE, TC_PRIORITY)
    return out


def attach(shaperd, pair, bpffs, tmp_path, check_mode=False, **kw):
    args = dict(spec="reference", object=shaperd["object"], pin_root=bpffs, interface=pair.if_a, netns=pair.ns_a,
                state_dir=str(tmp_path / "state"), approve=True)
    args.update(kw)
    return run_module("attach", args, check_mode=check_mode)


def service_message(pair, daemon, prog_id) -> str:
    """The refusal, written out: the process is named by pid and comm, and by its systemd unit when the tests
    run inside one (a plain process here: in no service, usually)."""
    info = M.prog_info_by_id(prog_id)
    with open("/proc/%d/cgroup" % daemon.pid) as fh:
        unit = unit_of_cgroup(fh.read())
    head = ("XDP on %s (netns %s) holds program id %d (xdp_shaper, tag %s), loaded and held by process %d (shaperd)"
            % (pair.if_a, pair.ns_a, prog_id, info["tag"], daemon.pid))
    tail = (": the service's, not this collection's; it is left in place and nothing was changed (force: true does "
            "not replace a running service's programs: the service attaches its own again when it restarts). Fix: ")
    if unit:
        return (head + " of unit %s" % unit + tail + "this host's programs are loaded by %s: deploy with "
                "lqos_bpf_loader: service (lqos_bpf_service: %s), or stop %s first." % (unit, unit, unit))
    return (head + ", in no systemd service" + tail + "this host's programs are loaded by process %d (shaperd), "
            "which runs in no systemd service: stop it first (or run it as a service and deploy with "
            "lqos_bpf_loader: service)." % daemon.pid)


def test_a_service_held_program_is_never_replaced_even_with_force(shaperd, bpffs, bridge, tmp_path, running):
    daemon = start(running, shaperd["binary"], bridge_config(tmp_path, bpffs, bridge, write_limit=0))
    before = hooks(bridge)
    assert sorted(before.values()) == held_prog_ids(daemon.pid)
    expected = service_message(bridge, daemon, before[(bridge.if_a, "xdp")])

    for kw, check_mode in (({}, False), ({"force": True}, False), ({"force": True, "approve": False}, False),
                           ({"force": True}, True)):
        res = attach(shaperd, bridge, bpffs, tmp_path, check_mode=check_mode, **kw)
        assert res["_rc"] == 1, (kw, check_mode, res)
        assert res["msg"] == expected, (kw, check_mode)
        assert res["owner"] == "service" and res["holders"][0]["pid"] == daemon.pid
        assert res["holders"][0]["comm"] == "shaperd"
        # The kernel's hooks hold the daemon's programs, still held by it; nothing of the collection was made.
        assert hooks(bridge) == before
        assert sorted(before.values()) == held_prog_ids(daemon.pid)
        assert not os.path.exists(os.path.join(bpffs, "lqos_bpf"))
        assert not os.path.exists(tmp_path / "state") or not os.listdir(tmp_path / "state")
    assert daemon.stop() == 0


def test_state_absent_leaves_the_service_programs_and_names_the_service(shaperd, bpffs, bridge, tmp_path, running):
    daemon = start(running, shaperd["binary"], bridge_config(tmp_path, bpffs, bridge, write_limit=0))
    before = hooks(bridge)
    res = attach(shaperd, bridge, bpffs, tmp_path, state="absent")
    assert res["_rc"] == 0 and res["changed"] is False and res["actions"] == [], res
    xdp_id = before[(bridge.if_a, "xdp")]
    assert any(n.startswith("XDP program id %d (xdp_shaper, tag " % xdp_id)
               and "is not ours (a service's: held by process %d (shaperd)" % daemon.pid in n
               for n in res["notes"]), res["notes"]
    assert hooks(bridge) == before
    assert daemon.stop() == 0


def test_once_the_daemon_exits_its_tc_programs_are_foreign_again(shaperd, bpffs, bridge, tmp_path, running):
    """lqosd detaches XDP only at exit: the TC filters keep its programs, and no process holds them any more, so
    they are foreign (the old path: refused without force, named with its fix)."""
    daemon = start(running, shaperd["binary"], bridge_config(tmp_path, bpffs, bridge, write_limit=0))
    assert daemon.stop(signal.SIGTERM) == 0
    left = hooks(bridge)
    assert left[(bridge.if_a, "xdp")] == 0 and left[(bridge.if_a, "egress")]
    egress = left[(bridge.if_a, "egress")]
    res = attach(shaperd, bridge, bpffs, tmp_path, approve=False)
    assert res["_rc"] == 1
    assert res["msg"] == (
        "TC egress (handle 0x1 priority 0xc02f) on %s (netns %s) holds program id %d (tc_classify, tag %s), which "
        "this collection did not attach; it is left in place and nothing was changed. Fix: detach it yourself, or "
        "set force: true to replace it." % (bridge.if_a, bridge.ns_a, egress, M.prog_info_by_id(egress)["tag"]))
    assert hooks(bridge) == left
