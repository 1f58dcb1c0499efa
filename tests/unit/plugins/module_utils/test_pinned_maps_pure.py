"""Pinned-map expectations, comparison, plans and backup encoding: plain data only."""
from __future__ import annotations

import json

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._maps import backup as B
from ansible_collections.lqos.bpf.plugins.module_utils._maps import pinned_maps as P
from ansible_collections.lqos.bpf.plugins.module_utils._maps import audit as PA
from ansible_collections.lqos.bpf.plugins.module_utils._maps import expectations as PE
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

SPEC = validate_spec({
    "name": "t", "sources": {"workdir": "src/bpf", "kern": "k.c"}, "outputs": {},
    "expect": {"maps": ["map_traffic", "cpu_map", "named_only"]},
    "cpu_sized_maps": [{"map": "cpu_map", "constant": "MAX_CPUS", "header": "common/maximums.h"}],
    "pinned_maps": [{"name": "map_traffic", "key_size": 16, "value_size": 128}],
})

OBJECT_INFO = {"maps": [
    {"name": "map_traffic", "type_name": "percpu_hash", "key_size": 16, "value_size": 128,
     "max_entries": 128000, "flags": 0, "map_extra": 0, "pinning": True},
    {"name": "cpu_map", "type_name": "cpumap", "key_size": 4, "value_size": 4, "max_entries": 1024,
     "flags": 0, "map_extra": 0, "pinning": True},
    {"name": "scratch", "type_name": "array", "key_size": 4, "value_size": 4, "max_entries": 1,
     "flags": 0, "map_extra": 0, "pinning": False},
]}


def actual(**kw):
    pin = {"name": "map_traffic", "path": "/sys/fs/bpf/map_traffic", "kind": "map", "status": "unknown",
           "reason": "", "expected": None, "differences": [], "used_by": [], "id": 7, "type": "percpu_hash",
           "key_size": 16, "value_size": 128, "max_entries": 128000, "flags": 0, "map_extra": 0}
    pin.update(kw)
    return pin


def merged(cpus=2):
    return PE.merge_expectations(PE.expectations_from_spec(SPEC),
                                 PE.expectations_from_object(OBJECT_INFO, ["cpu_map"], cpus))


def test_expectations_from_spec_list_and_names():
    table = PE.expectations_from_spec(SPEC)
    assert sorted(table) == ["cpu_map", "map_traffic", "named_only"]
    assert table["map_traffic"]["checks"] == [("key_size", 16, "spec.pinned_maps"),
                                              ("value_size", 128, "spec.pinned_maps")]
    assert table["map_traffic"]["sources"] == ["spec.expect.maps", "spec.pinned_maps"]
    assert table["named_only"]["checks"] == []
    assert PE.expectations_from_spec(None) == {}


def test_expectations_from_object_skip_unpinned_and_cpu_sized():
    table = PE.expectations_from_object(OBJECT_INFO, ["cpu_map"], 2)
    assert sorted(table) == ["cpu_map", "map_traffic"]
    assert ("max_entries", 2, "object") in table["cpu_map"]["checks"]
    # fewer possible CPUs than the object asks for only ever shrinks it
    assert ("max_entries", 1024, "object") in PE.expectations_from_object(OBJECT_INFO, ["cpu_map"], 4096)["cpu_map"]["checks"]
    # not cpu-sized: taken as is
    assert ("max_entries", 1024, "object") in PE.expectations_from_object(OBJECT_INFO, [], 2)["cpu_map"]["checks"]


def test_expected_view_is_ordered_and_names_sources():
    view = PE.expected_view(merged()["map_traffic"])
    assert view == {"type": "percpu_hash", "key_size": 16, "value_size": 128, "max_entries": 128000,
                    "flags": 0, "map_extra": 0, "sources": ["spec.expect.maps", "spec.pinned_maps", "object"]}


