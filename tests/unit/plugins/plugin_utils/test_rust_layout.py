"""Unit tests for the controller-side Rust #[repr(C)] layout engine."""
from __future__ import annotations

import sys
import textwrap

import pytest

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust import parse as _rust_layout
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.crate import RustCrate
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    Field,
    Layout,
    RustLayoutError,
    SizeAssertion,
)


@pytest.fixture
def crate(tmp_path, monkeypatch):
    """crate({"src/a.rs": "..."}, roots=["src"]) -> RustCrate; paths relative to tmp_path."""
    monkeypatch.chdir(tmp_path)

    def make(files, roots=("src",)):
        for rel, text in files.items():
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return RustCrate(list(roots))

    return make


def offsets(layout):
    return [(f.name, f.offset, f.size) for f in layout.fields]


def error(fn, *args):
    with pytest.raises(RustLayoutError) as exc:
        fn(*args)
    return str(exc.value)


# --------------------------------------------------------------------------- primitives


def test_primitives_sizes_offsets_and_tail_padding(crate):
    c = crate({"src/a.rs": """
        #[repr(C)]
        pub struct Prims {
            pub a: u8, pub b: i8, pub c: bool, pub d: u16, pub e: i16,
            pub f: u32, pub g: i32, pub h: f32, pub i: char,
            pub j: u64, pub k: i64, pub l: f64, pub m: usize, pub n: isize,
            pub o: u8,
        }
    """})
    lay = c.layout("Prims")
    assert offsets(lay) == [
        ("a", 0, 1), ("b", 1, 1), ("c", 2, 1), ("d", 4, 2), ("e", 6, 2),
        ("f", 8, 4), ("g", 12, 4), ("h", 16, 4), ("i", 20, 4),
        ("j", 24, 8), ("k", 32, 8), ("l", 40, 8), ("m", 48, 8), ("n", 56, 8),
        ("o", 64, 1),
    ]
    assert (lay.size, lay.align) == (72, 8)
    assert lay == Layout(name="Prims", size=72, align=8, fields=lay.fields, file="src/a.rs", line=3,
                         packed=False, repr_align=None)
    assert lay.fields[0] == Field(name="a", offset=0, size=1, align=1, type="u8")


def test_u128_is_16_aligned(crate):
    c = crate({"src/a.rs": "#[repr(C)] struct W { a: u8, b: u128, c: i128 }\n"})
    lay = c.layout("W")
    assert offsets(lay) == [("a", 0, 1), ("b", 16, 16), ("c", 32, 16)]
    assert (lay.size, lay.align) == (48, 16)


def test_layout_of_non_struct_type_expressions(crate):
    c = crate({"src/a.rs": "const N: usize = 3;\n"})
    assert c.layout("u64") == Layout("u64", 8, 8, [], "", 0, False, None)
    lay = c.layout("[u16; N * 2]")
    assert (lay.name, lay.size, lay.align) == ("[u16; N * 2]", 12, 2)


def test_empty_unit_and_zero_sized_fields(crate):
    c = crate({"src/a.rs": """
        use core::marker::PhantomData;
        #[repr(C)] pub struct Unit;
        #[repr(C)] pub struct Empty {}
        #[repr(C)] pub struct Z<T> { a: u32, _m: PhantomData<T>, u: (), b: u8 }
    """})
    assert c.layout("Unit").size == 0
    assert c.layout("Empty").size == 0
    lay = c.layout("Z<u64>")
    assert offsets(lay) == [("a", 0, 4), ("_m", 4, 0), ("u", 4, 0), ("b", 4, 1)]
    assert lay.fields[1].type == "PhantomData<u64>"
    assert lay.size == 8


def test_pointers_are_eight_bytes(crate):
    c = crate({"src/a.rs": "#[repr(C)] struct P { a: u8, p: *const u8, q: *mut P, f: fn(u32) -> u32 }\n"})
    assert offsets(c.layout("P")) == [("a", 0, 1), ("p", 8, 8), ("q", 16, 8), ("f", 24, 8)]


# --------------------------------------------------------------------------- arrays / consts


