"""LibreQoS's topologies on the real kernel: one object instance per interface, sharing the
pinned maps, each with its own load-time values.

- pair: direction 1 on the Internet-facing side, 2 on the ISP-facing side, traffic forwarded
  through a shaper namespace between a "client" and an "upstream" namespace;
- bridge: the same two ports, no forwarding and no address in the shaper: only the TC
  redirector and its map entries (lqos.bpf.map_entries) carry the traffic across;
- stick: one interface, direction 3, two VLANs; tagged frames are written by a packet socket
  (this kernel has no 8021q module; the VMs of molecule/default run real VLAN subinterfaces).

The topologies go through the deploy role's derivation (lqos.bpf.topology_plan), and the
XDP programs' own per-host counters prove each side counts its direction."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import uuid

import pytest
import yaml

from lqos_testlib import build_reference, libreqos_build, libreqos_fitted, needs_xdp, mount_bpffs, run_module, sh, umount

from ansible_collections.lqos.bpf.plugins.filter.topology_plan import topology_plan

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus

pytestmark = pytest.mark.usefixtures("tools")
NCPUS = possible_cpus()
PINGS = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("topology"), "reference", "ref")


@contextlib.contextmanager
def three_namespaces(prefix: str):
    """client (c0) -- (lan0) shaper (wan0) -- (u0) upstream: three fresh netns and two veth pairs, all up;
    yields ({role: netns}, a /24 number unique to this run); deletes the namespaces afterwards."""
    tag = prefix + uuid.uuid4().hex[:6]
    ns = {"client": tag + "c", "shaper": tag + "s", "upstream": tag + "u"}
    for name in ns.values():
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", ns["shaper"], "link", "add", "lan0", "type", "veth", "peer", "name", "c0", "netns", ns["client"])
        sh("ip", "-n", ns["shaper"], "link", "add", "wan0", "type", "veth", "peer", "name", "u0",
           "netns", ns["upstream"])
        for where, dev in (("shaper", "lan0"), ("shaper", "wan0"), ("client", "c0"), ("upstream", "u0")):
            sh("ip", "-n", ns[where], "link", "set", dev, "up")
        yield ns, 10 + int(tag[3:5], 16) % 200
    finally:
        for name in ns.values():
            sh("ip", "netns", "delete", name, check=False)


@pytest.fixture
def shaper():
    """client (c0) -- (lan0) shaper (wan0) -- (u0) upstream, IPv4 forwarding in the shaper only."""
    with three_namespaces("lqz") as (ns, net):
        ips = {"client": "10.214.%d.1" % net, "lan": "10.214.%d.254" % net,
               "wan": "10.215.%d.254" % net, "upstream": "10.215.%d.1" % net}
        for where, dev, ip in (("client", "c0", ips["client"]), ("shaper", "lan0", ips["lan"]),
                               ("shaper", "wan0", ips["wan"]), ("upstream", "u0", ips["upstream"])):
            sh("ip", "-n", ns[where], "addr", "add", "%s/24" % ip, "dev", dev)
        sh("ip", "-n", ns["client"], "route", "add", "default", "via", ips["lan"])
        sh("ip", "-n", ns["upstream"], "route", "add", "default", "via", ips["wan"])
        sh("ip", "netns", "exec", ns["shaper"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield {"ns": ns, "ips": ips}


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
    # The same variable derived by a topology counts as the spec's own: an older object without it is noted.
    derived = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                        netns=shaper["ns"]["shaper"], state_dir=str(tmp_path / "state"),
                                        topology_data={"direction": 1, "to_isp_ifindex": "ifindex:lan0"},
                                        approve=True))
    assert derived["_rc"] == 0, derived.get("msg")
    assert "spec attach.data.to_isp_ifindex is not set: the object has no such variable" in derived["notes"]
    assert "data direction=1" in derived["actions"][0]
    bad = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                    netns=shaper["ns"]["shaper"], data={"direction": "sideways"}))
    assert bad["_rc"] == 1 and bad["msg"].startswith("data.direction must be an integer or one of possible_cpus, "
                                                     "ifindex, ifindex:NAME, be16:N, got 'sideways'.")
    missing = run_module("attach", dict(spec="reference", object=reference, pin_root=bpffs, interface="wan0",
                                        netns=shaper["ns"]["shaper"], data={"attach_ifindex": "ifindex:nosuch9"}))
    assert missing["_rc"] == 1
    assert missing["msg"].startswith("interface nosuch9 (named in a load-time value ifindex:nosuch9) does not exist in "
                                     "network namespace %s." % shaper["ns"]["shaper"])


# ---------------------------------------------------------------------------
# The three topologies as the deploy role derives them (lqos.bpf.topology_plan)
# ---------------------------------------------------------------------------

def attach_plan(reference, bpffs, tmp_path, plan, **extra):
    """Attach every interface of a topology plan, as the deploy role does; {name: result}."""
    out = {}
    for i in plan["interfaces"]:
        args = dict(spec="reference", object=reference, pin_root=bpffs, interface=i["name"], netns=i.get("netns"),
                    state_dir=str(tmp_path / "state"), topology_data=i["topology_data"], tc_programs=i["tc_programs"],
                    approve=True,
                    **extra)
        out[i["name"]] = run_module("attach", args)
        assert out[i["name"]]["_rc"] == 0, out[i["name"]].get("msg")
    return out


def tc_ingress(ns: str, ifname: str) -> str:
    return sh("tc", "-n", ns, "filter", "show", "dev", ifname, "ingress").stdout


def test_pair_through_the_topology_variable_leaves_the_redirector_out(reference, shaper, bpffs, tmp_path):
    ns = shaper["ns"]["shaper"]
    plan = topology_plan({"mode": "pair", "internet": "wan0", "isp": "lan0", "netns": ns}, "reference")
    res = attach_plan(reference, bpffs, tmp_path, plan)
    for ifname in ("wan0", "lan0"):
        assert [t["program"] for t in res[ifname]["tc"]] == ["tc_classify"]
        assert "tc_bridge_redir" not in tc_ingress(ns, ifname)
    ping = sh("ip", "netns", "exec", shaper["ns"]["client"], "ping", "-c", str(PINGS), "-i", "0.2", "-W", "2",
              shaper["ips"]["upstream"], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert counters(bpffs, shaper["ips"]["client"]) == (PINGS, PINGS)


@pytest.fixture
def bridged():
    """client (c0 10.216.N.1) -- (lan0) shaper (wan0) -- (u0 10.216.N.2) upstream: one subnet, the shaper has
    no address, no Linux bridge and no forwarding: only a redirector can carry the traffic across."""
    with three_namespaces("lqb") as (ns, net):
        ips = {"client": "10.216.%d.1" % net, "upstream": "10.216.%d.2" % net}
        sh("ip", "-n", ns["client"], "addr", "add", ips["client"] + "/24", "dev", "c0")
        sh("ip", "-n", ns["upstream"], "addr", "add", ips["upstream"] + "/24", "dev", "u0")
        yield {"ns": ns, "ips": ips}


def ping_across(net, count=PINGS):
    return sh("ip", "netns", "exec", net["ns"]["client"], "ping", "-c", str(count), "-i", "0.2", "-W", "1",
              net["ips"]["upstream"], check=False)


def test_bridge_mode_redirects_between_the_ports_once_the_map_entries_are_written(reference, bridged, bpffs,
                                                                                  tmp_path):
    ns = bridged["ns"]["shaper"]
    plan = topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns}, "reference")
    res = attach_plan(reference, bpffs, tmp_path, plan)
    for ifname in ("wan0", "lan0"):
        assert sorted(t["program"] for t in res[ifname]["tc"]) == ["tc_bridge_redirect", "tc_classify"]
        assert "tc_bridge_redir" in tc_ingress(ns, ifname)
    bridge = plan["bridge"]
    args = dict(pin_root=bpffs, map=bridge["map"], netns=ns, entries=bridge["entries"], approve=True)
    # check mode and no approval write nothing
    for dry in (dict(args, approve=False), args):
        planned = run_module("map_entries", dry, check_mode=dry is args, diff=True)
        assert planned["_rc"] == 0 and planned["changed"] and not planned["applied"], planned
        assert len(planned["actions"]) == 2
        assert M.map_entries(os.path.join(bpffs, "bridge_redirect")) == []
    wrote = run_module("map_entries", args, diff=True)
    assert wrote["_rc"] == 0 and wrote["changed"] and wrote["applied"], wrote.get("msg")
    with H.netns(ns):
        wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
    held = dict(M.map_entries(os.path.join(bpffs, "bridge_redirect")))
    assert held == {struct.pack("<I", wan): struct.pack("<II", lan, 0), struct.pack("<I", lan): struct.pack("<II", wan, 0)}
    assert wrote["diff"]["before"] == ""
    assert wrote["diff"]["after"] == "%s = %s\n%s = %s\n" % (struct.pack("<I", wan).hex(), struct.pack("<II", lan, 0).hex(),
                                                             struct.pack("<I", lan).hex(), struct.pack("<II", wan, 0).hex())
    again = run_module("map_entries", args)
    assert again["_rc"] == 0 and not again["changed"] and again["actions"] == []
    assert [e["action"] for e in again["entries"]] == ["unchanged", "unchanged"]
    # Now the client reaches the upstream through the two redirected ports, and the XDP programs count it:
    # requests enter the ISP-facing lan0 (up), replies the Internet-facing wan0 (down).
    ping = ping_across(bridged)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert counters(bpffs, bridged["ips"]["client"]) == (PINGS, PINGS)
    # Back to a pair: the redirector is detached from both ports, and the traffic has no path any more (the
    # shaper namespace has no address, no bridge, no forwarding: the redirector was the only path).
    pair = topology_plan({"mode": "pair", "internet": "wan0", "isp": "lan0", "netns": ns}, "reference")
    res = attach_plan(reference, bpffs, tmp_path, pair)
    for ifname in ("wan0", "lan0"):
        assert "tc_bridge_redir" not in tc_ingress(ns, ifname)
        assert any("detach" in a and "ingress" in a for a in res[ifname]["actions"]), res[ifname]["actions"]
    assert ping_across(bridged, 2).returncode != 0


def test_map_entries_bad_input_is_one_clear_error(reference, bridged, bpffs, tmp_path):
    ns = bridged["ns"]["shaper"]
    attach_plan(reference, bpffs, tmp_path,
                topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns}, "reference"))
    base = dict(pin_root=bpffs, map="bridge_redirect", netns=ns, approve=True)
    cases = [
        (dict(base, entries=[{"key": 1, "value": {"to_iface": 2}}]),
         "entries[0].value: struct bridge_target has no field to_iface (it has to_ifindex, only_tagged). "
         "Fix: use the field names of the C struct."),
        (dict(base, entries=[{"key": "ifindex:nosuch0", "value": {"to_ifindex": 1}}]),
         "interface nosuch0 (ifindex:nosuch0) does not exist in network namespace %s. Fix: fix the name, or set "
         "netns to the namespace that holds it." % ns),
        (dict(base, entries=[{"key": -1, "value": {}}]),
         "entries[0].key: -1 does not fit a 4-byte unsigned integer (0 to 4294967295). Fix: give a number in that "
         "range."),
        (dict(base, entries=[{"key": 1}]),
         "entries[0] must be a mapping with key and value, got {'key': 1}. Fix: write each entry as "
         "{key: ..., value: ...}."),
        (dict(base, map="../etc", entries=[]), "pin path '../etc' leaves the pin root %s." % os.path.realpath(bpffs)),
        (dict(base, map="host_traffic", entries=[{"key": 1, "value": 1}]),
         "map %s/host_traffic is a percpu_hash map: one value per CPU is not written by this module."
         % os.path.realpath(bpffs)),
        (dict(base, map="nosuch", entries=[]), "no map is pinned at %s/nosuch." % os.path.realpath(bpffs)),
        (dict(base, netns="lqnosuchns", entries=[{"key": "ifindex:lan0", "value": {}}]),
         "network namespace lqnosuchns does not exist (no /run/netns/lqnosuchns). Fix: create it (ip netns add "
         "lqnosuchns) or fix netns."),
    ]
    for args, msg in cases:
        res = run_module("map_entries", args)
        assert res["_rc"] == 1 and res["msg"].startswith(msg), (res.get("msg"), msg)
        assert "Traceback" not in res["msg"] and "exception" not in res
    assert M.map_entries(os.path.join(bpffs, "bridge_redirect")) == []
    gone = run_module("map_entries", dict(base, entries=[{"key": 7}], state="absent"))
    assert gone["_rc"] == 0 and not gone["changed"] and gone["entries"][0]["action"] == "absent"


def test_deploy_yml_in_bridge_mode_attaches_the_redirector_and_writes_its_map(bridged, tmp_path, tools):
    """The whole deploy playbook on one local host whose lqos_bpf_topology is a bridge: the role derives both
    interfaces, attaches the redirector and writes its entries; a second run changes nothing."""
    from test_playbooks import playbook   # the ansible-playbook runner of the playbook tests

    ns = bridged["ns"]["shaper"]
    pin_root = str(tmp_path / "bpffs")
    os.makedirs(pin_root)
    mount_bpffs(pin_root)
    try:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "lqos_bpf_pin_root": pin_root, "lqos_bpf_state_dir": str(tmp_path / "state"),
                "lqos_bpf_attach_state_dir": str(tmp_path / "attach"),
                # The shaper has no address of its own on a bridge: no traffic probe from it.
                "lqos_bpf_topology": {"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns}}
        inventory = str(tmp_path / "inventory.yml")
        with open(inventory, "w") as fh:
            yaml.safe_dump({"all": {"hosts": {"bridge1": host}}}, fh)
        # A fresh host in check mode: the plan names the interfaces and the redirector's entries, creates nothing.
        plan = playbook("deploy.yml", inventory, "--check", "--diff")
        assert plan.rc == 0, plan.out[-8000:]
        assert "attach on wan0" in plan.out and "attach on lan0" in plan.out
        assert "write the bridge redirector entries of bridge_redirect (ifindex:wan0, ifindex:lan0)" in plan.out
        assert os.listdir(pin_root) == [] or set(os.listdir(pin_root)) <= {"maps.debug", "progs.debug"}
        # A plan on the built host: both interfaces plan the same new map pins, and the summary lists each once.
        planned = playbook("deploy.yml", inventory)
        assert planned.rc == 0, planned.out[-8000:]
        [lines] = [d["msg"] for status, h, item, d in planned.results if h == "localhost" and item == "bridge1"]
        pins = [line for line in lines if line.startswith("pin new map ")]
        assert pins and len(pins) == len(set(pins)), lines
        first = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        assert first.rc == 0, first.out[-8000:]
        for ifname in ("wan0", "lan0"):
            assert "tc_bridge_redir" in tc_ingress(ns, ifname)
            # the ports accept frames for other MAC addresses, as a bridge's must
            assert "PROMISC" in json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["flags"]
            assert "promiscuous mode on %s" % ifname in first.out
        with H.netns(ns):
            wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
        assert dict(M.map_entries(os.path.join(pin_root, "bridge_redirect"))) == {
            struct.pack("<I", wan): struct.pack("<II", lan, 0), struct.pack("<I", lan): struct.pack("<II", wan, 0)}
        assert "set %s/bridge_redirect[%s]" % (os.path.realpath(pin_root), struct.pack("<I", wan).hex()) in first.out
        ping = ping_across(bridged)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert counters(pin_root, bridged["ips"]["client"]) == (PINGS, PINGS)
        again = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        assert again.rc == 0, again
        assert again.recap["bridge1"]["changed"] == 0, again.changed_tasks
        # The audit reads the hooks of the topology's interfaces too.
        report = str(tmp_path / "report")
        audit = playbook("audit.yml", inventory, "-e", "lqos_bpf_report_dir=" + report)
        assert audit.rc == 0, audit.out[-8000:]
        with open(os.path.join(report, "fleet-abi-report.json")) as fh:
            facts = json.load(fh)["hosts"]["bridge1"]
        assert facts["status"] == "deployed", facts
        both = playbook("deploy.yml", inventory, "-e", '{"lqos_bpf_interfaces": [{"name": "wan0"}]}')
        assert both.rc != 0 and "sets both lqos_bpf_topology and lqos_bpf_interfaces. Fix: keep one" in both.out
        # The service loader's refusals, before anything about the service is read or changed.
        no_unit = playbook("deploy.yml", inventory, "-e", '{"lqos_bpf_loader": "service"}')
        assert no_unit.rc != 0 and ("bridge1: lqos_bpf_loader is service but lqos_bpf_service is empty. Fix: name the "
                                    "systemd unit that loads the programs (lqos_bpf_service: lqosd).") in " ".join(
                                        no_unit.out.split()), no_unit.out[-4000:]
        missing = str(tmp_path / "no-such-install.yml")
        no_file = playbook("deploy.yml", inventory, "-e", json.dumps(
            {"lqos_bpf_loader": "service", "lqos_bpf_service": "shaperd", "lqos_bpf_service_install_tasks": missing}))
        assert no_file.rc != 0 and ("bridge1: lqos_bpf_service_install_tasks is %s, which is no file on the controller; "
                                    "nothing was changed. Fix: give the path of your task file on the controller, "
                                    "absolute or under inventory_dir (in a collection playbook such as lqos.bpf.deploy, "
                                    "playbook_dir is the collection's own folder)." % missing) in " ".join(
                                        no_file.out.split()), no_file.out[-4000:]
    finally:
        for ifname in ("wan0", "lan0"):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ifname, "xdp", "off", check=False)
        umount(pin_root)


def ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tagged_echo(dst_mac: bytes, src_mac: bytes, vlan: int, src: str, dst: str) -> bytes:
    """An Ethernet frame with one 802.1Q tag carrying an ICMP echo request from src to dst."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"lqos-stick"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", ipv4_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!HH", 0x8100, vlan) + struct.pack("!H", 0x0800) + ip + icmp


