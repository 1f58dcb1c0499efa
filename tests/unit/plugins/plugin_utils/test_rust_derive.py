"""Unit tests for the controller half of the derivation (plugin_utils/_rust/derive.py),
on small Rust sources written here."""
from __future__ import annotations

import textwrap

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.derive import (
    RustDerivation, restated_constants, snake_case,
)
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.crate import RustCrate

MAP_TYPES = """
use std::marker::PhantomData;
pub struct Map<K, V> { _k: PhantomData<K>, _v: PhantomData<V> }
impl<K, V> Map<K, V> { pub fn open(p: &str) -> Self { let _ = p; todo!() } }
pub struct Iter<K, V> { _k: PhantomData<K>, _v: PhantomData<V> }
impl<K, V> Iter<K, V> { pub fn new(a: usize, b: usize) -> Self { todo!() } }
#[repr(C)] pub struct Key { pub a: u32 }
#[repr(C)] pub struct Val { pub b: u64 }
#[repr(C)] pub struct TcControl { pub bypass: u32 }
pub const MAX_IPS: usize = 1024;
"""


def derive(tmp_path, code: str) -> dict:
    (tmp_path / "types.rs").write_text(textwrap.dedent(MAP_TYPES))
    (tmp_path / "lqos_kernel.rs").write_text(textwrap.dedent(code))
    crate = RustCrate([str(tmp_path)])
    return RustDerivation(crate, rel=lambda p: p.rsplit("/", 1)[-1]).derive()


def test_snake_case():
    assert snake_case("TcClassifyControl") == "tc_classify_control"
    assert snake_case("XdpIpAddress") == "xdp_ip_address"
    assert snake_case("HTTPFlow") == "http_flow"


def test_openings_by_literal_const_let_and_if_else(tmp_path):
    d = derive(tmp_path, """
        const P: &str = "/sys/fs/bpf/by_const";
        fn f(recip: bool) {
            let _a = Map::<Key, Val>::open("/sys/fs/bpf/by_literal");
            let _b = Map::<u32, Val>::open(P);
            let path = if recip { "/sys/fs/bpf/one" } else { "/sys/fs/bpf/two" };
            let _c = Map::<Key, u64>::open(path);
        }
    """)
    assert [(m["map"], m["key"], m["value"], m["line"]) for m in d["maps"]] == [
        ("by_literal", "Key", "Val", 4), ("by_const", "u32", "Val", 5), ("one", "Key", "u64", 7),
        ("two", "Key", "u64", 7)]
    assert d["unsupported"] == []
    assert d["explicit_pins"] == [{"name": "by_const", "file": "lqos_kernel.rs", "line": 2},
                                  {"name": "by_literal", "file": "lqos_kernel.rs", "line": 4},
                                  {"name": "one", "file": "lqos_kernel.rs", "line": 6},
                                  {"name": "two", "file": "lqos_kernel.rs", "line": 6}]


def test_iterator_reader_takes_key_and_value_from_its_static(tmp_path):
    d = derive(tmp_path, """
        static TRAFFIC: OnceLock<Mutex<Result<Iter<Key, Val>, ()>>> = OnceLock::new();
        fn read(s: &Skel) {
            TRAFFIC.get_or_init(|| Iter::new((*s).progs.reader, (*s).maps.traffic));
        }
    """)
    assert [(m["map"], m["key"], m["value"], m["via"]) for m in d["maps"]] == [
        ("traffic", "Key", "Val", "Iter::new (iterator reader)")]
    assert [(u["kind"], u["name"]) for u in d["skeleton_uses"]] == [("progs", "reader"), ("maps", "traffic")]


def test_unsupported_constructs_are_named(tmp_path):
    d = derive(tmp_path, """
        fn f(name: &str) {
            let _a = Map::<Key, Val>::open(&format!("/sys/fs/bpf/{}", name));
            let _b = Iter::new(s.progs.p, s.maps.m);
        }
    """)
    assert [(u["line"], u["message"]) for u in d["unsupported"]] == [
        (3, "opens a `Map<Key, Val>` from a path that is neither a string literal, a `const &str` nor a local "
            "`let` of literals"),
        (4, "creates a `Iter` over a skeleton map, but its key and value types are not visible: no static of "
            "type `Iter<K, V>` is used in the same function")]


def test_calls_through_the_bindings_module(tmp_path):
    d = derive(tmp_path, """
        pub mod bpf { include!(concat!(env!("OUT_DIR"), "/bindings.rs")); }
        use crate::bpf::{max_ips, other as renamed};
        fn f() {
            unsafe { bpf::open_kern(1, 2) };
            let _ = max_ips();
            let _ = crate::lqos_kernel::bpf::attach(3);
            let _ = not_bound(4);
        }
    """)
    assert d["bindings_module"] == "lqos_kernel.rs:2 (mod bpf)"
    assert [(c["name"], c["arity"], c["line"]) for c in d["calls"]] == [
        ("open_kern", 2, 5), ("max_ips", 0, 6), ("attach", 1, 7)]


def test_repr_c_and_restated_constants(tmp_path):
    d = derive(tmp_path, "fn f() {}\n")
    assert [r["snake"] for r in d["repr_c"]] == ["key", "tc_control", "val"]
    crate = RustCrate([str(tmp_path)])
    assert [c["name"] for c in restated_constants(crate, {"MAX_IPS": 1024, "OTHER": 1})] == ["MAX_IPS"]
