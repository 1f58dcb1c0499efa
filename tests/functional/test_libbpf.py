"""Functional tests of plugins/module_utils/_kernel/libbpf.py against the real kernel and libbpf 1.1.

No mocks: BPF programs are compiled with clang, maps and pins live on the
per-test private bpffs (`bpffs` fixture), XDP/TC attaches go to veths inside
network namespaces (`netns_pair`), done from forked children so this process
never leaves its own network namespace.
"""
from __future__ import annotations

import errno
import gc
import json
import multiprocessing
import os
import re
import struct
import time
import traceback

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import declarations as D
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import LibbpfError

from lqos_testlib import sh

# --------------------------------------------------------------------------
# BPF sources
# --------------------------------------------------------------------------

MAIN_C = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

struct inner { __u8 a; __u64 b; };
typedef struct inner inner_t;

struct ip_hash_key { __u32 prefixlen; struct in6_addr address; };
struct ip_hash_info { __u32 cpu; __u32 tc_handle; __u64 circuit_id; __u64 device_id; };

typedef struct {
    __u32 x;
    __u8 tag[5];
    inner_t in[2];
    const volatile __u16 grid[2][3];
    unsigned int low:3, high:5;
    struct ip_hash_key key;
} flow_t;

struct host_counter { __u64 down_bytes; __u64 up_bytes; __u32 tc_handle; __u8 pad[4]; };

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, struct ip_hash_key);
    __type(value, struct ip_hash_info);
    __uint(max_entries, 64);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} map_ip SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __type(key, struct ip_hash_key);
    __type(value, struct host_counter);
    __uint(max_entries, 32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} map_traffic SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_CPUMAP);
    __type(key, __u32);
    __type(value, struct bpf_cpumap_val);
    __uint(max_entries, 1024);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} cpu_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, flow_t);
    __uint(max_entries, 8);
} flows SEC(".maps");

const volatile __u32 num_cpus = 1;
const volatile __u64 magic = 0x0101010101010101ULL;
const volatile __s16 shift = -1;
__u32 direction = 5;
__u32 hits;

SEC("xdp")
int xdp_main(struct xdp_md *ctx)
{
    struct ip_hash_key k = {};
    __u32 cpu = 0;
    struct ip_hash_info *info = bpf_map_lookup_elem(&map_ip, &k);
    struct host_counter *hc = bpf_map_lookup_elem(&map_traffic, &k);
    flow_t *f = bpf_map_lookup_elem(&flows, &cpu);
    if (info && hc && f && magic == 7 && shift == 3)
        return bpf_redirect_map(&cpu_map, num_cpus + direction, 0);
    __sync_fetch_and_add(&hits, 1);
    return XDP_PASS;
}

SEC("xdp")
int xdp_alt(struct xdp_md *ctx)
{
    __sync_fetch_and_add(&hits, 2);
    return XDP_PASS;
}

SEC("tc")
int tc_main(struct __sk_buff *skb)
{
    __sync_fetch_and_add(&hits, 4);
    return TC_ACT_OK;
}

SEC("tc")
int tc_alt(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
"""

BAD_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int good_prog(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp")
int bad_prog(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    return *(__u32 *)data;          /* no bounds check: the verifier refuses */
}

char LICENSE[] SEC("license") = "GPL";
"""

POSSIBLE_CPUS = L.possible_cpus()


@pytest.fixture(scope="session")
def objs(tmp_path_factory):
    """Compiled test objects: {"main": path, "bad": path}."""
    out = tmp_path_factory.mktemp("bpfobj")
    result = {}
    for name, src in (("main", MAIN_C), ("bad", BAD_C)):
        c = out / ("%s.c" % name)
        c.write_text(src)
        o = out / ("%s.o" % name)
        sh("clang", "-g", "-O2", "-target", "bpf", "-Wall", "-c", str(c), "-o", str(o))
        result[name] = str(o)
    return result


def _in_child(fn, *args):
    """Run fn(*args) in a forked child (which may setns); return its result or re-raise its LibbpfError."""
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def runner():
        try:
            q.put(("ok", fn(*args)))
        except LibbpfError as exc:
            q.put(("libbpf", exc.msg, exc.errno))
        except BaseException:
            q.put(("exc", traceback.format_exc()))

    p = ctx.Process(target=runner)
    p.start()
    res = q.get(timeout=60)
    p.join(30)
    if res[0] == "ok":
        return res[1]
    if res[0] == "libbpf":
        raise LibbpfError(res[1], res[2])
    raise AssertionError("child failed:\n" + res[1])


# --------------------------------------------------------------------------
# Library, declarations
# --------------------------------------------------------------------------

def test_version_and_cpus():
    assert re.match(r"^1\.\d+$", L.libbpf_version())
    with open("/sys/devices/system/cpu/possible") as fh:
        spec = fh.read().strip()
    n = 0
    for part in spec.split(","):
        lo, dummy, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    assert L.possible_cpus() == n


STRUCTS = ["bpf_object_open_opts", "bpf_map_create_opts", "bpf_map_info", "bpf_prog_info",
           "bpf_xdp_attach_opts", "bpf_xdp_query_opts", "bpf_tc_hook", "bpf_tc_opts",
           "btf_type", "btf_array", "btf_member", "btf_param", "btf_var_secinfo"]


def test_cffi_struct_layouts_match_c_headers(tmp_path):
    """Every struct declared to cffi has the size and field offsets the C compiler gives it."""
    ffi = L._ffi_lib()[0]
    lines, expect = [], {}
    for s in STRUCTS:
        expect["%s sizeof" % s] = ffi.sizeof("struct %s" % s)
        lines.append('printf("%s sizeof %%zu\\n", sizeof(struct %s));' % (s, s))
        for name, field in ffi.typeof("struct %s" % s).fields:
            if field.bitsize >= 0:
                continue
            expect["%s %s" % (s, name)] = field.offset
            lines.append('printf("%s %s %%zu\\n", offsetof(struct %s, %s));' % (s, name, s, name))
    src = tmp_path / "layout.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <stdbool.h>\n#include <linux/bpf.h>\n"
                   "#include <linux/btf.h>\n#include <bpf/bpf.h>\n#include <bpf/libbpf.h>\n#include <bpf/btf.h>\n"
                   "int main(void) {\n%s\nreturn 0; }\n" % "\n".join(lines))
    exe = tmp_path / "layout"
    sh("clang", "-Wall", "-o", str(exe), str(src))
    got = {}
    for line in sh(str(exe)).stdout.splitlines():
        key, dummy, val = line.rpartition(" ")
        got[key] = int(val)
    assert got == expect
    # the opts structs end where libbpf expects (size_t :0 tails)
    assert expect["bpf_xdp_query_opts sizeof"] == 32
    assert expect["bpf_tc_opts sizeof"] == 32
    assert expect["bpf_object_open_opts sizeof"] == 80
    assert expect["bpf_map_info sizeof"] == 88
    assert expect["bpf_prog_info sizeof"] == 232


