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
typedef short __s16;
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
int libbpf_probe_bpf_map_type(int map_type, const void *opts);
__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
int libbpf_num_possible_cpus(void);
int libbpf_strerror(int err, char *buf, size_t size);
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
/* linux/bpf.h: one instruction; libbpf.h: a program's instructions as libbpf loaded them (subprograms appended) */
struct bpf_insn { __u8 code; __u8 dst_reg:4; __u8 src_reg:4; __s16 off; __s32 imm; };
const struct bpf_insn *bpf_program__insns(const struct bpf_program *prog);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__pin(struct bpf_program *prog, const char *path);

struct bpf_link;
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);
int bpf_link__fd(const struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);
int bpf_link__destroy(struct bpf_link *link);
void bpf_link__disconnect(struct bpf_link *link);
int bpf_link_get_next_id(__u32 start_id, __u32 *next_id);
int bpf_link_get_fd_by_id(__u32 id);
int bpf_link_detach(int link_fd);
int bpf_link_update(int link_fd, int new_prog_fd, const void *opts);

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
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);
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
struct bpf_map_batch_opts {
    size_t sz;
    __u64 elem_flags;
    __u64 flags;
};
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, __u32 *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_delete_batch(int fd, const void *keys, __u32 *count, const struct bpf_map_batch_opts *opts);
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

/* linux/bpf.h: the leading fields and the xdp/netns/tcx arms of the union */
struct bpf_link_info {
    __u32 type;
    __u32 id;
    __u32 prog_id;
    __u32 :32;
    union {
        struct { __u32 ifindex; } xdp;
        __u64 _pad[8];
    };
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
