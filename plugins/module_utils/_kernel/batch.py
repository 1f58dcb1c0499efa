# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# Whole maps read and written with the kernel's batch operations
# (BPF_MAP_LOOKUP_BATCH, BPF_MAP_UPDATE_BATCH: Linux 5.6+, libbpf
# bpf_map_lookup_batch / bpf_map_update_batch), into and out of two flat
# buffers, so a map of 100,000 entries moves in a few system calls.
from __future__ import annotations

import errno as _errno

from .libbpf import (
    LibbpfError,
    _ObjFd,
    _errno_of,
    _fail,
    _ffi_lib,
    map_type_name,
    possible_cpus,
)
from .declarations import ENOTSUPP, PERCPU_MAP_TYPES
from . import maps as M

CHUNK = 16384          # entries per lookup call (a hash bucket never holds more)
UPDATE_CHUNK = 65536   # entries per update call
GROW_FROM = 65536      # entries a whole-map read makes room for first (then doubled)
_UNSUPPORTED = (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP)
# map type ids whose first batch call the kernel refused: {"lookup": set(), "update": set()} (per process)
NO_BATCH = {"lookup": set(), "update": set()}


class Table(object):
    """Entries of one map as two flat buffers (bytes, bytearray or memoryview; ``key``, ``value`` and ``pairs``
    give bytes): ``keys`` (n x key_size bytes) and ``values`` (n x value_bytes;
    value_bytes is round_up(value_size, 8) x possible CPUs for per-CPU maps, else value_size). ``batched``
    says whether the kernel's batch operation produced it (False: one call per entry)."""

    def __init__(self, keys: bytes, values: bytes, key_size: int, value_bytes: int, batched: bool = True):
        self.keys, self.values = keys, values
        self.key_size, self.value_bytes = key_size, value_bytes
        self.n = len(keys) // key_size if key_size else 0
        self.batched = batched

    @classmethod
    def from_pairs(cls, pairs: list, key_size: int, value_bytes: int) -> "Table":
        return cls(b"".join(k for k, v in pairs), b"".join(v for k, v in pairs), key_size, value_bytes, False)

    def key(self, i: int) -> bytes:
        return bytes(self.keys[i * self.key_size:(i + 1) * self.key_size])

    def value(self, i: int) -> bytes:
        return bytes(self.values[i * self.value_bytes:(i + 1) * self.value_bytes])

    def pairs(self) -> list:
        ks, vs, kb, vb = bytes(self.keys), bytes(self.values), self.key_size, self.value_bytes
        return [(ks[i * kb:(i + 1) * kb], vs[i * vb:(i + 1) * vb]) for i in range(self.n)]

    def as_dict(self) -> dict:
        return dict(self.pairs())


def value_bytes(info: dict) -> int:
    """Bytes of one value as user space reads it (``info``: map_info_*)."""
    if info["type"] in PERCPU_MAP_TYPES:
        return (info["value_size"] + 7) // 8 * 8 * possible_cpus()
    return info["value_size"]


def dump(path_or_fd) -> Table:
    """Every entry of a map, with BPF_MAP_LOOKUP_BATCH where the kernel has it for this map type (probed by
    the first call: EINVAL/ENOTSUPP means no), else key by key (``_kernel.maps.map_entries``). The kernel writes
    straight into the two buffers of the Table (bytearrays: no copy after the system calls)."""
    ffi, lib = _ffi_lib()
    with _ObjFd(path_or_fd) as fd:
        info = M.map_info_by_fd(fd)
        ksz, vsz = info["key_size"], value_bytes(info)
        if info["type"] not in NO_BATCH["lookup"] and ksz:
            got = _lookup_batches(ffi, lib, fd, info, ksz, vsz, path_or_fd, keep=True)
            if got is not None:
                return Table(got[0], got[1], ksz, vsz)
        return Table.from_pairs(M.map_entries(fd), ksz, vsz)


def count(path_or_fd) -> int:
    """How many entries a map holds, read with BPF_MAP_LOOKUP_BATCH into one reused buffer (nothing kept; a map
    type without batch lookups is counted key by key)."""
    ffi, lib = _ffi_lib()
    with _ObjFd(path_or_fd) as fd:
        info = M.map_info_by_fd(fd)
        ksz, vsz = info["key_size"], value_bytes(info)
        if info["type"] not in NO_BATCH["lookup"] and ksz:
            got = _lookup_batches(ffi, lib, fd, info, ksz, vsz, path_or_fd, keep=False)
            if got is not None:
                return got
        return len(M.map_entries(fd))


