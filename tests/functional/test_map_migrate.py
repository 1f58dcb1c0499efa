"""Two-phase map replacement with entry migration by BTF, on the real kernel.

The reference pipeline is built at two versions (v2: the flow value gains a field,
the IP -> CPU value's ``cpu`` widens from 32 to 64 bits). v1's maps are filled with
10,000 entries and its programs attached to a veth pair; the upgrade moves the old
pins aside, creates the new maps, migrates every entry, and attach swaps the
programs. Map contents are compared field by field (offsets from each object's
BTF), hooks and pins are read back from the kernel.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import struct
import subprocess
import sys

import pytest

from lqos_testlib import REPO, build_reference, compile_bpf, edit, module_args_file, run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

N = 10000
NCPUS = L.possible_cpus()


def _v2_spec():
    spec = copy.deepcopy(resolve_spec_option("reference"))
    for item in spec["pinned_maps"]:
        if item["name"] == "flow_table":
            item["value_size"] = 144
        if item["name"] in ("ip_to_shaper", "shaper_hotcache"):
            item["value_size"] = 32
    return spec


@pytest.fixture(scope="session")
def versions(tmp_path_factory):
    work = tmp_path_factory.mktemp("migrate_objects")
    v1 = build_reference(work, "reference", "v1")
    src = work / "v2src"
    os.makedirs(str(src))
    import shutil
    shutil.copytree(os.path.join(REPO, "bpf"), str(src / "bpf"))
    common = src / "bpf" / "shaper_sys" / "src" / "bpf" / "common"
    edit(common / "flows.h", "\t__u64 owner_hash[2]; /* [0] circuit id, [1] device id */\n",
         "\t__u64 owner_hash[2]; /* [0] circuit id, [1] device id */\n\t__u64 retransmits;\n")
    edit(common / "ip_hash.h", "\t__u32 cpu;        /* cpumap slot", "\t__u64 cpu;        /* cpumap slot")
    spec2 = _v2_spec()
    res = run_module("pipeline", dict(spec=spec2, src=str(src / "bpf" / "shaper_sys"), dest=str(work / "v2-out")))
    assert res["_rc"] == 0, res
    return {"v1": v1, "v2": res["outputs"]["object"]["path"], "spec1": resolve_spec_option("reference"),
            "spec2": spec2}


def leaves(shape, blob, path="", off=0, out=None):
    """{dotted path: int or bytes} of every leaf field of a value, by its BTF shape."""
    out = {} if out is None else out
    if shape["kind"] == "int":
        out[path] = int.from_bytes(blob[off:off + shape["size"]], "little", signed=shape["signed"])
    elif shape["kind"] == "struct":
        for m in shape["members"]:
            leaves(m["shape"], blob, (path + "." if path else "") + m["name"], off + m["offset"], out)
    elif shape["kind"] == "array":
        for i in range(shape["nelems"]):
            leaves(shape["elem"], blob, "%s[%d]" % (path, i), off + i * shape["elem"]["size"], out)
    else:
        out[path] = bytes(blob[off:off + shape["size"]])
    return out


def value_shape(obj, map_name):
    with B.Btf.from_file(obj) as btf:
        return btf.shape(btf.map_types(map_name)[1])


def flow_key(i):
    return struct.pack("<16s16sHHB3x", b"\0" * 10 + b"\xff\xff" + struct.pack(">I", 0x0A000000 + i),
                       b"\0" * 10 + b"\xff\xff" + struct.pack(">I", 0xC0A80000 + (i % 65000)), 1000 + i % 50000,
                       443, 6)


def ip_key(i):
    if i % 2:
        return struct.pack("<I16s", 112, b"\x20\x01\x0d\xb8" + b"\0" * 8 + struct.pack(">H", i) + b"\0\0")
    return struct.pack("<I16s", 128, b"\0" * 10 + b"\xff\xff" + struct.pack(">I", 0x64400000 + i))


def fill_v1(bpffs, obj, n=N):
    """n flows and n IP -> CPU entries, every field of every value set to something entry-specific."""
    flow = value_shape(obj, "flow_table")
    assert flow["size"] == 136
    fd = L._obj_get(os.path.join(bpffs, "flow_table"))
    try:
        for i in range(n):
            blob = bytearray(flow["size"])
            for k, (name, f) in enumerate(_int_leaves(flow)):
                blob[f[0]:f[0] + f[1]] = ((i * 131 + k * 7 + 1) % (1 << (8 * f[1]))).to_bytes(f[1], "little")
            M.map_update(fd, flow_key(i), bytes(blob))
    finally:
        os.close(fd)
    fd = L._obj_get(os.path.join(bpffs, "ip_to_shaper"))
    try:
        for i in range(n):
            M.map_update(fd, ip_key(i), struct.pack("<IIQQ", i % NCPUS + 0x7FFFFF00, 0x10000 + i, i * 3, i * 5))
    finally:
        os.close(fd)


def _int_leaves(shape, off=0, path=""):
    if shape["kind"] == "int":
        return [(path, (off, shape["size"]))]
    out = []
    if shape["kind"] == "struct":
        for m in shape["members"]:
            out += _int_leaves(m["shape"], off + m["offset"], (path + "." if path else "") + m["name"])
    elif shape["kind"] == "array":
        for i in range(shape["nelems"]):
            out += _int_leaves(shape["elem"], off + i * shape["elem"]["size"], "%s[%d]" % (path, i))
    return out


def synthetic_flows(bpffs):
    """The N synthetic flows of fill_v1 (the attached programs add real ones of the veth's own traffic)."""
    keys = {flow_key(i) for i in range(N)}
    return {k: v for k, v in M.map_entries(os.path.join(bpffs, "flow_table")) if k in keys}


def entries(path):
    return dict(M.map_entries(path))


def users(mid):
    """Ids of the loaded programs that use map id ``mid``."""
    return {p["id"] for p in M.loaded_programs() if mid in p["map_ids"]}


def map_id(path):
    return M.map_info_by_path(path)["id"]


def pins(bpffs):
    out = {}
    for root, _dirs, files in os.walk(bpffs):
        for name in files:
            p = os.path.join(root, name)
            if L.pinned_kind(p) == "map":
                out[os.path.relpath(p, bpffs)] = map_id(p)
    return out


class World:
    def __init__(self, tmp_path, bpffs, pair, versions):
        self.tmp, self.bpffs, self.pair, self.v = tmp_path, bpffs, pair, versions
        self.state_dir = str(tmp_path / "attach-state")
        self.maps_state = str(tmp_path / "maps-state")
        self.backups = str(tmp_path / "backups")

    def attach(self, version):
        res = run_module("attach", dict(spec=self.v["spec" + version[-1]], object=self.v[version],
                                        pin_root=self.bpffs, interface=self.pair.if_a, netns=self.pair.ns_a,
                                        state_dir=self.state_dir, approve=True))
        assert res["_rc"] == 0, res
        return res

    def maps(self, state, version="v2", check_mode=False, diff=False, env=None, **kw):
        args = dict(spec=self.v["spec" + version[-1]], object=self.v[version], pin_root=self.bpffs, state=state,
                    state_dir=self.maps_state, backup_dir=self.backups, approve=True)
        args.update(kw)
        if env:
            return run_killed(args, env)
        return run_module("pinned_maps", args, check_mode=check_mode, diff=diff)

    def xdp_prog(self):
        with H.netns(self.pair.ns_a):
            return H.xdp_query(H.ifindex(self.pair.if_a))["prog_id"]

    def prog_maps(self, prog_id):
        return set(M.prog_info_by_id(prog_id)["map_ids"])


def run_killed(args, env):
    """Run pinned_maps as a process that SIGKILLs itself at the step named in env; return its rc."""
    argfile = module_args_file("pinned_maps", args)
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env)
    try:
        proc = subprocess.run([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pinned_maps",
                               argfile], capture_output=True, text=True, env=full, cwd="/", check=False)
    finally:
        os.unlink(argfile)
    return proc.returncode


