# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# Maps and programs the kernel holds: info by fd, pin or id, entries read
# and written, maps created (bpf_map_*, bpf_obj_get_info_by_fd).
from __future__ import annotations

import errno as _errno
import os
from .libbpf import (
    LibbpfError,
    _ObjFd,
    _STATE,
    _b,
    _errno_of,
    _fail,
    _fast_fd_kind,
    _ffi_lib,
    _obj_get,
    map_type_id,
    map_type_name,
    possible_cpus,
    prog_type_name,
)
from .declarations import (
    BPF_ANY,
    BPF_F_NO_PREALLOC,
    BPF_OBJ_NAME_LEN,
    ENOTSUPP,
    MAP_TYPES,
    NO_ITERATION_MAP_TYPES,
    PERCPU_MAP_TYPES,
)

# --------------------------------------------------------------------------
# Map and program info
# --------------------------------------------------------------------------


def _map_info_struct(fd: int, what: str):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    info = ffi.new("struct bpf_map_info *")
    ln = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
    ret = lib.bpf_obj_get_info_by_fd(fd, info, ln)
    if ret < 0:
        _fail("reading map info of %s failed" % what, _errno_of(ret))
    return info


BPF_F_RDONLY_PROG = 1 << 7
KERNEL_SET_FLAGS = {"devmap": BPF_F_RDONLY_PROG, "devmap_hash": BPF_F_RDONLY_PROG}


def creator_flags(type_name: str, kernel_flags: int) -> int:
    """The flags a map was created with: its kernel-reported flags without the bits the kernel sets itself
    (BPF_F_RDONLY_PROG on devmap and devmap_hash, kernel/bpf/devmap.c dev_map_alloc_check), so a pin this
    collection just made compares equal to the object that made it, as libbpf's own reuse check does."""
    return kernel_flags & ~KERNEL_SET_FLAGS.get(type_name, 0)


def _kernel_btf_type_name(btf_id: int, type_id: int) -> str | None:
    if not btf_id or not type_id:
        return None
    # Imported on first use: a map without BTF (and every module that never meets one) does not compile _kernel/btf.py.
    from .btf import _kernel_btf_type_name as name
    return name(btf_id, type_id)


def _map_info_dict(info) -> dict:
    ffi = _STATE["ffi"]
    type_name = map_type_name(info.type)
    return {
        "id": info.id,
        "type": info.type,
        "type_name": type_name,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": creator_flags(type_name, info.map_flags),
        "kernel_flags": info.map_flags,
        "map_extra": info.map_extra,
        "name": ffi.string(info.name).decode("utf-8", "replace"),
        "ifindex": info.ifindex,
        "btf_id": info.btf_id,
        "btf_key_type_id": info.btf_key_type_id,
        "btf_value_type_id": info.btf_value_type_id,
        "key_type_name": _kernel_btf_type_name(info.btf_id, info.btf_key_type_id),
        "value_type_name": _kernel_btf_type_name(info.btf_id, info.btf_value_type_id),
    }


def map_info_by_fd(fd: int) -> dict:
    ffi, lib = _ffi_lib()
    kind = _fast_fd_kind(fd)
    if kind != "map":
        raise LibbpfError("fd %d is %s, not a BPF map" % (fd, "a BPF " + kind if kind else "not a BPF object"),
                          _errno.EINVAL)
    return _map_info_dict(_map_info_struct(fd, "fd %d" % fd))


def map_info_by_path(path: str) -> dict:
    """Kernel facts of a pinned map: {id, type, type_name, key_size, value_size,
    max_entries, flags, map_extra, name, ifindex, btf_id, btf_key_type_id,
    btf_value_type_id, key_type_name, value_type_name}."""
    ffi, lib = _ffi_lib()
    fd = _obj_get(path)
    try:
        kind = _fast_fd_kind(fd)
        if kind != "map":
            raise LibbpfError("%s is a pinned %s, not a map: point to a map pin" % (path, kind or "non-BPF object"),
                              _errno.EINVAL)
        info = _map_info_struct(fd, path)
    finally:
        os.close(fd)
    return _map_info_dict(info)


def map_info_by_id(map_id: int) -> dict:
    ffi, lib = _ffi_lib()
    fd = lib.bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        _fail("map id %d does not exist (any more)" % map_id, _errno_of(fd))
    try:
        return _map_info_dict(_map_info_struct(fd, "map id %d" % map_id))
    finally:
        os.close(fd)


