"""Unit tests for the pure logic of lqos.bpf.abi_check (module_utils/_abi/parity.py, drift.py, check.py) and its
controller half (plugin_utils/_abi_controller.py): field matching, messages, and the
parsers for wrapper.c, wrapper.h and bindings.rs. Real builds are in
tests/functional/test_abi_check.py."""
from __future__ import annotations

import textwrap

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._abi import check as _abi
from ansible_collections.lqos.bpf.plugins.module_utils._abi import drift as _drift
from ansible_collections.lqos.bpf.plugins.module_utils._abi import parity as _parity
from ansible_collections.lqos.bpf.plugins.plugin_utils import _abi_controller


def f(name, offset, size, type_="u32", array=None, fields=None):
    return {"name": name, "offset": offset, "size": size, "type": type_, "array": array, "fields": fields}


def entry(rust_fields, size, align=8, asserted=(), name="IpHashData"):
    return {"rust": name, "c": "ip_hash_info", "error": None, "asserted": list(asserted),
            "layout": {"name": name, "size": size, "align": align, "file": "src/ip.rs", "line": 3,
                       "fields": rust_fields}}


def c_layout(size, align=8, c_type="struct ip_hash_info"):
    return {"size": size, "align": align, "c_type": c_type}


C_IP = [f("cpu", 0, 4, "__u32"), f("tc_handle", 4, 4, "__u32"), f("circuit_id", 8, 8, "__u64"),
        f("device_id", 16, 8, "__u64")]
HEAD = "IpHashData (Rust, src/ip.rs:3) vs ip_hash_info (C BTF): "


# ---------------------------------------------------------------------------
# C -> Rust spelling
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("c_type, rust", [
    ("__u64", "u64"), ("__s32", "i32"), ("unsigned int", "u32"), ("_Bool", "bool"), ("__be16", "u16"),
    ("__u8[5]", "[u8; 5]"), ("__u32[2][3]", "[[u32; 3]; 2]"), ("struct in6_addr", "[u8; 16]"),
    ("const __u64", "u64"), ("struct ip_hash_info", "IpHashData"), ("flow_stats_t", "FlowData"),
    ("enum direction", "u32"), ("struct unknown_thing", None), ("struct unknown_thing[2]", None),
])
def test_c_rust_spelling(c_type, rust):
    assert _parity.c_rust_spelling(c_type, rust_names={"ip_hash_info": "IpHashData", "flow_stats_t": "FlowData"}) == rust


# ---------------------------------------------------------------------------
# Field matching
# ---------------------------------------------------------------------------

def test_match_by_name_and_flag_reordering():
    rust = [f("tc_handle", 0, 4), f("cpu", 4, 4), f("circuit_id", 8, 8), f("device_id", 16, 8)]
    pairs, reordered = _parity.match_fields(C_IP, rust)
    assert pairs == [(0, 1), (1, 0), (2, 2), (3, 3)]
    assert reordered is True
    assert _parity.match_fields(C_IP, C_IP) == ([(0, 0), (1, 1), (2, 2), (3, 3)], False)


def test_renamed_fields_pair_by_position_between_anchors():
    c = [f("src", 0, 16), f("dst", 16, 16), f("src_port", 32, 2), f("protocol", 36, 1), f("pad", 37, 3)]
    r = [f("remote_ip", 0, 16), f("local_ip", 16, 16), f("src_port", 32, 2), f("ip_protocol", 36, 1),
         f("padding", 37, 3)]
    assert _parity.match_fields(c, r) == ([(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)], False)


def test_unequal_gaps_pair_by_offset():
    c = [f("a", 0, 4), f("pad0", 4, 4), f("b", 8, 8)]
    r = [f("a", 0, 4), f("b", 8, 8)]
    assert _parity.match_fields(c, r) == ([(0, 0), (1, None), (2, 1)], False)
    r2 = [f("a", 0, 4), f("x", 4, 2), f("y", 6, 2), f("b", 8, 8)]
    c2 = [f("a", 0, 4), f("z", 4, 4), f("b", 8, 8)]
    assert _parity.match_fields(c2, r2) == ([(0, 0), (1, 1), (None, 2), (2, 3)], False)