@pytest.fixture
def world(tmp_path, bpffs, netns_pair, versions):
    return World(tmp_path, bpffs, netns_pair, versions)


def ok(res):
    assert res["_rc"] == 0 and not res.get("failed"), res.get("msg", res)
    return res


def assert_migrated(old_flows, old_ips, bpffs, versions):
    """Every old entry is in the new maps, every common field equal, the added field zero."""
    s1, s2 = value_shape(versions["v1"], "flow_table"), value_shape(versions["v2"], "flow_table")
    new_flows = entries(os.path.join(bpffs, "flow_table"))
    assert len(old_flows) == N and set(old_flows) <= set(new_flows)
    for key, old in old_flows.items():
        a, b = leaves(s1, old), leaves(s2, new_flows[key])
        assert set(b) - set(a) == {"retransmits"} and b["retransmits"] == 0
        assert all(a[f] == b[f] for f in a), key.hex()
    new_ips = entries(os.path.join(bpffs, "ip_to_shaper"))
    assert len(new_ips) == len(old_ips) == N and set(new_ips) == set(old_ips)  # prefix lengths kept in the keys
    for key, old in old_ips.items():
        cpu, tc, circuit, device = struct.unpack("<IIQQ", old)
        assert struct.unpack("<QI4xQQ", new_ips[key]) == (cpu, tc, circuit, device)


