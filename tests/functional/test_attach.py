"""lqos.bpf.attach on the real kernel: the reference object built by lqos.bpf.pipeline,
loaded with libbpf and attached to veth pairs inside test network namespaces, pins in
a private bpffs per test. Kernel state is read back with xdp_query/tc_query (and with
`ip`/`tc` for foreign programs) and compared before and after every run."""
from __future__ import annotations

import copy
import json
import os
import socket
import struct
import subprocess
import time

import pytest

from lqos_testlib import (attach_optional, build_reference, compile_bpf, left_out_warnings, probe_as_module,
                          run_module, sh)

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

NCPUS = L.possible_cpus()
EGRESS = ("egress", 0x1, 0xC02F)
INGRESS = ("ingress", 0x1, 0xC02F)

FOREIGN_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int foreign_xdp(struct xdp_md *ctx)
{
    return XDP_PASS;
}

SEC("tc")
int foreign_tc(struct __sk_buff *skb)
{
    return 0; /* TC_ACT_OK */
}

char _license[] SEC("license") = "GPL";
"""

# Reads the first packet byte without checking data_end: the verifier must refuse it.
BAD_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bad_xdp(struct xdp_md *ctx)
{
    unsigned char *data = (void *)(long)ctx->data;

    return data[0] == 0x42 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="session")
def objects(tmp_path_factory):
    """The reference object, a rebuild of it with other code generation (llc -mcpu=v3: new
    program tags, same maps), a foreign program and a program the verifier rejects."""
    work = tmp_path_factory.mktemp("attach_objects")
    spec = resolve_spec_option("reference")
    rebuilt_spec = copy.deepcopy(spec)
    rebuilt_spec["flags"]["llc"] = rebuilt_spec["flags"]["llc"] + ["-mcpu=v3"]
    return {
        "reference": build_reference(work, "reference", "ref"),
        "rebuilt": build_reference(work, rebuilt_spec, "rebuilt"),
        "rebuilt_spec": rebuilt_spec,
        "foreign": compile_bpf(work, "foreign", FOREIGN_C),
        "bad": compile_bpf(work, "bad", BAD_C),
        "spec": spec,
    }


@pytest.fixture
def env(tmp_path, bpffs, netns_pair, objects):
    return Env(tmp_path, bpffs, netns_pair, objects)


class Env:
    """One test's world: a veth pair in two netns, a private bpffs, a state folder."""

    def __init__(self, tmp_path, bpffs, pair, objects):
        self.tmp = tmp_path
        self.bpffs = bpffs
        self.pair = pair
        self.objects = objects
        self.state_dir = str(tmp_path / "state")

    def attach(self, check_mode=False, diff=False, **kw):
        args = dict(spec="reference", object=self.objects["reference"], pin_root=self.bpffs,
                    interface=self.pair.if_a, netns=self.pair.ns_a, state_dir=self.state_dir, approve=True)
        args.update(kw)
        return run_module("attach", args, check_mode=check_mode, diff=diff)

    def refused(self):
        """The optional programs of the reference object the kernel refuses to a module of this pass (probed)."""
        rows = probe_as_module(self.objects["reference"], attach_optional(self.objects["reference"], "reference"))
        return sorted(n for n, r in rows["rows"].items() if not r["loadable"])

    def pin_dir(self, ifname=None):
        return os.path.join(self.bpffs, "lqos_bpf", self.pair.ns_a, ifname or self.pair.if_a)

    def hooks(self, ifname=None, ns=None):
        """XDP and TC state of an interface, read from the kernel."""
        with H.netns(ns or self.pair.ns_a):
            idx = H.ifindex(ifname or self.pair.if_a)
            xdp = H.xdp_query(idx)
            tc = {d: H.tc_query(idx, d, h, p) for d, h, p in (EGRESS, INGRESS)}
        return {"xdp": xdp, "tc": tc}

    def pins(self):
        """Every pin under the test's bpffs with the id it holds (maps and programs)."""
        out = {}
        for root, dirs, files in os.walk(self.bpffs):
            for name in files:
                path = os.path.join(root, name)
                kind = L.pinned_kind(path)
                if kind == "prog":
                    out[os.path.relpath(path, self.bpffs)] = M.prog_info_by_path(path)["id"]
                elif kind == "map":
                    out[os.path.relpath(path, self.bpffs)] = M.map_info_by_path(path)["id"]
            for name in dirs:
                out[os.path.relpath(os.path.join(root, name), self.bpffs) + "/"] = "dir"
        return out

    def snapshot(self):
        return {"hooks": self.hooks(), "pins": self.pins(),
                "state": sorted(os.listdir(self.state_dir)) if os.path.isdir(self.state_dir) else []}

    def icmp_down(self):
        """ICMP packets the XDP program counted towards ip_a (the echo replies) in the pinned
        host_traffic map: struct host_counter, icmp_packets.down at offset 64, one copy per CPU."""
        key = b"\0" * 10 + b"\xff\xff" + socket.inet_aton(self.pair.ip_a)
        blob = M.map_lookup(os.path.join(self.bpffs, "host_traffic"), key)
        if blob is None:
            return 0
        return sum(struct.unpack_from("<Q", blob, cpu * 112 + 64)[0] for cpu in range(NCPUS))

    def ip(self, *argv, ns=None):
        return sh("ip", "-n", ns or self.pair.ns_a, *argv)

    def tc(self, *argv, ns=None):
        return sh("tc", "-n", ns or self.pair.ns_a, *argv)

    def foreign_xdp(self, mode="xdpdrv", ifname=None):
        self.ip("link", "set", "dev", ifname or self.pair.if_a, mode, "obj", self.objects["foreign"], "sec", "xdp")
        return self.hooks(ifname)["xdp"]["prog_id"]

    def foreign_tc(self, direction="egress", handle="0x1", prio="49199", ifname=None):
        dev = ifname or self.pair.if_a
        self.tc("qdisc", "replace", "dev", dev, "clsact")
        self.tc("filter", "add", "dev", dev, direction, "prio", prio, "handle", handle, "bpf", "da",
                "obj", self.objects["foreign"], "sec", "tc")
        with H.netns(self.pair.ns_a):
            return H.tc_query(H.ifindex(dev), direction, int(handle, 0), int(prio, 0))