@pytest.mark.parametrize("change,diffs", [
    ({}, []),
    ({"key_size": 20}, [{"attribute": "key_size", "expected": 16, "actual": 20,
                         "sources": ["spec.pinned_maps", "object"]}]),
    ({"value_size": 64}, [{"attribute": "value_size", "expected": 128, "actual": 64,
                           "sources": ["spec.pinned_maps", "object"]}]),
    ({"type": "hash"}, [{"attribute": "type", "expected": "percpu_hash", "actual": "hash", "sources": ["object"]}]),
    ({"max_entries": 10, "flags": 1}, [
        {"attribute": "max_entries", "expected": 128000, "actual": 10, "sources": ["object"]},
        {"attribute": "flags", "expected": 0, "actual": 1, "sources": ["object"]}]),
])
def test_compare_lists_every_difference(change, diffs):
    pin = PA.classify(actual(**change), merged())
    assert pin["differences"] == diffs
    assert pin["status"] == ("incompatible" if diffs else "compatible")


def test_classify_reason_names_every_difference():
    pin = PA.classify(actual(key_size=20, flags=1), merged())
    assert pin["reason"] == ("key_size: expected 16 (spec.pinned_maps, object), pinned 20; "
                             "flags: expected 0x0 (object), pinned 0x1")


def test_classify_unknown_and_not_a_map():
    pin = PA.classify(actual(name="other"), merged())
    assert pin["status"] == "unknown" and pin["expected"] is None
    prog = {"name": "cpu_map", "path": "/p/cpu_map", "kind": "prog", "status": "not_a_map",
            "reason": "a pinned BPF prog, not a map; never touched", "expected": None, "differences": [],
            "used_by": []}
    prog = PA.classify(prog, merged())
    assert prog["status"] == "not_a_map"
    assert prog["reason"].startswith("expected map cpu_map, but a pinned BPF prog, not a map")
    assert prog["expected"]["max_entries"] == 2


def test_cpu_sized_max_entries():
    pin = actual(name="cpu_map", type="cpumap", key_size=4, value_size=4, max_entries=2)
    assert PA.classify(pin, merged(cpus=2))["status"] == "compatible"
    pin = actual(name="cpu_map", type="cpumap", key_size=4, value_size=4, max_entries=1024)
    assert PA.classify(pin, merged(cpus=2))["differences"] == [
        {"attribute": "max_entries", "expected": 2, "actual": 1024, "sources": ["object"]}]


def test_conflicts_between_spec_and_object():
    spec = dict(SPEC, pinned_maps=[{"name": "map_traffic", "key_size": 20, "value_size": 128}])
    table = PE.merge_expectations(PE.expectations_from_spec(spec), PE.expectations_from_object(OBJECT_INFO, [], 2))
    assert PE.conflicts(table) == [{"map": "map_traffic", "attribute": "key_size",
                                   "values": {"spec.pinned_maps": 20, "object": 16}}]
    # the object's value is the one shown as expected; both are checked
    pin = PA.classify(actual(key_size=16), table)
    assert pin["expected"]["key_size"] == 16
    assert pin["differences"] == [{"attribute": "key_size", "expected": 20, "actual": 16,
                                   "sources": ["spec.pinned_maps"]}]


def test_missing_pins_respect_names():
    pins = PA.missing_pins("/r", merged(), seen={"map_traffic"})
    assert [(p["name"], p["status"], p["path"]) for p in pins] == [
        ("cpu_map", "missing", "/r/cpu_map"), ("named_only", "missing", "/r/named_only")]
    assert PA.missing_pins("/r", merged(), seen=set(), names={"cpu_map"})[0]["name"] == "cpu_map"


@pytest.mark.parametrize("names,expected", [
    (None, None), ([], None), (["a", "d/b", "/r/c", "./e"], ["a", "d/b", "c", "e"]),
])
def test_normalise_names(names, expected):
    assert P.normalise_names("/r", names) == expected


