"""Kernel policy on the real kernel: what the kernel under test allows tracing programs is probed, never
assumed, and both refusal paths are reproduced on every kernel.

- the staged refusal (tracing_refusal.py: EPERM before verification for tracing programs, every capability
  kept) gives the "refused before verification by kernel policy" message with the candidates no probe
  could rule out, while XDP and TC load and attach: the path of the machines whose policy refuses
  iterators, wherever the suite runs;
- a module started without CAP_PERFMON and CAP_SYS_ADMIN (CAP_BPF and CAP_NET_ADMIN kept), inside its
  network namespace, attaches a simple XDP/TC object and is told which capabilities it lacks;
- lockdown and the active LSMs are read from securityfs, mounted (when the host has it unmounted) only in
  a private mount namespace of a child.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from lqos_testlib import (TRACING_REFUSED, build_reference, compile_bpf, drop_caps_prefix, left_out_warnings,
                          probe_as_module, refusal_prefix, run_module, sh, PROBE_ITER_C)

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kernel_facts, policy_causes

pytestmark = pytest.mark.usefixtures("tools")

# XDP and TC programs without packet pointer arithmetic (the verifier accepts them without CAP_PERFMON)
# next to the smallest iterator.
SIMPLE_C = PROBE_ITER_C.replace('char _license[] SEC("license") = "GPL";', r"""
SEC("xdp")
int probe_xdp(struct xdp_md *ctx) { return XDP_PASS; }

SEC("tc")
int probe_tc(struct __sk_buff *skb) { return 0; }

char _license[] SEC("license") = "GPL";
""")
SIMPLE_SPEC = {"name": "simple", "sources": {"kern": "simple.c"}, "outputs": {"object": "simple.o"},
               "attach": {"xdp": "probe_xdp", "tc": [{"program": "probe_tc", "direction": "egress"}]}}
ITER_WHAT = 'program probe_iter (SEC("iter/bpf_map_elem"), tracing)'
POLICY = "refused before verification by kernel policy; candidates not ruled out: "


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    work = tmp_path_factory.mktemp("kernel_policy")
    return {"simple": compile_bpf(work, "simple", SIMPLE_C), "reference": build_reference(work, "reference", "ref")}


def probe_under(prefix, obj, names):
    """The product's probe of ``names`` in a process started under ``prefix``: ({name: row}, kernel facts)."""
    import json
    import sys
    script = ("import json, sys\n"
              "from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O\n"
              "from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kernel_facts\n"
              "print(json.dumps([O.probe_programs(sys.argv[1], names=sys.argv[2:]), kernel_facts()]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(list(prefix) + [sys.executable, "-c", script, obj] + list(names), capture_output=True,
                          text=True, env=env, cwd="/", check=False)
    assert proc.returncode == 0, proc.stderr
    rows, kernel = json.loads(proc.stdout)
    return {r["name"]: r for r in rows}, kernel


def expected_policy_reason(what, kernel):
    """The reason the product must give for a tracing program refused before verification, from the facts the
    loading process probed: the proven causes, or the kernel-policy text with what was not ruled out."""
    causes, ruled_out, candidates = policy_causes("tracing", kernel)
    if causes:
        return "the kernel refused %s before verifying it: %s" % (what, "; ".join(causes))
    return "the kernel refused %s before verifying it: %s%s%s" % (
        what, POLICY, "; ".join(candidates), ("; ruled out: " + "; ".join(ruled_out)) if ruled_out else "")


def test_the_tiny_iterator_and_the_products_probe_of_flow_reader_agree(objs):
    """The session's probe (a real trial load of the smallest iterator) and the product's probe of the
    reference object's flow_reader give one answer for a module of this pass; in the refused pass, no."""
    tiny = probe_as_module(objs["simple"], ["probe_iter"])["rows"]["probe_iter"]
    flow = probe_as_module(objs["reference"], ["flow_reader"])["rows"]["flow_reader"]
    assert tiny["loadable"] == flow["loadable"], (tiny, flow)
    if TRACING_REFUSED:
        assert (flow["loadable"], flow["class"], flow["errno"]) == (False, "kernel_policy", 1), flow
    if not flow["loadable"]:
        assert flow["class"] == "kernel_policy" and "verifier" not in flow["reason"], flow


def test_the_staged_refusal_refuses_tracing_before_verification_and_nothing_else(objs):
    rows, kernel = probe_under(refusal_prefix(), objs["simple"], ["probe_xdp", "probe_tc", "probe_iter"])
    assert rows["probe_xdp"]["loadable"] and rows["probe_tc"]["loadable"], rows
    it = rows["probe_iter"]
    assert (it["loadable"], it["class"], it["errno"]) == (False, "kernel_policy", 1), it
    assert all(kernel["capabilities"].values()), kernel    # nothing was dropped: the policy refused it
    assert it["reason"] == expected_policy_reason(ITER_WHAT, kernel)
    if not policy_causes("tracing", kernel)[0]:
        assert POLICY in it["reason"] and "lacks" not in it["reason"]
        assert "ruled out: capabilities (CapEff holds CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)" in it["reason"]


def test_an_unexplained_refusal_with_every_capability_names_no_cause(objs):
    """In this process (every capability): where the kernel loads iterators the case cannot happen; where it
    refuses them, the reason names only what the probe proved, else the kernel policy and its candidates."""
    row = O.probe_programs(objs["simple"], names=["probe_iter"])[0]
    kernel = kernel_facts()
    if row["loadable"]:
        assert row["reason"] is None and row["class"] is None
        return
    assert row["class"] == "kernel_policy" and row["errno"] == 1, row
    assert row["reason"] == expected_policy_reason(ITER_WHAT, kernel)
    assert "CAP_PERFMON and CAP_SYS_ADMIN (CapEff" not in row["reason"]


