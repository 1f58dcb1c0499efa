"""deploy.yml and audit.yml, run with ansible-playbook against local "hosts".

Every host is ``ansible_connection: local`` but has its own network namespace
pair (veth between them), its own private bpffs as pin root and its own state
folders, so the hosts are as separate as the kernel allows on one machine:

- ``good``: a healthy shaper (the canary);
- ``stale``: carries a stale, incompatible ``host_traffic`` pin (old layout);
- ``flaky``: healthy at first; later redeployed with a changed program and a
  probe target that never answers, so its health check fails and it is
  rolled back;
- ``nochain``: its PATH lacks clang, so the preflight stops it.

The runs are few and shared (module-scoped fixtures): plan, audit, deploy,
deploy again, the failing redeploy; plus the embedded default (no inventory)
with its sandbox. Kernel state is checked through libbpf in this process.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from lqos_testlib import REPO, NetnsPair, copy_bpf, edit, module_prefix, mount_bpffs, run_module, sh, umount

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._common import sha256_file

pytestmark = pytest.mark.usefixtures("tools")

PLAYBOOK_TIMEOUT = 900
STALE_VALUE_SIZE = 128   # host_traffic's value was 128 bytes in the "old" layout; the object says 112
RESULT = re.compile(r"^(ok|changed|fatal|failed|skipping): \[([^\]]+)\](?:: [A-Z!]+)?(?: => \(item=(.*?)\))? => (\{.*\})$")
TASK = re.compile(r"^TASK \[(.*)\] \**$")
CHANGED = re.compile(r"^changed: \[([^\]]+)\]")
RAN = re.compile(r"^(?:ok|changed): \[([^\]]+)\]")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)"
                   r"\s+rescued=(\d+)\s+ignored=(\d+)")


class Run:
    """One ansible-playbook run: rc, output, per-host results and recap."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.results = []
        self.recap = {}
        self.changed_tasks = {}  # host -> names of the tasks that reported changed there
        self.ran_tasks = {}  # host -> names of the tasks that ran there (ok or changed, not skipped)
        task = None
        for line in proc.stdout.splitlines():
            m = TASK.match(line)
            if m:
                task = m.group(1)
            m = RAN.match(line)
            if m:
                self.ran_tasks.setdefault(m.group(1).split(" -> ")[0], set()).add(task)
            m = CHANGED.match(line)  # without -v a changed result is one line, without its JSON
            if m:
                self.changed_tasks.setdefault(m.group(1).split(" -> ")[0], set()).add(task)
            m = RESULT.match(line)
            if m:
                try:
                    data = json.loads(m.group(4))
                except ValueError:
                    continue
                self.results.append((m.group(1), m.group(2).split(" -> ")[0], m.group(3), data))
            m = RECAP.match(line)
            if m:
                keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
                self.recap[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:])))

    def failures(self, host: str) -> list:
        return [d for status, h, _item, d in self.results if h == host and status in ("fatal", "failed")]

    def __repr__(self):
        return "<run rc=%d>\n%s" % (self.rc, self.out[-6000:])


def playbook(name: str, inventory: str | None, *extra: str, env: dict | None = None) -> Run:
    full_env = dict(os.environ)
    full_env.update({
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    })
    full_env.update(env or {})
    argv = module_prefix() + [shutil.which("ansible-playbook"), name]   # the staged refusal in that pass
    if inventory:
        argv += ["-i", inventory]
    argv += list(extra)
    proc = subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT,
                          check=False)
    return Run(proc)


def xdp_on(ns: str, ifname: str) -> dict:
    """XDP attach mode, program id and tag on an interface inside a netns."""
    with H.netns(ns):
        q = H.xdp_query(H.ifindex(ifname))
    if not q["prog_id"]:
        return {"mode": q["attach_mode"], "id": 0, "tag": None, "name": None}
    info = M.prog_info_by_id(q["prog_id"])
    return {"mode": q["attach_mode"], "id": q["prog_id"], "tag": info["tag"], "name": info["name"]}


def current_build(state_dir: str) -> str:
    return os.path.basename(os.path.realpath(os.path.join(state_dir, "reference", "current")))


# ---------------------------------------------------------------------------
# The local fleet
# ---------------------------------------------------------------------------

