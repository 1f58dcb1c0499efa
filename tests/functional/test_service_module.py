"""The module lqos.bpf.service against the stand-in daemon shaperd, run as a plain process (this machine has no
systemd as PID 1, so the module is given the daemon's ``pid``) on veth pairs in their own netns with a private
bpffs: what it reads (hooks and their owners, the configuration, the embedded object), ``extracted``,
``verified`` (passing, then after a SIGTERM and after a foreign XDP program), and each bad input's one message.
The systemctl states run under systemd in the molecule VMs; here only their refusal with ``pid`` is checked."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest

from lqos_testlib import LIBREQOS_REFS, compile_bpf, libreqos_crate, run_module, sh
from standin import bridge_config as config, start, write_config

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._service import config as C
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import held_prog_ids

pytestmark = pytest.mark.usefixtures("tools")

FOREIGN_XDP = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int foreign_xdp(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""
EXPECTED = "tc_bridge_redir, tc_classify, xdp_shaper"


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def service(conf: str, pid: int, **args) -> dict:
    return run_module("service", dict(dict(name="shaperd", config=conf, pid=pid), **args))


def test_info_reads_the_hooks_the_daemon_holds(shaperd, bpffs, bridge, tmp_path, running):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    result = service(conf, daemon.pid)
    assert result["_rc"] == 0, result
    assert result["changed"] is False and result["actions"] == [] and result["unit"] is None
    assert result["config"] == {"path": conf, "kind": "shaperd", "mode": "bridge", "vlans": None,
                                "use_xdp_bridge": True, "pin_root": bpffs,
                                "interfaces": [{"name": bridge.if_a, "role": "internet", "netns": bridge.ns_a},
                                               {"name": bridge.if_c, "role": "isp", "netns": bridge.ns_a}]}
    assert result["binary"] == {"path": shaperd["binary"], "sha256": sha256(shaperd["binary"])}
    assert result["embedded"] == {"sha256": sha256(shaperd["object"]), "size": os.path.getsize(shaperd["object"])}
    held = held_prog_ids(daemon.pid)
    assert result["held_prog_ids"] == held and result["main_pid"] == daemon.pid
    on_hooks = []
    for hook, ifname in zip(result["hooks"], (bridge.if_a, bridge.if_c)):
        assert hook["interface"] == ifname and hook["netns"] == bridge.ns_a
        assert hook["xdp"]["mode"] == "native"
        for slot, name in (("xdp", "xdp_shaper"), ("tc_egress", "tc_classify"), ("tc_ingress", "tc_bridge_redir")):
            prog = hook[slot]
            assert prog["name"] == name and prog["owner"] == "service", hook
            assert prog["tag"] == M.prog_info_by_id(prog["id"])["tag"]
            on_hooks.append(prog["id"])
    assert sorted(on_hooks) == held
    assert result["timings"] == {"stop_s": None, "start_to_hooks_s": None}

    # Once the daemon is gone its TC programs stay on the hooks, and nobody holds them: foreign.
    assert daemon.stop() == 0
    after = service(conf, daemon.pid)
    assert after["_rc"] == 0, after
    assert after["held_prog_ids"] == [] and "process %d (pid) does not exist" % daemon.pid in " ".join(after["warnings"])
    assert [h["xdp"] for h in after["hooks"]] == [None, None]
    assert {h["tc_egress"]["owner"] for h in after["hooks"]} == {"foreign"}


def test_extracted_writes_the_embedded_object_once(shaperd, bpffs, bridge, tmp_path, running):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    dest = str(tmp_path / "out" / "embedded.o")
    os.makedirs(os.path.dirname(dest))
    planned = run_module("service", dict(name="shaperd", config=conf, pid=daemon.pid, state="extracted",
                                         object_dest=dest), check_mode=True)
    assert planned["_rc"] == 0, planned
    assert planned["changed"] is True and planned["applied"] is False
    assert planned["actions"] == ["write the embedded object (%d bytes, sha256 %s) to %s" % (
        os.path.getsize(shaperd["object"]), sha256(shaperd["object"]), dest)]
    assert os.listdir(os.path.dirname(dest)) == []   # check mode writes nothing, not even a temporary file

    first = service(conf, daemon.pid, state="extracted", object_dest=dest)
    assert first["_rc"] == 0, first
    assert first["changed"] is True and first["applied"] is True
    assert sha256(dest) == sha256(shaperd["object"]) and oct(os.stat(dest).st_mode & 0o777) == "0o644"
    assert os.listdir(os.path.dirname(dest)) == ["embedded.o"]
    second = service(conf, daemon.pid, state="extracted", object_dest=dest)
    assert second["_rc"] == 0 and second["changed"] is False and second["actions"] == [], second
    assert daemon.stop() == 0


def test_verified_then_not_after_sigterm_and_after_a_foreign_xdp(shaperd, bpffs, bridge, tmp_path, running):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    good = service(conf, daemon.pid, state="verified", timeout=5)
    assert good["_rc"] == 0, good["msg"]
    assert good["verified"] is True and good["problems"] == [] and good["changed"] is False

    # A foreign XDP program replaces the daemon's on the Internet-facing port.
    obj = compile_bpf(tmp_path, "foreign", FOREIGN_XDP)
    sh("ip", "-force", "-n", bridge.ns_a, "link", "set", "dev", bridge.if_a, "xdpdrv", "obj", obj, "sec", "xdp")
    bad = service(conf, daemon.pid, state="verified", timeout=0.3)
    assert bad["_rc"] == 1 and bad["failed"] and bad["changed"] is False, bad
    foreign = bad["hooks"][0]["xdp"]
    assert foreign["name"] == "foreign_xdp" and foreign["owner"] == "foreign"
    at = "%s (netns %s) XDP" % (bridge.if_a, bridge.ns_a)
    found = "foreign_xdp (id %d, tag %s, owner foreign)" % (foreign["id"], foreign["tag"])
    assert bad["verified"] is False and bad["problems"] == [
        "%s: %s is not held by the service's main process %d; expected one of %s held by it." % (
            at, found, daemon.pid, EXPECTED),
        "%s: %s is not one of the expected programs (%s)." % (at, found, EXPECTED),
    ]
    assert bad["msg"] == ("shaperd.service is not verified: %s Fix: restart the service with the build that passed "
                          "the checks, or roll back." % " ".join(bad["problems"]))
    sh("ip", "-n", bridge.ns_a, "link", "set", "dev", bridge.if_a, "xdpdrv", "off")

    # SIGTERM: the daemon detaches its XDP programs and exits; its TC programs stay, held by nobody.
    assert daemon.stop(signal.SIGTERM) == 0
    gone = service(conf, daemon.pid, state="verified", timeout=0.3)
    assert gone["msg"] == ("the service's binary is not known (process %d has exited, so /proc/%d/exe is gone), and "
                           "state verified (without expected_tags or object) needs it. Fix: give binary: the path of "
                           "the installed service build." % (daemon.pid, daemon.pid))
    gone = service(conf, daemon.pid, state="verified", timeout=0.3, binary=shaperd["binary"])
    assert gone["_rc"] == 1, gone
    problems = []
    for hook in gone["hooks"]:
        where = "%s (netns %s)" % (hook["interface"], bridge.ns_a)
        problems.append("%s XDP: no program; expected one of %s held by the service's main process %d."
                        % (where, EXPECTED, daemon.pid))
        for direction in ("egress", "ingress"):
            prog = hook["tc_" + direction]
            found = "%s (id %d, tag %s, owner foreign)" % (prog["name"], prog["id"], prog["tag"])
            problems.append("%s TC %s: %s is not held by the service's main process %d; expected one of %s held by "
                            "it." % (where, direction, found, daemon.pid, EXPECTED))
    assert gone["problems"] == problems


def test_expected_tags_that_differ_are_named(shaperd, bpffs, bridge, tmp_path, running):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    daemon = start(running, shaperd["binary"], conf)
    tags = {"xdp_shaper": "00" * 8, "tc_classify": "11" * 8, "tc_bridge_redirect": "22" * 8}
    result = service(conf, daemon.pid, state="verified", expected_tags=tags, timeout=5)
    assert result["_rc"] == 1, result
    xdp = result["hooks"][0]["xdp"]
    assert result["problems"][0] == (
        "%s (netns %s) XDP: xdp_shaper (id %d, owner service) has tag %s; expected %s (the tag of xdp_shaper in "
        "expected_tags)." % (bridge.if_a, bridge.ns_a, xdp["id"], xdp["tag"], "00" * 8))
    assert len(result["problems"]) == 6
    # The pipeline's own object gives the running tags too.
    same = service(conf, daemon.pid, state="verified", object=shaperd["object"], timeout=5)
    assert same["_rc"] == 0 and same["verified"] is True, same
    assert daemon.stop() == 0


@pytest.mark.parametrize("state", ["stopped", "started", "restarted", "masked", "unmasked"])
def test_systemd_states_with_pid_are_refused(state, tmp_path):
    result = run_module("service", dict(name="shaperd", config=str(tmp_path / "none.conf"), pid=os.getpid(),
                                        state=state, approve=True))
    assert result["_rc"] == 1 and result["changed"] is False
    assert result["msg"] == (
        "state %s needs systemd, and pid %d says the service is run by another supervisor. Fix: drop pid to manage "
        "the systemd unit shaperd.service, or stop and start the process through its own supervisor."
        % (state, os.getpid()))


def test_bad_inputs_one_message_each(shaperd, bpffs, bridge, tmp_path):
    pid = os.getpid()
    missing = str(tmp_path / "none.conf")
    cases = [
        (dict(name="lqosd-next", pid=pid), "unit lqosd-next.service is neither lqosd nor shaperd, so its "
         "configuration format is unknown. Fix: give kind: lqosd (a LibreQoS /etc/lqos.conf) or shaperd (the "
         "stand-in's key = value file)."),
        (dict(name="shaperd", config=missing, pid=pid), "the shaperd configuration %s does not exist. Fix: give its "
         "path in config (default /etc/shaperd.conf), or install the service's configuration." % missing),
        (dict(name="shaperd", pid=pid, config=write_config(
            tmp_path / "gone.conf", mode="bridge", to_internet=bridge.if_a, to_network="nosuch0", netns=bridge.ns_a)),
         "interface nosuch0 of %s (isp) does not exist on this host in network namespace %s. Fix: fix the "
         "configuration, or create the interface before the service starts." % (tmp_path / "gone.conf", bridge.ns_a)),
    ]
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    cases += [
        (dict(name="shaperd", config=conf, pid=pid, binary=str(tmp_path / "nobinary")),
         "the service's binary %s cannot be read: No such file or directory. Fix: install the service's build "
         "there, or give its path in binary." % (tmp_path / "nobinary")),
        (dict(name="shaperd", config=conf, pid=pid, binary="/bin/true", state="extracted",
              object_dest=str(tmp_path / "x.o")),
         "the service's binary /bin/true embeds no BPF object (no ELF image of machine BPF inside it). Fix: give "
         "the service's binary as installed (built with the skeleton), not a stripped wrapper or a script that "
         "starts it."),
        (dict(name="shaperd", config=conf, pid=pid, state="extracted"),
         "state extracted needs object_dest. Fix: give the path to write the embedded object to."),
        (dict(name="shaperd", config=conf, pid=pid, binary=shaperd["binary"], state="verified",
              expected_tags={"xdp_shaper": "xyz"}),
         "expected_tags.xdp_shaper = 'xyz' is not a program tag. Fix: give the 16 hex digits bpftool prog show "
         "prints as tag."),
    ]
    for args, message in cases:
        result = run_module("service", args)
        assert result["_rc"] == 1 and result["changed"] is False, result
        assert result["msg"] == message
        assert "exception" not in result
    assert not os.path.exists(str(tmp_path / "x.o"))


def test_stick_started_inside_its_netns(shaperd, bpffs, netns_pair, tmp_path, running):
    """On a stick (one interface, two VLANs; no netns key: the daemon and the module both run inside the netns,
    as lqosd runs in the host's): the VLANs and the ingress redirector are read and verified."""
    conf = write_config(tmp_path / "stick.conf", mode="stick", interface=netns_pair.if_a, internet_vlan=100,
                        network_vlan=200, pin_root=bpffs, write_log=str(tmp_path / "w.log"), write_limit=0)
    inside = ("ip", "netns", "exec", netns_pair.ns_a)
    daemon = start(running, shaperd["binary"], conf, prefix=inside)
    result = run_module("service", dict(name="shaperd", config=conf, pid=daemon.pid, state="verified", timeout=5),
                        prefix=inside)
    assert result["_rc"] == 0, result["msg"]
    assert result["config"]["mode"] == "stick" and result["config"]["vlans"] == {"internet": 100, "isp": 200}
    assert result["config"]["interfaces"] == [{"name": netns_pair.if_a, "role": "stick", "netns": None}]
    hook = result["hooks"][0]
    assert (hook["xdp"]["name"], hook["tc_egress"]["name"], hook["tc_ingress"]["name"]) == (
        "xdp_shaper", "tc_classify", "tc_bridge_redir")
    assert result["verified"] is True
    # Outside the netns the interface is not there: one message naming it.
    outside = run_module("service", dict(name="shaperd", config=conf, pid=daemon.pid))
    assert outside["msg"] == ("interface %s of %s (stick) does not exist on this host. Fix: fix the configuration, or "
                              "create the interface before the service starts." % (netns_pair.if_a, conf))
    assert daemon.stop() == 0


@pytest.mark.parametrize("ref", [r for r in LIBREQOS_REFS if r != "v1.4"])
def test_libreqos_example_configuration(ref, tmp_path):
    """LibreQoS's own example /etc/lqos.conf (lqos_config, etc/v15/example.toml; v1.4 has none) as a bridge, and
    with its commented [single_interface] table instead: the module reads it, with tomllib and with the minimal
    reader of targets without it, to the same result."""
    example = os.path.join(os.path.dirname(libreqos_crate(ref)), "lqos_config", "src", "etc", "v15", "example.toml")
    with open(example) as fh:
        text = fh.read()
    stick = text.replace("\n[bridge]", "\n#[bridge]").replace("\nuse_xdp_bridge", "\n#use_xdp_bridge")
    stick = stick.replace("\nto_internet", "\n#to_internet").replace("\nto_network", "\n#to_network")
    stick = stick.replace("#[single_interface]", "[single_interface]").replace("#interface", "interface")
    stick = stick.replace("#internet_vlan", "internet_vlan").replace("#network_vlan", "network_vlan")
    for body, mode in ((text, "bridge"), (stick, "stick")):
        conf = tmp_path / ("lqos-%s.conf" % mode)
        conf.write_text(body)
        got = C.parse_lqosd(body, str(conf))
        assert got == C.parse_lqosd(body, str(conf), use_tomllib=False)
        assert got["mode"] == mode and got["kind"] == "lqosd" and got["pin_root"] == "/sys/fs/bpf"
        roles = [i["role"] for i in got["interfaces"]]
        assert roles == (["internet", "isp"] if mode == "bridge" else ["stick"])
        assert (got["vlans"] is None) == (mode == "bridge")
        # The module reads it as lqosd's (kind from the unit name), with names no host has (never this machine's).
        names = [i["name"] for i in got["interfaces"]]
        for name in names:
            body = body.replace('"%s"' % name, '"lqtno%s"' % name)
        conf.write_text(body)
        result = run_module("service", dict(name="lqosd", config=str(conf), pid=os.getpid()))
        assert result["_rc"] == 1 and result["msg"] == (
            "interface lqtno%s of %s (%s) does not exist on this host. Fix: fix the configuration, or create the "
            "interface before the service starts." % (names[0], conf, roles[0]))


# --------------------------------------------------------------------------------------------------------------
# The systemd states, through tests/functional/systemctl_standin.py (this machine has no systemd as PID 1; the
# molecule VMs run the real one): the module's argv, approval, check mode, timings and waits against real shaperd.
# --------------------------------------------------------------------------------------------------------------

STANDIN_SYSTEMCTL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "systemctl_standin.py")


