# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Which programs of an object must load, and why one did not; the kernel facts that explain a refusal (capabilities,
config, lockdown, LSMs).

Roles
    ``required``  the host is useless without it: every program the spec
                  attaches (``attach.xdp``, ``attach.tc[].program``);
    ``optional``  left out, with a warning, when this kernel refuses it
                  (iterators, kprobes, programs of modes not in use);
    ``disabled``  never loaded (spec ``programs: {name: disabled}``).

Refusal classes (``classify_refusal``), from the errno, the verifier log and
libbpf's own messages of one failed load:
    ``kernel_policy``   refused before verification (EPERM/EINVAL/EOPNOTSUPP
                        and no instruction verified): a kernel config option,
                        lockdown, or a capability/LSM policy;
    ``attach_target``   the kernel function or BTF id the program attaches to
                        is not in this kernel (libbpf: "failed to find kernel
                        BTF type ID", ESRCH), or a kprobe's symbol is absent;
    ``verifier``        the verifier ran and rejected it (log tail attached);
    ``resource_limit``  E2BIG, ENOMEM, memlock;
    ``load_error``      anything else.
Facts: kernel/bpf/syscall.c (bpf_prog_load checks capabilities and the program
type before bpf_check runs, so a policy refusal verifies 0 instructions),
libbpf 1.x messages (libbpf.c), Documentation/admin-guide/LSM/lockdown.
"""

from __future__ import annotations

import errno
import gzip
import os
import re

CLASSES = ("kernel_policy", "attach_target", "verifier", "resource_limit", "load_error")
ENOTSUPP = 524
ATTACHED_TYPES = ("xdp", "sched_cls", "sched_act")
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}

# What each family of programs needs from the kernel (Kconfig names).
_NEEDS = {
    "tracing": ("CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER"),
    "lsm": ("CONFIG_BPF_LSM",),
    "kprobe": ("CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS", "CONFIG_BPF_EVENTS"),
    "tracepoint": ("CONFIG_BPF_EVENTS",),
    "raw_tracepoint": ("CONFIG_BPF_EVENTS",),
    "perf_event": ("CONFIG_BPF_EVENTS", "CONFIG_PERF_EVENTS"),
    "xdp": ("CONFIG_BPF_SYSCALL",),
    "sched_cls": ("CONFIG_NET_CLS_BPF", "CONFIG_NET_SCH_INGRESS"),
    "sched_act": ("CONFIG_NET_ACT_BPF",),
}

# Program families that read kernel memory: lockdown=confidentiality and a
# missing CAP_PERFMON refuse them (kernel/bpf/syscall.c, security/lockdown).
_READS_KERNEL = ("tracing", "kprobe", "tracepoint", "raw_tracepoint", "perf_event", "lsm")

# The feature a program family gives, for the "feature lost" warning.
_FEATURE = {
    "iter": "reading maps through a BPF iterator (userspace must walk the map itself)",
    "kprobe": "kernel function tracing through a kprobe",
    "kretprobe": "kernel function tracing through a kretprobe",
    "fentry": "kernel function tracing (fentry)",
    "fexit": "kernel function tracing (fexit)",
    "tp": "tracepoint events",
    "tracepoint": "tracepoint events",
    "raw_tp": "raw tracepoint events",
    "tp_btf": "BTF tracepoint events",
    "lsm": "LSM hooks",
    "xdp": "the XDP data path",
    "tc": "the TC data path",
    "classifier": "the TC data path",
}


def program_roles(spec: dict | None, programs: list) -> dict:
    """{program name: role} for the programs of an object.

    ``programs``: [{"name", "type_name"}] as ``object_info`` returns them.
    Spec ``programs`` entries win; otherwise a program the spec attaches is
    required and every other one optional. Without a spec (or a spec that
    attaches nothing), XDP and TC programs are required.
    """
    spec = spec or {}
    explicit = spec.get("programs") or {}
    attach = spec.get("attach") or {}
    attached = set()
    if attach.get("xdp"):
        attached.add(attach["xdp"])
    attached.update(t["program"] for t in attach.get("tc") or [] if not t.get("optional"))
    roles = {}
    for p in programs:
        name = p["name"]
        if name in explicit:
            roles[name] = explicit[name]
        elif attached:
            roles[name] = "required" if name in attached else "optional"
        else:
            roles[name] = "required" if p.get("type_name") in ATTACHED_TYPES else "optional"
    return roles


def feature_of(section: str | None) -> str:
    """What is lost when a program of this ELF section is left out."""
    head = (section or "").split("/", 1)[0]
    return _FEATURE.get(head, "whatever the program %s provides" % ("in section " + section if section else ""))


def family(prog_type: str | None, section: str | None) -> str:
    """tracing, lsm, kprobe, xdp, sched_cls, ... : the key of the kernel's needs."""
    head = (section or "").split("/", 1)[0]
    if prog_type == "tracing" or head in ("iter", "fentry", "fexit", "fmod_ret", "tp_btf"):
        return "tracing"
    return prog_type or head


def verifier_ran(log: str) -> bool:
    """True when the verifier log shows verified instructions (not a refusal before bpf_check)."""
    counts = re.findall(r"processed (\d+) insns", log or "")
    if counts and int(counts[-1]) > 0:
        return True
    return bool(re.search(r"^\s*\d+: \([0-9a-f]{2}\)", log or "", re.M))


def _tail(text: str, n: int = 20) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _options_off(config: dict | None, options: tuple) -> list:
    if not config:
        return []
    return [o for o in options if config.get(o) not in ("y", "m")]


def classify_refusal(name: str, section: str | None, prog_type: str | None, err: int | None, log: str,
                     said: list, kernel: dict | None = None) -> dict:
    """Why program ``name`` did not load, and the fix.

    err: positive errno of the load; log: the program's verifier log (may be
    empty); said: libbpf's warning lines of that load; kernel: kernel_facts().
    Returns {"class", "reason", "fix", "errno", "log_tail"}.
    """
    kernel = kernel or {}
    joined = "\n".join(said or [])
    err = err or 0
    fam = family(prog_type, section)
    what = "program %s (SEC(\"%s\"), %s)" % (name, section or "?", prog_type or "unknown type")
    leave_out = "it is optional: leave it out (spec programs: {%s: optional or disabled})" % name
    target = re.search(r"failed to find kernel BTF type ID of '([^']+)'", joined) or \
        re.search(r"failed to find BTF for extern '([^']+)'", joined) or \
        re.search(r"failed to resolve (?:CO-RE relocation|target)[^']*'([^']+)'", joined)
    out = {"errno": err or None, "log_tail": _tail(log, 20) or None}
    if target or err == errno.ESRCH:
        sym = target.group(1) if target else "?"
        out.update({"class": "attach_target",
                    "reason": "%s attaches to %s, which this kernel does not have (no such kernel function or BTF "
                              "id)" % (what, sym),
                    "fix": "run it on a kernel that has %s, or %s" % (sym, leave_out)})
        return out
    if verifier_ran(log):
        out.update({"class": "verifier",
                    "reason": "the verifier rejected %s" % what,
                    "fix": "fix program %s in the BPF source and rebuild with lqos.bpf.pipeline (the verifier log "
                           "tail says where)" % name})
        return out
    if err in (errno.E2BIG, errno.ENOMEM) or "memlock" in joined.lower():
        out.update({"class": "resource_limit",
                    "reason": "the kernel refused %s for a resource limit (%s)" % (
                        what, "too many instructions or too large" if err == errno.E2BIG else "memory / memlock"),
                    "fix": "raise the limit (ulimit -l, or a kernel with memcg-based BPF accounting, >= 5.11) or "
                           "shrink the program"})
        return out
    if err in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
        causes, ruled_out, candidates = policy_causes(fam, kernel)
        if causes:
            why = "; ".join(causes)
        else:
            why = "refused before verification by kernel policy; candidates not ruled out: %s%s" % (
                "; ".join(candidates), ("; ruled out: " + "; ".join(ruled_out)) if ruled_out else "")
        out.update({"class": "kernel_policy",
                    "reason": "the kernel refused %s before verifying it: %s" % (what, why),
                    "fix": "boot a kernel that allows %s programs, or %s" % (fam, leave_out)})
        return out
    out.update({"class": "load_error",
                "reason": "loading %s failed%s" % (what, ("; libbpf said: " + " | ".join(said[-5:])) if said else ""),
                "fix": "check the kernel log (dmesg) and libbpf's message; %s" % leave_out})
    return out


def policy_causes(fam: str, kernel: dict) -> tuple:
    """``(causes, ruled_out, candidates)`` of a refusal before verification of a ``fam`` program: what a
    probe proved (a missing capability read from CapEff, a config option off, lockdown in confidentiality
    mode), what a probe ruled out, and what no probe could rule out (each a short text naming its source)."""
    causes, ruled_out, candidates = [], [], []
    reads = fam in _READS_KERNEL
    caps = kernel.get("capabilities")
    if reads:
        if caps is None:
            candidates.append("missing CAP_PERFMON and CAP_SYS_ADMIN (CapEff of /proc/self/status not readable)")
        elif not (caps.get("CAP_PERFMON") or caps.get("CAP_SYS_ADMIN")):
            causes.append("the loading process lacks CAP_PERFMON and CAP_SYS_ADMIN (CapEff of /proc/self/status), "
                          "which %s programs need" % fam)
        else:
            ruled_out.append("capabilities (CapEff holds %s)" % ", ".join(
                c for c in ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN") if caps.get(c)))
    needs = _NEEDS.get(fam, ())
    off = _options_off(kernel.get("config"), needs)
    if off:
        causes.append("this kernel is built without %s" % ", ".join("%s=y" % o for o in off))
    elif needs and kernel.get("config") is not None:
        ruled_out.append("kernel config (%s set)" % ", ".join(needs))
    elif needs:
        candidates.append("kernel config (%s; no config readable)" % ", ".join(needs))
    if reads:
        lockdown = kernel.get("lockdown")
        if lockdown == "confidentiality":
            causes.append("kernel lockdown is in confidentiality mode (/sys/kernel/security/lockdown), which "
                          "forbids reading kernel memory from BPF")
        elif lockdown:
            ruled_out.append("lockdown (%s mode, /sys/kernel/security/lockdown)" % lockdown)
        else:
            candidates.append("kernel lockdown (/sys/kernel/security/lockdown not readable)")
    lsm = kernel.get("lsm")
    candidates.append("an LSM policy (%s)" % ("active LSMs: " + lsm if lsm else "active LSMs not readable"))
    candidates.append("a vendor or distribution BPF restriction (see dmesg)")
    return causes, ruled_out, candidates


def kernel_facts(release: str | None = None) -> dict:
    """{"release", "lockdown" (none|integrity|confidentiality|None), "lsm" (active LSMs, comma-separated,
    or None), "config" (dict or None), "capabilities" ({CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_NET_ADMIN:
    bool} or None)}.

    Sources: securityfs_facts() (lockdown: the bracketed word; lsm), the kernel
    config from /boot/config-<release> or /proc/config.gz, CapEff of
    /proc/self/status (capability bits from linux/capability.h).
    """
    release = release or os.uname().release
    sec = securityfs_facts()
    m = re.search(r"\[(\w+)\]", sec.get("lockdown") or "")
    lockdown = m.group(1) if m else None
    caps = None
    try:
        with open("/proc/self/status") as fh:
            m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", fh.read(), re.M)
        if m:
            bits = int(m.group(1), 16)
            caps = {name: bool(bits & (1 << bit)) for name, bit in CAP_BITS.items()}
    except OSError:
        pass
    return {"release": release, "lockdown": lockdown, "lsm": (sec.get("lsm") or "").strip() or None,
            "config": kernel_config(release), "capabilities": caps}


_SECURITYFS = {}
SECURITYFS = "/sys/kernel/security"


def securityfs_facts() -> dict:
    """{"lockdown": text or None, "lsm": text or None}: the files ``lockdown`` and ``lsm`` of securityfs.

    Read at /sys/kernel/security when mounted there; otherwise a forked child
    mounts securityfs in a private mount namespace of its own (unshare(2)
    CLONE_NEWNS, needs CAP_SYS_ADMIN) and reads them there, so the host's
    mounts never change. Values stay None when neither works. Read once per
    process."""
    if _SECURITYFS:
        return dict(_SECURITYFS)
    out = _read_securityfs(SECURITYFS)
    if out["lockdown"] is None and out["lsm"] is None:
        out = _securityfs_in_child() or out
    _SECURITYFS.update(out)
    return dict(out)


def _read_securityfs(root: str) -> dict:
    out = {}
    for name in ("lockdown", "lsm"):
        try:
            with open(os.path.join(root, name)) as fh:
                out[name] = fh.read()
        except OSError:
            out[name] = None
    return out


def _securityfs_in_child() -> dict | None:
    import ctypes
    import json

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rfd, wfd = os.pipe()
    except OSError:
        return None
    pid = os.fork()
    if pid == 0:   # the child: its own mount namespace, gone when it exits
        code = 1
        try:
            os.close(rfd)
            # CLONE_NEWNS, then MS_REC | MS_PRIVATE on /, then securityfs in that private namespace only
            mounted = all(step() == 0 for step in (
                lambda: libc.unshare(0x00020000),
                lambda: libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None),
                lambda: libc.mount(b"securityfs", SECURITYFS.encode(), b"securityfs", 0, None)))
            if mounted:
                os.write(wfd, json.dumps(_read_securityfs(SECURITYFS)).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks).decode()) if chunks else None
    except ValueError:
        return None


def kernel_config(release: str) -> dict | None:
    """{CONFIG_X: value} of the running kernel, or None when no config is readable."""
    for path in ("/boot/config-%s" % release, "/lib/modules/%s/build/.config" % release):
        if os.path.isfile(path):
            with open(path, errors="replace") as fh:
                return _parse_config(fh.read())
    if os.path.isfile("/proc/config.gz"):
        with gzip.open("/proc/config.gz", "rt", errors="replace") as fh:
            return _parse_config(fh.read())
    return None


def _parse_config(text: str) -> dict:
    return dict(re.findall(r"^(CONFIG_[A-Z0-9_]+)=(\S+)", text, re.M))


def kprobe_target(section: str | None) -> str | None:
    """The kernel function of a kprobe/kretprobe section ("kprobe/dev_hard_start_xmit"), else None."""
    m = re.match(r"^k(?:ret)?probe/([A-Za-z0-9_.]+)", section or "")
    return m.group(1) if m else None
