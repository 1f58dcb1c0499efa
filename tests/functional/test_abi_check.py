"""lqos.bpf.abi_check on real builds: the reference pipeline built with the real
toolchain, then broken copies of it (C side rebuilt, Rust side re-parsed), each
asserting the exact report. The Rust half is computed exactly as the action plugin
does (plugin_utils/_abi_controller.prepare_args); one test runs the real action
plugin through ansible-playbook."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from lqos_testlib import copy_bpf, edit, libreqos_crate, REPO, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

# The spec's one explicit pair first, then the pairs derived from src/maps.rs and the object.
PAIRS = ["RateWindow", "BridgeTarget", "FlowData", "FlowKey", "HostCounter", "IpHashData", "IpHashKey",
         "ShaperControl", "VlanRedirect", "VlanRedirectKey", "XdpIpAddress"]
IPHASH = "IpHashData (Rust, src/ip_mapping/ip_hash_data.rs:4) vs ip_hash_info (C BTF): "
HOST = "HostCounter (Rust, src/throughput.rs:10) vs host_counter (C BTF): "
FLOWDATA = "FlowData (Rust, src/flow_data.rs:51) vs flow_stats_t (C BTF): "
FLOWKEY = "FlowKey (Rust, src/flow_data.rs:9) vs flow_key (C BTF): "


def build(crate, dest, spec="reference"):
    result = run_module("pipeline", dict(spec=spec, src=crate, dest=dest))
    assert result["_rc"] == 0, result.get("msg")
    return os.path.join(dest, "current")


def abi(crate, build_dir, spec="reference", check_mode=False, **kw):
    """Run the module with the controller half computed as the action plugin computes it."""
    args = dict(spec=resolve_spec_option(spec, REPO), src=crate, build_dir=build_dir, **kw)
    args = prepare_args(args, REPO)
    return run_module("abi_check", args, check_mode=check_mode)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """One pristine build of the reference crate: (crate, build_dir)."""
    tmp = tmp_path_factory.mktemp("abi-ref")
    crate = copy_bpf(tmp)
    return crate, build(crate, str(tmp / "out"))


def pair(result, rust):
    return next(p for p in result["pairs"] if p["rust"] == rust)


# ---------------------------------------------------------------------------
# The reference pipeline passes clean
# ---------------------------------------------------------------------------

def test_reference_passes_clean(reference):
    crate, build_dir = reference
    result = abi(crate, build_dir)
    assert result["_rc"] == 0, result.get("msg")
    assert result["changed"] is False
    assert result["ok"] is True
    assert result["problems"] == [] and result["drift"] == [] and result["skipped"] == []
    assert result["summary"] == ("spec 'reference': ABI parity holds: 11 mirror pair(s) match their C BTF layout, "
                                 "no chain drift")
    assert [p["rust"] for p in result["pairs"]] == PAIRS
    sizes = {p["rust"]: (p["btf_size"], p["rust_size"], sorted({a["size"] for a in p["asserted"]}))
             for p in result["pairs"]}
    assert sizes == {"HostCounter": (112, 112, [112]), "IpHashKey": (20, 20, [20]), "IpHashData": (24, 24, [24]),
                     "FlowKey": (40, 40, [40]), "FlowData": (136, 136, [136]), "RateWindow": (24, 24, [24]),
                     "ShaperControl": (8, 8, [8]), "BridgeTarget": (8, 8, [8]), "XdpIpAddress": (16, 16, [16]),
                     "VlanRedirectKey": (8, 8, [8]), "VlanRedirect": (4, 4, [4])}
    for p in result["pairs"]:
        assert p["status"] == "ok" and p["first_divergence"] is None and p["problems"] == []
        assert all(f["status"] == "ok" and not f["first_divergence"] for f in p["fields"])
    # Both assertion styles are found, with their file and line.
    assert pair(result, "FlowKey")["asserted"] == [
        {"size": 40, "style": "const_array", "file": "src/flow_data.rs", "line": 75},
        {"size": 40, "style": "assert_eq", "file": "src/flow_data.rs", "line": 86}]
    # Nested structs and generic instantiations are resolved field by field.
    rows = {f["name"]: f for f in pair(result, "FlowData")["fields"]}
    assert (rows["windows.up.bytes"]["c_type"], rows["windows.up.bytes"]["c_offset"],
            rows["windows.up.bytes"]["rust_type"], rows["windows.up.bytes"]["rust_offset"]) == \
        ("__u64[2]", 88, "[u64; 2]", 88)
    assert (rows["rate_bps"]["c_type"], rows["rate_bps"]["rust_type"]) == ("struct down_up_u32", "DownUpOrder<u32>")
    assert [c["status"] for c in result["constants"]] == ["ok", "ok", "ok"]
    assert result["constants"][0] == {"name": "MAX_TRACKED_IPS", "header": "src/bpf/common/maximums.h",
                                      "c_value": 65536, "rust": "src/lib.rs", "rust_name": "MAX_TRACKED_IPS",
                                      "rust_value": 65536, "status": "ok"}
    assert result["skeleton"]["object"] == "shaper_kern"
    assert result["object"] == os.path.join(build_dir, "shaper_kern.o")


def test_check_mode_is_the_same_read(reference):
    crate, build_dir = reference
    result = abi(crate, build_dir, check_mode=True)
    assert result["_rc"] == 0 and result["ok"] is True and result["changed"] is False


# ---------------------------------------------------------------------------
# Mutations: each asserts the exact report
# ---------------------------------------------------------------------------

def run_mutation(tmp_path, reference, edits, rebuild):
    crate = copy_bpf(tmp_path)
    for rel, old, new in edits:
        edit(os.path.join(crate, "..", rel), old, new)
    build_dir = build(crate, str(tmp_path / "out")) if rebuild else reference[1]
    return abi(crate, build_dir)


def assert_failed(result, problems):
    assert result["_rc"] == 1
    assert result["failed"] is True and result["ok"] is False and result["changed"] is False
    assert result["problems"] == problems
    if len(problems) == 1:
        assert result["msg"] == "ABI check failed for spec 'reference': " + problems[0]
    else:
        assert result["msg"] == "ABI check failed for spec 'reference' (%d problems): %s" % (
            len(problems), " ".join("%d) %s" % (i + 1, p) for i, p in enumerate(problems)))


def test_c_field_widened_without_rust_change(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [
        ("shaper_sys/src/bpf/common/ip_hash.h", "__u32 tc_handle;  /* major", "__u64 tc_handle;  /* major")], True)
    assert_failed(result, [
        IPHASH + "field `tc_handle` is at C offset 8 size 8 but Rust offset 4 size 4: change the Rust field to u64 "
                 "(C type __u64)",
        IPHASH + "the size assertion at src/ip_mapping/ip_hash_data.rs:24 (assert_eq) says 24 bytes but C BTF says "
                 "32 (Rust layout: 24): change the assertion to 32"])
    p = pair(result, "IpHashData")
    assert (p["status"], p["btf_size"], p["rust_size"]) == ("mismatch", 32, 24)
    assert p["first_divergence"] == {
        "name": "tc_handle", "c_name": "tc_handle", "c_type": "__u64", "c_offset": 8, "c_size": 8,
        "rust_name": "tc_handle", "rust_type": "u32", "rust_offset": 4, "rust_size": 4, "status": "size",
        "first_divergence": True}
    assert [f["first_divergence"] for f in p["fields"]] == [False, True, False, False]
    assert [p2["status"] for p2 in result["pairs"] if p2["rust"] != "IpHashData"] == ["ok"] * 10


def test_rust_field_reordered(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [
        ("shaper_sys/src/ip_mapping/ip_hash_data.rs", "    pub cpu: u32,\n    pub tc_handle: u32,\n",
         "    pub tc_handle: u32,\n    pub cpu: u32,\n")], False)
    assert_failed(result, [
        IPHASH + "field `cpu` is at C offset 0 size 4 but Rust offset 4 size 4: the Rust fields are in a different "
                 "order than in C; reorder them as in C: cpu, tc_handle, circuit_id, device_id"])
    p = pair(result, "IpHashData")
    assert (p["btf_size"], p["rust_size"]) == (24, 24)       # same size: only the table shows it
    assert [(f["name"], f["status"]) for f in p["fields"]] == [
        ("cpu", "offset"), ("tc_handle", "offset"), ("circuit_id", "ok"), ("device_id", "ok")]


def test_packed_mirror_of_the_same_size_is_flagged(tmp_path, reference):
    """#[repr(C, packed)] keeps IpHashData at 24 bytes, every field in line, but aligns it to 1 against C's 8: it
    passed as "ABI parity holds" while the result listed rust_align 1, btf_align 8."""
    result = run_mutation(tmp_path, reference, [
        ("shaper_sys/src/ip_mapping/ip_hash_data.rs", "#[repr(C)]\n", "#[repr(C, packed)]\n")], False)
    assert_failed(result, [
        IPHASH + "alignment is 8 in C BTF but 1 in Rust (#[repr(C, packed)]), with the same size "
        "and every field in line, so a struct holding it or an array of it is laid out differently: make the Rust "
        "alignment 8 (drop packed: plain #[repr(C)] aligns it as C does)"])
    p = pair(result, "IpHashData")
    assert (p["btf_size"], p["rust_size"], p["btf_align"], p["rust_align"]) == (24, 24, 8, 1)


def test_padding_removed_on_the_rust_side(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/throughput.rs", "    pad0: u32,\n", "")], False)
    assert_failed(result, [
        HOST + "C field `pad0` (offset 84 size 4, __u32) has no Rust counterpart: add `pad0: u32` after `tc_handle` "
               "in the Rust struct"])
    p = pair(result, "HostCounter")
    assert (p["btf_size"], p["rust_size"]) == (112, 112)     # implicit padding keeps the size
    assert p["first_divergence"]["status"] == "missing_in_rust"


def test_padding_removed_on_the_c_side(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [
        ("shaper_sys/src/bpf/common/throughput.h",
         "\t__u32 pad0;        /* explicit: keeps the u64s below aligned */\n", "")], True)
    assert_failed(result, [
        HOST + "Rust field `pad0` (offset 84 size 4, u32) has no C counterpart: remove it from the Rust struct, or "
               "add it to C struct host_counter"])


def test_rust_array_length_changed(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/flow_data.rs", "    pad: [u8; 5],",
                                                 "    pad: [u8; 4],")], False)
    assert_failed(result, [
        FLOWDATA + "field `pad` is at C offset 107 size 5 but Rust offset 107 size 4: change the Rust field to "
                   "[u8; 5] (C type __u8[5])"])
    p = pair(result, "FlowData")
    assert (p["btf_size"], p["rust_size"]) == (136, 136)     # the next u32 realigns: sizes alone miss it


def test_c_array_length_changed(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/bpf/common/flows.h", "__u8 pad[3];",
                                                 "__u8 pad[7];")], True)
    assert_failed(result, [
        FLOWKEY + "field `pad` is at C offset 37 size 7 but Rust offset 37 size 3: change the Rust field to [u8; 7] "
                  "(C type __u8[7])",
        FLOWKEY + "the size assertion at src/flow_data.rs:75 (const_array) says 40 bytes but C BTF says 44 (Rust "
                  "layout: 40): change the assertion to 44",
        FLOWKEY + "the size assertion at src/flow_data.rs:86 (assert_eq) says 40 bytes but C BTF says 44 (Rust "
                  "layout: 40): change the assertion to 44"])


def test_generic_instantiation_changed(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/flow_data.rs", "pub rate_bps: DownUpOrder<u32>,",
                                                 "pub rate_bps: DownUpOrder<u64>,")], False)
    assert_failed(result, [
        FLOWDATA + "field `rate_bps` is at C offset 48 size 8 but Rust offset 48 size 16: change the Rust field to "
                   "DownUpOrder<u32> (C type struct down_up_u32)"])
    assert pair(result, "FlowData")["rust_size"] == 144


def test_stale_asserted_sizes(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [
        ("shaper_sys/src/throughput.rs", "size_of::<HostCounter>(), 112)", "size_of::<HostCounter>(), 120)"),
        ("shaper_utils/src/units/down_up.rs", "size_of::<DownUpOrder<u32>>(), 8)",
         "size_of::<DownUpOrder<u32>>(), 12)")], False)
    assert_failed(result, [
        HOST + "the size assertion at src/throughput.rs:59 (assert_eq) says 120 bytes but C BTF says 112 (Rust "
               "layout: 112): change the assertion to 112",
        "the size assertion at ../shaper_utils/src/units/down_up.rs:55 (assert_eq) says size_of::<DownUpOrder<u32>>() "
        "is 12 but the Rust layout is 8 bytes: change the assertion to 8, or the type back to 12 bytes"])
    assert pair(result, "HostCounter")["first_divergence"] is None
    assert result["drift"] == [{
        "kind": "asserted_size", "subject": "DownUpOrder<u32>",
        "message": "the size assertion at ../shaper_utils/src/units/down_up.rs:55 (assert_eq) says "
                   "size_of::<DownUpOrder<u32>>() is 12 but the Rust layout is 8 bytes",
        "fix": "change the assertion to 8, or the type back to 12 bytes"}]


def test_unresolvable_rust_type_is_named(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/ip_mapping/ip_hash_key.rs",
                                                 "pub address: [u8; 16],", "pub address: Ipv6Octets,")], False)
    assert_failed(result, [
        "IpHashKey (Rust) vs ip_prefix_key (C BTF): cannot resolve Rust type `Ipv6Octets` used by field `address` "
        "of `IpHashKey` (src/ip_mapping/ip_hash_key.rs:9): add the folder that defines it to spec rust.roots"])
    p = pair(result, "IpHashKey")
    assert (p["status"], p["rust_size"], p["btf_size"], p["fields"]) == ("error", None, 20, [])


def test_rust_constant_differs_from_maximums_h(tmp_path, reference):
    result = run_mutation(tmp_path, reference, [("shaper_sys/src/lib.rs", "MAX_TRACKED_IPS: usize = 65536",
                                                 "MAX_TRACKED_IPS: usize = 131072")], False)
    assert_failed(result, [
        "MAX_TRACKED_IPS is 65536 in src/bpf/common/maximums.h but the Rust side restates it as MAX_TRACKED_IPS = "
        "131072 in src/lib.rs: change the Rust const to 65536 (the C value sizes the maps), or change both"])
    assert result["constants"][0]["status"] == "mismatch"


# ---------------------------------------------------------------------------
# Chain drift: program renamed, bindings missing a wrapper.h function
# ---------------------------------------------------------------------------

def partial_chain(crate, out):
    """The chain as a partial build.rs run leaves OUT_DIR: object, skeleton, wrapper copies
    and bindings, but no wrapper compile (which is the step that would fail)."""
    spec = resolve_spec_option("reference", REPO)
    work = os.path.join(crate, spec["sources"]["workdir"])
    os.makedirs(out)
    o = {k: os.path.join(out, v) for k, v in spec["outputs"].items()}
    sh("clang", *spec["flags"]["clang"], "-o", o["ir"], spec["sources"]["kern"], cwd=work)
    sh("llc", *spec["flags"]["llc"], "-o", o["object"], o["ir"], cwd=work)
    with open(o["skeleton"], "w") as fh:
        fh.write(sh("bpftool", "gen", "skeleton", o["object"]).stdout)
    for name in ("wrapper.c", "wrapper.h"):
        shutil.copy(os.path.join(work, name), out)
    sh("bindgen", os.path.join(out, "wrapper.h"), "-o", o["bindings"], "--", "-I", out, cwd=work)
    return out


def test_program_renamed_in_bpf_source_while_wrapper_uses_old_name(tmp_path, reference):
    crate = copy_bpf(tmp_path)
    edit(os.path.join(crate, "src/bpf/shaper_kern.c"), "int tc_classify(", "int tc_shape(")
    # 1. The pipeline itself refuses it, at the wrapper compile, and names the member.
    failed = run_module("pipeline", dict(spec="reference", src=crate, dest=str(tmp_path / "out")))
    assert failed["_rc"] == 1 and failed["step"] == "wrapper"
    assert failed["msg"].startswith("build step wrapper failed: clang exited with 1 in %s/src/bpf:\n" % crate)
    assert "wrapper.c:67:64: error: no member named 'tc_classify' in 'struct shaper_kern::" in failed["msg"]
    assert not os.path.exists(str(tmp_path / "out" / "current"))
    # 2. A build folder made without the wrapper step (e.g. cargo's OUT_DIR of a partial
    #    build.rs run): abi_check names the drift in the spec and in wrapper.c.
    out = partial_chain(crate, str(tmp_path / "partial"))
    result = abi(crate, out)
    programs = "xdp_shaper, tc_shape, tc_bridge_redirect, flow_reader, xmit_counter"
    assert result["drift"] == [
        {"kind": "program", "subject": "tc_classify",
         "message": "program `tc_classify` is listed in the spec's expect.programs but the skeleton "
                    "shaper_kern_skel.h has no such program (it has: %s)" % programs,
         "fix": "it looks renamed to `tc_shape`: rename it back in the BPF source, or update expect.programs, "
                "attach and wrapper.c to `tc_shape`"},
        {"kind": "program", "subject": "tc_shape",
         "message": "the skeleton shaper_kern_skel.h has program `tc_shape` that the spec's expect.programs does "
                    "not list",
         "fix": "add `tc_shape: <section type>` to expect.programs, or remove the program from the BPF source"},
        {"kind": "wrapper", "subject": "tc_classify",
         "message": "wrapper.c:67 uses skel->progs.tc_classify but the skeleton shaper_kern_skel.h has no program "
                    "`tc_classify` (it has: %s)" % programs,
         "fix": "update wrapper.c to the new skeleton name `tc_shape`, or rename it back in the BPF source"}]
    assert result["_rc"] == 1 and len(result["problems"]) == 3
    assert result["problems"][2] == ("wrapper.c:67 uses skel->progs.tc_classify but the skeleton shaper_kern_skel.h "
                                     "has no program `tc_classify` (it has: %s): update wrapper.c to the new "
                                     "skeleton name `tc_shape`, or rename it back in the BPF source" % programs)
    assert all(p["status"] == "ok" for p in result["pairs"])


def test_program_renamed_with_wrapper_fixed_but_spec_not(tmp_path, reference):
    crate = copy_bpf(tmp_path)
    edit(os.path.join(crate, "src/bpf/shaper_kern.c"), "int tc_classify(", "int tc_shape(")
    edit(os.path.join(crate, "src/bpf/wrapper.c"), "skel->progs.tc_classify", "skel->progs.tc_shape")
    result = abi(crate, build(crate, str(tmp_path / "out")))
    drift = [(d["kind"], d["subject"]) for d in result["drift"]]
    assert drift == [("program", "tc_classify"), ("program", "tc_shape")]


def test_wrapper_h_function_missing_from_bindings(tmp_path, reference):
    crate = copy_bpf(tmp_path)
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["flags"]["bindgen"] = ["--blocklist-function", "shaper_iter_read"]
    spec_path = tmp_path / "spec.yml"
    spec_path.write_text(yaml.safe_dump(raw))
    build_dir = build(crate, str(tmp_path / "out"), spec=str(spec_path))
    result = abi(crate, build_dir, spec=str(spec_path))
    assert result["drift"] == [{
        "kind": "binding", "subject": "shaper_iter_read",
        "message": "wrapper.h:44 declares shaper_iter_read() (3 parameter(s)) but bindings.rs has no "
                   "`pub fn shaper_iter_read`",
        "fix": "regenerate bindings.rs from this wrapper.h (rebuild with lqos.bpf.pipeline), and check "
               "flags.bindgen allow/block lists"}]
    assert result["msg"] == ("ABI check failed for spec 'reference': wrapper.h:44 declares shaper_iter_read() (3 "
                             "parameter(s)) but bindings.rs has no `pub fn shaper_iter_read`: regenerate bindings.rs "
                             "from this wrapper.h (rebuild with lqos.bpf.pipeline), and check flags.bindgen "
                             "allow/block lists")


# ---------------------------------------------------------------------------
# Options and failure modes
# ---------------------------------------------------------------------------

def test_fail_on_drift_false_reports_and_warns(tmp_path, reference):
    crate = copy_bpf(tmp_path)
    edit(os.path.join(crate, "src/throughput.rs"), "    pad0: u32,\n", "")
    result = abi(crate, reference[1], fail_on_drift=False)
    assert result["_rc"] == 0 and "failed" not in result
    assert result["ok"] is False and result["changed"] is False
    warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in result["warnings"]]
    assert warnings == result["problems"] and len(result["problems"]) == 1
    assert result["summary"] == "spec 'reference': 1 of 11 mirror pair(s) differ, 0 chain drift finding(s)"


def test_object_option_and_missing_object(tmp_path, reference):
    crate, build_dir = reference
    obj = os.path.join(build_dir, "shaper_kern.o")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(obj, alone)
    result = abi(crate, None, object=str(alone / "shaper_kern.o"))
    assert result["_rc"] == 0 and result["ok"] is True
    assert result["build_dir"] == str(alone)
    assert result["skipped"] == [
        "skeleton: %s/shaper_kern_skel.h not found" % alone, "wrapper.c: %s/wrapper.c not found" % alone,
        "wrapper.h: %s/wrapper.h not found" % alone, "bindings: %s/bindings.rs not found" % alone]
    missing = abi(crate, str(tmp_path / "nothing"))
    assert missing["_rc"] == 1
    assert missing["msg"] == ("BPF object %s/nothing/shaper_kern.o does not exist. Fix: build it with "
                              "lqos.bpf.pipeline first, or point build_dir/object at an existing build." % tmp_path)


def test_module_without_the_controller_half_says_so(reference):
    crate, build_dir = reference
    result = run_module("abi_check", dict(spec="reference", build_dir=build_dir))
    assert result["_rc"] == 1
    assert result["problems"][0] == (
        "RateWindow (Rust) vs rate_window (C BTF): the Rust layout was not computed on the controller; run this "
        "module through its action plugin (a normal lqos.bpf.abi_check task) with src or rust_src set")
    assert [p["status"] for p in result["pairs"]] == ["error"]
    assert "derivation: the Rust side was not read on the controller (no src/rust_src)" in result["skipped"]


def test_controller_errors(tmp_path):
    spec = resolve_spec_option("reference", REPO)
    with pytest.raises(LqosError) as exc:
        prepare_args(dict(spec=spec), None)
    assert str(exc.value) == (
        "spec 'reference' has 1 mirror pair(s) and 0 constant(s) to compare and derives the rest from the Rust "
        "code (derive), but neither rust_src nor src is given. Fix: set rust_src to the crate root on the controller (or src, when the crate is at the same "
        "path there).")
    with pytest.raises(LqosError) as exc:
        prepare_args(dict(spec=spec, src="/target/only/shaper_sys"), None)
    assert str(exc.value) == (
        "src /target/only/shaper_sys does not exist on the controller; the Rust mirror types and header constants "
        "are read where Ansible runs. Fix: set rust_src to the crate root of a checkout on the controller.")
    # layouts given by the task are used as they are: nothing is parsed (src "x" does not even exist)
    given = {"root": "/elsewhere", "pairs": []}
    assert prepare_args(dict(spec=spec, src="x", rust_layouts=given), None)["rust_layouts"] is given
    # rust_src wins over src, and relative paths are taken from the playbook folder.
    args = prepare_args(dict(spec=spec, src="/target/only", rust_src="bpf/shaper_sys"), REPO)
    assert args["rust_layouts"]["root"] == os.path.join(REPO, "bpf", "shaper_sys")


def test_through_the_action_plugin_with_ansible_playbook(tmp_path, reference):
    crate, build_dir = reference
    broken = copy_bpf(tmp_path)
    edit(os.path.join(broken, "src/ip_mapping/ip_hash_data.rs"), "    pub cpu: u32,\n    pub tc_handle: u32,\n",
         "    pub tc_handle: u32,\n    pub cpu: u32,\n")
    play = tmp_path / "play.yml"
    play.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - lqos.bpf.abi_check:
        spec: reference
        src: %(crate)s
        build_dir: %(build)s
      register: good
    - lqos.bpf.abi_check:
        spec: reference
        rust_src: %(broken)s
        build_dir: %(build)s
        fail_on_drift: false
      register: audit
    - ansible.builtin.assert:
        that:
          - good.ok and not good.changed and good.pairs | length == 11
          - not audit.ok and audit.pairs[5].rust == 'IpHashData' and audit.pairs[5].first_divergence.name == 'cpu'
    - lqos.bpf.abi_check:
        spec: reference
        rust_src: %(broken)s
        build_dir: %(build)s
""" % {"crate": crate, "build": build_dir, "broken": broken})
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=" + sys.executable, str(play)],
                          capture_output=True, text=True, cwd=str(tmp_path), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "ok=3" in proc.stdout and "failed=1" in proc.stdout, out
    assert "the Rust fields are in a different order than in C; reorder them as in C: cpu, tc_handle" in out


