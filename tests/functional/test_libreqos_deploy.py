"""The deploy role on real LibreQoS (../shared/libreqos/, unpacked at test time): pair, bridge and stick.

One ansible-playbook run deploys every topology at once - each is a local host with its own network namespaces,
bpffs and state folders - with a traffic probe the health check must see counted in LibreQoS's ``map_traffic``
(keys: twelve 0xff bytes + the IPv4 address); a second run must report ``changed=0``. What this kernel allows is
probed: on a kernel that refuses the bpf_xdp_adjust_meta helper, develop runs with that one call answered "not
supported" (lqos_testlib.libreqos_fitted, the path LibreQoS takes on a driver without XDP metadata); a kernel that
still refuses it skips develop with the probe's reason and v1.4 stands in.

The stick host joins on every kernel. Its shaper side is always the same - one veth, trunk0, carrying VLAN 100
(Internet) and 200 (ISP) tagged, with LibreQoS's own XDP and TC programs on it - and so is the probe: the client
(10.234.n.1, VLAN 200) pings the upstream (10.234.n.2, VLAN 100) across the stick. Only the switch side (t0, the
peer of trunk0) depends on the kernel, probed by vlans_work(): where it makes VLAN interfaces (8021q: the molecule
VMs) the client and the upstream sit on t0.200 and t0.100; where it does not (this build machine), a user-space
802.1Q switch (vlan_switch.py, a process in a namespace of its own, started and stopped by the fixture, which
asserts that no process or namespace is left) tags the client's and the upstream's plain veths onto t0. The
fixture prints which path ran.
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import uuid

import pytest
import yaml

from lqos_testlib import REPO, libreqos_fitted, mount_bpffs, needs_xdp, sh, umount, xdp_refusal
from test_playbooks import playbook
from vlan_switch import VlanSwitch

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

pytestmark = pytest.mark.usefixtures("tools")
# The probe ran and its counters were read; a probe without reply or count is noted by the next task.
HEALTH_TASK = "lqos.bpf.deploy : Health check - read the counters the probe's replies went to"
HEALTH_FAILED_TASK = "lqos.bpf.deploy : Health check - note a probe without reply, or replies the programs did not count"
MODES = ("pair", "bridge", "stick")


def vlans_work(tag: str) -> bool:
    """Whether this kernel makes VLAN interfaces (8021q), tried in a scratch netns of our own."""
    ns = tag + "v"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
        return sh("ip", "-n", ns, "link", "add", "link", "p0", "name", "p0.5", "type", "vlan", "id", "5",
                  check=False).returncode == 0
    finally:
        sh("ip", "netns", "delete", ns, check=False)


STICK_8021Q = "VLAN interfaces (8021q) on t0"
STICK_SWITCH = "a user-space 802.1Q switch (vlan_switch.py) on t0: this kernel makes no VLAN interfaces"


class Site:
    """client -- shaper -- upstream namespaces for one topology, its bpffs and state folders."""

    def __init__(self, root: str, mode: str, tag: str, net: int, name: str | None = None,
                 stick_path: str = STICK_8021Q):
        self.name = name or mode
        self.mode, self.dir = mode, os.path.join(root, self.name)
        self.ns = {r: "%s%s%s" % (tag, self.name[0], r[0]) for r in ("client", "shaper", "upstream")}
        self.stick_path, self.switch = stick_path if mode == "stick" else None, None
        if self.stick_path == STICK_SWITCH:
            self.ns["switch"] = "%s%sw" % (tag, self.name[0])
        self.net = net
        self.pin_root = os.path.join(self.dir, "bpffs")

    def up(self, ns, *argv):
        sh("ip", "-n", self.ns[ns], *argv)

    def create(self) -> None:
        os.makedirs(self.pin_root)
        mount_bpffs(self.pin_root)
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
        n = self.net
        if self.mode in ("pair", "bridge"):
            self.up("shaper", "link", "add", "lan0", "type", "veth", "peer", "name", "c0", "netns", self.ns["client"])
            self.up("shaper", "link", "add", "wan0", "type", "veth", "peer", "name", "u0", "netns", self.ns["upstream"])
            for where, dev in (("shaper", "lan0"), ("shaper", "wan0"), ("client", "c0"), ("upstream", "u0")):
                self.up(where, "link", "set", dev, "up")
        if self.mode == "pair":   # routed: the shaper pings the upstream through wan0 itself
            self.client, self.upstream, self.wan = "10.231.%d.1" % n, "10.232.%d.1" % n, "10.232.%d.254" % n
            self.up("client", "addr", "add", self.client + "/24", "dev", "c0")
            self.up("shaper", "addr", "add", "10.231.%d.254/24" % n, "dev", "lan0")
            self.up("shaper", "addr", "add", self.wan + "/24", "dev", "wan0")
            self.up("upstream", "addr", "add", self.upstream + "/24", "dev", "u0")
            self.up("upstream", "route", "add", "default", "via", self.wan)
            self.probe_from, self.counted = self.ns["shaper"], self.wan
        elif self.mode == "bridge":   # one subnet across the bridge: the client pings the upstream
            self.client, self.upstream = "10.233.%d.1" % n, "10.233.%d.2" % n
            self.up("client", "addr", "add", self.client + "/24", "dev", "c0")
            self.up("upstream", "addr", "add", self.upstream + "/24", "dev", "u0")
            self.probe_from, self.counted = self.ns["client"], self.client
        elif self.stick_path == STICK_8021Q:
            # stick: switch side t0 carries VLAN 100 (Internet, the upstream's) and 200 (ISP, the client's)
            self.up("shaper", "link", "add", "trunk0", "type", "veth", "peer", "name", "t0", "netns", self.ns["client"])
            self.up("shaper", "link", "set", "trunk0", "up")
            self.up("client", "link", "set", "t0", "up")
            self.up("client", "link", "add", "link", "t0", "name", "t0.100", "type", "vlan", "id", "100")
            self.up("client", "link", "set", "t0.100", "netns", self.ns["upstream"])
            self.up("client", "link", "add", "link", "t0", "name", "t0.200", "type", "vlan", "id", "200")
            self.stick_ends("t0.200", "t0.100")
        else:
            # stick without 8021q: t0 is the trunk port of a user-space VLAN switch in a namespace of its own
            # (vlan_switch.py), whose access ports sc (VLAN 200) and su (VLAN 100) lead to the client's c0 and the
            # upstream's u0, plain untagged veths. The shaper side is the same: tagged frames on trunk0.
            self.up("shaper", "link", "add", "trunk0", "type", "veth", "peer", "name", "t0", "netns", self.ns["switch"])
            self.up("client", "link", "add", "c0", "type", "veth", "peer", "name", "sc", "netns", self.ns["switch"])
            self.up("upstream", "link", "add", "u0", "type", "veth", "peer", "name", "su", "netns", self.ns["switch"])
            self.up("shaper", "link", "set", "trunk0", "up")
            for dev in ("t0", "sc", "su"):
                self.up("switch", "link", "set", dev, "up")
            self.stick_ends("c0", "u0")
            self.switch = VlanSwitch(self.ns["switch"], "t0", {"sc": 200, "su": 100})
            self.switch.start()

    def stick_ends(self, client_dev: str, upstream_dev: str) -> None:
        """The client on the ISP VLAN (200), the upstream on the Internet VLAN (100), one subnet: the client's
        probe crosses the stick twice (200 -> 100 on the way out, 100 -> 200 back)."""
        n = self.net
        self.client, self.upstream = "10.234.%d.1" % n, "10.234.%d.2" % n
        self.up("client", "addr", "add", self.client + "/24", "dev", client_dev)
        self.up("client", "link", "set", client_dev, "up")
        self.up("upstream", "addr", "add", self.upstream + "/24", "dev", upstream_dev)
        self.up("upstream", "link", "set", upstream_dev, "up")
        self.probe_from, self.counted = self.ns["client"], self.client

    def destroy(self) -> list:
        """Remove the namespaces (the VLAN switch stopped first) and the bpffs; returns what was left behind."""
        left = []
        if self.switch is not None:
            self.switch.stop()
            if self.switch.alive():
                left.append("the VLAN switch process %d of %s" % (self.switch.proc.pid, self.name))
            # Nothing else of the switch either: no process of any kind runs in its namespace.
            pids = sh("ip", "netns", "pids", self.ns["switch"], check=False).stdout.split()
            left += ["process %s in netns %s" % (pid, self.ns["switch"]) for pid in pids]
        for name in self.ns.values():
            sh("ip", "netns", "delete", name, check=False)
        listed = sh("ip", "netns", "list").stdout.split()
        left += ["netns %s" % name for name in self.ns.values() if name in listed]
        umount(self.pin_root)
        return left

    def topology(self) -> dict:
        common = {"netns": self.ns["shaper"], "probe_target": self.upstream}
        if self.probe_from != self.ns["shaper"]:
            common["probe_netns"] = self.probe_from
        if self.mode == "stick":
            return dict(common, mode="stick", interface="trunk0", internet_vlan=100, isp_vlan=200)
        return dict(common, mode=self.mode, internet="wan0", isp="lan0")

    def host_vars(self, spec: str, crate: str) -> dict:
        return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "lqos_bpf_pin_root": self.pin_root, "lqos_bpf_state_dir": os.path.join(self.dir, "state"),
                "lqos_bpf_attach_state_dir": os.path.join(self.dir, "attach"), "lqos_bpf_spec": spec,
                "lqos_bpf_src": crate, "lqos_bpf_topology": self.topology()}


@pytest.fixture(scope="module", params=["develop", "v1.4"])
def deployed(request, libreqos, tmp_path_factory):
    ref = request.param
    if ref == "v1.4" and not xdp_refusal(libreqos_fitted("develop")):
        pytest.skip("develop deploys on this kernel; v1.4 stands in only where the kernel refuses develop's xdp_prog")
    build = libreqos_fitted(ref) if ref == "develop" else libreqos.build(ref)
    needs_xdp(build, ref)
    root = str(tmp_path_factory.mktemp("lq-deploy-" + ref))
    spec = "libreqos"
    tag = "lq" + uuid.uuid4().hex[:4]
    stick_path = STICK_8021Q if vlans_work(tag) else STICK_SWITCH
    say(request, "test_libreqos_deploy: the stick over %s" % stick_path)
    sites = {m: Site(root, m, tag, 10 + (int(tag[2:], 16) + i) % 200, stick_path=stick_path)
             for i, m in enumerate(MODES)}
    # Last (its own batch): a pair whose spec says the map keys IPv4 as ::ffff:a.b.c.d - its health check must
    # fail, roll back, and say which key it looked up and which keys the map holds.
    wrong = Site(root, "pair", tag, 10 + (int(tag[2:], 16) + 7) % 200, name="wrongkey")
    with open(os.path.join(REPO, "bpf", "specs", "libreqos.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["health"]["ipv4"] = "mapped"
    wrong_spec = os.path.join(root, "libreqos-mapped.yml")
    with open(wrong_spec, "w") as fh:
        yaml.safe_dump(raw, fh)
    made = []
    try:
        for site in list(sites.values()) + [wrong]:
            made.append(site)
            site.create()
        inventory = os.path.join(root, "inventory.yml")
        hosts = {m: s.host_vars(spec, build["crate"]) for m, s in sites.items()}
        hosts["wrongkey"] = wrong.host_vars(wrong_spec, build["crate"])
        with open(inventory, "w") as fh:
            yaml.safe_dump({"all": {"hosts": hosts}}, fh)
        first = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        with open(os.path.join(root, "first.log"), "w") as fh:
            fh.write(first.out)
        state = {m: observe(s) for m, s in sites.items()}
        again = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        yield {"ref": ref, "sites": sites, "first": first, "again": again, "state": state, "wrong": wrong,
               "stick_path": stick_path}
    finally:
        left = [thing for site in made for thing in site.destroy()]
        if sites["stick"].switch is not None:
            say(request, "test_libreqos_deploy: the VLAN switch relayed %s" % json.dumps(sites["stick"].switch.counts))
        assert not left, "left behind: %s" % ", ".join(left)


def say(request, line: str) -> None:
    """One line on the terminal, past pytest's capture: which stick path ran is part of the run's record."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + line, flush=True)


