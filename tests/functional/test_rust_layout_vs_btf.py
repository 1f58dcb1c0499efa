"""Property test: the Rust layout engine agrees with real compilers.

Random #[repr(C)] structs (primitives, arrays, nested structs, a generic
``Pair<T>``, tuple structs, packed/aligned variants) are rendered both as Rust
and as C. The C side is compiled with ``clang -target bpf -g`` and its struct
sizes and member offsets are read from the object's BTF (``bpftool btf dump
format raw -j``); the engine's layout of the Rust side must match exactly.
When ``rustc`` is available a second property checks the engine against
rustc itself (``size_of``/``offset_of!`` asserted at compile time).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.crate import RustCrate

# (rust, c) primitive pairs; C types as clang lays them out for -target bpf.
PRIMS = [
    ("u8", "unsigned char"), ("i8", "signed char"), ("bool", "_Bool"),
    ("u16", "unsigned short"), ("i16", "short"),
    ("u32", "unsigned int"), ("i32", "int"), ("f32", "float"), ("char", "unsigned int"),
    ("u64", "unsigned long long"), ("i64", "long long"), ("f64", "double"),
    ("usize", "unsigned long"), ("isize", "long"),
    ("u128", "unsigned __int128"), ("i128", "__int128"),
]

PAIR_RUST = "#[repr(C)]\n#[derive(Clone, Copy)]\npub struct Pair<T> {\n    pub a: T,\n    pub b: T,\n}\n"

SETTINGS = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class Ty:
    """A generated field type: rust text, C base type, C array dims, (transitive) align attr."""

    def __init__(self, rust, c_base, dims=(), has_align=False, pair_of=None):
        self.rust = rust
        self.c_base = c_base
        self.dims = tuple(dims)
        self.has_align = has_align
        self.pair_of = pair_of

    def c_decl(self, name):
        return "%s %s%s" % (self.c_base, name, "".join("[%d]" % d for d in self.dims))


def _mangle(ty):
    return ty.c_base.replace("struct ", "").replace(" ", "_")


def _pair(inner):
    return Ty("Pair<%s>" % inner.rust, "struct Pair_%s" % _mangle(inner), (), inner.has_align, inner)


@st.composite
def field_type(draw, structs, allow_aligned):
    prims = [Ty(r, c) for r, c in PRIMS]
    usable = [s for s in structs if allow_aligned or not s.has_align]
    base_choices = [st.sampled_from(prims)]
    if usable:
        base_choices.append(st.sampled_from(usable))
    base = draw(st.one_of(*base_choices))
    shape = draw(st.sampled_from(["plain", "plain", "array", "pair", "pair_pair", "array2"]))
    if shape == "array":
        n = draw(st.integers(1, 5))
        return Ty("[%s; %d]" % (base.rust, n), base.c_base, (n,), base.has_align)
    if shape == "array2":
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        return Ty("[[%s; %d]; %d]" % (base.rust, m, n), base.c_base, (n, m), base.has_align)
    if shape == "pair":
        return _pair(base)
    if shape == "pair_pair":
        return _pair(_pair(draw(st.sampled_from(prims))))
    return base


@st.composite
def programs(draw):
    structs = []
    specs = []
    for i in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(["plain", "plain", "plain", "packed", "packed2", "packed4", "align"]))
        packed = {"packed": 1, "packed2": 2, "packed4": 4}.get(mode)
        align = draw(st.sampled_from([4, 8, 16, 32])) if mode == "align" else None
        tuple_style = draw(st.booleans())
        fields = draw(st.lists(field_type(structs, allow_aligned=packed is None), min_size=1, max_size=6))
        has_align = align is not None or any(f.has_align for f in fields)
        specs.append((i, packed, align, tuple_style, fields))
        structs.append(Ty("S%d" % i, "struct S%d" % i, (), has_align))
    return specs


def render(specs):
    rust = [PAIR_RUST]
    c = []
    emitted = []  # C struct tags in definition order
    checks = []   # (rust type, C tag)

    def need_pair(ty):
        if ty.pair_of is None:
            return
        need_pair(ty.pair_of)
        tag = ty.c_base.replace("struct ", "")
        if tag not in emitted:
            emitted.append(tag)
            c.append("%s { %s; %s; };" % (ty.c_base, ty.pair_of.c_decl("a"), ty.pair_of.c_decl("b")))
            checks.append((ty.rust, tag))

    for i, packed, align, tuple_style, fields in specs:
        for f in fields:
            need_pair(f)
        reprs = ["C"]
        if packed == 1:
            reprs.append("packed")
        elif packed:
            reprs.append("packed(%d)" % packed)
        if align:
            reprs.append("align(%d)" % align)
        attrs = "/// Generated struct %d.\n#[repr(%s)]\n#[derive(Clone, Copy)]\n" % (i, ", ".join(reprs))
        if tuple_style:
            rust.append(attrs + "pub struct S%d(%s);\n" % (i, ", ".join("pub " + f.rust for f in fields)))
        else:
            body = "".join("    /// field %d\n    pub f%d: %s,\n" % (n, n, f.rust) for n, f in enumerate(fields))
            rust.append(attrs + "pub struct S%d {\n%s}\n" % (i, body))
        members = " ".join("%s;" % f.c_decl("f%d" % n) for n, f in enumerate(fields))
        decl = "struct S%d { %s }%s;" % (i, members, " __attribute__((aligned(%d)))" % align if align else "")
        if packed:
            decl = "#pragma pack(push, %d)\n%s\n#pragma pack(pop)" % (packed, decl)
        c.append(decl)
        emitted.append("S%d" % i)
        checks.append(("S%d" % i, "S%d" % i))
    c.extend("struct %s g_%s;" % (tag, tag) for tag in emitted)
    return "\n".join(rust), "\n".join(c) + "\n", checks


def _run(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def btf_structs(c_source, workdir):
    src = os.path.join(workdir, "layouts.c")
    obj = os.path.join(workdir, "layouts.o")
    with open(src, "w") as fh:
        fh.write(c_source)
    _run(["clang", "-g", "-c", "-target", "bpf", "-O2", "layouts.c", "-o", "layouts.o"], workdir)
    dump = json.loads(_run(["bpftool", "btf", "dump", "file", obj, "format", "raw", "-j"], workdir))
    out = {}
    for t in dump["types"]:
        if t["kind"] == "STRUCT":
            out[t["name"]] = (t["size"], [m["bits_offset"] for m in t["members"]])
    return out


@pytest.fixture(scope="module")
def toolchain():
    missing = [t for t in ("clang", "bpftool") if not shutil.which(t)]
    if missing:
        pytest.fail("toolchain missing: %s (run tests/bootstrap.sh --tests)" % ", ".join(missing))


@SETTINGS
@given(specs=programs())
def test_rust_layout_matches_btf(toolchain, specs):
    rust_src, c_src, checks = render(specs)
    with tempfile.TemporaryDirectory(prefix="lqos-rust-layout-") as tmp:
        os.makedirs(os.path.join(tmp, "src"))
        with open(os.path.join(tmp, "src", "lib.rs"), "w") as fh:
            fh.write(rust_src)
        btf = btf_structs(c_src, tmp)
        crate = RustCrate([os.path.join(tmp, "src")])
        for rust_type, c_tag in checks:
            lay = crate.layout(rust_type)
            c_size, c_bits = btf[c_tag]
            assert lay.size == c_size, (rust_type, rust_src, c_src)
            assert [f.offset * 8 for f in lay.fields] == c_bits, (rust_type, rust_src, c_src)


@pytest.mark.skipif(not shutil.which("rustc"), reason="rustc not installed (optional cross-check)")
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=programs())
def test_rust_layout_matches_rustc(specs):
    rust_src, _c_src, checks = render(specs)
    with tempfile.TemporaryDirectory(prefix="lqos-rust-layout-") as tmp:
        os.makedirs(os.path.join(tmp, "src"))
        with open(os.path.join(tmp, "src", "lib.rs"), "w") as fh:
            fh.write(rust_src)
        crate = RustCrate([os.path.join(tmp, "src")])
        asserts = []
        for rust_type, _tag in checks:
            lay = crate.layout(rust_type)
            asserts.append("const _: () = assert!(core::mem::size_of::<%s>() == %d);" % (rust_type, lay.size))
            asserts.append("const _: () = assert!(core::mem::align_of::<%s>() == %d);" % (rust_type, lay.align))
            for f in lay.fields:
                asserts.append("const _: () = assert!(core::mem::offset_of!(%s, %s) == %d);"
                               % (rust_type, f.name, f.offset))
        check = os.path.join(tmp, "check.rs")
        with open(check, "w") as fh:
            fh.write("#![allow(dead_code)]\n" + rust_src + "\n" + "\n".join(asserts) + "\n")
        _run(["rustc", "--edition", "2021", "--crate-type", "lib", "--emit", "metadata",
              "-o", os.path.join(tmp, "check.rmeta"), check], tmp)
