# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# Where programs run: network namespaces, interfaces, the XDP hook, the TC
# clsact qdisc (created and destroyed: bpf_tc_hook_*) and its filters
# (bpf_xdp_*, bpf_tc_attach/detach/query, setns).


from __future__ import annotations

import errno as _errno
import os
import socket

from .libbpf import (
    LibbpfError,
    _STATE,
    _errno_of,
    _fail,
    _ffi_lib,
    _log_mark,
    _log_since,
)
from .declarations import (
    BPF_TC_F_REPLACE,
    CLONE_NEWNET,
    TC_DIRECTIONS,
    XDP_ATTACH_MODES,
    XDP_FLAGS_REPLACE,
    XDP_FLAGS_UPDATE_IF_NOEXIST,
    XDP_MODE_FLAGS,
)


# --------------------------------------------------------------------------
# Network namespaces and interfaces
# --------------------------------------------------------------------------

def _netns_path(name_or_path: str) -> str:
    if "/" in name_or_path:
        return name_or_path
    return os.path.join("/run/netns", name_or_path)


def enter_netns(name_or_path: str) -> None:
    """Move the calling thread into a network namespace (name under /run/netns, or a path).

    setns() changes only the calling thread: call it in a child process or a
    process that does nothing else in the old namespace. setns(2) needs
    CAP_SYS_ADMIN; a thread already in that namespace (same nsfs device and
    inode as /proc/thread-self/ns/net, e.g. started by ``ip netns exec`` or
    ``nsenter --net``) stays where it is without calling it, so a process
    without CAP_SYS_ADMIN works in its own namespace.
    """
    ffi, lib = _ffi_lib()
    libc = _STATE["libc"]
    path = _netns_path(name_or_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == _errno.ENOENT:
            _fail("network namespace %s does not exist (no %s): create it with `ip netns add %s` or check the name"
                  % (name_or_path, path, os.path.basename(path)), exc.errno)
        _fail("cannot open network namespace %s (%s)" % (name_or_path, path), exc.errno)
    try:
        if _same_netns(fd):
            return
        ret = libc.setns(fd, CLONE_NEWNET)
        if ret != 0:
            err = ffi.errno
            if err == _errno.EINVAL:
                _fail("%s is not a network namespace file: use a name under /run/netns or /proc/PID/ns/net" % path,
                      err)
            if err == _errno.EPERM:
                _fail("entering network namespace %s failed: setns(2) needs CAP_SYS_ADMIN, which this process lacks; "
                      "run it as root, or start it inside that namespace (ip netns exec %s ...), where it needs no "
                      "setns" % (name_or_path, os.path.basename(path)), err)
            _fail("entering network namespace %s failed (needs root: CAP_SYS_ADMIN)" % name_or_path, err)
    finally:
        os.close(fd)


def _same_netns(fd: int) -> bool:
    """True when ``fd`` is the network namespace the calling thread is in (compared by nsfs device and inode)."""
    try:
        want = os.fstat(fd)
        now = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return False
    return (want.st_dev, want.st_ino) == (now.st_dev, now.st_ino)


class netns(object):
    """``with netns("ns1"):`` enter a network namespace and return to the previous one."""

    def __init__(self, name_or_path: str):
        self.target = name_or_path
        self._old = None

    def __enter__(self):
        try:
            self._old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            _fail("cannot remember the current network namespace", exc.errno)
        try:
            enter_netns(self.target)
        except LibbpfError:
            os.close(self._old)
            self._old = None
            raise
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            try:
                enter_netns("/proc/self/fd/%d" % self._old)
            finally:
                os.close(self._old)
                self._old = None
        return False


def ifindex(name: str) -> int:
    """Index of a network interface in the current network namespace."""
    try:
        return socket.if_nametoindex(name)
    except OSError as exc:
        _fail("interface %s does not exist (in this network namespace): check the name with `ip link`" % name,
              exc.errno or _errno.ENODEV)
    except (ValueError, TypeError):
        raise LibbpfError("interface name %r is invalid" % (name,), _errno.EINVAL)


def _ifname(idx: int) -> str:
    try:
        return socket.if_indextoname(idx)
    except OSError:
        return "ifindex %d" % idx


# --------------------------------------------------------------------------
# XDP
# --------------------------------------------------------------------------

def xdp_query(ifindex: int) -> dict:
    """{attach_mode: none|native|skb|hw|multi, prog_id, drv_prog_id, skb_prog_id, hw_prog_id}."""
    ffi, lib = _ffi_lib()
    try:
        socket.if_indextoname(ifindex)
    except OSError:
        _fail("querying XDP on ifindex %d failed: no such interface in this network namespace" % ifindex,
              _errno.ENODEV)
    opts = ffi.new("struct bpf_xdp_query_opts *")
    opts.sz = ffi.sizeof("struct bpf_xdp_query_opts")
    ret = lib.bpf_xdp_query(ifindex, 0, opts)
    if ret < 0:
        err = _errno_of(ret)
        if err in (_errno.ENODEV, _errno.EINVAL):
            _fail("querying XDP on ifindex %d failed: no such interface in this network namespace" % ifindex, err)
        _fail("querying XDP on %s failed" % _ifname(ifindex), err)
    mode = opts.attach_mode
    return {
        "attach_mode": XDP_ATTACH_MODES[mode] if mode < len(XDP_ATTACH_MODES) else "unknown(%d)" % mode,
        "prog_id": opts.prog_id,
        "drv_prog_id": opts.drv_prog_id,
        "skb_prog_id": opts.skb_prog_id,
        "hw_prog_id": opts.hw_prog_id,
    }


def _xdp_mode_flag(mode: str) -> int:
    if mode not in XDP_MODE_FLAGS:
        raise LibbpfError("XDP mode %r is unknown: use native, skb or hw" % (mode,), _errno.EINVAL)
    return XDP_MODE_FLAGS[mode]


def xdp_attach(ifindex: int, prog_fd: int, mode: str = "native", replace_prog_fd: int | None = None,
               only_if_none: bool = False) -> None:
    """Attach an XDP program. replace_prog_fd: atomic swap (XDP_FLAGS_REPLACE),
    fails if that program is not the one attached. only_if_none: fail if any
    program is attached (XDP_FLAGS_UPDATE_IF_NOEXIST)."""
    ffi, lib = _ffi_lib()
    flags = _xdp_mode_flag(mode)
    if only_if_none:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    opts = ffi.new("struct bpf_xdp_attach_opts *")
    opts.sz = ffi.sizeof("struct bpf_xdp_attach_opts")
    if replace_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        opts.old_prog_fd = replace_prog_fd
    mark = _log_mark()
    ret = lib.bpf_xdp_attach(ifindex, prog_fd, flags, opts)
    if ret < 0:
        err = _errno_of(ret)
        said = _log_since(mark, 3)
        kmsg = _kernel_said(said)
        dev = _ifname(ifindex)
        if err in (_errno.EBUSY, _errno.EEXIST):
            if replace_prog_fd is not None:
                _fail("XDP on %s: the attached program is not the one to replace%s: query it with xdp_query and "
                      "pass its fd as replace_prog_fd" % (dev, kmsg), err)
            _fail("XDP on %s: another XDP program is already attached%s: detach it first or attach with "
                  "replace_prog_fd (mode %s)" % (dev, kmsg, mode), err)
        if err == _errno.EOPNOTSUPP:
            _fail("XDP on %s: the driver does not support %s mode%s: use mode skb (generic XDP)"
                  % (dev, mode, kmsg), err)
        if err == _errno.ENODEV:
            _fail("XDP on ifindex %d: no such interface in this network namespace" % ifindex, err)
        if err == _errno.EINVAL and mode in ("hw", "offload"):
            _fail("XDP on %s: hardware offload refused%s: the NIC/driver cannot offload this program; use native "
                  "or skb mode" % (dev, kmsg), err)
        if err == _errno.EINVAL:
            _fail("XDP on %s: attach refused%s: the program is not of XDP type, or the MTU/driver settings do not "
                  "allow native XDP (try mode skb)" % (dev, kmsg), err)
        _fail("XDP attach on %s failed%s" % (dev, kmsg), err)


def xdp_detach(ifindex: int, mode: str = "native", expected_prog_fd: int | None = None) -> None:
    """Detach the XDP program of a mode; with expected_prog_fd only if it is that program."""
    ffi, lib = _ffi_lib()
    flags = _xdp_mode_flag(mode)
    opts = ffi.new("struct bpf_xdp_attach_opts *")
    opts.sz = ffi.sizeof("struct bpf_xdp_attach_opts")
    if expected_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        opts.old_prog_fd = expected_prog_fd
    mark = _log_mark()
    ret = lib.bpf_xdp_detach(ifindex, flags, opts)
    if ret < 0:
        err = _errno_of(ret)
        said = _log_since(mark, 3)
        kmsg = _kernel_said(said)
        if err in (_errno.EEXIST, _errno.EBUSY) and expected_prog_fd is not None:
            _fail("XDP on %s: the attached program is not the expected one, nothing detached%s"
                  % (_ifname(ifindex), kmsg), err)
        _fail("XDP detach (%s mode) on %s failed%s" % (mode, _ifname(ifindex), kmsg), err)


# --------------------------------------------------------------------------
# TC (clsact + cls_bpf direct action)
# --------------------------------------------------------------------------

def _tc_hook(ifindex: int, direction: str):
    ffi = _STATE["ffi"]
    if direction not in TC_DIRECTIONS:
        raise LibbpfError("TC direction %r is unknown: use egress or ingress" % (direction,), _errno.EINVAL)
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = TC_DIRECTIONS[direction]
    return hook


_TC_ABSENT_MESSAGES = ("Invalid handle", "Parent Qdisc doesn't exist", "Cannot find specified qdisc",
                       "Cannot find specified filter chain", "Filter with specified priority/protocol not found")


def _kernel_said(said: list) -> str:
    if not said:
        return ""
    return " (%s)" % " | ".join(m[len("libbpf: "):] if m.startswith("libbpf: ") else m for m in said)


def _tc_check_filter_id(handle: int, priority: int) -> None:
    if not handle or not priority:
        raise LibbpfError("TC filters are addressed by a non-zero handle and priority (got handle 0x%x, priority 0x%x)"
                          % (handle, priority), _errno.EINVAL)


def _tc_opts(handle: int = 0, priority: int = 0, prog_fd: int = 0, flags: int = 0):
    ffi = _STATE["ffi"]
    if not 0 <= priority <= 0xFFFF:
        raise LibbpfError("TC priority 0x%x is out of range: use 1..0xFFFF" % priority, _errno.EINVAL)
    opts = ffi.new("struct bpf_tc_opts *")
    opts.sz = ffi.sizeof("struct bpf_tc_opts")
    opts.handle = handle
    opts.priority = priority
    opts.prog_fd = prog_fd
    opts.flags = flags
    return opts


def tc_hook_create(ifindex: int, direction: str = "egress") -> bool:
    """Create the clsact qdisc; True if created, False if it existed."""
    ffi, lib = _ffi_lib()
    hook = _tc_hook(ifindex, direction)
    mark = _log_mark()
    ret = lib.bpf_tc_hook_create(hook)
    if ret < 0:
        err = _errno_of(ret)
        if err == _errno.EEXIST:
            return False
        said = _log_since(mark, 3)
        _fail("creating the clsact qdisc on %s failed%s: another root/clsact qdisc may be in the way (tc qdisc show "
              "dev %s)" % (_ifname(ifindex), _kernel_said(said), _ifname(ifindex)), err)
    return True


def tc_hook_destroy(ifindex: int, direction: str = "both") -> bool:
    """direction "both" removes the clsact qdisc; "egress"/"ingress" flush that hook's filters.
    False when there was nothing to remove."""
    ffi, lib = _ffi_lib()
    hook = _tc_hook(ifindex, direction)
    mark = _log_mark()
    ret = lib.bpf_tc_hook_destroy(hook)
    if ret < 0:
        err = _errno_of(ret)
        said = _log_since(mark, 3)
        if err == _errno.ENOENT or (err == _errno.EINVAL and any(
                m in " ".join(said) for m in _TC_ABSENT_MESSAGES)):
            return False
        _fail("removing the TC %s hook on %s failed%s" % (direction, _ifname(ifindex), _kernel_said(said)), err)
    return True


def tc_attach(ifindex: int, direction: str, prog_fd: int, handle: int, priority: int,
              replace: bool = False) -> int:
    """Attach a cls_bpf (direct-action) filter; returns the attached program id.
    replace=True swaps atomically (BPF_TC_F_REPLACE)."""
    ffi, lib = _ffi_lib()
    hook = _tc_hook(ifindex, direction)
    if direction == "both":
        raise LibbpfError("TC attach needs one direction: egress or ingress", _errno.EINVAL)
    opts = _tc_opts(handle, priority, prog_fd, BPF_TC_F_REPLACE if replace else 0)
    mark = _log_mark()
    ret = lib.bpf_tc_attach(hook, opts)
    if ret < 0:
        err = _errno_of(ret)
        said = _log_since(mark, 3)
        kmsg = _kernel_said(said)
        dev = _ifname(ifindex)
        if err == _errno.EEXIST:
            _fail("a TC %s filter already exists on %s at handle 0x%x priority 0x%x: pass replace=True to swap it"
                  % (direction, dev, handle, priority), err)
        if err == _errno.ENOENT or (err == _errno.EINVAL and "qdisc" in kmsg.lower()):
            _fail("TC %s attach on %s failed: no clsact qdisc; call tc_hook_create first%s" % (direction, dev, kmsg),
                  err)
        _fail("TC %s attach on %s (handle 0x%x priority 0x%x) failed%s" % (direction, dev, handle, priority, kmsg),
              err)
    return opts.prog_id


def _tc_filter_op(call: str, ifindex: int, direction: str, handle: int, priority: int, what):
    """Run bpf_tc_query/bpf_tc_detach on one filter; None when there is none (or no clsact qdisc).
    ``what()`` words the failure (called only on failure)."""
    _ffi, lib = _ffi_lib()
    _tc_check_filter_id(handle, priority)
    opts = _tc_opts(handle, priority)
    ret = getattr(lib, call)(_tc_hook(ifindex, direction), opts)
    if ret < 0:
        err = _errno_of(ret)
        if err in (_errno.ENOENT, _errno.EINVAL):
            return None
        _fail(what(), err)
    return opts


def tc_query(ifindex: int, direction: str, handle: int, priority: int) -> int | None:
    """Program id of the filter at handle/priority, or None (no filter, or no clsact qdisc)."""
    opts = _tc_filter_op("bpf_tc_query", ifindex, direction, handle, priority,
                         lambda: "querying TC %s on %s failed" % (direction, _ifname(ifindex)))
    return None if opts is None else opts.prog_id


def tc_detach(ifindex: int, direction: str, handle: int, priority: int) -> bool:
    """Remove the filter at handle/priority; False when there was none."""
    return _tc_filter_op("bpf_tc_detach", ifindex, direction, handle, priority,
                         lambda: "removing the TC %s filter handle 0x%x priority 0x%x on %s failed"
                         % (direction, handle, priority, _ifname(ifindex))) is not None


# --------------------------------------------------------------------------
# What holds a hook: bpf_links (XDP) and the qdisc in the clsact slot
# --------------------------------------------------------------------------

BPF_LINK_TYPE_XDP = 6          # enum bpf_link_type (linux/bpf.h)
LINK_TYPE_NAMES = {1: "raw_tracepoint", 2: "tracing", 3: "cgroup", 4: "iter", 5: "netns", 6: "xdp",
                   7: "perf_event", 8: "kprobe_multi", 9: "struct_ops", 10: "netfilter", 11: "tcx"}


def link_info_by_fd(fd: int) -> dict:
    """{"id", "type", "type_name", "prog_id", "ifindex" (XDP links, else None)} of a bpf_link fd."""
    ffi, lib = _ffi_lib()
    info = ffi.new("struct bpf_link_info *")
    size = ffi.new("__u32 *", ffi.sizeof("struct bpf_link_info"))
    ret = lib.bpf_obj_get_info_by_fd(fd, info, size)
    if ret < 0:
        _fail("reading bpf_link info of fd %d failed" % fd, _errno_of(ret))
    return {"id": info.id, "type": info.type, "type_name": LINK_TYPE_NAMES.get(info.type, str(info.type)),
            "prog_id": info.prog_id, "ifindex": info.xdp.ifindex if info.type == BPF_LINK_TYPE_XDP else None}


def xdp_links(ifindex: int, prog_id: int | None = None) -> list:
    """The XDP bpf_links on ``ifindex`` of this network namespace (holding ``prog_id`` when given).

    A program attached through a bpf_link (xdp-loader, cilium/ebpf, libbpf's
    bpf_program__attach_xdp) cannot be replaced or detached through netlink
    (EBUSY); only the link can let it go. Needs CAP_SYS_ADMIN (link ids)."""
    ffi, lib = _ffi_lib()
    out = []
    cur = ffi.new("__u32 *", 0)
    while lib.bpf_link_get_next_id(cur[0], cur) == 0:
        fd = lib.bpf_link_get_fd_by_id(cur[0])
        if fd < 0:
            continue   # gone meanwhile
        try:
            info = link_info_by_fd(fd)
        finally:
            os.close(fd)
        if info["type"] == BPF_LINK_TYPE_XDP and info["ifindex"] == ifindex and \
                (prog_id is None or info["prog_id"] == prog_id):
            out.append(info)
    return out


def link_pins(root: str, ids) -> dict:
    """{link id: pin path} for the pinned bpf_links among ``ids`` below the bpffs folder ``root``."""
    from .libbpf import _obj_get, pinned_kind
    want, found = set(ids), {}
    if not want or not os.path.isdir(root):
        return found
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path) or pinned_kind(path) != "link":
                continue
            fd = _obj_get(path)
            try:
                lid = link_info_by_fd(fd)["id"]
            finally:
                os.close(fd)
            if lid in want:
                found[lid] = path
    return found


def link_detach(link_id: int) -> None:
    """Detach a bpf_link from its hook (BPF_LINK_DETACH, kernel >= 5.9); the link object stays, defunct."""
    ffi, lib = _ffi_lib()
    fd = lib.bpf_link_get_fd_by_id(link_id)
    if fd < 0:
        _fail("opening bpf_link %d failed: it is gone, or this needs CAP_SYS_ADMIN" % link_id, _errno_of(fd))
    try:
        ret = lib.bpf_link_detach(fd)
        if ret < 0:
            err = _errno_of(ret)
            if err in (_errno.EINVAL, _errno.EOPNOTSUPP):
                _fail("detaching bpf_link %d failed: this kernel cannot detach links (BPF_LINK_DETACH needs >= 5.9); "
                      "remove it with the loader that made it" % link_id, err)
            _fail("detaching bpf_link %d failed" % link_id, err)
    finally:
        os.close(fd)