def test_nested_structs_expand_with_absolute_offsets():
    c = [f("first", 0, 8, "__u64"),
         f("bytes", 8, 16, "struct down_up_u64", fields=[f("down", 0, 8, "__u64"), f("up", 8, 8, "__u64")])]
    r = [f("first", 0, 8, "u64"),
         f("bytes", 8, 16, "DownUpOrder<u64>", fields=[f("up", 0, 8, "u64"), f("down", 8, 8, "u64")])]
    rows, reordered = _parity.compare_fields(c, r)
    assert [(x["name"], x["c_offset"], x["rust_offset"], x["status"]) for x in rows] == [
        ("first", 0, 0, "ok"), ("bytes", 8, 8, "ok"), ("bytes.down", 8, 16, "offset"), ("bytes.up", 16, 8, "offset")]
    assert reordered is True


def test_same_size_arrays_with_other_element_are_flagged():
    c = [f("hash", 0, 16, "__u32[4]", array={"count": 4, "elem_size": 4, "elem_type": "__u32"})]
    r = [f("hash", 0, 16, "[u64; 2]", array={"count": 2, "elem_size": 8, "elem_type": "u64"})]
    rows = _parity.compare_fields(c, r)[0]
    assert rows[0]["status"] == "element"
    # A C array against a Rust generic pair of the same size is fine (LibreQoS does this).
    r_pair = [f("hash", 0, 16, "DownUpOrder<u64>", fields=[f("down", 0, 8), f("up", 8, 8)])]
    c_pair = [f("hash", 0, 16, "__u64[2]", array={"count": 2, "elem_size": 8, "elem_type": "__u64"})]
    assert _parity.compare_fields(c_pair, r_pair)[0][0]["status"] == "ok"


# ---------------------------------------------------------------------------
# Pair reports and their messages
# ---------------------------------------------------------------------------

def report(rust_fields, rust_size, c_fields=None, c_size=24, **kw):
    return _parity.compare_pair(entry(rust_fields, rust_size, **kw), c_layout(c_size), c_fields or C_IP, None,
                                {"ip_hash_info": "IpHashData"})


def test_clean_pair():
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit_id", 8, 8, "u64"), f("device_id", 16, 8, "u64")]
    r = report(rust, 24, asserted=[{"size": 24, "style": "assert_eq", "file": "src/ip.rs", "line": 20}])
    assert (r["status"], r["problems"], r["first_divergence"]) == ("ok", [], None)
    assert (r["btf_size"], r["rust_size"], r["rust_file"]) == (24, 24, "src/ip.rs:3")
    assert [x["first_divergence"] for x in r["fields"]] == [False] * 4
    assert not any(k.startswith("_") for x in r["fields"] for k in x)


def test_narrow_rust_field_message_matches_the_documented_example():
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit_id", 8, 4), f("device_id", 16, 8, "u64")]
    r = report(rust, 24)
    assert r["problems"] == [HEAD + "field `circuit_id` is at C offset 8 size 8 but Rust offset 8 size 4: change the "
                                    "Rust field to u64 (C type __u64)"]
    assert r["first_divergence"]["name"] == "circuit_id" and r["status"] == "mismatch"


def test_renamed_field_is_shown_with_both_names():
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit", 8, 4), f("device", 16, 8, "u64")]
    r = report(rust, 24)
    assert r["problems"] == [HEAD + "field `circuit_id` (Rust `circuit`) is at C offset 8 size 8 but Rust offset 8 "
                                    "size 4: change the Rust field to u64 (C type __u64)"]


def test_generic_suggestion_from_uniform_c_struct():
    c = [f("rate", 0, 8, "struct down_up_u32", fields=[f("down", 0, 4, "__u32"), f("up", 4, 4, "__u32")])]
    r = [f("rate", 0, 16, "DownUpOrder<u64>", fields=[f("down", 0, 8, "u64"), f("up", 8, 8, "u64")])]
    out = _parity.compare_pair(entry(r, 16), c_layout(8), c, None, {})
    assert out["problems"] == [HEAD + "field `rate` is at C offset 0 size 8 but Rust offset 0 size 16: change the "
                                      "Rust field to DownUpOrder<u32> (C type struct down_up_u32)"]


def test_unknown_c_type_suggests_a_size():
    c = [f("thing", 0, 12, "struct opaque")]
    out = _parity.compare_pair(entry([f("thing", 0, 8, "Opaque")], 8), c_layout(12), c, None, {})
    assert out["problems"] == [HEAD + "field `thing` is at C offset 0 size 12 but Rust offset 0 size 8: change the "
                                      "Rust field to a 12-byte type (C type struct opaque)"]


