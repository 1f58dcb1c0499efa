"""Zero-configuration derivation (spec ``derive``) on this project's own
release-shaped trees: the reference crate plus a map-opening layer written
here (``PinnedMap::<K, V>::from_path`` on pin paths, an iterator reader, a
bindings module with calls, a build.rs), then older shapes and broken copies.
Each test builds with the real toolchain and asserts the exact report."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import copy_bpf, edit, libreqos_crate, REPO, run_module

from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")

# The map layer of a release-shaped tree: this project's own code.
MAPS_RS = '''//! Pinned maps, opened by pin path with their key and value types.
use crate::{FlowData, FlowKey, HostCounter, IpHashData, IpHashKey};
use shaper_utils::XdpIpAddress;
use std::marker::PhantomData;
use std::sync::OnceLock;

pub struct PinnedMap<K, V> { fd: i32, _k: PhantomData<K>, _v: PhantomData<V> }
impl<K, V> PinnedMap<K, V> {
    pub fn from_path(path: &str) -> Option<Self> { let _ = path; None }
}

pub struct MapIter<K, V> { link: usize, _k: PhantomData<K>, _v: PhantomData<V> }
impl<K, V> MapIter<K, V> {
    pub fn new(prog: usize, map: usize) -> Self { MapIter { link: prog + map, _k: PhantomData, _v: PhantomData } }
}

const HOST_TRAFFIC: &str = "/sys/fs/bpf/host_traffic";

pub fn open_all() {
    let _a = PinnedMap::<IpHashKey, IpHashData>::from_path("/sys/fs/bpf/ip_to_shaper");
    let hot = "/sys/fs/bpf/shaper_hotcache";
    let _b = PinnedMap::<XdpIpAddress, IpHashData>::from_path(hot);
    let _c = PinnedMap::<XdpIpAddress, HostCounter>::from_path(HOST_TRAFFIC);
    let _d = PinnedMap::<u32, u32>::from_path("/sys/fs/bpf/cpus_available");
}

static FLOWS: OnceLock<MapIter<FlowKey, FlowData>> = OnceLock::new();

pub fn iterate_flows(skel: &crate::bindings::shaper_kern) {
    FLOWS.get_or_init(|| unsafe { MapIter::new(skel.progs.flow_reader, skel.maps.flow_table) });
}

pub fn start() {
    let skel = unsafe { bindings::shaper_open() };
    unsafe { bindings::shaper_set_cpu_count(skel, 2) };
    unsafe { bindings::shaper_load(skel) };
}

pub mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}
'''

BUILD_RS = '''use std::process::Command;
fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    let ir = format!("{}/shaper_kern.ll", out);
    let _ = Command::new("clang")
        .current_dir("src/bpf")
        .args([
            "-S", "-target", "bpf", "-Wall", "-Wno-unused-value", "-Wno-pointer-sign",
            "-Wno-compare-distinct-pointer-types", "-Werror", "-emit-llvm", "-c", "-g", "-O2",
            "-o", &ir, "shaper_kern.c",
        ])
        .output();
    let obj = format!("{}/shaper_kern.o", out);
    let _ = Command::new("llc").args(["-march=bpf", "-filetype=obj", "-o", &obj, &ir]).output();
    let _ = Command::new("clang")
        .current_dir("src/bpf")
        .args(["-c", "wrapper.c", &format!("-I{}", out), "-o", "libshaperwrap.o"])
        .output();
}
'''

EXPECTED_PAIRS = {
    ("BridgeTarget", "bridge_target", "name"), ("FlowData", "flow_stats_t", "map"), ("FlowKey", "flow_key", "map"),
    ("HostCounter", "host_counter", "map"), ("IpHashData", "ip_hash_info", "map"),
    ("IpHashKey", "ip_prefix_key", "map"), ("XdpIpAddress", "in6_addr", "map"),
    ("VlanRedirectKey", "vlan_redirect_key", "name"), ("VlanRedirect", "vlan_redirect", "name"),
}


def derive_spec(**over) -> dict:
    """The reference spec reduced to what cannot be derived (no mirrors, no
    constants, no expect lists, no pinned_maps), flags from build.rs."""
    spec = resolve_spec_option("reference", REPO)
    spec = dict(spec, mirrors=[], constants=[], pinned_maps=[], expect={"programs": {}, "maps": []},
                derive={"mirrors": True, "constants": True, "calls": True, "flags": True})
    spec.update(over)
    return spec


def release_tree(tmp_path) -> str:
    crate = copy_bpf(tmp_path)
    with open(os.path.join(crate, "src/maps.rs"), "w") as fh:
        fh.write(MAPS_RS)
    with open(os.path.join(crate, "build.rs"), "w") as fh:
        fh.write(BUILD_RS)
    return crate


def build(crate, dest, spec):
    return run_module("pipeline", dict(spec=spec, src=crate, dest=dest), resolve_spec=False)


def abi(crate, build_dir, spec):
    args = prepare_args(dict(spec=spec, src=crate, build_dir=build_dir, fail_on_drift=False), REPO)
    return run_module("abi_check", args, resolve_spec=False)


def built(tmp_path, crate, spec=None):
    spec = spec or derive_spec()
    result = build(crate, str(tmp_path / "out"), spec)
    assert result["_rc"] == 0, result.get("msg")
    return result, abi(crate, str(tmp_path / "out" / "current"), spec)


def test_release_shaped_tree_passes_with_nothing_listed(tmp_path):
    crate = release_tree(tmp_path)
    pipeline, result = built(tmp_path, crate)
    # build.rs's own flags, -c included, and where they were read
    assert pipeline["flags_source"] == "build.rs:7,14,17"
    assert pipeline["flags"]["clang"][-4:] == ["-emit-llvm", "-c", "-g", "-O2"]
    assert pipeline["flags"]["wrapper"] == []
    assert result["ok"] is True, result["problems"]
    assert {(p["rust"], p["c"], p["origin"]) for p in result["pairs"]} == EXPECTED_PAIRS
    assert all(p["status"] == "ok" for p in result["pairs"])
    assert "ip_to_shaper key (src/maps.rs:20)" in next(p for p in result["pairs"] if p["rust"] == "IpHashKey")["maps"]
    assert next(p for p in result["pairs"] if p["rust"] == "FlowData")["maps"] == ["flow_table value (src/maps.rs:30)"]
    d = result["derivation"]
    assert d["bindings_module"] == "src/maps.rs:39 (mod bindings)" and d["calls"] == 3
    assert {(s["map"], s["side"], s["rust_size"], s["c_size"]) for s in d["map_sizes"]} == {
        ("cpus_available", "key", 4, 4), ("cpus_available", "value", 4, 4)}
    assert [(p["name"], p["section"]) for p in d["programs"]] == [
        ("xdp_shaper", "xdp"), ("tc_classify", "tc"), ("tc_bridge_redirect", "tc"), ("flow_reader", "iter/bpf_map_elem"),
        ("xmit_counter", "kprobe/dev_hard_start_xmit")]
    assert {p["name"] for p in d["pinned_maps"]} == {"ip_to_shaper", "shaper_hotcache", "host_traffic", "flow_table",
                                                     "cpu_map", "cpus_available", "shaper_control", "bridge_redirect",
                                                     "bridge_vlan_map"}
    # maxima restated in src/lib.rs are found by name and checked
    assert [(c["name"], c["status"]) for c in result["constants"]] == [
        ("MAX_TRACKED_IPS", "ok"), ("MAX_CPUS", "ok"), ("HOT_CACHE_SIZE", "ok")]


def test_older_shape_other_file_names_and_an_if_else_pin_path(tmp_path):
    """Like an older release: the host counter lives in another file and the IP map is opened from a
    `let` bound to an if/else of two pin paths (one of which the object does not define)."""
    crate = release_tree(tmp_path)
    os.rename(os.path.join(crate, "src/throughput.rs"), os.path.join(crate, "src/tracking.rs"))
    edit(os.path.join(crate, "src/maps.rs"),
         'let _a = PinnedMap::<IpHashKey, IpHashData>::from_path("/sys/fs/bpf/ip_to_shaper");',
         'let p = if hot { "/sys/fs/bpf/ip_to_shaper_recip" } else { "/sys/fs/bpf/ip_to_shaper" };\n'
         '    let _a = PinnedMap::<IpHashKey, IpHashData>::from_path(p);')
    edit(os.path.join(crate, "src/maps.rs"), "pub fn open_all() {", "pub fn open_all(hot: bool) {")
    _p, result = built(tmp_path, crate)
    assert result["ok"] is True, result["problems"]
    assert {(p["rust"], p["c"], p["origin"]) for p in result["pairs"]} == EXPECTED_PAIRS
    assert next(p for p in result["pairs"] if p["rust"] == "HostCounter")["rust_file"] == "src/tracking.rs:10"
    assert "src/maps.rs:21 opens pin ip_to_shaper_recip, which the object does not define (legacy or optional " \
        "map): not checked" in result["derivation"]["notes"]


def test_map_type_change_on_the_rust_side(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/maps.rs"), "PinnedMap::<XdpIpAddress, HostCounter>", "PinnedMap::<XdpIpAddress, FlowData>")
    _p, result = built(tmp_path, crate)
    assert result["ok"] is False
    bad = next(p for p in result["pairs"] if p["rust"] == "FlowData" and p["c"] == "host_counter")
    assert bad["status"] == "mismatch" and bad["maps"] == ["host_traffic value (src/maps.rs:23)"]
    assert bad["problems"][0].startswith("FlowData (Rust, src/flow_data.rs:51) vs host_counter (C BTF): ")


def test_renamed_reader_is_named_at_its_rust_use(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/bpf/shaper_kern.c"), "int flow_reader(", "int rtt_reader(")
    edit(os.path.join(crate, "src/bpf/wrapper.c"), "skel->progs.flow_reader", "skel->progs.rtt_reader")
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "src/maps.rs:30 uses skeleton progs.flow_reader but shaper_kern_skel.h has no program `flow_reader` "
        "(it has: xdp_shaper, tc_classify, tc_bridge_redirect, rtt_reader, xmit_counter): update the Rust code to the "
        "skeleton's name, or restore `flow_reader` in the BPF source"]


def test_binding_called_from_rust_but_gone_from_wrapper_h(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/bpf/wrapper.h"), "int shaper_set_cpu_count(struct shaper_kern *skel, __u32 cpus);",
         "")
    edit(os.path.join(crate, "src/bpf/wrapper.c"), "int shaper_set_cpu_count(", "static int shaper_set_cpu_count(")
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "src/maps.rs:35 calls shaper_set_cpu_count() through the bindings but bindings.rs has no `pub fn "
        "shaper_set_cpu_count` (wrapper.h no longer declares it, or libbpf's headers do not): cargo build would "
        "fail: declare shaper_set_cpu_count() in wrapper.h (and define it in wrapper.c), or change the caller"]


def test_binding_called_with_the_wrong_arity(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/maps.rs"), "bindings::shaper_load(skel)", "bindings::shaper_load(skel, 1)")
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "src/maps.rs:36 calls shaper_load() with 2 argument(s) but bindings.rs declares it with 1 parameter(s): "
        "make wrapper.h's prototype and the Rust call agree"]


def test_unsupported_pin_path_is_named_never_guessed(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/maps.rs"), 'from_path("/sys/fs/bpf/ip_to_shaper")',
         'from_path(&format!("/sys/fs/bpf/{}", "ip_to_shaper"))')
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "src/maps.rs:20: the ABI derivation does not understand this construct: opens a `PinnedMap<IpHashKey, "
        "IpHashData>` from a path that is neither a string literal, a `const &str` nor a local `let` of literals "
        "(`PinnedMap::<IpHashKey, IpHashData>::from_path(&format!(\"/sys/fs/bpf/{}\", \"ip_to_shaper\"))`): "
        "pass the pin path as a literal or a const, or add mirrors entries for this map's key and value types "
        "to the spec"]


def test_no_map_openings_found_is_said_plainly(tmp_path):
    crate = release_tree(tmp_path)
    os.unlink(os.path.join(crate, "src/maps.rs"))
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "the ABI derivation found no Rust code under rust.roots that opens the object's maps (no "
        "`Map::<K, V>::...(\"/sys/fs/bpf/NAME\")` and no iterator reader `Iter::new(skel.progs.P, skel.maps.M)`), "
        "so the struct-typed maps bridge_redirect, bridge_vlan_map, flow_table, host_traffic, ip_to_shaper, "
        "shaper_control, shaper_hotcache were not compared with any Rust type: point rust.roots at the Rust code that opens the "
        "pinned maps, or add mirrors entries (Rust type <-> C type) to the spec"]
    assert "no Rust module includes bindings.rs under rust.roots: calls through the bindings were not checked" \
        in result["derivation"]["notes"]


def test_explicit_mirror_overrides_a_derived_pair(tmp_path):
    crate = release_tree(tmp_path)
    spec = derive_spec(mirrors=[{"rust": "RateWindow", "c": "rate_window"}, {"rust": "FlowKey", "c": "flow_key"}])
    _p, result = built(tmp_path, crate, spec)
    assert result["ok"] is True, result["problems"]
    origins = {(p["rust"], p["origin"]) for p in result["pairs"]}
    assert ("RateWindow", "spec") in origins and ("FlowKey", "spec") in origins and ("FlowKey", "map") not in origins


def test_restated_maximum_differs(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/lib.rs"), "pub const HOT_CACHE_SIZE: usize = 16384;",
         "pub const HOT_CACHE_SIZE: usize = 8192;")
    _p, result = built(tmp_path, crate)
    assert result["problems"] == [
        "HOT_CACHE_SIZE is 16384 in src/bpf/common/maximums.h but the Rust side restates it as HOT_CACHE_SIZE = "
        "8192 in src/lib.rs: change the Rust const to 16384 (the C value sizes the maps), or change both"]


def test_wrapper_warning_is_fatal_with_file_and_line(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "src/bpf/wrapper.c"), "#include \"wrapper.h\"", "#include \"wrapper.h\"\n"
         "int lqos_probe(void) { return undeclared_helper(); }")
    result = build(crate, str(tmp_path / "out"), derive_spec())
    assert result["_rc"] == 1 and result["step"] == "wrapper"
    assert result["msg"].startswith(
        "build step wrapper failed: clang wrote to stderr (fatal, as in build.rs) at wrapper.c:6 (warning: "
        "implicit declaration of function 'undeclared_helper' is invalid in C99 [-Wimplicit-function-declaration])")


def test_build_rs_the_derivation_cannot_read(tmp_path):
    crate = release_tree(tmp_path)
    edit(os.path.join(crate, "build.rs"), 'Command::new("llc")', 'Command::new(LLC)')
    result = build(crate, str(tmp_path / "out"), derive_spec())
    assert result["_rc"] == 1
    assert result["msg"] == (
        "spec 'reference' derives its flags from build.rs, but %s/build.rs has no Command::new(\"llc\") with "
        ".args([...]): this build.rs spells its steps in a way the derivation does not understand. Fix: set "
        "derive.flags: false in the spec and give flags.clang/llc/wrapper as this build.rs passes them." % crate)


def test_libreqos_checkout_with_zero_configuration(tmp_path):
    """Any LibreQoS release (v1.4, v2.0, v2.1, v2.2, develop): `spec: libreqos` and nothing else."""
    crate = libreqos_crate()
    spec = resolve_spec_option("libreqos", REPO)
    pipeline, result = built(tmp_path, crate, spec)
    assert pipeline["flags_source"].startswith("build.rs:")
    assert result["ok"] is True, result["problems"]
    assert result["drift"] == [] and result["skipped"] == []
    sizes = {p["rust"]: (p["c"], p["btf_size"] == p["rust_size"]) for p in result["pairs"]}
    for rust, c in (("IpHashKey", "ip_hash_key"), ("IpHashData", "ip_hash_info"), ("HostCounter", "host_counter"),
                    ("XdpIpAddress", "in6_addr")):
        assert sizes[rust] == (c, True)
    assert {p["name"] for p in result["derivation"]["pinned_maps"]} >= {"map_ip_to_cpu_and_tc", "map_traffic"}
