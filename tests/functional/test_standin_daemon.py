"""The stand-in daemon shaperd (bpf/shaper_sys/src/daemon), run as a plain process on veth pairs in netns
with a private bpffs: it behaves like lqosd at start (size-only stale pins, detach in every XDP mode, attach
hw -> drv -> skb plus TC), writes through pin paths and logs each write, and at exit detaches XDP only.
Kernel state is read back through the collection's own hook and map code, and through iproute2."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct

import pytest

from lqos_testlib import compile_bpf, mount_bpffs, run_module, sh, umount
from standin import (
    TC_HANDLE, TC_PRIORITY, Shaperd, bridge_config, read_write_log, start, tc, wait_for_writes, write_config, xdp,
)

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import close, obj_pin, possible_cpus
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import embedded_object, held_prog_ids

pytestmark = pytest.mark.usefixtures("tools")

PINNED = ("ip_to_shaper", "shaper_hotcache", "host_traffic", "flow_table", "cpu_map", "cpus_available",
          "shaper_control", "bridge_redirect", "bridge_vlan_map")

FOREIGN_XDP = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""


config = bridge_config


def ip_link(pair, ifname) -> dict:
    return json.loads(sh("ip", "-n", pair.ns_a, "-j", "link", "show", "dev", ifname).stdout)[0]


def assert_log_in_map(bpffs, rows):
    """Every write the log says succeeded is in ip_to_shaper with the logged value."""
    entries = dict(M.map_entries(os.path.join(bpffs, "ip_to_shaper")))
    ok = [r for r in rows if r[3] == "ok"]
    assert ok, rows[:3]
    missing = [r[0] for r in ok if entries.get(r[1]) != r[2]]
    assert not missing, "logged writes not in the map: seq %s" % missing[:10]
    return entries


def test_daemon_pins_attaches_writes_and_holds_its_programs(shaperd, bpffs, bridge, tmp_path, running):
    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge))
    assert sorted(n for n in os.listdir(bpffs) if not n.endswith(".debug")) == sorted(PINNED)

    held = held_prog_ids(daemon.pid)
    on_hooks = []
    for ifname in (bridge.if_a, bridge.if_c):
        state = xdp(bridge, ifname)
        # veth has native XDP: hw is refused, drv is taken, nothing falls back to skb.
        assert state["attach_mode"] == "native" and not state["skb_prog_id"], state
        assert ip_link(bridge, ifname)["xdp"]["mode"] == 1  # XDP_ATTACHED_DRV, as iproute2 reads it
        assert M.prog_info_by_id(state["prog_id"])["name"] == "xdp_shaper"
        on_hooks += [state["prog_id"], tc(bridge, ifname, "egress"), tc(bridge, ifname, "ingress")]
    # The daemon holds exactly the programs on its hooks (the ownership model's service part).
    assert sorted(on_hooks) == held and len(held) == 6
    assert {M.prog_info_by_id(i)["type_name"] for i in held} == {"xdp", "sched_cls"}

    with H.netns(bridge.ns_a):
        a, c = H.ifindex(bridge.if_a), H.ifindex(bridge.if_c)
    redirect = dict(M.map_entries(os.path.join(bpffs, "bridge_redirect")))
    assert redirect == {struct.pack("<I", a): struct.pack("<II", c, 0), struct.pack("<I", c): struct.pack("<II", a, 0)}

    rows = wait_for_writes(str(tmp_path / "writes.log"), 200, daemon)
    assert [r[0] for r in rows] == list(range(200)) and {r[3] for r in rows} == {"ok"}
    entries = assert_log_in_map(bpffs, rows)
    assert len(entries) == 200
    key, value = rows[7][1], rows[7][2]
    assert key == struct.pack("<I", 128) + b"\0" * 10 + b"\xff\xff" + bytes([100, 64, 0, 7])
    assert struct.unpack("<IIQQ", value)[2:] == (7, daemon.pid)
    assert daemon.stop() == 0


def test_sigterm_detaches_xdp_only_and_a_restart_takes_the_hooks_back(shaperd, bpffs, bridge, tmp_path, running):
    conf = config(tmp_path, bpffs, bridge, write_limit=100)
    first = start(running, shaperd["binary"], conf)
    wait_for_writes(str(tmp_path / "writes.log"), 100, first)
    egress = tc(bridge, bridge.if_a, "egress")
    assert first.stop(signal.SIGTERM) == 0
    assert "XDP detached (TC stays attached)" in first.stderr()
    for ifname in (bridge.if_a, bridge.if_c):
        assert xdp(bridge, ifname)["attach_mode"] == "none"
        assert "xdp" not in ip_link(bridge, ifname)
    # TC keeps the exited daemon's programs (the filter holds them), so they go on writing to the maps.
    assert tc(bridge, bridge.if_a, "egress") == egress
    assert tc(bridge, bridge.if_c, "ingress") is not None

    write_config(conf, **dict(mode="bridge", to_internet=bridge.if_a, to_network=bridge.if_c, netns=bridge.ns_a,
                              pin_root=bpffs, write_log=str(tmp_path / "writes.log"), write_interval_ms=1,
                              write_limit=150))
    second = start(running, shaperd["binary"], conf)
    rows = wait_for_writes(str(tmp_path / "writes.log"), 150, second)
    held = held_prog_ids(second.pid)
    state = xdp(bridge, bridge.if_a)
    assert state["attach_mode"] == "native" and state["prog_id"] in held
    assert tc(bridge, bridge.if_a, "egress") in held and tc(bridge, bridge.if_a, "egress") != egress
    # Sequence numbers continue across the restart; the first run's entries are still in the pinned map.
    assert [r[0] for r in rows] == list(range(150))
    assert {struct.unpack("<IIQQ", r[2])[3] for r in rows} == {first.pid, second.pid}
    assert_log_in_map(bpffs, rows)
    assert second.stop(signal.SIGINT) == 0


def test_a_write_through_a_missing_pin_is_logged_as_failed(shaperd, bpffs, bridge, tmp_path, running):
    """The hazard of an upgrade that renames pins under a running lqosd: each write opens the pin path, so
    while the name is missing the write fails, and the log says so; once the pin is back writes land again."""
    log = str(tmp_path / "writes.log")
    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=60000))
    wait_for_writes(log, 20, daemon)
    pin = os.path.join(bpffs, "ip_to_shaper")
    fd = M.map_fd_by_id(M.map_info_by_path(pin)["id"])
    try:
        os.unlink(pin)
        rows = wait_for_writes(log, len(read_write_log(log)) + 20, daemon)
        obj_pin(fd, pin)
    finally:
        close(fd)
    rows = wait_for_writes(log, len(read_write_log(log)) + 20, daemon)
    assert daemon.stop() == 0
    rows = read_write_log(log)
    failed = [r for r in rows if r[3] != "ok"]
    assert failed and {r[3] for r in failed} == {"errno=%d" % errno.ENOENT}
    assert rows[-1][3] == "ok" and [r[0] for r in rows] == list(range(len(rows)))
    entries = assert_log_in_map(bpffs, rows)
    assert not [r[0] for r in failed if r[1] in entries]


def test_every_xdp_mode_is_cleared_before_its_own_attach(shaperd, bpffs, bridge, tmp_path, running):
    obj = compile_bpf(tmp_path, "foreign", FOREIGN_XDP)
    sh("ip", "-n", bridge.ns_a, "link", "set", "dev", bridge.if_a, "xdpgeneric", "obj", obj, "sec", "xdp")
    foreign = xdp(bridge, bridge.if_a)
    assert foreign["attach_mode"] == "skb", foreign
    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=0))
    state = xdp(bridge, bridge.if_a)
    assert state["attach_mode"] == "native" and not state["skb_prog_id"], state
    assert state["prog_id"] in held_prog_ids(daemon.pid)
    assert daemon.stop() == 0


def test_stale_pins_go_by_size_only(shaperd, bpffs, bridge, tmp_path, running):
    # host_traffic of another value size: removed. shaper_control of the same shape: kept with its entry.
    fd = M.map_create("percpu_hash", 16, 8, 1024, name="host_traffic")
    obj_pin(fd, os.path.join(bpffs, "host_traffic"))
    close(fd)
    fd = M.map_create("array", 4, 8, 1, name="shaper_control")
    obj_pin(fd, os.path.join(bpffs, "shaper_control"))
    M.map_update(os.path.join(bpffs, "shaper_control"), b"\0" * 4, struct.pack("<II", 0, 1))
    kept_id = M.map_info_by_path(os.path.join(bpffs, "shaper_control"))["id"]
    close(fd)

    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=0))
    assert "pin %s/host_traffic: removed (key 16 value 8 bytes, this build expects 16 and 112)" % bpffs \
        in daemon.stderr()
    assert M.map_info_by_path(os.path.join(bpffs, "host_traffic"))["value_size"] == 112
    control = M.map_info_by_path(os.path.join(bpffs, "shaper_control"))
    assert control["id"] == kept_id
    assert M.map_entries(os.path.join(bpffs, "shaper_control")) == [(b"\0" * 4, struct.pack("<II", 0, 1))]
    assert kept_id in M.prog_info_by_id(xdp(bridge, bridge.if_a)["prog_id"])["map_ids"]
    assert daemon.stop() == 0


def test_same_size_other_type_is_kept_and_the_load_fails_as_lqosd_does(shaperd, bpffs, bridge, tmp_path, running):
    # flow_table as a plain hash (the object's is an LRU hash) with the same sizes: the size-only check keeps
    # it, and libbpf refuses to reuse it, so the daemon stops before attaching anything.
    fd = M.map_create("hash", 40, 136, 65536, name="flow_table")
    obj_pin(fd, os.path.join(bpffs, "flow_table"))
    close(fd)
    daemon = Shaperd(shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=0))
    running.append(daemon)
    daemon.start(ready=False)
    assert daemon.wait_exit() == 1
    assert "loading the BPF object failed: Invalid argument (a pin under %s that differs" % bpffs in daemon.stderr()
    assert M.map_info_by_path(os.path.join(bpffs, "flow_table"))["type_name"] == "hash"
    assert xdp(bridge, bridge.if_a)["attach_mode"] == "none"


def test_stick_started_inside_its_netns(shaperd, bpffs, netns_pair, tmp_path, running):
    """On a stick (one interface, two VLANs), started by `ip netns exec` (no netns key): direction 3 and the
    VLANs reach the loaded object; the optional tracing programs are left out whatever this kernel allows."""
    conf = write_config(tmp_path / "stick.conf", mode="stick", interface=netns_pair.if_a, internet_vlan=100,
                        network_vlan=200, stick_offset=1, pin_root=bpffs, write_log=str(tmp_path / "w.log"),
                        write_interval_ms=1, write_limit=20)
    prefix = ("ip", "netns", "exec", netns_pair.ns_a)
    daemon = start(running, shaperd["binary"], conf, prefix=prefix)
    rows = wait_for_writes(str(tmp_path / "w.log"), 20, daemon)
    assert_log_in_map(bpffs, rows)
    held = held_prog_ids(daemon.pid)
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        state = H.xdp_query(idx)
        hooks = [state["prog_id"], H.tc_query(idx, "egress", TC_HANDLE, TC_PRIORITY),
                 H.tc_query(idx, "ingress", TC_HANDLE, TC_PRIORITY)]
    assert state["attach_mode"] == "native" and sorted(hooks) == held
    assert "not loading optional program flow_reader (tracing)" in daemon.stderr()
    # .data: direction 3 (on a stick) for this ifindex; .bss: the VLANs in network order and the offset.
    maps = {M.map_info_by_id(i)["name"].split(".")[-1]: i for i in M.prog_info_by_id(state["prog_id"])["map_ids"]}
    fd = M.map_fd_by_id(maps["data"])
    try:
        data = M.map_lookup(fd, b"\0" * 4)
    finally:
        close(fd)
    assert struct.unpack_from("<Ii", data) == (3, idx)
    fd = M.map_fd_by_id(maps["bss"])
    try:
        bss = M.map_lookup(fd, b"\0" * 4)
    finally:
        close(fd)
    assert bss[:8] == struct.pack("<I", 1) + struct.pack(">HH", 100, 200)
    assert daemon.stop() == 0
    assert xdp(netns_pair, netns_pair.if_a)["attach_mode"] == "none"


def test_the_embedded_object_is_the_pipeline_object(shaperd):
    with open(shaperd["binary"], "rb") as fh:
        binary = fh.read()
    with open(shaperd["object"], "rb") as fh:
        built = fh.read()
    assert embedded_object(binary, shaperd["binary"]) == built


@pytest.mark.parametrize("lines,message", [
    ("mode = bridge\nto_internet = a\n", "mode bridge needs to_internet and to_network"),
    ("mode = stick\ninterface = a\ninternet_vlan = 100\nnetwork_vlan = 5000\n", "network_vlan = 5000 is invalid: "
     "give a VLAN id, 1-4094"),
    ("mode = bridge\nwrite_logs = /x\n", "unknown key write_logs"),
    ("to_internet = a\n", "no mode: add `mode = bridge` or `mode = stick`"),
    ("mode = bridge\npin_root = relative\n", "pin_root = relative is invalid: give an absolute path"),
])
def test_bad_configuration_one_message_exit_2(shaperd, tmp_path, lines, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(lines)
    proc = sh(shaperd["binary"], str(conf), check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_example_configuration_runs(shaperd, bpffs, bridge, tmp_path, running):
    with open(os.path.join(shaperd["crate"], "src", "daemon", "shaperd.conf.example")) as fh:
        text = fh.read()
    for old, new in (('"eth1"', '"%s"' % bridge.if_a), ('"eth2"', '"%s"' % bridge.if_c),
                     ('# netns = "shaper"', 'netns = "%s"' % bridge.ns_a), ('"/sys/fs/bpf"', '"%s"' % bpffs),
                     ('"/var/lib/shaperd/writes.log"', '"%s"' % (tmp_path / "w.log"))):
        assert old in text, old
        text = text.replace(old, new, 1)
    conf = tmp_path / "example.conf"
    conf.write_text(text)
    daemon = start(running, shaperd["binary"], str(conf))
    assert "2 interface(s), writes from seq 0 to 50000" in daemon.stderr()
    assert daemon.stop() == 0


def test_the_unit_file_restarts_always_and_verifies(shaperd, tmp_path):
    with open(os.path.join(shaperd["crate"], "src", "daemon", "shaperd.service")) as fh:
        unit = fh.read()
    service = dict(line.split("=", 1) for line in unit.split("[Service]")[1].split("[")[0].splitlines()
                   if "=" in line and not line.startswith("#"))
    assert service["Restart"] == "always"
    assert service["ExecStart"] == "/usr/local/sbin/shaperd /etc/shaperd.conf"
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked here")
    local = tmp_path / "shaperd.service"
    local.write_text(unit.replace("/usr/local/sbin/shaperd", shaperd["binary"]))
    proc = sh("systemd-analyze", "verify", str(local), check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_audit_finds_the_daemons_pins_compatible_with_its_embedded_object(shaperd, bpffs, bridge, tmp_path,
                                                                              running):
    """The module path a service rollout takes: the object out of the installed binary, then the pinned-map
    audit against it, while the daemon runs."""
    with open(shaperd["binary"], "rb") as fh:
        embedded = tmp_path / "embedded.o"
        embedded.write_bytes(embedded_object(fh.read()))
    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=0))
    result = run_module("pinned_maps", dict(pin_root=bpffs, spec="reference", object=str(embedded)))
    assert result["_rc"] == 0, result
    assert result["summary"]["compatible"] == len(PINNED)
    assert result["summary"]["incompatible"] == result["summary"]["missing"] == result["summary"]["unknown"] == 0
    assert daemon.stop() == 0


def test_more_writes_than_the_map_holds_is_refused(shaperd, bpffs, bridge, tmp_path):
    proc = sh(shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=65537), check=False)
    assert proc.returncode == 2
    assert "write_limit = 65537 is more than ip_to_shaper holds (65536 entries): lower it" in proc.stderr
    assert xdp(bridge, bridge.if_a)["attach_mode"] == "none"


def test_a_trial_load_of_the_embedded_object_gives_the_running_tags(shaperd, bpffs, bridge, tmp_path, running):
    """What "the running programs are the embedded object's" can rest on: the collection's own load of the
    object taken out of the binary (elsewhere, its own bpffs, other load-time values) gives the kernel tags
    of the programs the daemon runs."""
    with open(shaperd["binary"], "rb") as fh:
        embedded = tmp_path / "embedded.o"
        embedded.write_bytes(embedded_object(fh.read()))
    daemon = start(running, shaperd["binary"], config(tmp_path, bpffs, bridge, write_limit=0))
    infos = [M.prog_info_by_id(i) for i in held_prog_ids(daemon.pid)]
    running_tags = {(info["name"], info["tag"]) for info in infos}  # one tag per program on both interfaces
    trial_root = tmp_path / "trial-bpffs"
    trial_root.mkdir()
    mount_bpffs(str(trial_root))
    try:
        with O.load_object(str(embedded), pin_root=str(trial_root), resize={"cpu_map": possible_cpus()},
                           data={"direction": 2}, disabled=("flow_reader", "xmit_counter")) as lo:
            trial_tags = {n: lo.prog_info(n)["tag"] for n in ("xdp_shaper", "tc_classify", "tc_bridge_redirect")}
    finally:
        umount(str(trial_root))
    # Kernel names are cut to 15 characters: tc_bridge_redirect runs as tc_bridge_redir.
    assert len(infos) == 6 and running_tags == {(n[:15], t) for n, t in trial_tags.items()}
    assert daemon.stop() == 0
