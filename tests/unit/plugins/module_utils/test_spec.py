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
    ({"name": "a b"}, "pipeline spec: `name` must match [a-z0-9_-]+ (it names the build folder), got 'a b'. "
                      "Fix: add e.g. `name: reference`"),
    ({"sources": None}, "pipeline spec 'mini': `sources` is missing. Fix: add the `sources:` mapping"),
    ({"sources": ["x"]}, "pipeline spec 'mini': `sources` must be a mapping, got a list ['x']."),
    ({"sources": {"kern": "../../etc/k.c", "workdir": "/abs"}}, "`sources.workdir` must be relative, got '/abs'"),
    ({"outputs": {"object": "x/y.o"}}, "`outputs.object` must be a plain file name"),
    ({"outputs": {"object": "same", "ir": "same"}}, "pipeline spec 'mini': `outputs` name the same file twice."),
    ({"flags": {"clang": ["-O2", "-o"]}}, "pipeline spec 'mini': `flags.clang` contains -o."),
    ({"flags": {"llc": "-march=bpf"}}, "`flags.llc` must be a list of strings, got '-march=bpf'"),
    ({"pinned_maps": [{"name": "m", "key_size": 0, "value_size": 4}]},
     "`pinned_maps[0].key_size` must be an integer from 1 to 4294967295 (0xffffffff), got 0."),
    ({"attach": {"tc": [{"program": "p", "direction": "sideways"}]}},
     "`attach.tc[0].direction` must be egress or ingress, got 'sideways'"),
    ({"attach": {"rodata": {"num_cpus": "lots"}}},
     "`attach.rodata.num_cpus` must be an integer or one of possible_cpus, ifindex, ifindex:NAME, be16:N, got 'lots'"),
    ({"mirrors": [{"rust": "A"}]}, "`mirrors[0]` must have both `rust` and `c`"),
    ({"colour": 1}, "pipeline spec 'mini': key(s) `colour` are not known."),
    ({"sources": {"kern": "k.c", "kernn": "k.c"}},
     "pipeline spec 'mini': `sources.kernn` is not a known key. Fix: remove it or fix the spelling; known keys "
     "under `sources`: workdir, kern, wrapper_c, wrapper_h, inputs"),
    ({"attach": {"tc": [{"program": "p", "handle": 2 ** 40}]}},
     "`attach.tc[0].handle` must be an integer from 1 to 4294967295 (0xffffffff), got 1099511627776."),
    ({"attach": {"tc": [{"program": "p", "priority": 0x10000}]}},
     "`attach.tc[0].priority` must be an integer from 1 to 65535 (0xffff), got 65536."),
    ({"attach": {"tc": [{"program": "p", "optional": "yes please"}]}},
     "`attach.tc[0].optional` must be true or false, got 'yes please'."),
    ({"expect": {"programs": {"xdp_shaper": ["xdp"]}}},
     "`expect.programs.xdp_shaper` must be a non-empty string, got ['xdp']."),
    ({"mirrors": [{"rust": ["A"], "c": "a"}]}, "`mirrors[0].rust` must be a Rust type name, got ['A']."),
    ({"topology": {"own_ifindex": "attach_ifindex"}}, "pipeline spec 'mini': `topology.direction` is missing. Fix: "
                                                      "name the load-time variable that holds the interface's direction"),
    ({"topology": {"direction": "dir", "vlan": "v"}}, "`topology.vlan` is not a known key."),
    ({"topology": {"direction": "dir", "internet_vlan": "a-b"}}, "`topology.internet_vlan` must be a C identifier, "
                                                                 "got 'a-b'."),
    ({"topology": {"direction": "dir", "bridge": {"program": "b", "map": "m", "target": "x..y"}}},
     "`topology.bridge.target` must be a field path of the map's value, got 'x..y'."),
    ({"topology": {"direction": "dir", "bridge": {"program": "b", "map": "m", "target": "t",
                                                  "vlan": {"map": "v", "key": "ifindex<<8|tag", "value": "to"}}}},
     "`topology.bridge.vlan.key` must name the key's fields {ifindex: FIELD, tag: FIELD} or be ifindex<<16|tag, "
     "got 'ifindex<<8|tag'."),
    ({"topology": {"direction": "dir", "bridge": {"program": "b", "map": "m", "target": "t",
                                                  "vlan": {"map": "v", "key": {"ifindex": "i", "vid": "t"},
                                                           "value": "to"}}}},
     "`topology.bridge.vlan.key.vid` is not a known key."),
    ({"topology": {"direction": "dir", "bridge": {"program": "b", "map": "m", "target": "t",
                                                  "vlan": {"map": "v", "key": {"ifindex": "i", "tag": "t"}}}}},
     "`topology.bridge.vlan.value` must be a field path of the map's value, got None."),
])
def test_bad_specs_name_the_key_and_the_fix(patch, message):
    raw = dict(MINIMAL)
    raw.update(patch)
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    assert message in str(err.value)
    assert "Fix: " in str(err.value)