class Host:
    def __init__(self, root: str, name: str):
        self.name = name
        self.dir = os.path.join(root, name)
        self.pin_root = os.path.join(self.dir, "bpffs")
        self.state_dir = os.path.join(self.dir, "state")
        self.attach_dir = os.path.join(self.dir, "attach")
        self.pair = NetnsPair("lqp" + uuid.uuid4().hex[:6])
        self.vars = {}

    def create(self) -> None:
        os.makedirs(self.pin_root)
        mount_bpffs(self.pin_root)
        self.pair.create()

    def destroy(self) -> None:
        self.pair.destroy()
        umount(self.pin_root)

    def inventory_vars(self, python: str) -> dict:
        v = {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "lqos_bpf_pin_root": self.pin_root,
            "lqos_bpf_state_dir": self.state_dir,
            "lqos_bpf_attach_state_dir": self.attach_dir,
            "lqos_bpf_interfaces": [{"name": self.pair.if_a, "netns": self.pair.ns_a, "xdp_mode": "auto"}],
            "lqos_bpf_probe_target": self.pair.ip_b,
        }
        v.update(self.vars)
        return v


def write_inventory(path: str, hosts: list, python: str) -> str:
    doc = {"all": {"hosts": {h.name: h.inventory_vars(python) for h in hosts}}}
    with open(path, "w") as fh:
        yaml.safe_dump(doc, fh, sort_keys=False)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tools):
    """Four local hosts, the controller sources (v1 = bpf/, v2 = a changed XDP program) and the runs."""
    root = str(tmp_path_factory.mktemp("fleet"))
    crate_v2 = copy_bpf(os.path.join(root, "src_v2"))
    # A different XDP program (another tag), same ABI: the Rust mirrors still match.
    edit(os.path.join(crate_v2, "src", "bpf", "shaper_kern.c"),
         "if (attach_ifindex > 0 && ctx->ingress_ifindex", "if (attach_ifindex > 1 && ctx->ingress_ifindex")

    hosts = {n: Host(root, n) for n in ("good", "stale", "flaky", "nochain")}
    # nochain: every tool of the chain but clang.
    nochain_bin = os.path.join(root, "nochain-bin")
    os.makedirs(nochain_bin)
    for tool in ("llc", "bpftool", "bindgen", "ar"):
        os.symlink(shutil.which(tool), os.path.join(nochain_bin, tool))
    hosts["nochain"].vars["lqos_bpf_toolchain_path"] = nochain_bin
    created = []
    try:
        for h in hosts.values():
            h.create()
            created.append(h)
        # stale: the old layout of host_traffic (value 128 bytes, the object has 112), with one entry.
        fd = M.map_create("percpu_hash", 16, STALE_VALUE_SIZE, 64, name="host_traffic")
        try:
            L.obj_pin(fd, os.path.join(hosts["stale"].pin_root, "host_traffic"))
        finally:
            os.close(fd)
        M.map_update(os.path.join(hosts["stale"].pin_root, "host_traffic"), b"\x0a" * 16, b"\x07" * STALE_VALUE_SIZE)
        stale_id = M.map_info_by_path(os.path.join(hosts["stale"].pin_root, "host_traffic"))["id"]

        order = [hosts[n] for n in ("good", "stale", "flaky", "nochain")]
        inventory = write_inventory(os.path.join(root, "inventory.yml"), order, sys.executable)
        # 4 hosts in batches [1, 25%, 100%] = [good], [stale], [flaky, nochain]: nochain's preflight failure
        # is half of the last batch, so the threshold is raised to let flaky finish next to it.
        common = ("-e", "lqos_bpf_max_fail_percentage=50")
        runs = {"plan": playbook("deploy.yml", inventory, *common)}
        runs["plan_state"] = {
            "good_xdp": xdp_on(hosts["good"].pair.ns_a, hosts["good"].pair.if_a),
            "good_pins": sorted(os.listdir(hosts["good"].pin_root)),
            "stale_id": M.map_info_by_path(os.path.join(hosts["stale"].pin_root, "host_traffic"))["id"],
            "stale_backups": os.path.exists(os.path.join(hosts["stale"].state_dir, "map-backups")),
        }
        report1 = os.path.join(root, "report-before")
        runs["audit"] = playbook("audit.yml", inventory, "-e", "lqos_bpf_report_dir=" + report1)
        runs["deploy"] = playbook("deploy.yml", inventory, *common, "-e", "lqos_bpf_approve=true")
        runs["deployed"] = {n: xdp_on(h.pair.ns_a, h.pair.if_a) for n, h in hosts.items()}
        runs["flaky_build_v1"] = current_build(hosts["flaky"].state_dir)
        runs["again"] = playbook("deploy.yml", inventory, *common, "-e", "lqos_bpf_approve=true")
        runs["again_state"] = {n: xdp_on(h.pair.ns_a, h.pair.if_a) for n, h in hosts.items()}
        # flaky first (the canary), with v2 sources and a probe target nobody answers.
        hosts["flaky"].vars.update({"lqos_bpf_src": crate_v2,
                                    "lqos_bpf_probe_target": hosts["flaky"].pair.ip_b.rsplit(".", 1)[0] + ".99"})
        inventory2 = write_inventory(os.path.join(root, "inventory-canary.yml"),
                                     [hosts["flaky"], hosts["good"], hosts["stale"], hosts["nochain"]],
                                     sys.executable)
        runs["canary"] = playbook("deploy.yml", inventory2, "-e", "lqos_bpf_approve=true")
        yield {"root": root, "hosts": hosts, "runs": runs, "report_before": report1, "stale_id": stale_id}
    finally:
        for h in created:
            h.destroy()