def observe(site: Site) -> dict:
    """What the first run left: TC programs per interface and direction, promiscuous ports, the bifrost map
    entries, and the probe's counters in map_traffic (LibreQoS's IPv4 key)."""
    ifaces = ["trunk0"] if site.mode == "stick" else ["wan0", "lan0"]
    out = {"tc": {}, "promisc": {}}
    with H.netns(site.ns["shaper"]):
        for ifname in ifaces:
            idx = H.ifindex(ifname)
            out["tc"][ifname] = {d: (M.prog_info_by_id(p)["name"] if p else None)
                                 for d, p in (("egress", H.tc_query(idx, "egress", 1, 0xC02F)),
                                              ("ingress", H.tc_query(idx, "ingress", 1, 0xC02F)))}
        out["ifindex"] = {i: H.ifindex(i) for i in ifaces}
    for ifname in ifaces:
        link = json.loads(sh("ip", "-n", site.ns["shaper"], "-j", "link", "show", "dev", ifname).stdout)[0]
        out["promisc"][ifname] = "PROMISC" in link["flags"]

    def entries(name):
        path = os.path.join(site.pin_root, name)
        return {k.hex(): v.hex() for k, v in M.map_entries(path)} if os.path.exists(path) else None
    out["bifrost"], out["vlans"] = entries("bifrost_interface_map"), entries("bifrost_vlan_map")
    key = b"\xff" * 12 + ipaddress.ip_address(site.counted).packed
    traffic = os.path.join(site.pin_root, "map_traffic")
    out["counted"] = os.path.exists(traffic) and M.map_lookup(traffic, key) is not None
    return out


