# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
"""BPF object files opened through libbpf (never loaded here): the handle base class every libbpf handle uses
(close on exit and at finalisation), opening an object with its pin root, and its maps and programs as plain
definitions (name, type, sizes, section)."""

from __future__ import annotations

import errno as _errno
import os

from .libbpf import (
    _STATE,
    _b,
    _fail,
    _ffi_lib,
    _log_mark,
    _log_since,
    _s,
    map_type_name,
    prog_type_name,
)


class _Closable(object):
    """Context manager and finaliser around ``close()`` (which must be idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # pylint: disable=broad-except
            # never raise from a finaliser
            pass


# --------------------------------------------------------------------------
# Objects (opened, never loaded here)
# --------------------------------------------------------------------------

def _open_object(path: str, pin_root: str | None, raise_on_error: bool = True):
    ffi, lib = _ffi_lib()
    if not os.path.exists(path):
        if not raise_on_error:
            return None
        _fail("BPF object %s does not exist: build it first" % path, _errno.ENOENT)
    opts = ffi.new("struct bpf_object_open_opts *")
    opts.sz = ffi.sizeof("struct bpf_object_open_opts")
    pin_root_c = None
    if pin_root:
        pin_root_c = ffi.new("char[]", _b(pin_root))
        opts.pin_root_path = pin_root_c
    mark = _log_mark()
    obj = lib.bpf_object__open_file(_b(path), opts)
    if obj == ffi.NULL:
        err = ffi.errno
        if not raise_on_error:
            return None
        said = _log_since(mark, 10)
        _fail("opening BPF object %s failed: it is not a valid BPF ELF object (build it with clang -g -O2 "
              "-target bpf)%s" % (path, ("; libbpf said: " + " | ".join(said)) if said else ""), err)
    return obj


def _iter_maps(obj):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    m = lib.bpf_object__next_map(obj, ffi.NULL)
    while m != ffi.NULL:
        yield m
        m = lib.bpf_object__next_map(obj, m)


def _iter_progs(obj):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    p = lib.bpf_object__next_program(obj, ffi.NULL)
    while p != ffi.NULL:
        yield p
        p = lib.bpf_object__next_program(obj, p)


def _internal_section(map_name: str) -> str:
    """".rodata" for "lqos_ker.rodata"; ".rodata.foo" for ".rodata.foo"."""
    i = map_name.find(".")
    return map_name[i:] if i >= 0 else map_name


def _map_def(m) -> dict:
    lib = _STATE["lib"]
    t = lib.bpf_map__type(m)
    pin_path = _s(lib.bpf_map__pin_path(m))
    return {
        "name": _s(lib.bpf_map__name(m)),
        "type": t,
        "type_name": map_type_name(t),
        "key_size": lib.bpf_map__key_size(m),
        "value_size": lib.bpf_map__value_size(m),
        "max_entries": lib.bpf_map__max_entries(m),
        "flags": lib.bpf_map__map_flags(m),
        "map_extra": lib.bpf_map__map_extra(m),
        "pinning": pin_path is not None,
        "pin_path": pin_path,
    }


def _prog_def(p) -> dict:
    lib = _STATE["lib"]
    t = lib.bpf_program__type(p)
    return {
        "name": _s(lib.bpf_program__name(p)),
        "section": _s(lib.bpf_program__section_name(p)),
        "type": t,
        "type_name": prog_type_name(t),
        "autoload": bool(lib.bpf_program__autoload(p)),
    }