def ok(result):
    assert result["_rc"] == 0 and not result.get("failed"), (result.get("msg"), result)
    # Warnings go through module.warn(); the module's JSON carries them as structured events.
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return result


def failed(result):
    assert result["_rc"] != 0 and result.get("failed"), result
    return result["msg"]


def unloaded(prog_id, timeout=5.0):
    """True once the kernel has freed the program (freeing is deferred: poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            M.prog_info_by_id(prog_id)
        except L.LibbpfError:
            return True
        time.sleep(0.05)
    return False


def prog(prog_id):
    info = M.prog_info_by_id(prog_id)
    return "id %d (%s, tag %s)" % (prog_id, info["name"], info["tag"])


def test_attach_puts_our_programs_on_the_hooks_and_a_rerun_changes_nothing(env):
    first = ok(env.attach())
    assert first["changed"] is True and first["applied"] is True and first["loaded"] is True
    xdp, tc = first["xdp"], {t["direction"]: t for t in first["tc"]}
    assert (xdp["program"], xdp["mode"], xdp["action"], xdp["previous_id"]) == ("xdp_shaper", "native", "attach", None)
    assert [t["mode"] for t in xdp["tried"]] == ["hw"]          # veth: no offload, native holds
    assert (tc["egress"]["program"], tc["egress"]["handle"], tc["egress"]["priority"]) == ("tc_classify", 1, 0xC02F)
    assert tc["ingress"]["program"] == "tc_bridge_redirect"
    # Warned about: exactly the optional programs this kernel refuses to the module (probed; [] where
    # tracing programs load), never an assumption about the kernel the test was written on.
    assert first["warnings"] == left_out_warnings(env.objects["reference"], env.pair.if_a, "reference")
    assert [e["program"] for e in first["left_out"]] == env.refused()

    kernel = env.hooks()
    assert kernel["xdp"]["attach_mode"] == "native"
    assert kernel["xdp"]["drv_prog_id"] == xdp["id"]
    assert kernel["tc"] == {"egress": tc["egress"]["id"], "ingress": tc["ingress"]["id"]}
    assert M.prog_info_by_id(xdp["id"])["tag"] == xdp["tag"]
    # Pins: the object's maps by name under pin_root, our programs under lqos_bpf/<netns>/<ifname>/.
    pins = env.pins()
    rel = "lqos_bpf/%s/%s/" % (env.pair.ns_a, env.pair.if_a)
    assert pins[rel + "xdp_shaper"] == xdp["id"]
    assert pins[rel + "tc_classify"] == tc["egress"]["id"]
    assert pins[rel + "tc_bridge_redirect"] == tc["ingress"]["id"]
    assert sorted(k for k in pins if "/" not in k) == sorted(env.objects["spec"]["expect"]["maps"])
    # The state file records what was attached and from which fingerprint.
    with open(first["state_file"]) as fh:
        record = json.load(fh)
    assert record["xdp"]["id"] == xdp["id"] and record["xdp"]["fingerprint"] == first["fingerprint"]
    assert record["params"] == {"resize": {"cpu_map": NCPUS},
                                "rodata": {"cpu_count": NCPUS},
                                "data": {"attach_ifindex": first["ifindex"], "direction": 1, "upload_cpu_offset": 0}}
    # The attached program got the load-time values: .rodata cpu_count and .data attach_ifindex.
    with B.Btf.from_file(env.objects["reference"]) as btf:
        var = btf.var_info("attach_ifindex")
    data_map = [m for m in M.prog_info_by_id(xdp["id"])["map_ids"]
                if M.map_info_by_id(m)["name"].endswith(".data")]
    assert len(data_map) == 1

    before = env.snapshot()
    second = ok(env.attach())
    assert second["changed"] is False and second["loaded"] is False and second["actions"] == []
    assert second["xdp"]["id"] == xdp["id"] and second["xdp"]["action"] == "keep"
    assert [t["id"] for t in second["tc"]] == [t["id"] for t in first["tc"]]
    assert env.snapshot() == before
    assert var["section"] == ".data"

    # Traffic flows, and the XDP program runs with our load-time values (direction=1 and
    # attach_ifindex=if_a make it count the echo replies towards ip_a).
    assert env.icmp_down() == 0
    assert env.pair.ping(count=3, interval="0.2").returncode == 0
    assert env.icmp_down() == 3


def test_a_map_pin_removed_under_running_programs_is_pinned_again(env):
    first = ok(env.attach())
    xdp_id = first["xdp"]["id"]
    live = {M.map_info_by_id(m)["name"]: m for m in M.prog_info_by_id(xdp_id)["map_ids"]}
    path = os.path.join(env.bpffs, "shaper_control")
    os.unlink(path)   # as lqos.bpf.pinned_maps does after its backup
    plan = ok(env.attach(approve=False))
    assert plan["changed"] is True and plan["applied"] is False
    assert plan["actions"] == ["re-pin live map shaper_control (id %d) at %s" % (live["shaper_control"], path)]
    assert not os.path.lexists(path)
    again = ok(env.attach())
    assert again["changed"] is True and again["loaded"] is False
    assert again["xdp"]["id"] == xdp_id
    assert M.map_info_by_path(path)["id"] == live["shaper_control"]
    third = ok(env.attach())
    assert third["changed"] is False and third["actions"] == []


def test_replacing_with_a_rebuilt_object_is_atomic_and_loses_no_packet(env):
    first = ok(env.attach())
    old_xdp, old_tc = first["xdp"], {t["direction"]: t for t in first["tc"]}
    counted = env.icmp_down()
    ping = subprocess.Popen(["ip", "netns", "exec", env.pair.ns_a, "ping", "-i", "0.01", "-c", "500", "-W", "1",
                             env.pair.ip_b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        second = ok(env.attach(spec=env.objects["rebuilt_spec"], object=env.objects["rebuilt"]))
        assert ping.poll() is None, "the swap must happen while the ping stream runs"
        out, dummy = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
    assert ping.returncode == 0 and "500 packets transmitted, 500 received, 0% packet loss" in out, out
    # Every echo reply went through an XDP program (the old one, then the new one, which share
    # the pinned maps): no moment without a program on the hook.
    assert env.icmp_down() - counted == 500
    xdp = second["xdp"]
    assert second["changed"] is True and xdp["action"] == "replace"
    assert (xdp["previous_id"], xdp["previous_tag"], xdp["mode"]) == (old_xdp["id"], old_xdp["tag"], "native")
    assert xdp["tag"] != old_xdp["tag"] and xdp["id"] != old_xdp["id"]
    for t in second["tc"]:
        assert t["action"] == "replace" and t["previous_id"] == old_tc[t["direction"]]["id"]
    assert second["tc"][0]["tag"] != old_tc["egress"]["tag"]
    assert any(a.startswith("replace XDP program %s on %s with the new xdp_shaper atomically (native mode)"
                            % (prog_desc_of(old_xdp), env.pair.if_a)) for a in second["actions"]), second["actions"]
    kernel = env.hooks()
    assert kernel["xdp"]["drv_prog_id"] == xdp["id"]
    assert kernel["tc"] == {t["direction"]: t["id"] for t in second["tc"]}
    # The old programs are gone (no pin, no hook holds them); the pins point at the new ones.
    assert unloaded(old_xdp["id"])
    assert env.pins()["lqos_bpf/%s/%s/xdp_shaper" % (env.pair.ns_a, env.pair.if_a)] == xdp["id"]
    # Rolling forward again to the same rebuilt object is a no-op.
    third = ok(env.attach(spec=env.objects["rebuilt_spec"], object=env.objects["rebuilt"]))
    assert third["changed"] is False and third["loaded"] is False


def prog_desc_of(res):
    return "id %d (%s, tag %s)" % (res["id"], res["program"][:15], res["tag"])


def test_a_foreign_program_is_refused_then_replaced_with_force(env):
    foreign = env.foreign_xdp()
    before = env.snapshot()
    msg = failed(env.attach())
    assert msg == ("XDP on %s (netns %s) holds program %s in native mode, which this collection did not attach; it "
                   "is left in place and nothing was changed. Fix: detach it yourself, or set force: true to replace "
                   "it." % (env.pair.if_a, env.pair.ns_a, prog(foreign)))
    assert env.snapshot() == before
    # A foreign TC filter at our slot is refused the same way (XDP forced, TC not).
    foreign_tc = env.foreign_tc()
    msg = failed(env.attach(force=False, tc=True, xdp_mode="auto", approve=True, spec="reference"))
    assert msg.startswith("XDP on %s" % env.pair.if_a)
    forced = ok(env.attach(force=True))
    assert forced["xdp"]["action"] == "replace_foreign" and forced["xdp"]["previous_id"] == foreign
    egress = [t for t in forced["tc"] if t["direction"] == "egress"][0]
    assert egress["action"] == "replace_foreign" and egress["previous_id"] == foreign_tc
    assert "replacing foreign XDP program %s on %s (force: true)" % (prog_desc_of(
        {"id": foreign, "program": "foreign_xdp", "tag": forced["xdp"]["previous_tag"]}), env.pair.if_a) \
        in forced["warnings"]
    kernel = env.hooks()
    assert kernel["xdp"]["drv_prog_id"] == forced["xdp"]["id"] != foreign
    assert kernel["tc"]["egress"] == egress["id"] != foreign_tc
    # Now they are ours: a rerun without force is a no-op.
    assert ok(env.attach())["changed"] is False


def test_foreign_tc_filter_alone_is_refused_with_its_slot(env):
    foreign_tc = env.foreign_tc()
    msg = failed(env.attach())
    assert msg == ("TC egress (handle 0x1 priority 0xc02f) on %s (netns %s) holds program %s, which this collection "
                   "did not attach; it is left in place and nothing was changed. Fix: detach it yourself, or set "
                   "force: true to replace it." % (env.pair.if_a, env.pair.ns_a, prog(foreign_tc)))
    assert env.hooks()["xdp"]["prog_id"] == 0
    assert not os.path.exists(env.pin_dir())


def test_auto_mode_falls_back_to_skb_where_native_xdp_is_unsupported(env):
    # A Linux bridge (LibreQoS bridge setups) has no driver XDP support.
    env.ip("link", "add", "lqbr0", "type", "bridge")
    env.ip("link", "set", "lqbr0", "up")
    res = ok(env.attach(interface="lqbr0"))
    xdp = res["xdp"]
    assert xdp["mode"] == "skb" and [t["mode"] for t in xdp["tried"]] == ["hw", "native"]
    assert "does not support native mode" in xdp["tried"][1]["error"]
    warning = ("XDP program xdp_shaper on lqbr0 fell back to skb (generic) mode: the driver refused hw mode (%s) and "
               "native mode (%s); generic XDP is much slower than native XDP. To get native XDP: shape on an interface "
               "whose driver supports native XDP (ethtool -i lqbr0 names the driver; see its XDP limits, e.g. MTU or "
               "queue count, in dmesg), then set xdp_mode: native to fail instead of falling back"
               % (xdp["tried"][0]["error"], xdp["tried"][1]["error"]))
    assert res["warnings"] == [warning] + left_out_warnings(env.objects["reference"], "lqbr0", "reference")
    kernel = env.hooks("lqbr0")
    assert kernel["xdp"]["attach_mode"] == "skb" and kernel["xdp"]["skb_prog_id"] == xdp["id"]
    again = ok(env.attach(interface="lqbr0"))
    assert again["changed"] is False and again["xdp"]["mode"] == "skb"
    assert [w for w in again["warnings"] if "skb (generic)" in w] == [
        "XDP program xdp_shaper on lqbr0 runs in skb (generic) mode: it stays as it was attached earlier; generic "
        "XDP is much slower than native XDP. To get native XDP: set xdp_mode: native (a detach and an attach, not "
        "atomic), and if the driver refuses it, shape on an interface whose driver supports native XDP"]
    # Asking for native explicitly fails clearly and leaves the skb attachment alone.
    msg = failed(env.attach(interface="lqbr0", xdp_mode="native"))
    assert msg.startswith("attaching XDP program xdp_shaper to lqbr0 in native mode failed: XDP on lqbr0: the driver "
                          "does not support native mode")
    assert msg.endswith("Fix: use xdp_mode: auto (falls back to skb) or a mode the driver supports.")
    assert env.hooks("lqbr0")["xdp"]["skb_prog_id"] == xdp["id"]


def test_auto_with_force_over_a_generic_mode_foreign_program_tries_native_first(env):
    foreign = env.foreign_xdp(mode="xdpgeneric")
    assert env.hooks()["xdp"]["skb_prog_id"] == foreign
    res = ok(env.attach(force=True))
    xdp = res["xdp"]
    assert (xdp["action"], xdp["mode"], xdp["previous_id"]) == ("reattach", "native", foreign), xdp
    assert [t["mode"] for t in xdp["tried"]] == ["hw"]  # veth: no offload, native works
    kernel = env.hooks()["xdp"]
    assert (kernel["attach_mode"], kernel["drv_prog_id"], kernel["skb_prog_id"]) == ("native", xdp["id"], 0)
    assert not [w for w in res["warnings"] if "skb (generic) mode" in w], res["warnings"]
    assert unloaded(foreign)
    # Where the driver has no native XDP (a Linux bridge) the walk ends in skb, and the warning says why and how.
    env.ip("link", "add", "lqbr1", "type", "bridge")
    env.ip("link", "set", "lqbr1", "up")
    foreign = env.foreign_xdp(mode="xdpgeneric", ifname="lqbr1")
    res = ok(env.attach(interface="lqbr1", force=True))
    xdp = res["xdp"]
    assert (xdp["action"], xdp["mode"]) == ("reattach", "skb") and [t["mode"] for t in xdp["tried"]] == ["hw", "native"]
    [warning] = [w for w in res["warnings"] if "skb (generic) mode" in w]
    assert "the driver refused hw mode (" in warning and "native mode (XDP on lqbr1: the driver does not support " \
        "native mode" in warning, warning
    assert "To get native XDP: shape on an interface whose driver supports native XDP (ethtool -i lqbr1" in warning


def test_explicit_mode_change_is_reported_as_not_atomic(env):
    skb = ok(env.attach(xdp_mode="skb"))
    assert skb["xdp"]["mode"] == "skb" and skb["xdp"]["tried"] == []
    assert env.hooks()["xdp"]["skb_prog_id"] == skb["xdp"]["id"]
    native = ok(env.attach(xdp_mode="native"))
    assert native["xdp"]["action"] == "reattach" and native["xdp"]["mode"] == "native"
    assert native["xdp"]["previous_id"] == skb["xdp"]["id"]
    assert ("XDP mode change on %s (skb -> native) cannot be atomic: the interface runs without an XDP program "
            "between the detach and the attach" % env.pair.if_a) in native["warnings"]
    kernel = env.hooks()["xdp"]
    assert (kernel["attach_mode"], kernel["drv_prog_id"], kernel["skb_prog_id"]) == ("native", native["xdp"]["id"], 0)
    # TC programs were already right: kept.
    assert [t["action"] for t in native["tc"]] == ["keep", "keep"]


def test_detach_removes_only_what_we_attached(env):
    ours = ok(env.attach())
    # A foreign filter on another priority of the same hook, and a foreign XDP program on the peer.
    foreign_tc = env.foreign_tc(prio="100", handle="0x2")
    sh("ip", "-n", env.pair.ns_b, "link", "set", "dev", env.pair.if_b, "xdpgeneric", "obj", env.objects["foreign"],
       "sec", "xdp")
    gone = ok(env.attach(state="absent"))
    assert gone["changed"] is True and gone["applied"] is True
    assert gone["xdp"]["previous_id"] == ours["xdp"]["id"] and gone["xdp"]["action"] == "detach"
    assert sorted(t["previous_id"] for t in gone["tc"]) == sorted(t["id"] for t in ours["tc"])
    kernel = env.hooks()
    assert kernel["xdp"]["prog_id"] == 0
    assert kernel["tc"] == {"egress": None, "ingress": None}
    with H.netns(env.pair.ns_a):
        assert H.tc_query(H.ifindex(env.pair.if_a), "egress", 2, 100) == foreign_tc
    assert env.hooks(env.pair.if_b, env.pair.ns_b)["xdp"]["skb_prog_id"] != 0
    assert not os.path.exists(os.path.join(env.bpffs, "lqos_bpf"))
    assert not os.path.exists(ours["state_file"])
    assert all(unloaded(t["id"]) for t in ours["tc"] + [ours["xdp"]])
    # Maps pinned by the object stay: they are pinned_maps' business.
    assert "flow_table" in env.pins()
    again = ok(env.attach(state="absent"))
    assert again["changed"] is False and again["actions"] == []


def test_detach_leaves_a_foreign_xdp_program_in_place(env):
    foreign = env.foreign_xdp()
    res = ok(env.attach(state="absent"))
    assert res["changed"] is False and res["actions"] == []
    assert res["notes"] == ["XDP program %s on %s (native mode) is not ours: left in place"
                            % (prog(foreign), env.pair.if_a)]
    assert env.hooks()["xdp"]["drv_prog_id"] == foreign


def test_missing_interface_and_netns_fail_clearly(env):
    msg = failed(env.attach(interface="nosuch0"))
    assert msg == ("interface nosuch0 does not exist in network namespace %s. Fix: check the name with "
                   "`ip -n %s link show` (names are case-sensitive)." % (env.pair.ns_a, env.pair.ns_a))
    msg = failed(env.attach(netns="lqnosuchns"))
    assert msg == ("network namespace lqnosuchns does not exist (no /run/netns/lqnosuchns). Fix: create it "
                   "(ip netns add lqnosuchns) or fix the netns option.")
    msg = failed(env.attach(object=str(env.tmp / "missing.o")))
    assert msg == ("BPF object %s does not exist. Fix: build it first with lqos.bpf.pipeline (spec reference), or "
                   "point the object option at the built .o file." % (env.tmp / "missing.o"))
    # state=absent on a missing interface has nothing to detach.
    res = ok(env.attach(interface="nosuch0", state="absent"))
    assert res["changed"] is False and res["ifindex"] is None and res["actions"] == []
    assert res["notes"] == ["interface nosuch0 does not exist in network namespace %s: nothing can be attached "
                            "there" % env.pair.ns_a]


def test_verifier_rejection_names_the_program_and_shows_the_log(env):
    spec = {"name": "broken", "sources": {"kern": "bad.c"}, "outputs": {"object": "bad.o"},
            "attach": {"xdp": "bad_xdp"}}
    before = env.snapshot()
    msg = failed(env.attach(spec=spec, object=env.objects["bad"]))
    head = ("the verifier rejected program bad_xdp of %s [errno 13: Permission denied]; last lines of the verifier "
            "log:\n" % env.objects["bad"])
    assert msg.startswith(head), msg
    log, fix = msg[len(head):].rsplit(" Fix: ", 1)
    assert "invalid access to packet" in log
    assert log.endswith("; required program bad_xdp was refused, so nothing was attached or changed on %s."
                        % env.pair.if_a)
    assert fix == ("fix program bad_xdp in the BPF source and rebuild with lqos.bpf.pipeline (the verifier log tail "
                   "says where), then attach again.")
    assert env.snapshot() == before


def test_check_mode_and_missing_approval_change_nothing(env):
    for kwargs in (dict(check_mode=True), dict(approve=False), dict(check_mode=True, approve=False)):
        before = env.snapshot()
        res = ok(env.attach(diff=True, **kwargs))
        assert res["applied"] is False and res["loaded"] is False
        assert res["changed"] is True     # there is work to do; "applied" says it was not done
        assert env.snapshot() == before
        maps = [m["name"] for m in O.object_info(env.objects["reference"])["maps"] if m.get("pinning")]
        rel = os.path.join(env.bpffs, "lqos_bpf", env.pair.ns_a, env.pair.if_a)
        assert res["actions"] == (
            ["load %s (sha256 %s; cpu_map max_entries=%d, rodata cpu_count=%d, data attach_ifindex=%d, "
             "data direction=1, data upload_cpu_offset=0%s)" % (
                 env.objects["reference"], res["object_sha256"][:16], NCPUS, NCPUS, res["ifindex"],
                 "; without " + ", ".join(env.refused()) if env.refused() else "")]
            + ["pin new map %s at %s" % (m, os.path.join(env.bpffs, m)) for m in maps]
            + ["attach XDP program xdp_shaper to %s in mode auto (hw, then native, then skb)" % env.pair.if_a,
               "create the clsact qdisc on %s if it is missing" % env.pair.if_a,
               "attach tc_classify to TC egress of %s at handle 0x1 priority 0xc02f" % env.pair.if_a,
               "attach tc_bridge_redirect to TC ingress of %s at handle 0x1 priority 0xc02f" % env.pair.if_a,
               "pin tc_bridge_redirect at %s/tc_bridge_redirect" % rel,
               "pin tc_classify at %s/tc_classify" % rel,
               "pin xdp_shaper at %s/xdp_shaper" % rel])
        assert res["msg"] == "%d action(s) planned on %s; nothing was changed (%s)." % (
            len(res["actions"]), env.pair.if_a, "check mode" if kwargs.get("check_mode") else
            "approve is false: set approve: true to apply them")
        assert res["diff"]["before"] == {"xdp": {}, "tc": {}, "pins": []}
        assert res["diff"]["after"] == {"planned": res["actions"]}
        assert res["xdp"]["action"] == "attach" and res["xdp"]["id"] is None

    # A replacement and a detach are only planned too.
    ours = ok(env.attach())
    for kwargs in (dict(check_mode=True), dict(approve=False)):
        before = env.snapshot()
        res = ok(env.attach(spec=env.objects["rebuilt_spec"], object=env.objects["rebuilt"], **kwargs))
        assert res["xdp"]["action"] == "replace" and res["xdp"]["previous_id"] == ours["xdp"]["id"]
        assert res["xdp"]["id"] is None
        assert env.snapshot() == before
        res = ok(env.attach(state="absent", **kwargs))
        expected = "detach XDP program %s from %s (native mode)" % (prog(ours["xdp"]["id"]), env.pair.if_a)
        assert res["actions"][0] == expected
        assert env.snapshot() == before


def test_lost_state_file_is_recovered_by_comparing_tags(env):
    first = ok(env.attach())
    os.unlink(first["state_file"])
    before = env.snapshot()
    plan = ok(env.attach(approve=False))
    assert plan["xdp"]["action"] == "verify" and plan["actions"][0].startswith("load ")
    again = ok(env.attach())
    assert again["loaded"] is True and again["changed"] is False, (again["xdp"], again["tc"])
    assert again["xdp"]["action"] == "adopt" and again["xdp"]["id"] == first["xdp"]["id"]
    assert [t["action"] for t in again["tc"]] == ["adopt", "adopt"]
    assert env.snapshot()["hooks"] == before["hooks"]
    assert os.path.exists(first["state_file"])
    assert ok(env.attach())["loaded"] is False
    # Same tag but other load-time values (.data direction) is a replacement, not an adoption.
    os.unlink(first["state_file"])
    spec = copy.deepcopy(env.objects["spec"])
    spec["attach"]["data"]["direction"] = 2
    other = ok(env.attach(spec=spec))
    assert other["xdp"]["action"] == "replace" and other["xdp"]["tag"] == first["xdp"]["tag"]
    assert other["xdp"]["id"] != first["xdp"]["id"]


def test_incompatible_map_pin_is_refused_before_anything_is_loaded(env):
    fd = M.map_create("array", 4, 8, NCPUS, name="cpu_map")
    try:
        L.obj_pin(fd, os.path.join(env.bpffs, "cpu_map"))
    finally:
        L.close(fd)
    before = env.snapshot()
    msg = failed(env.attach(approve=False))
    assert msg == ("existing map pins are incompatible with %s: map cpu_map: pin %s/cpu_map (type_name pinned array, "
                   "object cpumap; value_size pinned 8, object 4); libbpf reuses a pin only when type, sizes, "
                   "max_entries and flags match, so nothing was loaded or attached. Fix: replace the old pins with "
                   "lqos.bpf.pinned_maps (state: migrated keeps their entries; state: clean removes them after a "
                   "backup), then attach again."
                   % (env.objects["reference"], env.bpffs))
    assert env.snapshot() == before


def test_a_failure_half_way_rolls_the_swapped_hooks_back(env):
    first = ok(env.attach(tc=False))
    # A foreign filter of another protocol at our ingress priority (not at our handle) makes the
    # kernel refuse our ingress filter, after the XDP swap and the egress attach succeeded.
    env.tc("qdisc", "replace", "dev", env.pair.if_a, "clsact")
    env.tc("filter", "add", "dev", env.pair.if_a, "ingress", "prio", "49199", "protocol", "ip", "handle", "0x2",
           "bpf", "da", "obj", env.objects["foreign"], "sec", "tc")
    before = env.snapshot()
    msg = failed(env.attach(spec=env.objects["rebuilt_spec"], object=env.objects["rebuilt"]))
    assert msg.startswith("TC ingress attach on %s (handle 0x1 priority 0xc02f) failed" % env.pair.if_a), msg
    assert msg.endswith(" Rolled back what this run had changed: TC egress filter removed; XDP back to id %d."
                        % first["xdp"]["id"]), msg
    assert env.snapshot() == before
    assert env.hooks()["xdp"]["drv_prog_id"] == first["xdp"]["id"]