@pytest.fixture
def systemd(tmp_path):
    """A folder of units for the systemctl stand-in, and the environment that puts it first on PATH; every
    process it started is killed at the end."""
    units = tmp_path / "units"
    units.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "systemctl"
    script.write_text('#!/bin/sh\nexec %s %s "$@"\n' % (sys.executable, STANDIN_SYSTEMCTL))
    script.chmod(0o755)
    env = {"PATH": "%s:%s" % (bindir, os.environ["PATH"]), "LQOS_TEST_SYSTEMCTL_DIR": str(units)}
    yield types.SimpleNamespace(dir=str(units), env=env)
    for name in os.listdir(str(units)):
        if name.endswith(".json"):
            with open(os.path.join(str(units), name)) as fh:
                pid = json.load(fh)["pid"]
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def add_unit(systemd, name: str, argv: list) -> None:
    with open(os.path.join(systemd.dir, name + ".json"), "w") as fh:
        json.dump({"argv": argv, "active": False, "pid": 0, "masked": None, "n_restarts": 0}, fh)


def calls(systemd) -> list:
    path = os.path.join(systemd.dir, "calls.log")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        rows = [json.loads(line) for line in fh]
    os.unlink(path)
    return rows


SHOW = ["show", "--property=ActiveState,SubState,MainPID,NRestarts,LoadState,UnitFileState,ExecStart",
        "shaperd.service"]


