# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# The one place the collection talks to libbpf. It uses cffi in ABI mode
# (``ffi.dlopen("libbpf.so.1")``), so targets need the libbpf1 runtime and
# python3-cffi, never a compiler. Structures are declared exactly as libbpf 1.1
# (/usr/include/bpf/*.h) and the Linux UAPI (linux/bpf.h, linux/btf.h) define
# them; every ``*_opts`` structure gets its ``sz`` field set to its size.
#
# Conventions: every failure raises LibbpfError(msg, errno) whose message names
# the problem and the fix; no raw cffi error or OSError escapes. File
# descriptors this module opens are closed before returning, except the ones
# handed to the caller (map_create, LoadedObject.*_fd, prog fds of a loaded
# object), which the caller owns.


from __future__ import annotations

import errno as _errno
import hashlib
import importlib.util
import os
import stat
import sys
import traceback
try:
    import cffi
    HAS_CFFI = True
    CFFI_IMP_ERR = None
except ImportError:
    HAS_CFFI = False
    CFFI_IMP_ERR = traceback.format_exc()

from .declarations import (
    CDEF,
    ENOTSUPP,
    LIBBPF_DEBUG,
    MAP_TYPES,
    MAP_TYPE_NAMES,
    PROG_TYPE_NAMES,
)


class LibbpfError(Exception):
    """A libbpf or kernel operation failed.

    ``msg`` names the problem and the fix; ``errno`` is the positive errno
    value when the failure came from the kernel or libc, else None.
    """

    def __init__(self, msg: str, errno: int | None = None):
        super().__init__(msg)
        self.msg = msg
        self.errno = errno

    def __str__(self) -> str:
        return self.msg


_STATE: dict = {}          # "ffi", "lib", "libc", "print_cb"


_LOG: list = []            # [(seq, level, text)] captured libbpf messages


_LOG_SEQ = [0]


_LOG_MAX = 400


def _capture_print(level, fmt, ap):
    """libbpf print callback: keep warnings and info messages, drop debug."""
    try:
        if level >= LIBBPF_DEBUG:
            return 0
        ffi, libc = _STATE["ffi"], _STATE["libc"]
        buf = ffi.new("char[]", 2048)
        libc.vsnprintf(buf, 2048, fmt, ap)
        text = ffi.string(buf).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                _LOG_SEQ[0] += 1
                _LOG.append((_LOG_SEQ[0], level, line.rstrip()))
        if len(_LOG) > _LOG_MAX:
            del _LOG[:len(_LOG) - _LOG_MAX]
    except Exception:  # never let an exception cross the C boundary
        pass
    return 0


CFFI_CACHE_DIR = "/var/cache/lqos-bpf/cffi"


