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
import os
import re
import socket
import traceback

try:
    import cffi
    HAS_CFFI = True
    CFFI_IMP_ERR = None
except ImportError:
    HAS_CFFI = False
    CFFI_IMP_ERR = traceback.format_exc()


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


# --------------------------------------------------------------------------
# Constants (linux/bpf.h, linux/if_link.h, linux/btf.h, libbpf.h)
# --------------------------------------------------------------------------

# enum bpf_map_type, in order; names as bpftool/libbpf print them.
MAP_TYPE_NAMES = (
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash",
    "percpu_array", "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash",
    "lpm_trie", "array_of_maps", "hash_of_maps", "devmap", "sockmap", "cpumap",
    "xskmap", "sockhash", "cgroup_storage", "reuseport_sockarray",
    "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter",
    "user_ringbuf", "cgrp_storage", "arena",
)
MAP_TYPES = {name: i for i, name in enumerate(MAP_TYPE_NAMES)}

# enum bpf_prog_type, in order.
PROG_TYPE_NAMES = (
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint",
    "xdp", "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out",
    "lwt_xmit", "sock_ops", "sk_skb", "cgroup_device", "sk_msg",
    "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2",
    "sk_reuseport", "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable",
    "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm", "sk_lookup",
    "syscall", "netfilter",
)

PERCPU_MAP_TYPES = frozenset((MAP_TYPES["percpu_hash"], MAP_TYPES["percpu_array"],
                              MAP_TYPES["lru_percpu_hash"], MAP_TYPES["percpu_cgroup_storage"]))
# Map types whose keys cannot be walked with BPF_MAP_GET_NEXT_KEY.
NO_ITERATION_MAP_TYPES = frozenset(MAP_TYPES[n] for n in (
    "queue", "stack", "ringbuf", "user_ringbuf", "bloom_filter", "sk_storage",
    "inode_storage", "task_storage", "cgrp_storage", "arena", "struct_ops"))

BPF_OBJ_NAME_LEN = 16
BPF_F_NO_PREALLOC = 1 << 0
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "drv": XDP_FLAGS_DRV_MODE,
                  "skb": XDP_FLAGS_SKB_MODE, "generic": XDP_FLAGS_SKB_MODE,
                  "hw": XDP_FLAGS_HW_MODE, "offload": XDP_FLAGS_HW_MODE}
XDP_ATTACH_MODES = ("none", "native", "skb", "hw", "multi")

BPF_TC_INGRESS, BPF_TC_EGRESS = 1 << 0, 1 << 1
BPF_TC_F_REPLACE = 1 << 0
TC_DIRECTIONS = {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS,
                 "both": BPF_TC_INGRESS | BPF_TC_EGRESS}

CLONE_NEWNET = 0x40000000
ENOTSUPP = 524  # kernel-internal "operation not supported", leaks to user space

BTF_KIND_NAMES = ("void", "int", "ptr", "array", "struct", "union", "enum", "fwd",
                  "typedef", "volatile", "const", "restrict", "func", "func_proto",
                  "var", "datasec", "float", "decl_tag", "type_tag", "enum64")
(BTF_KIND_UNKN, BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT,
 BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_FWD, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE,
 BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, BTF_KIND_VAR,
 BTF_KIND_DATASEC, BTF_KIND_FLOAT, BTF_KIND_DECL_TAG, BTF_KIND_TYPE_TAG,
 BTF_KIND_ENUM64) = range(20)
_BTF_MODIFIERS = frozenset((BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST,
                            BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG))
_INTERNAL_SECTIONS = (".rodata", ".data", ".bss", ".kconfig")

# --------------------------------------------------------------------------
# C declarations
# --------------------------------------------------------------------------