def test_upgrade_keeps_every_entry_and_rollback_gives_back_the_old_maps(world, versions):
    w = world
    first = w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    old_flows, old_ips = synthetic_flows(w.bpffs), entries(os.path.join(w.bpffs, "ip_to_shaper"))
    before_pins, old_prog = pins(w.bpffs), w.xdp_prog()

    plan = ok(w.maps("migrated", approve=False, diff=True))
    assert plan["changed"] and pins(w.bpffs) == before_pins
    by_name = {a["name"]: a for a in plan["actions"]}
    assert set(by_name) == {"flow_table", "ip_to_shaper", "shaper_hotcache"}
    flow = by_name["flow_table"]["migration"]
    assert flow["entries"] >= N and flow["value"]["zeroed"] == ["retransmits"] and flow["value"]["lost"] == []
    assert by_name["ip_to_shaper"]["migration"]["value"]["widened"] == ["cpu: u32 -> u64"]
    assert "ip_to_shaper: lpm_trie key 20 B value 24 B" in plan["diff"]["after"]

    done = ok(w.maps("migrated"))
    assert {d["name"]: d["entries_written"] for d in done["migrated"]}["flow_table"] >= N
    now = pins(w.bpffs)
    assert now["lqos_bpf_aside/flow_table"] == before_pins["flow_table"]
    assert now["flow_table"] != before_pins["flow_table"]
    assert w.xdp_prog() == old_prog  # nothing swapped yet: the old programs run on the old maps
    assert before_pins["ip_to_shaper"] in w.prog_maps(old_prog) and users(before_pins["flow_table"])
    assert_migrated(old_flows, old_ips, w.bpffs, versions)
    again = ok(w.maps("migrated"))
    assert not again["changed"], again
    audit = ok(w.maps("audited"))
    aside = [p for p in audit["pins"] if p["status"] == "aside"]
    assert sorted(p["name"] for p in aside) == ["lqos_bpf_aside/flow_table", "lqos_bpf_aside/ip_to_shaper",
                                                "lqos_bpf_aside/shaper_hotcache"]
    assert audit["summary"]["unknown"] == 0 and audit["summary"]["incompatible"] == 0

    new = w.attach("v2")
    assert new["xdp"]["action"] == "replace"
    new_prog = w.xdp_prog()
    assert map_id(os.path.join(w.bpffs, "ip_to_shaper")) in w.prog_maps(new_prog)
    assert users(map_id(os.path.join(w.bpffs, "flow_table")))

    # The health check failed: roll back, then re-attach the previous build on its live maps.
    back = ok(w.maps("rolled_back"))
    assert back["rolled_back"] and pins(w.bpffs) == before_pins
    w.attach("v1")
    assert users(before_pins["flow_table"])
    assert before_pins["ip_to_shaper"] in w.prog_maps(w.xdp_prog())
    assert synthetic_flows(w.bpffs) == old_flows
    assert entries(os.path.join(w.bpffs, "ip_to_shaper")) == old_ips
    assert not ok(w.maps("rolled_back"))["changed"]
    assert first["xdp"]["tag"] == M.prog_info_by_id(w.xdp_prog())["tag"]


