# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
"""A BPF object loaded into the kernel (load_object returns it): its programs and maps by name, their fds, info
and pins, a program attached through libbpf's auto-attach (a kprobe) as a bpf_link; close() releases what it
holds, a pinned program, map or link stays."""

from __future__ import annotations

import errno as _errno

from .libbpf import (
    LibbpfError,
    _STATE,
    _b,
    _errno_of,
    _fail,
    _log_mark,
    _log_since,
    _s,
)
from .open_object import (
    _Closable,
    _internal_section,
    _iter_maps,
    _iter_progs,
)
from .maps import prog_info_by_fd


class LoadedObject(_Closable):
    """A loaded BPF object (bpf_object__load succeeded); a context manager.

    Programs stay in the kernel after close() only when attached or pinned;
    pinned maps stay pinned.
    """

    def __init__(self, obj, path: str, pin_root: str | None, log_bufs: list):
        self._obj = obj
        self.path = path
        self.pin_root = pin_root
        self._log_bufs = log_bufs
        lib = _STATE["lib"]
        self._progs = {_s(lib.bpf_program__name(p)): p for p in _iter_progs(obj)}
        self._maps = {_s(lib.bpf_map__name(m)): m for m in _iter_maps(obj)}

    def _check(self):
        if self._obj is None:
            raise LibbpfError("BPF object %s is closed: load it again" % self.path)

    @property
    def programs(self) -> list:
        return list(self._progs)

    @property
    def maps(self) -> list:
        return list(self._maps)

    def _prog(self, name: str):
        self._check()
        if name not in self._progs:
            raise LibbpfError("program %s is not in %s: it has %s" % (name, self.path, ", ".join(self._progs)),
                              _errno.ENOENT)
        return self._progs[name]

    def _map(self, name: str):
        self._check()
        if name in self._maps:
            return self._maps[name]
        lib = _STATE["lib"]
        for mname, m in self._maps.items():  # ".rodata" -> "<obj>.rodata"
            if lib.bpf_map__is_internal(m) and _internal_section(mname) == name:
                return m
        raise LibbpfError("map %s is not in %s: it has %s" % (name, self.path, ", ".join(self._maps)), _errno.ENOENT)

    def prog_fd(self, name: str) -> int:
        """The program's fd (owned by the object: valid until close())."""
        fd = _STATE["lib"].bpf_program__fd(self._prog(name))
        if fd < 0:
            raise LibbpfError("program %s of %s was not loaded (autoload off?)" % (name, self.path), _errno.ENOENT)
        return fd

    def prog_info(self, name: str) -> dict:
        return prog_info_by_fd(self.prog_fd(name))

    def map_fd(self, name: str) -> int:
        """A map's fd (owned by the object). Internal maps also answer to their section (".rodata")."""
        fd = _STATE["lib"].bpf_map__fd(self._map(name))
        if fd < 0:
            raise LibbpfError("map %s of %s has no fd (not created)" % (name, self.path), _errno.ENOENT)
        return fd

    def map_pin_path(self, name: str) -> str | None:
        return _s(_STATE["lib"].bpf_map__pin_path(self._map(name)))

    def pin_program(self, name: str, path: str) -> None:
        ret = _STATE["lib"].bpf_program__pin(self._prog(name), _b(path))
        if ret < 0:
            _fail("pinning program %s at %s failed: the path must be on a bpffs and free" % (name, path),
                  _errno_of(ret))

    def attach_program(self, name: str, ifindex: int | None = None) -> "Link":
        """Attach a program through a bpf_link, the way its section says (``lsm/...``, ``iter/...``, ...), or to
        the XDP hook of ``ifindex`` (bpf_program__attach_xdp, as xdp-loader and cilium/ebpf do). The link
        holds the program until it is destroyed or, when pinned, unpinned."""
        ffi, lib = _STATE["ffi"], _STATE["lib"]
        prog = self._prog(name)
        mark = _log_mark()
        link = lib.bpf_program__attach_xdp(prog, ifindex) if ifindex is not None else lib.bpf_program__attach(prog)
        if link == ffi.NULL:
            err = ffi.errno
            said = _log_since(mark, 5)
            _fail("attaching program %s of %s through a bpf_link failed%s" % (
                name, self.path, ("; libbpf said: " + " | ".join(said)) if said else ""), err)
        return Link(link, name)

    def close(self) -> None:
        if self._obj is not None:
            _STATE["lib"].bpf_object__close(self._obj)
            self._obj = None
            self._log_bufs = []


class Link(_Closable):
    """A bpf_link made by LoadedObject.attach_program; close() destroys it (a pinned link stays)."""

    def __init__(self, link, program: str):
        self._link = link
        self.program = program

    @property
    def fd(self) -> int:
        return _STATE["lib"].bpf_link__fd(self._link)

    def pin(self, path: str) -> None:
        ret = _STATE["lib"].bpf_link__pin(self._link, _b(path))
        if ret < 0:
            _fail("pinning the link of %s at %s failed: the path must be on a bpffs and free" % (self.program, path),
                  _errno_of(ret))

    def disconnect(self) -> None:
        """Let close() free the handle without detaching: for a pinned link, or a kprobe that libbpf attached
        through a legacy event it would otherwise remove on destroy."""
        if self._link is not None:
            _STATE["lib"].bpf_link__disconnect(self._link)

    def close(self) -> None:
        if self._link is not None:
            _STATE["lib"].bpf_link__destroy(self._link)
            self._link = None
