"""Unit tests for the target half of the derivation (module_utils/_abi/derive.py), plain data."""
from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.module_utils._abi.derive import (
    c_struct_name, call_drift, derive_pairs, explicit_pin_drift, pinned_table, skeleton_use_drift,
)


def m(name, key, value, pinning=True, type_name="hash"):
    return {"name": name, "type_name": type_name, "key_size": key, "value_size": value, "max_entries": 64,
            "flags": 0, "pinning": pinning}


MAPS = [m("traffic", 16, 128), m("ctl", 4, 4, type_name="percpu_array"), m("epoch", 4, 4), m("scratch", 4, 8, False)]
TYPES = {"traffic": {"key": "struct in6_addr", "value": "struct host_counter"},
         "ctl": {"key": "__u32", "value": "struct tc_control"},
         "epoch": {"key": "__u32", "value": "__u32"}, "scratch": {"key": None, "value": None}}
STRUCTS = {"in6_addr", "host_counter", "tc_control"}


def lay(size):
    return {"layout": {"name": "x", "size": size}, "error": None, "asserted": []}


DERIVED = {
    "maps": [{"map": "traffic", "key": "XdpIp", "value": "HostCounter", "file": "src/a.rs", "line": 3},
             {"map": "epoch", "key": "u32", "value": "u64", "file": "src/a.rs", "line": 9},
             {"map": "legacy", "key": "u32", "value": "u32", "file": "src/a.rs", "line": 12}],
    "repr_c": [{"name": "TcControl", "snake": "tc_control"}],
    "types": {"XdpIp": lay(16), "HostCounter": lay(128), "u32": lay(4), "u64": lay(8), "TcControl": lay(4)},
    "explicit_pins": [{"name": "traffic", "file": "src/lqos_kernel.rs", "line": 7},
                      {"name": "gone", "file": "src/lqos_kernel.rs", "line": 8}],
}


def test_c_struct_name():
    assert c_struct_name("struct ip_hash_key") == "ip_hash_key"
    assert c_struct_name("flow_key_t") == "flow_key_t"
    assert c_struct_name("__u32") is None and c_struct_name("__u8[16]") is None and c_struct_name(None) is None


def test_pairs_by_map_then_by_name_sizes_and_notes():
    out = derive_pairs({"mirrors": []}, MAPS, TYPES, STRUCTS, DERIVED)
    assert [(p["rust"], p["c"], p["origin"], p["maps"]) for p in out["pairs"]] == [
        ("HostCounter", "host_counter", "map", ["traffic value (src/a.rs:3)"]),
        ("TcControl", "tc_control", "name", ["ctl"]),
        ("XdpIp", "in6_addr", "map", ["traffic key (src/a.rs:3)"])]
    assert out["drift"] == [{
        "kind": "map_type", "subject": "epoch.value",
        "message": "src/a.rs:9 opens map epoch with value type `u64` (8 bytes) but the object's value is __u32 "
                   "(4 bytes)",
        "fix": "change the Rust value type to match the C map definition (4 bytes)"}]
    assert out["notes"] == ["src/a.rs:12 opens pin legacy, which the object does not define (legacy or optional "
                            "map): not checked"]


def test_explicit_mirrors_win():
    out = derive_pairs({"mirrors": [{"rust": "HostCounter", "c": "host_counter"}]}, MAPS, TYPES, STRUCTS, DERIVED)
    assert ("HostCounter", "host_counter") not in {(p["rust"], p["c"]) for p in out["pairs"]}


def test_pins_from_the_object_with_the_explicit_list_beside():
    assert [(r["name"], r["explicit"]) for r in pinned_table(MAPS, DERIVED)] == [
        ("traffic", "src/lqos_kernel.rs:7"), ("ctl", None), ("epoch", None)]
    assert [d["message"] for d in explicit_pin_drift(MAPS, DERIVED)] == [
        "src/lqos_kernel.rs:8 checks pin /sys/fs/bpf/gone at start-up but the object pins no map gone (it pins: "
        "ctl, epoch, traffic)"]


def test_calls_and_skeleton_uses():
    calls = [{"name": "open", "arity": 0, "file": "src/k.rs", "line": 4},
             {"name": "gone", "arity": 1, "file": "src/k.rs", "line": 5},
             {"name": "attach", "arity": 3, "file": "src/k.rs", "line": 6}]
    assert [d["message"] for d in call_drift(calls, {"open": 0, "attach": 2}, "bindings.rs")] == [
        "src/k.rs:5 calls gone() through the bindings but bindings.rs has no `pub fn gone` (wrapper.h no longer "
        "declares it, or libbpf's headers do not): cargo build would fail",
        "src/k.rs:6 calls attach() with 3 argument(s) but bindings.rs declares it with 2 parameter(s)"]
    skel = {"programs": ["xdp_prog"], "maps": ["traffic"], "internal_maps": ["kern.rodata"]}
    uses = [{"kind": "progs", "name": "flow_reader", "file": "src/i.rs", "line": 9},
            {"kind": "maps", "name": "traffic", "file": "src/i.rs", "line": 9}]
    assert [d["message"] for d in skeleton_use_drift(uses, skel, "k_skel.h")] == [
        "src/i.rs:9 uses skeleton progs.flow_reader but k_skel.h has no program `flow_reader` (it has: xdp_prog)"]
