# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
"""What lqos.bpf declares of libbpf and the kernel: the constants of linux/bpf.h, linux/if_link.h, linux/btf.h
and libbpf.h it uses (map and program type names, flags, BTF kinds), and the C declarations it gives cffi (ABI
mode, no compiler): the structures, enums and functions of libbpf 1.1 (/usr/include/bpf/*.h) and of the Linux
UAPI exactly as they define them, plus the two libc functions used (setns, vsnprintf). libbpf.py parses them
once per host (its cffi cache)."""

from __future__ import annotations


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
