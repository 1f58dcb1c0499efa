"""Pure-Python logic of module_utils/_kernel/libbpf.py (no libbpf calls, no kernel)."""
from __future__ import annotations

import errno
import os
import importlib.util
import sys

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import declarations as D
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import open_object as OO
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import LibbpfError


def test_error_attributes():
    exc = LibbpfError("x failed: do y", errno.ENOENT)
    assert (exc.msg, exc.errno, str(exc)) == ("x failed: do y", errno.ENOENT, "x failed: do y")
    assert LibbpfError("plain").errno is None
    with pytest.raises(LibbpfError) as ei:
        L._fail("thing broke: fix it", errno.EPERM)
    assert ei.value.msg == "thing broke: fix it [errno 1: Operation not permitted]"
    assert ei.value.errno == errno.EPERM


def test_strerror_enotsupp():
    assert L._strerror(524) == "operation not supported (ENOTSUPP)"
    assert L._strerror(errno.E2BIG) == "Argument list too long"


@pytest.mark.parametrize("given, want", [
    ("hash", 1), ("lpm_trie", 11), ("BPF_MAP_TYPE_LPM_TRIE", 11), ("cpumap", 16), ("percpu_hash", 5),
    ("devmap_hash", 25), ("ringbuf", 27), (" Array ", 2), (12, 12),
])
def test_map_type_id(given, want):
    assert L.map_type_id(given) == want


def test_map_type_names_follow_the_uapi_enum():
    assert L.map_type_name(11) == "lpm_trie"
    assert L.map_type_name(16) == "cpumap"
    assert L.map_type_name(33) == "arena"
    assert L.map_type_name(99) == "unknown(99)"
    assert L.prog_type_name(6) == "xdp"
    assert L.prog_type_name(3) == "sched_cls"
    assert L.prog_type_name(1000) == "unknown(1000)"
    with pytest.raises(LibbpfError) as ei:
        L.map_type_id("hashmap")
    assert ei.value.msg.startswith("unknown map type 'hashmap': use one of hash, array, prog_array")


def test_percpu_and_non_iterable_sets():
    assert {L.map_type_name(t) for t in D.PERCPU_MAP_TYPES} == {
        "percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"}
    assert D.MAP_TYPES["queue"] in D.NO_ITERATION_MAP_TYPES
    assert D.MAP_TYPES["cpumap"] not in D.NO_ITERATION_MAP_TYPES


@pytest.mark.parametrize("name, section", [
    ("lqos_ker.rodata", ".rodata"), ("t.bss", ".bss"), ("my_obje.kconfig", ".kconfig"),
    (".rodata.abracad", ".rodata.abracad"), (".data.custom", ".data.custom"),
])
def test_internal_section(name, section):
    assert OO._internal_section(name) == section


def test_int_bytes():
    assert O._int_bytes(2, 4, "little", "n", ".rodata") == b"\x02\0\0\0"
    assert O._int_bytes(0x1122334455667788, 8, "little", "n", ".rodata") == bytes.fromhex("8877665544332211")
    assert O._int_bytes(0x0102, 2, "big", "n", ".rodata") == b"\x01\x02"
    assert O._int_bytes(-2, 2, "little", "n", ".rodata") == b"\xfe\xff"
    assert O._int_bytes(True, 1, "little", "n", ".data") == b"\x01"
    assert O._int_bytes(b"abc", 3, "little", "n", ".data") == b"abc"
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(256, 1, "little", "flag", ".rodata")
    assert ei.value.msg == ".rodata variable flag: 256 does not fit a 1-byte integer (-128 to 255)"
    # The variable's BTF signedness decides the range (one check with map_entries: _common.int_bytes).
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(-1, 4, "little", "direction", ".data", signed=False)
    assert ei.value.msg == ".data variable direction: -1 does not fit a 4-byte unsigned integer (0 to 4294967295)"
    assert ei.value.errno == errno.ERANGE
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(1 << 31, 4, "little", "shift", ".rodata", signed=True)
    assert ei.value.msg.endswith("does not fit a 4-byte signed integer (-2147483648 to 2147483647)")
    assert O._int_bytes(-2, 4, "little", "shift", ".rodata", signed=True) == b"\xfe\xff\xff\xff"
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(-129, 1, "little", "flag", ".rodata")
    assert ei.value.errno == errno.ERANGE
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(1, 16, "little", "addr", ".rodata")
    assert ei.value.msg == ".rodata variable addr is 16 bytes wide, not an integer: pass its value as bytes"
    with pytest.raises(LibbpfError) as ei:
        O._int_bytes(b"ab", 3, "little", "x", ".data")
    assert ei.value.msg == "value for .data variable x must be 3 bytes, not 2"
    with pytest.raises(LibbpfError):
        O._int_bytes(1.5, 4, "little", "x", ".data")