# --------------------------------------------------------------------------
# BTF
# --------------------------------------------------------------------------

def _bpftool_btf(path):
    return json.loads(sh("bpftool", "btf", "dump", "file", path, "format", "raw", "-j").stdout)["types"]


def test_btf_layout_matches_bpftool(objs):
    raw = _bpftool_btf(objs["main"])
    by_id = {t["id"]: t for t in raw}
    with B.Btf.from_file(objs["main"]) as btf:
        for name in ("ip_hash_key", "ip_hash_info", "flow_t", "host_counter", "inner_t", "struct inner"):
            lay = btf.layout(name)
            tid = lay["type_id"]
            ref = by_id[tid]
            assert ref["kind"] == "STRUCT"
            assert lay["size"] == ref["size"]
            assert [m["name"] for m in lay["members"]] == [m["name"] for m in ref["members"]]
            for m, r in zip(lay["members"], ref["members"]):
                assert m["bit_offset"] == r["bits_offset"], (name, m)
                assert m["offset"] == r["bits_offset"] // 8
                assert m["bitfield_size"] == r.get("bitfield_size", 0)

        key = btf.layout("ip_hash_key")
        assert key["c_type"] == "struct ip_hash_key"
        assert (key["size"], key["align"]) == (20, 4)
        assert [(m["name"], m["offset"], m["size"], m["type"], m["kind"]) for m in key["members"]] == [
            ("prefixlen", 0, 4, "__u32", "int"), ("address", 4, 16, "struct in6_addr", "struct")]

        assert btf.layout("ip_hash_info")["size"] == 24
        assert [(m["name"], m["offset"]) for m in btf.layout("ip_hash_info")["members"]] == [
            ("cpu", 0), ("tc_handle", 4), ("circuit_id", 8), ("device_id", 16)]

        flow = btf.layout("flow_t")            # typedef of an anonymous struct
        assert flow["c_type"] == "struct {...}"
        assert (flow["size"], flow["align"]) == (88, 8)
        members = {m["name"]: m for m in flow["members"]}
        assert (members["tag"]["type"], members["tag"]["size"], members["tag"]["offset"]) == ("__u8[5]", 5, 4)
        assert members["tag"]["nelems"] == [5] and members["tag"]["elem_type"] == "__u8"
        assert (members["in"]["type"], members["in"]["size"], members["in"]["offset"]) == ("inner_t[2]", 32, 16)
        assert members["in"]["kind"] == "array" and members["in"]["align"] == 8
        assert members["grid"]["type"] == "const volatile __u16[2][3]"
        assert (members["grid"]["size"], members["grid"]["offset"], members["grid"]["nelems"]) == (12, 48, [2, 3])
        assert members["grid"]["elem_type"] == "const volatile __u16"
        assert (members["low"]["bitfield_size"], members["low"]["bit_offset"]) == (3, 480)
        assert (members["high"]["bitfield_size"], members["high"]["bit_offset"]) == (5, 483)
        assert (members["key"]["type"], members["key"]["offset"], members["key"]["size"]) == \
            ("struct ip_hash_key", 64, 20)

        inner = btf.layout("inner_t")
        assert inner["name"] == "inner_t" and inner["c_type"] == "struct inner"
        assert [(m["name"], m["offset"], m["size"]) for m in inner["members"]] == [("a", 0, 1), ("b", 8, 8)]
        assert btf.find("inner_t") == btf.find("inner") == btf.find("struct inner")


def test_btf_errors(objs):
    with B.Btf.from_file(objs["main"]) as btf:
        with pytest.raises(LibbpfError) as ei:
            btf.find("no_such_struct")
        assert "type no_such_struct not found in BTF of %s" % objs["main"] in ei.value.msg
        assert ei.value.errno == errno.ENOENT
        with pytest.raises(LibbpfError) as ei:
            btf.layout("__u32")
        assert "__u32" in ei.value.msg and "typedef of unsigned int, not of a struct or union" in ei.value.msg
        with pytest.raises(LibbpfError) as ei:
            btf.datasec_vars(".nope")
        assert "section .nope not found" in ei.value.msg and ".rodata" in ei.value.msg
    with pytest.raises(LibbpfError) as ei:
        B.Btf.from_file("/nonexistent/x.o")
    assert ei.value.msg.startswith("BTF source /nonexistent/x.o does not exist")
    btf = B.Btf.from_file(objs["main"])
    btf.close()
    with pytest.raises(LibbpfError) as ei:
        btf.layout("ip_hash_key")
    assert "closed" in ei.value.msg


def test_btf_raw_file(objs, tmp_path):
    """A raw BTF blob (no ELF) goes through btf__parse."""
    raw = tmp_path / "x.btf"
    sh("llvm-objcopy", "--dump-section", ".BTF=%s" % raw, objs["main"])
    with B.Btf.from_file(str(raw)) as btf:
        assert btf.layout("ip_hash_key")["size"] == 20


def _elf_symbols(path):
    """{symbol: (section name, value, size)} from readelf."""
    secs = {}
    for line in sh("readelf", "-S", "-W", path).stdout.splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)", line)
        if m:
            secs[m.group(1)] = m.group(2)
    out = {}
    for line in sh("readelf", "-s", "-W", path).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0].endswith(":") and parts[6].isdigit():
            out[parts[7]] = (secs.get(parts[6]), int(parts[1], 16), int(parts[2]))
    return out


