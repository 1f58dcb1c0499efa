"""Program roles on the real kernel: what this kernel refuses is probed, diagnosed by its
cause, and left out when optional, while the XDP/TC data path is attached.

Two kinds of refusal are produced on any kernel: a program whose attach target does not
exist (fentry and kprobe on ``lqos_bpf_no_such_function``), and a kernel security policy
that refuses tracing programs before verification, as the kernels that forbid BPF
iterators do: a BPF-LSM program on the ``bpf`` hook returns EPERM for every
BPF_PROG_TYPE_TRACING load made from one test network namespace (nothing else on the
machine is affected, and the policy goes with the test). Where the kernel has no active
BPF LSM (or refuses the policy program itself), tracing_refusal.py stages the same refusal.
"""
from __future__ import annotations

import os

import pytest

from lqos_testlib import build_reference, compile_bpf, refusal_prefix, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import LibbpfError
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kernel_facts

pytestmark = pytest.mark.usefixtures("tools")

# A kernel policy that refuses tracing programs (iterators, fentry, ...) to the processes of one
# network namespace, with EPERM before verification. This project's own source.
POLICY_C = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

const volatile __u32 target_netns = 0;

SEC("lsm/bpf")
int BPF_PROG(refuse_tracing_loads, int cmd, union bpf_attr *attr)
{
    struct task_struct *task;

    if (cmd != BPF_PROG_LOAD)
        return 0;
    task = bpf_get_current_task_btf();
    if (BPF_CORE_READ(task, nsproxy, net_ns, ns.inum) != target_netns)
        return 0;
    return BPF_CORE_READ(attr, prog_type) == BPF_PROG_TYPE_TRACING ? -1 : 0;
}

char _license[] SEC("license") = "GPL";
"""

PROGS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_iter_meta { void *seq; __u64 session_id; __u64 seq_num; } __attribute__((preserve_access_index));
struct bpf_iter__bpf_map_elem {
    struct bpf_iter_meta *meta; void *map; void *key; void *value;
} __attribute__((preserve_access_index));

SEC("xdp")
int probe_xdp(struct xdp_md *ctx) { return XDP_PASS; }

SEC("tc")
int probe_tc(struct __sk_buff *skb) { return 0; }

SEC("iter/bpf_map_elem")
int probe_iter(struct bpf_iter__bpf_map_elem *ctx) { return 0; }

SEC("fentry/lqos_bpf_no_such_function")
int probe_fentry(void *ctx) { return 0; }

SEC("kprobe/lqos_bpf_no_such_function")
int probe_kprobe(void *ctx) { return 0; }

char _license[] SEC("license") = "GPL";
"""

SPEC = {"name": "progs", "sources": {"kern": "progs.c"}, "outputs": {"object": "progs.o"},
        "attach": {"xdp": "probe_xdp", "tc": [{"program": "probe_tc", "direction": "egress"}]}}
MISSING = "lqos_bpf_no_such_function"


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    work = tmp_path_factory.mktemp("programs")
    out = {"progs": compile_bpf(work, "progs", PROGS_C), "reference": build_reference(work, "reference", "ref")}
    with open(os.path.join(str(work), "vmlinux.h"), "w") as fh:
        fh.write(sh("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c").stdout)
    out["policy"] = compile_bpf(work, "policy", POLICY_C)
    return out


@pytest.fixture
def tracing_refused(objs, netns_pair):
    """A prefix whose processes (run in netns_pair.ns_a) the kernel refuses tracing programs: a BPF-LSM
    policy scoped to that netns where the kernel loads one; otherwise (BPF LSM not active, or tracing
    programs already refused to this process, which a BPF-LSM program is too) the staged refusal of
    tracing_refusal.py, so the test runs on every kernel."""
    inum = os.stat(os.path.join("/run/netns", netns_pair.ns_a)).st_ino
    # nsenter, not `ip netns exec`: that remounts /sys and so hides the bpffs at /sys/fs/bpf
    netns_exec = ("nsenter", "--net=" + os.path.join("/run/netns", netns_pair.ns_a))
    try:
        lo = O.load_object(objs["policy"], rodata={"target_netns": inum})
    except LibbpfError as exc:
        print("the kernel refuses a BPF-LSM policy here (%s): staged refusal" % exc.msg)
        yield tuple(refusal_prefix()) + netns_exec
        return
    try:
        link = lo.attach_program("refuse_tracing_loads")
    except LibbpfError as exc:
        lo.close()
        print("the BPF LSM is not active here (%s): staged refusal" % exc.msg)
        yield tuple(refusal_prefix()) + netns_exec
        return
    try:
        yield netns_exec
    finally:
        link.close()
        lo.close()