@pytest.mark.parametrize("name,message", [
    ("../etc", "maps entry '../etc' leaves the pin root /r. Fix: name pins relative to pin_root, without '..'."),
    ("/etc/x", "maps entry '/etc/x' is outside pin_root /r. Fix: name pins relative to pin_root, e.g. map_traffic."),
    ("/r", "maps entry '/r' is outside pin_root /r."),
])
def test_normalise_names_refuses_escapes(name, message):
    with pytest.raises(LqosError) as ei:
        P.normalise_names("/r", [name])
    assert str(ei.value).startswith(message)


def test_summary_and_listing():
    pins = [PA.classify(actual(), merged()), PA.classify(actual(name="x", path="/r/x", key_size=1), merged()),
            {"name": "maps.debug", "path": "/r/maps.debug", "kind": "other", "status": "not_a_map"},
            {"name": "gone", "path": "/r/gone", "kind": None, "status": "missing"}]
    assert PA.summarise(pins) == {"compatible": 1, "incompatible": 0, "unknown": 1, "missing": 1,
                                  "not_a_map": 1, "vanished": 0, "unreadable": 0, "total": 4}
    assert PA.listing(pins) == ("map_traffic: percpu_hash key_size=16 value_size=128 max_entries=128000 flags=0x0 "
                                "id=7 [compatible]\n"
                                "maps.debug: other [not_a_map]\n"
                                "x: percpu_hash key_size=1 value_size=128 max_entries=128000 flags=0x0 id=7 [unknown]\n")
    assert PA.listing(pins, drop={"/r/x", "/sys/fs/bpf/map_traffic"}) == "maps.debug: other [not_a_map]\n"


def test_plan_cleanup_only_incompatible_maps():
    bad = PA.classify(actual(key_size=20, used_by=[{"id": 3, "name": "xdp", "tag": "ab"}]), merged())
    good = PA.classify(actual(name="cpu_map", type="cpumap", key_size=4, value_size=4, max_entries=2), merged())
    prog = {"name": "p", "path": "/r/p", "kind": "prog", "status": "not_a_map"}
    actions = P.plan_cleanup([bad, good, prog], "/b")
    assert actions == [{"action": "remove", "pin": "/sys/fs/bpf/map_traffic", "name": "map_traffic", "id": 7,
                        "reason": bad["reason"], "differences": bad["differences"],
                        "used_by": [{"id": 3, "name": "xdp", "tag": "ab"}], "backup_dir": "/b"}]


def test_timestamp_and_file_name():
    assert B.timestamp(1767268800.25) == "20260101T120000.250000Z"
    assert B.backup_file_name("tc/globals/m", "S") == "tc__globals__m.S.json"


def test_backup_round_trip_plain_and_percpu():
    pin = actual(type="hash", key_size=4, value_size=3)
    entries = [(b"\x01\x00\x00\x00", b"abc"), (b"\x02\x00\x00\x00", b"\x00\xff\x10")]
    doc = B.encode_backup(pin, entries, 0, "T", "why")
    assert doc["layout"] == {"key_size": 4, "value_size": 3, "percpu": False, "value_stride": 3,
                             "possible_cpus": None, "value_bytes": 3}
    assert doc["entries"][1] == {"key": "02000000", "value": "00ff10"}
    back = B.decode_backup(json.loads(json.dumps(doc)), "/b/f.json")
    assert back["entries"] == entries and back["file"] == "/b/f.json"

    pin = actual(type="percpu_hash", key_size=4, value_size=12)
    blob = bytes(range(32))
    doc = B.encode_backup(pin, [(b"\0" * 4, blob)], 2, "T")
    assert doc["layout"]["value_stride"] == 16 and doc["layout"]["value_bytes"] == 32
    assert B.decode_backup(doc, "f")["entries"] == [(b"\0" * 4, blob)]