def test_arrays_with_literals_consts_and_expressions(crate):
    c = crate({
        "src/lib.rs": """
            pub const MAX: usize = 4;
            const SHIFTED: usize = 1 << 2;
        """,
        "src/a.rs": """
            const LOCAL: usize = MAX * 2 + 1;
            #[repr(C)]
            pub struct Arr {
                pub a: [u8; 5],
                pub b: [u32; MAX],
                pub c: [u16; LOCAL],
                pub d: [[u8; 2]; 3],
                pub e: [u64; (MAX - 2) * 2],
                pub f: [u8; SHIFTED as usize],
                pub g: [u8; 0x10],
                pub h: [u8; crate::MAX],
                pub i: [u8; u8::BITS as usize],
                pub j: [u8; core::mem::size_of::<u32>()],
            }
        """})
    lay = c.layout("Arr")
    assert offsets(lay) == [
        ("a", 0, 5), ("b", 8, 16), ("c", 24, 18), ("d", 42, 6), ("e", 48, 32),
        ("f", 80, 4), ("g", 84, 16), ("h", 100, 4), ("i", 104, 8), ("j", 112, 4),
    ]
    assert lay.size == 120
    assert lay.fields[0].type == "[u8; 5]"
    assert lay.fields[3].type == "[[u8; 2]; 3]"


def test_constants(crate):
    c = crate({
        "src/a.rs": """
            pub const A: u32 = 128_000u32;
            const B: usize = 0x1_0;
            pub(crate) const C: u64 = 2 * 3 + 4;
            const D: i32 = -5;
            const E: u8 = 0b1010_u8;
            const F: usize = A as usize / 1000 % 7;
            const S: &str = "not a number";
            const T: (u8, u8) = (1, 2);
            const _: [(); 1] = [(); 1];
            mod inner { pub const INNER: u16 = 0o17; }
            fn f() { const LOCAL: u32 = 9; }
            impl X { const ASSOC: u32 = 3; }
            const RUNTIME: usize = some_fn();
        """,
        "src/b.rs": "const SAME: u32 = 1;\nconst CLASH: u32 = 1;\n",
        "src/c.rs": "const SAME: u32 = 1;\nconst CLASH: u32 = 2;\n",
    })
    assert c.constants() == {"A": 128000, "B": 16, "C": 10, "D": -5, "E": 10, "F": 2,
                             "INNER": 15, "SAME": 1}
    assert c.constant("CLASH", "src/c.rs") == 2
    assert c.constant("CLASH", "src/b.rs") == 1
    assert error(c.constant, "CLASH") == (
        "Rust const `CLASH` is defined more than once with different values (src/b.rs:2 = 1, src/c.rs:2 = 2): "
        "rename one, or keep only the folder with the wanted one in spec rust.roots")


def test_array_length_const_prefers_the_same_file(crate):
    c = crate({
        "src/a.rs": "const N: usize = 2;\n#[repr(C)] struct A { x: [u8; N] }\n",
        "src/b.rs": "const N: usize = 7;\n#[repr(C)] struct B { x: [u8; N] }\n",
        "src/c.rs": "#[repr(C)] struct C { x: [u8; N] }\n",
    })
    assert c.layout("A").size == 2
    assert c.layout("B").size == 7
    assert error(c.layout, "C") == (
        "Rust const `N` used by field `x` of `C` (src/c.rs:1) is defined more than once with different values "
        "(src/a.rs:1 = 2, src/b.rs:1 = 7): rename one, or keep only the folder with the wanted one in spec "
        "rust.roots")


# --------------------------------------------------------------------------- composition


def test_nested_structs(crate):
    c = crate({"src/a.rs": """
        #[repr(C)] pub struct Inner { a: u8, b: u32 }
        #[repr(C)] pub struct Outer { x: u8, inner: Inner, arr: [Inner; 2], y: u16 }
    """})
    lay = c.layout("Outer")
    assert offsets(lay) == [("x", 0, 1), ("inner", 4, 8), ("arr", 12, 16), ("y", 28, 2)]
    assert (lay.size, lay.align) == (32, 4)
    assert lay.fields[1] == Field("inner", 4, 8, 4, "Inner")


GENERICS = """
    /// Down then up.
    #[repr(C)]
    #[derive(Copy, Clone, Debug, Default)]
    pub struct DownUpOrder<T> {
        /// down
        pub down: T,
        /// up
        pub up: T,
    }

    #[repr(C)]
    pub struct Two<A, B = u8> { pub a: A, pub b: B }

    #[repr(C)]
    pub struct Buf<T, const N: usize> { pub items: [T; N], pub len: u8 }

    #[repr(C)]
    pub struct Rec { pub a: u8, pub b: u32 }
"""


