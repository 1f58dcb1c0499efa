"""Property tests for the whole abi_check comparison (not only the layout engine,
which tests/functional/test_rust_layout_vs_btf.py covers).

Random #[repr(C)] structs (primitives, arrays, nested structs, a generic Pair<T>,
packed and aligned variants) are rendered as C and as Rust, the C side is compiled
with ``clang -g -target bpf`` into a real object, and the mirror pairs go through
the same code the module runs: the controller half (tree-sitter layouts) and the
target half (libbpf BTF through cffi, field matching, reports).

1. Faithful mirrors always pass: every pair ``ok``, every row ``ok``.
2. Changing one Rust field to a type of another size is always caught, and the
   first divergence is exactly that field.
"""
from __future__ import annotations

import os
import subprocess
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.lqos.bpf.plugins.module_utils._abi import check as _abi
from ansible_collections.lqos.bpf.plugins.module_utils._abi import parity as _parity
from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import rust_side

PRIMS = [("u8", "unsigned char", 1), ("i8", "signed char", 1), ("u16", "unsigned short", 2),
         ("i16", "short", 2), ("u32", "unsigned int", 4), ("i32", "int", 4), ("u64", "unsigned long long", 8),
         ("i64", "long long", 8), ("f32", "float", 4), ("f64", "double", 8)]
PAIR_RUST = "#[repr(C)]\npub struct Pair<T> {\n    pub down: T,\n    pub up: T,\n}\n"
SETTINGS = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class Ty:
    def __init__(self, rust, c_base, dims=(), pair_of=None, aligned=False):
        self.rust, self.c_base, self.dims, self.pair_of, self.aligned = rust, c_base, tuple(dims), pair_of, aligned

    def c_decl(self, name):
        return "%s %s%s" % (self.c_base, name, "".join("[%d]" % d for d in self.dims))


def _pair(inner):
    tag = "pair_" + inner.c_base.replace("struct ", "").replace(" ", "_")
    return Ty("Pair<%s>" % inner.rust, "struct " + tag, (), inner, inner.aligned)


@st.composite
def field_type(draw, structs, packed):
    prims = [Ty(r, c) for r, c, _size in PRIMS]
    usable = [s for s in structs if not (packed and s.aligned)]
    base = draw(st.sampled_from(prims + usable))
    shape = draw(st.sampled_from(["plain", "plain", "array", "array2", "pair"]))
    if shape == "array":
        n = draw(st.integers(1, 5))
        return Ty("[%s; %d]" % (base.rust, n), base.c_base, (n,), aligned=base.aligned)
    if shape == "array2":
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        return Ty("[[%s; %d]; %d]" % (base.rust, m, n), base.c_base, (n, m), aligned=base.aligned)
    if shape == "pair":
        return _pair(draw(st.sampled_from(prims)))
    return base


@st.composite
def programs(draw):
    structs, specs = [], []
    for i in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(["plain", "plain", "plain", "packed", "align"]))
        align = draw(st.sampled_from([8, 16, 32])) if mode == "align" else None
        fields = draw(st.lists(field_type(structs, mode == "packed"), min_size=1, max_size=6))
        if mode == "packed":
            # A u16 at offset 1 shows the packing in BTF (libbpf's btf__align_of then says 1); a packed C struct
            # whose layout needs no packing reads as naturally aligned there, and the check flags a packed Rust
            # mirror of it on purpose (_parity.compare_pair).
            fields = [Ty("u8", "unsigned char"), Ty("u16", "unsigned short")] + fields
        specs.append((i, mode == "packed", align, fields))
        structs.append(Ty("S%d" % i, "struct c_s%d" % i, aligned=align is not None or any(f.aligned for f in fields)))
    return specs