def test_commit_backs_up_with_btf_and_the_backup_restores_into_the_new_layout(world, versions):
    w = world
    w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    old_ips = entries(os.path.join(w.bpffs, "ip_to_shaper"))
    ok(w.maps("migrated"))
    w.attach("v2")
    plan = ok(w.maps("committed", approve=False))
    assert plan["changed"] and "lqos_bpf_aside/flow_table" in pins(w.bpffs)
    done = ok(w.maps("committed"))
    assert not any(n.startswith("lqos_bpf_aside") for n in pins(w.bpffs))
    assert not os.path.exists(os.path.join(w.bpffs, "lqos_bpf_aside"))
    assert not ok(w.maps("committed"))["changed"]
    backup = {b["name"]: b for b in done["backups"]}["ip_to_shaper"]
    with open(backup["file"]) as fh:
        doc = json.load(fh)
    assert doc["layout"]["value_size"] == 24 and doc["types"]["value"]["members"][0]["name"] == "cpu"
    # A fresh v2 map, empty: the v1 backup migrates into it.
    ip = os.path.join(w.bpffs, "ip_to_shaper")
    for key in list(entries(ip)):
        M.map_delete(ip, key)
    res = ok(w.maps("restored", restore_from=backup["file"]))
    assert res["restored"]["migration"]["value"]["widened"] == ["cpu: u32 -> u64"]
    assert res["restored"]["entries_written"] == N
    new = entries(ip)
    assert set(new) == set(old_ips)
    for key, old in old_ips.items():
        assert struct.unpack("<QI4xQQ", new[key]) == struct.unpack("<IIQQ", old)
    assert not ok(w.maps("restored", restore_from=backup["file"]))["changed"]


def test_narrowing_that_truncates_is_refused_before_anything_changes(world, versions, tmp_path):
    w = world
    w.attach("v2")
    ip = os.path.join(w.bpffs, "ip_to_shaper")
    M.map_update(ip, ip_key(0), struct.pack("<QI4xQQ", 1 << 40, 1, 2, 3))
    before = pins(w.bpffs)
    res = w.maps("migrated", version="v1")
    assert res["_rc"] != 0 and "Traceback" not in res["msg"]
    assert "ip_to_shaper" in res["msg"] and "cpu = 1099511627776 does not fit in 4 bytes" in res["msg"]
    assert pins(w.bpffs) == before, res["msg"]


STEPS = ["loaded", "half:flow_table", "filled:flow_table", "aside:flow_table", "renamed:flow_table",
         "half:ip_to_shaper", "filled:ip_to_shaper", "aside:ip_to_shaper", "renamed:ip_to_shaper"]