def test_generic_instantiation(crate):
    c = crate({"src/units.rs": GENERICS, "src/flow.rs": """
        use crate::units::DownUpOrder;
        #[repr(C)]
        pub struct Flow {
            pub start: u64,
            pub bytes: DownUpOrder<u64>,
            pub rate: DownUpOrder<u32>,
            pub retrans: DownUpOrder<u16>,
            pub recs: DownUpOrder<Rec>,
            pub nested: DownUpOrder<DownUpOrder<u8>>,
            pub two: Two<u8, DownUpOrder<u16>>,
            pub two_default: Two<u32>,
            pub buf: Buf<u16, 3>,
            pub buf_braced: Buf<u8, { 2 * 2 }>,
        }
    """})
    lay = c.layout("Flow")
    assert offsets(lay) == [
        ("start", 0, 8), ("bytes", 8, 16), ("rate", 24, 8), ("retrans", 32, 4), ("recs", 36, 16),
        ("nested", 52, 4), ("two", 56, 6), ("two_default", 64, 8), ("buf", 72, 8), ("buf_braced", 80, 5),
    ]
    assert lay.size == 88
    assert [f.type for f in lay.fields][:3] == ["u64", "DownUpOrder<u64>", "DownUpOrder<u32>"]

    inst = c.layout("DownUpOrder<u64>")
    assert inst.name == "DownUpOrder<u64>"
    assert inst.fields == [Field("down", 0, 8, 8, "u64"), Field("up", 8, 8, 8, "u64")]
    assert (inst.file, inst.line) == ("src/units.rs", 5)
    nested = c.layout("DownUpOrder<DownUpOrder<Rec>>")
    assert (nested.size, nested.align) == (32, 4)
    assert nested.fields[0].type == "DownUpOrder<Rec>"
    buf = c.layout("Buf<u32, 4>")
    assert buf.name == "Buf<u32, 4>"
    assert buf.fields[0] == Field("items", 0, 16, 4, "[u32; 4]")
    assert buf.size == 20


def test_generic_errors(crate):
    c = crate({"src/units.rs": GENERICS, "src/a.rs": """
        #[repr(C)] struct TooMany { x: DownUpOrder<u8, u16> }
        #[repr(C)] struct TypeForConst { x: Buf<u8, u8> }
    """})
    assert error(c.layout, "DownUpOrder") == (
        "Rust type `DownUpOrder` gives 0 generic argument(s) but `DownUpOrder` (src/units.rs:5) takes 1: "
        "write it as `DownUpOrder<T>` with concrete types")
    assert error(c.layout, "TooMany") == (
        "Rust type `DownUpOrder<u8, u16>` used by field `x` of `TooMany` (src/a.rs:2) gives 2 generic "
        "argument(s) but `DownUpOrder` (src/units.rs:5) takes 1: write it as `DownUpOrder<T>` with concrete types")
    assert error(c.layout, "Two") == (
        "Rust type `Two` gives 0 generic argument(s) but `Two` (src/units.rs:13) takes 1 to 2: write it as "
        "`Two<A, B>` with concrete types")
    assert error(c.layout, "TypeForConst").startswith("cannot evaluate `u8` used by field `x` of `TypeForConst`")


def test_tuple_structs(crate):
    c = crate({"src/a.rs": """
        #[repr(C)]
        #[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
        pub struct XdpIpAddress(pub [u8; 16]);
        #[repr(C)] pub struct Pairish(pub u8, u32, pub(crate) u16);
        #[repr(C)] pub struct Key { pub prefixlen: u32, pub address: XdpIpAddress }
    """})
    assert offsets(c.layout("XdpIpAddress")) == [("0", 0, 16)]
    assert c.layout("XdpIpAddress").align == 1
    assert offsets(c.layout("Pairish")) == [("0", 0, 1), ("1", 4, 4), ("2", 8, 2)]
    assert c.layout("Pairish").size == 12
    assert c.layout("Key").size == 20


def test_type_aliases(crate):
    c = crate({"src/units.rs": GENERICS, "src/a.rs": """
        pub type Bytes = DownUpOrder<u64>;
        pub type Handle = u32;
        pub type Pairs<T> = DownUpOrder<[T; 2]>;
        pub type Chain = Bytes;
        #[repr(C)] pub struct UsesAliases { h: Handle, b: Bytes, p: Pairs<u16>, c: Chain }
    """})
    lay = c.layout("UsesAliases")
    assert offsets(lay) == [("h", 0, 4), ("b", 8, 16), ("p", 24, 8), ("c", 32, 16)]
    assert lay.fields[1].type == "Bytes"
    assert c.layout("Bytes").name == "DownUpOrder<u64>"
    assert c.layout("Handle").size == 4


