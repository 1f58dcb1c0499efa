"""Real LibreQoS trees (../shared/libreqos/, unpacked at test time): counters keyed as LibreQoS keys them.

Every test here runs on the shared tarballs (LQOS_LIBREQOS_SRC overrides develop) and builds each ref at most
once per session (lqos_testlib.libreqos_build). What this kernel loads is probed, never assumed: a kernel that
refuses a ref's XDP program (this machine's refuses the ``bpf_xdp_adjust_meta`` helper LibreQoS v2.0+ calls)
skips that ref's traffic tests with the probe's own reason.
"""
from __future__ import annotations

import ipaddress
import os
import struct
import uuid

import pytest
import yaml

from lqos_testlib import REPO, NetnsPair, edit, libreqos_fitted, needs_xdp, run_module, sh


pytestmark = pytest.mark.usefixtures("tools")
PINGS = 3


@pytest.fixture
def dual_stack_pair():
    """A veth pair in two netns with IPv4 and IPv6 addresses on each end."""
    pair = NetnsPair("lql" + uuid.uuid4().hex[:7])
    pair.create()
    try:
        net = int(pair.ip_a.split(".")[2])
        pair.ip6_a, pair.ip6_b = "fd42:211:%x::1" % net, "fd42:211:%x::2" % net
        for ns, ifname, ip in ((pair.ns_a, pair.if_a, pair.ip6_a), (pair.ns_b, pair.if_b, pair.ip6_b)):
            sh("ip", "-n", ns, "addr", "add", ip + "/64", "dev", ifname, "nodad")
        yield pair
    finally:
        pair.destroy()