@pytest.mark.parametrize("kill_at", STEPS)
def test_kill_during_migration_never_loses_a_map_and_a_rerun_converges(tmp_path, bpffs, versions, kill_at):
    w = World(tmp_path, bpffs, None, versions)
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(versions["v1"], pin_root=bpffs, resize={"cpu_map": NCPUS},
                  disabled=[p["name"] for p in O.object_info(versions["v1"])["programs"]]).close()
    fill_v1(bpffs, versions["v1"], 2000)
    old = {n: entries(os.path.join(bpffs, n)) for n in ("flow_table", "ip_to_shaper")}
    ids = pins(bpffs)
    assert w.maps("migrated", env={"LQOS_BPF_TEST_KILL_AT": kill_at}) == -9
    now = pins(bpffs)
    for name in ("flow_table", "ip_to_shaper"):  # the old map is alive, at its name or moved aside
        assert ids[name] in (now.get(name), now.get("lqos_bpf_aside/" + name)), (name, now)
        assert name in now, "the name %s went missing" % name
    ok(w.maps("migrated"))
    assert not [p for p in pins(bpffs) if p.startswith("lqos_bpf_aside/lqos_bpf_new")]
    assert not [f for f in os.listdir(w.maps_state) if f.startswith(".")], os.listdir(w.maps_state)
    assert not ok(w.maps("migrated"))["changed"]
    assert len(entries(os.path.join(bpffs, "flow_table"))) == 2000
    for key, value in old["ip_to_shaper"].items():
        assert struct.unpack("<QI4xQQ", entries(os.path.join(bpffs, "ip_to_shaper"))[key]) == \
            struct.unpack("<IIQQ", value)
    # Rollback killed half way, then rerun: the old maps are back at their names.
    assert w.maps("rolled_back", env={"LQOS_BPF_TEST_KILL_AT": "unpinned:flow_table"}) == -9
    ok(w.maps("rolled_back"))
    assert pins(bpffs) == ids
    assert {n: entries(os.path.join(bpffs, n)) for n in old} == old


@pytest.mark.parametrize("kill_at", ["backed_up:flow_table"])
def test_kill_during_commit_then_a_rerun_commits(tmp_path, bpffs, versions, kill_at):
    w = World(tmp_path, bpffs, None, versions)
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(versions["v1"], pin_root=bpffs, resize={"cpu_map": NCPUS},
                  disabled=[p["name"] for p in O.object_info(versions["v1"])["programs"]]).close()
    fill_v1(bpffs, versions["v1"], 500)
    ok(w.maps("migrated"))
    assert w.maps("committed", env={"LQOS_BPF_TEST_KILL_AT": kill_at}) == -9
    assert "lqos_bpf_aside/ip_to_shaper" in pins(bpffs)
    ok(w.maps("committed"))
    assert not any(n.startswith("lqos_bpf_aside") for n in pins(bpffs))
    assert len(glob.glob(os.path.join(w.backups, "flow_table.*.json"))) >= 1


def plant_stale_pin(bpffs, name="ip_to_shaper", marker=b"\x5a" * 40):
    """Replace the pin of ``name`` by a map of the same type and key size but a wrong value size (as
    molecule's side effect does): the attached programs keep the original map by fd."""
    path = os.path.join(bpffs, name)
    live = M.map_info_by_path(path)
    os.unlink(path)
    fd = M.map_create(live["type_name"], live["key_size"], len(marker), live["max_entries"], name=name,
                      flags=live["flags"])
    try:
        L.obj_pin(fd, path)
    finally:
        os.close(fd)
    M.map_update(path, ip_key(0), marker)
    return live["id"], map_id(path)