# ---------------------------------------------------------------------------
# Plan mode
# ---------------------------------------------------------------------------

def test_plan_mode_changes_nothing_live_and_prints_the_per_host_summary(fleet):
    run, state, hosts = fleet["runs"]["plan"], fleet["runs"]["plan_state"], fleet["hosts"]
    assert run.recap["good"]["failed"] == 0, run
    assert run.recap["stale"]["failed"] == 0, run
    assert run.recap["flaky"]["failed"] == 0, run
    # Nothing live: no XDP program, no pin but the kernel's own preload entries, the stale pin untouched.
    assert state["good_xdp"]["id"] == 0
    assert set(state["good_pins"]) <= {"maps.debug", "progs.debug"}
    assert state["stale_id"] == fleet["stale_id"]
    assert state["stale_backups"] is False
    summary = {item: d["msg"] for status, h, item, d in run.results
               if h == "localhost" and item in ("good", "stale", "flaky", "nochain")}
    plan_line = "plan only (lqos_bpf_approve is false): no live change was made"
    assert summary["good"][0] == plan_line
    assert any(line.startswith("attach XDP program xdp_shaper to %s" % hosts["good"].pair.if_a)
               for line in summary["good"]), summary["good"]
    stale_pin = os.path.join(hosts["stale"].pin_root, "host_traffic")
    assert summary["stale"][0] == plan_line
    assert any(line.startswith("replace incompatible map pin %s, the new map starts empty (value value: 128 bytes "
                               "before, 112 after, and no BTF" % stale_pin)
               and line.endswith("backed up to %s/map-backups" % hosts["stale"].state_dir)
               for line in summary["stale"]), summary["stale"]
    assert "attach on %s once the incompatible pins are replaced" % hosts["stale"].pair.if_a in summary["stale"]
    assert summary["nochain"] == ["no summary: the host failed or was not reached (see its tasks above)"]
    # changed = changed on the host: the sync and the build really ran; the planned pins and hooks are no change.
    for name in ("good", "stale", "flaky"):
        assert {t.split(" : ")[0] for t in run.changed_tasks[name]} == {"lqos.bpf.build"}, run.changed_tasks
    # The plan is printed once, by the summary play.
    assert run.out.count("replace incompatible map pin %s" % stale_pin) == 1, run


def test_preflight_stops_the_host_without_clang_with_its_own_message(fleet):
    for key in ("plan", "deploy", "again"):
        run = fleet["runs"][key]
        assert run.rc == 2, run
        assert run.recap["nochain"]["failed"] == 1, run
        [failure] = fleet["runs"][key].failures("nochain")
        assert failure["msg"] == ("preflight found 1 problem(s) on this host:\n"
                                  "- clang: clang not found in PATH. Fix: apt-get install clang"), failure
    assert not os.path.exists(os.path.join(fleet["hosts"]["nochain"].state_dir, "reference"))


# ---------------------------------------------------------------------------
# Audit before the deploy: the stale pin drifts
# ---------------------------------------------------------------------------

def test_audit_flags_the_stale_pin_and_exits_non_zero(fleet):
    run, hosts = fleet["runs"]["audit"], fleet["hosts"]
    assert run.rc == 2, run
    [failure] = run.failures("good")  # run_once: the report task runs (and fails) on the first host
    assert "1 drift finding(s) on stale" in failure["msg"], failure
    with open(os.path.join(fleet["report_before"], "fleet-abi-report.json")) as fh:
        report = json.load(fh)
    assert report["ok"] is False
    assert report["drifted_hosts"] == ["stale"]
    status = {h: row["status"] for h, row in report["hosts"].items()}
    # Before the deploy: built and checked, nothing attached - not "ok".
    assert status == {"good": "built", "stale": "drift", "flaky": "built", "nochain": "not_built"}
    assert report["spec"] == "reference" and report["collection"]["name"] == "lqos.bpf"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", report["generated_at"]), report["generated_at"]
    [drift] = report["drift"]
    assert drift["host"] == "stale" and drift["kind"] == "pin" and drift["subject"] == "host_traffic"
    assert "value_size" in drift["detail"] and str(STALE_VALUE_SIZE) in drift["detail"]
    # Groups: one per (object hash, status); every host is in exactly one.
    grouped = sorted(h for g in report["groups"] for h in g["hosts"])
    assert grouped == sorted(hosts)
    for g in report["groups"]:
        for h in g["hosts"]:
            assert report["hosts"][h]["object_sha256"] == g["object_sha256"]
            assert report["hosts"][h]["status"] == g["status"]
    with open(os.path.join(fleet["report_before"], "fleet-abi-report.md")) as fh:
        md = fh.read()
    assert "| stale | pin | host_traffic |" in md
    with open(os.path.join(fleet["report_before"], "fleet-abi-report.html")) as fh:
        page = fh.read()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "host_traffic" in page