def test_missing_first_field_and_extra_rust_field():
    rust = [f("tc_handle", 4, 4), f("circuit_id", 8, 8, "u64"), f("device_id", 16, 8, "u64")]
    assert report(rust, 24)["problems"] == [
        HEAD + "C field `cpu` (offset 0 size 4, __u32) has no Rust counterpart: add `cpu: u32` as the first field "
               "of the Rust struct"]
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit_id", 8, 8, "u64"), f("device_id", 16, 8, "u64"),
            f("extra", 24, 8, "u64")]
    assert report(rust, 32)["problems"] == [
        HEAD + "Rust field `extra` (offset 24 size 8, u64) has no C counterpart: remove it from the Rust struct, or "
               "add it to C struct ip_hash_info"]


def test_offset_without_reordering_points_at_alignment():
    c = [f("a", 0, 1, "__u8"), f("b", 4, 4, "__u32")]
    r = [f("a", 0, 1, "u8"), f("b", 1, 4, "u32")]
    out = _parity.compare_pair(entry(r, 5, align=1), c_layout(8, 4), c, None, {})
    assert out["problems"] == [HEAD + "field `b` is at C offset 4 size 4 but Rust offset 1 size 4: the fields before "
                                      "it line up, so the Rust struct aligns it differently; check #[repr(C)], packed "
                                      "and align(N) against C"]


def test_trailing_size_differences():
    c = [f("a", 0, 4, "__u32")]
    aligned = _parity.compare_pair(entry([f("a", 0, 4)], 16, align=16), c_layout(4, 4), c, None, {})
    assert aligned["problems"] == [HEAD + "size is 4 bytes in C BTF but 16 bytes in Rust, with every field in line: "
                                          "make the alignment match: C aligns it to 4, Rust to 16 (check "
                                          "#[repr(C, align(N))] / packed)"]
    padded = _parity.compare_pair(entry([f("a", 0, 4)], 4, align=4), c_layout(8, 4), c, None, {})
    assert padded["problems"] == [HEAD + "size is 8 bytes in C BTF but 4 bytes in Rust, with every field in line: "
                                         "add 4 byte(s) of explicit trailing padding to the Rust side"]


def test_same_size_but_other_alignment_is_flagged():
    """A #[repr(C, packed)] mirror of the same size as its C struct (align 1 against 8) passed as parity."""
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit_id", 8, 8, "u64"), f("device_id", 16, 8, "u64")]
    e = entry(rust, 24, align=1)
    e["layout"]["packed"] = True
    packed = _parity.compare_pair(e, c_layout(24), C_IP, None, {})
    assert packed["status"] == "mismatch" and (packed["rust_align"], packed["btf_align"]) == (1, 8)
    assert packed["problems"] == [HEAD + "alignment is 8 in C BTF but 1 in Rust (#[repr(C, packed)]), with the same "
                                         "size and every field in line, so a struct holding it or an array of it is "
                                         "laid out differently: make the Rust alignment 8 (drop packed: plain "
                                         "#[repr(C)] aligns it as C does)"]
    # align(N) above C's natural alignment: C's __attribute__((aligned(N))) leaves no trace in BTF (libbpf's
    # btf__align_of derives the alignment from the members), so the same size is all BTF can confirm.
    e = entry(rust + [f("_pad", 24, 8, "[u8; 8]")], 32, align=16)
    e["layout"]["repr_align"] = 16
    over = _parity.compare_pair(e, c_layout(32), C_IP + [f("_pad", 24, 8, "__u8[8]")], None, {})
    assert over["status"] == "ok", over["problems"]
    # A natural difference (a byte array mirroring in6_addr, as LibreQoS does) is left to the pairs holding it.
    natural = report([f("bytes", 0, 24, "[u8; 24]")], 24, c_fields=[f("bytes", 0, 24, "__u8[24]")], align=1)
    assert natural["status"] == "ok", natural["problems"]


