"""The catch-up's pure parts: counter deltas, snapshot files, leftovers of a killed writer (plain data, files)."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

from ansible_collections.lqos.bpf.plugins.module_utils._maps import window as W
from ansible_collections.lqos.bpf.plugins.module_utils._common import atomic_write, remove_stale_temps


def i(size):
    return {"kind": "int", "size": size, "signed": False, "name": "__u%d" % (size * 8)}


COUNTS = {"kind": "struct", "size": 16, "name": "struct c", "members": [
    {"name": "packets", "offset": 0, "shape": i(8)}, {"name": "drops", "offset": 8, "shape": i(4)}]}


def test_int_leaves_and_the_delta_of_a_counter_map_add_up_per_cpu_and_wrap():
    assert W.int_leaves(COUNTS) == [(0, 8, False), (8, 4, False)]
    now = struct.pack("<QI4x", 100, 7) + struct.pack("<QI4x", 5, 0xFFFFFFFF)     # two CPUs, stride 16
    conv_now = struct.pack("<QI4x", 30, 3) + struct.pack("<QI4x", 2, 2)
    conv_then = struct.pack("<QI4x", 10, 1) + struct.pack("<QI4x", 1, 0)
    out = W.add_delta(now, conv_now, conv_then, W.int_leaves(COUNTS), 16)
    assert struct.unpack("<QI4xQI4x", out) == (120, 9, 6, 1)   # 0xFFFFFFFF + 2 wraps at 32 bits


def test_a_snapshot_reads_back_as_written_and_a_damaged_one_is_none(tmp_path):
    rows = {b"k%03d" % n: (W.digest(b"v%d" % n), W.digest(b"w%d" % n), None) for n in range(50)}
    W.save_snapshot(str(tmp_path), "/sys/fs/bpf", "flows", 4, rows)
    assert W.load_snapshot(str(tmp_path), "/sys/fs/bpf", "flows") == rows
    counters = {b"k000": (W.digest(b"x"), W.digest(b"x"), b"\1" * 16)}
    W.save_snapshot(str(tmp_path), "/sys/fs/bpf", "counts", 4, counters, counter_bytes=16)
    assert W.load_snapshot(str(tmp_path), "/sys/fs/bpf", "counts") == counters
    path = W.snapshot_path(str(tmp_path), "/sys/fs/bpf", "flows")
    with open(path, "rb+") as fh:
        fh.truncate(os.path.getsize(path) - 3)
    assert W.load_snapshot(str(tmp_path), "/sys/fs/bpf", "flows") is None
    W.write_journal(str(tmp_path), "/sys/fs/bpf", {})     # nothing under way: the snapshots go too
    assert os.listdir(str(tmp_path)) == []


def test_temporary_files_of_a_dead_writer_are_removed_those_of_a_live_one_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = tmp_path / (".replace-0123456789abcdef.json.%s.ab12cd" % dead)
    mine = tmp_path / (".replace-0123456789abcdef.json.%d.ef34gh" % os.getpid())
    other = tmp_path / (".unrelated.json.%s.xx" % dead)
    for f in (left, mine, other):
        f.write_text("{")
    assert W.remove_leftovers(str(tmp_path)) == [str(left)]
    assert sorted(os.listdir(str(tmp_path))) == sorted([mine.name, other.name])
    # atomic_write's own temporary name carries the writer's pid, so this is what a killed run leaves
    atomic_write(str(tmp_path / "x.json"), "{}")
    assert remove_stale_temps(str(tmp_path), r"x\.json") == []


class _Table:
    def __init__(self, keys, values, key_size, value_bytes):
        self.keys, self.values, self.key_size, self.value_bytes = keys, values, key_size, value_bytes
        self.n = len(keys) // key_size


def test_the_snapshot_of_a_copy_written_from_its_columns_reads_back_as_its_rows(tmp_path):
    keys = bytearray(b"".join(struct.pack("<I", n) for n in range(300)))
    old = _Table(keys, bytearray(b"".join(struct.pack("<Q", n * 3) for n in range(300))), 4, 8)
    new = _Table(keys, b"".join(struct.pack("<QQ", n * 3, 0) for n in range(300)), 4, 16)
    for counter in (False, True):
        rows = W.snapshot_rows(old, new, counter)
        assert rows[struct.pack("<I", 7)] == (W.digest(struct.pack("<QQ", 21, 0)),) * 2 + \
            ((struct.pack("<Q", 21),) if counter else (None,))
        W._save_copy(str(tmp_path), "/sys/fs/bpf", "flows", old, new, counter)
        assert W.load_snapshot(str(tmp_path), "/sys/fs/bpf", "flows") == rows
        W.save_snapshot(str(tmp_path), "/sys/fs/bpf", "again", 4, rows, 8 if counter else 0)
        assert W.load_snapshot(str(tmp_path), "/sys/fs/bpf", "again") == rows
