"""abi_info's ``service`` section (issue 23, item 4) on the real kernel: the stand-in daemon shaperd run as a plain
process (``pid`` given, as test_service_module.py does) on a bridge in its own netns with a private bpffs. Its running
tags against the object its binary embeds and against the collection's build under build_root (the daemon's own
build: match; v2 of the reference pipeline, tests/functional/variants.py: differ), the ABI check from a record the
test writes where the deploy role's service loader keeps it, the problems lines, and the unknowns of a service that
is not running or whose binary embeds nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from lqos_testlib import run_module, run_pipeline, sh
from standin import bridge_config, start
from test_service_module import add_unit, systemd  # noqa: F401  # pylint: disable=unused-import  # the fixture
from variants import make_v2

from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import held_prog_ids

pytestmark = pytest.mark.usefixtures("tools")


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def build_root(build_dir: str) -> str:
    return os.path.dirname(os.path.dirname(build_dir))   # <dest>/builds/<id>


def abi_info(bpffs, root: str, **service) -> dict:
    res = run_module("abi_info", dict(spec="reference", pin_root=bpffs, build_root=root, toolchain=False,
                                      programs=False, service=dict(dict(name="shaperd"), **service)))
    assert res["_rc"] == 0, res
    return res


def record(state: str, obj_sha: str, ok: bool, summary: str = "spec 'reference': ABI parity holds") -> str:
    folder = os.path.join(state, "service", "shaperd")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "abi-check.json")
    with open(path, "w") as fh:
        json.dump({"spec": "reference", "object_sha256": obj_sha, "ok": ok, "summary": summary}, fh)
    return path


def service_lines(res) -> list:
    return [p for p in res["problems"] if p.startswith("service ")]


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    """v2 of the reference pipeline built by the pipeline module, and shaperd built against it:
    {"binary", "object", "build_root"}."""
    root = tmp_path_factory.mktemp("v2")
    crate, spec = make_v2(str(root))
    res = run_pipeline(crate, str(root / "out"), spec=spec)
    assert res["_rc"] == 0, res
    obj = res["outputs"]["object"]["path"]
    binary = str(root / "shaperd-v2")
    sh(os.path.join(crate, "src", "daemon", "build.sh"), os.path.dirname(obj), binary)
    return {"binary": binary, "object": obj, "build_root": build_root(os.path.dirname(obj))}


def test_the_daemons_own_build_matches_and_the_record_decides_the_abi_check(shaperd, bpffs, bridge, tmp_path,
                                                                            running):
    conf = bridge_config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    state = str(tmp_path / "state")
    root = build_root(shaperd["build_dir"])
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state)
    svc = res["service"]
    path = os.path.join(state, "service", "shaperd", "abi-check.json")
    assert svc["unit"] == "shaperd.service" and svc["active_state"] == "active" and svc["main_pid"] == daemon.pid
    assert svc["error"] is None and svc["n_restarts"] is None
    assert svc["binary"] == {"path": shaperd["binary"], "sha256": sha256(shaperd["binary"])}
    assert svc["embedded"] == {"sha256": sha256(shaperd["object"]), "size": os.path.getsize(shaperd["object"])}
    assert sorted(p["id"] for p in svc["running"]) == held_prog_ids(daemon.pid) and len(svc["running"]) == 6
    assert [(p["interface"], p["hook"], p["name"]) for p in svc["running"]] == [
        (ifname, hook, name) for ifname in (bridge.if_a, bridge.if_c)
        for hook, name in (("xdp", "xdp_shaper"), ("tc_egress", "tc_classify"), ("tc_ingress", "tc_bridge_redir"))]
    assert (svc["tags_vs_embedded"], svc["tags_vs_build"]) == ("match", "match")
    assert svc["differences"] == {"embedded": [], "build": []}
    assert svc["abi_check"] == "unknown" and svc["abi_check_record"] is None
    assert svc["reasons"] == {"tags_vs_embedded": None, "tags_vs_build": None, "abi_check": (
        "no ABI check of the embedded object is recorded at %s (the deploy role's service loader writes it when it "
        "checks the installed build)" % path)}
    assert service_lines(res) == []

    record(state, sha256(shaperd["object"]), True)
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state)
    assert res["service"]["abi_check"] == "passed" and res["service"]["reasons"]["abi_check"] is None
    assert res["service"]["abi_check_record"] == {"path": path, "object_sha256": sha256(shaperd["object"]),
                                                  "ok": True, "summary": "spec 'reference': ABI parity holds"}
    assert service_lines(res) == []

    record(state, sha256(shaperd["object"]), False, "spec 'reference': 1 ABI mismatch")
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state)
    assert res["service"]["abi_check"] == "failed"
    assert service_lines(res) == [
        "service shaperd.service runs an object that failed the ABI check: the ABI check recorded at %s failed: "
        "spec 'reference': 1 ABI mismatch. Fix: install a build whose embedded object passes (the Rust mirrors and "
        "the C agree) and deploy it, or roll back to the previous build." % path]

    other = "ab" * 32
    record(state, other, True)
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state)
    assert res["service"]["abi_check"] == "unknown" and service_lines(res) == []
    assert res["service"]["reasons"]["abi_check"] == (
        "the ABI check recorded at %s is of object %s, not of the object embedded in the installed binary (%s): "
        "this build was not checked by the deploy" % (path, other[:12], sha256(shaperd["object"])[:12]))
    assert daemon.stop() == 0


def test_another_build_differs_and_an_installed_v2_binary_is_a_problem(shaperd, v2, bpffs, bridge, tmp_path,
                                                                       running):
    conf = bridge_config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    state = str(tmp_path / "state")
    res = abi_info(bpffs, v2["build_root"], config=conf, pid=daemon.pid, state_dir=state)
    svc = res["service"]
    assert (svc["tags_vs_embedded"], svc["tags_vs_build"]) == ("match", "differ"), svc
    assert svc["differences"]["build"] and all("the collection's build" in d for d in svc["differences"]["build"])
    assert service_lines(res) == []   # a newer build not deployed yet is no problem of the service

    # v2 installed over the binary the daemon runs, not restarted: the running programs are not the embedded ones.
    installed = str(tmp_path / "shaperd-installed")
    shutil.copy(v2["binary"], installed)
    record(state, sha256(v2["object"]), True)
    res = abi_info(bpffs, build_root(shaperd["build_dir"]), config=conf, pid=daemon.pid, state_dir=state,
                   binary=installed)
    svc = res["service"]
    assert svc["embedded"]["sha256"] == sha256(v2["object"])
    assert (svc["tags_vs_embedded"], svc["tags_vs_build"]) == ("differ", "match"), svc
    diffs = svc["differences"]["embedded"]
    assert diffs and all("the object embedded in %s" % installed in d for d in diffs)
    assert svc["abi_check"] == "unknown" and svc["reasons"]["abi_check"] == (
        "the running programs are not known to be the embedded object's (tags_vs_embedded: differ), so its check "
        "(passed) does not speak for them")
    assert service_lines(res) == [
        "service shaperd.service does not run the object embedded in its installed binary %s (%d difference(s): %s). "
        "Fix: run the deploy (lqos_bpf_loader: service) so the installed build is checked and the service "
        "restarted in its window, or reinstall the build it runs." % (installed, len(diffs), " ".join(diffs))]
    assert daemon.stop() == 0


def test_not_running_and_a_binary_without_an_object_are_unknowns_with_reasons(shaperd, bpffs, bridge, tmp_path,
                                                                              running):
    conf = bridge_config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    state = str(tmp_path / "state")
    root = build_root(shaperd["build_dir"])
    record(state, sha256(shaperd["object"]), True)
    # A binary that embeds no BPF object, the daemon running.
    true = os.path.realpath(shutil.which("true"))
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state, binary=true)
    svc = res["service"]
    assert svc["embedded"] is None and svc["error"] is None and len(svc["running"]) == 6
    assert (svc["tags_vs_embedded"], svc["tags_vs_build"], svc["abi_check"]) == ("unknown", "match", "unknown")
    none = ("the service's binary %s embeds no BPF object (no ELF image of machine BPF inside it). Fix: give the "
            "service's binary as installed (built with the skeleton), not a stripped wrapper or a script that starts "
            "it." % true)
    assert svc["reasons"]["tags_vs_embedded"] == none, svc["reasons"]
    assert svc["reasons"]["abi_check"] == "no check can be said to be of the object the service runs: " + none
    assert service_lines(res) == []

    assert daemon.stop() == 0
    res = abi_info(bpffs, root, config=conf, pid=daemon.pid, state_dir=state, binary=shaperd["binary"])
    svc = res["service"]
    assert svc["active_state"] == "inactive" and svc["main_pid"] is None and svc["running"] == []
    not_running = "the service is not running, so no programs of it run"
    assert svc["reasons"] == {"tags_vs_embedded": not_running, "tags_vs_build": not_running, "abi_check": (
        "the service is not running (its embedded object passed the ABI check recorded at %s)"
        % os.path.join(state, "service", "shaperd", "abi-check.json"))}
    assert (svc["tags_vs_embedded"], svc["tags_vs_build"], svc["abi_check"]) == ("unknown",) * 3
    assert service_lines(res) == []

    # A service that cannot be read at all: its error, in errors too, never a failure.
    res = abi_info(bpffs, root, config=str(tmp_path / "missing.conf"), pid=daemon.pid, state_dir=state)
    msg = ("the shaperd configuration %s does not exist. Fix: give its path in config (default /etc/shaperd.conf), "
           "or install the service's configuration." % (tmp_path / "missing.conf"))
    assert res["service"]["error"] == msg and "service shaperd.service: " + msg in res["errors"]
    assert set(res["service"]["reasons"].values()) == {"the service cannot be read: " + msg}


def test_the_audit_role_passes_the_service_and_the_report_shows_its_columns(
        shaperd, bpffs, bridge, tmp_path, running, systemd):
    """audit.yml with lqos_bpf_loader: service, the unit run through tests/functional/systemctl_standin.py."""
    from test_playbooks import playbook   # the ansible-playbook runner of the playbook tests

    conf = bridge_config(tmp_path, bpffs, bridge, write_limit=0)
    add_unit(systemd, "shaperd.service", [shaperd["binary"], conf])
    env = dict(os.environ, **systemd.env)
    subprocess.run(["systemctl", "start", "shaperd.service"], env=env, check=True)
    with open(os.path.join(systemd.dir, "shaperd.service.json")) as fh:
        pid = json.load(fh)["pid"]
    deadline = time.monotonic() + 30
    while len(held_prog_ids(pid)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    state = str(tmp_path / "state")
    record(state, sha256(shaperd["object"]), True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"shaper": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "lqos_bpf_pin_root": bpffs,
        "lqos_bpf_state_dir": state, "lqos_bpf_build_root": build_root(shaperd["build_dir"]),
        "lqos_bpf_interfaces": [], "lqos_bpf_loader": "service", "lqos_bpf_service": "shaperd",
        "lqos_bpf_service_config": conf}}}}))
    report_dir = tmp_path / "report"
    run = playbook("audit.yml", str(inventory), "-e", "lqos_bpf_report_dir=%s" % report_dir, env=systemd.env)
    assert run.rc == 0, run
    row = json.loads((report_dir / "fleet-abi-report.json").read_text())["hosts"]["shaper"]
    assert row["service"] == {"unit": "shaperd.service", "active_state": "active", "main_pid": pid, "n_restarts": 0,
                              "tags_vs_embedded": "match", "tags_vs_build": "match", "abi_check": "passed",
                              "reasons": {}, "error": None, "text": "shaperd.service active (pid %d)" % pid}
    md = (report_dir / "fleet-abi-report.md").read_text()
    assert "| shaper | %s | none | shaperd.service active (pid %d) | match | match | passed |" % (row["status"], pid) in md
    html = (report_dir / "fleet-abi-report.html").read_text()
    assert ("<td>shaperd.service active (pid %d)</td><td>match</td><td>match</td><td>passed</td>" % pid) in html

    # The collection loader (the default): abi_info is not asked about a service, the columns say "-".
    inventory.write_text(inventory.read_text().replace("lqos_bpf_loader: service", "lqos_bpf_loader: collection"))
    run = playbook("audit.yml", str(inventory), "-e", "lqos_bpf_report_dir=%s" % report_dir, env=systemd.env)
    assert run.rc == 0, run
    assert json.loads((report_dir / "fleet-abi-report.json").read_text())["hosts"]["shaper"]["service"] is None
    assert "| shaper | %s | none | - | - | - | - |" % row["status"] in (report_dir / "fleet-abi-report.md").read_text()