def test_btf_datasec_vars_match_elf_symbols(objs):
    syms = _elf_symbols(objs["main"])
    with B.Btf.from_file(objs["main"]) as btf:
        ro = btf.datasec_vars(".rodata")
        assert set(ro) == {"num_cpus", "magic", "shift"}
        for var, (off, size) in ro.items():
            assert syms[var] == (".rodata", off, size)
        assert btf.datasec_vars(".data") == {"direction": (syms["direction"][1], 4)}
        assert btf.datasec_vars(".bss") == {"hits": (0, 4)}
        assert btf.var_info("magic")["type"] == "const volatile __u64"
        assert btf.type_name(btf.find("ip_hash_key")) == "struct ip_hash_key"


# --------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------

def test_object_info(objs, bpffs):
    info = O.object_info(objs["main"], pin_root=bpffs)
    progs = {p["name"]: p for p in info["programs"]}
    assert progs["xdp_main"]["section"] == "xdp" and progs["xdp_main"]["type_name"] == "xdp"
    assert progs["xdp_main"]["type"] == 6
    assert progs["tc_main"]["section"] == "tc" and progs["tc_main"]["type_name"] == "sched_cls"
    assert set(progs) == {"xdp_main", "xdp_alt", "tc_main", "tc_alt"}
    maps = {m["name"]: m for m in info["maps"]}
    assert set(maps) == {"map_ip", "map_traffic", "cpu_map", "flows"}
    assert maps["map_ip"] == {"name": "map_ip", "type": 11, "type_name": "lpm_trie", "key_size": 20,
                              "value_size": 24, "max_entries": 64, "flags": 1, "map_extra": 0, "pinning": True,
                              "pin_path": os.path.join(bpffs, "map_ip")}
    assert (maps["map_traffic"]["type_name"], maps["map_traffic"]["value_size"]) == ("percpu_hash", 24)
    assert (maps["cpu_map"]["type_name"], maps["cpu_map"]["max_entries"]) == ("cpumap", 1024)
    assert maps["flows"]["pinning"] is False and maps["flows"]["pin_path"] is None
    internal = {m["section"]: m for m in info["internal_maps"]}
    assert set(internal) == {".rodata", ".data", ".bss"}
    assert internal[".rodata"]["name"] == "main.rodata"
    assert internal[".rodata"]["value_size"] == 18
    # opening did not load or pin anything
    assert sorted(os.listdir(bpffs)) == ["maps.debug", "progs.debug"]


def test_object_info_errors(tmp_path):
    bogus = tmp_path / "bogus.o"
    bogus.write_bytes(b"not an elf at all")
    with pytest.raises(LibbpfError) as ei:
        O.object_info(str(bogus))
    assert "opening BPF object %s failed" % bogus in ei.value.msg
    assert ei.value.errno is not None
    with pytest.raises(LibbpfError) as ei:
        O.object_info(str(tmp_path / "missing.o"))
    assert "does not exist: build it first" in ei.value.msg and ei.value.errno == errno.ENOENT


# --------------------------------------------------------------------------
# Pins, map info
# --------------------------------------------------------------------------

def test_pinned_kind(objs, bpffs):
    assert L.pinned_kind(os.path.join(bpffs, "maps.debug")) is None
    assert L.pinned_kind(os.path.join(bpffs, "progs.debug")) is None
    assert L.pinned_kind(os.path.join(bpffs, "missing")) is None
    os.mkdir(os.path.join(bpffs, "dir"))
    assert L.pinned_kind(os.path.join(bpffs, "dir")) is None
    fd = M.map_create("hash", 4, 4, 4, name="k")
    try:
        L.obj_pin(fd, os.path.join(bpffs, "m"))
    finally:
        L.close(fd)
    assert L.pinned_kind(os.path.join(bpffs, "m")) == "map"
    with O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": POSSIBLE_CPUS}) as lo:
        lo.pin_program("xdp_main", os.path.join(bpffs, "p"))
        prog_id = lo.prog_info("xdp_main")["id"]
    assert L.pinned_kind(os.path.join(bpffs, "p")) == "prog"
    # the pinned program outlives the object
    assert M.prog_info_by_path(os.path.join(bpffs, "p"))["id"] == prog_id
    with pytest.raises(LibbpfError) as ei:
        M.map_info_by_path(os.path.join(bpffs, "p"))
    assert ei.value.msg == "%s is a pinned prog, not a map: point to a map pin" % os.path.join(bpffs, "p")
    with pytest.raises(LibbpfError) as ei:
        M.map_info_by_path(os.path.join(bpffs, "maps.debug"))
    assert "does not exist or is not a pinned BPF object" in ei.value.msg and ei.value.errno == errno.ENOENT


def _pin_new(bpffs, pin, *args, **kw):
    fd = M.map_create(*args, **kw)
    try:
        L.obj_pin(fd, os.path.join(bpffs, pin))
    finally:
        L.close(fd)
    return os.path.join(bpffs, pin)


def test_map_info_by_path_exact(bpffs):
    specs = {
        "h": ("hash", 4, 8, 16, 0),
        "lpm": ("lpm_trie", 20, 24, 64, 1),
        "pc": ("percpu_hash", 20, 128, 32, 0),
        "arr": ("array", 4, 40, 10, 0),
    }
    for name, (t, k, v, n, flags) in specs.items():
        path = _pin_new(bpffs, name, t, k, v, n, name="t_" + name)
        info = M.map_info_by_path(path)
        assert (info["type_name"], info["key_size"], info["value_size"], info["max_entries"], info["flags"]) == \
            (t, k, v, n, flags)
        assert info["type"] == D.MAP_TYPES[t]
        assert info["name"] == "t_" + name
        assert info["btf_id"] == 0 and info["key_type_name"] is None and info["value_type_name"] is None
        bt = json.loads(sh("bpftool", "map", "show", "pinned", path, "-j").stdout)
        assert bt["id"] == info["id"] and bt["type"] == t and bt["bytes_key"] == k and bt["bytes_value"] == v