def mac(ns: str, ifname: str) -> bytes:
    return bytes.fromhex(json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["address"]
                         .replace(":", ""))


@pytest.fixture
def trunk():
    """shaper (trunk0) -- (t0) switch: one link; the switch side sends VLAN-tagged frames."""
    tag = "lqk" + uuid.uuid4().hex[:6]
    ns = {"shaper": tag + "s", "switch": tag + "w"}
    for name in ns.values():
        sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", ns["shaper"], "link", "add", "trunk0", "type", "veth", "peer", "name", "t0",
           "netns", ns["switch"])
        sh("ip", "-n", ns["shaper"], "link", "set", "trunk0", "up")
        sh("ip", "-n", ns["switch"], "link", "set", "t0", "up")
        yield ns
    finally:
        for name in ns.values():
            sh("ip", "netns", "delete", name, check=False)


def test_stick_counts_each_vlan_on_its_side(reference, trunk, bpffs, tmp_path):
    """On a stick the tag says the side: frames tagged with the Internet VLAN go "down" to their destination,
    frames tagged with the ISP VLAN come "up" from their source, other tags are not counted. The frames are
    written tagged onto the wire by a packet socket, so no 8021q module is needed on this kernel."""
    plan = topology_plan({"mode": "stick", "interface": "trunk0", "internet_vlan": 100, "isp_vlan": 200,
                          "stick_offset": 1, "netns": trunk["shaper"]}, "reference")
    res = attach_plan(reference, bpffs, tmp_path, plan)
    assert [t["program"] for t in res["trunk0"]["tc"]] == ["tc_classify"]
    # be16:100 and be16:200: the bytes 00 64 and 00 c8, i.e. the little-endian integers 0x6400 and 0xc800
    assert ("data attach_ifindex=%d, data direction=3, data stick_vlan_internet=25600, data stick_vlan_lan=51200, "
            "data upload_cpu_offset=1" % res["trunk0"]["ifindex"]) in res["trunk0"]["actions"][0]
    dst_mac, src_mac = mac(trunk["shaper"], "trunk0"), mac(trunk["switch"], "t0")
    with H.netns(trunk["switch"]):
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.bind(("t0", 0))
            for vlan, src, dst, count in ((100, "198.51.100.7", "10.217.0.10", 3),    # from the Internet
                                          (200, "10.218.0.20", "198.51.100.7", 4),    # from a customer
                                          (300, "10.219.0.30", "10.219.0.31", 2)):    # neither side
                frame = tagged_echo(dst_mac, src_mac, vlan, src, dst)
                for unused in range(count):
                    raw.send(frame)
    assert counters(bpffs, "10.217.0.10") == (3, 0)
    assert counters(bpffs, "10.218.0.20") == (0, 4)
    for address in ("198.51.100.7", "10.219.0.30", "10.219.0.31"):
        assert counters(bpffs, address) is None