def test_netns_path_and_modes():
    assert H._netns_path("ns1") == "/run/netns/ns1"
    assert H._netns_path("/proc/1/ns/net") == "/proc/1/ns/net"
    assert H._xdp_mode_flag("native") == D.XDP_FLAGS_DRV_MODE
    assert H._xdp_mode_flag("skb") == D.XDP_FLAGS_SKB_MODE
    assert H._xdp_mode_flag("hw") == D.XDP_FLAGS_HW_MODE
    with pytest.raises(LibbpfError) as ei:
        H._xdp_mode_flag("fast")
    assert ei.value.msg == "XDP mode 'fast' is unknown: use native, skb or hw"
    with pytest.raises(LibbpfError) as ei:
        H._tc_check_filter_id(0, 0xC02F)
    assert ei.value.errno == errno.EINVAL


def test_kernel_said():
    assert H._kernel_said([]) == ""
    assert H._kernel_said(["libbpf: Kernel error message: X", "other"]) == " (Kernel error message: X | other)"


def test_without_cffi_errors_name_the_fix(monkeypatch):
    """With cffi missing the module still imports, and any call names the package to install."""
    monkeypatch.setitem(sys.modules, "cffi", None)
    spec = importlib.util.spec_from_file_location(L.__package__ + "._libbpf_nocffi", L.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.HAS_CFFI is False
    assert "Error" in mod.CFFI_IMP_ERR
    with pytest.raises(mod.LibbpfError) as ei:
        mod.libbpf_version()
    assert ei.value.msg.startswith("python cffi is not installed: install the Debian package python3-cffi")


def test_missing_libbpf_names_the_package(monkeypatch):
    """A target without libbpf.so.1 gets the Debian package to install, not a raw OSError."""
    import cffi

    def no_lib(self, name, *args, **kw):
        raise OSError("cannot load library '%s': %s: cannot open shared object file" % (name, name))

    spec = importlib.util.spec_from_file_location(L.__package__ + "._libbpf_nolib", L.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(cffi.FFI, "dlopen", no_lib)
    monkeypatch.setattr(mod, "_cached_ffi", lambda: None)   # declarations parsed in process: cffi.FFI
    with pytest.raises(mod.LibbpfError) as ei:
        mod.possible_cpus()
    assert ei.value.msg.startswith("libbpf.so.1 not found: install the Debian package libbpf1")


def test_cffi_declarations_are_parsed_once_per_host(tmp_path):
    cache = str(tmp_path / "cffi")
    ffi = L._cached_ffi(cache)
    (name,) = os.listdir(cache)
    path = os.path.join(cache, name)
    assert name.startswith("_lqos_bpf_cffi_") and name.endswith(".py")
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(cache).st_mode & 0o777 == 0o700
    parsed = __import__("cffi").FFI()
    parsed.cdef(D.CDEF)
    for struct in ("struct bpf_map_info", "struct bpf_prog_info", "struct bpf_link_info", "struct bpf_tc_opts"):
        assert ffi.sizeof(struct) == parsed.sizeof(struct)
    mtime = os.stat(path).st_mtime_ns
    assert L._cached_ffi(cache).sizeof("struct bpf_tc_opts") == ffi.sizeof("struct bpf_tc_opts")
    assert os.stat(path).st_mtime_ns == mtime            # imported, not written again


def test_a_cache_file_others_could_write_is_never_imported(tmp_path):
    cache = str(tmp_path / "cffi")
    L._cached_ffi(cache)
    (name,) = os.listdir(cache)
    path = os.path.join(cache, name)
    with open(path, "w") as fh:
        fh.write("raise SystemExit('imported an untrusted file')\n")
    os.chmod(path, 0o666)
    ffi = L._cached_ffi(cache)                           # written again, then imported
    assert ffi is not None and os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as fh:
        assert "untrusted" not in fh.read()


def test_check_mode_reads_the_cffi_cache_but_never_writes_it(tmp_path, monkeypatch):
    cache = str(tmp_path / "cffi")
    monkeypatch.setenv("LQOS_BPF_READ_ONLY_CACHES", "1")
    assert L._cached_ffi(cache) is None and not os.path.exists(cache)
    monkeypatch.delenv("LQOS_BPF_READ_ONLY_CACHES")
    L._cached_ffi(cache)
    monkeypatch.setenv("LQOS_BPF_READ_ONLY_CACHES", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)   # as a plain `python3` run writes bytecode
    before = sorted(os.listdir(cache))
    assert L._cached_ffi(cache) is not None            # an existing trusted file is still used
    assert sorted(os.listdir(cache)) == before          # ... and no __pycache__ written next to it
