"""abi_info's owner of each hook and the host's loader summary (issue 23, the ownership model), on the real kernel:
the stand-in daemon shaperd holding a bridge's hooks (service, with its pid and comm), the TC programs it leaves
when it exits (foreign), and the collection's own attach beside them (collection, then mixed)."""
from __future__ import annotations

import signal

import pytest

from lqos_testlib import run_module
from standin import bridge_config, start

from ansible_collections.lqos.bpf.plugins.module_utils._ownership.owners import unit_of_cgroup
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import held_prog_ids

pytestmark = pytest.mark.usefixtures("tools")


def abi_info(pair, bpffs, tmp_path) -> dict:
    res = run_module("abi_info", dict(spec="reference", pin_root=bpffs, build_root=str(tmp_path / "no-build"),
                                      toolchain=False, programs=False,
                                      interfaces=[{"name": pair.if_a, "netns": pair.ns_a},
                                                  {"name": pair.if_c, "netns": pair.ns_a}]))
    assert res["_rc"] == 0, res
    return res


def entries(res) -> list:
    return [e for row in res["attached"] for e in [row["xdp"]] + row["tc"] if e and e["id"]]


def test_the_daemons_hooks_are_the_services_with_its_pid_then_foreign_once_it_exits(
        shaperd, bpffs, bridge, tmp_path, running):
    daemon = start(running, shaperd["binary"], bridge_config(tmp_path, bpffs, bridge, write_limit=0))
    with open("/proc/%d/cgroup" % daemon.pid) as fh:
        unit = unit_of_cgroup(fh.read())
    res = abi_info(bridge, bpffs, tmp_path)
    hooks = entries(res)
    assert sorted(e["id"] for e in hooks) == held_prog_ids(daemon.pid) and len(hooks) == 6
    for entry in hooks:
        assert entry["owner"] == "service", entry
        assert entry["holders"] == [{"pid": daemon.pid, "comm": "shaperd", "unit": unit}]
    assert res["loader"] == {"kind": "service", "units": [unit] if unit else [],
                             "counts": {"collection": 0, "service": 6, "foreign": 0}}

    assert daemon.stop(signal.SIGTERM) == 0   # XDP detached, TC left on the hooks, held by no process
    res = abi_info(bridge, bpffs, tmp_path)
    assert [row["xdp"]["id"] for row in res["attached"]] == [None, None]
    assert [(e["owner"], e["holders"]) for e in entries(res)] == [("foreign", None)] * 4
    assert res["loader"]["kind"] == "foreign"


def test_the_collections_attach_is_the_collections_and_beside_foreign_ones_mixed(shaperd, bpffs, bridge, tmp_path,
                                                                                 running):
    state = str(tmp_path / "state")
    res = run_module("attach", dict(spec="reference", object=shaperd["object"], pin_root=bpffs, interface=bridge.if_a,
                                    netns=bridge.ns_a, state_dir=state, approve=True))
    assert res["_rc"] == 0, res.get("msg")
    res = abi_info(bridge, bpffs, tmp_path)
    assert [e["owner"] for e in entries(res)] == ["collection"] * len(entries(res)) and entries(res)
    assert res["loader"]["kind"] == "collection"

    # The daemon takes both ports (it detaches any XDP program and replaces TC), then exits: if_a and if_c keep
    # its TC programs, foreign now; the collection's XDP program attached again on if_a makes the host mixed.
    daemon = start(running, shaperd["binary"], bridge_config(tmp_path, bpffs, bridge, write_limit=0))
    assert daemon.stop() == 0
    res = run_module("attach", dict(spec="reference", object=shaperd["object"], pin_root=bpffs, interface=bridge.if_a,
                                    netns=bridge.ns_a, state_dir=state, approve=True, tc=False))
    assert res["_rc"] == 0, res.get("msg")
    res = abi_info(bridge, bpffs, tmp_path)
    xdp = res["attached"][0]["xdp"]
    assert xdp["owner"] == "collection" and xdp["holders"] is None
    assert {e["owner"] for e in entries(res) if e is not xdp} == {"foreign"}
    assert res["loader"]["kind"] == "mixed"
    assert res["loader"]["counts"] == {"collection": 1, "service": 0, "foreign": 4}