CDEF = r"""
typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct btf;
struct btf_ext;

/* libbpf.h: the va_list argument is received and forwarded as a pointer. */
typedef int (*libbpf_print_fn_t)(int level, const char *fmt, void *ap);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
int libbpf_probe_bpf_prog_type(int prog_type, const void *opts);
__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
int libbpf_num_possible_cpus(void);
const char *libbpf_bpf_map_type_str(int t);
const char *libbpf_bpf_prog_type_str(int t);

struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    bool relaxed_maps;
    const char *pin_root_path;
    __u32 :32;
    const char *kconfig;
    const char *btf_custom_path;
    char *kernel_log_buf;
    size_t kernel_log_size;
    __u32 kernel_log_level;
    size_t :0;
};

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
int bpf_program__pin(struct bpf_program *prog, const char *path);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
__u32 bpf_map__map_flags(const struct bpf_map *map);
__u64 bpf_map__map_extra(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
bool bpf_map__is_internal(const struct bpf_map *map);
const char *bpf_map__pin_path(const struct bpf_map *map);
bool bpf_map__is_pinned(const struct bpf_map *map);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);

/* bpf.h */
struct bpf_map_create_opts {
    size_t sz;
    __u32 btf_fd;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u32 btf_vmlinux_value_type_id;
    __u32 inner_map_fd;
    __u32 map_flags;
    __u64 map_extra;
    __u32 numa_node;
    __u32 map_ifindex;
};
int bpf_map_create(int map_type, const char *map_name, __u32 key_size, __u32 value_size,
                   __u32 max_entries, const struct bpf_map_create_opts *opts);
int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_prog_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_map_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_prog_get_fd_by_id(__u32 id);
int bpf_map_get_fd_by_id(__u32 id);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);

/* linux/bpf.h (UAPI, 6.1 headers); __aligned_u64 is __u64 on 64-bit and the
 * structures end on an 8-byte boundary either way. */
struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char  name[16];
    __u32 ifindex;
    __u32 btf_vmlinux_value_type_id;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u32 :32;
    __u64 map_extra;
};

struct bpf_prog_info {
    __u32 type;
    __u32 id;
    __u8  tag[8];
    __u32 jited_prog_len;
    __u32 xlated_prog_len;
    __u64 jited_prog_insns;
    __u64 xlated_prog_insns;
    __u64 load_time;
    __u32 created_by_uid;
    __u32 nr_map_ids;
    __u64 map_ids;
    char name[16];
    __u32 ifindex;
    __u32 gpl_compatible:1;
    __u32 :31;
    __u64 netns_dev;
    __u64 netns_ino;
    __u32 nr_jited_ksyms;
    __u32 nr_jited_func_lens;
    __u64 jited_ksyms;
    __u64 jited_func_lens;
    __u32 btf_id;
    __u32 func_info_rec_size;
    __u64 func_info;
    __u32 nr_func_info;
    __u32 nr_line_info;
    __u64 line_info;
    __u64 jited_line_info;
    __u32 nr_jited_line_info;
    __u32 line_info_rec_size;
    __u32 jited_line_info_rec_size;
    __u32 nr_prog_tags;
    __u64 prog_tags;
    __u64 run_time_ns;
    __u64 run_cnt;
    __u64 recursion_misses;
    __u32 verified_insns;
    __u32 attach_btf_obj_id;
    __u32 attach_btf_id;
    __u32 :32;
};

/* libbpf.h: XDP */
struct bpf_xdp_attach_opts {
    size_t sz;
    int old_prog_fd;
    size_t :0;
};
struct bpf_xdp_query_opts {
    size_t sz;
    __u32 prog_id;
    __u32 drv_prog_id;
    __u32 hw_prog_id;
    __u32 skb_prog_id;
    __u8 attach_mode;
    size_t :0;
};
int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

/* libbpf.h: TC */
enum bpf_tc_attach_point {
    BPF_TC_INGRESS = 1,
    BPF_TC_EGRESS  = 2,
    BPF_TC_CUSTOM  = 4,
};
struct bpf_tc_hook {
    size_t sz;
    int ifindex;
    enum bpf_tc_attach_point attach_point;
    __u32 parent;
    size_t :0;
};
struct bpf_tc_opts {
    size_t sz;
    int prog_fd;
    __u32 flags;
    __u32 prog_id;
    __u32 handle;
    __u32 priority;
    size_t :0;
};
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

/* linux/btf.h */
struct btf_type {
    __u32 name_off;
    __u32 info;
    union {
        __u32 size;
        __u32 type;
    };
};
struct btf_array {
    __u32 type;
    __u32 index_type;
    __u32 nelems;
};
struct btf_member {
    __u32 name_off;
    __u32 type;
    __u32 offset;
};
struct btf_param {
    __u32 name_off;
    __u32 type;
};
struct btf_var_secinfo {
    __u32 type;
    __u32 offset;
    __u32 size;
};

/* btf.h */
struct btf *btf__parse(const char *path, struct btf_ext **btf_ext);
struct btf *btf__load_from_kernel_by_id(__u32 id);
void btf__free(struct btf *btf);
__u32 btf__type_cnt(const struct btf *btf);
__s32 btf__find_by_name_kind(const struct btf *btf, const char *type_name, __u32 kind);
const struct btf_type *btf__type_by_id(const struct btf *btf, __u32 id);
__s64 btf__resolve_size(const struct btf *btf, __u32 type_id);
int btf__resolve_type(const struct btf *btf, __u32 type_id);
int btf__align_of(const struct btf *btf, __u32 id);
const char *btf__name_by_offset(const struct btf *btf, __u32 offset);
int btf__endianness(const struct btf *btf);

/* libc */
int setns(int fd, int nstype);
int vsnprintf(char *str, size_t size, const char *format, void *ap);
"""