# ---------------------------------------------------------------------------
# Approved deploy
# ---------------------------------------------------------------------------

def test_approved_deploy_attaches_and_cleans_the_stale_pin_with_a_backup(fleet):
    run, hosts, deployed = fleet["runs"]["deploy"], fleet["hosts"], fleet["runs"]["deployed"]
    for name in ("good", "stale", "flaky"):
        assert run.recap[name]["failed"] == 0, run
        assert deployed[name]["name"] == "xdp_shaper", deployed
        record = json.load(open(os.path.join(hosts[name].state_dir, "reference", "deployed.json")))
        assert record["interfaces"][0]["xdp"]["tag"] == deployed[name]["tag"]
    assert deployed["nochain"]["id"] == 0
    stale = hosts["stale"]
    info = M.map_info_by_path(os.path.join(stale.pin_root, "host_traffic"))
    assert info["id"] != fleet["stale_id"]
    assert (info["key_size"], info["value_size"]) == (16, 112)
    backups = os.listdir(os.path.join(stale.state_dir, "map-backups"))
    assert len(backups) == 1 and backups[0].startswith("host_traffic."), backups
    with open(os.path.join(stale.state_dir, "map-backups", backups[0])) as fh:
        backup = json.load(fh)
    assert backup["pin"] == os.path.join(stale.pin_root, "host_traffic")
    assert backup["layout"]["value_size"] == STALE_VALUE_SIZE
    assert backup["entry_count"] == 1
    assert backup["entries"][0]["key"] == "0a" * 16


def test_second_deploy_changes_nothing(fleet):
    run = fleet["runs"]["again"]
    for name in ("good", "stale", "flaky"):
        assert run.recap[name]["changed"] == 0, run
        assert run.recap[name]["failed"] == 0, run
    # The same programs (same ids: nothing was reloaded) on every interface.
    assert fleet["runs"]["again_state"] == fleet["runs"]["deployed"]
    # An unchanged host costs a handful of round trips: nothing is unpacked or mounted; one call preflights the
    # toolchain, compares the stamp of the last unpack, finds the build unchanged and checks it (ABI, record, trial
    # load); the attach runs the pin step itself.
    ran = run.ran_tasks["good"]
    for task in ("lqos.bpf.build : Unpack the crate and its sibling Rust roots", "lqos.bpf.toolchain : Mount bpffs"):
        assert task not in ran, ran
    calls = ("Preflight", "Build the pipeline", "Audit the pinned", "Attach")
    modules = [t for t in ran if t.split(" : ")[-1].startswith(calls)]
    assert len(modules) == 2, sorted(modules)
    assert not [t for t in modules if "Audit the pinned" in t], modules


def test_failed_health_check_rolls_the_canary_back_and_stops_the_rollout(fleet):
    run, hosts = fleet["runs"]["canary"], fleet["hosts"]
    flaky = hosts["flaky"]
    assert run.rc == 2, run
    # The failed health check is noted, not failed (no rescue): the host fails once, at the end of the rollback.
    assert run.recap["flaky"]["failed"] == 1 and run.recap["flaky"]["rescued"] == 0, run
    # The canary failed: no other host was touched.
    assert set(run.recap) == {"localhost", "flaky"}, run.recap
    v1 = fleet["runs"]["flaky_build_v1"]
    [failure] = run.failures("flaky")  # one failure: the health check's reason with the rollback's outcome
    assert failure["msg"].startswith("deploy of "), failure
    assert "no reply through %s" % flaky.pair.if_a in failure["msg"]
    assert "Rolled back to build %s and re-attached it." % v1 in failure["msg"]
    # The previous build is current again and its program (tag) is back on the interface.
    assert current_build(flaky.state_dir) == v1
    now = xdp_on(flaky.pair.ns_a, flaky.pair.if_a)
    before = fleet["runs"]["deployed"]["flaky"]
    assert now["name"] == "xdp_shaper"
    assert now["tag"] == before["tag"]
    assert now["id"] != before["id"]
    record = json.load(open(os.path.join(flaky.state_dir, "reference", "deployed.json")))
    assert record["build_id"] == v1 and record["interfaces"][0]["xdp"]["tag"] == before["tag"]
    # Other hosts keep what they had.
    assert xdp_on(hosts["good"].pair.ns_a, hosts["good"].pair.if_a)["id"] == fleet["runs"]["deployed"]["good"]["id"]