@pytest.mark.parametrize("ref", ["develop", "v1.4"])
def test_libreqos_bridge_through_bifrost_with_its_own_names(ref, bridged, bpffs, tmp_path):
    """The same bridge topology on a LibreQoS checkout: the spec's topology names (direction,
    to_internet_ifindex, to_isp_ifindex; bifrost and bifrost_interface_map.redirect_to) reach the real object."""
    fitted = libreqos_fitted(ref) if ref == "develop" else libreqos_build(ref)
    needs_xdp(fitted, ref)
    built = fitted["result"]
    obj = built["outputs"]["object"]["path"]
    ns = bridged["ns"]["shaper"]
    plan = topology_plan({"mode": "bridge", "internet": "wan0", "isp": "lan0", "netns": ns}, "libreqos")
    for i in plan["interfaces"]:
        res = run_module("attach", dict(spec="libreqos", object=obj, pin_root=bpffs, interface=i["name"], netns=ns,
                                        state_dir=str(tmp_path / "state"), topology_data=i["topology_data"],
                                        tc_programs=i["tc_programs"], approve=True))
        assert res["_rc"] == 0, res.get("msg")
        assert "data direction=%d" % i["topology_data"]["direction"] in res["actions"][0]
        assert "bifrost" in tc_ingress(ns, i["name"])
    wrote = run_module("map_entries", dict(pin_root=bpffs, map=plan["bridge"]["map"], netns=ns,
                                           entries=plan["bridge"]["entries"], approve=True))
    assert wrote["_rc"] == 0 and wrote["applied"], wrote.get("msg")
    with H.netns(ns):
        wan, lan = H.ifindex("wan0"), H.ifindex("lan0")
    held = dict(M.map_entries(os.path.join(bpffs, "bifrost_interface_map")))
    assert held[struct.pack("<I", wan)][:4] == struct.pack("<I", lan)
    assert held[struct.pack("<I", lan)][:4] == struct.pack("<I", wan)
    ping = ping_across(bridged)
    assert ping.returncode == 0, ping.stdout + ping.stderr
