"""Run a command under a tracing refusal: every BPF_PROG_LOAD of a tracing program (BPF_PROG_TYPE_TRACING:
iterators, fentry/fexit; BPF_PROG_TYPE_LSM) made by the command or any process it starts fails with EPERM
before the kernel sees it, as on the kernels whose policy refuses tracing programs; every other bpf(2) call
(XDP, TC, maps, links) reaches the kernel unchanged, with the caller's capabilities intact.

    python tracing_refusal.py -- COMMAND [ARG...]      # exits with COMMAND's exit status

How: the child installs a seccomp filter that hands bpf(BPF_PROG_LOAD, ...) to this process
(SECCOMP_RET_USER_NOTIF, Linux 5.0+; SECCOMP_USER_NOTIF_FLAG_CONTINUE, 5.5+), then execs COMMAND. This
process reads the program type (the first field of union bpf_attr) from the caller's memory and answers
EPERM for a tracing type, or lets the call continue. Why not a capability drop: without CAP_PERFMON the
verifier also applies its Spectre v1 rules to XDP and TC programs and rejects variable-offset packet
pointer arithmetic ("pointer arithmetic with it prohibited for !root"), so the data path would not load
either. Sources: linux/seccomp.h, Documentation/userspace-api/seccomp_filter.rst, linux/bpf.h.
"""
from __future__ import annotations

import ctypes
import os
import platform
import select
import socket
import struct
import sys

REFUSED_PROG_TYPES = {26: "tracing", 29: "lsm"}     # BPF_PROG_TYPE_TRACING, BPF_PROG_TYPE_LSM
BPF_PROG_LOAD = 5
ARCH = {"x86_64": (0xC000003E, 321, 317), "aarch64": (0xC00000B7, 280, 277)}   # audit arch, __NR_bpf, __NR_seccomp
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
NOTIF_SIZE, RESP_SIZE = 80, 24          # struct seccomp_notif, struct seccomp_notif_resp
NOTIF_RECV = 0xC0000000 | (NOTIF_SIZE << 16) | (ord("!") << 8) | 0    # _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0000000 | (RESP_SIZE << 16) | (ord("!") << 8) | 1     # _IOWR('!', 1, struct seccomp_notif_resp)
EPERM = 1


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def _filter(arch: int, nr_bpf: int):
    ld, jeq, ret = 0x20, 0x15, 0x06          # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    prog = [(ld, 0, 0, 4), (jeq, 0, 5, arch),            # seccomp_data.arch
            (ld, 0, 0, 0), (jeq, 0, 3, nr_bpf),          # seccomp_data.nr
            (ld, 0, 0, 16), (jeq, 0, 1, BPF_PROG_LOAD),  # low half of args[0] (little endian)
            (ret, 0, 0, SECCOMP_RET_USER_NOTIF), (ret, 0, 0, SECCOMP_RET_ALLOW)]
    arr = (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])
    return arr, SockFprog(len(prog), arr)


def _install(libc) -> int:
    arch, nr_bpf, nr_seccomp = ARCH[platform.machine()]
    arr, fprog = _filter(arch, nr_bpf)
    fd = libc.syscall(nr_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(fprog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER) failed")
    return fd


def _answer(libc, listener: int) -> None:
    buf = ctypes.create_string_buffer(NOTIF_SIZE)
    if libc.ioctl(listener, NOTIF_RECV, buf) != 0:
        return   # the caller died meanwhile (ENOENT) or a signal: nothing to answer
    notif_id, pid = struct.unpack_from("<QI", buf.raw, 0)
    attr_addr = struct.unpack_from("<Q", buf.raw, 16 + 24)[0]    # seccomp_data.args[1]
    prog_type = None
    try:
        mem = os.open("/proc/%d/mem" % pid, os.O_RDONLY)
        try:
            prog_type = struct.unpack("<I", os.pread(mem, 4, attr_addr))[0]
        finally:
            os.close(mem)
    except OSError:
        pass
    if prog_type in REFUSED_PROG_TYPES:
        resp = struct.pack("<QqiI", notif_id, 0, -EPERM, 0)
    else:
        resp = struct.pack("<QqiI", notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    libc.ioctl(listener, NOTIF_SEND, ctypes.create_string_buffer(resp, RESP_SIZE))


def main(argv: list) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.stderr.write("usage: tracing_refusal.py -- COMMAND [ARG...]\n")
        return 2
    cmd = argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            parent_sock.close()
            fd = _install(libc)
            socket.send_fds(child_sock, [b"l"], [fd])
            os.close(fd)
            child_sock.close()
            os.execvp(cmd[0], cmd)
        except BaseException as exc:   # never return into the parent's code
            sys.stderr.write("tracing_refusal: %s\n" % exc)
        os._exit(127)
    child_sock.close()
    dummy, fds, dummy2, dummy3 = socket.recv_fds(parent_sock, 1, 1)
    parent_sock.close()
    if not fds:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) or 127
    listener = fds[0]
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        events = poller.poll(500)
        if any(ev & select.POLLIN for dummy, ev in events):
            _answer(libc, listener)
        elif any(ev & (select.POLLHUP | select.POLLERR) for dummy, ev in events):
            break     # no process uses the filter any more
        else:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:    # COMMAND is gone; a process it left behind keeps its refusal, unanswered
                os.close(listener)
                return os.waitstatus_to_exitcode(status)
    os.close(listener)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
