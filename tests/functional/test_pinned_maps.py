"""lqos.bpf.pinned_maps on the real kernel, in private bpffs mounts: real maps with
deliberately wrong layouts, the reference object built by lqos.bpf.pipeline and
loaded for real, program pins, symlinks, vanishing pins, the approval gate, check
mode, backups and restores compared byte for byte."""
from __future__ import annotations

import copy
import json
import os
import shutil
import stat

import pytest
import yaml

from lqos_testlib import REPO, load_as_product, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._maps import audit as PA
from ansible_collections.lqos.bpf.plugins.module_utils._maps import expectations as PE
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

NCPUS = L.possible_cpus()


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The reference pipeline built once by lqos.bpf.pipeline: {object, info, spec}."""
    work = tmp_path_factory.mktemp("pinned_maps_ref")
    shutil.copytree(os.path.join(REPO, "bpf"), str(work / "bpf"))
    result = run_module("pipeline", dict(spec="reference", src=str(work / "bpf" / "shaper_sys"),
                                         dest=str(work / "out")))
    assert result["_rc"] == 0, result
    obj = result["outputs"]["object"]["path"]
    info = {m["name"]: m for m in O.object_info(obj)["maps"] if m["pinning"]}
    spec = resolve_spec_option("reference")
    assert sorted(info) == sorted(spec["expect"]["maps"])
    return {"object": obj, "maps": info, "spec": spec}


def pin_map(root, name, mtype, key_size, value_size, max_entries, entries=(), flags=0):
    path = os.path.join(root, name)
    fd = M.map_create(mtype, key_size, value_size, max_entries, name=os.path.basename(name)[:15], flags=flags)
    try:
        for key, value in entries:
            M.map_update(fd, key, value)
        L.obj_pin(fd, path)
    finally:
        L.close(fd)
    return path


def load_reference(reference, pin_root):
    """The reference object loaded as lqos.bpf.attach loads it: the optional programs this kernel refuses
    (flow_reader where tracing programs are refused) left out."""
    return load_as_product(reference["object"], "reference", pin_root=pin_root, resize={"cpu_map": NCPUS})


def pinned_maps(pin_root, **kw):
    check_mode = kw.pop("check_mode", False)
    diff = kw.pop("diff", False)
    args = dict(pin_root=pin_root)
    args.update(kw)
    return run_module("pinned_maps", args, check_mode=check_mode, diff=diff)


def snapshot(root):
    """Everything observable under a bpffs: entry kinds, symlink targets, map ids and map contents."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("symlink", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir",)
            else:
                kind = L.pinned_kind(path)
                if kind == "map":
                    info = M.map_info_by_path(path)
                    entries = sorted(M.map_entries(path)) if info["type_name"] != "queue" else None
                    out[rel] = ("map", info["id"], entries)
                else:
                    out[rel] = (kind,)
    return out


def by_name(result):
    return {p["name"]: p for p in result["pins"]}


# --------------------------------------------------------------------------
# Pin root
# --------------------------------------------------------------------------

def test_pin_root_not_bpffs(tmp_path):
    plain = str(tmp_path)
    result = pinned_maps(plain)
    assert result["_rc"] == 1 and result["failed"] is True
    assert result["msg"] == ("pin_root %s is not a bpffs mount (statfs magic is not BPF_FS_MAGIC). "
                             "Fix: mount bpffs there: mount -t bpf bpf %s" % (plain, plain))
    missing = str(tmp_path / "nope")
    result = pinned_maps(missing, state="clean", approve=True)
    assert result["msg"] == ("pin_root %s does not exist. Fix: mount bpffs there: mkdir -p %s && mount -t bpf bpf %s"
                             % (missing, missing, missing))
    assert "Traceback" not in result["_stderr"]