def test_stale_assertion_and_errors():
    rust = [f("cpu", 0, 4), f("tc_handle", 4, 4), f("circuit_id", 8, 8, "u64"), f("device_id", 16, 8, "u64")]
    r = report(rust, 24, asserted=[{"size": 32, "style": "const_array", "file": "src/ip.rs", "line": 30}])
    assert r["problems"] == [HEAD + "the size assertion at src/ip.rs:30 (const_array) says 32 bytes but C BTF says 24 "
                                    "(Rust layout: 24): change the assertion to 24"]
    assert r["first_divergence"] is None and r["status"] == "mismatch"
    bad = {"rust": "Nope", "c": "ip_hash_info", "error": "cannot resolve Rust type `Nope`: add it", "layout": None}
    out = _parity.compare_pair(bad, None, None, "type ip_hash_info not found in BTF of x.o: rebuild", {})
    assert out["status"] == "error"
    assert out["problems"] == ["Nope (Rust) vs ip_hash_info (C BTF): cannot resolve Rust type `Nope`: add it",
                               "Nope (Rust) vs ip_hash_info (C BTF): type ip_hash_info not found in BTF of x.o: "
                               "rebuild"]


# ---------------------------------------------------------------------------
# wrapper.c, wrapper.h, bindings.rs, skeleton
# ---------------------------------------------------------------------------

WRAPPER_C = textwrap.dedent("""\
    #include "wrapper.h"
    /* skel->progs.commented_out must not count */
    // skel->maps.neither
    static const char *s = "skel->progs.in_a_string";
    struct shaper_kern *open(void) { return shaper_kern__open(); }
    int f(struct shaper_kern *skel) {
        bpf_link__destroy(NULL);
        skel->rodata->cpu_count = 1;
        bpf_program__fd(skel->progs.xdp_shaper);
        bpf_map__fd(skel ->maps . flow_table);
        bpf_object__find_map_by_name(skel->obj, "host_traffic");
        return skel->links.tc_classify != NULL;
    }
    """)


def test_wrapper_references_ignore_comments_strings_and_libbpf():
    assert _drift.wrapper_references(WRAPPER_C) == [
        ("object", "shaper_kern", 5), ("rodata", "cpu_count", 8), ("progs", "xdp_shaper", 9),
        ("maps", "flow_table", 10), ("map_name", "host_traffic", 11), ("links", "tc_classify", 12)]


WRAPPER_H = textwrap.dedent("""\
    #ifndef W_H
    #define W_H
    #define LONG_MACRO(x) \\
        do_something(x)
    #include "shaper_kern_skel.h"
    typedef int (*callback_t)(void *ctx, int n);
    struct opts { int a; int (*cb)(int); };
    /* int commented(int a); */
    struct shaper_kern *shaper_open(void);
    int shaper_load(struct shaper_kern *skel);
    int shaper_set(struct shaper_kern *skel,
                   __u32 a,
                   int (*cb)(int, int));
    void no_args();
    int logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
    static inline int helper(int a) { return a + 1; }
    extern unsigned long long max_tracked_ips(void);
    #endif
    """)

BINDINGS = textwrap.dedent("""\
    extern "C" {
        pub fn shaper_open() -> *mut shaper_kern;
    }
    extern "C" {
        pub fn shaper_load(skel: *mut shaper_kern) -> ::std::os::raw::c_int;
    }
    extern "C" {
        pub fn shaper_set(
            skel: *mut shaper_kern,
            a: __u32,
            cb: ::std::option::Option<unsafe extern "C" fn(arg1: c_int, arg2: c_int) -> c_int>,
        ) -> ::std::os::raw::c_int;
    }
    extern "C" {
        pub fn no_args();
    }
    extern "C" {
        pub fn logf(fmt: *const ::std::os::raw::c_char, ...) -> ::std::os::raw::c_int;
    }
    extern "C" {
        pub fn max_tracked_ips() -> ::std::os::raw::c_ulonglong;
    }
    """)


def test_header_functions():
    assert _drift.header_functions(WRAPPER_H) == {
        "shaper_open": (0, 9), "shaper_load": (1, 10), "shaper_set": (3, 11), "no_args": (0, 14),
        "logf": (2, 15), "max_tracked_ips": (0, 17)}


def test_bindings_functions():
    assert _drift.bindings_functions(BINDINGS) == {
        "shaper_open": 0, "shaper_load": 1, "shaper_set": 3, "no_args": 0, "logf": 2, "max_tracked_ips": 0}


SKEL = {"object": "shaper_kern", "programs": ["xdp_shaper", "tc_classify"], "maps": ["flow_table", "host_traffic"],
        "internal_maps": ["rodata"]}