@pytest.mark.parametrize("mode", MODES)
def test_every_topology_deploys_and_its_probe_is_counted(deployed, mode):
    first, site = deployed["first"], deployed["sites"][mode]
    assert first.rc == 2 and first.recap.get(mode, {}).get("failed") == 0, first   # rc 2: the wrongkey host
    assert HEALTH_TASK in first.ran_tasks.get(mode, set()), (mode, first)
    assert HEALTH_FAILED_TASK not in first.ran_tasks.get(mode, set()), (mode, first)
    assert deployed["state"][mode]["counted"], (mode, "no map_traffic entry for %s" % site.counted)


def expected_tc(mode: str, ifaces: dict) -> dict:
    """TC programs per interface as LibreQoS v2.2's lqos_kernel.rs attaches them: the classifier on egress
    everywhere, the redirector on ingress in bridge and stick mode only."""
    return {i: {"egress": "tc_iphash_to_cp", "ingress": None if mode == "pair" else "bifrost"} for i in ifaces}


def le32(n: int) -> str:
    return n.to_bytes(4, "little").hex()


@pytest.mark.parametrize("mode", MODES)
def test_bifrost_is_where_libreqos_puts_it(deployed, mode):
    got = deployed["state"][mode]
    assert got["tc"] == expected_tc(mode, got["ifindex"]), got
    if mode == "pair":   # no redirector, no promiscuous ports
        assert got["promisc"] == {"wan0": False, "lan0": False} and got["bifrost"] == {}
    elif mode == "bridge":   # both ports redirected to each other, both promiscuous
        assert got["promisc"] == {"wan0": True, "lan0": True}
        wan, lan = got["ifindex"]["wan0"], got["ifindex"]["lan0"]
        assert got["bifrost"] == {le32(wan): le32(lan) + "00000000", le32(lan): le32(wan) + "00000000"}
    else:   # stick: the interface to itself, scan_vlans 1; each VLAN rewritten to the other; promiscuous
        idx = got["ifindex"]["trunk0"]
        assert got["promisc"] == {"trunk0": True}
        assert got["bifrost"] == {le32(idx): le32(idx) + "01000000"}
        assert got["vlans"] == {le32((idx << 16) | 100): le32(200), le32((idx << 16) | 200): le32(100)}