_STATE: dict = {}          # "ffi", "lib", "libc", "print_cb"
_LOG: list = []            # [(seq, level, text)] captured libbpf messages
_LOG_SEQ = [0]
_LOG_MAX = 400
_KERNEL_BTF_NAMES: dict = {}   # btf_id -> {type_id: readable name}


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


def _init():
    if not HAS_CFFI:
        raise LibbpfError("python cffi is not installed: install the Debian package python3-cffi "
                          "(or `pip install cffi`)\n%s" % CFFI_IMP_ERR)
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


# --------------------------------------------------------------------------
# BTF
# --------------------------------------------------------------------------

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


class Btf(_Closable):
    """BTF of an object file (or of a kernel BTF object); a context manager.

    ``Btf.from_file`` opens ELF objects through ``bpf_object__open_file``
    (without loading) so DATASEC offsets are laid out the way libbpf lays them
    out (clang leaves them zero); raw BTF files fall back to ``btf__parse``.
    """

    def __init__(self, btf, source: str, obj=None, owned: bool = True):
        self._btf = btf
        self._obj = obj
        self._owned = owned
        self.source = source

    # -- construction / lifetime ------------------------------------------
    @classmethod
    def from_file(cls, path: str) -> "Btf":
        ffi, lib = _ffi_lib()
        if not os.path.exists(path):
            _fail("BTF source %s does not exist: build the object first" % path, _errno.ENOENT)
        mark = _log_mark()
        is_elf = False
        try:
            with open(path, "rb") as fh:
                is_elf = fh.read(4) == b"\x7fELF"
        except OSError as exc:
            _fail("cannot read %s" % path, exc.errno)
        if is_elf:
            obj = _open_object(path, None, raise_on_error=False)
            if obj is not None:
                btf = lib.bpf_object__btf(obj)
                if btf != ffi.NULL:
                    return cls(btf, path, obj=obj, owned=False)
                lib.bpf_object__close(obj)
        btf = lib.btf__parse(_b(path), ffi.NULL)
        if btf == ffi.NULL:
            err = ffi.errno
            hint = "; ".join(_log_since(mark, 5))
            _fail("%s has no usable BTF: compile with clang -g (and -target bpf)%s"
                  % (path, (" (libbpf: %s)" % hint) if hint else ""), err)
        return cls(btf, path)

    @classmethod
    def from_kernel_id(cls, btf_id: int) -> "Btf":
        ffi, lib = _ffi_lib()
        btf = lib.btf__load_from_kernel_by_id(btf_id)
        if btf == ffi.NULL:
            _fail("cannot load kernel BTF object id %d: it was freed, or this needs root (CAP_SYS_ADMIN)"
                  % btf_id, ffi.errno)
        return cls(btf, "kernel BTF id %d" % btf_id)

    def close(self) -> None:
        if self._btf is None:
            return
        ffi, lib = _ffi_lib()
        if self._obj is not None:
            lib.bpf_object__close(self._obj)
        elif self._owned:
            lib.btf__free(self._btf)
        self._btf = None
        self._obj = None

    # -- low level ---------------------------------------------------------
    def _check(self):
        if self._btf is None:
            raise LibbpfError("BTF of %s is closed: open it again with Btf.from_file" % self.source)

    def type_count(self) -> int:
        self._check()
        return _STATE["lib"].btf__type_cnt(self._btf)

    def _t(self, tid: int):
        ffi, lib = _STATE["ffi"], _STATE["lib"]
        t = lib.btf__type_by_id(self._btf, tid)
        if t == ffi.NULL:
            raise LibbpfError("type id %d does not exist in BTF of %s" % (tid, self.source), _errno.ENOENT)
        return t

    @staticmethod
    def _kind(t) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t) -> int:
        return t.info & 0xFFFF

    @staticmethod
    def _kflag(t) -> bool:
        return bool(t.info >> 31)

    def _name(self, t) -> str:
        return _s(_STATE["lib"].btf__name_by_offset(self._btf, t.name_off)) or ""

    def kind(self, tid: int) -> str:
        self._check()
        if tid == 0:
            return "void"
        k = self._kind(self._t(tid))
        return BTF_KIND_NAMES[k] if k < len(BTF_KIND_NAMES) else "unknown"

    def _skip_mods(self, tid: int) -> int:
        seen = 0
        while tid and seen < 64:
            t = self._t(tid)
            if self._kind(t) not in _BTF_MODIFIERS:
                break
            tid = t.type
            seen += 1
        return tid

    def _array(self, t):
        ffi = _STATE["ffi"]
        return ffi.cast("const struct btf_array *", ffi.cast("const struct btf_type *", t) + 1)

    def _members(self, t):
        ffi = _STATE["ffi"]
        return ffi.cast("const struct btf_member *", ffi.cast("const struct btf_type *", t) + 1)

    def size_of(self, tid: int) -> int:
        self._check()
        size = _STATE["lib"].btf__resolve_size(self._btf, tid)
        if size < 0:
            _fail("cannot resolve the size of type %s in BTF of %s" % (self.type_name(tid), self.source), -size)
        return size

    def align_of(self, tid: int) -> int:
        self._check()
        align = _STATE["lib"].btf__align_of(self._btf, tid)
        if align <= 0:
            _fail("cannot resolve the alignment of type %s in BTF of %s" % (self.type_name(tid), self.source),
                  -align if align < 0 else None)
        return align

    def type_name(self, tid: int) -> str:
        """A readable C spelling of a type: "__u32", "struct in6_addr", "__u8[5]", "char *"."""
        self._check()
        return self._type_name(tid, 0)

    def _type_name(self, tid: int, depth: int) -> str:
        if tid == 0:
            return "void"
        if depth > 32:
            return "..."
        t = self._t(tid)
        k = self._kind(t)
        name = self._name(t)
        if k in (BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_TYPEDEF, BTF_KIND_VAR, BTF_KIND_DATASEC,
                 BTF_KIND_FUNC):
            return name
        if k in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_FWD):
            if k == BTF_KIND_FWD:
                word = "union" if self._kflag(t) else "struct"
            else:
                word = {BTF_KIND_STRUCT: "struct", BTF_KIND_UNION: "union"}.get(k, "enum")
            return "%s %s" % (word, name) if name else "%s {...}" % word
        if k == BTF_KIND_PTR:
            inner = self._type_name(t.type, depth + 1)
            return inner + ("*" if inner.endswith("*") else " *")
        if k == BTF_KIND_ARRAY:
            dims = []
            cur = t
            while self._kind(cur) == BTF_KIND_ARRAY and len(dims) < 32:
                arr = self._array(cur)
                dims.append(arr.nelems)
                elem = arr.type
                cur = self._t(elem) if elem else None
                if cur is None:
                    break
            return self._type_name(elem, depth + 1) + "".join("[%d]" % n for n in dims)
        if k in (BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT):
            word = {BTF_KIND_CONST: "const", BTF_KIND_VOLATILE: "volatile", BTF_KIND_RESTRICT: "restrict"}[k]
            return "%s %s" % (word, self._type_name(t.type, depth + 1))
        if k in (BTF_KIND_TYPE_TAG, BTF_KIND_DECL_TAG):
            return self._type_name(t.type, depth + 1)
        if k == BTF_KIND_FUNC_PROTO:
            ffi = _STATE["ffi"]
            params = ffi.cast("const struct btf_param *", ffi.cast("const struct btf_type *", t) + 1)
            args = [self._type_name(params[i].type, depth + 1) for i in range(self._vlen(t))]
            return "%s (%s)" % (self._type_name(t.type, depth + 1), ", ".join(args) or "void")
        return name or "<kind %d>" % k

    # -- lookups -----------------------------------------------------------
    def find(self, name: str) -> int:
        """Type id of a struct/union by tag name, else of a typedef resolved to its struct/union.
        ``#<id>`` names a type by id (anonymous nested structs have no name)."""
        self._check()
        lib = _STATE["lib"]
        want = name.strip()
        if want.startswith("#") and want[1:].isdigit():
            return self._skip_mods(int(want[1:]))
        kinds = (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_TYPEDEF)
        if want.startswith("struct "):
            want, kinds = want[7:].strip(), (BTF_KIND_STRUCT,)
        elif want.startswith("union "):
            want, kinds = want[6:].strip(), (BTF_KIND_UNION,)
        for kind in kinds:
            tid = lib.btf__find_by_name_kind(self._btf, _b(want), kind)
            if tid <= 0:
                continue
            if kind != BTF_KIND_TYPEDEF:
                return tid
            target = self._skip_mods(tid)
            tk = self._kind(self._t(target)) if target else BTF_KIND_UNKN
            if tk not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                raise LibbpfError("%s in BTF of %s is a typedef of %s, not of a struct or union: name the "
                                  "struct instead" % (name, self.source, self.type_name(target)))
            return target
        raise LibbpfError("type %s not found in BTF of %s: give a struct/union tag name or a typedef of one "
                          "(and make sure the object was compiled with -g and the type is used)"
                          % (name, self.source), _errno.ENOENT)

    def layout(self, name: str) -> dict:
        """Size, alignment and members of a struct/union (by tag or typedef name)."""
        tid = self.find(name)
        t = self._t(tid)
        kind = self._kind(t)
        members = []
        mems = self._members(t)
        kflag = self._kflag(t)
        for i in range(self._vlen(t)):
            m = mems[i]
            if kflag:
                bit_offset, bitfield_size = m.offset & 0xFFFFFF, m.offset >> 24
            else:
                bit_offset, bitfield_size = m.offset, 0
            resolved = self._skip_mods(m.type)
            rkind = self.kind(resolved)
            entry = {
                "name": _s(_STATE["lib"].btf__name_by_offset(self._btf, m.name_off)) or "",
                "offset": bit_offset // 8,
                "bit_offset": bit_offset,
                "bitfield_size": bitfield_size,
                "size": self.size_of(m.type),
                "align": self.align_of(m.type),
                "type": self.type_name(m.type),
                "kind": rkind,
                "type_id": m.type,
            }
            if rkind == "array":
                dims, elem = [], resolved
                while len(dims) < 32:
                    arr = self._array(self._t(elem))
                    dims.append(arr.nelems)
                    elem = arr.type
                    nxt = self._skip_mods(elem)
                    if not nxt or self._kind(self._t(nxt)) != BTF_KIND_ARRAY:
                        break
                    elem = nxt
                entry["nelems"] = dims
                entry["elem_type"] = self.type_name(elem)
            members.append(entry)
        return {
            "name": name,
            "c_type": self.type_name(tid),
            "type_id": tid,
            "kind": "union" if kind == BTF_KIND_UNION else "struct",
            "size": self.size_of(tid),
            "align": self.align_of(tid),
            "members": members,
        }

    def datasecs(self) -> list:
        self._check()
        out = []
        for tid in range(1, self.type_count()):
            t = self._t(tid)
            if self._kind(t) == BTF_KIND_DATASEC:
                out.append(self._name(t))
        return out

    def datasec_vars(self, section: str = ".rodata") -> dict:
        """{variable: (offset, size)} of a data section (".rodata", ".data", ".bss", ...)."""
        self._check()
        ffi, lib = _STATE["ffi"], _STATE["lib"]
        tid = lib.btf__find_by_name_kind(self._btf, _b(section), BTF_KIND_DATASEC)
        if tid <= 0:
            raise LibbpfError("section %s not found in BTF of %s: the object defines no such variables (sections: "
                              "%s)" % (section, self.source, ", ".join(self.datasecs()) or "none"), _errno.ENOENT)
        t = self._t(tid)
        infos = ffi.cast("const struct btf_var_secinfo *", ffi.cast("const struct btf_type *", t) + 1)
        out = {}
        for i in range(self._vlen(t)):
            vs = infos[i]
            out[self._name(self._t(vs.type))] = (vs.offset, vs.size)
        if self._obj is None and t.size == 0 and len(out) > 1:
            raise LibbpfError("section %s in %s has no laid-out offsets (raw clang BTF): open the ELF object with "
                              "Btf.from_file so libbpf lays the section out" % (section, self.source))
        return out

    def var_info(self, var: str) -> dict | None:
        """{section, offset, size, type_id, type} of a global variable, or None."""
        self._check()
        ffi = _STATE["ffi"]
        for tid in range(1, self.type_count()):
            t = self._t(tid)
            if self._kind(t) != BTF_KIND_DATASEC:
                continue
            infos = ffi.cast("const struct btf_var_secinfo *", ffi.cast("const struct btf_type *", t) + 1)
            for i in range(self._vlen(t)):
                vs = infos[i]
                vt = self._t(vs.type)
                if self._kind(vt) == BTF_KIND_VAR and self._name(vt) == var:
                    return {"section": self._name(t), "offset": vs.offset, "size": vs.size,
                            "type_id": vt.type, "type": self.type_name(vt.type)}
        return None

    def endianness(self) -> str:
        self._check()
        return "big" if _STATE["lib"].btf__endianness(self._btf) == 1 else "little"