def test_map_info_with_btf_type_names(objs, bpffs):
    with O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": POSSIBLE_CPUS}):
        pass
    info = M.map_info_by_path(os.path.join(bpffs, "map_ip"))
    assert info["btf_id"] > 0
    assert info["key_type_name"] == "struct ip_hash_key"
    assert info["value_type_name"] == "struct ip_hash_info"
    cpu = M.map_info_by_path(os.path.join(bpffs, "cpu_map"))
    # libbpf creates cpumap/devmap/... maps without key/value BTF ids
    assert (cpu["type_name"], cpu["max_entries"], cpu["btf_key_type_id"], cpu["key_type_name"]) == \
        ("cpumap", POSSIBLE_CPUS, 0, None)
    traffic = M.map_info_by_path(os.path.join(bpffs, "map_traffic"))
    assert (traffic["key_type_name"], traffic["value_type_name"]) == ("struct ip_hash_key", "struct host_counter")


def test_thousand_pins(bpffs, capsys):
    for i in range(1000):
        _pin_new(bpffs, "m%04d" % i, "array", 4, 8, 1, name="m%04d" % i)
    paths = [os.path.join(bpffs, "m%04d" % i) for i in range(1000)]
    M.map_info_by_path(paths[0])  # warm up
    t0 = time.perf_counter()
    infos = [M.map_info_by_path(p) for p in paths]
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    kinds = [L.pinned_kind(p) for p in paths]
    dk = time.perf_counter() - t0
    assert len(infos) == 1000 and len({i["id"] for i in infos}) == 1000
    assert all(i["name"] == os.path.basename(p) for i, p in zip(infos, paths))
    assert kinds == ["map"] * 1000
    with capsys.disabled():
        print("\n[perf] map_info_by_path x1000: %.1f ms; pinned_kind x1000: %.1f ms" % (dt * 1e3, dk * 1e3))


# --------------------------------------------------------------------------
# Map data
# --------------------------------------------------------------------------

def test_map_entries_round_trip(bpffs):
    path = _pin_new(bpffs, "h", "hash", 4, 12, 16)
    want = {struct.pack("<I", i): bytes(range(i, i + 12)) for i in range(5)}
    for k, v in want.items():
        M.map_update(path, k, v)
    assert dict(M.map_entries(path)) == want
    assert M.map_lookup(path, struct.pack("<I", 3)) == want[struct.pack("<I", 3)]
    assert M.map_lookup(path, struct.pack("<I", 99)) is None
    assert M.map_delete(path, struct.pack("<I", 3)) is True
    assert M.map_delete(path, struct.pack("<I", 3)) is False
    assert len(M.map_entries(path)) == 4
    # same through an fd the caller owns (must stay open)
    fd = L._obj_get(path)
    try:
        M.map_update(fd, struct.pack("<I", 42), b"\xff" * 12)
        assert dict(M.map_entries(fd))[struct.pack("<I", 42)] == b"\xff" * 12
        assert L.fd_kind(fd) == "map"
    finally:
        L.close(fd)
    with pytest.raises(LibbpfError) as ei:
        M.map_update(path, b"\0" * 3, b"\0" * 12)
    assert ei.value.msg == "key for map %s must be exactly key_size=4 bytes, not 3" % path
    with pytest.raises(LibbpfError) as ei:
        M.map_update(path, b"\0" * 4, b"\0" * 11)
    assert ei.value.msg == "value for map %s must be exactly value_size=12 bytes, not 11" % path


def test_map_entries_percpu_byte_exact(bpffs):
    ncpu = POSSIBLE_CPUS
    stride = 16  # round_up(12, 8)
    path = _pin_new(bpffs, "pc", "percpu_hash", 4, 12, 8)
    blob = b"".join(bytes([0x10 * (c + 1) + j for j in range(12)]) + b"\0" * 4 for c in range(ncpu))
    assert len(blob) == stride * ncpu
    M.map_update(path, b"\1\0\0\0", blob)
    assert M.map_entries(path) == [(b"\1\0\0\0", blob)]
    # one copy is replicated to every CPU
    M.map_update(path, b"\2\0\0\0", b"A" * 12)
    assert dict(M.map_entries(path))[b"\2\0\0\0"] == (b"A" * 12 + b"\0" * 4) * ncpu
    with pytest.raises(LibbpfError) as ei:
        M.map_update(path, b"\3\0\0\0", b"x" * 13)
    assert "must be 12 bytes (value_size 12, one copy) or %d bytes" % (stride * ncpu) in ei.value.msg
    # per-CPU arrays: every index exists
    arr = _pin_new(bpffs, "pa", "percpu_array", 4, 8, 3)
    M.map_update(arr, b"\1\0\0\0", b"".join(struct.pack("<Q", 1000 + c) for c in range(ncpu)))
    ents = M.map_entries(arr)
    assert [ent[0] for ent in ents] == [struct.pack("<I", i) for i in range(3)]
    assert ents[1][1] == b"".join(struct.pack("<Q", 1000 + c) for c in range(ncpu))
    assert ents[0][1] == b"\0" * 8 * ncpu


def test_map_entries_special_types(bpffs):
    ncpu = POSSIBLE_CPUS
    # cpumap: iterable, empty slots are skipped; entries read back as struct bpf_cpumap_val
    cpu = _pin_new(bpffs, "cpu", "cpumap", 4, 8, ncpu)
    assert M.map_entries(cpu) == []
    M.map_update(cpu, struct.pack("<I", ncpu - 1), struct.pack("<Ii", 192, 0))
    assert M.map_entries(cpu) == [(struct.pack("<I", ncpu - 1), struct.pack("<II", 192, 0))]
    # devmap: iterable, empty
    dev = _pin_new(bpffs, "dev", "devmap", 4, 4, 4)
    assert M.map_entries(dev) == []
    # queue: no keys to walk
    q = _pin_new(bpffs, "q", "queue", 0, 4, 4)
    with pytest.raises(LibbpfError) as ei:
        M.map_entries(q)
    assert ei.value.msg.startswith("map %s is a queue map, which has no keys to walk" % q)
    assert ei.value.errno == errno.EOPNOTSUPP
    # cpumap refuses more entries than this kernel allows
    with pytest.raises(LibbpfError) as ei:
        M.map_create("cpumap", 4, 4, 1 << 20, name="big")
    assert ei.value.errno == errno.E2BIG and "cpumap" in ei.value.msg