def test_the_refused_path_attaches_the_data_path_and_leaves_flow_reader_out(objs, netns_pair, bpffs, tmp_path):
    """The README's first command under the staged refusal, on any kernel: XDP and TC attach, flow_reader is
    left out with the kernel-policy warning, a rerun changes nothing."""
    args = dict(spec="reference", object=objs["reference"], pin_root=bpffs, interface=netns_pair.if_a,
                netns=netns_pair.ns_a, state_dir=str(tmp_path / "state"), approve=True)
    res = run_module("attach", args, prefix=() if TRACING_REFUSED else refusal_prefix())
    assert res["_rc"] == 0, res.get("msg")
    assert [(e["program"], e["class"]) for e in res["left_out"]] == [("flow_reader", "kernel_policy")]
    reason = res["left_out"][0]["reason"]
    kernel = probe_under(refusal_prefix(), objs["simple"], ["probe_iter"])[1]
    assert reason == expected_policy_reason('program flow_reader (SEC("iter/bpf_map_elem"), tracing)', kernel)
    if TRACING_REFUSED:
        assert res["warnings"] == left_out_warnings(objs["reference"], netns_pair.if_a, "reference")
    assert res["warnings"] == ['optional program flow_reader (SEC("iter/bpf_map_elem")) was left out on %s: %s. '
                               'Lost: reading maps through a BPF iterator (userspace must walk the map itself). '
                               'Fix: %s' % (netns_pair.if_a, reason, res["left_out"][0]["fix"])]
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert M.prog_info_by_id(H.xdp_query(idx)["prog_id"])["name"] == "xdp_shaper"
        assert M.prog_info_by_id(H.tc_query(idx, "egress", 1, 0xC02F))["name"] == "tc_classify"
    again = run_module("attach", args, prefix=() if TRACING_REFUSED else refusal_prefix())
    assert again["_rc"] == 0 and again["changed"] is False, again.get("msg")


def test_without_cap_perfmon_and_cap_sys_admin_a_module_in_its_netns_attaches_and_names_the_caps(
        objs, netns_pair, bpffs, tmp_path):
    """Started inside the target netns without CAP_SYS_ADMIN (setns(2) would need it) and CAP_PERFMON: the
    module stays in its namespace, attaches XDP and TC, and says the iterator was refused for the missing
    capabilities (read from CapEff)."""
    prefix = ["nsenter", "--net=/run/netns/" + netns_pair.ns_a] + drop_caps_prefix()
    args = dict(spec=SIMPLE_SPEC, object=objs["simple"], pin_root=bpffs, interface=netns_pair.if_a,
                netns=netns_pair.ns_a, state_dir=str(tmp_path / "state"), approve=True)
    res = run_module("attach", args, prefix=prefix)
    assert res["_rc"] == 0, res.get("msg")
    assert [e["program"] for e in res["left_out"]] == ["probe_iter"]
    assert res["left_out"][0]["reason"] == (
        "the kernel refused %s before verifying it: the loading process lacks CAP_PERFMON and CAP_SYS_ADMIN (CapEff "
        "of /proc/self/status), which tracing programs need" % ITER_WHAT)
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert M.prog_info_by_id(H.xdp_query(idx)["prog_id"])["name"] == "probe_xdp"
        assert M.prog_info_by_id(H.tc_query(idx, "egress", 1, 0xC02F))["name"] == "probe_tc"


def test_lockdown_and_lsms_come_from_securityfs_and_the_hosts_mounts_stay_as_they_are():
    with open("/proc/self/mounts") as fh:
        before = fh.read()
    facts = kernel_facts()
    with open("/proc/self/mounts") as fh:
        assert fh.read() == before
    read = sh("unshare", "-m", "--propagation", "private", "sh", "-c",
              "mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security; "
              "cat /sys/kernel/security/lockdown; echo; cat /sys/kernel/security/lsm", check=False)
    if read.returncode != 0:
        assert facts["lockdown"] is None, read.stderr
        return
    lockdown, lsm = read.stdout.split("\n", 1)
    assert "[%s]" % facts["lockdown"] in lockdown
    assert facts["lsm"] == lsm.strip()


def test_without_cap_sys_admin_outside_the_netns_the_error_says_how_to_run_it(objs, netns_pair, bpffs, tmp_path):
    args = dict(spec=SIMPLE_SPEC, object=objs["simple"], pin_root=bpffs, interface=netns_pair.if_a,
                netns=netns_pair.ns_a, state_dir=str(tmp_path / "state"), approve=True)
    res = run_module("attach", args, prefix=drop_caps_prefix())
    assert res["_rc"] != 0 and res.get("failed"), res
    assert res["msg"].startswith(
        "entering network namespace %s failed: setns(2) needs CAP_SYS_ADMIN, which this process lacks; run it as "
        "root, or start it inside that namespace (ip netns exec %s ...), where it needs no setns"
        % (netns_pair.ns_a, netns_pair.ns_a)), res["msg"]
    assert "Traceback" not in res["msg"] + res["_stderr"]
    with H.netns(netns_pair.ns_a):
        assert H.xdp_query(H.ifindex(netns_pair.if_a))["prog_id"] == 0