def _kernel_btf_type_name(btf_id: int, type_id: int) -> str | None:
    if not btf_id or not type_id:
        return None
    names = _KERNEL_BTF_NAMES.get(btf_id)
    if names is None:
        if len(_KERNEL_BTF_NAMES) > 256:
            _KERNEL_BTF_NAMES.clear()
        names = {}
        try:
            with Btf.from_kernel_id(btf_id) as btf:
                for tid in range(1, btf.type_count()):
                    names[tid] = btf.type_name(tid)
        except LibbpfError:
            return None
        _KERNEL_BTF_NAMES[btf_id] = names
    return names.get(type_id)


# --------------------------------------------------------------------------
# Objects (open without loading)
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


def object_info(path: str, pin_root: str | None = None) -> dict:
    """Programs and maps of a BPF object file, without loading it.

    {"programs": [{name, section, type, type_name, autoload}],
     "maps": [{name, type, type_name, key_size, value_size, max_entries, flags,
               map_extra, pinning, pin_path}],
     "internal_maps": [... same keys + "section" (".rodata", ".bss", ...)]}
    ``pin_path`` is where LIBBPF_PIN_BY_NAME maps would be pinned
    (pin_root, default /sys/fs/bpf).
    """
    ffi, lib = _ffi_lib()
    obj = _open_object(path, pin_root)
    try:
        progs = [_prog_def(p) for p in _iter_progs(obj)]
        maps, internal = [], []
        for m in _iter_maps(obj):
            d = _map_def(m)
            if lib.bpf_map__is_internal(m):
                d["section"] = _internal_section(d["name"])
                internal.append(d)
            else:
                maps.append(d)
        return {"programs": progs, "maps": maps, "internal_maps": internal}
    finally:
        lib.bpf_object__close(obj)


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