def test_map_create_and_pin_errors(bpffs, tmp_path):
    with pytest.raises(LibbpfError) as ei:
        M.map_create("nosuch", 4, 4, 4)
    assert ei.value.msg.startswith("unknown map type 'nosuch': use one of hash, array")
    with pytest.raises(LibbpfError) as ei:
        M.map_create("hash", 4, 4, 4, name="bad name!")
    assert "map name 'bad name!' is invalid" in ei.value.msg
    with pytest.raises(LibbpfError) as ei:
        M.map_create("hash", 0, 4, 4)
    assert ei.value.errno == errno.EINVAL and "refused" in ei.value.msg
    fd = M.map_create("BPF_MAP_TYPE_ARRAY", 4, 4, 4, name="a")
    try:
        L.obj_pin(fd, os.path.join(bpffs, "a"))
        with pytest.raises(LibbpfError) as ei:
            L.obj_pin(fd, os.path.join(bpffs, "a"))
        assert ei.value.errno == errno.EEXIST and "already pinned there" in ei.value.msg
        with pytest.raises(LibbpfError) as ei:
            L.obj_pin(fd, str(tmp_path / "not-bpffs"))
        assert "not on a bpffs" in ei.value.msg
    finally:
        L.close(fd)
    with pytest.raises(LibbpfError) as ei:
        M.map_entries(os.path.join(bpffs, "nope"))
    assert "does not exist or is not a pinned BPF object" in ei.value.msg


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def test_load_object_resize_rodata_data(objs, bpffs):
    ncpu = POSSIBLE_CPUS
    with O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": ncpu},
                       rodata={"num_cpus": ncpu, "magic": 0x1122334455667788, "shift": -2},
                       data={"direction": 9, "hits": 3}) as lo:
        assert set(lo.programs) == {"xdp_main", "xdp_alt", "tc_main", "tc_alt"}
        assert {"map_ip", "map_traffic", "cpu_map", "flows", "main.rodata", "main.data", "main.bss"} == set(lo.maps)
        assert sorted(os.listdir(bpffs)) == ["cpu_map", "map_ip", "map_traffic", "maps.debug", "progs.debug"]
        assert lo.map_pin_path("cpu_map") == os.path.join(bpffs, "cpu_map")
        assert M.map_info_by_path(os.path.join(bpffs, "cpu_map"))["max_entries"] == ncpu
        with B.Btf.from_file(objs["main"]) as btf:
            ro = btf.datasec_vars(".rodata")
        rodata = M.map_lookup(lo.map_fd(".rodata"), b"\0\0\0\0")
        assert len(rodata) == 18
        o, s = ro["num_cpus"]
        assert rodata[o:o + s] == struct.pack("<I", ncpu)
        o, s = ro["magic"]
        assert rodata[o:o + s] == struct.pack("<Q", 0x1122334455667788)
        o, s = ro["shift"]
        assert rodata[o:o + s] == struct.pack("<h", -2)
        assert M.map_lookup(lo.map_fd("main.data"), b"\0" * 4) == struct.pack("<I", 9)
        assert M.map_lookup(lo.map_fd(".bss"), b"\0" * 4) == struct.pack("<I", 3)
        # .rodata is frozen: bpftool sees the same bytes
        dump = json.loads(sh("bpftool", "map", "dump", "id", str(M.map_info_by_fd(lo.map_fd(".rodata"))["id"]),
                             "-j").stdout)
        assert dump[0]["value"]["num_cpus"] == ncpu if isinstance(dump[0].get("value"), dict) else True
        info = lo.prog_info("xdp_main")
        assert info["name"] == "xdp_main" and info["type_name"] == "xdp" and len(info["tag"]) == 16
        ids = {M.map_info_by_fd(lo.map_fd(m))["id"] for m in ("map_ip", "map_traffic", "cpu_map", "flows")}
        assert ids <= set(info["map_ids"])
        listed = {p["id"]: p for p in M.loaded_programs()}
        assert listed[info["id"]]["tag"] == info["tag"]
        assert listed[info["id"]]["map_ids"] == info["map_ids"]
        bt = json.loads(sh("bpftool", "prog", "show", "id", str(info["id"]), "-j").stdout)
        assert bt["tag"] == info["tag"] and sorted(bt["map_ids"]) == sorted(info["map_ids"])
        assert M.prog_info_by_id(info["id"])["name"] == "xdp_main"
        prog_id = info["id"]
    # closed, not pinned, not attached: the program is gone, the pins stay
    assert prog_id not in {p["id"] for p in M.loaded_programs()}
    assert L.pinned_kind(os.path.join(bpffs, "map_ip")) == "map"
    with pytest.raises(LibbpfError) as ei:
        M.prog_info_by_id(prog_id)
    assert "does not exist" in ei.value.msg


def test_load_object_cpumap_too_big(objs, bpffs):
    with pytest.raises(LibbpfError) as ei:
        O.load_object(objs["main"], pin_root=bpffs)
    msg = ei.value.msg
    assert ei.value.errno == errno.E2BIG
    assert "the kernel refused to create map cpu_map (cpumap, max_entries 1024)" in msg
    assert "resize={'cpu_map': %d}" % POSSIBLE_CPUS in msg
    # libbpf removed the pins it had made during the failed load
    assert sorted(os.listdir(bpffs)) == ["maps.debug", "progs.debug"]


def test_load_object_pin_reuse(objs, bpffs):
    resize = {"cpu_map": POSSIBLE_CPUS}
    key = struct.pack("<I", 32) + bytes(range(16))
    with O.load_object(objs["main"], pin_root=bpffs, resize=resize) as first:
        id1 = M.map_info_by_fd(first.map_fd("map_ip"))["id"]
        M.map_update(first.map_fd("map_ip"), key, struct.pack("<IIQQ", 1, 0x10002, 77, 88))
    with O.load_object(objs["main"], pin_root=bpffs, resize=resize) as second:
        assert M.map_info_by_fd(second.map_fd("map_ip"))["id"] == id1
        assert M.map_entries(second.map_fd("map_ip")) == [(key, struct.pack("<IIQQ", 1, 0x10002, 77, 88))]
    assert M.map_info_by_path(os.path.join(bpffs, "map_ip"))["id"] == id1