@pytest.mark.parametrize("outcome", ["committed", "rolled_back"])
def test_a_stale_pin_over_a_live_map_is_replaced_by_the_live_map_not_a_new_one(world, versions, outcome):
    w = world
    w.attach("v2")
    prog = w.xdp_prog()
    ip = os.path.join(w.bpffs, "ip_to_shaper")
    for i in range(100):
        M.map_update(ip, ip_key(i), struct.pack("<QI4xQQ", i, i + 1, i + 2, i + 3))
    live_entries = entries(ip)
    live_id, stale_id = plant_stale_pin(w.bpffs)
    assert live_id in w.prog_maps(w.xdp_prog()) and stale_id != live_id

    plan = ok(w.maps("migrated", approve=False, diff=True))
    assert [(a["name"], a["live_id"], a["old_id"]) for a in plan["actions"]] == [("ip_to_shaper", live_id, stale_id)]
    assert plan["actions"][0]["change"].startswith("re-pin live map ip_to_shaper (id %d) at %s, the map the "
                                                   "attached programs use" % (live_id, ip)), plan["actions"]
    assert "ip_to_shaper: keep the live map id %d" % live_id in plan["diff"]["after"]
    assert map_id(ip) == stale_id

    done = ok(w.maps("migrated"))
    assert [{k: v for k, v in d.items() if not k.endswith("_at")} for d in done["migrated"]] == [
        {"name": "ip_to_shaper", "entries_total": None, "entries_written": 0, "new_id": live_id, "repinned": True}]
    assert map_id(ip) == live_id and entries(ip) == live_entries
    assert pins(w.bpffs)["lqos_bpf_aside/ip_to_shaper"] == stale_id
    assert not ok(w.maps("migrated"))["changed"]
    # The programs already run on the re-pinned map: attach has nothing left to do.
    again = w.attach("v2")
    assert not again["changed"], again
    assert w.xdp_prog() == prog
    audit = ok(w.maps("audited"))
    assert audit["summary"]["incompatible"] == 0

    ok(w.maps(outcome))
    if outcome == "committed":
        assert "lqos_bpf_aside/ip_to_shaper" not in pins(w.bpffs) and map_id(ip) == live_id
        backup = glob.glob(os.path.join(w.backups, "ip_to_shaper.*.json"))
        assert len(backup) == 1
        with open(backup[0]) as fh:
            doc = json.load(fh)
        assert doc["layout"]["value_size"] == 40
        assert doc["reason"] == ("a stale pin over the live map the attached programs use, which took its name "
                                 "back; committed")
    else:  # exactly as before the run: the stale pin is back, the live map unpinned but still in use
        assert map_id(ip) == stale_id and "lqos_bpf_aside/ip_to_shaper" not in pins(w.bpffs)
        assert live_id in w.prog_maps(w.xdp_prog())
    assert entries(os.path.join(w.bpffs, "ip_to_shaper")) == (
        live_entries if outcome == "committed" else {ip_key(0): b"\x5a" * 40})
    # Nothing under way any more: no replacement record is left behind.
    assert os.listdir(w.maps_state) == [] if os.path.isdir(w.maps_state) else True


def test_kill_between_moving_aside_and_re_pinning_the_live_map_then_a_rerun_re_pins_it(world, versions):
    w = world
    w.attach("v2")
    ip = os.path.join(w.bpffs, "ip_to_shaper")
    M.map_update(ip, ip_key(7), struct.pack("<QI4xQQ", 7, 8, 9, 10))
    live_id, stale_id = plant_stale_pin(w.bpffs)
    assert w.maps("migrated", env={"LQOS_BPF_TEST_KILL_AT": "aside:ip_to_shaper"}) == -9
    # The name never went missing: the stale map is at its name and pinned a second time aside.
    assert pins(w.bpffs)["ip_to_shaper"] == pins(w.bpffs)["lqos_bpf_aside/ip_to_shaper"] == stale_id
    res = ok(w.maps("migrated"))
    assert res["actions"][0]["action"] == "replace" and res["actions"][0]["live_id"] == live_id
    assert map_id(ip) == live_id and len(entries(ip)) == 1
    assert not ok(w.maps("migrated"))["changed"]


HASH_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct flowbee_key { __u32 src; __u32 dst; __u16 sport; __u16 dport; };
struct flowbee_val { __u64 bytes; __u64 packets; };
struct {
    __uint(type, BPF_MAP_TYPE_%s);
    __uint(max_entries, 65536);
    __type(key, struct flowbee_key);
    __type(value, struct flowbee_val);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} flowbee SEC(".maps");