def test_systemd_states_gate_time_and_wait(shaperd, bpffs, bridge, tmp_path, systemd):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    add_unit(systemd, "shaperd.service", [shaperd["binary"], conf])

    def unit(check_mode=False, **args):
        return run_module("service", dict(dict(name="shaperd", config=conf, timeout=20), **args),
                          check_mode=check_mode, env=systemd.env)

    first = unit()
    assert first["_rc"] == 0, first["msg"]
    assert first["unit"]["active_state"] == "inactive" and first["unit"]["main_pid"] == 0
    assert first["unit"]["exec_start_path"] == shaperd["binary"] and first["binary"]["path"] == shaperd["binary"]
    assert [h["xdp"] for h in first["hooks"]] == [None, None]
    assert calls(systemd) == [SHOW, SHOW]

    # Not approved, or check mode: the exact command, nothing started.
    for check_mode, approve, why in ((False, False, "approve is false"), (True, True, "check mode")):
        plan = unit(state="started", approve=approve, check_mode=check_mode)
        assert plan["_rc"] == 0, plan["msg"]
        assert plan["changed"] is True and plan["applied"] is False
        assert plan["actions"] == ["would run: systemctl start shaperd.service (%s)" % why]
        assert plan["unit"]["main_pid"] == 0 and ["start", "shaperd.service"] not in calls(systemd)

    started = unit(state="started", approve=True)
    assert started["_rc"] == 0, started["msg"]
    assert started["changed"] is True and started["applied"] is True
    assert started["actions"] == ["systemctl start shaperd.service"]
    assert started["timings"]["stop_s"] is None and started["timings"]["start_to_hooks_s"] > 0
    pid = started["unit"]["main_pid"]
    assert pid and started["unit"]["active_state"] == "active" and started["held_prog_ids"] == held_prog_ids(pid)
    assert {h["xdp"]["owner"] for h in started["hooks"]} == {"service"}
    assert ["start", "shaperd.service"] in calls(systemd)
    again = unit(state="started", approve=True)
    assert again["changed"] is False and again["actions"] == [] and again["unit"]["main_pid"] == pid
    assert unit(state="verified")["verified"] is True
    calls(systemd)

    masked = unit(state="masked", approve=True)
    assert masked["actions"] == ["systemctl mask --runtime shaperd.service"] and masked["unit"]["masked"] is True
    assert masked["unit"]["mask"] == "runtime" and ["mask", "--runtime", "shaperd.service"] in calls(systemd)
    assert unit(state="masked", approve=True)["changed"] is False
    refused = unit(state="started", approve=True)
    assert refused["_rc"] == 1 and refused["changed"] is False
    assert refused["msg"] == ("shaperd.service is masked (masked-runtime), so systemd refuses to start it. Fix: "
                              "unmask it first (lqos.bpf.service state=unmasked, as the deploy role does after its "
                              "window), then start it.")

    # Stopped while masked: ExecStart is gone with the mask, so the binary is given; XDP detached, TC stays.
    stopped = unit(state="stopped", approve=True, binary=shaperd["binary"])
    assert stopped["_rc"] == 0, stopped["msg"]
    assert stopped["actions"] == ["systemctl stop shaperd.service"] and stopped["timings"]["stop_s"] > 0
    assert stopped["unit"]["main_pid"] == 0 and [h["xdp"] for h in stopped["hooks"]] == [None, None]
    assert {h["tc_egress"]["owner"] for h in stopped["hooks"]} == {"foreign"}
    assert ["stop", "shaperd.service"] in calls(systemd)
    assert unit(state="stopped", approve=True, binary=shaperd["binary"])["changed"] is False

    unmasked = unit(state="unmasked", approve=True)
    assert unmasked["actions"] == ["systemctl unmask --runtime shaperd.service"]
    assert unmasked["unit"]["masked"] is False and ["unmask", "--runtime", "shaperd.service"] in calls(systemd)
    restarted = unit(state="restarted", approve=True)
    assert restarted["_rc"] == 0, restarted["msg"]
    assert restarted["actions"] == ["systemctl stop shaperd.service", "systemctl start shaperd.service"]
    assert restarted["timings"]["stop_s"] is not None and restarted["timings"]["start_to_hooks_s"] > 0
    assert restarted["unit"]["main_pid"] not in (0, pid)
    assert {h["xdp"]["owner"] for h in restarted["hooks"]} == {"service"}
    assert unit(state="stopped", approve=True)["unit"]["main_pid"] == 0