@pytest.mark.parametrize("ref", ["develop", "v1.4"])
def test_a_probe_of_an_ipv4_and_an_ipv6_address_is_counted_on_libreqos(ref, dual_stack_pair, bpffs, tmp_path):
    """LibreQoS keys IPv4 hosts as twelve 0xff bytes + the address: the health check's probe must look there
    (it looked up ::ffff:a.b.c.d and found nothing, so every approved deploy with an IPv4 target rolled back).
    On a kernel that refuses bpf_xdp_adjust_meta, develop runs without XDP metadata (lqos_testlib.libreqos_fitted)."""
    build = libreqos_fitted(ref)
    needs_xdp(build, ref)
    pair = dual_stack_pair
    spec = "libreqos"
    attached = run_module("attach", dict(spec=spec, object=build["object"], pin_root=bpffs, interface=pair.if_a,
                                         netns=pair.ns_a, state_dir=str(tmp_path / "state"),
                                         tc_programs=["tc_iphash_to_cpu"], approve=True))
    assert attached["_rc"] == 0, attached.get("msg")
    probes = [{"target": pair.ip_b, "netns": pair.ns_a, "direction": 1},
              {"target": pair.ip6_b, "netns": pair.ns_a, "direction": 1}]
    args = dict(spec=spec, pin_root=bpffs, toolchain=False, programs=False, build_root=str(tmp_path / "nb"),
                probes=probes)
    before = run_module("abi_info", args)
    assert before["_rc"] == 0, before.get("msg")
    for target in (pair.ip_b, pair.ip6_b):
        ping = sh("ip", "netns", "exec", pair.ns_a, "ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", target,
                  check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    after = run_module("abi_info", args)
    assert after["_rc"] == 0, after.get("msg")
    v4, v6 = after["probes"]
    assert (v4["address"], v6["address"]) == (pair.ip_a, pair.ip6_a)
    assert v4["key"] == "ff" * 12 + ipaddress.ip_address(pair.ip_a).packed.hex()
    assert v6["key"] == ipaddress.ip_address(pair.ip6_a).packed.hex()
    for b, a in zip(before["probes"], after["probes"]):
        assert a["found"] is True and a["map"] == "map_traffic" and a["nearest"] == []
        assert a["count"] - (b["count"] or 0) >= PINGS, (b, a)


def test_a_key_in_another_encoding_shows_the_key_and_the_nearest_keys(libreqos, netns_pair, bpffs, tmp_path):
    """A spec that says the map keys IPv4 as ::ffff:a.b.c.d while the object keys it otherwise: no count, and the
    probe row shows the key looked up next to the keys the map holds, the right one first."""
    ref = "develop"
    build = libreqos_fitted(ref)
    needs_xdp(build, ref)
    with open(os.path.join(REPO, "bpf", "specs", "libreqos.yml")) as fh:
        spec = yaml.safe_load(fh)
    spec["health"]["ipv4"] = "mapped"
    path = str(tmp_path / "mapped.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(spec, fh)
    attached = run_module("attach", dict(spec=path, object=build["object"], pin_root=bpffs, interface=netns_pair.if_a,
                                         netns=netns_pair.ns_a, state_dir=str(tmp_path / "state"),
                                         tc_programs=["tc_iphash_to_cpu"], approve=True))
    assert attached["_rc"] == 0, attached.get("msg")
    assert netns_pair.ping(count=PINGS).returncode == 0
    facts = run_module("abi_info", dict(spec=path, pin_root=bpffs, toolchain=False, programs=False,
                                        build_root=str(tmp_path / "nb"),
                                        probes=[{"target": netns_pair.ip_b, "netns": netns_pair.ns_a}]))
    assert facts["_rc"] == 0, facts.get("msg")
    row = facts["probes"][0]
    packed = ipaddress.ip_address(netns_pair.ip_a).packed.hex()
    assert row["found"] is False and row["count"] == 0
    assert row["key"] == "0" * 20 + "ffff" + packed
    assert row["nearest"][0] == "ff" * 12 + packed


def abi_check(crate: str, build_dir: str, spec="libreqos", **kw) -> dict:
    """lqos.bpf.abi_check with the controller half computed as its action plugin computes it."""
    from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option
    args = prepare_args(dict(spec=resolve_spec_option(spec, REPO), src=crate, build_dir=build_dir, **kw), REPO)
    return run_module("abi_check", args)


@pytest.mark.parametrize("ref", ["v1.4", "v2.0", "v2.1", "v2.2", "develop"])
def test_every_release_builds_and_checks_clean_with_spec_libreqos(ref, libreqos):
    """`spec: libreqos` and nothing else, on each shared tree: the chain as build.rs runs it, then every derived
    Rust/C pair, asserted size and pinned-map expectation agrees."""
    build = libreqos.build(ref)
    assert build["result"]["flags_source"].startswith("build.rs:")
    assert {"xdp_prog", "tc_iphash_to_cpu", "bifrost"} <= set(build["result"]["programs"])
    result = abi_check(build["crate"], build["build_dir"])
    assert result["_rc"] == 0, result.get("msg")
    assert result["ok"] is True and result["problems"] == [] and result["drift"] == [], result["problems"]
    statuses = {p["rust"]: p["status"] for p in result["pairs"]}
    assert statuses and set(statuses.values()) == {"ok"}, statuses
    assert statuses.get("IpHashKey") == "ok" and statuses.get("HostCounter") == "ok"


def test_attach_without_a_topology_leaves_the_bridge_redirector_out_and_says_so(netns_pair, bpffs, tmp_path):
    """A plain interface is a pair's port: LibreQoS never puts bifrost there (spec attach.tc topologies)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
    build = libreqos_fitted("develop")
    needs_xdp(build, "develop")
    res = run_module("attach", dict(spec="libreqos", object=build["object"], pin_root=bpffs,
                                    interface=netns_pair.if_a, netns=netns_pair.ns_a,
                                    state_dir=str(tmp_path / "state"), approve=True))
    assert res["_rc"] == 0, res.get("msg")
    assert ("TC program bifrost left out: the spec attaches it only in the bridge and stick topologies (attach.tc "
            "topologies); name it in tc_programs, or deploy with that lqos_bpf_topology, to attach it") in res["notes"]
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert H.tc_query(idx, "egress", 1, 0xC02F)
        assert not H.tc_query(idx, "ingress", 1, 0xC02F)


def _fields(obj: str, struct_name: str) -> dict:
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
    with B.Btf.from_file(obj) as btf:
        return {m["name"]: (m["offset"], m["size"]) for m in btf.layout(struct_name)["members"]}


def test_v21_to_v22_layout_upgrade_keeps_every_entry_and_rolls_back_to_v21_with_every_entry(libreqos, bpffs,
                                                                                            tmp_path):
    """map_traffic's value grows 112 -> 128 bytes between v2.1 and v2.2 (two fields inserted): the pin step
    migrates every entry by field name, a rollback (what the deploy role's rescue runs after a failed health
    check) puts v2.1's own map back with every entry, and a commit after a second migration keeps them all."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus
    old, new = libreqos.build("v2.1")["object"], libreqos.build("v2.2")["object"]
    ncpus = possible_cpus()
    programs = [p["name"] for p in O.object_info(old)["programs"]]
    O.load_object(old, pin_root=bpffs, resize={"cpu_map": ncpus}, disabled=programs).close()
    traffic, iphash = os.path.join(bpffs, "map_traffic"), os.path.join(bpffs, "map_ip_to_cpu_and_tc")
    info = M.map_info_by_path(traffic)
    assert info["value_size"] == 112
    f_old, f_new = _fields(old, "host_counter"), _fields(new, "host_counter")
    assert f_old["icmp_download_packets"][0] != f_new["icmp_download_packets"][0]   # the layout really moved
    n = 1000
    stride = 112
    for i in range(n):
        key = b"\xff" * 12 + bytes([10, 9, i >> 8, i & 0xFF])
        blob = bytearray(stride * ncpus)
        for cpu in range(ncpus):
            for name, (off, size) in f_old.items():
                blob[cpu * stride + off:cpu * stride + off + size] = ((i + 1) * 100 + cpu + len(name)).to_bytes(
                    size, "little")
        M.map_update(traffic, key, bytes(blob))
        M.map_update(iphash, struct.pack("<I", 128) + key, struct.pack("<IIQQ", i % 2, 0x10000 + i, i, i * 3))
    before = {"traffic": dict(M.map_entries(traffic)), "iphash": dict(M.map_entries(iphash)), "id": info["id"]}
    args = dict(spec="libreqos", object=new, pin_root=bpffs, state_dir=str(tmp_path / "s"),
                backup_dir=str(tmp_path / "b"), approve=True)

    def migrated_entries_kept():
        res = run_module("pinned_maps", dict(args, state="migrated"))
        assert res["_rc"] == 0, res.get("msg")
        now = M.map_info_by_path(traffic)
        assert now["value_size"] == 128 and now["id"] != before["id"]
        got = dict(M.map_entries(traffic))
        assert set(got) == set(before["traffic"])
        for key, blob in before["traffic"].items():
            for cpu in range(ncpus):
                for name, (off, size) in f_old.items():
                    o2, s2 = f_new[name]
                    was = blob[cpu * stride + off:cpu * stride + off + size]
                    assert got[key][cpu * 128 + o2:cpu * 128 + o2 + s2] == was, (name, cpu)
        assert dict(M.map_entries(iphash)) == before["iphash"]
        return res

    migrated_entries_kept()
    back = run_module("pinned_maps", dict(args, state="rolled_back"))
    assert back["_rc"] == 0, back.get("msg")
    assert M.map_info_by_path(traffic)["id"] == before["id"]
    assert dict(M.map_entries(traffic)) == before["traffic"] and dict(M.map_entries(iphash)) == before["iphash"]
    migrated_entries_kept()
    done = run_module("pinned_maps", dict(args, state="committed"))
    assert done["_rc"] == 0, done.get("msg")
    assert M.map_info_by_path(traffic)["value_size"] == 128 and len(M.map_entries(traffic)) == n
    assert not os.path.exists(os.path.join(bpffs, "lqos_bpf_aside")) or not os.listdir(os.path.join(bpffs, "lqos_bpf_aside"))


def test_a_c_only_change_to_a_struct_a_sibling_crate_mirrors_is_caught(libreqos, tmp_path):
    """lqos_heimdall (not lqos_sys) opens heimdall_config with its own mirror: the workspace gives the root."""
    crate = libreqos.copy(tmp_path / "tree", "develop")
    edit(os.path.join(crate, "src", "bpf", "common", "heimdall.h"),
         "__u32 monitor_mode;", "__u32 monitor_mode;\n    __u32 sampling;")
    built = run_module("pipeline", dict(spec="libreqos", src=crate, dest=str(tmp_path / "out")))
    assert built["_rc"] == 0, built.get("msg")
    result = abi_check(crate, built["build_dir"])
    assert result["_rc"] == 1 and result["ok"] is False
    [heimdall] = [p for p in result["pairs"] if p["rust"] == "HeimdalConfig"]
    assert heimdall["status"] != "ok" and heimdall["btf_size"] == 8 and heimdall["rust_size"] == 4
    assert any("HeimdalConfig" in p for p in result["problems"]), result["problems"]
    assert result["rust_roots"]["workspace"]["members"] == [
        {"crate": "lqos_heimdall", "src": "../lqos_heimdall/src", "maps": ["heimdall_config", "heimdall_watching"]}]


def test_a_root_the_spec_expects_but_the_tree_lacks_is_named_with_its_path(libreqos, tmp_path):
    """lqos_sys alone, without its sibling crates: the missing root is the problem, not an empty mirrors list."""
    import shutil
    crate = str(tmp_path / "lqos_sys")
    shutil.copytree(libreqos.crate("develop"), crate)
    build = libreqos.build("develop")
    result = abi_check(crate, build["build_dir"])
    assert result["_rc"] == 1
    missing = os.path.normpath(os.path.join(crate, "..", "lqos_utils", "src"))
    assert result["rust_roots"]["missing"] == [{"root": "../lqos_utils/src", "path": missing}]
    assert ("Rust root ../lqos_utils/src of spec rust.roots is missing: %s does not exist, so the mirrors there were "
            "not compared: give the crate inside its whole tree (its sibling crates next to it), or fix rust.roots"
            % missing) in result["problems"]
    assert "the spec's `mirrors` list is empty" not in result["msg"]


def test_a_missing_tree_fails_the_test_with_where_it_looked_and_the_fixes():
    """CI always has the trees: a missing one is a failure that says what to do, never a skip."""
    from lqos_testlib import libreqos_tarball, libreqos_tarball_dirs
    with pytest.raises(pytest.fail.Exception) as err:
        libreqos_tarball("v0.0")
    msg = str(err.value)
    assert msg.startswith("the LibreQoS test tree libreqos-v0.0.tar.gz is missing: looked in %s."
                          % ", ".join(libreqos_tarball_dirs()))
    assert "../shared/libreqos/" in msg and "LQOS_LIBREQOS_TARBALLS" in msg and "LQOS_LIBREQOS_SRC" in msg
