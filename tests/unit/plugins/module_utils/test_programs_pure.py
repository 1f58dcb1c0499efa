"""Program roles and refusal classes (plain data; the kernel side is in tests/functional/test_programs.py)."""
from __future__ import annotations

import errno

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import (
    _tail, classify_refusal, feature_of, kprobe_target, program_roles, verifier_ran,
)

PROGS = [{"name": "xdp_shaper", "type_name": "xdp"}, {"name": "tc_classify", "type_name": "sched_cls"},
         {"name": "tc_bridge", "type_name": "sched_cls"}, {"name": "flow_reader", "type_name": "tracing"},
         {"name": "xmit", "type_name": "kprobe"}]
SPEC = {"attach": {"xdp": "xdp_shaper", "tc": [{"program": "tc_classify"},
                                               {"program": "tc_bridge", "optional": True}]}}
POLICY_LOG = "processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"
VERIFIER_LOG = ("0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +0)\n1: (71) r0 = *(u8 *)(r2 +0)\n"
                "invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)\n"
                "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0\n")


def test_attached_programs_are_required_the_rest_optional():
    assert program_roles(SPEC, PROGS) == {"xdp_shaper": "required", "tc_classify": "required",
                                          "tc_bridge": "optional", "flow_reader": "optional", "xmit": "optional"}


def test_spec_programs_override_the_default_roles():
    spec = dict(SPEC, programs={"flow_reader": "required", "xmit": "disabled"})
    roles = program_roles(spec, PROGS)
    assert roles["flow_reader"] == "required" and roles["xmit"] == "disabled"


def test_without_a_spec_the_data_path_types_are_required():
    assert program_roles(None, PROGS) == {"xdp_shaper": "required", "tc_classify": "required",
                                          "tc_bridge": "required", "flow_reader": "optional", "xmit": "optional"}


@pytest.mark.parametrize("log,ran", [("", False), (POLICY_LOG, False), (VERIFIER_LOG, True),
                                     ("0: (b7) r0 = 2\n", True)])
def test_verifier_ran_needs_verified_instructions(log, ran):
    assert verifier_ran(log) is ran


def test_a_refusal_before_verification_is_kernel_policy_never_the_verifier():
    kernel = {"lockdown": "none", "config": {"CONFIG_BPF_JIT": "y", "CONFIG_DEBUG_INFO_BTF": "y",
                                             "CONFIG_FUNCTION_TRACER": "y"},
              "capabilities": {"CAP_PERFMON": False, "CAP_SYS_ADMIN": False, "CAP_BPF": True}}
    r = classify_refusal("flow_reader", "iter/bpf_map_elem", "tracing", errno.EPERM, POLICY_LOG, [], kernel)
    assert r["class"] == "kernel_policy"
    assert r["reason"] == ('the kernel refused program flow_reader (SEC("iter/bpf_map_elem"), tracing) before '
                           'verifying it: the loading process lacks CAP_PERFMON and CAP_SYS_ADMIN (CapEff of '
                           '/proc/self/status), which tracing programs need')
    assert r["fix"] == ("boot a kernel that allows tracing programs, or it is optional: leave it out (spec programs: "
                        "{flow_reader: optional or disabled})")
    assert "verifier" not in r["reason"] and "BPF source" not in r["fix"]


def test_kernel_policy_names_lockdown_and_the_missing_config_options():
    kernel = {"lockdown": "confidentiality", "config": {"CONFIG_KPROBES": "n", "CONFIG_BPF_EVENTS": "y"},
              "capabilities": None}
    r = classify_refusal("xmit", "kprobe/dev_hard_start_xmit", "kprobe", errno.EINVAL, "", [], kernel)
    assert r["class"] == "kernel_policy"
    assert "kernel lockdown is in confidentiality mode (/sys/kernel/security/lockdown)" in r["reason"]
    assert "this kernel is built without CONFIG_KPROBES=y, CONFIG_KPROBE_EVENTS=y" in r["reason"]