SPEC = {"expect": {"programs": {"xdp_shaper": "xdp", "tc_classify": "tc"}, "maps": ["flow_table", "host_traffic"]}}
FILES = {"skeleton": "k_skel.h", "wrapper_c": "wrapper.c", "wrapper_h": "wrapper.h", "bindings": "bindings.rs"}


def test_chain_without_drift():
    assert _drift.chain_drift(SPEC, SKEL, {"rodata": ["cpu_count"]}, {"xdp_shaper": "xdp", "tc_classify": "tc"},
                              WRAPPER_C, WRAPPER_H, BINDINGS, FILES) == []


def test_chain_drift_findings():
    skel = dict(SKEL, object="other_kern", maps=["flow_table", "host_trafic"])
    bindings = BINDINGS.replace("a: __u32,\n", "").replace("pub fn logf", "pub fn logv")
    drift = _drift.chain_drift(SPEC, skel, {"rodata": ["cpus"]}, {"xdp_shaper": "xdp", "tc_classify": "classifier"},
                               WRAPPER_C, WRAPPER_H, bindings, FILES)
    assert [(d["kind"], d["subject"]) for d in drift] == [
        ("program", "tc_classify"), ("map", "host_traffic"), ("wrapper", "shaper_kern__"), ("wrapper", "cpu_count"),
        ("wrapper", "host_traffic"), ("binding", "shaper_set"), ("binding", "logf")]
    messages = {(d["kind"], d["subject"]): d for d in drift}
    assert messages[("program", "tc_classify")]["message"] == (
        "program `tc_classify` is in section classifier but the spec expects section type tc")
    assert messages[("map", "host_traffic")]["fix"] == (
        "it looks renamed to `host_trafic`: rename it back in the BPF source, or update the spec and every user of "
        "the pin name")
    assert messages[("wrapper", "shaper_kern__")]["message"] == (
        "wrapper.c:5 calls shaper_kern__*() but the skeleton object is `other_kern` (functions other_kern__*)")
    assert messages[("wrapper", "cpu_count")]["message"] == (
        "wrapper.c:8 uses skel->rodata->cpu_count but the skeleton k_skel.h has no rodata variable `cpu_count` "
        "(it has: cpus)")
    assert messages[("wrapper", "host_traffic")]["message"] == (
        "wrapper.c:11 looks up map \"host_traffic\" by name but the skeleton k_skel.h has no map `host_traffic` "
        "(it has: flow_table, host_trafic, rodata)")
    assert messages[("binding", "shaper_set")]["message"] == (
        "wrapper.h:11 declares shaper_set() with 3 parameter(s) but bindings.rs has it with 2")
    assert messages[("binding", "logf")]["message"] == (
        "wrapper.h:15 declares logf() (2 parameter(s)) but bindings.rs has no `pub fn logf`")


def test_skeleton_variables():
    text = ("struct k {\n\tstruct k__rodata {\n\t\t__u32 cpu_count;\n\t\tchar name[16];\n\t} *rodata;\n"
            "\tstruct k__bss {\n\t\t__u32 offset;\n\t} *bss;\n};\n")
    assert _drift.skeleton_variables(text) == {"rodata": ["cpu_count", "name"], "bss": ["offset"]}


# ---------------------------------------------------------------------------
# Constants, assertions, summary
# ---------------------------------------------------------------------------

def test_constants_report():
    rows, drift = _drift.constants_report([
        {"name": "A", "header": "h.h", "c_value": 1, "rust": "src/lib.rs", "rust_name": "A", "rust_value": 1},
        {"name": "B", "header": "h.h", "c_value": 2, "rust": None, "rust_name": "B", "rust_value": None},
        {"name": "C", "header": "h.h", "c_value": 3, "rust": "src/lib.rs", "rust_name": "RUST_C", "rust_value": 4},
        {"name": "D", "header": "h.h", "c_value": None, "rust": None, "rust_name": "D", "rust_value": None,
         "c_error": {"message": "h.h has no integer #define D", "fix": "fix the spec"}},
    ])
    assert [r["status"] for r in rows] == ["ok", "c_only", "mismatch", "error"]
    assert drift == [
        {"kind": "constant", "subject": "C",
         "message": "C is 3 in h.h but the Rust side restates it as RUST_C = 4 in src/lib.rs",
         "fix": "change the Rust const to 3 (the C value sizes the maps), or change both"},
        {"kind": "constant", "subject": "D", "message": "h.h has no integer #define D", "fix": "fix the spec"}]