def _trusted(path: str) -> bool:
    """A cache file (and its folder) that only this user could have written."""
    try:
        for p in (os.path.dirname(path), path):
            st = os.lstat(p)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return False
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _cached_ffi(cache_dir: str = CFFI_CACHE_DIR):
    """The FFI of CDEF from a cffi out-of-line ABI module cached on this host, or None.

    Parsing CDEF costs about 150 ms at every module start (pycparser); cffi's
    out-of-line ABI mode writes the parsed declarations as a small Python
    module once (no compiler), which later starts import in about 1 ms. The
    file name carries a hash of CDEF, the cffi and the Python version, so a
    change of any makes a new one. Only a file owned by this user and writable
    by nobody else is imported."""
    key = hashlib.sha256(("%s|%d.%d|%s" % (cffi.__version__, sys.version_info[0], sys.version_info[1],
                                           CDEF)).encode("utf-8")).hexdigest()[:16]
    name = "_lqos_bpf_cffi_%s" % key
    path = os.path.join(cache_dir, name + ".py")
    try:
        if not _trusted(path):
            if os.environ.get("LQOS_BPF_READ_ONLY_CACHES"):   # check mode: parse in the process, write nothing
                return None
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            builder = cffi.FFI()
            builder.cdef(CDEF)
            builder.set_source(name, None, compiler_verbose=0)   # cffi prints "generating" otherwise
            tmp = "%s.%d.tmp" % (path, os.getpid())
            builder.emit_python_code(tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
            if not _trusted(path):
                return None
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        # No __pycache__ next to the cache file: a check-mode run reads it and must write nothing.
        dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            spec.loader.exec_module(mod)
        finally:
            sys.dont_write_bytecode = dont_write
        return mod.ffi
    except Exception:  # pylint: disable=broad-except
        return None    # a cache is only an optimisation: parse CDEF in the process instead


def _init():
    if not HAS_CFFI:
        raise LibbpfError("python cffi is not installed: install the Debian package python3-cffi "
                          "(or `pip install cffi`)\n%s" % CFFI_IMP_ERR)
    ffi = _cached_ffi()
    if ffi is None:
        ffi = cffi.FFI()
        ffi.cdef(CDEF)
    try:
        lib = ffi.dlopen("libbpf.so.1")
    except OSError as exc:
        raise LibbpfError("libbpf.so.1 not found: install the Debian package libbpf1 (%s)" % exc)
    try:
        libc = ffi.dlopen(None)
    except OSError:
        try:
            libc = ffi.dlopen("libc.so.6")
        except OSError as exc:
            raise LibbpfError("cannot open the C library: %s" % exc)
    try:
        major, minor = lib.libbpf_major_version(), lib.libbpf_minor_version()
    except AttributeError:
        raise LibbpfError("libbpf.so.1 is older than 1.0: install libbpf >= 1.0 (Debian 12: libbpf1)")
    if major < 1:
        raise LibbpfError("libbpf %d.%d is too old: install libbpf >= 1.0 (Debian 12: libbpf1)" % (major, minor))
    _STATE.update(ffi=ffi, lib=lib, libc=libc)
    # Route libbpf's messages into _LOG instead of stderr; if callbacks are not
    # possible here (W^X hardening), silence libbpf instead.
    try:
        cb = ffi.callback("libbpf_print_fn_t", _capture_print)
        _STATE["print_cb"] = cb
        lib.libbpf_set_print(cb)
    except Exception:
        lib.libbpf_set_print(ffi.NULL)


def _ffi_lib():
    """The single, lazily created (ffi, lib) pair."""
    if "lib" not in _STATE:
        _init()
    return _STATE["ffi"], _STATE["lib"]


def _log_mark() -> int:
    return _LOG_SEQ[0]


def _log_since(mark: int, limit: int = 20) -> list:
    lines = [text for seq, level, text in _LOG if seq > mark]
    return lines[-limit:]


def libbpf_messages(limit: int = 50) -> list:
    """The last libbpf warnings/info messages (libbpf never prints to stderr here)."""
    return [text for seq, level, text in _LOG[-limit:]]


def _strerror(err: int) -> str:
    if err == ENOTSUPP:
        return "operation not supported (ENOTSUPP)"
    if err >= 4000 and "lib" in _STATE:   # libbpf's own codes (LIBBPF_ERRNO__*): only libbpf can name them
        buf = _STATE["ffi"].new("char[]", 256)
        if _STATE["lib"].libbpf_strerror(err, buf, 256) == 0:
            return "libbpf: %s" % _STATE["ffi"].string(buf).decode("utf-8", "replace")
    try:
        return os.strerror(err)
    except (ValueError, OverflowError):
        return "error %d" % err


def _errno_of(ret: int) -> int:
    """libbpf >= 1.0 returns -errno and also sets errno."""
    if ret < 0:
        return -ret
    ffi = _STATE["ffi"]
    return ffi.errno or _errno.EIO


def _fail(msg: str, err: int | None):
    if err:
        msg = "%s [errno %d: %s]" % (msg, err, _strerror(err))
    raise LibbpfError(msg, err)


def _b(s) -> bytes:
    return s if isinstance(s, bytes) else os.fsencode(s)


def _s(cstr) -> str | None:
    ffi = _STATE["ffi"]
    if cstr == ffi.NULL:
        return None
    return ffi.string(cstr).decode("utf-8", "replace")


def map_type_name(map_type: int) -> str:
    if 0 <= map_type < len(MAP_TYPE_NAMES):
        return MAP_TYPE_NAMES[map_type]
    return "unknown(%d)" % map_type


def prog_type_name(prog_type: int) -> str:
    if 0 <= prog_type < len(PROG_TYPE_NAMES):
        return PROG_TYPE_NAMES[prog_type]
    return "unknown(%d)" % prog_type


def map_type_id(type_name_or_int) -> int:
    """A map type number from a name ("lpm_trie", "BPF_MAP_TYPE_LPM_TRIE") or number."""
    if isinstance(type_name_or_int, int):
        return type_name_or_int
    name = str(type_name_or_int).strip().lower()
    if name.startswith("bpf_map_type_"):
        name = name[len("bpf_map_type_"):]
    if name not in MAP_TYPES:
        raise LibbpfError("unknown map type %r: use one of %s" % (type_name_or_int, ", ".join(MAP_TYPE_NAMES[1:])))
    return MAP_TYPES[name]


# --------------------------------------------------------------------------
# Library facts
# --------------------------------------------------------------------------

def libbpf_version() -> str:
    ffi, lib = _ffi_lib()
    return "%d.%d" % (lib.libbpf_major_version(), lib.libbpf_minor_version())


def probe_prog_type(type_name: str) -> bool:
    """Does the running kernel load programs of this type? (libbpf loads a trivial one.)"""
    ffi, lib = _ffi_lib()
    try:
        type_id = PROG_TYPE_NAMES.index(type_name)
    except ValueError:
        raise LibbpfError("unknown program type %r" % type_name)
    ret = lib.libbpf_probe_bpf_prog_type(type_id, ffi.NULL)
    if ret < 0:
        _fail("probing program type %s failed" % type_name, -ret)
    return ret == 1


def possible_cpus() -> int:
    ffi, lib = _ffi_lib()
    n = lib.libbpf_num_possible_cpus()
    if n <= 0:
        _fail("cannot read the number of possible CPUs (/sys/devices/system/cpu/possible)", -n or None)
    return n


# --------------------------------------------------------------------------
# File descriptors
# --------------------------------------------------------------------------

def close(fd: int) -> None:
    """Close a file descriptor this module handed out."""
    try:
        os.close(fd)
    except OSError as exc:
        _fail("closing fd %d failed: it was already closed or never opened" % fd, exc.errno)


def _obj_get(path: str) -> int:
    ffi, lib = _ffi_lib()
    fd = lib.bpf_obj_get(_b(path))
    if fd < 0:
        err = _errno_of(fd)
        if err == _errno.ENOENT:
            _fail("%s does not exist or is not a pinned BPF object: check the path (pins live on a bpffs such "
                  "as /sys/fs/bpf)" % path, err)
        if err in (_errno.EPERM, _errno.EACCES):
            _fail("permission denied opening pinned object %s: run as root (needs CAP_BPF/CAP_SYS_ADMIN)" % path,
                  err)
        if err == _errno.EINVAL:
            _fail("%s is not on a bpffs: pinned objects live on a bpffs (mount -t bpf bpf /sys/fs/bpf)" % path, err)
        _fail("opening pinned object %s failed" % path, err)
    return fd


class _ObjFd(object):
    """``with _ObjFd(path_or_fd) as fd``: opens a pin and closes it, or borrows an int fd."""

    def __init__(self, path_or_fd):
        self.path_or_fd = path_or_fd
        self.fd = -1
        self.own = False

    def __enter__(self) -> int:
        if isinstance(self.path_or_fd, int):
            self.fd = self.path_or_fd
        else:
            self.fd = _obj_get(self.path_or_fd)
            self.own = True
        return self.fd

    def __exit__(self, *exc):
        if self.own and self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        return False


def obj_pin(fd: int, path: str) -> None:
    ffi, lib = _ffi_lib()
    ret = lib.bpf_obj_pin(fd, _b(path))
    if ret < 0:
        err = _errno_of(ret)
        if err == _errno.EEXIST:
            _fail("cannot pin at %s: something is already pinned there; remove it first (or use the "
                  "lqos.bpf.pinned_maps module for maps)" % path, err)
        if err == _errno.ENOENT:
            _fail("cannot pin at %s: the parent directory does not exist; create it on the bpffs first" % path, err)
        if err in (_errno.EINVAL, _errno.EPERM):
            _fail("cannot pin at %s: the path is not on a bpffs (mount -t bpf bpf DIR) or fd %d is not a "
                  "BPF object" % (path, fd), err)
        _fail("pinning fd %d at %s failed" % (fd, path), err)


def _fd_kind_from_fdinfo(fd: int) -> str | None:
    try:
        with open("/proc/self/fdinfo/%d" % fd, "r") as fh:
            text = fh.read()
    except OSError:
        return None
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        if key == "map_type":
            return "map"
        if key == "prog_type":
            return "prog"
        if key == "link_type":
            return "link"
    return None


def fd_kind(fd: int) -> str | None:
    """"map", "prog" or "link" for a BPF file descriptor, else None (from /proc/self/fdinfo)."""
    return _fd_kind_from_fdinfo(fd)


def _fast_fd_kind(fd: int) -> str | None:
    # anon inode names: bpf-map, bpf-prog, bpf_link
    try:
        target = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        target = ""
    if target == "anon_inode:bpf-map":
        return "map"
    if target == "anon_inode:bpf-prog":
        return "prog"
    if target == "anon_inode:bpf_link":
        return "link"
    return _fd_kind_from_fdinfo(fd)


def pinned_kind(path: str) -> str | None:
    """"map", "prog" or "link" for a pinned BPF object; None for anything else.

    None (no exception) for a missing path, a directory, or a bpffs entry that
    is not a pinned object, such as a fresh bpffs's ``maps.debug`` /
    ``progs.debug`` (bpf_obj_get fails with ENOENT on those).
    """
    ffi, lib = _ffi_lib()
    if not os.path.lexists(path) or os.path.isdir(path):
        return None
    fd = lib.bpf_obj_get(_b(path))
    if fd < 0:
        err = _errno_of(fd)
        if err in (_errno.ENOENT, _errno.EINVAL, _errno.ENOTDIR, _errno.ELOOP):
            return None
        if err in (_errno.EPERM, _errno.EACCES):
            _fail("permission denied opening %s: run as root (needs CAP_BPF/CAP_SYS_ADMIN)" % path, err)
        _fail("opening %s failed" % path, err)
    try:
        return _fd_kind_from_fdinfo(fd)
    finally:
        os.close(fd)