def test_a_key_in_the_wrong_encoding_fails_the_health_check_naming_the_key_and_the_nearest_keys(deployed):
    """The regression of issue 22 made visible: the key looked up and the keys LibreQoS really wrote."""
    first, wrong = deployed["first"], deployed["wrong"]
    assert first.rc == 2 and first.recap["wrongkey"]["failed"] == 1, first.out[-6000:]
    packed = ipaddress.ip_address(wrong.wan).packed.hex()
    # The role's last word on the host (the rescue's), after rolling back.
    failure = first.failures("wrongkey")[-1].get("msg", "")
    assert "No previous build: the programs attached by this run were detached." in failure, failure
    assert ("the down count of %s rose by 0" % wrong.wan) in failure, failure
    assert ("(key %s in map_traffic: no entry; nearest keys there: %s"
            % ("00" * 10 + "ffff" + packed, "ff" * 12 + packed)) in failure, failure
    assert len(first.failures("wrongkey")) == 1, first.failures("wrongkey")   # one failure per host, with the rollback
    again = deployed["again"]
    assert again.rc == 2 and again.recap["wrongkey"]["failed"] == 1, again


@pytest.mark.parametrize("mode", MODES)
def test_a_second_run_changes_nothing(deployed, mode):
    again = deployed["again"]
    assert again.recap.get(mode, {}).get("failed") == 0, again
    assert again.recap[mode]["changed"] == 0, (mode, again.changed_tasks.get(mode))


# ---------------------------------------------------------------------------
# v2.1 -> v2.2 through the deploy role: map_traffic's value grows 112 -> 128 bytes
# ---------------------------------------------------------------------------

def traffic_fields(obj: str) -> dict:
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
    with B.Btf.from_file(obj) as btf:
        return {m["name"]: (m["offset"], m["size"]) for m in btf.layout("host_counter")["members"]}