def test_explicit_padding_fields(crate):
    c = crate({"src/a.rs": """
        #[repr(C)]
        pub struct Key {
            pub src: [u8; 16],
            pub dst: [u8; 16],
            pub sport: u16,
            pub dport: u16,
            pub proto: u8,
            /// Padding to 40 bytes.
            padding: u8,
            padding1: u8,
            padding2: u8,
        }
    """})
    lay = c.layout("Key")
    assert lay.size == 40
    assert offsets(lay)[-3:] == [("padding", 37, 1), ("padding1", 38, 1), ("padding2", 39, 1)]


def test_packed(crate):
    c = crate({"src/a.rs": """
        #[repr(C, packed)] pub struct P1 { a: u8, b: u64, c: u16 }
        #[repr(C)]
        #[repr(packed)]
        pub struct P2 { a: u8, b: u64 }
        #[repr(C, packed(2))] pub struct P3 { a: u8, b: u64, c: u8 }
        #[repr(C)] pub struct HoldsPacked { a: u8, p: P1 }
    """})
    p1 = c.layout("P1")
    assert offsets(p1) == [("a", 0, 1), ("b", 1, 8), ("c", 9, 2)]
    assert (p1.size, p1.align, p1.packed, p1.repr_align) == (11, 1, True, None)
    assert (c.layout("P2").size, c.layout("P2").packed) == (9, True)
    p3 = c.layout("P3")
    assert offsets(p3) == [("a", 0, 1), ("b", 2, 8), ("c", 10, 1)]
    assert (p3.size, p3.align) == (12, 2)
    assert offsets(c.layout("HoldsPacked")) == [("a", 0, 1), ("p", 1, 11)]


def test_align(crate):
    c = crate({"src/a.rs": """
        #[repr(C, align(16))] pub struct A16 { a: u32 }
        #[repr(C)]
        #[repr(align(8))]
        pub struct A8 { a: u8, b: u8 }
        #[repr(C)] pub struct Holder { x: u8, a: A16, y: u8 }
    """})
    a16 = c.layout("A16")
    assert (a16.size, a16.align, a16.repr_align, a16.packed) == (16, 16, 16, False)
    assert (c.layout("A8").size, c.layout("A8").align) == (8, 8)
    h = c.layout("Holder")
    assert offsets(h) == [("x", 0, 1), ("a", 16, 16), ("y", 32, 1)]
    assert (h.size, h.align) == (48, 16)


def test_transparent(crate):
    c = crate({"src/a.rs": """
        use std::marker::PhantomData;
        #[repr(transparent)] pub struct Count(pub u64);
        #[repr(transparent)] pub struct Tagged<T> { v: u32, _t: PhantomData<T> }
        #[repr(C)] pub struct Uses { a: u8, c: Count, t: Tagged<u8> }
    """})
    cnt = c.layout("Count")
    assert (cnt.size, cnt.align, cnt.fields) == (8, 8, [Field("0", 0, 8, 8, "u64")])
    assert offsets(c.layout("Uses")) == [("a", 0, 1), ("c", 8, 8), ("t", 16, 4)]


def test_enums_and_unions(crate):
    c = crate({"src/a.rs": """
        #[repr(u8)] pub enum Small { A = 1, B = 2 }
        #[repr(C)] pub enum CEnum { A, B }
        #[repr(C)] pub union U { a: u8, b: u32, c: [u16; 3] }
        #[repr(C)] pub struct S { s: Small, e: CEnum, u: U }
    """})
    assert (c.layout("Small").size, c.layout("Small").align) == (1, 1)
    assert c.layout("CEnum").size == 4
    u = c.layout("U")
    assert offsets(u) == [("a", 0, 1), ("b", 0, 4), ("c", 0, 6)]
    assert (u.size, u.align) == (8, 4)
    assert offsets(c.layout("S")) == [("s", 0, 1), ("e", 4, 4), ("u", 8, 8)]


def test_attributes_docs_and_other_items_do_not_confuse(crate):
    c = crate({"src/a.rs": """
        //! Module docs with a struct Fake { x: u8 } in them.
        use serde::{Deserialize, Serialize};

        /// Doc comment mentioning #[repr(packed)].
        #[derive(
            Debug,
            Clone,
            Serialize,
            Deserialize,
        )]
        /* block comment */
        #[repr(C)]
        #[allow(dead_code)]
        #[cfg_attr(test, derive(PartialEq))]
        pub struct Documented<T>
        where
            T: Copy + Default,
        {
            /// first
            #[serde(rename = "x")]
            pub a: u8, // trailing comment
            /* inline */ pub b: T,
        }

        impl<T: Copy + Default> Documented<T> {
            pub fn new() -> Self { todo!() }
        }

        macro_rules! fake { () => { struct Fake { x: u64 } }; }
    """})
    lay = c.layout("Documented<u32>")
    assert offsets(lay) == [("a", 0, 1), ("b", 4, 4)]
    assert (lay.line, lay.packed) == (16, False)
    assert error(c.layout, "Fake") == (
        "cannot resolve Rust type `Fake`: add the folder that defines it to spec rust.roots")