SEC("xdp")
int count(struct xdp_md *ctx)
{
    struct flowbee_key k = {};
    struct flowbee_val *v = bpf_map_lookup_elem(&flowbee, &k);
    if (v)
        v->packets++;
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def test_libreqos_style_hash_to_lru_hash_keeps_every_entry(tmp_path, bpffs):
    old_obj = compile_bpf(tmp_path, "flowbee_hash", HASH_C % "HASH")
    new_obj = compile_bpf(tmp_path, "flowbee_lru", HASH_C % "LRU_HASH")
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(old_obj, pin_root=bpffs, disabled=["count"]).close()
    path = os.path.join(bpffs, "flowbee")
    for i in range(N):
        M.map_update(path, struct.pack("<IIHH", i, i * 7, i % 65536, 80), struct.pack("<QQ", i * 1500, i))
    old = entries(path)
    args = dict(object=new_obj, pin_root=bpffs, state="migrated", state_dir=str(tmp_path / "s"), approve=True)
    before = pins(bpffs)
    check = ok(run_module("pinned_maps", args, check_mode=True, diff=True))
    assert check["changed"] and "check mode" in check["msg"] and pins(bpffs) == before
    assert check["diff"]["after"].startswith("flowbee: hash key 12 B value 16 B max_entries 65536 -> lru_hash")
    assert not os.path.exists(str(tmp_path / "s"))
    res = ok(run_module("pinned_maps", args))
    assert res["actions"][0]["migration"]["from"].startswith("hash ")
    assert res["actions"][0]["migration"]["to"].startswith("lru_hash ")
    assert M.map_info_by_path(path)["type_name"] == "lru_hash"
    assert entries(path) == old
    assert not ok(run_module("pinned_maps", args))["changed"]


PERCPU_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct counter { %s };
struct {
    __uint(type, BPF_MAP_TYPE_%s);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct counter);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");
SEC("xdp")
int count(struct xdp_md *ctx)
{
    __u32 k = 0;
    struct counter *v = bpf_map_lookup_elem(&counters, &k);
    if (v)
        v->packets++;
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.mark.parametrize("old_type,new_type", [("PERCPU_HASH", "LRU_PERCPU_HASH"), ("ARRAY", "HASH")])
def test_per_cpu_values_migrate_per_cpu_and_arrays_become_hashes(tmp_path, bpffs, old_type, new_type):
    old_obj = compile_bpf(tmp_path, "c_old", PERCPU_C % ("__u32 packets; __u32 drops;", old_type))
    new_obj = compile_bpf(tmp_path, "c_new", PERCPU_C % ("__u64 bytes; __u64 packets;", new_type))
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(old_obj, pin_root=bpffs, disabled=["count"]).close()
    path = os.path.join(bpffs, "counters")
    percpu = old_type.startswith("PERCPU")
    for i in range(4096):
        value = b"".join(struct.pack("<II", i * 10 + cpu, cpu) for cpu in range(NCPUS)) if percpu \
            else struct.pack("<II", i * 10, 7)
        M.map_update(path, struct.pack("<I", i), value)
    args = dict(object=new_obj, pin_root=bpffs, state="migrated", state_dir=str(tmp_path / "s"), approve=True)
    res = ok(run_module("pinned_maps", args))
    migration = res["actions"][0]["migration"]
    assert migration["value"]["widened"] == ["packets: u32 -> u64"]
    assert migration["value"]["lost"] == ["drops"] and migration["value"]["zeroed"] == ["bytes"]
    new = entries(path)
    assert len(new) == 4096
    for i in range(4096):
        blob = new[struct.pack("<I", i)]
        if percpu:
            assert [struct.unpack_from("<QQ", blob, cpu * 16) for cpu in range(NCPUS)] == \
                [(0, i * 10 + cpu) for cpu in range(NCPUS)]
        else:
            assert struct.unpack("<QQ", blob) == (0, i * 10)
    assert not ok(run_module("pinned_maps", args))["changed"]


def test_entries_that_do_not_fit_the_new_max_entries_are_refused_before_anything_changes(tmp_path, bpffs):
    old_obj = compile_bpf(tmp_path, "c_old", PERCPU_C % ("__u32 packets; __u32 drops;", "HASH"))
    new_obj = compile_bpf(tmp_path, "c_new", (PERCPU_C % ("__u64 packets;", "LRU_HASH")).replace(
        "__uint(max_entries, 4096);", "__uint(max_entries, 1000);"))
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(old_obj, pin_root=bpffs, disabled=["count"]).close()
    path = os.path.join(bpffs, "counters")
    for i in range(1001):
        M.map_update(path, struct.pack("<I", i), struct.pack("<II", i, 0))
    before = pins(bpffs)
    args = dict(object=new_obj, pin_root=bpffs, state="migrated", state_dir=str(tmp_path / "s"), approve=True)
    res = run_module("pinned_maps", args)
    assert res["_rc"] != 0 and "Traceback" not in res["msg"]
    assert "counters: 1001 entries do not fit in max_entries 1000" in res["msg"], res["msg"]
    assert res["msg"].endswith("the old ones are backed up at commit).")
    assert pins(bpffs) == before and len(entries(path)) == 1001


def test_start_empty_reports_the_map_kept_aside_and_its_entry_count(tmp_path, bpffs):
    old_obj = compile_bpf(tmp_path, "e_old", PERCPU_C % ("__u32 packets; __u32 drops;", "HASH"))
    new_obj = compile_bpf(tmp_path, "e_new", (PERCPU_C % ("__u64 packets;", "LRU_HASH")).replace(
        "__uint(max_entries, 4096);", "__uint(max_entries, 4);"))
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(old_obj, pin_root=bpffs, disabled=["count"]).close()
    path = os.path.join(bpffs, "counters")
    for i in range(5):
        M.map_update(path, struct.pack("<I", i), struct.pack("<II", i, 0))
    res = ok(run_module("pinned_maps", dict(object=new_obj, pin_root=bpffs, state="migrated", approve=True,
                                            state_dir=str(tmp_path / "s"), unmigratable="start_empty")))
    aside = os.path.join(bpffs, "lqos_bpf_aside", "counters")
    assert res["msg"].endswith(
        "counters started empty (its 5 entries could not move to the new layout and are kept in the old map aside "
        "at %s; state: committed backs them up, state: rolled_back puts the map back)" % aside), res["msg"]
    assert "None" not in res["msg"]
    [done] = res["migrated"]
    assert done["entries_total"] == 5 and done["entries_written"] == 0 and done["started_empty"], done
    assert len(entries(aside)) == 5 and entries(path) == {}


RINGBUF_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, %d);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");
SEC("xdp")
int emit(struct xdp_md *ctx)
{
    bpf_ringbuf_output(&events, &ctx, 8, 0);
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def test_a_ring_buffer_is_replaced_empty_and_committed_without_a_backup(tmp_path, bpffs):
    old_obj = compile_bpf(tmp_path, "rb_old", RINGBUF_C % 4096)
    new_obj = compile_bpf(tmp_path, "rb_new", RINGBUF_C % 8192)
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    O.load_object(old_obj, pin_root=bpffs, disabled=["emit"]).close()
    old_id = pins(bpffs)["events"]
    args = dict(object=new_obj, pin_root=bpffs, state_dir=str(tmp_path / "s"), backup_dir=str(tmp_path / "b"),
                approve=True)
    res = ok(run_module("pinned_maps", dict(args, state="migrated")))
    assert "the new map starts empty (ringbuf maps hold kernel objects" in res["actions"][0]["change"]
    assert res["msg"].endswith("events started empty (its contents never move; the old map is kept aside at "
                               "%s/lqos_bpf_aside/events)" % bpffs), res["msg"]
    assert pins(bpffs)["lqos_bpf_aside/events"] == old_id
    assert M.map_info_by_path(os.path.join(bpffs, "events"))["max_entries"] == 8192
    done = ok(run_module("pinned_maps", dict(args, state="committed")))
    assert done["backups"] == [] and any("without a backup" in w for w in done["warnings"])
    assert list(pins(bpffs)) == ["events"]
