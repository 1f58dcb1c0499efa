"""Pipeline spec validation and the header-constant reader: plain data."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import (
    DEFAULT_CLANG_FLAGS, eval_int_expr, header_constants, validate_spec,
)

MINIMAL = {"name": "mini", "sources": {"workdir": "src/bpf", "kern": "k.c"}, "outputs": {}}


def test_minimal_spec_gets_lqos_sys_defaults():
    spec = validate_spec(MINIMAL)
    assert spec["flags"]["clang"] == DEFAULT_CLANG_FLAGS
    assert spec["flags"]["llc"] == ["-march=bpf", "-filetype=obj"]
    assert spec["outputs"] == {"ir": "k.ll", "object": "k.o", "skeleton": "k_skel.h",
                               "wrapper_object": "libwrapper.o", "archive": "libwrapper.a",
                               "bindings": "bindings.rs"}
    assert spec["sources"]["wrapper_c"] == "wrapper.c"
    assert spec["attach"] == {"xdp": None, "tc": [], "rodata": {}, "data": {}}


@pytest.mark.parametrize("patch,message", [
    ({"name": "a b"}, "pipeline spec: `name` must be a short identifier, got 'a b'. Fix: add e.g. `name: reference`"),
    ({"sources": None}, "pipeline spec 'mini': `sources` is missing. Fix: add the `sources:` mapping"),
    ({"sources": ["x"]}, "pipeline spec 'mini': `sources` must be a mapping, got list."),
    ({"sources": {"kern": "../../etc/k.c", "workdir": "/abs"}}, "`sources.workdir` must be relative, got '/abs'"),
    ({"outputs": {"object": "x/y.o"}}, "`outputs.object` must be a plain file name"),
    ({"outputs": {"object": "same", "ir": "same"}}, "pipeline spec 'mini': `outputs` name the same file twice."),
    ({"flags": {"clang": ["-O2", "-o"]}}, "pipeline spec 'mini': `flags.clang` contains -o."),
    ({"flags": {"llc": "-march=bpf"}}, "`flags.llc` must be a list of strings, got '-march=bpf'"),
    ({"pinned_maps": [{"name": "m", "key_size": 0, "value_size": 4}]},
     "`pinned_maps[0].key_size` must be an integer >= 1, got 0"),
    ({"attach": {"tc": [{"program": "p", "direction": "sideways"}]}},
     "`attach.tc[0].direction` must be egress or ingress, got 'sideways'"),
    ({"attach": {"rodata": {"num_cpus": "lots"}}},
     "`attach.rodata.num_cpus` must be an integer or one of possible_cpus, ifindex, got 'lots'"),
    ({"mirrors": [{"rust": "A"}]}, "`mirrors[0]` must have both `rust` and `c`"),
    ({"colour": 1}, "pipeline spec 'mini': key(s) `colour` are not known."),
])
def test_bad_specs_name_the_key_and_the_fix(patch, message):
    raw = dict(MINIMAL)
    raw.update(patch)
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    assert message in str(err.value)
    assert "Fix: " in str(err.value)


def test_not_a_mapping():
    with pytest.raises(LqosError) as err:
        validate_spec(["name"])
    assert str(err.value) == ("pipeline spec must be a mapping, got list. Fix: pass a built-in name "
                              "(reference, libreqos), a YAML file path, or a mapping.")


def test_header_constants_follow_earlier_defines():
    text = """
#define MAX_TRACKED_IPS 128000
#define MAX_CPUS 1024U   // per-CPU maps
#define HOT_CACHE_SIZE (1 << 15)
#define MAX_FLOWS (MAX_TRACKED_IPS * 2)
#define NAME "text"
#define FN(x) (x)
"""
    assert header_constants(text) == {"MAX_TRACKED_IPS": 128000, "MAX_CPUS": 1024, "HOT_CACHE_SIZE": 32768,
                                      "MAX_FLOWS": 256000}


@pytest.mark.parametrize("expr,value", [("0x10", 16), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("-1", -1),
                                        ("7 % 4", 3), ("1 << 4 | 1", 17), ("A * 2", 8), ("B", None),
                                        ("sizeof(int)", None), ("(1", None), ("1 2", None)])
def test_eval_int_expr(expr, value):
    assert eval_int_expr(expr, {"A": 4}) == value
