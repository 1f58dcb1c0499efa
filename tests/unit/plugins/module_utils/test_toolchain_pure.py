"""Version comparison and skeleton parsing: plain data."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._build.pipeline import skeleton_names
from ansible_collections.lqos.bpf.plugins.module_utils._build.toolchain import check_minimums, meets, summary


@pytest.mark.parametrize("version,minimum,ok", [
    ("14.0.6", "11.0", True), ("10.0.1", "11.0", False), ("7.1.0", "5.6", True), ("0.60.1", "0.59", True),
    ("0.58.0", "0.59", False), ("6.1.0-27-amd64", "5.10", True), (None, "1", False), ("1.0", None, True),
])
def test_meets(version, minimum, ok):
    assert meets(version, minimum) is ok


def test_summary_lists_every_problem_with_its_fix():
    text = summary([{"name": "clang", "message": "clang not found in PATH", "fix": "apt-get install clang"},
                    {"name": "bpffs", "message": "bpffs not mounted at /x", "fix": "mount -t bpf bpf /x"}])
    assert text == ("preflight found 2 problem(s) on this host:\n"
                    "- clang: clang not found in PATH. Fix: apt-get install clang\n"
                    "- bpffs: bpffs not mounted at /x. Fix: mount -t bpf bpf /x")


SKELETON = """
struct shaper_kern {
    struct bpf_object_skeleton *skeleton;
    struct bpf_object *obj;
    struct {
        struct bpf_map *cpu_map;
        struct bpf_map *flow_table;
        struct bpf_map *rodata;
        struct bpf_map *data;
    } maps;
    struct {
        struct bpf_program *xdp_shaper;
        struct bpf_program *tc_classify;
    } progs;
    struct {
        struct bpf_link *xdp_shaper;
        struct bpf_link *tc_classify;
    } links;
};
"""


def test_skeleton_names():
    assert skeleton_names(SKELETON) == {"object": "shaper_kern", "programs": ["xdp_shaper", "tc_classify"],
                                        "maps": ["cpu_map", "flow_table"], "internal_maps": ["rodata", "data"]}


@pytest.mark.parametrize("value", ["abc", "", "v14", "14.x", "1.2.3.4.5", "14 "[:-1] + "-rc1"])
def test_a_minimum_that_does_not_parse_is_refused(value):
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    with pytest.raises(LqosError) as err:
        check_minimums({"kernel": value}, {})
    assert err.value.msg == ("minimum version(s) that do not parse as a version: kernel: %r (the spec's "
                             "toolchain.minimum_versions)." % value)


def test_minimums_that_parse_pass():
    check_minimums({"clang": "14", "kernel": "5.10", "bindgen": "0.59.2"}, {"clang": "14"})