def test_path_prefixes_and_sibling_roots(crate):
    c = crate({
        "lqos_sys/src/ip_mapping/ip_hash_key.rs": """
            #[repr(C)]
            pub struct IpHashKey { pub prefixlen: u32, pub address: lqos_utils::XdpIpAddress }
        """,
        "lqos_sys/src/flows.rs": """
            use lqos_utils::units::DownUpOrder;
            #[repr(C)]
            pub struct FlowData { pub bytes: DownUpOrder<u64>, pub key: crate::ip_mapping::IpHashKey }
        """,
        "lqos_utils/src/lib.rs": "#[repr(C)] pub struct XdpIpAddress(pub [u8; 16]);\n",
        "lqos_utils/src/units/down_up.rs": "#[repr(C)] pub struct DownUpOrder<T> { pub down: T, pub up: T }\n",
        "lqos_utils/target/debug/build/gen.rs": "#[repr(C)] pub struct XdpIpAddress(pub [u8; 4]);\n",
        "lqos_utils/src/.hidden/x.rs": "#[repr(C)] pub struct XdpIpAddress(pub [u8; 8]);\n",
    }, roots=["lqos_sys/src", "lqos_utils/src"])
    key = c.layout("ip_mapping::IpHashKey")
    assert (key.name, key.size, key.file, key.line) == (
        "IpHashKey", 20, "lqos_sys/src/ip_mapping/ip_hash_key.rs", 3)
    assert offsets(c.layout("FlowData")) == [("bytes", 0, 16), ("key", 16, 20)]
    assert c.layout("lqos_utils::units::DownUpOrder<u16>").size == 4
    crate_only_sys = RustCrate(["lqos_sys/src"])
    assert error(crate_only_sys.layout, "FlowData") == (
        "cannot resolve Rust type `DownUpOrder<u64>` used by field `bytes` of `FlowData` (lqos_sys/src/flows.rs:4): "
        "add the folder that defines it to spec rust.roots")


def test_single_rs_file_as_root(crate):
    c = crate({"one.rs": "#[repr(C)] struct One { a: u16 }\n"}, roots=["one.rs"])
    assert c.layout("One").size == 2


# --------------------------------------------------------------------------- duplicates


def test_duplicates_prefer_same_file_else_error(crate):
    c = crate({
        "src/a.rs": """
            #[repr(C)] pub struct Dup { x: u8 }
            #[repr(C)] pub struct UsesA { d: Dup }
        """,
        "src/b.rs": """
            #[repr(C)] pub struct Dup { x: u64 }
            #[repr(C)] pub struct UsesB { d: Dup }
        """,
        "src/c.rs": "#[repr(C)] pub struct UsesC { d: Dup }\n",
    })
    assert c.layout("UsesA").size == 1
    assert c.layout("UsesB").size == 8
    assert error(c.layout, "UsesC") == (
        "Rust type `Dup` used by field `d` of `UsesC` (src/c.rs:1) is defined more than once "
        "(src/a.rs:2, src/b.rs:2): rename one, or keep only the folder with the wanted one in spec rust.roots")
    assert error(c.layout, "Dup") == (
        "Rust type `Dup` is defined more than once (src/a.rs:2, src/b.rs:2): rename one, or keep only the "
        "folder with the wanted one in spec rust.roots")


# --------------------------------------------------------------------------- errors


def test_not_repr_c(crate):
    c = crate({"src/a.rs": """
        #[derive(Debug)]
        pub struct Foo { a: u8 }
        #[repr(packed)] pub struct PackedOnly { a: u8 }
        #[repr(align(8))] pub struct AlignOnly { a: u8 }
        pub enum Plain { A, B }
        #[repr(C)] pub struct Holder { f: Foo }
    """})
    assert error(c.layout, "Foo") == "`Foo` is not #[repr(C)]: its layout is unspecified; add #[repr(C)]"
    assert error(c.layout, "Holder") == "`Foo` is not #[repr(C)]: its layout is unspecified; add #[repr(C)]"
    assert error(c.layout, "PackedOnly") == (
        "`PackedOnly` is not #[repr(C)]: its layout is unspecified; add #[repr(C)]")
    assert error(c.layout, "AlignOnly") == "`AlignOnly` is not #[repr(C)]: its layout is unspecified; add #[repr(C)]"
    assert error(c.layout, "Plain") == (
        "`Plain` is not #[repr(C)]: its layout is unspecified; add #[repr(C)] or an integer repr such as "
        "#[repr(u32)]")


