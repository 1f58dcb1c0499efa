"""lqos.bpf.map_entries writes all entries or none (issue 25, item 4): capacity is checked before anything is
written, and a write that still fails half-way puts back what this run wrote. Real maps created by libbpf from
a small BTF object, pinned in a private bpffs."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import compile_bpf, run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O

pytestmark = pytest.mark.usefixtures("tools")

MAPS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct slot { __u32 ifindex; __u32 vlan; };
struct prefix { __u32 prefixlen; __u32 addr; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, struct slot);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} small_hash SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8);
    __type(key, __u32);
    __type(value, struct slot);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} small_array SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 16);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct prefix);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} prefixes SEC(".maps");

SEC("xdp")
int touch(struct xdp_md *ctx)
{
    __u32 k = 0;
    struct prefix p = {32, 0};

    return bpf_map_lookup_elem(&small_hash, &k) || bpf_map_lookup_elem(&small_array, &k) ||
           bpf_map_lookup_elem(&prefixes, &p) ? XDP_PASS : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def maps_object(tmp_path_factory):
    return compile_bpf(tmp_path_factory.mktemp("map_entries_truthful"), "small_maps", MAPS_C)


@pytest.fixture
def pinned(maps_object, bpffs):
    O.load_object(maps_object, pin_root=bpffs).close()
    return bpffs


def write(bpffs, name, entries, **kw):
    return run_module("map_entries", dict(map=name, pin_root=bpffs, entries=entries, approve=True, **kw))


def test_more_entries_than_the_map_holds_are_refused_before_any_write(pinned):
    path = os.path.join(pinned, "small_hash")
    M.map_update(path, (1000).to_bytes(4, "little"), b"\1\0\0\0\2\0\0\0")
    entries = [{"key": i, "value": {"ifindex": i, "vlan": 1}} for i in range(100)]
    res = write(pinned, "small_hash", entries)
    assert res["failed"] is True and res["changed"] is False, res
    assert res["msg"] == ("map %s has room for 64 entries and holds 1; the 100 new keys would make 101, so nothing was "
                          "written. Fix: write at most 63 new entries, delete entries first, or grow the map's "
                          "max_entries." % path)
    assert M.map_entries(path) == [((1000).to_bytes(4, "little"), b"\1\0\0\0\2\0\0\0")]
    # 63 new keys fit.
    done = write(pinned, "small_hash", entries[:63])
    assert done["changed"] is True and not done.get("failed"), done
    assert len(M.map_entries(path)) == 64


def test_an_array_index_past_its_slots_is_refused_before_any_write(pinned):
    path = os.path.join(pinned, "small_array")
    before = M.map_entries(path)
    res = write(pinned, "small_array", [{"key": 2, "value": {"ifindex": 7}}, {"key": 8, "value": {"ifindex": 9}}])
    assert res["failed"] is True and res["changed"] is False, res
    assert res["msg"].startswith("map %s is an array of 8 slots; 1 of the entries have an index at or past 8 (first: "
                                 "8); nothing was written." % path), res["msg"]
    assert M.map_entries(path) == before


def test_a_write_that_fails_half_way_puts_back_what_was_written(pinned):
    """The third entry is a prefix longer than the trie's 32 bits: the kernel refuses it (EINVAL) after two writes,
    and those two are put back, so the map holds what it held before (the old code left them)."""
    path = os.path.join(pinned, "prefixes")
    key = (24).to_bytes(4, "little") + bytes([10, 0, 0, 0])
    M.map_update(path, key, (5).to_bytes(4, "little"))
    entries = [{"key": {"prefixlen": 24, "addr": 10}, "value": 6},          # overwrites the one there
               {"key": {"prefixlen": 16, "addr": 0x0b0b}, "value": 7},      # new
               {"key": {"prefixlen": 40, "addr": 12}, "value": 8}]          # refused by the kernel
    res = write(pinned, "prefixes", entries)
    assert res["failed"] is True and res["changed"] is False, res
    assert "Invalid argument" in res["msg"], res["msg"]
    assert res["msg"].endswith(" Rolled back what this run had changed: the 2 entries written before it, put back "
                               "as they were. Fix: check that the map has room (max_entries 16) and is not read-only, "
                               "and that the entry is valid for a lpm_trie map."), res["msg"]
    assert res["rolled_back"] == ["the 2 entries written before it, put back as they were"]
    assert M.map_entries(path) == [(key, (5).to_bytes(4, "little"))]
