"""Verifier headroom on plain data: the statistics lines of several kernels, the call chain from the loaded
instructions, the headroom figures and which programs stop a rollout."""
from __future__ import annotations

import struct

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import verifier as V

# Log level 4 (BPF_LOG_STATS) as this machine's 6.18 writes it for the reference object's xdp_shaper.
LOG_6_18 = ("verification time 953 usec\nstack depth 176\nprocessed 2436 insns (limit 1000000) max_states_per_insn 7 "
            "total_states 170 peak_states 125 mark_read 0\n")


@pytest.mark.parametrize("log, want", [
    (LOG_6_18, {"processed_insns": 2436, "insn_limit": 1000000, "stack_depths": [176], "verification_usec": 953}),
    # 5.10 / 6.1: the same lines, two subprograms.
    ("verification time 12 usec\nstack depth 64+32\nprocessed 123 insns (limit 1000000) max_states_per_insn 1 "
     "total_states 10 peak_states 10 mark_read 3\n",
     {"processed_insns": 123, "insn_limit": 1000000, "stack_depths": [64, 32], "verification_usec": 12}),
    # 4.15 - 5.1: one line, the older limit.
    ("processed 123 insns (limit 131072), stack depth 64+32+0\n",
     {"processed_insns": 123, "insn_limit": 131072, "stack_depths": [64, 32, 0], "verification_usec": None}),
    # 4.14: no limit in the line.
    ("processed 99 insns, stack depth 48\n",
     {"processed_insns": 99, "insn_limit": None, "stack_depths": [48], "verification_usec": None}),
    # A refusal before verification at level 1: nothing verified, no stack line.
    ("processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n",
     {"processed_insns": 0, "insn_limit": 1000000, "stack_depths": None, "verification_usec": None}),
    # Two attempts in one buffer: the last one counts.
    ("processed 5 insns (limit 1000000) max_states_per_insn 0\nstack depth 8\n"
     "processed 7 insns (limit 1000000) max_states_per_insn 0\nstack depth 16+8\n",
     {"processed_insns": 7, "insn_limit": 1000000, "stack_depths": [16, 8], "verification_usec": None}),
    ("", {"processed_insns": None, "insn_limit": None, "stack_depths": None, "verification_usec": None}),
    (None, {"processed_insns": None, "insn_limit": None, "stack_depths": None, "verification_usec": None}),
])
def test_parse_log(log, want):
    assert V.parse_log(log) == want


def call(target_from, at):
    """A BPF-to-BPF call at ``at`` to ``target_from``: imm is relative to the next instruction."""
    return (V.BPF_JMP_CALL, V.BPF_PSEUDO_CALL, target_from - at - 1)


MOV, EXIT = (0xB7, 0, 0), (0x95, 0, 0)
# main (0-4) calls A (5) and B (8); A calls B. A helper call (src 0) and a kfunc call (src 2) are no edges.
CHAIN = [MOV, call(5, 1), call(8, 2), (V.BPF_JMP_CALL, 0, 12), EXIT,
         MOV, call(8, 6), EXIT,
         (V.BPF_JMP_CALL, 2, 77), EXIT]
# main (0-3) calls A (4) and, apart, B (6): two chains, never both at once.
FORK = [MOV, call(4, 1), call(6, 2), EXIT, MOV, EXIT, MOV, EXIT]


def test_subprograms_and_calls_follow_pseudo_calls_only():
    assert V.subprograms(CHAIN) == ([0, 5, 8], {0: [1, 2], 1: [2], 2: []})


def test_a_callback_reference_is_a_subprogram_and_an_edge():
    # bpf_loop(n, cb, ...): ld_imm64 r2 = cb (src BPF_PSEUDO_FUNC), two slots; cb at 5.
    insns = [MOV, (V.BPF_LD_IMM64, V.BPF_PSEUDO_FUNC, 3), (0, 0, 0), (V.BPF_JMP_CALL, 0, 181), EXIT, MOV, EXIT]
    assert V.subprograms(insns) == ([0, 5], {0: [1], 1: []})


def test_the_deepest_chain_sums_rounded_frames_along_the_calls():
    # frames 64, 32 and 100 -> 128: main -> A -> B = 224, deeper than main -> B = 192
    assert V.deepest_chain([64, 32, 100], {0: [1, 2], 1: [2], 2: []}) == (224, [0, 1, 2])
    stack = V.stack_used([64, 200, 300], FORK)
    # main -> B = 64 + 320; the conservative sum would be 64 + 224 + 320
    assert stack == {"used": 384, "depths": [64, 200, 300], "chain": [0, 2], "method": "call_graph"}