# ---------------------------------------------------------------------------
# A real LibreQoS tree (the shared tarball of develop, or LQOS_LIBREQOS_SRC)
# ---------------------------------------------------------------------------

def test_libreqos_checkout_with_the_builtin_spec(tmp_path):
    """Release-agnostic: every derived pair matches, asserted sizes agree, and what
    the Rust side uses of the skeleton is there (test_abi_derive.py has more)."""
    crate = libreqos_crate()
    build_dir = build(crate, str(tmp_path / "out"), spec="libreqos")
    result = abi(crate, build_dir, spec="libreqos")
    assert result["_rc"] == 0, result.get("msg")
    assert result["ok"] is True and result["drift"] == [] and result["skipped"] == []
    sizes = {p["rust"]: (p["c"], p["btf_size"], p["rust_size"]) for p in result["pairs"]}
    assert sizes["IpHashKey"] == ("ip_hash_key", 20, 20)
    assert sizes["XdpIpAddress"] == ("in6_addr", 16, 16)
    for p in result["pairs"]:
        assert p["status"] == "ok"
        assert all(a["size"] == p["btf_size"] for a in p["asserted"])
    assert "xdp_prog" in result["skeleton"]["programs"]


# ---------------------------------------------------------------------------
# record and trial_load: the build role's one call
# ---------------------------------------------------------------------------