def iterators_load_here(obj) -> bool:
    """This kernel's own answer (probed the same way the module probes)."""
    return {r["name"]: r["loadable"] for r in O.probe_programs(obj)}["probe_iter"]


def attach(pair, bpffs, tmp_path, obj, spec, prefix=(), netns=True, **kw):
    args = dict(spec=spec, object=obj, pin_root=bpffs, interface=pair.if_a, state_dir=str(tmp_path / "state"),
                approve=True)
    if netns:
        args["netns"] = pair.ns_a
    args.update(kw)
    return run_module("attach", args, prefix=prefix)


def hooks(pair):
    with H.netns(pair.ns_a):
        idx = H.ifindex(pair.if_a)
        xdp = H.xdp_query(idx)
        tc = H.tc_query(idx, "egress", 1, 0xC02F)
    names = {}
    for pid in (xdp["prog_id"], tc):
        if pid:
            names[pid] = M.prog_info_by_id(pid)["name"]
    return {"xdp": names.get(xdp["prog_id"]), "tc": names.get(tc)}


def test_probe_classifies_each_program_by_its_cause(objs):
    rows = {r["name"]: r for r in O.probe_programs(objs["progs"])}
    assert rows["probe_xdp"]["loadable"] and rows["probe_tc"]["loadable"]
    assert rows["probe_fentry"]["class"] == "attach_target"
    assert rows["probe_fentry"]["reason"] == (
        'program probe_fentry (SEC("fentry/%s"), tracing) attaches to %s, which this kernel does not have (no such '
        'kernel function or BTF id)' % (MISSING, MISSING))
    config = kernel_facts()["config"]
    kprobes = not config or config.get("CONFIG_KPROBES") in ("y", "m")
    if kprobes:
        assert rows["probe_kprobe"]["class"] == "attach_target"
        assert "not in /proc/kallsyms" in rows["probe_kprobe"]["reason"]
    else:   # this kernel: a kprobe can never attach, whatever its symbol
        assert rows["probe_kprobe"]["class"] == "kernel_policy"
        assert "this kernel is built without CONFIG_KPROBES=y: it loads but can never be attached" in \
            rows["probe_kprobe"]["reason"]
    if not rows["probe_iter"]["loadable"]:
        assert rows["probe_iter"]["class"] == "kernel_policy", rows["probe_iter"]


def test_optional_programs_the_kernel_refuses_are_left_out(objs, netns_pair, bpffs, tmp_path):
    res = attach(netns_pair, bpffs, tmp_path, objs["progs"], SPEC)
    assert res["_rc"] == 0, res.get("msg")
    assert res["changed"] is True and res["loaded"] is True
    assert hooks(netns_pair) == {"xdp": "probe_xdp", "tc": "probe_tc"}
    assert res["programs"] == {"probe_xdp": "required", "probe_tc": "required", "probe_iter": "optional",
                               "probe_fentry": "optional", "probe_kprobe": "optional"}
    left = {e["program"]: e for e in res["left_out"]}
    # a kprobe is loaded only when attach's kprobes asks for it: not asked, it is neither loaded nor left out
    expected = {"probe_fentry"} | (set() if iterators_load_here(objs["progs"]) else {"probe_iter"})
    assert set(left) == expected
    assert left["probe_fentry"]["class"] == "attach_target"
    assert left["probe_fentry"]["feature"] == "kernel function tracing (fentry)"
    warned = [w for w in res.get("warnings", []) if "was left out" in w]
    assert len(warned) == len(expected)
    assert any(w.startswith('optional program probe_fentry (SEC("fentry/%s")) was left out on %s: '
                            % (MISSING, netns_pair.if_a)) for w in warned), warned
    assert not any("probe_kprobe" in w for w in warned)
    assert any("(without %s)" % ", ".join(sorted(expected)) in a or "; without %s)" % ", ".join(sorted(expected)) in a
               for a in res["actions"]), res["actions"]
    again = attach(netns_pair, bpffs, tmp_path, objs["progs"], SPEC)
    assert again["_rc"] == 0 and again["changed"] is False and again["loaded"] is False, again
    assert {e["program"] for e in again["left_out"]} == expected