def test_a_service_that_will_not_start_and_an_unknown_unit(shaperd, bpffs, bridge, tmp_path, systemd):
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    bad = str(tmp_path / "bad.conf")
    with open(bad, "w") as fh:
        fh.write("mode = bridge\nto_internet = %s\n" % bridge.if_a)   # shaperd refuses it and exits 2
    add_unit(systemd, "shaperd.service", [shaperd["binary"], bad])
    result = run_module("service", dict(name="shaperd", config=conf, state="started", approve=True, timeout=1),
                        env=systemd.env)
    assert result["_rc"] == 1 and result["changed"] is True
    assert result["msg"] == (
        "the service's XDP programs did not appear within 1s: %s (netns %s): no XDP program; %s (netns %s): no XDP "
        "program; shaperd.service is failed/failed, MainPID 0, 0 restart(s). This run changed the host and this is "
        "left: ran `systemctl start shaperd.service` (undo: systemctl stop shaperd.service). "
        "Fix: see `journalctl -u shaperd.service` (or the service's log) for why it did not attach, or raise timeout."
        % (bridge.if_a, bridge.ns_a, bridge.if_c, bridge.ns_a))
    assert result["changes_left"] == [{"change": "ran `systemctl start shaperd.service`",
                                       "undo": "systemctl stop shaperd.service"}]

    unknown = run_module("service", dict(name="lqosd", kind="shaperd", config=conf), env=systemd.env)
    assert unknown["_rc"] == 1 and unknown["msg"] == (
        "systemd has no unit lqosd.service (LoadState=not-found). Fix: install the service's unit file, or fix name.")