def _map_info_dict(info) -> dict:
    ffi = _STATE["ffi"]
    return {
        "id": info.id,
        "type": info.type,
        "type_name": map_type_name(info.type),
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": info.map_flags,
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


# --------------------------------------------------------------------------
# Loading objects
# --------------------------------------------------------------------------

def _int_bytes(value, size: int, order: str, var: str, section: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        if len(value) != size:
            raise LibbpfError("value for %s variable %s must be %d bytes, not %d" % (section, var, size, len(value)),
                              _errno.EINVAL)
        return bytes(value)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise LibbpfError("value for %s variable %s must be an integer or bytes, not %r" % (section, var, value),
                          _errno.EINVAL)
    if size not in (1, 2, 4, 8):
        raise LibbpfError("%s variable %s is %d bytes wide, not an integer: pass its value as bytes"
                          % (section, var, size), _errno.EINVAL)
    bits = size * 8
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise LibbpfError("value %d does not fit %s variable %s (%d bytes)" % (value, section, var, size),
                          _errno.ERANGE)
    return value.to_bytes(size, order, signed=value < 0)


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

    def close(self) -> None:
        if self._obj is not None:
            _STATE["lib"].bpf_object__close(self._obj)
            self._obj = None
            self._log_bufs = []


def _pin_incompatibilities(obj) -> list:
    """[(map name, pin path, [differences])] for pinned-by-name maps whose existing pin libbpf cannot reuse."""
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    out = []
    for m in _iter_maps(obj):
        pin_path = _s(lib.bpf_map__pin_path(m))
        if not pin_path or not os.path.lexists(pin_path):
            continue
        want = _map_def(m)
        kind = pinned_kind(pin_path)
        if kind != "map":
            what = ("a " + kind) if kind else "not a BPF object"
            out.append((want["name"], pin_path, ["the pin is %s, not a map" % what]))
            continue
        try:
            have = map_info_by_path(pin_path)
        except LibbpfError as exc:
            out.append((want["name"], pin_path, [exc.msg]))
            continue
        diffs = []
        for key in ("type_name", "key_size", "value_size", "max_entries", "flags", "map_extra"):
            if have[key] != want[key]:
                diffs.append("%s pinned %s, object %s" % (key, have[key], want[key]))
        if diffs:
            out.append((want["name"], pin_path, diffs))
    return out


def _tail(text: str, n: int = 20) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def load_object(path: str, pin_root: str | None = None, resize: dict | None = None, rodata: dict | None = None,
                data: dict | None = None, log_size: int = 1 << 20) -> LoadedObject:
    """Open, adjust and load a BPF object.

    pin_root: where LIBBPF_PIN_BY_NAME maps are pinned or reused (libbpf default
    /sys/fs/bpf). resize: {map: max_entries}. rodata / data: {variable: int or
    bytes} written into .rodata* / .data*/.bss* before load (integers in the
    object's byte order, the variable's width). Every program gets a verifier
    log buffer of log_size bytes (filled only when its load fails).
    """
    ffi, lib = _ffi_lib()
    resize = dict(resize or {})
    rodata = dict(rodata or {})
    data = dict(data or {})
    if log_size < 128:
        raise LibbpfError("log_size %d is too small: use at least 128 bytes (default 1 MiB)" % log_size)
    obj = _open_object(path, pin_root)
    ok = False
    try:
        maps = {_s(lib.bpf_map__name(m)): m for m in _iter_maps(obj)}
        for name, entries in resize.items():
            if name not in maps:
                raise LibbpfError("cannot resize map %s: %s has no such map (it has %s)"
                                  % (name, path, ", ".join(n for n in maps)), _errno.ENOENT)
            ret = lib.bpf_map__set_max_entries(maps[name], int(entries))
            if ret < 0:
                _fail("resizing map %s to %s entries failed" % (name, entries), _errno_of(ret))
        if rodata or data:
            _set_globals(obj, path, maps, rodata, data)
        alloc = ffi.new_allocator(should_clear_after_alloc=False)
        log_bufs = []
        for p in _iter_progs(obj):
            buf = alloc("char[]", log_size)
            buf[0] = b"\0"
            ret = lib.bpf_program__set_log_buf(p, buf, log_size)
            if ret < 0:
                _fail("setting the verifier log buffer failed", _errno_of(ret))
            log_bufs.append((_s(lib.bpf_program__name(p)), buf))
        mark = _log_mark()
        ret = lib.bpf_object__load(obj)
        if ret < 0:
            _explain_load_failure(obj, path, pin_root, _errno_of(ret), log_bufs, _log_since(mark, 40))
        loaded = LoadedObject(obj, path, pin_root, log_bufs)
        ok = True
        return loaded
    finally:
        if not ok:
            lib.bpf_object__close(obj)


def _set_globals(obj, path, maps, rodata, data):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    btf_ptr = lib.bpf_object__btf(obj)
    if btf_ptr == ffi.NULL:
        raise LibbpfError("%s has no BTF, so its global variables cannot be set: compile with clang -g" % path)
    btf = Btf(btf_ptr, path, owned=False)
    order = btf.endianness()
    by_section = {}
    for want, allowed, what in ((rodata, (".rodata",), "rodata"), (data, (".data", ".bss"), "data")):
        for var, value in want.items():
            vi = btf.var_info(var)
            if vi is None:
                raise LibbpfError("global variable %s is not in %s: check the name (it must be a non-static global "
                                  "the programs use)" % (var, path), _errno.ENOENT)
            sec = vi["section"]
            if not any(sec == a or sec.startswith(a + ".") for a in allowed):
                other = "rodata" if sec.startswith(".rodata") else "data"
                raise LibbpfError("variable %s lives in section %s, not in %s: pass it under %s"
                                  % (var, sec, "/".join(allowed), other), _errno.EINVAL)
            by_section.setdefault(sec, []).append((var, vi, _int_bytes(value, vi["size"], order, var, sec)))
    internal = {}
    for name, m in maps.items():
        if lib.bpf_map__is_internal(m):
            internal[_internal_section(name)] = m
    for sec, items in by_section.items():
        m = internal.get(sec)
        if m is None:
            raise LibbpfError("section %s of %s has no map to set variables in" % (sec, path))
        psize = ffi.new("size_t *")
        cur = lib.bpf_map__initial_value(m, psize)
        if cur == ffi.NULL:
            raise LibbpfError("section %s of %s has no initial value to edit" % (sec, path))
        blob = bytearray(ffi.buffer(cur, psize[0]))
        for var, vi, raw in items:
            blob[vi["offset"]:vi["offset"] + vi["size"]] = raw
        ret = lib.bpf_map__set_initial_value(m, ffi.from_buffer(bytes(blob)), len(blob))
        if ret < 0:
            _fail("setting the variables of %s failed" % sec, _errno_of(ret))


def _explain_load_failure(obj, path, pin_root, err, log_bufs, said):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    # 1. an existing pin libbpf cannot reuse
    bad = _pin_incompatibilities(obj)
    if bad:
        parts = ["map %s: existing pin %s is incompatible (%s)" % (n, p, "; ".join(d)) for n, p, d in bad]
        raise LibbpfError("loading %s failed: %s. libbpf reuses pins only when type, key_size, value_size, "
                          "max_entries and flags all match: migrate or remove the old pin with the "
                          "lqos.bpf.pinned_maps module (or choose another pin_root)" % (path, "; ".join(parts)),
                          err or _errno.EINVAL)
    # 2. the verifier rejected a program
    for name, buf in log_bufs:
        if buf[0] != b"\0":
            log = ffi.string(buf).decode("utf-8", "replace")
            raise LibbpfError("the verifier rejected program %s of %s [errno %d: %s]; last lines of the "
                              "verifier log:\n%s" % (name, path, err, _strerror(err), _tail(log, 20)), err)
    # 3. pinning under pin_root failed
    joined = "\n".join(said)
    m = re.search(r"map '([^']+)': failed to auto-pin at '([^']+)'", joined)
    if m or "not on BPF FS" in joined:
        where = m.group(2) if m else pin_root
        name = m.group(1) if m else "?"
        if "not on BPF FS" in joined:
            raise LibbpfError("loading %s failed: cannot pin map %s at %s: pin_root %s is not on a bpffs; mount one "
                              "there (mount -t bpf bpf DIR) or use a directory under /sys/fs/bpf"
                              % (path, name, where, pin_root), err)
        _fail("loading %s failed: cannot pin map %s at %s: check that pin_root %s is a writable bpffs directory"
              % (path, name, where, pin_root), err)
    # 4. a map the kernel refused to create
    m = re.search(r"map '([^']+)': failed to create", joined)
    if m:
        d = next((_map_def(x) for x in _iter_maps(obj) if _s(lib.bpf_map__name(x)) == m.group(1)), None)
        if d is not None:
            hint = "check its definition (type, sizes, flags) against this kernel"
            if err == _errno.E2BIG or d["type_name"] == "cpumap":
                hint = ("max_entries %d is more than this kernel allows; size it to the possible CPUs, e.g. "
                        "resize={'%s': %d}" % (d["max_entries"], d["name"], possible_cpus()))
            raise LibbpfError("loading %s failed: the kernel refused to create map %s (%s, max_entries %d) "
                              "[errno %d: %s]: %s" % (path, d["name"], d["type_name"], d["max_entries"], err,
                                                      _strerror(err), hint), err)
    if err in (_errno.EPERM, _errno.EACCES):
        raise LibbpfError("loading %s failed: permission denied; run as root (CAP_BPF, CAP_NET_ADMIN, "
                          "CAP_SYS_ADMIN) and check the memlock limit" % path, err)
    _fail("loading %s failed%s" % (path, ("; libbpf said: " + " | ".join(said[-10:])) if said else ""), err)


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
    process that does nothing else in the old namespace.
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
        ret = libc.setns(fd, CLONE_NEWNET)
        if ret != 0:
            err = ffi.errno
            if err == _errno.EINVAL:
                _fail("%s is not a network namespace file: use a name under /run/netns or /proc/PID/ns/net" % path,
                      err)
            _fail("entering network namespace %s failed (needs root: CAP_SYS_ADMIN)" % name_or_path, err)
    finally:
        os.close(fd)


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
    except OSError as exc:
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
