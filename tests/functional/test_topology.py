"""LibreQoS's two-interface topology on the real kernel: one object instance per interface,
sharing the pinned maps, each with its own load-time values (direction 1 on the
Internet-facing side, 2 on the ISP-facing side, both interface indexes), traffic forwarded
through a shaper namespace between a "client" and an "upstream" namespace. The XDP
programs' own per-host counters prove each side counts its direction."""
from __future__ import annotations

import os
import socket
import struct
import uuid

import pytest

from lqos_testlib import build_reference, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._libbpf import possible_cpus

pytestmark = pytest.mark.usefixtures("tools")
NCPUS = possible_cpus()
PINGS = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("topology"), "reference", "ref")


@pytest.fixture
def shaper():
    """client (c0) -- (lan0) shaper (wan0) -- (u0) upstream, IPv4 forwarding in the shaper only."""
    tag = "lqz" + uuid.uuid4().hex[:6]
    ns = {"client": tag + "c", "shaper": tag + "s", "upstream": tag + "u"}
    net = 10 + int(tag[3:5], 16) % 200
    ips = {"client": "10.214.%d.1" % net, "lan": "10.214.%d.254" % net,
           "wan": "10.215.%d.254" % net, "upstream": "10.215.%d.1" % net}
    for name in ns.values():
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", ns["shaper"], "link", "add", "lan0", "type", "veth", "peer", "name", "c0", "netns", ns["client"])
        sh("ip", "-n", ns["shaper"], "link", "add", "wan0", "type", "veth", "peer", "name", "u0",
           "netns", ns["upstream"])
        for where, dev, ip, prefix in (("client", "c0", ips["client"], 24), ("shaper", "lan0", ips["lan"], 24),
                                       ("shaper", "wan0", ips["wan"], 24), ("upstream", "u0", ips["upstream"], 24)):
            sh("ip", "-n", ns[where], "addr", "add", "%s/%d" % (ip, prefix), "dev", dev)
            sh("ip", "-n", ns[where], "link", "set", dev, "up")
        sh("ip", "-n", ns["client"], "route", "add", "default", "via", ips["lan"])
        sh("ip", "-n", ns["upstream"], "route", "add", "default", "via", ips["wan"])
        sh("ip", "netns", "exec", ns["shaper"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield {"ns": ns, "ips": ips}
    finally:
        for name in ns.values():
            sh("ip", "netns", "delete", name, check=False)


def counters(bpffs: str, ip: str) -> tuple | None:
    """(icmp packets down, up) of a host in the pinned host_traffic map, summed over CPUs."""
    key = b"\0" * 10 + b"\xff\xff" + socket.inet_aton(ip)
    blob = M.map_lookup(os.path.join(bpffs, "host_traffic"), key)
    if blob is None:
        return None
    down = sum(struct.unpack_from("<Q", blob, cpu * 112 + 64)[0] for cpu in range(NCPUS))
    up = sum(struct.unpack_from("<Q", blob, cpu * 112 + 72)[0] for cpu in range(NCPUS))
    return down, up


def test_two_interfaces_share_the_maps_and_each_counts_its_direction(reference, shaper, bpffs, tmp_path):
    ns = shaper["ns"]["shaper"]
    results = {}
    for ifname, direction in (("wan0", 1), ("lan0", 2)):   # 1: faces the Internet, 2: faces the customers
        data = {"direction": direction, "attach_ifindex": "ifindex:%s" % ifname}
        args = dict(spec="reference", object=reference, pin_root=bpffs, interface=ifname, netns=ns,
                    state_dir=str(tmp_path / "state"), data=data, approve=True)
        results[ifname] = run_module("attach", args)
        assert results[ifname]["_rc"] == 0, results[ifname].get("msg")
    with H.netns(ns):
        wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
    assert "data attach_ifindex=%d, data direction=1" % wan in results["wan0"]["actions"][0]
    assert "data attach_ifindex=%d, data direction=2" % lan in results["lan0"]["actions"][0]
    # one set of pinned maps, used by both instances
    pinned_ids = {M.map_info_by_path(os.path.join(bpffs, "host_traffic"))["id"]}
    for ifname in ("wan0", "lan0"):
        prog = M.prog_info_by_id(results[ifname]["xdp"]["id"])
        names = {M.map_info_by_id(i)["name"]: i for i in prog["map_ids"]}
        assert {names["host_traffic"]} == pinned_ids
    ping = sh("ip", "netns", "exec", shaper["ns"]["client"], "ping", "-c", str(PINGS), "-i", "0.2", "-W", "2",
              shaper["ips"]["upstream"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # requests enter the ISP-facing lan0 (client sends: up), replies enter the Internet-facing wan0 (down)
    assert counters(bpffs, shaper["ips"]["client"]) == (PINGS, PINGS)
    assert counters(bpffs, shaper["ips"]["upstream"]) is None
    # the same, as the deploy role's health check reads it (spec health: the map's own BTF decodes it)
    facts = run_module("abi_info", dict(spec="reference", pin_root=bpffs, toolchain=False, programs=False,
                                        build_root=str(tmp_path / "no-build"),
                                        counters=[shaper["ips"]["client"], shaper["ips"]["upstream"]]))
    assert facts["_rc"] == 0, facts.get("msg")
    assert facts["counters"] == {shaper["ips"]["client"]: {"down": PINGS, "up": PINGS}, shaper["ips"]["upstream"]: None}


def test_an_override_for_a_variable_the_object_lacks_is_an_error(reference, shaper, bpffs, tmp_path):
    res = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                    netns=shaper["ns"]["shaper"], state_dir=str(tmp_path / "state"),
                                    data={"to_isp_ifindex": "ifindex:lan0"}, approve=True))
    assert res["_rc"] == 1
    assert res["msg"] == ("data to_isp_ifindex: the object has no such global variable. Fix: check the names against "
                          "the BPF source (non-static globals of .rodata, .data, .bss).")
    bad = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                    netns=shaper["ns"]["shaper"], data={"direction": "sideways"}))
    assert bad["_rc"] == 1 and bad["msg"].startswith("data.direction must be an integer or one of possible_cpus, "
                                                     "ifindex, ifindex:NAME, be16:N, got 'sideways'.")
    missing = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                        netns=shaper["ns"]["shaper"], data={"attach_ifindex": "ifindex:nosuch9"}))
    assert missing["_rc"] == 1
    assert missing["msg"].startswith("interface nosuch9 (named in a load-time value ifindex:nosuch9) does not exist in "
                                     "network namespace %s." % shaper["ns"]["shaper"])
