"""Verifier headroom on the real kernel: what every trial load keeps of the verifier's word, the stack chain of a
program with subprograms, a tracing refusal (no figures, no crash), the deploy role stopping a host below
lqos_bpf_min_verifier_headroom before anything live changes, and the fleet report's program x kernel table.

Every expectation comes from a probe of the kernel under test (which programs load, which source of the
instruction count it has), never from the machine the test was written on."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from lqos_testlib import REPO, build_reference, compile_bpf, run_module, sh
from test_playbooks import Host, playbook, write_inventory, xdp_on

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import verifier as V
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

RELEASE = os.uname().release

# main -> middle -> leaf, and main -> side: two chains, the deeper one through side. Summing every frame would say
# more than 512 bytes; the kernel (which walks the chains) loads it.
CHAIN_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Each frame's buffer escapes to a helper (bpf_skb_load_bytes writes it), so clang keeps it whole. */
static __attribute__((noinline)) int leaf(struct __sk_buff *skb)
{
    char buf[200];
    if (bpf_skb_load_bytes(skb, 0, buf, sizeof(buf)))
        return 0;
    return buf[0] + buf[199];
}

static __attribute__((noinline)) int middle(struct __sk_buff *skb)
{
    char buf[64];
    if (bpf_skb_load_bytes(skb, 0, buf, sizeof(buf)))
        return 0;
    return leaf(skb) + buf[63];
}

static __attribute__((noinline)) int side(struct __sk_buff *skb)
{
    char buf[300];
    if (bpf_skb_load_bytes(skb, 0, buf, sizeof(buf)))
        return 0;
    return buf[0] + buf[299];
}

SEC("tc")
int chain_main(struct __sk_buff *skb)
{
    char buf[16];
    if (bpf_skb_load_bytes(skb, 0, buf, sizeof(buf)))
        return 0;
    return (middle(skb) + side(skb) + buf[15]) > 1000 ? 2 : 0;
}

char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("vh"), "reference", "ref")


def probe(obj):
    return {r["name"]: r for r in O.probe_programs(obj, resize={"cpu_map": possible_cpus()})}


def loaded_alone(path: str, name: str, pin_root: str) -> dict:
    """bpf_prog_info of ``name`` loaded alone (the other programs left out), pins under ``pin_root``."""
    others = [p["name"] for p in O.object_info(path)["programs"] if p["name"] != name]
    obj = O.load_object(path, pin_root=pin_root, resize={"cpu_map": possible_cpus()}, disabled=others)
    try:
        return obj.prog_info(name)
    finally:
        obj.close()


def test_every_verified_program_has_its_figures_and_a_refused_one_says_so(reference, bpffs):
    rows = probe(reference)
    verified = [n for n, r in rows.items() if r["verifier"]["status"] == V.VERIFIED]
    assert "xdp_shaper" in verified and "tc_classify" in verified, rows
    for name, row in rows.items():
        v = row["verifier"]
        assert v["kernel"] == RELEASE
        if v["status"] != V.VERIFIED:
            # refused here (by the kernel's policy or a missing attach target): no figures, the reason kept
            assert not row["loadable"] and v == V.not_loaded(V.REFUSED, RELEASE, v["load_ms"]), row
            assert row["class"] and row["reason"]
            continue
        ins, stack = v["insns"], v["stack"]
        # the source is what the kernel offers: bpf_prog_info where it fills verified_insns, else the log
        info = loaded_alone(reference, name, bpffs)
        want = "bpf_prog_info.verified_insns" if info["verified_insns"] else "verifier log"
        assert ins["source"] == want
        if info["verified_insns"]:   # the kernel's own count for the same program
            assert ins["used"] == info["verified_insns"]
        assert 0 < ins["used"] < V.INSN_LIMIT and ins["limit"] == V.INSN_LIMIT
        assert ins["headroom_pct"] == V.headroom_pct(ins["used"], V.INSN_LIMIT)
        # no subprogram in the reference object: one frame, the chain is main alone
        assert stack["method"] == "call_graph" and stack["chain"] == [0] and len(stack["depths"]) == 1
        assert stack["used"] == V.frame(stack["depths"][0]) <= V.STACK_LIMIT
        assert v["headroom_pct"] == min(ins["headroom_pct"], stack["headroom_pct"])
        assert v["load_ms"] > 0 and v["verification_usec"] is not None


def test_toolchain_info_reports_each_program_and_a_left_out_one_without_figures(reference):
    spec = resolve_spec_option("reference", REPO)
    spec["programs"] = dict(spec.get("programs") or {}, xmit_counter="disabled")
    res = run_module("toolchain_info", dict(spec=spec, object=reference, checks="object"))
    assert res["_rc"] == 0, res.get("msg")
    rows = {r["name"]: r for r in res["programs"]}
    table = {r["program"]: r for r in res["verifier_headroom"]}
    assert set(table) == set(rows)
    assert rows["xmit_counter"]["verifier"] == V.not_loaded(V.LEFT_OUT, RELEASE)
    assert table["xmit_counter"]["status"] == "not loaded: left out" and table["xmit_counter"]["headroom_pct"] is None
    here = probe(reference)
    for name in ("xdp_shaper", "tc_classify"):
        v, want = rows[name]["verifier"], here[name]["verifier"]
        assert v["status"] == V.VERIFIED and v["summary"] == want["summary"], (v, want)
        assert table[name] == dict(V.flat(name, v))


def test_the_stack_is_summed_along_the_deepest_call_chain(tmp_path):
    obj = compile_bpf(tmp_path, "chain", CHAIN_C)
    [row] = O.probe_programs(obj)
    assert row["loadable"], row
    stack = row["verifier"]["stack"]
    depths = stack["depths"]
    assert len(depths) == 4 and stack["method"] == "call_graph", stack
    side = depths.index(max(depths))          # the 300-byte frame
    assert max(depths) >= 300 and stack["chain"] == [0, side], stack
    assert stack["used"] == V.frame(depths[0]) + V.frame(depths[side]) < V.STACK_LIMIT
    # every frame summed would exceed 512: only the chain walk explains why the kernel loaded it
    assert sum(V.frame(d) for d in depths) > V.STACK_LIMIT


def test_a_tracing_refusal_gives_no_figures_and_no_crash(reference):
    # Without CAP_PERFMON and CAP_SYS_ADMIN (CAP_BPF and CAP_NET_ADMIN kept) every kernel refuses tracing and
    # kprobe programs before verification. The verifier is stricter for such a loader too (no pointer arithmetic
    # "for !root"), so an XDP or TC program either verifies or is rejected by the verifier: then it keeps the
    # instruction trace (loaded again at log level 1) and, like the refused ones, has no figures.
    script = ("import json, sys\n"
              "from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O\n"
              "from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus\n"
              "rows = O.probe_programs(sys.argv[1], resize={'cpu_map': possible_cpus()})\n"
              "print(json.dumps({r['name']: [r['type_name'], r['class'], r['log_tail'], r['verifier']] "
              "for r in rows}))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(["capsh", "--drop=cap_sys_admin,cap_perfmon", "--", "-c",
                           '"$0" -c "$1" "$2"', sys.executable, script, reference],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {"xdp_shaper", "flow_reader"} <= set(rows), rows
    for name, (type_name, cls, log_tail, v) in rows.items():
        if type_name in ("tracing", "kprobe"):
            assert cls == "kernel_policy", (name, cls)
        if cls is None:
            assert v["status"] == V.VERIFIED and v["headroom_pct"] > 0, (name, v)
            continue
        assert v["status"] == V.REFUSED and v["headroom_pct"] is None, (name, v)
        assert v["insns"] is None and v["stack"] is None and v["summary"] == V.REFUSED
        if cls == "verifier":
            assert re.search(r"^\d+: \([0-9a-f]{2}\)", log_tail, re.M), log_tail


def test_the_rollout_stops_a_host_below_the_threshold_before_anything_live_changes(tmp_path):
    host = Host(str(tmp_path), "tight")
    host.create()
    try:
        host.vars["lqos_bpf_min_verifier_headroom"] = 99.99
        inventory = write_inventory(str(tmp_path / "inventory.yml"), [host], sys.executable)
        # Approved: without the gate this run would pin the maps and attach XDP and TC.
        run = playbook("deploy.yml", inventory, "-e", "lqos_bpf_approve=true")
        assert run.rc == 2 and run.recap["tight"]["failed"] == 1, run
        [failure] = run.failures("tight")
        msg = " ".join(failure["msg"].split())
        # What the kernel says of the built object here, program by program (the figures are deterministic).
        obj = os.path.join(host.state_dir, "reference", "current", "shaper_kern.o")
        rows = probe(obj)
        expected = ["program %s on kernel %s: %s" % (n, RELEASE, r["verifier"]["summary"]) for n, r in rows.items()
                    if r["loadable"] and r["verifier"]["status"] == V.VERIFIED
                    and not r["section"].startswith(("kprobe/", "kretprobe/"))]
        assert "program xdp_shaper on kernel %s: headroom " % RELEASE in msg
        assert msg == ("tight: verifier headroom below lqos_bpf_min_verifier_headroom (99.99 %%), nothing live was "
                       "changed: %s. Fix: make the program(s) smaller or shallower (fewer verified paths, less "
                       "stack, bounded loops; see docs/verifier-headroom.md), boot a kernel where they verify with "
                       "more room, or lower lqos_bpf_min_verifier_headroom." % "; ".join(expected)), msg
        # Nothing live: no program on the hooks, nothing pinned, no attach record, no task changed anything live.
        assert xdp_on(host.pair.ns_a, host.pair.if_a)["id"] == 0
        for direction in ("egress", "ingress"):
            out = sh("ip", "netns", "exec", host.pair.ns_a, "tc", "filter", "show", "dev", host.pair.if_a,
                     direction).stdout
            assert out.strip() == "", out
        assert set(os.listdir(host.pin_root)) <= {"maps.debug", "progs.debug"}
        assert not os.path.exists(host.attach_dir) or os.listdir(host.attach_dir) == []
        assert not any("Attach" in t for t in run.changed_tasks.get("tight", ())), run.changed_tasks
        # The fleet report shows the figures per program and kernel.
        report_dir = str(tmp_path / "report")
        audit = playbook("audit.yml", inventory, "-e", "lqos_bpf_report_dir=" + report_dir)
        assert audit.rc == 0, audit
        report = json.load(open(os.path.join(report_dir, "fleet-abi-report.json")))
        table = report["verifier_headroom"]
        assert table["kernels"] == [RELEASE] and table["programs"] == sorted(rows)
        for name, row in rows.items():
            cell = table["cells"][name][RELEASE]
            assert cell["hosts"] == ["tight"] and cell["status"] == row["verifier"]["status"]
            assert cell["headroom_pct"] == row["verifier"]["headroom_pct"]
        md = open(os.path.join(report_dir, "fleet-abi-report.md")).read()
        x = rows["xdp_shaper"]["verifier"]
        assert "| xdp_shaper | %s %% (insns %s %%, stack %s %%) |" % (
            x["headroom_pct"], x["insns"]["headroom_pct"], x["stack"]["headroom_pct"]) in md
    finally:
        host.destroy()