def test_plan_reports_the_programs_it_would_leave_out_and_changes_nothing(objs, netns_pair, bpffs, tmp_path):
    res = attach(netns_pair, bpffs, tmp_path, objs["progs"], SPEC, approve=False)
    assert res["_rc"] == 0 and res["applied"] is False
    assert "probe_fentry" in {e["program"] for e in res["left_out"]}
    assert "probe_kprobe" not in {e["program"] for e in res["left_out"]}   # not asked for: never loaded
    assert hooks(netns_pair) == {"xdp": None, "tc": None}
    assert os.listdir(bpffs) == [] or set(os.listdir(bpffs)) <= {"maps.debug", "progs.debug"}


def test_a_refused_required_program_stops_with_its_cause_and_changes_nothing(objs, netns_pair, bpffs, tmp_path):
    spec = dict(SPEC, programs={"probe_fentry": "required"})
    res = attach(netns_pair, bpffs, tmp_path, objs["progs"], spec)
    assert res["_rc"] == 1 and res.get("failed"), res
    assert res["msg"].startswith("loading %s failed: program probe_fentry (SEC(\"fentry/%s\"), tracing) attaches to %s, "
                                 "which this kernel does not have" % (objs["progs"], MISSING, MISSING)), res["msg"]
    assert "; required program probe_fentry was refused, so nothing was attached or changed on %s." \
        % netns_pair.if_a in res["msg"]
    assert "verifier" not in res["msg"]
    assert hooks(netns_pair) == {"xdp": None, "tc": None}


def test_reference_on_a_kernel_that_refuses_tracing_programs(objs, netns_pair, bpffs, tmp_path, tracing_refused):
    """The README's first command on a kernel that refuses BPF iterators: XDP and TC attach,
    flow_reader is left out with the right diagnosis, a second run changes nothing."""
    prefix = tracing_refused
    res = attach(netns_pair, bpffs, tmp_path, objs["reference"], "reference", prefix=prefix, netns=False)
    assert res["_rc"] == 0, res.get("msg")
    assert [(e["program"], e["class"]) for e in res["left_out"]] == [("flow_reader", "kernel_policy")]
    reason = res["left_out"][0]["reason"]
    assert reason.startswith('the kernel refused program flow_reader (SEC("iter/bpf_map_elem"), tracing) before '
                             'verifying it: '), reason
    assert "verifier" not in reason
    assert res["warnings"] == ['optional program flow_reader (SEC("iter/bpf_map_elem")) was left out on %s: %s. '
                               'Lost: reading maps through a BPF iterator (userspace must walk the map itself). '
                               'Fix: %s' % (netns_pair.if_a, reason, res["left_out"][0]["fix"])]
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert M.prog_info_by_id(H.xdp_query(idx)["prog_id"])["name"] == "xdp_shaper"
        assert M.prog_info_by_id(H.tc_query(idx, "egress", 1, 0xC02F))["name"] == "tc_classify"
        assert M.prog_info_by_id(H.tc_query(idx, "ingress", 1, 0xC02F))["name"] == "tc_bridge_redir"
    again = attach(netns_pair, bpffs, tmp_path, objs["reference"], "reference", prefix=prefix, netns=False)
    assert again["_rc"] == 0 and again["changed"] is False, again
    assert [e["program"] for e in again["left_out"]] == ["flow_reader"]