# ---------------------------------------------------------------------------
# The embedded default: no inventory, a sandbox on this machine
# ---------------------------------------------------------------------------

def test_embedded_default_runs_the_whole_job_in_a_sandbox(tmp_path, tools):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    sbx = str(tmp_path / "sbx")
    env = {"ANSIBLE_INVENTORY": str(empty)}
    # Everything the play writes goes under tmp_path; netns live in the test's private /run/netns.
    extra = ("-e", "lqos_bpf_state_dir=%s/state" % sbx, "-e", "lqos_bpf_attach_state_dir=%s/attach" % sbx,
             "-e", "lqos_bpf_sandbox_pin_root=%s/bpffs" % sbx, "-e", "lqos_bpf_report_dir=%s/report" % sbx)
    try:
        run = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_approve=true", env=env)
        assert run.rc == 0, run
        assert run.recap["sandbox"]["failed"] == 0, run
        xdp = xdp_on("lqos-sbx-a", "lqsbx0")
        assert xdp["name"] == "xdp_shaper" and xdp["mode"] in ("native", "skb")
        pins = set(os.listdir(os.path.join(sbx, "bpffs")))
        assert {"host_traffic", "flow_table", "cpu_map"} <= pins
        assert "host_traffic" not in os.listdir("/sys/fs/bpf")
        sh("ip", "netns", "exec", "lqos-sbx-a", "ping", "-c", "1", "-W", "2", "10.253.0.2")
        audit = playbook("audit.yml", None, *extra, env=env)
        assert audit.rc == 0, audit
        report = json.load(open(os.path.join(sbx, "report", "fleet-abi-report.json")))
        assert report["status_counts"]["deployed"] == 1
        assert report["hosts"]["sandbox"]["attached"][0]["tag"] == xdp["tag"]
        # Programs that pass traffic but do not see it (bound to another ifindex) fail the health check:
        # an answered ping is not enough, the programs' own counters must show the replies.
        blind = json.dumps({"lqos_bpf_interfaces": [{"name": "lqsbx0", "netns": "lqos-sbx-a",
                                                     "data": {"attach_ifindex": 999}}]})
        run = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_approve=true", "-e", blind, env=env)
        assert run.rc == 2, run
        msg = " ".join(run.failures("sandbox")[-1]["msg"].split())
        assert ("the attached programs did not count the probe's replies: the down count of 10.253.0.1 rose by 0 "
                "for 3 replies from 10.253.0.2") in msg, msg
    finally:
        down = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_sandbox_state=absent", env=env)
    assert down.rc == 0, down
    assert "lqos-sbx-a" not in sh("ip", "netns", "list").stdout
    assert not os.path.exists(os.path.join(sbx, "bpffs"))
    # attach's record of the sandbox's programs went with them.
    assert not glob.glob(os.path.join(sbx, "attach", "*.json")), os.listdir(os.path.join(sbx, "attach"))


# ---------------------------------------------------------------------------
# abi_info on its own, against a deployed host
# ---------------------------------------------------------------------------

def test_abi_info_reads_a_deployed_host_and_reports_what_it_cannot_read(fleet):
    good = fleet["hosts"]["good"]
    result = run_module("abi_info", dict(
        spec="reference", build_root=os.path.join(good.state_dir, "reference"), pin_root=good.pin_root,
        interfaces=[{"name": good.pair.if_a, "netns": good.pair.ns_a}, {"name": "nosuch0", "netns": good.pair.ns_a}]),
        check_mode=True)
    assert result["_rc"] == 0, result
    assert result["changed"] is False
    build = result["build"]
    assert build["object"]["sha256"] == sha256_file(build["object"]["path"])
    assert "xdp_shaper" in build["skeleton"]["programs"]
    assert result["abi_check"]["ok"] is True and result["abi_check"]["build_id"] == build["build_id"]
    assert result["toolchain"]["clang"] and result["toolchain"]["libbpf"]
    live = xdp_on(good.pair.ns_a, good.pair.if_a)
    [iface, missing] = result["attached"]
    assert iface["xdp"]["id"] == live["id"] and iface["xdp"]["tag"] == live["tag"]
    assert iface["xdp"]["matches"] is True and iface["xdp"]["mode"] == live["mode"]
    assert {t["direction"]: t["matches"] for t in iface["tc"]} == {"egress": True, "ingress": True}
    assert missing["present"] is False and "nosuch0 does not exist" in missing["error"]
    assert result["problems"] == ["nosuch0 (netns %s): %s" % (good.pair.ns_a, missing["error"])]
    statuses = {p["name"]: p["status"] for p in result["pins"]["maps"]}
    assert statuses["host_traffic"] == "compatible" and statuses["flow_table"] == "compatible"
    # A pin root that is no bpffs is reported, not failed.
    result = run_module("abi_info", dict(spec="reference", build_root=os.path.join(good.state_dir, "reference"),
                                         pin_root=good.dir, toolchain=False))
    assert result["_rc"] == 0, result
    assert result["pins"]["error"] == "pin_root %s is not a bpffs mount" % good.dir
    assert result["toolchain"] == {}