def test_assertion_drift_and_messages():
    drift = _drift.assertion_drift([
        {"type": "Pair<u8>", "size": 2, "style": "assert_eq", "file": "a.rs", "line": 1, "rust_size": 2},
        {"type": "Pair<u16>", "size": 2, "style": "const_array", "file": "a.rs", "line": 2, "rust_size": 4}])
    assert [d["subject"] for d in drift] == ["Pair<u16>"]
    assert _abi.failure_message("x", ["one"]) == "ABI check failed for spec 'x': one"
    assert _abi.failure_message("x", ["one", "two"]) == "ABI check failed for spec 'x' (2 problems): 1) one 2) two"
    assert _abi.summarize("x", [{"status": "ok"}], [], []) == (
        "spec 'x': ABI parity holds: 1 mirror pair(s) match their C BTF layout, no chain drift")


# ---------------------------------------------------------------------------
# Controller half (tree-sitter): array shapes, nested layouts, paths
# ---------------------------------------------------------------------------

def test_controller_layout_data(tmp_path):
    src = tmp_path / "crate" / "src"
    src.mkdir(parents=True)
    (src / "lib.rs").write_text(textwrap.dedent("""\
        pub const N: usize = 3;
        #[repr(C)]
        pub struct Pair<T> { pub down: T, pub up: T }
        #[repr(C)]
        pub struct Outer {
            pub grid: [[u16; N]; 2],
            pub pair: Pair<u32>,
            pub x: u64,
        }
        const _: [(); 32] = [(); core::mem::size_of::<Outer>()];
        const _: [(); 9] = [(); core::mem::size_of::<Pair<u32>>()];
        """))
    spec = {"name": "t", "sources": {"workdir": "src"}, "rust": {"roots": ["src"]},
            "mirrors": [{"rust": "Outer", "c": "outer"}, {"rust": "Missing", "c": "m"}], "constants": []}
    data = _abi_controller.rust_side(spec, str(tmp_path / "crate"))
    outer = data["pairs"][0]
    assert outer["layout"]["file"] == "src/lib.rs" and outer["layout"]["size"] == 32
    grid, pair_field, x = outer["layout"]["fields"]
    assert grid["array"] == {"count": 6, "elem_size": 2, "elem_type": "u16"}
    assert [(g["name"], g["offset"], g["size"]) for g in pair_field["fields"]] == [("down", 0, 4), ("up", 4, 4)]
    assert x["fields"] is None and x["array"] is None
    assert outer["asserted"] == [{"size": 32, "style": "const_array", "file": "src/lib.rs", "line": 10}]
    assert data["assertions"] == [{"type": "Pair<u32>", "size": 9, "style": "const_array", "file": "src/lib.rs",
                                   "line": 11, "rust_size": 8}]
    assert data["pairs"][1]["error"] == "cannot resolve Rust type `Missing`: add the folder that defines it to spec rust.roots"


def test_paths_are_shown_relative_to_the_crate():
    paths = _abi_controller._Paths("/x/crates/sys")
    assert paths.rel("/x/crates/utils/src/a.rs") == "../utils/src/a.rs"
    assert paths.text("bad (/x/crates/sys/src/a.rs:3) and (/x/crates/utils/b.rs:1)") == \
        "bad (src/a.rs:3) and (../utils/b.rs:1)"


def test_reordering_inside_a_nested_struct_names_that_struct_order():
    c = [f("a", 0, 8, "__u64"),
         f("w", 8, 16, "struct win", fields=[f("start", 0, 8, "__u64"), f("bytes", 8, 8, "__u64")])]
    r = [f("a", 0, 8, "u64"),
         f("w", 8, 16, "Win", fields=[f("bytes", 0, 8, "u64"), f("start", 8, 8, "u64")])]
    out = _parity.compare_pair(entry(r, 24), c_layout(24), c, None, {})
    assert out["problems"] == [HEAD + "field `w.start` is at C offset 8 size 8 but Rust offset 16 size "
                                      "8: the Rust fields are in a different order than in C; reorder them as in C: "
                                      "start, bytes"]