def test_record_is_written_only_when_it_changes_and_trial_load_loads_every_program(tmp_path, reference):
    import json
    crate, build_dir = reference
    record = str(tmp_path / "abi-check.json")
    planned = abi(crate, build_dir, check_mode=True, record=record)
    assert planned["_rc"] == 0 and planned["changed"] is True
    assert not os.path.exists(record)
    first = abi(crate, build_dir, record=record, trial_load=True)
    assert first["_rc"] == 0 and first["changed"] is True, first.get("msg")
    with open(record) as fh:
        written = json.load(fh)
    assert written["ok"] is True and written["spec"] == "reference"
    assert written["build_id"] == os.path.basename(os.path.realpath(build_dir)) != "current"
    assert [p["rust"] for p in written["pairs"]] == PAIRS
    assert set(written["pairs"][0]) == {"rust", "c", "status"}
    assert first["object_checks"]["ok"] is True and first["object_checks"]["problems"] == []
    spec = resolve_spec_option("reference", REPO)
    assert {p["name"] for p in first["object_checks"]["programs"]} == set(spec["expect"]["programs"])
    again = abi(crate, build_dir, record=record)
    assert again["_rc"] == 0 and again["changed"] is False
    assert "object_checks" not in again


def test_a_drift_is_recorded_before_the_task_fails(tmp_path, reference):
    import json
    crate = copy_bpf(tmp_path)
    edit(os.path.join(crate, "src", "bpf", "common", "ip_hash.h"), "__u32 tc_handle;  /* major",
         "__u64 tc_handle;  /* major")
    build_dir = build(crate, str(tmp_path / "out"))
    record = str(tmp_path / "abi-check.json")
    result = abi(crate, build_dir, record=record, trial_load=True)
    assert result["_rc"] == 1 and result["failed"] is True and result["ok"] is False
    assert result["msg"].startswith("ABI check failed for spec 'reference'")
    with open(record) as fh:
        written = json.load(fh)
    assert written["ok"] is False and written["problems"] == result["problems"]


