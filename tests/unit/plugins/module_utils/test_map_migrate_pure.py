"""Entry migration planned from BTF shapes: plain data only (shapes as Btf.shape returns them)."""
from __future__ import annotations

import struct

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._maps import migrate as G


def i(size, signed=False):
    return {"kind": "int", "size": size, "signed": signed, "name": ("__s%d" if signed else "__u%d") % (size * 8)}


def st(name, *members):
    off, out = 0, []
    for mname, shape in members:
        align = min(shape["size"], 8) if shape["kind"] == "int" else 8
        off = (off + align - 1) // align * align
        out.append({"name": mname, "offset": off, "shape": shape})
        off += shape["size"]
    return {"kind": "struct", "size": (off + 7) // 8 * 8, "members": out, "name": "struct " + name}


OLD_INFO = st("ip_hash_info", ("cpu", i(4)), ("tc_handle", i(4)), ("circuit_id", i(8)), ("device_id", i(8)))
NEW_INFO = st("ip_hash_info", ("cpu", i(8)), ("tc_handle", i(4)), ("circuit_id", i(8)), ("device_id", i(8)))


def m(type_, key, value, max_entries=100, key_shape=None, value_shape=None):
    return {"type": type_, "key_size": key, "value_size": value, "max_entries": max_entries,
            "key_shape": key_shape, "value_shape": value_shape}


def test_widened_field_copies_by_name_and_reports_it():
    plan = G.plan_fields(OLD_INFO, NEW_INFO)
    assert plan["widened"] == ["cpu: u32 -> u64"]
    assert plan["copied"] == ["tc_handle", "circuit_id", "device_id"]
    assert plan["refused"] == [] and plan["lost"] == [] and plan["zeroed"] == []
    conv = G.Converter(plan, NEW_INFO["size"])
    old = struct.pack("<IIQQ", 7, 0x10002, 11, 12)
    assert conv.one(old) == struct.pack("<QI4xQQ", 7, 0x10002, 11, 12)


def test_added_removed_and_reordered_fields():
    old = st("v", ("a", i(8)), ("b", i(4)), ("gone", i(4)))
    new = st("v", ("b", i(4)), ("fresh", i(4)), ("a", i(8)), ("extra", i(2)))
    plan = G.plan_fields(old, new, defaults={"extra": 9})
    assert plan["lost"] == ["gone"] and plan["zeroed"] == ["fresh"]
    assert plan["defaulted"] == [{"field": "extra", "value": 9}]
    out = G.Converter(plan, new["size"]).one(struct.pack("<QII", 5, 6, 7))
    assert struct.unpack_from("<IIQH", out) == (6, 0, 5, 9)


def test_signed_widening_sign_extends():
    plan = G.plan_fields(st("s", ("x", i(2, True))), st("s", ("x", i(8, True))))
    assert G.Converter(plan, 8).one(struct.pack("<h6x", -3)) == struct.pack("<q", -3)


def test_narrowing_refuses_a_value_that_does_not_fit_unless_allowed():
    old, new = st("s", ("x", i(8))), st("s", ("x", i(4)))
    plan = G.plan_map("m", m("hash", 4, 8, value_shape=old), m("hash", 4, 8, value_shape=new), 2)
    assert plan["value"]["narrowed"] == ["x: u64 -> u32"]
    entries = [(b"\1\0\0\0", struct.pack("<Q", 5)), (b"\2\0\0\0", struct.pack("<Q", 1 << 40))]
    with pytest.raises(G.MigrationError) as err:
        G.convert_entries(plan, m("hash", 4, 8), m("hash", 4, 8), entries, 1)
    assert "1 of 2 entries cannot be migrated" in err.value.msg and "x = 1099511627776" in err.value.msg
    out = G.convert_entries(plan, m("hash", 4, 8), m("hash", 4, 8), entries, 1, allow_narrowing=True)
    assert out[0][1][:4] == struct.pack("<I", 5) and out[1][1][:4] == b"\0\0\0\0"


def test_arrays_copy_their_common_prefix():
    old = st("s", ("pad", {"kind": "array", "size": 5, "nelems": 5, "elem": i(1), "name": "__u8[5]"}))
    new = st("s", ("pad", {"kind": "array", "size": 3, "nelems": 3, "elem": i(1), "name": "__u8[3]"}))
    plan = G.plan_fields(old, new)
    assert plan["copied"] == ["pad[0..2]"] and plan["lost"] == ["pad[3..4]"]


def test_kind_changes():
    assert G.kinds_compatible(m("hash", 4, 8), m("lru_hash", 4, 8)) is None
    assert G.kinds_compatible(m("array", 4, 8), m("hash", 4, 8)) is None
    assert "4-byte index" in G.kinds_compatible(m("array", 4, 8), m("hash", 8, 8))
    assert "per-CPU" in G.kinds_compatible(m("hash", 4, 8), m("percpu_hash", 4, 8))
    assert "kernel objects" in G.kinds_compatible(m("cpumap", 4, 4), m("cpumap", 4, 8))
    assert G.kinds_compatible(m("percpu_hash", 4, 8), m("lru_percpu_hash", 4, 8)) is None


def test_struct_to_int_is_refused_and_too_many_entries_are_refused_in_the_plan():
    plan = G.plan_map("m", m("hash", 4, 8, 100, value_shape=st("s", ("x", i(8)))),
                      m("hash", 4, 8, 10, value_shape=st("s", ("x", st("t", ("y", i(8)))))), 50)
    assert any("was __u64" in r for r in plan["refused"]), plan["refused"]
    assert "50 entries do not fit in max_entries 10" in plan["refused"]
    assert "REFUSED" in G.describe(plan)


def test_percpu_values_convert_per_cpu():
    old, new = st("c", ("n", i(4))), st("c", ("n", i(8)), ("more", i(8)))
    plan = G.plan_map("m", m("percpu_hash", 4, 4, value_shape=old), m("percpu_hash", 4, 16, value_shape=new), 1)
    blob = struct.pack("<I4xI4x", 3, 4)  # 2 CPUs, stride 8
    out = G.convert_entries(plan, m("percpu_hash", 4, 4), m("percpu_hash", 4, 16), [(b"\0" * 4, blob)], 2)
    assert out == [(b"\0" * 4, struct.pack("<QQQQ", 3, 0, 4, 0))]


def test_without_btf_only_equal_sizes_copy():
    plan = G.plan_map("m", m("hash", 4, 8), m("lru_hash", 4, 8), 1)
    assert plan["refused"] == [] and plan["value"]["copied"] == ["value"]
    plan = G.plan_map("m", m("hash", 4, 8), m("hash", 4, 16), 1)
    assert plan["refused"] == ["value value: 8 bytes before, 16 after, and no BTF to match its fields by name"]


def test_lpm_key_keeps_its_prefix_length():
    key = st("k", ("prefixlen", i(4)), ("addr", {"kind": "array", "size": 16, "nelems": 16, "elem": i(1),
                                                 "name": "__u8[16]"}))
    plan = G.plan_map("m", m("lpm_trie", 20, 8, key_shape=key, value_shape=st("v", ("x", i(8)))),
                      m("lpm_trie", 20, 8, key_shape=key, value_shape=st("v", ("x", i(8)))), 1)
    assert plan["refused"] == []
    moved = st("k", ("addr", key["members"][1]["shape"]), ("prefixlen", i(4)))
    plan = G.plan_map("m", m("lpm_trie", 20, 8, key_shape=key), m("lpm_trie", 20, 8, key_shape=moved), 1)
    assert any("prefix length" in r for r in plan["refused"])


def test_array_index_beyond_new_max_entries_is_refused_before_anything():
    plan = G.plan_map("m", m("hash", 4, 8, 100), m("array", 4, 8, 4), 2)
    with pytest.raises(G.MigrationError) as err:
        rows = [(b"\1\0\0\0", b"\0" * 8), (b"\x09\0\0\0", b"\0" * 8)]
        G.convert_entries(plan, m("hash", 4, 8), m("array", 4, 8, 4), rows, 1)
    assert "index 9 is beyond max_entries 4" in err.value.msg


def _flat(rows):
    return b"".join(k for k, v in rows), b"".join(v for k, v in rows)


@pytest.mark.parametrize("old_shape,new_shape,kind,ncpus", [
    (OLD_INFO, NEW_INFO, "hash", 1),                                                   # u32 -> u64 widened
    (NEW_INFO, OLD_INFO, "hash", 1),                                                   # narrowed, values fit
    (st("c", ("n", i(4))), st("c", ("n", i(8)), ("more", i(8))), "percpu_hash", 3),    # per CPU, stride 8 -> 16
    (st("v", ("a", i(2)), ("b", i(1))), st("v", ("b", i(1)), ("a", i(2))), "hash", 1),  # reordered, odd sizes
    (st("v", ("a", i(4, True))), st("v", ("a", i(8, True))), "hash", 1),               # signed: record by record
    (st("v", ("a", i(8)), ("b", i(8))), st("v", ("z", i(8)), ("a", i(8)), ("b", i(8))), "hash", 1),  # one piece, after
    (st("v", ("a", i(8)), ("b", i(4))), st("v", ("a", i(8)), ("b", i(4)), ("c", i(8))), "hash", 1),  # one, first
])
@pytest.mark.parametrize("columns", [0, G.STRIDED_COLUMNS])   # 0: every layout through the joined pieces
def test_bulk_conversion_gives_the_bytes_of_the_entry_by_entry_conversion(
        old_shape, new_shape, kind, ncpus, columns, monkeypatch):
    monkeypatch.setattr(G, "STRIDED_COLUMNS", columns)
    old = m(kind, 4, old_shape["size"], 1000, value_shape=old_shape)
    new = m(kind, 4, new_shape["size"], 1000, value_shape=new_shape)
    plan = G.plan_map("m", old, new, 50)
    stride = (old_shape["size"] + 7) // 8 * 8 if kind.startswith("percpu") else old_shape["size"]
    # byte 4..7 zero: a narrowed u64 at offset 0 fits its u32
    rows = [(struct.pack("<I", n), bytes(0 if 4 <= b % stride < 8 else (n * 7 + b) % 5 for b in range(stride * ncpus)))
            for n in range(50)]
    keys, values = _flat(rows)
    assert G.convert_table(plan, old, new, keys, values, 50, ncpus) == \
        _flat(G.convert_entries(plan, old, new, rows, ncpus))


def test_bulk_narrowing_that_truncates_is_refused_like_entry_by_entry():
    old, new = m("hash", 4, 32, value_shape=NEW_INFO), m("hash", 4, 24, value_shape=OLD_INFO)
    plan = G.plan_map("m", old, new, 1)
    with pytest.raises(G.MigrationError) as err:
        G.convert_table(plan, old, new, b"\0" * 4, struct.pack("<QI4xQQ", 1 << 40, 1, 2, 3), 1, 1)
    assert "cpu = 1099511627776 does not fit in 4 bytes" in err.value.msg


@pytest.mark.parametrize("new_shape", [
    st("v", ("a", i(8)), ("b", i(4)), ("d", i(4))),                   # one piece, a default after it
    st("v", ("d", i(4)), ("b", i(4)), ("a", i(8))),                   # pieces reordered, a default before them
])
@pytest.mark.parametrize("columns", [0, G.STRIDED_COLUMNS])
def test_bulk_conversion_with_a_default_and_any_buffer_gives_the_entry_by_entry_bytes(
        new_shape, columns, monkeypatch):
    monkeypatch.setattr(G, "STRIDED_COLUMNS", columns)
    old_shape = st("v", ("a", i(8)), ("b", i(4)))
    old = m("lru_hash", 4, old_shape["size"], 1000, value_shape=old_shape)
    new = m("lru_hash", 4, new_shape["size"], 1000, value_shape=new_shape)
    plan = G.plan_map("m", old, new, 40, {"d": 0x01020304})
    rows = [(struct.pack("<I", n), struct.pack("<QI4x", n * 0x1111, n)) for n in range(40)]
    keys, values = _flat(rows)
    want = _flat(G.convert_entries(plan, old, new, rows, 1))
    for buf in (bytearray, memoryview):   # the kernel writes the batch read into a bytearray
        assert tuple(bytes(x) for x in G.convert_table(plan, old, new, buf(keys), buf(values), 40, 1)) == want