def prog_info_by_fd(fd: int) -> dict:
    """{id, name, tag (hex), type, type_name, map_ids, btf_id, gpl_compatible,
    load_time, created_by_uid, run_cnt, run_time_ns, verified_insns, xlated_prog_len,
    jited_prog_len}."""
    ffi, lib = _ffi_lib()
    size = ffi.sizeof("struct bpf_prog_info")
    info = ffi.new("struct bpf_prog_info *")
    ln = ffi.new("__u32 *", size)
    ret = lib.bpf_obj_get_info_by_fd(fd, info, ln)
    if ret < 0:
        _fail("reading program info of fd %d failed (is it a BPF program fd?)" % fd, _errno_of(ret))
    map_ids = []
    n = info.nr_map_ids
    if n:
        ids = ffi.new("__u32[]", n)
        info2 = ffi.new("struct bpf_prog_info *")
        info2.nr_map_ids = n
        info2.map_ids = int(ffi.cast("uintptr_t", ids))
        ln[0] = size
        ret = lib.bpf_obj_get_info_by_fd(fd, info2, ln)
        if ret < 0:
            _fail("reading the map ids of program fd %d failed" % fd, _errno_of(ret))
        map_ids = [ids[i] for i in range(min(n, info2.nr_map_ids))]
    return {
        "id": info.id,
        "name": ffi.string(info.name).decode("utf-8", "replace"),
        "tag": bytes(ffi.buffer(info.tag, 8)).hex(),
        "type": info.type,
        "type_name": prog_type_name(info.type),
        "map_ids": map_ids,
        "btf_id": info.btf_id,
        "gpl_compatible": bool(info.gpl_compatible),
        "load_time": info.load_time,
        "created_by_uid": info.created_by_uid,
        "run_cnt": info.run_cnt,
        "run_time_ns": info.run_time_ns,
        "verified_insns": info.verified_insns,
        "xlated_prog_len": info.xlated_prog_len,
        "jited_prog_len": info.jited_prog_len,
    }