def test_preflight_sees_the_policy_refusal(objs, tracing_refused):
    res = run_module("toolchain_info", dict(spec="reference", object=objs["reference"]),
                     prefix=tracing_refused)
    assert res["_rc"] == 0 and res["ok"] is True, res.get("msg")
    row = {r["name"]: r for r in res["programs"]}["flow_reader"]
    assert (row["loadable"], row["class"], row["errno"], row["role"]) == (False, "kernel_policy", 1, "optional")
    assert any(w.startswith("program:flow_reader: optional program flow_reader cannot load here (kernel_policy)")
               for w in res["warnings"]), res["warnings"]


def test_preflight_reports_each_program_with_its_role(objs):
    res = run_module("toolchain_info", dict(spec=SPEC, object=objs["progs"]))
    assert res["_rc"] == 0, res.get("msg")
    rows = {r["name"]: r for r in res["programs"]}
    assert rows["probe_xdp"]["role"] == "required" and rows["probe_xdp"]["loadable"] is True
    assert rows["probe_fentry"]["role"] == "optional" and rows["probe_fentry"]["class"] == "attach_target"
    checks = {c["name"]: c for c in res["checks"]}
    assert checks["program:probe_fentry"]["required"] is False and checks["program:probe_fentry"]["ok"] is False
    assert res["map_types"] == {}
    spec = dict(SPEC, programs={"probe_kprobe": "required"})
    required = run_module("toolchain_info", dict(spec=spec, object=objs["progs"], fail_on_missing=True))
    assert required["_rc"] == 1
    row = {r["name"]: r for r in O.probe_programs(objs["progs"], names=["probe_kprobe"])}["probe_kprobe"]
    assert "- program:probe_kprobe: required program probe_kprobe cannot load here (%s): %s. Fix: %s" \
        % (row["class"], row["reason"], row["fix"]) in required["msg"], required["msg"]


def test_preflight_of_the_reference_object(objs):
    res = run_module("toolchain_info", dict(spec="reference", object=objs["reference"]))
    assert res["_rc"] == 0, res.get("msg")
    assert {r["name"]: r["role"] for r in res["programs"]} == {
        "xdp_shaper": "required", "tc_classify": "required", "tc_bridge_redirect": "required",
        "flow_reader": "optional", "xmit_counter": "optional"}
    assert res["map_types"] == {"array": True, "cpumap": True, "hash": True, "lpm_trie": True, "lru_hash": True,
                                "percpu_array": True, "percpu_hash": True}
    assert res["ok"] is True


def test_object_only_preflight_stops_on_a_refused_required_program(objs):
    spec = dict(SPEC, programs={"probe_fentry": "required"})
    res = run_module("toolchain_info", dict(spec=spec, object=objs["progs"], checks="object", fail_on_missing=True))
    assert res["_rc"] == 1
    assert res["msg"].startswith("preflight found 1 problem(s) on this host:\n- program:probe_fentry: required program "
                                 "probe_fentry cannot load here (attach_target): "), res["msg"]
    assert "toolchain" not in res or not res.get("checks")
    ok = run_module("toolchain_info", dict(spec=SPEC, object=objs["progs"], checks="object", fail_on_missing=True))
    assert ok["_rc"] == 0 and ok["ok"] is True
    assert [c["name"] for c in ok["checks"]] == ["program:probe_xdp", "program:probe_tc", "program:probe_iter",
                                                 "program:probe_fentry", "program:probe_kprobe"]


def test_the_fleet_audit_carries_each_program(objs, bpffs):
    build_root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(objs["reference"])))),
                              "ref-out")
    assert os.path.isdir(os.path.join(build_root, "current")), build_root
    res = run_module("abi_info", dict(spec="reference", build_root=build_root, pin_root=bpffs, toolchain=False))
    assert res["_rc"] == 0, res.get("msg")
    rows = {r["name"]: r for r in res["programs"]}
    assert set(rows) == {"xdp_shaper", "tc_classify", "tc_bridge_redirect", "flow_reader", "xmit_counter"}
    assert rows["xdp_shaper"]["role"] == "required" and rows["xdp_shaper"]["loadable"] is True
    assert rows["flow_reader"]["role"] == "optional"
    assert not any(p.startswith("required program") for p in res["problems"])