@pytest.fixture(scope="module")
def upgraded(libreqos, tmp_path_factory):
    """v2.1 deployed in pair topology, its map_traffic filled; v2.2 with a probe nobody answers (a forced health
    failure: rolled back); v2.2 with a probe that answers (kept). Fitted builds where the kernel refuses
    bpf_xdp_adjust_meta (lqos_testlib.libreqos_fitted): the maps are LibreQoS's own either way."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus
    old, new = libreqos_fitted("v2.1"), libreqos_fitted("v2.2")
    needs_xdp(old, "v2.1")
    needs_xdp(new, "v2.2")
    root = str(tmp_path_factory.mktemp("lq-upgrade"))
    tag = "lu" + uuid.uuid4().hex[:4]
    site = Site(root, "pair", tag, 10 + int(tag[2:], 16) % 200)
    site.create()
    try:
        def deploy(crate, name, **topology):
            host = site.host_vars("libreqos", crate)
            host["lqos_bpf_topology"].update(topology)
            inventory = os.path.join(root, name + ".yml")
            with open(inventory, "w") as fh:
                yaml.safe_dump({"all": {"hosts": {"shaper": host}}}, fh)
            return playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")

        runs = {"v21": deploy(old["crate"], "v21")}
        traffic = os.path.join(site.pin_root, "map_traffic")
        fields, ncpus = traffic_fields(old["object"]), possible_cpus()
        for i in range(500):
            blob = bytearray(112 * ncpus)
            for cpu in range(ncpus):
                for unused_name, (off, size) in fields.items():
                    blob[cpu * 112 + off:cpu * 112 + off + size] = (i * 1000 + cpu * 10 + off).to_bytes(size, "little")
            M.map_update(traffic, b"\xff" * 12 + bytes([100, 64, i >> 8, i & 0xFF]), bytes(blob))

        # Only the entries written here: live traffic (the probe, neighbour discovery) keeps updating others.
        def ours():
            return {k: v for k, v in M.map_entries(traffic) if k[:14] == b"\xff" * 12 + b"\x64\x40"}

        state = {"v21": {"id": M.map_info_by_path(traffic)["id"], "entries": ours()}}
        runs["bad"] = deploy(new["crate"], "v22-bad", probe_target=site.upstream.rsplit(".", 1)[0] + ".99")
        state["bad"] = {"id": M.map_info_by_path(traffic)["id"], "value_size": M.map_info_by_path(traffic)["value_size"],
                        "entries": ours(), "pins": sorted(os.listdir(site.pin_root))}
        runs["good"] = deploy(new["crate"], "v22-good")
        state["good"] = {"value_size": M.map_info_by_path(traffic)["value_size"],
                         "entries": ours(), "pins": sorted(os.listdir(site.pin_root))}
        yield {"runs": runs, "state": state, "fields": (fields, traffic_fields(new["object"])), "ncpus": ncpus}
    finally:
        site.destroy()


def test_a_failed_v22_deploy_restores_v21s_map_with_every_entry(upgraded):
    runs, state = upgraded["runs"], upgraded["state"]
    assert runs["v21"].rc == 0, runs["v21"].out[-6000:]
    assert runs["bad"].recap["shaper"]["failed"] == 1 and len(runs["bad"].failures("shaper")) == 1, runs["bad"]
    bad = state["bad"]
    assert bad["id"] == state["v21"]["id"] and bad["value_size"] == 112     # v2.1's own map, at its name
    assert len(state["v21"]["entries"]) == 500
    assert bad["entries"] == state["v21"]["entries"]                       # every entry, as it was
    assert "lqos_bpf_aside" not in bad["pins"]


def test_a_passed_v22_deploy_keeps_every_entry_in_the_new_layout(upgraded):
    runs, state = upgraded["runs"], upgraded["state"]
    assert runs["good"].rc == 0, runs["good"].out[-6000:]
    assert state["good"]["value_size"] == 128
    (f_old, f_new), ncpus = upgraded["fields"], upgraded["ncpus"]
    got = state["good"]["entries"]
    assert set(got) == set(state["v21"]["entries"])
    for key, blob in state["v21"]["entries"].items():
        for cpu in range(ncpus):
            for name, (off, size) in f_old.items():
                o2, s2 = f_new[name]
                assert got[key][cpu * 128 + o2:cpu * 128 + o2 + s2] == blob[cpu * 112 + off:cpu * 112 + off + size]
    assert "lqos_bpf_aside" not in state["good"]["pins"]