def _lookup_batches(ffi, lib, fd: int, info: dict, ksz: int, vsz: int, label, keep: bool):
    """The batch lookup loop: (keys, values) as bytearrays (``keep``) or the count of entries; None when the
    kernel has no batch lookup for this map type (remembered in NO_BATCH)."""
    chunk = max(1, min(CHUNK, info["max_entries"] or 1))
    # keep: room that doubles as entries come, up to max_entries (bytearray(n) writes its n zero bytes, so a sparse
    # map with a large max_entries must not get all of it at once)
    cap = max(chunk, min(GROW_FROM, info["max_entries"] or 0)) if keep else chunk
    keys, values = bytearray(cap * ksz), bytearray(cap * vsz)
    tokens = [ffi.new("char[]", max(ksz, 8)), ffi.new("char[]", max(ksz, 8))]
    cnt = ffi.new("__u32 *")
    opts = ffi.new("struct bpf_map_batch_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
    total, i = 0, 0
    while True:
        at = total if keep else 0
        if keep and cap - total < chunk:
            # doubled, to max_entries (past it only when the map changed while read: one chunk more)
            grow = max(total + chunk, min(2 * cap, info["max_entries"] or 0)) - cap
            keys.extend(bytes(grow * ksz))
            values.extend(bytes(grow * vsz))
            cap += grow
        cnt[0] = chunk
        with ffi.from_buffer(keys) as kp, ffi.from_buffer(values) as vp:
            ret = lib.bpf_map_lookup_batch(fd, ffi.NULL if i == 0 else tokens[i & 1], tokens[(i + 1) & 1],
                                           kp + at * ksz, vp + at * vsz, cnt, opts)
        err = _errno_of(ret) if ret < 0 else 0
        if err and i == 0 and err in _UNSUPPORTED:
            NO_BATCH["lookup"].add(info["type"])
            return None
        total += cnt[0]
        if err == _errno.ENOENT:
            if not keep:
                return total
            del keys[total * ksz:]
            del values[total * vsz:]
            return keys, values
        if err:
            _fail("reading map %s (%s) in batches failed" % (M._map_label(label), map_type_name(info["type"])), err)
        i += 1


def fill(path_or_fd, table: Table, what: str = "") -> bool:
    """Write every entry of ``table`` (BPF_ANY) with BPF_MAP_UPDATE_BATCH where the kernel has it (probed by
    the first call), else one bpf_map_update_elem per entry. Returns True when batched."""
    ffi, lib = _ffi_lib()
    if not table.n:
        return True
    with _ObjFd(path_or_fd) as fd:
        info = M.map_info_by_fd(fd)
        what = what or M._map_label(path_or_fd)
        if (info["key_size"], value_bytes(info)) != (table.key_size, table.value_bytes):
            raise LibbpfError("entries of %d-byte keys and %d-byte values do not fit map %s (key %d, value %d bytes)"
                              % (table.key_size, table.value_bytes, what, info["key_size"], value_bytes(info)),
                              _errno.EINVAL)
        ksz, vsz = table.key_size, table.value_bytes
        if info["type"] not in NO_BATCH["update"]:
            count = ffi.new("__u32 *")
            opts = ffi.new("struct bpf_map_batch_opts *")
            opts.sz = ffi.sizeof("struct bpf_map_batch_opts")
            done = 0
            with ffi.from_buffer(table.keys) as kview, ffi.from_buffer(table.values) as vview:
                while done < table.n:
                    count[0] = n = min(UPDATE_CHUNK, table.n - done)
                    ret = lib.bpf_map_update_batch(fd, kview + done * ksz, vview + done * vsz, count, opts)
                    if ret < 0:
                        err = _errno_of(ret)
                        if done == 0 and count[0] == 0 and err in _UNSUPPORTED:
                            NO_BATCH["update"].add(info["type"])
                            break
                        # the entry that failed, again on its own, for its precise error
                        bad = done + count[0]
                        M.map_update(fd, table.key(bad), table.value(bad))
                        done = bad + 1
                        continue
                    done += n
                else:
                    return True
        for i in range(table.n):
            ret = lib.bpf_map_update_elem(fd, ffi.from_buffer(table.key(i)), ffi.from_buffer(table.value(i)), 0)
            if ret < 0:
                M.map_update(fd, table.key(i), table.value(i))  # the same write again, for its error message
        return False


def delete(path_or_fd, keys: list) -> int:
    """Delete ``keys`` (bytes each) one by one; returns how many were there."""
    ffi, lib = _ffi_lib()
    gone = 0
    with _ObjFd(path_or_fd) as fd:
        for key in keys:
            if lib.bpf_map_delete_elem(fd, ffi.from_buffer(key)) == 0:
                gone += 1
    return gone