def test_fresh_bpffs_debug_entries_are_not_maps(bpffs):
    before = snapshot(bpffs)
    if not before:
        pytest.skip("a fresh bpffs on this kernel holds no preload iterators (built without CONFIG_BPF_PRELOAD)")
    assert sorted(before) == ["maps.debug", "progs.debug"]
    result = pinned_maps(bpffs)
    assert result["_rc"] == 0 and result["changed"] is False
    pins = by_name(result)
    assert sorted(pins) == ["maps.debug", "progs.debug"]
    for pin in pins.values():
        assert pin["status"] == "not_a_map" and pin["kind"] == "other"
    assert result["summary"] == {"total": 2, "compatible": 0, "incompatible": 0, "unknown": 0, "missing": 0,
                                 "not_a_map": 2, "vanished": 0, "unreadable": 0}
    result = pinned_maps(bpffs, state="clean", approve=True)
    assert result["changed"] is False and result["removed"] == [] and result["actions"] == []
    assert snapshot(bpffs) == before


# --------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------

def test_reference_object_pins_are_compatible_and_used(bpffs, reference):
    with load_reference(reference, bpffs) as lo:
        result = pinned_maps(bpffs, spec="reference", object=reference["object"])
        assert result["_rc"] == 0, result
        programs = M.loaded_programs()
        prog_ids = {lo.prog_info(name)["id"] for name in lo.loaded_programs}
    pins = by_name(result)
    maps = reference["maps"]
    assert result["summary"]["compatible"] == len(maps)
    assert result["summary"]["incompatible"] == result["summary"]["unknown"] == result["summary"]["missing"] == 0
    assert result["conflicts"] == []
    for name, want in maps.items():
        pin = pins[name]
        assert pin["status"] == "compatible", pin
        shown = json.loads(sh("bpftool", "map", "show", "pinned", pin["path"], "-j").stdout)
        assert (pin["id"], pin["type"], pin["key_size"], pin["value_size"], pin["max_entries"], pin["flags"]) == (
            shown["id"], shown["type"], shown["bytes_key"], shown["bytes_value"], shown["max_entries"], shown["flags"])
        assert pin["map_name"] == shown["name"]
        expected_max = min(want["max_entries"], NCPUS) if name == "cpu_map" else want["max_entries"]
        assert pin["expected"]["max_entries"] == expected_max == pin["max_entries"]
        # used_by: exactly the loaded programs whose map_ids hold this map
        users = {p["id"] for p in programs if pin["id"] in p["map_ids"]}
        assert {u["id"] for u in pin["used_by"]} == users
        assert users <= prog_ids
    assert pins["ip_to_shaper"]["key_type"] == "struct ip_prefix_key"
    assert pins["ip_to_shaper"]["value_type"] == "struct ip_hash_info"
    assert pins["ip_to_shaper"]["expected"]["sources"] == ["spec.expect.maps", "spec.pinned_maps", "object"]
    assert any(u["name"] == "xdp_shaper" for pin in pins.values() for u in pin["used_by"])
    # the object is closed: nothing uses the maps any more
    result = pinned_maps(bpffs, spec="reference", object=reference["object"])
    assert all(p["used_by"] == [] for p in result["pins"] if p["kind"] == "map")


