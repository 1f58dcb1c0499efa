# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Verifier headroom: how close each program comes to the verifier's limits.

Every trial load runs the verifier; this keeps what it says, per program:

``insns``  instructions the verifier processed, against the complexity limit
           (1,000,000: BPF_COMPLEXITY_LIMIT_INSNS, kernel/bpf/verifier.c,
           since 5.2). Source: ``bpf_prog_info.verified_insns``
           (linux/bpf.h, kernel 5.16+) when the kernel fills it - the length the
           kernel writes back from BPF_OBJ_GET_INFO_BY_FD says whether it knows
           the field - otherwise the log's "processed N insns (limit L)" line.
``stack``  bytes of stack along the deepest BPF-to-BPF call chain, against 512
           (MAX_BPF_STACK, include/linux/filter.h). The verifier's statistics
           line (log level 4, BPF_LOG_STATS) gives one figure per subprogram,
           "stack depth A+B+...", in the order of the subprograms' first
           instructions. The chain comes from the instructions libbpf loaded
           (bpf_program__insns: the program with its subprograms appended):
           subprogram starts are instruction 0 and every target of a
           BPF-to-BPF call (``BPF_CALL``, src_reg BPF_PSEUDO_CALL) or of a
           callback reference (``BPF_LD_IMM64``, src_reg BPF_PSEUDO_FUNC, as
           bpf_loop uses); a call or callback reference is an edge. That is
           what check_max_stack_depth (kernel/bpf/verifier.c) walks, and like
           it every frame is rounded up to 32 bytes (newer kernels round a
           JIT-ed frame to 16: 32 never says less than the kernel counts).
           Where the instructions are unreadable or their subprograms do not
           match the log's figures, every subprogram's frame is summed:
           method ``all_subprograms`` - an upper bound, never less than any
           chain, since the verifier refuses recursion.
``load_ms``      the wall time of the trial load (maps of the object included).
``verification_usec``  the verifier's own "verification time N usec" line.