def test_load_object_incompatible_pin(objs, bpffs):
    old = _pin_new(bpffs, "map_ip", "lpm_trie", 20, 8, 64, name="map_ip")
    old_id = M.map_info_by_path(old)["id"]
    with pytest.raises(LibbpfError) as ei:
        O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": POSSIBLE_CPUS})
    msg = ei.value.msg
    assert ("map map_ip: existing pin %s is incompatible (value_size pinned 8, object 24)" % old) in msg
    assert "lqos.bpf.pinned_maps" in msg
    assert ei.value.errno == errno.EINVAL
    # the old pin is untouched, nothing else was left pinned
    assert M.map_info_by_path(old)["id"] == old_id
    assert sorted(os.listdir(bpffs)) == ["map_ip", "maps.debug", "progs.debug"]


def test_load_object_pin_root_not_bpffs(objs, tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    with pytest.raises(LibbpfError) as ei:
        O.load_object(objs["main"], pin_root=str(root), resize={"cpu_map": POSSIBLE_CPUS})
    assert ("cannot pin map map_ip at %s/map_ip: pin_root %s is not on a bpffs" % (root, root)) in ei.value.msg
    assert ei.value.errno == errno.EINVAL
    assert os.listdir(str(root)) == []


def test_load_object_verifier_rejection(objs):
    with pytest.raises(LibbpfError) as ei:
        O.load_object(objs["bad"])
    msg = ei.value.msg
    assert msg.startswith("the verifier rejected program bad_prog of %s [errno 13: Permission denied]" % objs["bad"])
    assert "invalid access to packet" in msg
    assert len(msg.split("last lines of the verifier log:\n", 1)[1].splitlines()) <= 20
    assert ei.value.errno == errno.EACCES


def test_load_object_variable_errors(objs, bpffs):
    resize = {"cpu_map": POSSIBLE_CPUS}
    cases = [
        (dict(rodata={"nope": 1}), "global variable nope is not in %s" % objs["main"]),
        (dict(rodata={"direction": 1}),
         "variable direction lives in section .data, not in .rodata: pass it under data"),
        (dict(data={"magic": 1}), "variable magic lives in section .rodata, not in .data/.bss: pass it under rodata"),
        (dict(rodata={"num_cpus": 1 << 32}),
         ".rodata variable num_cpus: 4294967296 does not fit a 4-byte unsigned integer (0 to 4294967295)"),
        # A __u32 takes no negative number (it was written as 4294967295), as map_entries refuses it.
        (dict(data={"direction": -1}),
         ".data variable direction: -1 does not fit a 4-byte unsigned integer (0 to 4294967295)"),
        (dict(rodata={"num_cpus": "two"}), "value for .rodata variable num_cpus must be an integer or bytes"),
        (dict(resize={"no_map": 2}), "cannot resize map no_map: %s has no such map" % objs["main"]),
    ]
    for kw, text in cases:
        kw.setdefault("resize", resize)
        with pytest.raises(LibbpfError) as ei:
            O.load_object(objs["main"], pin_root=bpffs, **kw)
        assert text in ei.value.msg, ei.value.msg
    assert sorted(os.listdir(bpffs)) == ["maps.debug", "progs.debug"]


def test_loaded_object_lookups(objs, bpffs):
    lo = O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": POSSIBLE_CPUS})
    with pytest.raises(LibbpfError) as ei:
        lo.prog_fd("missing")
    assert ei.value.msg.startswith("program missing is not in %s: it has xdp_main" % objs["main"])
    with pytest.raises(LibbpfError) as ei:
        lo.map_fd("missing")
    assert "map missing is not in" in ei.value.msg
    lo.close()
    lo.close()
    with pytest.raises(LibbpfError) as ei:
        lo.prog_fd("xdp_main")
    assert "is closed" in ei.value.msg


# --------------------------------------------------------------------------
# Namespaces, interfaces
# --------------------------------------------------------------------------

def test_netns_and_interface_errors(netns_pair):
    with pytest.raises(LibbpfError) as ei:
        H.enter_netns("lqos-no-such-ns")
    assert ei.value.msg.startswith("network namespace lqos-no-such-ns does not exist (no /run/netns/lqos-no-such-ns)")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(LibbpfError) as ei:
        H.ifindex("nosuch0")
    assert ei.value.msg.startswith("interface nosuch0 does not exist")
    with pytest.raises(LibbpfError) as ei:
        _in_child(H.enter_netns, "/etc/hostname")
    assert "/etc/hostname is not a network namespace file" in ei.value.msg

    def where(ns, ifname):
        H.enter_netns(ns)
        return H.ifindex(ifname), os.readlink("/proc/thread-self/ns/net")

    idx, ns_id = _in_child(where, netns_pair.ns_a, netns_pair.if_a)
    assert idx > 0 and ns_id != os.readlink("/proc/self/ns/net")
    with pytest.raises(LibbpfError) as ei:
        _in_child(where, netns_pair.ns_a, netns_pair.if_b)   # the peer lives in the other namespace
    assert ei.value.msg.startswith("interface %s does not exist" % netns_pair.if_b)

    def scoped(ns):
        before = os.readlink("/proc/thread-self/ns/net")
        with H.netns(ns):
            inside = os.readlink("/proc/thread-self/ns/net")
        return before, inside, os.readlink("/proc/thread-self/ns/net")

    before, inside, after = _in_child(scoped, netns_pair.ns_b)
    assert before == after != inside


# --------------------------------------------------------------------------
# XDP
# --------------------------------------------------------------------------

def _xdp_link_id(ns, ifname):
    out = sh("ip", "-n", ns, "-d", "-j", "link", "show", ifname).stdout
    xdp = json.loads(out)[0].get("xdp")
    return xdp


def test_xdp_attach_replace_detach(objs, bpffs, netns_pair):
    pair = netns_pair
    assert pair.ping().returncode == 0

    def attach(ns, ifname, obj, pin_root, ncpu):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        before = H.xdp_query(idx)
        with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
            H.xdp_attach(idx, lo.prog_fd("xdp_main"), "native", only_if_none=True)
            after = H.xdp_query(idx)
            info = lo.prog_info("xdp_main")
            try:
                H.xdp_attach(idx, lo.prog_fd("xdp_alt"), "native", only_if_none=True)
                busy = None
            except LibbpfError as exc:
                busy = (exc.msg, exc.errno)
            try:
                H.xdp_attach(idx, lo.prog_fd("xdp_alt"), "skb")
                mixed = None
            except LibbpfError as exc:
                mixed = (exc.msg, exc.errno)
        return before, after, info, busy, mixed

    before, after, info, busy, mixed = _in_child(attach, pair.ns_a, pair.if_a, objs["main"], bpffs, POSSIBLE_CPUS)
    assert before == {"attach_mode": "none", "prog_id": 0, "drv_prog_id": 0, "skb_prog_id": 0, "hw_prog_id": 0}
    assert after == {"attach_mode": "native", "prog_id": info["id"], "drv_prog_id": info["id"], "skb_prog_id": 0,
                     "hw_prog_id": 0}
    assert busy[1] == errno.EBUSY and "another XDP program is already attached" in busy[0]
    assert mixed[1] == errno.EEXIST and "another XDP program is already attached" in mixed[0]
    # the attached program outlived the object and the child; the kernel agrees
    assert _xdp_link_id(pair.ns_a, pair.if_a)["prog"]["id"] == info["id"]
    assert pair.ping(count=3).returncode == 0

    def replace(ns, ifname, obj, pin_root, ncpu, old_id):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        old_fd = M.prog_fd_by_id(old_id)
        try:
            with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
                new = lo.prog_info("xdp_alt")
                try:  # wrong expected program: refused, nothing changes
                    H.xdp_attach(idx, lo.prog_fd("xdp_alt"), "native", replace_prog_fd=lo.prog_fd("xdp_main"))
                    wrong = None
                except LibbpfError as exc:
                    wrong = (exc.msg, exc.errno)
                H.xdp_attach(idx, lo.prog_fd("xdp_alt"), "native", replace_prog_fd=old_fd)
                return new, wrong, H.xdp_query(idx)
        finally:
            L.close(old_fd)

    new, wrong, q = _in_child(replace, pair.ns_a, pair.if_a, objs["main"], bpffs, POSSIBLE_CPUS, info["id"])
    assert wrong[1] == errno.EEXIST and "the attached program is not the one to replace" in wrong[0]
    assert q["attach_mode"] == "native" and q["prog_id"] == new["id"] != info["id"]
    assert pair.ping(count=3).returncode == 0
    # the old program is gone (it was only held by the attachment)
    assert info["id"] not in {p["id"] for p in M.loaded_programs()}

    def detach(ns, ifname, prog_id):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        fd = M.prog_fd_by_id(prog_id)
        other = M.map_create("array", 4, 4, 1)
        try:
            try:
                H.xdp_detach(idx, "native", expected_prog_fd=other)
                wrong = None
            except LibbpfError as exc:
                wrong = (exc.msg, exc.errno)
            still = H.xdp_query(idx)
            H.xdp_detach(idx, "native", expected_prog_fd=fd)
            return wrong, still, H.xdp_query(idx)
        finally:
            L.close(fd)
            L.close(other)

    wrong, still, gone = _in_child(detach, pair.ns_a, pair.if_a, new["id"])
    assert wrong is not None
    assert still["prog_id"] == new["id"]
    assert gone["attach_mode"] == "none" and gone["prog_id"] == 0
    assert _xdp_link_id(pair.ns_a, pair.if_a) is None
    assert pair.ping().returncode == 0


def test_xdp_skb_mode_and_errors(objs, bpffs, netns_pair):
    pair = netns_pair

    def run(ns, ifname, obj, pin_root, ncpu):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        out = {}
        with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
            H.xdp_attach(idx, lo.prog_fd("xdp_main"), "skb")
            out["skb"] = H.xdp_query(idx)
            out["id"] = lo.prog_info("xdp_main")["id"]
            try:
                H.xdp_attach(idx, lo.prog_fd("tc_main"), "skb")
            except LibbpfError as exc:
                out["wrong_type"] = (exc.msg, exc.errno)
            try:
                H.xdp_attach(idx, lo.prog_fd("xdp_alt"), "hw")
            except LibbpfError as exc:
                out["hw"] = (exc.msg, exc.errno)
            try:
                H.xdp_attach(idx, lo.prog_fd("xdp_main"), "bogus")
            except LibbpfError as exc:
                out["bad_mode"] = exc.msg
            H.xdp_detach(idx, "skb")
            out["after"] = H.xdp_query(idx)
            try:
                H.xdp_query(999999)
            except LibbpfError as exc:
                out["no_dev"] = (exc.msg, exc.errno)
        return out

    out = _in_child(run, pair.ns_b, pair.if_b, objs["main"], bpffs, POSSIBLE_CPUS)
    assert out["skb"]["attach_mode"] == "skb" and out["skb"]["skb_prog_id"] == out["id"]
    assert out["skb"]["prog_id"] == out["id"] and out["skb"]["drv_prog_id"] == 0
    assert out["wrong_type"][1] == errno.EINVAL
    assert "the program is not of XDP type" in out["wrong_type"][0]
    assert out["hw"][1] == errno.EINVAL and "hardware offload refused" in out["hw"][0]
    assert out["bad_mode"] == "XDP mode 'bogus' is unknown: use native, skb or hw"
    assert out["after"]["attach_mode"] == "none"
    assert out["no_dev"] == ("querying XDP on ifindex 999999 failed: no such interface in this network namespace "
                             "[errno 19: No such device]", errno.ENODEV)
    assert pair.ping().returncode == 0


# --------------------------------------------------------------------------
# TC
# --------------------------------------------------------------------------

def test_tc_attach_query_replace_detach(objs, bpffs, netns_pair):
    pair = netns_pair
    handle, prio = 0x1, 0xC02F

    def attach(ns, ifname, obj, pin_root, ncpu):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        out = {"created": H.tc_hook_create(idx, "egress"), "again": H.tc_hook_create(idx, "egress"),
               "empty": H.tc_query(idx, "egress", handle, prio)}
        with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
            out["attached"] = H.tc_attach(idx, "egress", lo.prog_fd("tc_main"), handle, prio)
            out["id"] = lo.prog_info("tc_main")["id"]
            out["query"] = H.tc_query(idx, "egress", handle, prio)
            out["ingress"] = H.tc_query(idx, "ingress", handle, prio)
            try:
                H.tc_attach(idx, "egress", lo.prog_fd("tc_alt"), handle, prio)
            except LibbpfError as exc:
                out["exists"] = (exc.msg, exc.errno)
        return out

    out = _in_child(attach, pair.ns_a, pair.if_a, objs["main"], bpffs, POSSIBLE_CPUS)
    assert (out["created"], out["again"], out["empty"]) == (True, False, None)
    assert out["attached"] == out["query"] == out["id"]
    assert out["ingress"] is None
    assert out["exists"][1] == errno.EEXIST
    assert out["exists"][0].startswith("a TC egress filter already exists on %s at handle 0x1 priority 0xc02f: "
                                       "pass replace=True" % pair.if_a)
    shown = sh("ip", "netns", "exec", pair.ns_a, "tc", "filter", "show", "dev", pair.if_a, "egress").stdout
    assert "pref 49199" in shown and "handle 0x1" in shown and "tc_main" in shown and "direct-action" in shown
    assert pair.ping(count=3).returncode == 0

    def replace(ns, ifname, obj, pin_root, ncpu):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
            got = H.tc_attach(idx, "egress", lo.prog_fd("tc_alt"), handle, prio, replace=True)
            return got, lo.prog_info("tc_alt")["id"], H.tc_query(idx, "egress", handle, prio)

    got, new_id, q = _in_child(replace, pair.ns_a, pair.if_a, objs["main"], bpffs, POSSIBLE_CPUS)
    assert got == new_id == q != out["id"]
    assert "tc_alt" in sh("ip", "netns", "exec", pair.ns_a, "tc", "filter", "show", "dev", pair.if_a,
                          "egress").stdout
    assert pair.ping(count=3).returncode == 0

    def detach(ns, ifname):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        first = H.tc_detach(idx, "egress", handle, prio)
        second = H.tc_detach(idx, "egress", handle, prio)
        query = H.tc_query(idx, "egress", handle, prio)
        gone = H.tc_hook_destroy(idx, "both")
        again = H.tc_hook_destroy(idx, "both")  # already gone: fine
        return first, second, query, gone, again

    assert _in_child(detach, pair.ns_a, pair.if_a) == (True, False, None, True, False)
    assert "clsact" not in sh("ip", "netns", "exec", pair.ns_a, "tc", "qdisc", "show", "dev", pair.if_a).stdout
    assert pair.ping().returncode == 0


def test_tc_errors(objs, bpffs, netns_pair):
    pair = netns_pair

    def run(ns, ifname, obj, pin_root, ncpu):
        H.enter_netns(ns)
        idx = H.ifindex(ifname)
        out = {}
        with O.load_object(obj, pin_root=pin_root, resize={"cpu_map": ncpu}) as lo:
            try:
                H.tc_attach(idx, "sideways", lo.prog_fd("tc_main"), 1, 1)
            except LibbpfError as exc:
                out["dir"] = exc.msg
            try:
                H.tc_attach(idx, "egress", lo.prog_fd("tc_main"), 1, 0x10000)
            except LibbpfError as exc:
                out["prio"] = exc.msg
            try:
                H.tc_attach(idx, "egress", lo.prog_fd("tc_main"), 1, 1)
            except LibbpfError as exc:
                out["no_hook"] = (exc.msg, exc.errno)
        return out

    out = _in_child(run, pair.ns_b, pair.if_b, objs["main"], bpffs, POSSIBLE_CPUS)
    assert out["dir"] == "TC direction 'sideways' is unknown: use egress or ingress"
    assert out["prio"] == "TC priority 0x10000 is out of range: use 1..0xFFFF"
    assert out["no_hook"] == ("TC egress attach on %s failed: no clsact qdisc; call tc_hook_create first (Kernel "
                              "error message: Parent Qdisc doesn't exists) [errno 22: Invalid argument]" % pair.if_b,
                              errno.EINVAL)
    with pytest.raises(LibbpfError) as ei:
        H.tc_query(1, "egress", 0, 0xC02F)
    assert ei.value.msg.startswith("TC filters are addressed by a non-zero handle and priority")


def test_no_fd_leaks(objs, bpffs):
    """Every fd the module opens for itself is closed again, on success and on failure."""
    path = _pin_new(bpffs, "h", "hash", 4, 4, 4)
    M.map_update(path, b"\1\0\0\0", b"\2\0\0\0")

    def fds():
        gc.collect()   # objects a failed call left in a traceback cycle close their fds when collected, not leaked
        return sorted(os.listdir("/proc/self/fd"))

    def exercise():
        M.map_info_by_path(path)
        L.pinned_kind(path)
        L.pinned_kind(os.path.join(bpffs, "maps.debug"))
        M.map_entries(path)
        M.map_lookup(path, b"\1\0\0\0")
        O.object_info(objs["main"])
        with B.Btf.from_file(objs["main"]) as btf:
            btf.layout("flow_t")
        M.loaded_programs()
        for bad in (lambda: O.load_object(objs["bad"]), lambda: O.load_object(objs["main"], pin_root=bpffs),
                    lambda: M.map_info_by_path(os.path.join(bpffs, "nope")), lambda: H.enter_netns("nope")):
            with pytest.raises(LibbpfError):
                bad()
        with O.load_object(objs["main"], pin_root=bpffs, resize={"cpu_map": POSSIBLE_CPUS}) as lo:
            lo.prog_info("xdp_main")

    exercise()  # first run creates lazily cached state
    before = fds()
    exercise()
    assert fds() == before