def test_without_matching_instructions_every_frame_is_summed_conservatively():
    # two subprograms in the log, three in the instructions (or none readable): an upper bound, said so
    assert V.stack_used([64, 32], CHAIN)["method"] == "all_subprograms"
    assert V.stack_used([64, 32], None) == {"used": 96, "depths": [64, 32], "chain": [0, 1],
                                            "method": "all_subprograms"}
    assert V.stack_used(None, CHAIN) is None


@pytest.mark.parametrize("depth, frame", [(0, 32), (1, 32), (32, 32), (33, 64), (176, 192), (512, 512)])
def test_frames_are_rounded_as_check_max_stack_depth_does(depth, frame):
    assert V.frame(depth) == frame


def test_a_cycle_is_cut_where_it_closes():
    assert V.deepest_chain([32, 32], {0: [1], 1: [0]}) == (64, [0, 1])


def test_decode_insns_reads_raw_instructions_in_host_order():
    def insn(code, dst, src, off, imm):
        return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
    raw = insn(0xB7, 0, 0, 0, 0) + insn(0x85, 0, 1, 0, 1) + insn(0x95, 0, 0, 0, 0) + insn(0x95, 0, 0, 0, 0) \
        + insn(0x85, 0, 0, 0, -5)
    assert V.decode_insns(raw, "little") == [(0xB7, 0, 0), (0x85, 1, 1), (0x95, 0, 0), (0x95, 0, 0), (0x85, 0, -5)]
    assert V.subprograms(V.decode_insns(raw, "little"))[0] == [0, 3]


@pytest.mark.parametrize("used, limit, pct", [
    (2436, 1000000, 99.75), (192, 512, 62.5), (0, 512, 100.0), (1, 3, 66.66), (440, 512, 14.06),
    (999999, 1000000, 0.0), (512, 512, 0.0), (None, 512, None)])
def test_headroom_is_rounded_down(used, limit, pct):
    assert V.headroom_pct(used, limit) == pct


def test_figures_prefer_bpf_prog_info_and_fall_back_to_the_log():
    insns = [MOV, EXIT]
    new = V.figures(LOG_6_18, 2436, insns, 6.254, "6.18.44")
    assert new["insns"] == {"used": 2436, "limit": 1000000, "source": "bpf_prog_info.verified_insns",
                            "headroom_pct": 99.75}
    assert new["stack"] == {"used": 192, "limit": 512, "depths": [176], "chain": [0], "method": "call_graph",
                            "headroom_pct": 62.5}
    assert (new["headroom_pct"], new["load_ms"], new["verification_usec"], new["kernel"]) == (62.5, 6.25, 953,
                                                                                              "6.18.44")
    assert new["summary"] == ("headroom 62.5 % (insns 2436 of 1000000, 99.75 %; stack 192 of 512 bytes, 62.5 %)")
    old = V.figures("processed 900000 insns (limit 1000000) max_states_per_insn 4\nstack depth 64", None, None)
    assert old["insns"]["source"] == "verifier log" and old["headroom_pct"] == 10.0
    assert old["stack"]["method"] == "all_subprograms"
    assert "(all subprograms summed)" in old["summary"]
    empty = V.figures("", None, None)
    assert empty["headroom_pct"] is None and empty["insns"]["used"] is None and empty["stack"] is None


def test_refused_and_left_out_programs_have_no_figures():
    for status in (V.REFUSED, V.LEFT_OUT):
        v = V.not_loaded(status, "6.18.44", 7.531)
        assert v == {"status": status, "kernel": "6.18.44", "insns": None, "stack": None, "headroom_pct": None,
                     "load_ms": 7.53, "verification_usec": None, "summary": status}
        assert V.describe(v) == status
        assert V.flat("flow_reader", v)["status"] == status
    assert V.describe(None) == "no verifier figures"


def test_without_stats_leaves_what_log_level_1_says_of_a_refusal():
    level4 = ("verification time 21 usec\nstack depth 0\nprocessed 0 insns (limit 1000000) max_states_per_insn 0 "
              "total_states 0 peak_states 0 mark_read 0\n")
    assert V.without_stats(level4) == ("processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 "
                                       "peak_states 0 mark_read 0\n")
    assert V.without_stats(None) == ""