def test_topology_names_the_object_s_variables():
    spec = validate_spec(dict(MINIMAL, topology={"direction": "dir", "stick_offset": "off",
                                                 "bridge": {"program": "b", "map": "m", "target": "t.x"}}))
    assert spec["topology"] == {"direction": "dir", "own_ifindex": None, "internet_ifindex": None, "isp_ifindex": None,
                                "internet_vlan": None, "isp_vlan": None, "stick_offset": "off",
                                "bridge": {"program": "b", "map": "m", "target": "t.x", "vlan": None, "stick_flag": None}}
    assert validate_spec(MINIMAL)["topology"] is None
    for key in ({"ifindex": "ifindex", "tag": "vlan_id"}, "ifindex<<16|tag"):
        vlan = {"map": "vm", "key": key, "value": "to.vid"}
        spec = validate_spec(dict(MINIMAL, topology={"direction": "dir", "bridge": {"program": "b", "map": "m",
                                                                                    "target": "t", "vlan": vlan}}))
        assert spec["topology"]["bridge"]["vlan"] == vlan


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


@pytest.mark.parametrize("name", ["..", ".", "a.b", "Ref", "a/b", "", "x" * 0 + "-/"])
def test_name_is_a_folder_name_as_documented(name):
    raw = dict(MINIMAL, name=name)
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    assert str(err.value) == ("pipeline spec: `name` must match [a-z0-9_-]+ (it names the build folder), got %r. "
                              "Fix: add e.g. `name: reference` at the top of the spec." % name)


@pytest.mark.parametrize("patch,key", [
    ({"cpu_sized_maps": 5}, "cpu_sized_maps"),
    ({"pinned_maps": 5}, "pinned_maps"),
    ({"mirrors": 5}, "mirrors"),
    ({"constants": "MAX_CPUS"}, "constants"),
    ({"attach": {"tc": 5}}, "attach.tc"),
])
def test_a_scalar_where_a_list_belongs_names_the_key(patch, key):
    raw = dict(MINIMAL)
    raw.update(patch)
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    value = patch.get(key, (patch.get("attach") or {}).get("tc"))
    assert str(err.value) == ("pipeline spec 'mini': `%s` must be a list, got %s %r. Fix: write it as a YAML list "
                              "(`- item` lines or [a, b]), or leave it out"
                              % (key, "an integer" if isinstance(value, int) else "a string", value))


def test_a_scalar_list_item_names_its_index():
    raw = dict(MINIMAL, pinned_maps=[{"name": "m", "key_size": 4, "value_size": 4}, 7])
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    assert str(err.value) == ("pipeline spec 'mini': `pinned_maps[1]` must be a mapping, got an integer 7. "
                              "Fix: give its keys: name, key_size, value_size, counter")


def test_a_counter_flag_must_be_true_or_false():
    raw = dict(MINIMAL, pinned_maps=[{"name": "m", "key_size": 4, "value_size": 4, "counter": "yes"}])
    with pytest.raises(LqosError) as err:
        validate_spec(raw)
    assert "`pinned_maps[0].counter` must be true or false, got" in str(err.value)
    ok = validate_spec(dict(MINIMAL, pinned_maps=[{"name": "m", "key_size": 4, "value_size": 4, "counter": True}]))
    assert ok["pinned_maps"][0]["counter"] is True


@pytest.mark.parametrize("builtin", ["reference", "libreqos"])
def test_a_validated_spec_validates_to_itself(builtin):
    """The action plugin validates on the controller, the module again on the target."""
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option
    spec = resolve_spec_option(builtin)
    assert validate_spec(spec) == spec