@pytest.mark.parametrize("doc,message", [
    ([], "backup f is not a pinned-map backup (format is not lqos.bpf.map-backup/1)."),
    ({"format": "lqos.bpf.map-backup/1", "pin": "/x", "entries": []}, "backup f lacks pin, layout or entries."),
    ({"format": "lqos.bpf.map-backup/1", "pin": "/x", "layout": {"key_size": 4, "value_size": 4, "value_bytes": 4},
      "entries": [{"key": "zz", "value": "00"}]}, "backup f entry 0 is not a {key, value} pair of hex strings."),
    ({"format": "lqos.bpf.map-backup/1", "pin": "/x", "layout": {"key_size": 4, "value_size": 4, "value_bytes": 4},
      "entries": [{"key": "00", "value": "00000000"}]},
     "backup f entry 0 has a 1-byte key and 4-byte value, not 4 and 4 as its layout says."),
])
def test_decode_backup_errors(doc, message):
    with pytest.raises(LqosError) as ei:
        B.decode_backup(doc, "f")
    assert ei.value.msg == message


def _backup(entries, key_size=4, value_size=4, percpu=False):
    return {"file": "/b/f", "pin": "/r/m", "entries": entries,
            "layout": {"key_size": key_size, "value_size": value_size, "percpu": percpu}}


def test_plan_restore_skips_equal_entries():
    target = {"path": "/r/m", "type": "hash", "key_size": 4, "value_size": 4, "max_entries": 4}
    entries = [(b"\1\0\0\0", b"aaaa"), (b"\2\0\0\0", b"bbbb")]
    assert B.plan_restore(_backup(entries), target, {b"\1\0\0\0": b"aaaa"}) == [(b"\2\0\0\0", b"bbbb")]
    assert B.plan_restore(_backup(entries), target, dict(entries)) == []


@pytest.mark.parametrize("target,backup,message", [
    ({"type": "hash", "key_size": 8, "value_size": 4, "max_entries": 4}, _backup([]),
     "backup /b/f holds key_size 4 / value_size 4, but map /r/m has key_size 8 / value_size 4; nothing was written."),
    ({"type": "percpu_hash", "key_size": 4, "value_size": 4, "max_entries": 4}, _backup([]),
     "backup /b/f is of a non-per-CPU map, but map /r/m (percpu_hash) is per-CPU; nothing was written."),
    ({"type": "hash", "key_size": 4, "value_size": 4, "max_entries": 1},
     _backup([(b"\1\0\0\0", b"aaaa"), (b"\2\0\0\0", b"bbbb")]),
     "map /r/m (max_entries 1, 0 entries in use) cannot take the 2 new entries of backup /b/f; nothing was written."),
    ({"type": "array", "key_size": 4, "value_size": 4, "max_entries": 2}, _backup([(b"\5\0\0\0", b"aaaa")]),
     "backup /b/f has index 5, beyond map /r/m (max_entries 2); nothing was written."),
])
def test_plan_restore_refuses(target, backup, message):
    target = dict(target, path="/r/m")
    with pytest.raises(LqosError) as ei:
        B.plan_restore(backup, target, {})
    assert ei.value.msg == message


def test_restore_target_confinement():
    backup = {"pin": "/r/m", "file": "f"}
    assert B.restore_target("/r", backup, None) == ("m", "/r/m")
    assert B.restore_target("/r", backup, "sub/n") == ("sub/n", "/r/sub/n")
    with pytest.raises(LqosError) as ei:
        B.restore_target("/r", {"pin": "/other/m", "file": "f"}, None)
    assert str(ei.value) == ("the backup's pin /other/m is outside pin_root /r. Fix: give pin: NAME (relative "
                             "to pin_root) to restore into another map.")
    with pytest.raises(LqosError) as ei:
        B.restore_target("/r", backup, "../x")
    assert ei.value.msg == "pin entry '../x' leaves the pin root /r."
