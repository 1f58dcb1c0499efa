"""deploy.yml across a layout upgrade: the map entries survive the upgrade and its rollback.

One local host (its own netns pair and bpffs, like test_playbooks.py). v1 is the
reference crate; v2 changes two layouts in C and in the Rust mirrors alike (the
flow value gains ``retransmits``, the IP -> CPU value's ``cpu`` widens to 64 bits),
with a spec whose ``pinned_maps`` sizes follow. After v1 is deployed its
``ip_to_shaper`` map is filled; a v2 deploy whose probe nobody answers is rolled
back by the role (old maps at their names, same ids and entries, v1's program on the
hook); a v2 deploy that passes the health check keeps every entry in the new layout
and commits the old maps to backups. Last, a stale pin is planted over the live
``ip_to_shaper`` (the programs keep their map by fd) and v2 is deployed again: the
live map takes its name back, entries and all, and the planted map is backed up.
"""
from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys

import pytest

from lqos_testlib import umount
from variants import make_v2
from test_playbooks import Host, playbook, write_inventory, xdp_on

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

pytestmark = pytest.mark.usefixtures("tools")

N = 1000


def ip_key(i):
    return struct.pack("<I16s", 128, b"\0" * 10 + b"\xff\xff" + struct.pack(">I", 0x64400000 + i))


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("deploy_migrate"))
    crate_v2, spec_v2 = make_v2(root)
    host = Host(root, "shaper")
    host.create()
    # No bpffs at the pin root yet: the first deploy mounts it (the build's preflight found none there).
    umount(host.pin_root)
    try:
        inv = write_inventory(os.path.join(root, "v1.yml"), [host], sys.executable)
        # A plan first: the mount is a live change too, only listed without approval.
        runs = {"plan": playbook("deploy.yml", inv)}
        plan_mounted = os.path.ismount(host.pin_root)
        runs["v1"] = playbook("deploy.yml", inv, "-e", "lqos_bpf_approve=true")
        ip = os.path.join(host.pin_root, "ip_to_shaper")
        for i in range(N):
            M.map_update(ip, ip_key(i), struct.pack("<IIQQ", i % 4, 0x10000 + i, i * 3, i * 5))
        state = {"plan_mounted": plan_mounted,
                 "v1_xdp": xdp_on(host.pair.ns_a, host.pair.if_a), "v1_id": M.map_info_by_path(ip)["id"],
                 "v1_entries": dict(M.map_entries(ip))}
        host.vars.update({"lqos_bpf_src": crate_v2, "lqos_bpf_spec": spec_v2,
                          "lqos_bpf_probe_target": host.pair.ip_b.rsplit(".", 1)[0] + ".99"})
        inv = write_inventory(os.path.join(root, "v2-bad.yml"), [host], sys.executable)
        runs["v2_bad"] = playbook("deploy.yml", inv, "-e", "lqos_bpf_approve=true")
        state["after_bad"] = {"xdp": xdp_on(host.pair.ns_a, host.pair.if_a), "id": M.map_info_by_path(ip)["id"],
                              "entries": dict(M.map_entries(ip)), "pins": sorted(os.listdir(host.pin_root)),
                              "backups": os.path.exists(os.path.join(host.state_dir, "map-backups"))}
        host.vars["lqos_bpf_probe_target"] = host.pair.ip_b
        inv = write_inventory(os.path.join(root, "v2-good.yml"), [host], sys.executable)
        runs["v2_good"] = playbook("deploy.yml", inv, "-e", "lqos_bpf_approve=true")
        state["after_good"] = {"xdp": xdp_on(host.pair.ns_a, host.pair.if_a), "entries": dict(M.map_entries(ip)),
                               "pins": sorted(os.listdir(host.pin_root)),
                               "backups": sorted(os.listdir(os.path.join(host.state_dir, "map-backups")))}
        live_id = M.map_info_by_path(ip)["id"]
        os.unlink(ip)
        fd = M.map_create("lpm_trie", 20, 40, 1024, name="ip_to_shaper")
        try:
            L.obj_pin(fd, ip)
        finally:
            os.close(fd)
        M.map_update(ip, ip_key(0), b"\x5a" * 40)
        runs["drift"] = playbook("deploy.yml", inv, "-e", "lqos_bpf_approve=true")
        state["after_drift"] = {"live_id": live_id, "id": M.map_info_by_path(ip)["id"],
                                "entries": dict(M.map_entries(ip)), "pins": sorted(os.listdir(host.pin_root)),
                                "backups": sorted(os.listdir(os.path.join(host.state_dir, "map-backups")))}
        yield {"host": host, "runs": runs, "state": state}
    finally:
        host.destroy()