def test_unresolved_types_are_named(crate):
    c = crate({"src/x.rs": """
        #[repr(C)]
        pub struct Baz {
            pub a: u8,
            pub bar: Foo,
        }
        #[repr(C)] pub struct InArray { pub v: [some::Missing; 2] }
        #[repr(C)] pub struct InGeneric<T> { pub v: T }
        #[repr(C)] pub struct UsesGeneric { pub g: InGeneric<Nope> }
    """})
    assert error(c.layout, "Baz") == (
        "cannot resolve Rust type `Foo` used by field `bar` of `Baz` (src/x.rs:5): add the folder that defines "
        "it to spec rust.roots")
    assert error(c.layout, "InArray") == (
        "cannot resolve Rust type `some::Missing` used by field `v` of `InArray` (src/x.rs:7): add the folder "
        "that defines it to spec rust.roots")
    assert error(c.layout, "UsesGeneric") == (
        "cannot resolve Rust type `Nope` used by field `g` of `UsesGeneric` (src/x.rs:9): add the folder that "
        "defines it to spec rust.roots")
    assert error(c.layout, "Missing<u8>") == (
        "cannot resolve Rust type `Missing<u8>`: add the folder that defines it to spec rust.roots")


def test_std_types_are_not_guessed(crate):
    c = crate({"src/a.rs": """
        use std::net::{IpAddr, Ipv6Addr as V6};
        use core::sync::atomic;
        #[repr(C)] pub struct A { ip: std::net::Ipv4Addr }
        #[repr(C)] pub struct B { ip: IpAddr }
        #[repr(C)] pub struct C { ip: V6 }
        #[repr(C)] pub struct D { c: atomic::AtomicU64 }
        #[repr(C)] pub struct E { s: SocketAddr }
        #[repr(C)] pub struct F { o: Option<u32> }
    """})
    tail = " is a standard-library type with no guaranteed layout: replace it with a #[repr(C)] type, a primitive " \
           "or a byte array"
    assert error(c.layout, "A") == "Rust type `std::net::Ipv4Addr` used by field `ip` of `A` (src/a.rs:4)" + tail
    assert error(c.layout, "B") == "Rust type `IpAddr` used by field `ip` of `B` (src/a.rs:5)" + tail
    assert error(c.layout, "C") == "Rust type `V6` used by field `ip` of `C` (src/a.rs:6)" + tail
    assert error(c.layout, "D") == "Rust type `atomic::AtomicU64` used by field `c` of `D` (src/a.rs:7)" + tail
    assert error(c.layout, "E") == "Rust type `SocketAddr` used by field `s` of `E` (src/a.rs:8)" + tail
    assert error(c.layout, "F") == "Rust type `Option<u32>` used by field `o` of `F` (src/a.rs:9)" + tail


def test_unsupported_type_syntax(crate):
    c = crate({"src/a.rs": """
        #[repr(C)] pub struct T1 { t: (u8, u32) }
        #[repr(C)] pub struct T2<'a> { s: &'a [u8] }
        #[repr(C)] pub struct T3 { s: *const str }
        #[repr(C)] pub struct T4 { d: Box<dyn Fn()> }
        #[repr(C)] pub struct T5<'a> { d: &'a dyn Send }
        #[repr(C)] pub struct T6 { n: [u8; 2 - 3] }
        #[repr(C)] pub struct T7 { n: [u8; len()] }
        #[repr(C)] pub struct T8 { n: [u8; UNKNOWN] }
    """})
    assert error(c.layout, "T1") == (
        "Rust type `(u8, u32)` used by field `t` of `T1` (src/a.rs:2) is a tuple, whose layout is unspecified: "
        "use a #[repr(C)] struct instead")
    assert error(c.layout, "T2") == (
        "Rust type `&'a [u8]` used by field `s` of `T2` (src/a.rs:3) is a fat pointer (slice, str or dyn): use a "
        "thin pointer or a fixed array")
    assert error(c.layout, "T3").startswith("Rust type `*const str` used by field `s` of `T3` (src/a.rs:4) is a fat")
    assert error(c.layout, "T4").startswith("Rust type `Box<dyn Fn()>` used by field `d` of `T4` (src/a.rs:5) is a "
                                            "standard-library type")
    assert error(c.layout, "T5").startswith("Rust type `&'a dyn Send` used by field `d` of `T5` (src/a.rs:6) is a fat")
    assert error(c.layout, "T6") == (
        "Rust type `[u8; 2 - 3]` used by field `n` of `T6` (src/a.rs:7) has a negative length (-1): fix the "
        "array length")
    assert error(c.layout, "T7") == (
        "cannot evaluate `len()` used by field `n` of `T7` (src/a.rs:8): use an integer literal, a const, or "
        "simple arithmetic (+ - * / % << >>) of them")
    assert error(c.layout, "T8") == (
        "cannot resolve Rust const `UNKNOWN` used by field `n` of `T8` (src/a.rs:9): add the folder that defines "
        "it to spec rust.roots")
    assert error(c.layout, "[u8]") == "Rust type `[u8]` is unsized: use a fixed-size array [T; N]"
    assert error(c.layout, "str") == "Rust type `str` is unsized: use a fixed-size array [T; N]"