def render(specs, override=None):
    """(rust, c, mirrors); ``override`` = (struct index, field index, rust type) changes one Rust field."""
    rust, c, tags = [PAIR_RUST], ["#pragma clang diagnostic ignored \"-Wunused-variable\""], []

    def need_pair(ty):
        if ty.pair_of is not None and ty.c_base[7:] not in tags:
            tags.append(ty.c_base[7:])
            c.append("%s { %s; %s; };" % (ty.c_base, ty.pair_of.c_decl("down"), ty.pair_of.c_decl("up")))

    mirrors = []
    for i, packed, align, fields in specs:
        for f in fields:
            need_pair(f)
        reprs = ["C"] + (["packed"] if packed else []) + (["align(%d)" % align] if align else [])
        body = ""
        for n, f in enumerate(fields):
            rtype = override[2] if override and override[:2] == (i, n) else f.rust
            body += "    pub f%d: %s,\n" % (n, rtype)
        rust.append("#[repr(%s)]\npub struct S%d {\n%s}\n" % (", ".join(reprs), i, body))
        decl = "struct c_s%d { %s }%s;" % (i, " ".join("%s;" % f.c_decl("f%d" % n) for n, f in enumerate(fields)),
                                           " __attribute__((aligned(%d)))" % align if align else "")
        if packed:
            decl = "#pragma pack(push, 1)\n%s\n#pragma pack(pop)" % decl
        c.append(decl)
        tags.append("c_s%d" % i)
        mirrors.append({"rust": "S%d" % i, "c": "c_s%d" % i})
    c.extend("struct %s g_%s;" % (tag, tag) for tag in tags)
    return "\n".join(rust), "\n".join(c) + "\n", mirrors


def check(specs, override=None):
    rust_src, c_src, mirrors = render(specs, override)
    with tempfile.TemporaryDirectory(prefix="lqos-abi-prop-") as tmp:
        os.makedirs(os.path.join(tmp, "src"))
        with open(os.path.join(tmp, "src", "lib.rs"), "w") as fh:
            fh.write(rust_src)
        with open(os.path.join(tmp, "layouts.c"), "w") as fh:
            fh.write(c_src)
        proc = subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-c", "layouts.c", "-o", "layouts.o"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr + c_src
        spec = {"name": "prop", "sources": {"workdir": "."}, "rust": {"roots": ["src"]}, "mirrors": mirrors,
                "constants": []}
        rust = rust_side(spec, tmp)
        c_side = _abi.btf_side(os.path.join(tmp, "layouts.o"), rust["pairs"])
    reports = []
    for entry in rust["pairs"]:
        lay, fields, err = c_side[entry["c"]]
        reports.append(_parity.compare_pair(entry, lay, fields, err, {m["c"]: m["rust"] for m in mirrors}))
    return reports, rust_src, c_src


@SETTINGS
@given(specs=programs())
def test_faithful_mirrors_always_pass(specs):
    reports, rust_src, c_src = check(specs)
    for r in reports:
        assert r["status"] == "ok", (r["problems"], rust_src, c_src)
        assert r["btf_size"] == r["rust_size"]
        assert all(row["status"] == "ok" for row in r["fields"]), (r["fields"], rust_src, c_src)


@SETTINGS
@given(specs=programs(), data=st.data())
def test_one_changed_rust_field_is_the_first_divergence(specs, data):
    index = len(specs) - 1
    fields = specs[index][3]
    n = data.draw(st.integers(0, len(fields) - 1), label="field")
    reports, _rust_src, _c_src = check(specs)
    size = next(row["c_size"] for row in reports[index]["fields"] if row["name"] == "f%d" % n)
    other = data.draw(st.sampled_from([r for r, _c, s in PRIMS if s != size] + ["[u8; %d]" % (size + 1)]),
                      label="new type")
    reports, rust_src, c_src = check(specs, (index, n, other))
    r = reports[index]
    assert r["status"] == "mismatch", (rust_src, c_src)
    assert r["first_divergence"]["name"] == "f%d" % n, (r["first_divergence"], rust_src, c_src)
    assert r["first_divergence"]["status"] == "size"
    assert r["problems"][0].startswith("S%d (Rust, src/lib.rs:" % index)
    assert all(p["status"] == "ok" for p in reports[:index])
