"""Writers at work during a live map upgrade, shared by test_upgrade_writers.py and benchmarks/bench_migrate.py.

A small object in two versions: ``flow_table`` (LRU hash, 16-byte key, value {seq, a, b} -> v2 adds ``extra``)
and ``pkt_count`` (array of one {packets} -> v2 adds ``bytes``; a counter map: its fields add up) counted by an
XDP program for every packet it sees. Three writers: a user-space writer holding an fd on the map it opened
once, one that opens the pin path for every write (as LibreQoS's daemon does), and the XDP program fed by ping.
Each user-space write puts a growing sequence number in the value's first 8 bytes and records when it returned.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
import time

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import batch as BB
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

WRITERS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct flow_key { __u64 id; __u64 zero; };
struct flow_value { __u64 seq; __u64 a; __u64 b;%s };
struct counts { __u64 packets;%s };
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, %d);
    __type(key, struct flow_key);
    __type(value, struct flow_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_table SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct counts);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} pkt_count SEC(".maps");
SEC("xdp")
int count(struct xdp_md *ctx)
{
    __u32 k = 0;
    struct counts *c = bpf_map_lookup_elem(&pkt_count, &k);
    if (c)
        __sync_fetch_and_add(&c->packets, 1);
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""
FD_KEYS = (1 << 40, 1 << 40 | 4096)       # key ids the fd writer cycles through
PATH_KEYS = (2 << 40, 2 << 40 | 4096)     # and the path writer


def source(version: int, max_entries: int) -> str:
    return WRITERS_C % (" __u64 extra;" if version == 2 else "", " __u64 bytes;" if version == 2 else "",
                        max_entries)


def spec(version: int) -> dict:
    vs = 32 if version == 2 else 24
    return {"name": "writers", "sources": {"kern": "w.c"}, "outputs": {"object": "w.o"}, "attach": {"xdp": "count"},
            "pinned_maps": [{"name": "flow_table", "key_size": 16, "value_size": vs},
                            {"name": "pkt_count", "key_size": 4, "value_size": vs - 16, "counter": True}]}


def key(i: int) -> bytes:
    return struct.pack("<QQ", i, 0)


def fill(path: str, n: int) -> None:
    """n entries {seq=i, a=i*3, b=i*5} in one batch."""
    keys = b"".join(key(i) for i in range(n))
    values = b"".join(struct.pack("<QQQ", i, i * 3, i * 5) for i in range(n))
    BB.fill(path, BB.Table(keys, values, 16, 24))


class Writer(threading.Thread):
    """Writes seq numbers into keys[lo, hi) in turn until stopped; ``by_path``: open the pin for every write."""

    def __init__(self, path: str, keys: tuple, by_path: bool):
        super().__init__(daemon=True)
        self.path, self.keys, self.by_path = path, keys, by_path
        self.stop = threading.Event()
        self.records = []          # (key id, seq, time the write returned)
        self.failed_opens = 0
        self.failed_writes = 0
        self.fd = None if by_path else L._obj_get(path)

    def run(self):
        ffi, lib = L._ffi_lib()
        seq, kid = 1 << 32, self.keys[0]
        sizes = {}
        while not self.stop.is_set():
            if self.by_path:
                fd = lib.bpf_obj_get(self.path.encode())
                if fd < 0:
                    self.failed_opens += 1
                    continue
            else:
                fd = self.fd
            try:
                if fd not in sizes or self.by_path:
                    sizes[fd] = M.map_info_by_fd(fd)["value_size"]
                value = struct.pack("<Q", seq) + bytes(sizes[fd] - 8)
                ret = lib.bpf_map_update_elem(fd, ffi.from_buffer(key(kid)), ffi.from_buffer(value), 0)
                if ret < 0:
                    self.failed_writes += 1
                else:
                    self.records.append((kid, seq, time.time()))
            finally:
                if self.by_path:
                    os.close(fd)
            seq += 1
            kid = kid + 1 if kid + 1 < self.keys[1] else self.keys[0]

    def finish(self):
        self.stop.set()
        self.join()
        if self.fd is not None:
            os.close(self.fd)

    def lost(self, values: dict, before: float | None = None, after: float | None = None) -> int:
        """Writes (returned before ``before`` and after ``after``, or all) that no value of ``values``
        {key: value bytes} reflects: the key holds an older seq."""
        have = {kid: struct.unpack_from("<Q", values[key(kid)])[0] if key(kid) in values else -1
                for kid in range(*self.keys)}
        return sum(1 for kid, seq, t in self.records if (before is None or t < before)
                   and (after is None or t >= after) and have[kid] < seq)

    def made(self, before: float | None = None, after: float | None = None) -> int:
        return sum(1 for _k, _s, t in self.records if (before is None or t < before) and (after is None or t >= after))


class Pinger(object):
    """ping -i 0.005 from the pair's second namespace to the first (the XDP program counts the requests)."""

    def __init__(self, pair):
        self.pair = pair
        self.proc = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, "ping", "-q", "-i", "0.005", pair.ip_a],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self):
        self.proc.terminate()
        self.proc.wait()
        time.sleep(0.05)


def rx_packets(ns: str, ifname: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", ifname], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def counted(path: str) -> int:
    return struct.unpack_from("<Q", M.map_lookup(path, b"\0\0\0\0"))[0]