def test_repr_errors(crate):
    c = crate({"src/a.rs": """
        #[repr(C, align(8))] pub struct Al { a: u8 }
        #[repr(C, packed, align(8))] pub struct Both { a: u8 }
        #[repr(C, packed)] pub struct PackedHoldsAligned { a: u8, b: [Al; 1] }
        #[repr(C, align(3))] pub struct Odd { a: u8 }
        #[repr(C, packed(0))] pub struct Zero { a: u8 }
        #[repr(transparent)] pub struct TwoFields { a: u8, b: u8 }
        #[repr(transparent)] pub struct NoFields;
        #[repr(C, transparent)] pub struct Mixed(u8);
        #[repr(C)] pub struct Recursive { a: u8, me: Recursive }
        #[repr(C)] pub struct Ping { p: Pong }
        #[repr(C)] pub struct Pong { p: Ping }
        #[repr(u8)] pub enum Data { A(u8), B }
        #[repr(C, align)] pub struct NoValue { a: u8 }
        #[repr(C, align(N))] pub struct NotLiteral { a: u8 }
    """})
    assert error(c.layout, "Both") == (
        "`Both` (src/a.rs:3) has both packed and align reprs: Rust rejects that; keep one")
    assert error(c.layout, "PackedHoldsAligned") == (
        "`PackedHoldsAligned` (src/a.rs:4) is packed but field `b` holds a #[repr(align)] type: Rust rejects that; "
        "drop one of the reprs")
    assert error(c.layout, "Odd") == "`Odd` (src/a.rs:5) has align(3): the value must be a power of two; fix the repr"
    assert error(c.layout, "Zero") == (
        "`Zero` (src/a.rs:6) has packed(0): the value must be a power of two; fix the repr")
    assert error(c.layout, "TwoFields") == (
        "`TwoFields` (src/a.rs:7) is #[repr(transparent)] but has 2 non-zero-sized fields: it must have exactly one")
    assert error(c.layout, "NoFields") == (
        "`NoFields` (src/a.rs:8) is #[repr(transparent)] but has 0 non-zero-sized fields: it must have exactly one")
    assert error(c.layout, "Mixed") == (
        "`Mixed` (src/a.rs:9) combines #[repr(transparent)] with other reprs: Rust rejects that; keep only "
        "transparent")
    assert error(c.layout, "Recursive") == (
        "`Recursive` (src/a.rs:10) contains itself by value: a type cannot hold itself; put it behind a pointer "
        "or fix the field type")
    assert error(c.layout, "Ping") == (
        "`Ping` (src/a.rs:11) contains itself by value: a type cannot hold itself; put it behind a pointer or fix "
        "the field type")
    assert error(c.layout, "Data") == (
        "`Data` (src/a.rs:13) is an enum with data-carrying variants: its layout is not supported; mirror it with "
        "a #[repr(C)] struct")
    assert error(c.layout, "NoValue") == "`NoValue` (src/a.rs:14) has repr `align` without a value: write align(N)"
    assert error(c.layout, "NotLiteral") == (
        "`NotLiteral` (src/a.rs:15) has repr `align(N)`: write align(N) with an integer literal N")