def test_wrong_layouts_are_incompatible(bpffs, reference):
    m = reference["maps"]
    ip, hot, host, bridge = m["ip_to_shaper"], m["shaper_hotcache"], m["host_traffic"], m["bridge_redirect"]
    pin_map(bpffs, "ip_to_shaper", "lpm_trie", ip["key_size"] - 4, ip["value_size"], ip["max_entries"])
    pin_map(bpffs, "shaper_hotcache", "lru_hash", hot["key_size"], hot["value_size"] + 8, hot["max_entries"])
    pin_map(bpffs, "host_traffic", "hash", host["key_size"], host["value_size"], host["max_entries"])
    pin_map(bpffs, "bridge_redirect", "hash", bridge["key_size"], bridge["value_size"], bridge["max_entries"] // 2)
    pin_map(bpffs, "cpu_map", "cpumap", 4, 4, NCPUS)
    pin_map(bpffs, "stale_map", "array", 4, 4, 1)
    before = snapshot(bpffs)
    result = pinned_maps(bpffs, spec="reference", object=reference["object"])
    assert result["_rc"] == 0 and result["changed"] is False
    pins = by_name(result)
    assert pins["ip_to_shaper"]["differences"] == [
        {"attribute": "key_size", "expected": ip["key_size"], "actual": ip["key_size"] - 4,
         "sources": ["spec.pinned_maps", "object"]}]
    assert pins["shaper_hotcache"]["differences"] == [
        {"attribute": "value_size", "expected": hot["value_size"], "actual": hot["value_size"] + 8,
         "sources": ["spec.pinned_maps", "object"]}]
    assert pins["host_traffic"]["differences"] == [
        {"attribute": "type", "expected": "percpu_hash", "actual": "hash", "sources": ["object"]}]
    assert pins["bridge_redirect"]["differences"] == [
        {"attribute": "max_entries", "expected": bridge["max_entries"], "actual": bridge["max_entries"] // 2,
         "sources": ["object"]}]
    assert pins["bridge_redirect"]["reason"] == "max_entries: expected %d (object), pinned %d" % (
        bridge["max_entries"], bridge["max_entries"] // 2)
    for name in ("ip_to_shaper", "shaper_hotcache", "host_traffic", "bridge_redirect"):
        assert pins[name]["status"] == "incompatible"
    assert pins["cpu_map"]["status"] == "compatible"           # resized to the possible CPUs
    assert pins["stale_map"]["status"] == "unknown" and pins["stale_map"]["expected"] is None
    for name in ("flow_table", "cpus_available", "shaper_control", "bridge_vlan_map"):
        assert pins[name]["status"] == "missing" and pins[name]["kind"] is None
        assert pins[name]["expected"]["key_size"] == m[name]["key_size"]
    assert result["summary"] == {"total": 12, "compatible": 1, "incompatible": 4, "unknown": 1, "missing": 4,
                                 "not_a_map": 2, "vanished": 0, "unreadable": 0}
    assert snapshot(bpffs) == before   # an audit changes nothing


def test_program_pins_and_symlinks_are_never_touched(bpffs, reference, tmp_path):
    objpins = os.path.join(bpffs, "objpins")
    os.mkdir(objpins)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    with load_reference(reference, objpins) as lo:
        lo.pin_program("xdp_shaper", os.path.join(bpffs, "xdp_prog"))
        lo.pin_program("tc_classify", os.path.join(bpffs, "cpu_map"))     # an expected map name, held by a program
        prog_id = lo.prog_info("xdp_shaper")["id"]
    os.symlink(str(outside / "precious"), os.path.join(bpffs, "flow_table"))   # expected name, points outside
    os.symlink(os.path.join(objpins, "host_traffic"), os.path.join(bpffs, "alias"))
    os.symlink(str(outside), os.path.join(bpffs, "dirlink"))
    # an incompatible map, so the cleanup has something it may remove
    m = reference["maps"]["shaper_control"]
    pin_map(bpffs, "shaper_control", "array", m["key_size"], m["value_size"] * 2, m["max_entries"])
    before = snapshot(bpffs)

    result = pinned_maps(bpffs, spec="reference", object=reference["object"])
    assert result["_rc"] == 0, result
    pins = by_name(result)
    assert pins["xdp_prog"]["status"] == "not_a_map" and pins["xdp_prog"]["kind"] == "prog"
    assert pins["xdp_prog"]["id"] == prog_id and pins["xdp_prog"]["prog_name"] == "xdp_shaper"
    assert pins["xdp_prog"]["prog_type"] == "xdp"
    assert pins["cpu_map"]["status"] == "not_a_map" and pins["cpu_map"]["kind"] == "prog"
    assert pins["cpu_map"]["reason"].startswith("expected map cpu_map, but a pinned BPF prog, not a map")
    assert pins["flow_table"]["kind"] == "symlink" and pins["flow_table"]["status"] == "not_a_map"
    assert pins["flow_table"]["target"] == str(outside / "precious")
    assert "outside the pin root" in pins["flow_table"]["reason"]
    assert pins["alias"]["kind"] == "symlink" and "inside the pin root" in pins["alias"]["reason"]
    assert pins["dirlink"]["kind"] == "symlink"
    assert not any(name.startswith("dirlink/") for name in pins)            # never followed
    assert pins["objpins/host_traffic"]["status"] == "unknown"              # not where the object pins it
    assert pins["shaper_control"]["status"] == "incompatible"

    result = pinned_maps(bpffs, spec="reference", object=reference["object"], state="clean", approve=True,
                         backup_dir=str(tmp_path / "backups"))
    assert result["_rc"] == 0, result
    assert result["removed"] == [os.path.join(bpffs, "shaper_control")]
    after = snapshot(bpffs)
    del before["shaper_control"]
    assert after == before
    assert (outside / "precious").read_text() == "keep me"
    assert L.pinned_kind(os.path.join(bpffs, "xdp_prog")) == "prog"


def test_pin_that_vanishes_mid_audit(bpffs):
    for name in ("a", "b", "c"):
        pin_map(bpffs, name, "array", 4, 4, 1)
    victim = os.path.join(bpffs, "b")

    def hook(path):
        if path == victim:
            os.unlink(path)

    pins = {p["name"]: p for p in PA.audit(bpffs, {}, hook=hook)}
    assert pins["b"]["status"] == "vanished" and pins["b"]["kind"] is None
    assert pins["b"]["reason"] == "the pin disappeared while it was being audited"
    assert pins["a"]["status"] == pins["c"]["status"] == "unknown"
    assert PA.summarise(list(pins.values()))["vanished"] == 1

    # a pin swapped for a symlink between listing and reading it is reported as the symlink it now is
    victim = os.path.join(bpffs, "c")
    obj = {"maps": [{"name": "c", "type_name": "array", "key_size": 4, "value_size": 4, "max_entries": 1,
                     "flags": 0, "pinning": True}]}
    expectations = PE.expectations_from_object(obj)

    def swap(path):
        if path == victim:
            os.unlink(path)
            os.symlink("/nowhere", path)

    pins = {p["name"]: p for p in PA.audit(bpffs, expectations, hook=swap)}
    assert pins["c"]["status"] == "not_a_map" and pins["c"]["kind"] == "symlink"
    assert pins["c"]["target"] == "/nowhere"
    assert pins["c"]["reason"].startswith("expected map c, but symlink to /nowhere (outside the pin root)")


# --------------------------------------------------------------------------
# Cleanup and restore
# --------------------------------------------------------------------------

def _entries(n, key_size, value_size, salt):
    return [((i + 1).to_bytes(4, "little") + bytes(key_size - 4),
             bytes((i * 7 + salt + j) & 0xFF for j in range(value_size))) for i in range(n)]


def test_clean_gate_check_mode_backup_and_restore(bpffs, reference, tmp_path):
    m = reference["maps"]
    bridge, host, ctl = m["bridge_redirect"], m["host_traffic"], m["shaper_control"]
    bridge_entries = _entries(3, bridge["key_size"], bridge["value_size"], 1)
    stride = (host["value_size"] + 7) // 8 * 8
    host_entries = [(k, bytes((b + cpu) & 0xFF for cpu in range(NCPUS) for b in v + bytes(stride - len(v))))
                    for k, v in _entries(2, host["key_size"], host["value_size"], 5)]
    pin_map(bpffs, "bridge_redirect", "hash", bridge["key_size"], bridge["value_size"], bridge["max_entries"] // 2,
            bridge_entries)
    pin_map(bpffs, "host_traffic", "percpu_hash", host["key_size"], host["value_size"], host["max_entries"] // 4,
            host_entries)
    pin_map(bpffs, "shaper_control", "array", ctl["key_size"], ctl["value_size"] * 2, ctl["max_entries"],
            [(bytes(4), bytes(range(ctl["value_size"] * 2)))])
    backup_dir = str(tmp_path / "backups")
    common = dict(spec="reference", object=reference["object"], state="clean", backup_dir=backup_dir)
    before = snapshot(bpffs)
    assert sorted(M.map_entries(os.path.join(bpffs, "host_traffic"))) == sorted(host_entries)

    # 1. no approval: the exact plan, nothing changes
    plan = pinned_maps(bpffs, **common)
    assert plan["_rc"] == 0 and plan["changed"] is True
    assert [(a["action"], a["name"]) for a in plan["actions"]] == [
        ("remove", "bridge_redirect"), ("remove", "host_traffic"), ("remove", "shaper_control")]
    assert plan["actions"][0]["reason"] == "max_entries: expected %d (object), pinned %d" % (
        bridge["max_entries"], bridge["max_entries"] // 2)
    assert plan["removed"] == [] and plan["backups"] == []
    assert "approve is false" in plan["msg"]
    assert snapshot(bpffs) == before and not os.path.exists(backup_dir)

    # 2. check mode, even approved, changes nothing; diff shows before/after listings
    check = pinned_maps(bpffs, approve=True, check_mode=True, diff=True, **common)
    assert check["changed"] is True and check["removed"] == [] and "check mode" in check["msg"]
    assert "bridge_redirect: hash" in check["diff"]["before"]
    preload = sorted(n for n in os.listdir(bpffs) if n.endswith(".debug"))   # CONFIG_BPF_PRELOAD's, if any
    assert "bridge_redirect" not in check["diff"]["after"]
    assert all(n in check["diff"]["after"] for n in preload)
    assert snapshot(bpffs) == before and not os.path.exists(backup_dir)

    # 3. approved: backup, then unlink
    done = pinned_maps(bpffs, approve=True, diff=True, **common)
    assert done["_rc"] == 0 and done["changed"] is True, done
    paths = [os.path.join(bpffs, n) for n in ("bridge_redirect", "host_traffic", "shaper_control")]
    assert done["removed"] == paths
    assert not any(os.path.lexists(p) for p in paths)
    assert done["diff"]["after"] == "".join("%s: other [not_a_map]\n" % n for n in preload)
    assert stat.S_IMODE(os.stat(backup_dir).st_mode) == 0o700
    files = {b["name"]: b["file"] for b in done["backups"]}
    assert sorted(files) == ["bridge_redirect", "host_traffic", "shaper_control"]
    for name, path in files.items():
        assert os.path.dirname(path) == backup_dir and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as fh:
            doc = json.load(fh)
        assert doc["format"] == "lqos.bpf.map-backup/1"
        assert doc["pin"] == os.path.join(bpffs, name)
        assert doc["map"]["id"] == before[name][1]
        got = sorted((bytes.fromhex(e["key"]), bytes.fromhex(e["value"])) for e in doc["entries"])
        assert got == before[name][2]                              # byte for byte
    with open(files["host_traffic"]) as fh:
        layout = json.load(fh)["layout"]
    assert layout == {"key_size": host["key_size"], "value_size": host["value_size"], "percpu": True,
                      "value_stride": stride, "possible_cpus": NCPUS, "value_bytes": stride * NCPUS}

    # 4. idempotent
    again = pinned_maps(bpffs, approve=True, **common)
    assert again["changed"] is False and again["actions"] == [] and again["removed"] == []
    assert sorted(os.listdir(backup_dir)) == sorted(os.path.basename(f) for f in files.values())

    # 5. the new object pins compatible maps; restore the backups into them
    with load_reference(reference, bpffs):
        pass
    restore = dict(state="restored", restore_from=files["bridge_redirect"])
    target = os.path.join(bpffs, "bridge_redirect")
    assert M.map_entries(target) == []
    plan = pinned_maps(bpffs, **restore)
    assert plan["changed"] is True and plan["restored"]["entries_written"] == 0
    assert plan["actions"] == [{"action": "restore", "pin": target, "name": "bridge_redirect",
                                "backup": files["bridge_redirect"], "entries": 3,
                                "reason": "3 of 3 backup entries differ in the map"}]
    assert pinned_maps(bpffs, approve=True, check_mode=True, **restore)["changed"] is True
    assert M.map_entries(target) == []
    done = pinned_maps(bpffs, approve=True, diff=True, **restore)
    assert done["_rc"] == 0 and done["changed"] is True, done
    assert done["restored"]["entries_written"] == 3
    assert sorted(M.map_entries(target)) == sorted(bridge_entries)
    assert pinned_maps(bpffs, approve=True, **restore)["changed"] is False
    # The old option name still works, with a deprecation that names the new one.
    old = pinned_maps(bpffs, state="restored", backup=files["bridge_redirect"], approve=True)
    assert old["_rc"] == 0 and old["changed"] is False, old
    [deprecation] = old["deprecations"]
    # The raw module result: ansible-core 2.19 nests the message in an event, older ones keep it flat.
    msg = (deprecation.get("event") or deprecation).get("msg")
    collection = (deprecation.get("deprecator") or {}).get("resolved_name") or deprecation.get("collection_name")
    assert msg == "Alias 'backup' is deprecated. See the module docs for more information", deprecation
    assert deprecation["version"] == "1.0.0" and collection == "lqos.bpf", deprecation

    host_target = os.path.join(bpffs, "host_traffic")
    done = pinned_maps(bpffs, state="restored", restore_from=files["host_traffic"], approve=True)
    assert done["changed"] is True and done["restored"]["entries_written"] == 2
    assert sorted(M.map_entries(host_target)) == sorted(host_entries)

    # 6. a backup whose layout does not fit the new map is refused before anything is written
    ctl_target = os.path.join(bpffs, "shaper_control")
    ctl_before = M.map_entries(ctl_target)
    bad = pinned_maps(bpffs, state="restored", restore_from=files["shaper_control"], approve=True)
    assert bad["_rc"] == 1
    assert bad["msg"] == ("backup %s holds key_size %d / value_size %d, but map %s has key_size %d / value_size %d; "
                          "nothing was written. Fix: restore into a map with the same key and value layout (pin: NAME)."
                          % (files["shaper_control"], ctl["key_size"], ctl["value_size"] * 2, ctl_target,
                             ctl["key_size"], ctl["value_size"]))
    assert M.map_entries(ctl_target) == ctl_before


def test_restore_errors(bpffs, tmp_path):
    missing = str(tmp_path / "nope.json")
    result = pinned_maps(bpffs, state="restored", restore_from=missing, approve=True)
    assert result["msg"].startswith("backup file %s does not exist. Fix:" % missing)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    result = pinned_maps(bpffs, state="restored", restore_from=str(junk), approve=True)
    assert result["msg"].startswith("backup file %s is not valid JSON" % junk)
    result = pinned_maps(bpffs, state="restored")
    assert result["msg"] == "state is restored but all of the following are missing: restore_from"
    # a valid backup whose map is not pinned (yet)
    path = pin_map(bpffs, "m", "hash", 4, 4, 4, [(b"\1\0\0\0", b"abcd")])
    done = pinned_maps(bpffs, state="clean", approve=True, spec=_spec_with({"m": (4, 8)}),
                       backup_dir=str(tmp_path / "b"))
    assert done["removed"] == [path], done
    backup = done["backups"][0]["file"]
    result = pinned_maps(bpffs, state="restored", restore_from=backup, approve=True)
    assert result["msg"] == ("no map is pinned at %s to restore backup %s into. Fix: load the new object first so "
                             "it pins the map, or name another map with pin:." % (path, backup))
    # pin: elsewhere, confined to the pin root
    other = pin_map(bpffs, "other", "hash", 4, 4, 4)
    result = pinned_maps(bpffs, state="restored", restore_from=backup, pin="other", approve=True)
    assert result["changed"] is True and M.map_entries(other) == [(b"\1\0\0\0", b"abcd")]
    result = pinned_maps(bpffs, state="restored", restore_from=backup, pin="../etc", approve=True)
    assert result["msg"] == ("pin entry '../etc' leaves the pin root %s. Fix: name pins relative to pin_root, "
                             "without '..'." % bpffs)


def _spec_with(sizes):
    """The reference spec, its pinned_maps list replaced (as a mapping, the way a playbook may pass it)."""
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw = copy.deepcopy(raw)
    raw["expect"]["maps"] = list(sizes)
    raw["pinned_maps"] = [{"name": n, "key_size": k, "value_size": v} for n, (k, v) in sizes.items()]
    return raw


def test_backup_failure_never_unlinks(bpffs, tmp_path):
    # a queue map has no keys to walk: its backup must fail, and the pin must stay
    queue = pin_map(bpffs, "q", "queue", 0, 8, 4)
    M.map_update(queue, b"", b"12345678")
    result = pinned_maps(bpffs, state="clean", approve=True, spec=_spec_with({"q": (4, 8)}),
                         backup_dir=str(tmp_path / "b"))
    assert result["_rc"] == 1 and result["removed"] == [] and result["backups"] == []
    assert result["msg"].startswith("cleanup of %s incomplete: backing up %s failed: map %s is a queue map, which "
                                    "has no keys to walk" % (bpffs, queue, queue))
    assert "the pin was NOT removed" in result["msg"]
    assert L.pinned_kind(queue) == "map" and os.listdir(str(tmp_path / "b")) == []

    # an unusable backup_dir: nothing is removed
    path = pin_map(bpffs, "m", "hash", 4, 4, 4, [(b"\1\0\0\0", b"abcd")])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = _spec_with({"m": (4, 8)})
    result = pinned_maps(bpffs, state="clean", approve=True, spec=spec, backup_dir=str(blocker / "sub"))
    assert result["msg"] == ("cannot create backup_dir %s: Not a directory; nothing was removed. Fix: give a "
                             "writable folder on a persistent filesystem." % (blocker / "sub"))
    result = pinned_maps(bpffs, state="clean", approve=True, spec=spec, backup_dir=os.path.join(bpffs, "bk"))
    assert result["msg"].startswith("backup_dir %s is inside the bpffs mounted at %s, which holds only pins, never "
                                    "files; nothing was changed." % (os.path.join(bpffs, "bk"), bpffs))
    assert M.map_entries(path) == [(b"\1\0\0\0", b"abcd")]


@pytest.mark.parametrize("state", ["audited", "clean", "restored", "migrated", "committed", "rolled_back"])
def test_backup_dir_in_the_bpffs_is_refused_before_anything_is_created(bpffs, tmp_path, reference, state):
    """Directly or through a symlinked folder, in every state (migrated accepted it; clean refused it only after
    creating the folder in the bpffs)."""
    pin_map(bpffs, "m", "hash", 4, 4, 4, [(b"\1\0\0\0", b"abcd")])
    link = tmp_path / "link"
    os.symlink(bpffs, str(link))
    extra = dict(restored=dict(restore_from=str(tmp_path / "none.json")),
                 migrated=dict(object=reference["object"], spec="reference"))
    before = snapshot(bpffs)
    for backup_dir, via in ((os.path.join(bpffs, "bk", "deeper"), ""),
                            (str(link / "bk"), " (through a symlink, it is %s)" % os.path.join(bpffs, "bk"))):
        result = pinned_maps(bpffs, state=state, approve=True, backup_dir=backup_dir, **extra.get(state, {}))
        assert result["failed"] is True and result.get("changed", False) is False, result
        assert result["msg"] == (
            "backup_dir %s is inside the bpffs mounted at %s%s, which holds only pins, never files; nothing was "
            "changed. Fix: give a folder on a persistent filesystem, e.g. /var/lib/lqos-bpf/map-backups."
            % (backup_dir, bpffs, via))
        assert snapshot(bpffs) == before


def test_maps_option_limits_audit_and_cleanup(bpffs, tmp_path):
    spec = _spec_with({"m1": (4, 8), "m2": (4, 8), "m3": (4, 8)})
    one = pin_map(bpffs, "m1", "hash", 4, 4, 4)
    two = pin_map(bpffs, "m2", "hash", 4, 4, 4)
    result = pinned_maps(bpffs, spec=spec, maps=["m2", "m3", "nothing"])
    assert [(p["name"], p["status"]) for p in result["pins"]] == [
        ("m2", "incompatible"), ("m3", "missing"), ("nothing", "missing")]
    result = pinned_maps(bpffs, spec=spec, maps=["m2"], state="clean", approve=True, backup_dir=str(tmp_path / "b"))
    assert result["removed"] == [two]
    assert L.pinned_kind(one) == "map" and not os.path.lexists(two)
    result = pinned_maps(bpffs, spec=spec, maps=["/etc/passwd"])
    assert result["msg"] == ("maps entry '/etc/passwd' is outside pin_root %s. Fix: name pins relative to pin_root, "
                             "e.g. map_traffic." % bpffs)


def test_spec_only_libreqos_list(bpffs):
    """The built-in libreqos spec lists no pins (they come from each release's object);
    an explicit list added to it, like lqos_kernel.rs's, decides alone without an object."""
    with open(os.path.join(REPO, "bpf", "specs", "libreqos.yml")) as fh:
        raw = yaml.safe_load(fh)
    assert "pinned_maps" not in raw and "expect" not in raw
    raw["pinned_maps"] = [{"name": "map_traffic", "key_size": 16, "value_size": 128},
                          {"name": "flowbee", "key_size": 40, "value_size": 240},
                          {"name": "map_ip_to_cpu_and_tc", "key_size": 20, "value_size": 24}]
    pin_map(bpffs, "map_traffic", "percpu_hash", 16, 120, 8)
    pin_map(bpffs, "flowbee", "lru_hash", 40, 240, 8)
    result = pinned_maps(bpffs, spec=raw)
    pins = by_name(result)
    assert pins["map_traffic"]["status"] == "incompatible"
    assert pins["map_traffic"]["differences"] == [
        {"attribute": "value_size", "expected": 128, "actual": 120, "sources": ["spec.pinned_maps"]}]
    assert pins["flowbee"]["status"] == "compatible"
    assert pins["map_ip_to_cpu_and_tc"]["status"] == "missing"
    assert result["summary"]["missing"] == 1


def test_spec_object_conflict_refuses_cleanup(bpffs, reference, tmp_path):
    m = reference["maps"]["bridge_redirect"]
    path = pin_map(bpffs, "bridge_redirect", "hash", m["key_size"], m["value_size"], 1)
    spec = _spec_with({"bridge_redirect": (m["key_size"] + 4, m["value_size"])})
    result = pinned_maps(bpffs, spec=spec, object=reference["object"])
    assert result["conflicts"] == [{"map": "bridge_redirect", "attribute": "key_size",
                                    "values": {"spec.pinned_maps": m["key_size"] + 4, "object": m["key_size"]}}]
    # ansible-core >= 2.19 returns warnings as structured events; older ones as strings
    assert "expectations disagree: map bridge_redirect key_size: object says %d, spec.pinned_maps says %d" % (
        m["key_size"], m["key_size"] + 4) in json.dumps(result.get("warnings"))
    result = pinned_maps(bpffs, spec=spec, object=reference["object"], state="clean", approve=True,
                         backup_dir=str(tmp_path / "b"))
    assert result["_rc"] == 1
    assert result["msg"] == (
        "the spec and the object disagree about map bridge_redirect key_size: object says %d, spec.pinned_maps says "
        "%d; refusing to remove pins while the expectations contradict each other. Fix: fix the spec's pinned_maps "
        "(or rebuild the object) so both agree, then run again." % (m["key_size"], m["key_size"] + 4))
    assert L.pinned_kind(path) == "map"
    # without the object, the spec alone decides
    result = pinned_maps(bpffs, spec=spec, object=reference["object"], derive_from_object=False)
    assert result["conflicts"] == [] and by_name(result)["bridge_redirect"]["status"] == "incompatible"
