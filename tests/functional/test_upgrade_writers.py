"""Writes made during a live map upgrade, and kill -9 at every step of it, on the real kernel.

A small object (lqos_writers.py) is attached with its XDP program on a veth pair, its flow map filled; then
lqos.bpf.attach with the pin step (state migrated: fill, publish, swap, catch-up) and lqos.bpf.pinned_maps
(committed) upgrade it while three writers run: a user-space writer holding an fd on the old map, one opening
the pin path for every write, and the XDP program counting a steady ping. Lost writes are counted from the map
contents (sequence numbers), failed path lookups from the writer; no timing is asserted.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

import lqos_writers as WR
from lqos_testlib import compile_bpf, module_args_file, run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L

pytestmark = pytest.mark.usefixtures("tools")

N = 20000


class Upgrade:
    def __init__(self, tmp_path, bpffs, pair):
        self.tmp, self.bpffs, self.pair = tmp_path, bpffs, pair
        self.objs = {v: compile_bpf(tmp_path, "w%d" % v, WR.source(v, 65536)) for v in (1, 2)}
        self.attach_state = str(tmp_path / "attach-state")
        self.maps_state = str(tmp_path / "maps-state")
        self.backups = str(tmp_path / "backups")
        self.flows = os.path.join(bpffs, "flow_table")
        self.counts = os.path.join(bpffs, "pkt_count")

    def attach_args(self, version, **kw):
        args = dict(spec=WR.spec(version), object=self.objs[version], pin_root=self.bpffs,
                    interface=self.pair.if_a, netns=self.pair.ns_a, state_dir=self.attach_state, approve=True)
        if version == 2:
            args["pinned_maps"] = dict(state="migrated", state_dir=self.maps_state, backup_dir=self.backups)
        args.update(kw)
        return args

    def attach(self, version, env=None):
        if env:
            return run_killed("attach", self.attach_args(version), env)
        res = run_module("attach", self.attach_args(version))
        assert res["_rc"] == 0 and not res.get("failed"), res.get("msg", res)
        return res

    def commit(self, env=None):
        args = dict(spec=WR.spec(2), object=self.objs[2], pin_root=self.bpffs, state="committed",
                    state_dir=self.maps_state, backup_dir=self.backups, approve=True)
        if env:
            return run_killed("pinned_maps", args, env)
        res = run_module("pinned_maps", args)
        assert res["_rc"] == 0 and not res.get("failed"), res.get("msg", res)
        return res

    def xdp_prog(self):
        with H.netns(self.pair.ns_a):
            return H.xdp_query(H.ifindex(self.pair.if_a))["prog_id"]

    def prog_pins(self):
        """{pin: program id} of the programs pinned under lqos_bpf/."""
        out = {}
        for root, _dirs, files in os.walk(os.path.join(self.bpffs, "lqos_bpf")):
            for name in files:
                path = os.path.join(root, name)
                if L.pinned_kind(path) == "prog":
                    out[os.path.relpath(path, self.bpffs)] = M.prog_info_by_path(path)["id"]
        return out

    def temp_files(self):
        return [f for d in (self.maps_state, self.backups) if os.path.isdir(d) for f in os.listdir(d)
                if f.startswith(".")]


def run_killed(module, args, env):
    argfile = module_args_file(module, args)
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env)
    try:
        proc = subprocess.run([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules." + module,
                               argfile], capture_output=True, text=True, env=full, cwd="/", check=False)
    finally:
        os.unlink(argfile)
    return proc.returncode


@pytest.fixture
def up(tmp_path, bpffs, netns_pair):
    u = Upgrade(tmp_path, bpffs, netns_pair)
    u.attach(1)
    WR.fill(u.flows, N)
    return u


def test_writes_during_the_upgrade_are_carried_over_and_the_name_never_goes_missing(up):
    rx0, counted0 = WR.rx_packets(up.pair.ns_a, up.pair.if_a), WR.counted(up.counts)
    fd_writer, path_writer = WR.Writer(up.flows, WR.FD_KEYS, False), WR.Writer(up.flows, WR.PATH_KEYS, True)
    pinger = WR.Pinger(up.pair)
    fd_writer.start()
    path_writer.start()
    try:
        time.sleep(0.3)
        res = up.attach(2)
        time.sleep(0.3)
    finally:
        path_writer.finish()
        fd_writer.finish()
        pinger.finish()
    caught = res["pinned_maps"]["caught_up"]
    assert set(caught) == {"flow_table", "pkt_count"} and res["xdp"]["action"] == "replace"
    flows = dict(M.map_entries(up.flows))
    # every write the fd writer made before the catch-up read the old map is in the new map
    assert fd_writer.lost(flows, caught["flow_table"]["old_read_at"]) == 0
    assert len([r for r in fd_writer.records if r[2] < caught["flow_table"]["old_read_at"]]) > 100
    # the path writer never found the name missing and lost nothing (its last writes went to the new map)
    assert path_writer.failed_opens == 0 and path_writer.failed_writes == 0
    assert len(path_writer.records) > 100 and path_writer.lost(flows) == 0
    # every entry copied, with the added field zero
    assert all(flows[WR.key(i)][24:] == bytes(8) for i in range(N))
    # commit: a last catch-up (the fd writer's later writes), backups, the old maps unpinned
    done = up.commit()
    assert fd_writer.lost(dict(M.map_entries(up.flows))) == 0
    assert sorted(b["name"] for b in done["backups"]) == ["flow_table", "pkt_count"]
    # the XDP program's counts: every packet that reached the interface, less at most those of the swap itself
    arrived = WR.rx_packets(up.pair.ns_a, up.pair.if_a) - rx0
    lost = arrived - (WR.counted(up.counts) - counted0)
    assert arrived > 50 and 0 <= lost <= 2, (arrived, lost)
    assert up.temp_files() == [] and not os.listdir(up.maps_state)


def test_a_rerun_never_puts_an_older_value_over_a_newer_one(up):
    # Killed right after the new map took the name, before the journal said so.
    assert up.attach(2, env={"LQOS_BPF_TEST_KILL_AT": "renamed:flow_table"}) == -9
    newer = {WR.key(i): struct.pack("<QQQQ", 10 ** 9 + i, 0, 0, 7) for i in range(1000)}
    for k, v in newer.items():           # a writer opening the path: these land in the new map
        M.map_update(up.flows, k, v)
    up.attach(2)
    up.attach(2)
    up.commit()
    flows = dict(M.map_entries(up.flows))
    assert sum(1 for k, v in newer.items() if flows[k] != v) == 0
    assert all(WR.key(i) in flows for i in range(N))


KILLS = [("attach", "filled:flow_table"), ("attach", "aside:flow_table"), ("attach", "renamed:flow_table"),
         ("attach", "attach:swapped"), ("attach", "caught_up:flow_table"), ("attach", "write:replace-"),
         ("commit", "caught_up:flow_table"), ("commit", "write:flow_table."), ("commit", "committed:flow_table")]


@pytest.mark.parametrize("run,kill_at", KILLS, ids=["%s-%s" % k for k in KILLS])
def test_kill_at_each_step_then_a_rerun_leaves_every_program_pinned_and_owned(up, run, kill_at):
    env = {"LQOS_BPF_TEST_KILL_AT": kill_at}
    if run == "attach":
        assert up.attach(2, env=env) == -9
    else:
        up.attach(2)
        assert up.commit(env=env) == -9
    # at any instant: the names are there, the program on the hook is pinned under lqos_bpf/
    assert os.path.exists(up.flows) and os.path.exists(up.counts)
    assert up.xdp_prog() in up.prog_pins().values(), (up.xdp_prog(), up.prog_pins())
    res = up.attach(2)                      # the rerun: never "foreign", it finishes
    assert res["xdp"]["action"] in ("keep", "replace", "adopt"), res["xdp"]
    assert not any("foreign" in w for w in res.get("warnings", []))
    up.commit()
    again = up.attach(2)
    assert not again["changed"], again
    pinned = up.prog_pins()
    assert list(pinned.values()) == [up.xdp_prog()] and not [p for p in pinned if p.endswith("__new")]
    assert up.temp_files() == [], up.temp_files()
    assert not [p for p in os.listdir(up.bpffs) if p.startswith("lqos_bpf_aside")]
    flows = dict(M.map_entries(up.flows))
    assert all(flows[WR.key(i)][:24] == struct.pack("<QQQ", i, i * 3, i * 5) for i in range(N))


def test_an_attach_that_fails_after_the_pin_step_puts_the_old_maps_back(up):
    """All or nothing (docs/behaviour.md): the attach fails after the pin step published the new maps, so the
    step is rolled back in the same run: each old map holds its name again (the same map, every entry), nothing
    stays aside, no snapshot or temporary file is left, and the result says so with changed: false."""
    ids = {p: M.map_info_by_path(p)["id"] for p in (up.flows, up.counts)}
    flows = dict(M.map_entries(up.flows))
    res = run_module("attach", up.attach_args(2, interface="nosuch0"))
    assert res["_rc"] != 0 and "nosuch0" in res["msg"] and "Traceback" not in res["msg"]
    assert res["changed"] is False and "Rolled back what the pin step had changed: map flow_table put back at flow_table" in res["msg"], res["msg"]
    assert {p: M.map_info_by_path(p)["id"] for p in (up.flows, up.counts)} == ids
    assert dict(M.map_entries(up.flows)) == flows
    aside = os.path.join(up.bpffs, "lqos_bpf_aside")
    assert not os.path.isdir(aside) or not [f for _r, _d, fs in os.walk(aside) for f in fs]
    assert [f for f in os.listdir(up.maps_state) if f.startswith("snap-")] == [] and up.temp_files() == []