Headroom = 1 - used / limit, in per cent, rounded down to 0.01 (never
optimistic); a program's headroom is the smaller of the two.
"""

from __future__ import annotations

import re
import sys

INSN_LIMIT = 1000000
STACK_LIMIT = 512
LOG_STATS = 4            # BPF_LOG_STATS (linux/bpf.h): statistics only, no instruction trace
FRAME_ROUND = 32         # check_max_stack_depth: round_up(max(depth, 1), 32) per frame
REFUSED = "not loaded: refused"
LEFT_OUT = "not loaded: left out"
VERIFIED = "verified"

BPF_JMP_CALL = 0x85      # BPF_JMP | BPF_CALL
BPF_LD_IMM64 = 0x18      # BPF_LD | BPF_IMM | BPF_DW (two instruction slots)
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_FUNC = 4

_PROCESSED = re.compile(r"processed (\d+) insns(?: \(limit (\d+)\))?")
_STACK = re.compile(r"stack depth (\d+(?:\+\d+)*)")
_VTIME = re.compile(r"verification time (\d+) usec")


def parse_log(text: str | None) -> dict:
    """The verifier's statistics in a log: {"processed_insns", "insn_limit", "stack_depths" ([bytes per
    subprogram]), "verification_usec"}, each None when the log does not say. The last occurrence wins (a log may
    hold several attempts). Formats: 5.2+ "processed N insns (limit L) max_states_per_insn ..." and
    "stack depth A+B" on its own line (log level 4); 4.15-5.1 "processed N insns (limit L), stack depth A+B";
    4.14 "processed N insns, stack depth A"."""
    text = text or ""
    out = {"processed_insns": None, "insn_limit": None, "stack_depths": None, "verification_usec": None}
    found = _PROCESSED.findall(text)
    if found:
        out["processed_insns"] = int(found[-1][0])
        out["insn_limit"] = int(found[-1][1]) if found[-1][1] else None
    found = _STACK.findall(text)
    if found:
        out["stack_depths"] = [int(x) for x in found[-1].split("+")]
    found = _VTIME.findall(text)
    if found:
        out["verification_usec"] = int(found[-1])
    return out


def decode_insns(raw: bytes, byteorder: str = sys.byteorder) -> list:
    """[(code, src_reg, imm)] of raw struct bpf_insn (8 bytes each, host byte order; the register nibbles are
    bitfields: src_reg is the high nibble on a little-endian host). Only calls and 64-bit loads are decoded."""
    out = []
    for i in range(0, len(raw) - 7, 8):
        code = raw[i]
        if code in (BPF_JMP_CALL, BPF_LD_IMM64):
            src = raw[i + 1] >> 4 if byteorder == "little" else raw[i + 1] & 0xF
            out.append((code, src, int.from_bytes(raw[i + 4:i + 8], byteorder, signed=True)))
        else:
            out.append((code, 0, 0))
    return out


def without_stats(log: str | None) -> str:
    """The log without the lines only log level 4 adds ("verification time", "stack depth"): what level 1 says
    of a program refused before verification."""
    return "".join(line for line in (log or "").splitlines(True)
                   if not (_VTIME.match(line) or line.startswith("stack depth ")))


def subprograms(insns) -> tuple:
    """(starts, calls) of a program's instructions, ``insns`` = [(code, src_reg, imm)] as loaded.

    starts: sorted first instructions of the subprograms (0 first), the order of the verifier's figures.
    calls: {subprogram index: sorted callee indexes} (BPF-to-BPF calls and callback references)."""
    edges = []
    n = len(insns)
    for i, (code, src, imm) in enumerate(insns):
        if (code == BPF_JMP_CALL and src == BPF_PSEUDO_CALL) or (code == BPF_LD_IMM64 and src == BPF_PSEUDO_FUNC):
            target = i + imm + 1
            if 0 <= target < n:
                edges.append((i, target))
    starts = sorted({0} | {target for _at, target in edges})

    def owner(at):
        idx = 0
        for k, s in enumerate(starts):
            if s <= at:
                idx = k
        return idx
    calls = {k: set() for k in range(len(starts))}
    for at, target in edges:
        calls[owner(at)].add(starts.index(target))
    return starts, {k: sorted(v) for k, v in calls.items()}


def frame(depth: int) -> int:
    """A frame as check_max_stack_depth counts it: at least 1 byte, rounded up to 32."""
    depth = max(int(depth), 1)
    return (depth + FRAME_ROUND - 1) // FRAME_ROUND * FRAME_ROUND


def deepest_chain(depths: list, calls: dict) -> tuple:
    """(bytes, [subprogram indexes]) of the deepest call chain from subprogram 0, frames rounded (``frame``).
    A cycle (the verifier refuses recursion) is cut where it closes."""
    best = {}

    def walk(k, seen):
        if k in best:
            return best[k]
        top = (0, [])
        for c in calls.get(k, ()):
            if c in seen or c >= len(depths):
                continue
            got = walk(c, seen | {c})
            if got[0] > top[0]:
                top = got
        best[k] = (frame(depths[k]) + top[0], [k] + top[1])
        return best[k]
    return walk(0, {0}) if depths else (0, [])


def stack_used(depths: list | None, insns=None) -> dict | None:
    """{"used", "depths", "chain", "method"} from the log's per-subprogram figures and the loaded instructions
    (``subprograms``' input, or None). method ``call_graph`` (the chain walked) or ``all_subprograms``
    (every frame summed: an upper bound)."""
    if not depths:
        return None
    if insns is not None:
        starts, calls = subprograms(insns)
        if len(starts) == len(depths):
            used, chain = deepest_chain(depths, calls)
            return {"used": used, "depths": list(depths), "chain": chain, "method": "call_graph"}
    return {"used": sum(frame(d) for d in depths), "depths": list(depths), "chain": list(range(len(depths))),
            "method": "all_subprograms"}


def headroom_pct(used: int | None, limit: int) -> float | None:
    """1 - used/limit in per cent, rounded down to 0.01 (integer arithmetic); None when unknown."""
    if used is None or not limit:
        return None
    return (int(limit) - int(used)) * 10000 // int(limit) / 100.0


def figures(log: str | None, verified_insns: int | None, insns=None, load_ms: float | None = None,
            kernel: str | None = None) -> dict:
    """A verified program's figures: {"status": "verified", "kernel", "insns": {"used", "limit", "source",
    "headroom_pct"}, "stack": {"used", "limit", "depths", "chain", "method", "headroom_pct"} or None,
    "headroom_pct" (the smaller), "load_ms", "verification_usec", "summary" (``describe``)}.
    ``verified_insns``: from bpf_prog_info, None where the kernel does not fill it (then the log's count is used)."""
    stats = parse_log(log)
    limit = stats["insn_limit"] or INSN_LIMIT
    if verified_insns is not None:
        ins = {"used": int(verified_insns), "source": "bpf_prog_info.verified_insns"}
    elif stats["processed_insns"] is not None:
        ins = {"used": stats["processed_insns"], "source": "verifier log"}
    else:
        ins = {"used": None, "source": None}
    ins.update(limit=limit, headroom_pct=headroom_pct(ins["used"], limit))
    stack = stack_used(stats["stack_depths"], insns)
    if stack is not None:
        stack.update(limit=STACK_LIMIT, headroom_pct=headroom_pct(stack["used"], STACK_LIMIT))
    known = [x["headroom_pct"] for x in (ins, stack) if x and x["headroom_pct"] is not None]
    out = {"status": VERIFIED, "kernel": kernel, "insns": ins, "stack": stack,
           "headroom_pct": min(known) if known else None,
           "load_ms": None if load_ms is None else round(load_ms, 2),
           "verification_usec": stats["verification_usec"]}
    out["summary"] = describe(out)
    return out


def not_loaded(status: str, kernel: str | None = None, load_ms: float | None = None) -> dict:
    """The figures of a program the verifier did not pass (``REFUSED``) or nobody loads (``LEFT_OUT``)."""
    return {"status": status, "kernel": kernel, "insns": None, "stack": None, "headroom_pct": None,
            "load_ms": None if load_ms is None else round(load_ms, 2), "verification_usec": None, "summary": status}


def describe(v: dict | None) -> str:
    """One line: "headroom 61.9 % (insns 2436 of 1000000, 99.75 %; stack 192 of 512 bytes, 62.5 %)"."""
    if not v:
        return "no verifier figures"
    if v["status"] != VERIFIED:
        return v["status"]
    parts = []
    if v["insns"] and v["insns"]["used"] is not None:
        parts.append("insns %d of %d, %s %%" % (v["insns"]["used"], v["insns"]["limit"], v["insns"]["headroom_pct"]))
    if v["stack"]:
        parts.append("stack %d of %d bytes, %s %%%s" % (
            v["stack"]["used"], v["stack"]["limit"], v["stack"]["headroom_pct"],
            "" if v["stack"]["method"] == "call_graph" else " (all subprograms summed)"))
    return "headroom %s %% (%s)" % (v["headroom_pct"], "; ".join(parts) or "no figures")


def flat(name: str, v: dict | None) -> dict:
    """One program's figures as a flat row: {program, kernel, status, headroom_pct, insns, insns_limit,
    insns_source, insns_headroom_pct, stack, stack_limit, stack_method, stack_headroom_pct, load_ms}."""
    v = v or {}
    ins = v.get("insns") or {}
    stack = v.get("stack") or {}
    return {"program": name, "kernel": v.get("kernel"), "status": v.get("status") or "no figures",
            "headroom_pct": v.get("headroom_pct"), "insns": ins.get("used"), "insns_limit": ins.get("limit"),
            "insns_source": ins.get("source"), "insns_headroom_pct": ins.get("headroom_pct"),
            "stack": stack.get("used"), "stack_limit": stack.get("limit"), "stack_method": stack.get("method"),
            "stack_headroom_pct": stack.get("headroom_pct"), "load_ms": v.get("load_ms")}


def read_figures(ffi, lib, prog, log: str | None, load_ms: float | None, kernel: str | None) -> dict:
    """``figures`` of a program libbpf has just loaded (``prog``: its struct bpf_program *), reading
    bpf_prog_info (BPF_OBJ_GET_INFO_BY_FD through libbpf) and the instructions libbpf loaded. The kernel writes
    back how much of bpf_prog_info it knows: ``verified_insns`` counts only when that covers the field (5.16+)."""
    verified = None
    fd = lib.bpf_program__fd(prog)
    if fd >= 0:
        size = ffi.sizeof("struct bpf_prog_info")
        info = ffi.new("struct bpf_prog_info *")
        ln = ffi.new("__u32 *", size)
        end = ffi.offsetof("struct bpf_prog_info", "verified_insns") + 4
        if lib.bpf_obj_get_info_by_fd(fd, info, ln) == 0 and ln[0] >= end:
            verified = info.verified_insns
    insns = None
    count = lib.bpf_program__insn_cnt(prog)
    ptr = lib.bpf_program__insns(prog)
    if count and ptr != ffi.NULL:
        insns = decode_insns(bytes(ffi.buffer(ptr, count * 8)))
    return figures(log, verified, insns, load_ms, kernel)