def test_programs_the_collection_attached_are_the_collections(shaperd, bpffs, bridge, tmp_path):
    """With the collection as the loader (lqos.bpf.attach, its pins under <pin_root>/lqos_bpf/ and its record),
    the same hooks read as the collection's, and a service that holds nothing there is not verified."""
    state_dir = str(tmp_path / "attach-state")
    attached = run_module("attach", dict(spec="reference", object=shaperd["object"], pin_root=bpffs,
                                         interface=bridge.if_a, netns=bridge.ns_a, state_dir=state_dir,
                                         approve=True))
    assert attached["_rc"] == 0, attached.get("msg")
    conf = config(tmp_path, bpffs, bridge, write_limit=0)
    idle = subprocess.Popen(["sleep", "60"])
    try:
        args = dict(name="shaperd", config=conf, pid=idle.pid, attach_state_dir=state_dir)
        result = run_module("service", args)
        assert result["_rc"] == 0, result["msg"]
        first = result["hooks"][0]
        assert (first["xdp"]["owner"], first["tc_egress"]["owner"]) == ("collection", "collection")
        assert result["held_prog_ids"] == [] and result["hooks"][1]["xdp"] is None
        # The record alone (pins gone, programs still attached) keeps them the collection's.
        shutil.rmtree(os.path.join(bpffs, "lqos_bpf"))
        again = run_module("service", args)
        assert again["hooks"][0]["xdp"]["owner"] == "collection", again["hooks"]
        # Without the record either, nothing says whose they are.
        alone = run_module("service", dict(args, attach_state_dir=str(tmp_path / "none")))
        assert alone["hooks"][0]["xdp"]["owner"] == "foreign"
        verified = run_module("service", dict(args, state="verified", timeout=0, object=shaperd["object"]))
        found = "xdp_shaper (id %d, tag %s, owner collection)" % (first["xdp"]["id"], first["xdp"]["tag"])
        assert verified["_rc"] == 1 and verified["problems"][0] == (
            "%s (netns %s) XDP: %s is not held by the service's main process %d; expected one of %s held by it."
            % (bridge.if_a, bridge.ns_a, found, idle.pid, EXPECTED))
    finally:
        idle.kill()
        idle.wait()
