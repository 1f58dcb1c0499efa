"""A bridge's VLAN mapping on the real kernel: a frame that arrives on one port tagged A leaves the
other port tagged B.

The bridge of test_topology (client c0 -- lan0 [shaper] wan0 -- u0 upstream, no Linux bridge, no
forwarding: only the TC redirector carries frames across) with a `vlan_mapping`. This kernel has no
8021q module, so the frames are written tagged by a packet socket on one side and read by a packet
socket on the other; the tag checked is the one the kernel delivers (in the frame, or beside it in
PACKET_AUXDATA when the stack holds it out of band, as it does for veth)."""
from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time

import pytest
import yaml

from lqos_testlib import REPO, libreqos_build, libreqos_fitted, needs_xdp, mount_bpffs, run_module, sh, umount

from ansible_collections.lqos.bpf.plugins.filter.topology_plan import topology_plan
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

from test_topology import attach_plan, mac, tagged_echo
from vlan_switch import listener, read_frame
# The fixtures of the bridge tests: the reference object and the three namespaces.
from test_topology import bridged, reference  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.usefixtures("tools")
MAPPING = [{"parent": "wan0", "tag": 100, "redirect_to": 200},    # from the Internet: 100 -> 200
           {"parent": "lan0", "tag": 200, "redirect_to": 100}]    # back: 200 -> 100


def received(sock: socket.socket, marker: bytes, seconds: float = 2.0) -> list:
    """[(tpid, tci, source address)] of every frame carrying marker within `seconds`, the tag as the kernel
    delivered it: in the frame's bytes, or out of band in PACKET_AUXDATA (as libpcap puts it back)."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        tag, frame, _pkttype = read_frame(sock)
        if marker not in frame:
            continue
        inner = frame[12:]
        src = socket.inet_ntoa(inner[2 + 12:2 + 16]) if inner[:2] == b"\x08\x00" else None
        out.append((tag[0], tag[1], src) if tag else (None, None, src))
    return out


def send(ns: str, ifname: str, frames: list) -> None:
    with H.netns(ns):
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind((ifname, 0))
            for frame in frames:
                raw.send(frame)


def write(plan: dict, bpffs: str, **extra) -> dict:
    res = run_module("map_entries", dict(pin_root=bpffs, netns=plan["netns"], approve=True, **extra))
    assert res["_rc"] == 0, res.get("msg")
    return res


def cross(net: dict, side_from: str, side_to: str, tcis: list) -> list:
    """Send one echo per TCI from side_from's port to side_to's, return what side_to received (by source)."""
    ports = {"client": "c0", "upstream": "u0"}
    ns = net["ns"]
    sock = listener(ns[side_to], ports[side_to])
    try:
        dst, src = mac(ns[side_to], ports[side_to]), mac(ns[side_from], ports[side_from])
        frames = [tagged_echo(dst, src, tci, "10.230.%d.1" % i, net["ips"][side_to]) for i, tci in enumerate(tcis)]
        send(ns[side_from], ports[side_from], frames)
        return sorted(received(sock, b"lqos-stick"), key=lambda r: r[2])
    finally:
        sock.close()


def test_bridge_vlan_mapping_rewrites_the_tag_on_the_way_across(reference, bridged, bpffs, tmp_path):
    ns = bridged["ns"]["shaper"]
    plan = topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns,
                          "vlan_mapping": MAPPING}, "reference")
    attach_plan(reference, bpffs, tmp_path, plan)
    bridge, vlan = plan["bridge"], plan["bridge"]["vlan"]
    write(bridge, bpffs, map=bridge["map"], entries=bridge["entries"])
    # Without the VLAN entries the frames cross with their own tag (priority bits and all).
    assert cross(bridged, "upstream", "client", [0xA064]) == [(0x8100, 0xA064, "10.230.0.1")]
    # check mode and no approval write nothing; the diff names the entries
    for dry in ({"approve": False}, {}):
        args = dict(dict(pin_root=bpffs, netns=ns, approve=True, map=vlan["map"], entries=vlan["entries"]), **dry)
        planned = run_module("map_entries", args, check_mode=not dry, diff=True)
        assert planned["_rc"] == 0 and planned["changed"] and not planned["applied"], planned
        assert M.map_entries(os.path.join(bpffs, "bridge_vlan_map")) == []
    wrote = write(bridge, bpffs, map=vlan["map"], entries=vlan["entries"])
    assert wrote["changed"] and wrote["applied"]
    with H.netns(ns):
        wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
    # key {ifindex, vlan_id}, value {vlan_id}: plain host-order integers
    assert dict(M.map_entries(os.path.join(bpffs, "bridge_vlan_map"))) == {
        struct.pack("<II", wan, 100): struct.pack("<I", 200), struct.pack("<II", lan, 200): struct.pack("<I", 100)}
    assert [e["action"] for e in write(bridge, bpffs, map=vlan["map"], entries=vlan["entries"])["entries"]] == [
        "unchanged", "unchanged"]
    # Internet side -> customers: 100 becomes 200 (priority 5 kept), 300 is not mapped and stays 300.
    assert cross(bridged, "upstream", "client", [0xA064, 300]) == [
        (0x8100, 0xA0C8, "10.230.0.1"), (0x8100, 300, "10.230.1.1")]
    # Customers -> Internet side: 200 becomes 100; the mapping of wan0 does not apply to frames from lan0.
    assert cross(bridged, "client", "upstream", [200, 100]) == [
        (0x8100, 100, "10.230.0.1"), (0x8100, 100, "10.230.1.1")]


@pytest.mark.parametrize("ref", ["develop", "v1.4"])
def test_libreqos_bridge_vlan_mapping_through_bifrost_vlan_map(ref, bridged, bpffs, tmp_path):
    """The same mapping on a LibreQoS checkout: one-integer keys (ifindex << 16 | tag) in bifrost_vlan_map,
    the tag rewritten by LibreQoS's own XDP program."""
    fitted = libreqos_fitted(ref) if ref == "develop" else libreqos_build(ref)
    needs_xdp(fitted, ref)
    built = fitted["result"]
    ns = bridged["ns"]["shaper"]
    plan = topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns,
                          "vlan_mapping": MAPPING}, "libreqos")
    for i in plan["interfaces"]:
        res = run_module("attach", dict(spec="libreqos", object=built["outputs"]["object"]["path"], pin_root=bpffs,
                                        interface=i["name"], netns=ns, state_dir=str(tmp_path / "state"),
                                        topology_data=i["topology_data"], tc_programs=i["tc_programs"],
                                        approve=True))
        assert res["_rc"] == 0, res.get("msg")
    bridge, vlan = plan["bridge"], plan["bridge"]["vlan"]
    write(bridge, bpffs, map=bridge["map"], entries=bridge["entries"])
    write(bridge, bpffs, map=vlan["map"], entries=vlan["entries"])
    with H.netns(ns):
        wan = H.ifindex("wan0")
    held = dict(M.map_entries(os.path.join(bpffs, "bifrost_vlan_map")))
    assert held[struct.pack("<I", (wan << 16) | 100)] == struct.pack("<I", 200)
    assert cross(bridged, "upstream", "client", [100, 300]) == [
        (0x8100, 200, "10.230.0.1"), (0x8100, 300, "10.230.1.1")]