# ---------------------------------------------------------------------------
# Check mode, bad input, a mistyped inventory
# ---------------------------------------------------------------------------

def _mounts() -> str:
    with open("/proc/self/mountinfo") as fh:
        return fh.read()


def test_check_mode_on_a_fresh_host_gives_the_plan_and_creates_nothing(tmp_path, tools):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    sbx, scratch = tmp_path / "sbx", tmp_path / "controller-tmp"
    scratch.mkdir()
    netns_before = sh("ip", "netns", "list").stdout
    extra = ("-e", "lqos_bpf_state_dir=%s/state" % sbx, "-e", "lqos_bpf_attach_state_dir=%s/attach" % sbx,
             "-e", "lqos_bpf_sandbox_pin_root=%s/bpffs" % sbx, "-e", "lqos_bpf_sandbox_netns=lqchk-a",
             "-e", "lqos_bpf_sandbox_peer_netns=lqchk-b")
    cache = tmp_path / "controller-cache"
    run = playbook("deploy.yml", None, *extra, "--check", "--diff",
                   env={"ANSIBLE_INVENTORY": str(empty), "TMPDIR": str(scratch), "XDG_CACHE_HOME": str(cache)})
    assert run.rc == 0, run
    assert run.recap["sandbox"]["failed"] == 0, run
    # Nothing on the host: no folder, no mount, no network namespace; no archive on the controller, not even in
    # its cache (a real run keeps the sources' archive in $XDG_CACHE_HOME/lqos-bpf).
    assert not sbx.exists()
    assert str(sbx) not in _mounts()
    assert sh("ip", "netns", "list").stdout == netns_before
    assert os.listdir(str(scratch)) == []
    assert not cache.exists(), list(os.walk(str(cache)))
    [summary] = [d["msg"] for status, h, item, d in run.results if h == "localhost" and item == "sandbox"]
    assert summary == [
        "check mode: nothing was changed; a run with lqos_bpf_approve=true would make these live changes",
        "mount bpffs at %s/bpffs" % sbx,
        "build reference in %s/state/reference: no sources in %s/state/src/reference/shaper_sys yet (check mode: "
        "they are copied by a real run)" % (sbx, sbx),
        "attach on lqsbx0 (the exact pins and hooks are planned once the build and the bpffs exist)",
    ], summary