def _fd_by_id(kind: str, getter: str, obj_id: int, gone: str) -> int:
    _ffi, lib = _ffi_lib()
    fd = getattr(lib, getter)(obj_id)
    if fd < 0:
        err = _errno_of(fd)
        if err == _errno.ENOENT:
            _fail("BPF %s id %d does not exist (%s)" % (kind, obj_id, gone), err)
        _fail("opening BPF %s id %d failed (needs root: CAP_SYS_ADMIN)" % (kind, obj_id), err)
    return fd


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd for a loaded program (the caller closes it)."""
    return _fd_by_id("program", "bpf_prog_get_fd_by_id", prog_id, "it was unloaded")


def map_fd_by_id(map_id: int) -> int:
    """A new fd for a map by id (the caller closes it)."""
    return _fd_by_id("map", "bpf_map_get_fd_by_id", map_id, "it was freed")


def prog_info_by_id(prog_id: int) -> dict:
    fd = prog_fd_by_id(prog_id)
    try:
        return prog_info_by_fd(fd)
    finally:
        os.close(fd)


def loaded_programs() -> list:
    """Every BPF program loaded in the kernel: [{id, name, tag, type, type_name, map_ids, ...}]."""
    ffi, lib = _ffi_lib()
    out = []
    nxt = ffi.new("__u32 *")
    cur = 0
    while True:
        ret = lib.bpf_prog_get_next_id(cur, nxt)
        if ret < 0:
            err = _errno_of(ret)
            if err == _errno.ENOENT:
                break
            _fail("listing BPF programs failed (needs root: CAP_SYS_ADMIN)", err)
        cur = nxt[0]
        fd = lib.bpf_prog_get_fd_by_id(cur)
        if fd < 0:
            if _errno_of(fd) == _errno.ENOENT:
                continue  # unloaded meanwhile
            _fail("opening BPF program id %d failed (needs root: CAP_SYS_ADMIN)" % cur, _errno_of(fd))
        try:
            out.append(prog_info_by_fd(fd))
        finally:
            os.close(fd)
    return out


def prog_info_by_path(path: str) -> dict:
    fd = _obj_get(path)
    try:
        kind = _fast_fd_kind(fd)
        if kind != "prog":
            raise LibbpfError("%s is a pinned %s, not a program" % (path, kind or "non-BPF object"), _errno.EINVAL)
        return prog_info_by_fd(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Map data
# --------------------------------------------------------------------------

def _value_buf_size(info) -> int:
    if info.type in PERCPU_MAP_TYPES:
        return ((info.value_size + 7) // 8 * 8) * possible_cpus()
    return info.value_size


def _map_ctx(fd: int, what: str):
    kind = _fast_fd_kind(fd)
    if kind != "map":
        raise LibbpfError("%s is %s, not a BPF map" % (what, "a BPF " + kind if kind else "not a BPF object"),
                          _errno.EINVAL)
    return _map_info_struct(fd, what)


def map_entries(path_or_fd) -> list:
    """All (key_bytes, value_bytes) of a map. Per-CPU maps return the full blob:
    round_up(value_size, 8) bytes for each possible CPU, CPU 0 first."""
    ffi, lib = _ffi_lib()
    what = _map_label(path_or_fd)
    with _ObjFd(path_or_fd) as fd:
        info = _map_ctx(fd, what)
        tname = map_type_name(info.type)
        if info.type in NO_ITERATION_MAP_TYPES:
            raise LibbpfError("map %s is a %s map, which has no keys to walk: its entries cannot be listed "
                              "(dump it from BPF, or use a hash/array map)" % (what, tname), _errno.EOPNOTSUPP)
        ksz = max(info.key_size, 1)
        vsz = _value_buf_size(info)
        keys = [ffi.new("char[]", ksz), ffi.new("char[]", ksz)]
        value = ffi.new("char[]", max(vsz, 1))
        out = []
        prev = ffi.NULL
        i = 0
        limit = info.max_entries * 2 + 16
        while True:
            cur = keys[i & 1]
            ret = lib.bpf_map_get_next_key(fd, prev, cur)
            if ret < 0:
                err = _errno_of(ret)
                if err == _errno.ENOENT:
                    break
                if err in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP):
                    _fail("map %s (%s) does not support walking its keys: its entries cannot be listed"
                          % (what, tname), err)
                _fail("walking the keys of map %s failed" % what, err)
            ret = lib.bpf_map_lookup_elem(fd, cur, value)
            if ret < 0:
                err = _errno_of(ret)
                if err != _errno.ENOENT:  # deleted meanwhile / empty cpumap/devmap slot
                    if err in (_errno.EOPNOTSUPP, ENOTSUPP, _errno.EINVAL):
                        _fail("map %s (%s) does not support lookups from user space: its values cannot be read"
                              % (what, tname), err)
                    _fail("reading an entry of map %s failed" % what, err)
            else:
                out.append((bytes(ffi.buffer(cur, info.key_size)), bytes(ffi.buffer(value, vsz))))
            prev = cur
            i += 1
            if i > limit:
                break
        return out


def _fit_value(info, value: bytes, what: str) -> bytes:
    value = bytes(value)
    if info.type in PERCPU_MAP_TYPES:
        stride = (info.value_size + 7) // 8 * 8
        full = stride * possible_cpus()
        if len(value) == full:
            return value
        if len(value) == info.value_size:
            return (value + b"\0" * (stride - info.value_size)) * possible_cpus()
        raise LibbpfError("value for per-CPU map %s must be %d bytes (value_size %d, one copy) or %d bytes "
                          "(round_up(value_size, 8) x %d possible CPUs), not %d"
                          % (what, info.value_size, info.value_size, full, possible_cpus(), len(value)),
                          _errno.EINVAL)
    if len(value) != info.value_size:
        raise LibbpfError("value for map %s must be exactly value_size=%d bytes, not %d"
                          % (what, info.value_size, len(value)), _errno.EINVAL)
    return value


def _map_label(path_or_fd) -> str:
    """How errors name a map given by pin path or by fd."""
    return "fd %d" % path_or_fd if isinstance(path_or_fd, int) else str(path_or_fd)


def _check_key(info, key, what: str) -> bytes:
    key = bytes(key)
    if len(key) != info.key_size:
        raise LibbpfError("key for map %s must be exactly key_size=%d bytes, not %d"
                          % (what, info.key_size, len(key)), _errno.EINVAL)
    return key


def map_update(path_or_fd, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    """Set one entry. For per-CPU maps pass the full blob (see map_entries) or a
    single value_size copy, which is written to every CPU."""
    ffi, lib = _ffi_lib()
    what = _map_label(path_or_fd)
    with _ObjFd(path_or_fd) as fd:
        info = _map_ctx(fd, what)
        key = _check_key(info, key, what)
        value = _fit_value(info, value, what)
        ret = lib.bpf_map_update_elem(fd, ffi.from_buffer(key) if key else ffi.NULL,
                                      ffi.from_buffer(value), flags)
        if ret < 0:
            err = _errno_of(ret)
            if err == _errno.E2BIG:
                _fail("map %s is full (max_entries %d) or the key is out of range: delete entries or grow the map"
                      % (what, info.max_entries), err)
            if err == _errno.EEXIST:
                _fail("key already present in map %s and BPF_NOEXIST was asked" % what, err)
            if err == _errno.ENOENT and info.type not in (MAP_TYPES["hash"],):
                _fail("key not present in map %s and BPF_EXIST was asked, or it is outside the map" % what, err)
            _fail("updating map %s (%s) failed" % (what, map_type_name(info.type)), err)


def map_lookup(path_or_fd, key: bytes) -> bytes | None:
    """One value (full per-CPU blob for per-CPU maps) or None when the key is absent."""
    ffi, lib = _ffi_lib()
    what = _map_label(path_or_fd)
    with _ObjFd(path_or_fd) as fd:
        info = _map_ctx(fd, what)
        key = _check_key(info, key, what)
        vsz = _value_buf_size(info)
        value = ffi.new("char[]", max(vsz, 1))
        ret = lib.bpf_map_lookup_elem(fd, ffi.from_buffer(key) if key else ffi.NULL, value)
        if ret < 0:
            err = _errno_of(ret)
            if err == _errno.ENOENT:
                return None
            _fail("looking up a key in map %s (%s) failed" % (what, map_type_name(info.type)), err)
        return bytes(ffi.buffer(value, vsz))


def map_delete(path_or_fd, key: bytes) -> bool:
    """Delete one key; False when it was not there."""
    ffi, lib = _ffi_lib()
    what = _map_label(path_or_fd)
    with _ObjFd(path_or_fd) as fd:
        info = _map_ctx(fd, what)
        key = _check_key(info, key, what)
        ret = lib.bpf_map_delete_elem(fd, ffi.from_buffer(key))
        if ret < 0:
            err = _errno_of(ret)
            if err == _errno.ENOENT:
                return False
            _fail("deleting a key of map %s (%s) failed (array maps cannot delete)"
                  % (what, map_type_name(info.type)), err)
        return True


def map_create(type_name_or_int, key_size: int, value_size: int, max_entries: int, name: str = "",
               flags: int = 0) -> int:
    """Create a map and return its fd (the caller closes it). lpm_trie maps always
    get BPF_F_NO_PREALLOC, which the kernel requires."""
    ffi, lib = _ffi_lib()
    mtype = map_type_id(type_name_or_int)
    if mtype == MAP_TYPES["lpm_trie"]:
        flags |= BPF_F_NO_PREALLOC
    if len(name) >= BPF_OBJ_NAME_LEN or any(not (c.isalnum() or c in "_.") for c in name) or not name.isascii():
        raise LibbpfError("map name %r is invalid: at most 15 ASCII letters, digits, '_' or '.'" % name,
                          _errno.EINVAL)
    opts = ffi.new("struct bpf_map_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_create_opts")
    opts.map_flags = flags
    ret = lib.bpf_map_create(mtype, _b(name) if name else ffi.NULL, key_size, value_size, max_entries, opts)
    if ret < 0:
        err = _errno_of(ret)
        tname = map_type_name(mtype)
        if err == _errno.E2BIG:
            _fail("creating %s map %r refused: max_entries %d (or the key/value size) is too big for this kernel; "
                  "for a cpumap use at most the possible CPU count (%d)"
                  % (tname, name, max_entries, possible_cpus()), err)
        if err in (_errno.EPERM, _errno.EACCES):
            _fail("creating %s map %r needs root (CAP_BPF/CAP_SYS_ADMIN)" % (tname, name), err)
        _fail("creating %s map %r (key %d, value %d, max_entries %d, flags 0x%x) refused: check the sizes and "
              "flags this map type requires" % (tname, name, key_size, value_size, max_entries, flags), err)
    return ret