def test_policy_with_everything_in_place_points_at_a_security_policy():
    kernel = {"lockdown": "none", "config": {"CONFIG_BPF_JIT": "y", "CONFIG_DEBUG_INFO_BTF": "y",
                                             "CONFIG_FUNCTION_TRACER": "y"},
              "capabilities": {"CAP_PERFMON": True, "CAP_SYS_ADMIN": True}}
    r = classify_refusal("flow_reader", "iter/bpf_map_elem", "tracing", errno.EPERM, "", [], kernel)
    assert r["reason"] == (
        'the kernel refused program flow_reader (SEC("iter/bpf_map_elem"), tracing) before verifying it: refused '
        'before verification by kernel policy; candidates not ruled out: an LSM policy (active LSMs not '
        'readable); a vendor or distribution BPF restriction (see dmesg); ruled out: capabilities (CapEff holds '
        'CAP_PERFMON, CAP_SYS_ADMIN); kernel config (CONFIG_BPF_JIT, CONFIG_DEBUG_INFO_BTF, '
        'CONFIG_FUNCTION_TRACER set); lockdown (none mode, /sys/kernel/security/lockdown)')


def test_an_unexplained_refusal_lists_what_no_probe_could_read_and_names_no_cause():
    kernel = {"lockdown": None, "lsm": "lockdown,capability,landlock,bpf", "config": None, "capabilities": None}
    r = classify_refusal("flow_reader", "iter/bpf_map_elem", "tracing", errno.EPERM, "", [], kernel)
    assert r["reason"] == (
        'the kernel refused program flow_reader (SEC("iter/bpf_map_elem"), tracing) before verifying it: refused '
        'before verification by kernel policy; candidates not ruled out: missing CAP_PERFMON and CAP_SYS_ADMIN '
        '(CapEff of /proc/self/status not readable); kernel config (CONFIG_BPF_JIT, CONFIG_DEBUG_INFO_BTF, '
        'CONFIG_FUNCTION_TRACER; no config readable); kernel lockdown (/sys/kernel/security/lockdown not '
        'readable); an LSM policy (active LSMs: lockdown,capability,landlock,bpf); a vendor or distribution BPF '
        'restriction (see dmesg)')


def test_integrity_lockdown_is_ruled_out_and_only_proven_causes_are_named():
    kernel = {"lockdown": "integrity", "config": {"CONFIG_BPF_JIT": "y", "CONFIG_DEBUG_INFO_BTF": "y",
                                                  "CONFIG_FUNCTION_TRACER": "y"},
              "capabilities": {"CAP_PERFMON": False, "CAP_SYS_ADMIN": False, "CAP_BPF": True}}
    r = classify_refusal("flow_reader", "iter/bpf_map_elem", "tracing", errno.EPERM, "", [], kernel)
    assert "lockdown" not in r["reason"] and "kernel policy" not in r["reason"]
    assert r["reason"].endswith("lacks CAP_PERFMON and CAP_SYS_ADMIN (CapEff of /proc/self/status), which "
                                "tracing programs need")


def test_a_missing_attach_target_is_named():
    said = ["libbpf: prog 'nofunc': failed to find kernel BTF type ID of 'no_such_fn': -3"]
    r = classify_refusal("nofunc", "fentry/no_such_fn", "tracing", errno.ESRCH, "", said, {})
    assert r["class"] == "attach_target"
    assert "attaches to no_such_fn, which this kernel does not have" in r["reason"]


def test_a_verifier_rejection_keeps_the_log_tail():
    r = classify_refusal("bad", "xdp", "xdp", errno.EACCES, VERIFIER_LOG, [], {})
    assert r["class"] == "verifier"
    assert r["log_tail"].splitlines()[-2].startswith("invalid access to packet")
    assert r["fix"].startswith("fix program bad in the BPF source")


@pytest.mark.parametrize("err", [errno.E2BIG, errno.ENOMEM])
def test_resource_limits(err):
    assert classify_refusal("p", "xdp", "xdp", err, "", [], {})["class"] == "resource_limit"


def test_feature_and_kprobe_target():
    assert feature_of("iter/bpf_map_elem") == "reading maps through a BPF iterator (userspace must walk the map itself)"
    assert kprobe_target("kprobe/dev_hard_start_xmit") == "dev_hard_start_xmit"
    assert kprobe_target("kretprobe/tcp_sendmsg") == "tcp_sendmsg"
    assert kprobe_target("xdp") is None


def test_tail_keeps_last_lines():
    text = "\n".join("line %d" % i for i in range(50)) + "\n\n"
    assert _tail(text, 3) == "line 47\nline 48\nline 49"