def test_check_mode_on_a_fresh_host_names_a_mistyped_interface(tmp_path, tools):
    """Without a build the attach step cannot look at the interfaces: the deploy role asks iproute2 instead."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("shaper ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    state = tmp_path / "state"
    cache = tmp_path / "controller-cache"
    extra = ("-e", json.dumps({"lqos_bpf_state_dir": str(state), "lqos_bpf_attach_state_dir": str(tmp_path / "attach"),
                               "lqos_bpf_interfaces": [{"name": "lqnosuch0"}]}))
    run = playbook("deploy.yml", str(inventory), *extra, "--check", env={"XDG_CACHE_HOME": str(cache)})
    assert run.rc != 0 and run.recap["shaper"]["failed"] == 1, run
    [msg] = [d["msg"] for d in run.failures("shaper")]
    assert msg.startswith("lqnosuch0 does not exist on shaper ("), msg
    assert "Nothing was changed. Fix: check the name with `ip link show`" in msg, msg
    assert not state.exists() and not cache.exists()


SERIAL_RULE = ('it must be a positive integer, a percentage "1%".."100%", or a non-empty list of those (the '
               'default [1, "25%", "100%"] deploys a canary host, then 25 % of the hosts, then the rest).')


@pytest.mark.parametrize("value, shown", [
    ('"abc"', '"abc"'), ("null", "null"), ('{"canary": 1}', '{"canary": 1}'), ("0", "0"), ("-1", "-1"),
    ("[]", "[]"), ('"0%"', '"0%"'), ('"200%"', '"200%"'), ('[1, "25%", 0]', '[1, "25%", 0]'), ("1.5", "1.5"),
    ("true", "true"),
])
def test_a_bad_lqos_bpf_serial_stops_the_deploy_with_what_is_allowed(tmp_path, value, shown):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    run = playbook("deploy.yml", None, "--check", "-e", '{"lqos_bpf_serial": %s}' % value,
                   env={"ANSIBLE_INVENTORY": str(empty)})
    assert run.rc == 2, run
    assert "Traceback" not in run.out and "probably a bug" not in run.out, run
    [failure] = run.failures("localhost")
    assert failure["msg"] == "lqos_bpf_serial is %s: %s" % (shown, SERIAL_RULE), failure
    assert "sandbox" not in run.recap


@pytest.mark.parametrize("value", ['3', '"3"', '"100%"', '[1, "25%", "100%"]'])
def test_a_good_lqos_bpf_serial_passes(tmp_path, value):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    # The sandbox teardown in check mode: the serial check runs, then the play ends without touching anything.
    run = playbook("deploy.yml", None, "--check", "-e", '{"lqos_bpf_serial": %s}' % value,
                   "-e", "lqos_bpf_sandbox_state=absent", "-e", "lqos_bpf_sandbox_pin_root=%s/none" % tmp_path,
                   env={"ANSIBLE_INVENTORY": str(empty)})
    assert run.rc == 0, run


@pytest.mark.parametrize("name", ["deploy.yml", "audit.yml"])
def test_a_mistyped_inventory_is_an_error_not_the_sandbox(tmp_path, name):
    missing = str(tmp_path / "inventroy.yml")
    netns_before = sh("ip", "netns", "list").stdout
    run = playbook(name, missing, "-e", "lqos_bpf_approve=true")
    assert run.rc == 2, run
    [failure] = run.failures("localhost")
    assert failure["msg"] == (
        "no host in the inventory %s: a mistyped -i path, or an inventory without hosts? Nothing was run. Fix: "
        "pass an inventory that lists your shapers (ansible-inventory -i <path> --graph shows what Ansible "
        "parsed), or leave -i out to run on the embedded sandbox on this machine." % missing), failure
    assert "sandbox" not in run.recap
    assert sh("ip", "netns", "list").stdout == netns_before


def refused_without_inventory(tmp_path, *args) -> dict:
    """deploy.yml with an empty inventory (the embedded default) and ``args``: it must fail once, on localhost,
    before the sandbox runs or any network namespace is made; returns that failure."""
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    netns_before = sh("ip", "netns", "list").stdout
    run = playbook("deploy.yml", None, *args, env={"ANSIBLE_INVENTORY": str(empty)})
    assert run.rc == 2, run
    [failure] = run.failures("localhost")
    assert "sandbox" not in run.recap
    assert sh("ip", "netns", "list").stdout == netns_before
    return failure


def test_a_topology_without_an_inventory_is_one_clear_error_not_a_sandbox_conflict(tmp_path):
    failure = refused_without_inventory(tmp_path, "-e", '{"lqos_bpf_topology": {"mode": "stick"}}')
    assert failure["msg"] == (
        "lqos_bpf_topology was given, but no inventory: the embedded sandbox has one interface (lqsbx0 in network "
        "namespace lqos-sbx-a) and sets lqos_bpf_interfaces itself, so a topology cannot apply to it. Nothing was "
        "run. Fix: pass -i with the shapers the topology describes, or leave lqos_bpf_topology out to run on the "
        "sandbox."), failure


@pytest.mark.parametrize("given, extra", [
    ("lqos_bpf_interfaces", ["-e", '{"lqos_bpf_interfaces": [{"name": "lqtnosuch0", "xdp_mode": "auto"}]}']),
    ("lqos_bpf_interfaces and lqos_bpf_pin_root",
     ["-e", '{"lqos_bpf_interfaces": [{"name": "lqtnosuch0"}]}', "-e", "lqos_bpf_pin_root=/sys/fs/bpf"]),
])
def test_the_sandbox_refuses_settings_that_would_reach_the_machine(tmp_path, given, extra):
    """Extra vars beat the sandbox host's own: interfaces or a pin root given without an inventory would attach
    to the machine's real interfaces or pin in its real bpffs. Refused before anything runs. (Check mode and an
    interface no machine has: on code without the refusal this test fails without touching anything.)"""
    failure = refused_without_inventory(tmp_path, "--check", *extra)
    assert failure["msg"] == (
        "%s given, but no inventory: the embedded sandbox attaches only to lqsbx0 in network namespace "
        "lqos-sbx-a and pins only in its private bpffs /run/lqos-bpf/sandbox/bpffs, so the machine's real "
        "interfaces and its real /sys/fs/bpf are never touched; given here, they would override the sandbox's own "
        "(extra vars win) and reach the machine. Nothing was run. Fix: pass -i with the shapers these settings are "
        "for, or leave them out to run on the sandbox." % given), failure


def test_the_audit_report_uses_the_users_template_and_names_a_missing_one(tmp_path):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    mine = tmp_path / "mine.md.j2"
    mine.write_text("{{ report.spec }}: {{ report.hosts_total }} host(s), {{ report.status_counts.not_built }} "
                    "not built\n")
    env = {"ANSIBLE_INVENTORY": str(empty)}
    report_dir = tmp_path / "report"
    run = playbook("audit.yml", None, "-e", "lqos_bpf_report_dir=%s" % report_dir, "-e", "lqos_bpf_state_dir=%s" % tmp_path,
                   "-e", '{"lqos_bpf_report_templates": {"markdown": "%s"}}' % mine, env=env)
    assert run.rc == 0, run
    assert (report_dir / "fleet-abi-report.md").read_text() == "reference: 1 host(s), 1 not built\n"
    assert (report_dir / "fleet-abi-report.html").read_text().startswith("<!DOCTYPE html>")  # the built-in one
    first = json.loads((report_dir / "fleet-abi-report.json").read_text())["generated_at"]
    time.sleep(1.1)
    again = playbook("audit.yml", None, "-e", "lqos_bpf_report_dir=%s" % report_dir, "-e",
                     "lqos_bpf_state_dir=%s" % tmp_path, "-e", '{"lqos_bpf_report_templates": {"markdown": "%s"}}' % mine,
                     env=env)
    assert again.rc == 0, again
    # The same fleet: a new time, but no change.
    assert json.loads((report_dir / "fleet-abi-report.json").read_text())["generated_at"] != first
    assert again.changed_tasks.get("sandbox", set()) == set(), again.changed_tasks
    missing = tmp_path / "nosuch.html.j2"
    run = playbook("audit.yml", None, "-e", "lqos_bpf_report_dir=%s" % report_dir, "-e", "lqos_bpf_state_dir=%s" % tmp_path,
                   "-e", '{"lqos_bpf_report_templates": {"html": "%s"}}' % missing, env=env)
    assert run.rc == 2, run
    [failure] = run.failures("sandbox")
    assert failure["msg"] == (
        "the html report template %s was not found (looked in the role's and the playbook's templates/). Fix: give "
        "an existing path in lqos_bpf_report_templates.html." % missing), failure


def test_a_failed_plan_or_check_run_ends_saying_nothing_was_changed(tmp_path, tools):
    # A mistyped interface fails the attach inside the deploy block; the host's one failure must say that a plan
    # (no approval) or a check-mode run changed nothing, not that something was rolled back.
    host = Host(str(tmp_path), "typo")
    host.create()
    try:
        host.vars["lqos_bpf_interfaces"] = [{"name": "nosuch0", "netns": host.pair.ns_a}]
        inventory = write_inventory(str(tmp_path / "inventory.yml"), [host], sys.executable)
        endings = {}
        for mode, extra in (("plan", ()), ("check", ("--check",))):
            run = playbook("deploy.yml", inventory, *extra)
            assert run.rc == 2 and run.recap["typo"]["failed"] == 1, run
            [failure] = run.failures("typo")  # the attach's error once, in the host's one failure
            endings[mode] = failure["msg"]
        for msg in endings.values():
            assert msg.startswith("deploy of ") and "nosuch0" in msg, endings
            assert ".." not in msg, msg   # the attach's own message ends with a full stop already
        assert endings["plan"].endswith("Plan only (lqos_bpf_approve is false): nothing was changed."), endings
        assert endings["check"].endswith("Check mode: nothing was changed."), endings
        # Nothing live: no program on the real interface of the pair, nothing pinned.
        assert xdp_on(host.pair.ns_a, host.pair.if_a)["id"] == 0
        assert set(os.listdir(host.pin_root)) <= {"maps.debug", "progs.debug"}
    finally:
        host.destroy()


def test_without_the_bpffs_mount_a_missing_bpffs_stops_the_host_before_the_build(tmp_path, tools):
    # lqos_bpf_mount_bpffs=false: nothing will mount bpffs later, so the build's preflight stops the host at once
    # (not the attach, after a build and a check).
    host = Host(str(tmp_path), "nomount")
    host.create()
    umount(host.pin_root)
    try:
        inventory = write_inventory(str(tmp_path / "inventory.yml"), [host], sys.executable)
        run = playbook("deploy.yml", inventory, "-e", "lqos_bpf_mount_bpffs=false")
        assert run.rc == 2, run
        [failure] = run.failures("nomount")
        assert failure["msg"] == (
            "preflight found 1 problem(s) on this host:\n- bpffs: bpffs not mounted at %s (the kernel supports it). "
            "Fix: mkdir -p %s && mount -t bpf bpf %s" % (host.pin_root, host.pin_root, host.pin_root)), failure
        assert [p["name"] for p in failure["problems"]] == ["bpffs"] and "checks" not in failure
        assert not os.path.exists(os.path.join(host.state_dir, "reference"))
        assert not os.path.ismount(host.pin_root)
    finally:
        host.destroy()