def test_type_expression_parse_error(crate):
    c = crate({"src/a.rs": ""})
    assert error(c.layout, "Foo<") == (
        "cannot parse Rust type `Foo<`: write it as in Rust source, e.g. `DownUpOrder<u64>`")
    assert error(c.layout, "") == "cannot parse Rust type ``: write it as in Rust source, e.g. `DownUpOrder<u64>`"


def test_missing_root(crate):
    crate({}, roots=[])
    assert error(RustCrate, ["nope/src"]) == (
        "Rust root `nope/src` does not exist or is not a folder: fix spec rust.roots")


def test_missing_tree_sitter(monkeypatch):
    monkeypatch.setattr(_rust_layout, "_PARSER", None)
    monkeypatch.setitem(sys.modules, "tree_sitter_rust", None)
    assert error(RustCrate, ["."]) == (
        "the Rust layout engine needs the Python packages tree-sitter and tree-sitter-rust, which are not "
        "importable on the controller: pip install tree-sitter tree-sitter-rust")


def test_returned_layouts_are_copies(crate):
    c = crate({"src/a.rs": "#[repr(C)] struct A { a: u32 }\n#[repr(C)] struct B { a: A }\n"})
    lay = c.layout("A")
    lay.size = 99
    lay.fields[0].offset = 7
    assert c.layout("A").size == 4
    assert c.layout("A").fields[0].offset == 0
    assert c.layout("B").size == 4


# --------------------------------------------------------------------------- size assertions


def test_size_assertions_both_styles(crate):
    c = crate({
        "src/flows.rs": """
            use core::mem::size_of;
            const FOUR: usize = 4;
            #[repr(C)] pub struct Key { a: u32 }
            const _: [(); 40] = [(); core::mem::size_of::<Key>()];
            const _: [(); std::mem::size_of::<Key>()] = [(); 4];
            const _: [(); FOUR * 2] = [(); size_of::<DownUpOrder<Key>>()];
            const KEY_SIZE_CHECK: [u8; 4] = [0; size_of::<Key>()];
            const _: [(); 0x18] = [(); size_of::<
                DownUpOrder<u64>,
            >() as usize];
            const NOT_ASSERTION: [u8; 4] = [0; 4];
            const _: [(); 4] = [(); std::mem::align_of::<Key>()];
        """,
        "src/tests.rs": """
            use std::mem;
            #[cfg(test)]
            mod test {
                use super::*;
                #[test]
                fn sizes() {
                    assert_eq!(std::mem::size_of::<HostCounter>(), 128);
                    assert_eq!(24, core::mem::size_of::<IpHashData>());
                    assert_eq!(size_of::<DownUpOrder<u32>>(), 8, "message {}", 1);
                    assert_eq!(mem::size_of::<Key>() as u32, 0x4_u32);
                    debug_assert_eq!(size_of::<Key>(), FOUR);
                    assert_eq!(size_of::<Key>(), buf.len());
                    assert_eq!(size_of::<Key>(), size_of::<u32>());
                    assert!(size_of::<Key>() == 4);
                    assert_ne!(size_of::<Key>(), 5);
                    assert_eq!(other(), 5);
                }
            }
        """,
    })
    got = c.size_assertions()
    assert got == [
        SizeAssertion("Key", 40, "const_array", "src/flows.rs", 5),
        SizeAssertion("Key", 4, "const_array", "src/flows.rs", 6),
        SizeAssertion("DownUpOrder<Key>", 8, "const_array", "src/flows.rs", 7),
        SizeAssertion("Key", 4, "const_array", "src/flows.rs", 8),
        SizeAssertion("DownUpOrder<u64>", 24, "const_array", "src/flows.rs", 9),
        SizeAssertion("HostCounter", 128, "assert_eq", "src/tests.rs", 8),
        SizeAssertion("IpHashData", 24, "assert_eq", "src/tests.rs", 9),
        SizeAssertion("DownUpOrder<u32>", 8, "assert_eq", "src/tests.rs", 10),
        SizeAssertion("Key", 4, "assert_eq", "src/tests.rs", 11),
        SizeAssertion("Key", 4, "assert_eq", "src/tests.rs", 12),
    ]


def test_size_assertions_agree_with_layouts(crate):
    c = crate({"src/units.rs": GENERICS, "src/a.rs": """
        #[repr(C)] pub struct Rec2 { a: DownUpOrder<u16>, b: u64 }
        const _: [(); 16] = [(); core::mem::size_of::<Rec2>()];
        #[test] fn t() { assert_eq!(std::mem::size_of::<DownUpOrder<Rec2>>(), 32); }
    """})
    for a in c.size_assertions():
        assert c.layout(a.type).size == a.size, a
