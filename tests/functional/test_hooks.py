"""Hook states found in public bug reports, on the real kernel: a legacy `ingress` qdisc in
the clsact slot, an XDP program held by a bpf_link, and map flags the kernel sets itself.
Each is detected, refused with a fix or (force, approved) handled, and read back from the
kernel."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import build_reference, compile_bpf, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import qdiscs as Q
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import obj_pin, possible_cpus

pytestmark = pytest.mark.usefixtures("tools")

LINK_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int linked_xdp(struct xdp_md *ctx) { return XDP_PASS; }

char _license[] SEC("license") = "GPL";
"""

DEVMAP_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} redirect_ports SEC(".maps");

SEC("xdp")
int devmap_xdp(struct xdp_md *ctx) { return bpf_redirect_map(&redirect_ports, 0, XDP_PASS); }

char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    work = tmp_path_factory.mktemp("hooks")
    return {"reference": build_reference(work, "reference", "ref"), "linked": compile_bpf(work, "linked", LINK_C),
            "devmap": compile_bpf(work, "devmap", DEVMAP_C)}


def attach(pair, bpffs, tmp_path, obj, **kw):
    args = dict(spec="reference", object=obj, pin_root=bpffs, interface=pair.if_a, netns=pair.ns_a,
                state_dir=str(tmp_path / "state"), approve=True)
    args.update(kw)
    return run_module("attach", args)


def slot_kind(pair):
    with H.netns(pair.ns_a):
        return Q.ingress_slot_kind(H.ifindex(pair.if_a))


def test_a_legacy_ingress_qdisc_is_refused_then_replaced_by_clsact_with_force(objs, netns_pair, bpffs, tmp_path):
    sh("tc", "-n", netns_pair.ns_a, "qdisc", "add", "dev", netns_pair.if_a, "ingress")
    res = attach(netns_pair, bpffs, tmp_path, objs["reference"])
    assert res["_rc"] == 1
    assert res["msg"] == (
        "%s has a legacy `ingress` qdisc where TC programs need clsact: a filter attached to its egress would be "
        "accepted and run on ingress (both qdiscs take parent ffff:fff1); nothing was changed. Fix: remove it (tc -n "
        "%s qdisc del dev %s ingress; the filters it holds go with it), or set force: true to replace it by clsact."
        % (netns_pair.if_a, netns_pair.ns_a, netns_pair.if_a))
    assert slot_kind(netns_pair) == "ingress"
    plan = attach(netns_pair, bpffs, tmp_path, objs["reference"], force=True, approve=False)
    assert plan["_rc"] == 0 and slot_kind(netns_pair) == "ingress"
    assert "delete the legacy ingress qdisc on %s (and the filters it holds) and create clsact" % netns_pair.if_a \
        in plan["actions"]
    res = attach(netns_pair, bpffs, tmp_path, objs["reference"], force=True)
    assert res["_rc"] == 0, res.get("msg")
    assert slot_kind(netns_pair) == "clsact"
    assert [t["direction"] for t in res["tc"] if t["id"]] == ["egress", "ingress"]
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert M.prog_info_by_id(H.tc_query(idx, "egress", 1, 0xC02F))["name"] == "tc_classify"
    assert res["warnings"][0] == ("replacing the legacy ingress qdisc on %s by clsact (force: true): the filters it "
                                  "holds are removed" % netns_pair.if_a)


