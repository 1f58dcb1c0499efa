"""map_entries' encoding of plain data by BTF shape, and its plan (pure)."""
from __future__ import annotations

import struct

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._maps.entries import encode, plan_entries

U32 = {"kind": "int", "size": 4, "signed": False, "name": "__u32"}
S32 = {"kind": "int", "size": 4, "signed": True, "name": "__s32"}
BE16 = {"kind": "int", "size": 2, "signed": False, "name": "__be16"}
TARGET = {"kind": "struct", "size": 8, "name": "struct bridge_target", "members": [
    {"name": "to_ifindex", "offset": 0, "shape": U32}, {"name": "only_tagged", "offset": 4, "shape": U32}]}
NESTED = {"kind": "struct", "size": 12, "name": "struct outer", "members": [
    {"name": "vlan", "offset": 0, "shape": BE16},
    {"name": "inner", "offset": 4, "shape": TARGET}]}
ARRAY = {"kind": "array", "size": 12, "nelems": 3, "elem": S32, "name": "__s32[3]"}
IFINDEX = {"wan0": 3, "lan0": 4, "eth1.100": 7, "big0": 70000}.__getitem__


def test_integers_words_structs_and_arrays():
    assert encode(U32, "ifindex:wan0", "key", IFINDEX) == struct.pack("<I", 3)
    assert encode(TARGET, {"to_ifindex": "ifindex:lan0"}, "value", IFINDEX) == struct.pack("<II", 4, 0)
    assert encode(NESTED, {"vlan": "be16:100", "inner": {"only_tagged": 1}}, "value", IFINDEX) == (
        b"\x00\x64\x00\x00" + struct.pack("<II", 0, 1))
    assert encode(ARRAY, [-1, 2], "value", IFINDEX) == struct.pack("<iii", -1, 2, 0)
    assert encode(TARGET, 0, "value", IFINDEX) == bytes(8)
    # LibreQoS's one-integer VLAN key: the index in the high 16 bits, the tag in the low 16, host order
    assert encode(U32, "ifindex_vlan:wan0:100", "key", IFINDEX) == struct.pack("<I", (3 << 16) | 100)
    assert encode(U32, "ifindex_vlan:eth1.100:4094", "key", IFINDEX) == struct.pack("<I", (7 << 16) | 4094)


@pytest.mark.parametrize("shape, value, message", [
    (TARGET, {"to": 1}, "value: struct bridge_target has no field to (it has to_ifindex, only_tagged). Fix: use the "
                        "field names of the C struct."),
    (TARGET, 5, "value is a struct bridge_target: give a mapping of its fields (to_ifindex, only_tagged), got 5."),
    (U32, 1 << 32, "value: 4294967296 does not fit a 4-byte unsigned integer (0 to 4294967295)."),
    (S32, -(1 << 31) - 1, "value: -2147483649 does not fit a 4-byte signed integer"),
    (U32, "be16:1", "value is 4 bytes: be16:N fits only a 2-byte field. Fix: give a plain number."),
    (BE16, "be16:70000", "value: 'be16:70000' is not be16:N with N from 0 to 65535."),
    (U32, True, "value is a 4-byte integer (__u32): give a number, ifindex:NAME or be16:N, got True."),
    (BE16, "ifindex_vlan:wan0:1", "value is 2 bytes: ifindex_vlan:NAME:TAG needs a field of 4 bytes or more."),
    (U32, "ifindex_vlan:wan0:4095", "value: 'ifindex_vlan:wan0:4095' is not ifindex_vlan:NAME:TAG with TAG a VLAN "
                                    "id from 1 to 4094. Fix: write e.g. ifindex_vlan:eth0:100."),
    (U32, "ifindex_vlan:wan0", "value: 'ifindex_vlan:wan0' is not ifindex_vlan:NAME:TAG"),
    (U32, "ifindex_vlan:big0:5", "value: interface big0 has index 70000, which does not fit the 16 bits"),
    (ARRAY, [1, 2, 3, 4], "value is an array of 3: give a list of at most 3 elements, got [1, 2, 3, 4]."),
    ({"kind": "bytes", "size": 4, "name": "union u"}, 1, "value is a union u, which cannot be written field by field."),
])
def test_bad_values_are_one_clear_error(shape, value, message):
    with pytest.raises(LqosError) as exc:
        encode(shape, value, "value", IFINDEX)
    assert str(exc.value).startswith(message)


def test_the_plan_writes_only_what_differs():
    k1, k2 = b"\x01\0\0\0", b"\x02\0\0\0"
    wanted = [{"key": k1, "value": b"a"}, {"key": k2, "value": b"b"}]
    plan = plan_entries(wanted, {k1: b"a", k2: None}, "present")
    assert [e["action"] for e in plan] == ["unchanged", "set"]
    gone = plan_entries([{"key": k1, "value": None}, {"key": k2, "value": None}], {k1: b"a", k2: None}, "absent")
    assert [e["action"] for e in gone] == ["delete", "absent"]
