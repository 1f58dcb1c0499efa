/* lqos-refuse-tracing: the molecule VMs' own tracing refusal, a BPF-LSM policy.
 *
 * Attached to the LSM hook `bpf` (security_bpf(), called by the bpf(2) syscall
 * before it looks at the command), it answers EPERM to every BPF_PROG_LOAD of
 * a tracing program (BPF_PROG_TYPE_TRACING: iterators, fentry/fexit;
 * BPF_PROG_TYPE_LSM) - before the verifier runs, the way the kernels whose
 * policy refuses tracing programs do. XDP, TC, kprobe programs, maps and links
 * are not touched. It refuses LSM programs too, its own kind included: once
 * attached, nothing can stack another policy on top of it.
 *
 * Built at image build time with the image's clang (build-image.sh), loaded at
 * boot by lqos-refuse-tracing.service when the kernel command line has
 * lqos.refuse_tracing (the kernel needs CONFIG_BPF_LSM and `bpf` in lsm=).
 * Sources: include/linux/lsm_hook_defs.h (hook `bpf`), kernel/bpf/syscall.c
 * (__sys_bpf calls security_bpf() before the command switch), linux/bpf.h
 * (union bpf_attr: prog_type is the first field of the BPF_PROG_LOAD arm).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define EPERM 1

SEC("lsm/bpf")
int BPF_PROG(lqos_refuse_tracing, int cmd, union bpf_attr *attr, unsigned int size)
{
	__u32 type;

	if (cmd != BPF_PROG_LOAD)
		return 0;
	type = attr->prog_type;
	if (type == BPF_PROG_TYPE_TRACING || type == BPF_PROG_TYPE_LSM)
		return -EPERM;
	return 0;
}

/* The kernel attaches only LSM programs with a GPL-compatible license string. */
char _license[] SEC("license") = "GPL";