def test_an_xdp_program_held_by_a_bpf_link_is_refused_then_detached_with_force(objs, netns_pair, bpffs, tmp_path):
    lo = O.load_object(objs["linked"])
    link_pin = os.path.join(bpffs, "xdp_loader_link")
    with H.netns(netns_pair.ns_a):
        link = lo.attach_program("linked_xdp", ifindex=H.ifindex(netns_pair.if_a))
    try:
        link.pin(link_pin)
    finally:
        # As xdp-loader leaves it: a pinned link and no process holding the program (one that did would make it a
        # service's program, which force never replaces: test_attach_service_owned.py).
        link.close()   # closes the link's fd; the pin keeps the link and its attachment
        lo.close()
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        old_id = H.xdp_query(idx)["prog_id"]
        (info,) = H.xdp_links(idx, old_id)
        tag = M.prog_info_by_id(old_id)["tag"]
    res = attach(netns_pair, bpffs, tmp_path, objs["reference"])
    assert res["_rc"] == 1
    assert res["msg"] == (
        "XDP on %s (netns %s) holds program id %d (linked_xdp, tag %s) through bpf_link %d (pinned at %s), which this "
        "collection did not attach; it is left in place and nothing was changed. Fix: unload it with the tool that "
        "attached it (e.g. xdp-loader unload %s --all; or rm %s), or set force: true to detach the link and "
        "attach (not atomic: the interface runs without XDP in between)."
        % (netns_pair.if_a, netns_pair.ns_a, old_id, tag, info["id"], link_pin, netns_pair.if_a, link_pin)), res["msg"]
    plan = attach(netns_pair, bpffs, tmp_path, objs["reference"], force=True, approve=False)
    assert any(a.startswith("detach bpf_link %d (pinned at %s) holding foreign XDP program" % (info["id"], link_pin))
               and "not atomic" in a for a in plan["actions"]), plan["actions"]
    assert not any("atomically" in a for a in plan["actions"] if "XDP" in a)
    res = attach(netns_pair, bpffs, tmp_path, objs["reference"], force=True)
    assert res["_rc"] == 0, res.get("msg")
    assert res["xdp"]["action"] == "replace_link" and res["xdp"]["previous_id"] == old_id
    with H.netns(netns_pair.ns_a):
        now = H.xdp_query(idx)["prog_id"]
        assert M.prog_info_by_id(now)["name"] == "xdp_shaper"
        assert H.xdp_links(idx) == []


def test_kernel_set_map_flags_do_not_make_a_fresh_pin_incompatible(objs, bpffs):
    lo = O.load_object(objs["devmap"], pin_root=bpffs)
    lo.close()
    pin = os.path.join(bpffs, "redirect_ports")
    info = M.map_info_by_path(pin)
    assert info["kernel_flags"] & M.BPF_F_RDONLY_PROG and info["flags"] == 0
    O.load_object(objs["devmap"], pin_root=bpffs).close()     # libbpf reuses the pin
    spec = {"name": "devmap", "sources": {"kern": "devmap.c"}, "outputs": {"object": "devmap.o"},
            "attach": {"xdp": "devmap_xdp"}}
    res = run_module("pinned_maps", dict(spec=spec, object=objs["devmap"], pin_root=bpffs, state="clean"))
    assert res["_rc"] == 0, res.get("msg")
    rows = {p["name"]: p for p in res["pins"]}
    assert rows["redirect_ports"]["status"] == "compatible", rows["redirect_ports"]
    assert res["changed"] is False and os.path.exists(pin)


def test_a_symlinked_map_pin_never_leads_the_loader_out_of_the_pin_root(objs, netns_pair, bpffs, tmp_path):
    """Issue: A/ip_to_shaper -> B/ip_to_shaper (another bpffs) made the XDP program use the map in B."""
    other = str(tmp_path / "other-bpffs")
    os.makedirs(other)
    sh("mount", "-t", "bpf", "bpf", other)
    try:
        fd = M.map_create("lpm_trie", 20, 24, 65536, name="ip_to_shaper", flags=1)   # BPF_F_NO_PREALLOC
        try:
            obj_pin(fd, os.path.join(other, "ip_to_shaper"))
        finally:
            os.close(fd)
        os.symlink(os.path.join(other, "ip_to_shaper"), os.path.join(bpffs, "ip_to_shaper"))
        plan = attach(netns_pair, bpffs, tmp_path, objs["reference"], approve=False)
        assert plan["_rc"] == 1
        bad = "%s/ip_to_shaper is a symbolic link to %s/ip_to_shaper, outside the pin root" % (bpffs, other)
        assert bad in plan["msg"], plan["msg"]
        res = attach(netns_pair, bpffs, tmp_path, objs["reference"])
        assert res["_rc"] == 1 and bad in res["msg"]
        with H.netns(netns_pair.ns_a):
            assert H.xdp_query(H.ifindex(netns_pair.if_a))["prog_id"] == 0
        with pytest.raises(Exception) as exc:
            O.load_object(objs["reference"], pin_root=bpffs, resize={"cpu_map": possible_cpus()})
        assert "is a symbolic link to %s/ip_to_shaper, outside the pin root %s" % (other, bpffs) in str(exc.value)
    finally:
        sh("umount", "-l", other, check=False)