# ---------------------------------------------------------------------------
# pipeline's check option: build and check in one module run (what the build role does)
# ---------------------------------------------------------------------------

def build_and_check(crate, dest, check_mode=False, **check):
    """lqos.bpf.pipeline with check, the Rust side computed as its action plugin computes it."""
    spec = resolve_spec_option("reference", REPO)
    layouts = prepare_args(dict(spec=spec, src=crate), REPO)["rust_layouts"]
    return run_module("pipeline", dict(spec=spec, src=crate, dest=dest, check=dict(check, rust_layouts=layouts)),
                      check_mode=check_mode)


def test_pipeline_check_builds_then_checks_and_records_in_the_build_folder(tmp_path):
    import json
    crate = copy_bpf(tmp_path)
    dest = str(tmp_path / "out")
    planned = build_and_check(crate, dest, check_mode=True, trial_load=True)
    assert planned["_rc"] == 0 and planned["changed"] is True and "abi_check" not in planned
    assert not os.path.exists(dest)
    first = build_and_check(crate, dest, trial_load=True)
    assert first["_rc"] == 0 and first["changed"] is True, first.get("msg")
    check = first["abi_check"]
    assert check["ok"] is True and check["changed"] is True and [p["rust"] for p in check["pairs"]] == PAIRS
    assert check["object_checks"]["ok"] is True
    # What the verifier said of each program on this kernel, and the same as one flat row per program.
    heads = {r["program"]: r for r in check["object_checks"]["verifier_headroom"]}
    assert set(heads) == {p["name"] for p in check["object_checks"]["programs"]}
    for p in check["object_checks"]["programs"]:
        v = p["verifier"]
        assert v["kernel"] == os.uname().release
        assert (heads[p["name"]]["status"], heads[p["name"]]["headroom_pct"]) == (v["status"], v["headroom_pct"])
        assert (v["status"] == "verified") == (v["headroom_pct"] is not None), p
    assert heads["xdp_shaper"]["status"] == "verified" and 0 < heads["xdp_shaper"]["headroom_pct"] < 100
    with open(os.path.join(first["build_dir"], "abi-check.json")) as fh:
        written = json.load(fh)
    assert written["ok"] is True and written["build_id"] == first["build_id"]
    # The same record abi_check writes for the same build.
    alone = abi(crate, first["build_dir"], record=str(tmp_path / "alone.json"))
    with open(str(tmp_path / "alone.json")) as fh:
        assert json.load(fh) == written
    again = build_and_check(crate, dest, trial_load=True)
    assert again["_rc"] == 0 and again["changed"] is False and again["abi_check"]["changed"] is False
    assert alone["summary"] == again["abi_check"]["summary"]


def test_pipeline_check_drift_fails_the_task_and_keeps_the_build_published(tmp_path):
    crate = copy_bpf(tmp_path)
    edit(os.path.join(crate, "src", "bpf", "common", "ip_hash.h"), "__u32 tc_handle;  /* major",
         "__u64 tc_handle;  /* major")
    dest = str(tmp_path / "out")
    result = build_and_check(crate, dest, trial_load=True)
    assert result["_rc"] == 1 and result["failed"] is True, result
    assert result["msg"].startswith("ABI check failed for spec 'reference'")
    assert result["abi_check"]["ok"] is False and result["changed"] is True
    assert os.path.realpath(os.path.join(dest, "current")) == os.path.realpath(result["build_dir"])
    assert "object_checks" not in result["abi_check"]   # a drift stops before the trial load, as in abi_check