def test_deploy_yml_writes_the_vlan_mapping_and_refuses_what_cannot_carry_it(bridged, tmp_path, tools):
    """deploy.yml on one local host whose bridge has a vlan_mapping: the plan lists the rewrites, the approved run
    writes them and the frames cross retagged, a second run changes nothing; a mapping in mode pair, and a build
    whose object lacks the spec's VLAN map (a spec naming another map stands in for an older release), stop the
    host with the reason and the fix."""
    from test_playbooks import playbook   # the ansible-playbook runner of the playbook tests

    ns = bridged["ns"]["shaper"]
    pin_root = str(tmp_path / "bpffs")
    os.makedirs(pin_root)
    mount_bpffs(pin_root)
    topology = {"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns, "vlan_mapping": MAPPING}
    try:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "lqos_bpf_pin_root": pin_root, "lqos_bpf_state_dir": str(tmp_path / "state"),
                "lqos_bpf_attach_state_dir": str(tmp_path / "attach"), "lqos_bpf_topology": topology}
        inventory = str(tmp_path / "inventory.yml")
        with open(inventory, "w") as fh:
            yaml.safe_dump({"all": {"hosts": {"bridge1": host}}}, fh)
        plan = playbook("deploy.yml", inventory, "--check", "--diff")
        assert plan.rc == 0, plan.out[-8000:]
        assert ("write the VLAN rewrites of bridge_vlan_map (wan0 VLAN 100 -> 200, lan0 VLAN 200 -> 100)"
                in plan.out), plan.out[-8000:]
        # Built but not approved: the attach is only planned, so the maps are not pinned yet; the plan still lists
        # every entry as given (it used to stop at the missing pin).
        built = playbook("deploy.yml", inventory)
        assert built.rc == 0, built.out[-8000:]
        vlan_map = os.path.join(pin_root, "bridge_vlan_map")
        shown = built.out.replace("\\", "")   # the summary prints the plan as JSON strings
        assert ('set %s[{"ifindex": "ifindex:wan0", "vlan_id": 100}] = {"vlan_id": 200} (the map is pinned by the '
                'attach)' % os.path.realpath(vlan_map)) in shown, built.out[-8000:]
        assert not os.path.exists(vlan_map)
        first = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        assert first.rc == 0, first.out[-8000:]
        with H.netns(ns):
            wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
        assert dict(M.map_entries(vlan_map)) == {
            struct.pack("<II", wan, 100): struct.pack("<I", 200), struct.pack("<II", lan, 200): struct.pack("<I", 100)}
        assert "set %s[%s]" % (os.path.realpath(vlan_map), struct.pack("<II", wan, 100).hex()) in first.out
        assert cross(bridged, "upstream", "client", [100]) == [(0x8100, 200, "10.230.0.1")]
        again = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        assert again.rc == 0, again.out[-8000:]
        assert again.recap["bridge1"]["changed"] == 0, again.changed_tasks
        pair = playbook("deploy.yml", inventory, "-e", yaml.safe_dump({"lqos_bpf_topology": dict(topology, mode="pair")},
                                                                      default_flow_style=True).strip())
        assert pair.rc != 0 and ("`vlan_mapping` needs mode bridge (the bridge redirector rewrites the tags), got "
                                 "mode pair. Fix: use mode bridge, or remove vlan_mapping." in pair.out), pair.out[-4000:]
        with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
            older = yaml.safe_load(fh)
        older["topology"]["bridge"]["vlan"]["map"] = "bridge_vlan_map_v9"
        spec = str(tmp_path / "older.yml")
        with open(spec, "w") as fh:
            yaml.safe_dump(older, fh)
        lacking = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true", "-e", "lqos_bpf_spec=" + spec)
        assert lacking.rc != 0
        assert "which the object of build" in lacking.out and (
            "does not have: this release cannot rewrite VLAN tags. Fix: deploy a release whose object has "
            "bridge_vlan_map_v9, or remove vlan_mapping from lqos_bpf_topology." in lacking.out), lacking.out[-4000:]
        assert dict(M.map_entries(vlan_map)) != {}   # nothing was touched by the refused run
    finally:
        for ifname in ("wan0", "lan0"):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ifname, "xdp", "off", check=False)
        umount(pin_root)