def test_the_first_deploy_mounts_bpffs_at_the_pin_root(upgrade):
    runs, host = upgrade["runs"], upgrade["host"]
    # The plan without approval mounted nothing and listed the mount, with the attach planned behind it.
    plan = runs["plan"]
    assert plan.rc == 0, plan
    assert {t.split(" : ")[0] for t in plan.changed_tasks["shaper"]} == {"lqos.bpf.build"}, plan.changed_tasks
    assert upgrade["state"]["plan_mounted"] is False
    [summary] = [d["msg"] for status, h, item, d in plan.results if h == "localhost" and item == "shaper"]
    assert summary[0] == "plan only (lqos_bpf_approve is false): no live change was made", summary
    assert "mount bpffs at %s" % host.pin_root in summary, summary
    assert "attach on %s (the exact pins and hooks are planned once the build and the bpffs exist)" \
        % host.pair.if_a in summary, summary
    assert "lqos.bpf.toolchain : Mount bpffs" in runs["v1"].changed_tasks["shaper"], runs["v1"]
    # ... and the approved summary lists it first, with the live changes it came with.
    [done] = [d["msg"] for status, h, item, d in runs["v1"].results if h == "localhost" and item == "shaper"]
    assert done[:2] == ["approved (lqos_bpf_approve=true): these live changes were made",
                        "mount bpffs at %s" % host.pin_root], done
    assert "lqos.bpf.toolchain : Mount bpffs" not in runs["v2_good"].ran_tasks["shaper"], runs["v2_good"]
    # The v1 maps were pinned in that bpffs, not in a plain folder.
    fstype = subprocess.run(["stat", "-f", "-c", "%T", host.pin_root], capture_output=True, text=True, check=True)
    assert fstype.stdout.strip() == "bpf_fs"
    # Owner only, as systemd mounts /sys/fs/bpf (the kernel always adds the sticky bit), not the default 1777.
    assert stat.S_IMODE(os.stat(host.pin_root).st_mode) & 0o777 == 0o700
    assert "ip_to_shaper" in os.listdir(host.pin_root)


def test_a_failed_upgrade_puts_the_old_maps_back_with_every_entry(upgrade):
    run, state = upgrade["runs"]["v2_bad"], upgrade["state"]
    assert upgrade["runs"]["v1"].recap["shaper"]["failed"] == 0, upgrade["runs"]["v1"]
    # The failed health check is noted, not failed: the host fails once, after the rollback (no rescue).
    assert run.recap["shaper"]["failed"] == 1 and run.recap["shaper"]["rescued"] == 0, run
    [failure] = run.failures("shaper")
    assert "health check failed" in failure["msg"] and "Rolled back to build" in failure["msg"], failure
    bad = state["after_bad"]
    assert bad["id"] == state["v1_id"]                      # the same live map, at its name
    assert bad["entries"] == state["v1_entries"]            # every entry, old layout
    assert len(bad["entries"]) == N
    assert bad["xdp"]["tag"] == state["v1_xdp"]["tag"]       # v1's program re-attached
    assert "lqos_bpf_aside" not in bad["pins"]
    assert bad["backups"] is False                          # nothing committed


def test_a_passed_upgrade_keeps_every_entry_in_the_new_layout_and_commits(upgrade):
    run, state = upgrade["runs"]["v2_good"], upgrade["state"]
    assert run.recap["shaper"]["failed"] == 0, run
    good = state["after_good"]
    assert good["xdp"]["tag"] != state["v1_xdp"]["tag"]
    for key, old in state["v1_entries"].items():
        assert struct.unpack("<QI4xQQ", good["entries"][key]) == struct.unpack("<IIQQ", old)
    assert "lqos_bpf_aside" not in good["pins"]
    names = {b.split(".", 1)[0] for b in good["backups"]}
    assert {"ip_to_shaper", "flow_table", "shaper_hotcache"} <= names, good["backups"]
    backup = [b for b in good["backups"] if b.startswith("ip_to_shaper.")][0]
    with open(os.path.join(upgrade["host"].state_dir, "map-backups", backup)) as fh:
        doc = json.load(fh)
    assert doc["entry_count"] == N and doc["types"]["value"]["members"][0]["shape"]["size"] == 4
    assert L.pinned_kind(os.path.join(upgrade["host"].pin_root, "ip_to_shaper")) == "map"


def test_a_stale_pin_over_the_live_map_gives_the_name_back_to_the_live_map(upgrade):
    run, state, host = upgrade["runs"]["drift"], upgrade["state"], upgrade["host"]
    assert run.recap["shaper"]["failed"] == 0, run
    drift = state["after_drift"]
    assert drift["id"] == drift["live_id"]                   # not a new, empty map
    assert drift["entries"] == state["after_good"]["entries"]
    assert "lqos_bpf_aside" not in drift["pins"]
    planted = sorted(set(drift["backups"]) - set(state["after_good"]["backups"]))
    assert len(planted) == 1 and planted[0].startswith("ip_to_shaper."), drift["backups"]
    with open(os.path.join(host.state_dir, "map-backups", planted[0])) as fh:
        doc = json.load(fh)
    assert doc["layout"]["value_size"] == 40 and doc["entry_count"] == 1
    [summary] = [d["msg"] for status, h, item, d in run.results if h == "localhost" and item == "shaper"]
    ip = os.path.join(host.pin_root, "ip_to_shaper")
    assert summary[1:] == [
        "re-pin live map ip_to_shaper (id %d) at %s, the map the attached programs use; the incompatible map "
        "pinned there (id %d) stays pinned aside until the health check passes, then is backed up to %s/map-backups"
        % (drift["live_id"], ip, doc["map"]["id"], host.state_dir)], summary
