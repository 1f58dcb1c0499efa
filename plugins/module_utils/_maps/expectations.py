# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What a pinned map must be: the expectations of the new object (its maps' type, sizes, max_entries, flags; CPU-
sized maps at this host's CPUs) and of the spec, merged with their conflicts, and one pin's differences from
them. Pure: plain data in and out."""

from __future__ import annotations


# What libbpf compares before it reuses a pin, in report order.
ATTRIBUTES = ("type", "key_size", "value_size", "max_entries", "flags", "map_extra")
SOURCE_OBJECT = "object"
SOURCE_SPEC_LIST = "spec.pinned_maps"
SOURCE_SPEC_NAMES = "spec.expect.maps"


# --------------------------------------------------------------------------
# Expectations (pure)
# --------------------------------------------------------------------------

def _add_check(table: dict, name: str, attribute: str, value, source: str) -> None:
    entry = table.setdefault(name, {"name": name, "checks": [], "sources": []})
    if source not in entry["sources"]:
        entry["sources"].append(source)
    if attribute is not None:
        entry["checks"].append((attribute, value, source))


def expectations_from_spec(spec: dict | None) -> dict:
    """{name: {name, checks: [(attribute, value, source)], sources}} from a validated spec:
    its explicit ``pinned_maps`` list (key/value sizes) and the names in ``expect.maps``."""
    table: dict = {}
    if not spec:
        return table
    for name in spec.get("expect", {}).get("maps", []):
        _add_check(table, name, None, None, SOURCE_SPEC_NAMES)
    for item in spec.get("pinned_maps", []):
        _add_check(table, item["name"], "key_size", item["key_size"], SOURCE_SPEC_LIST)
        _add_check(table, item["name"], "value_size", item["value_size"], SOURCE_SPEC_LIST)
    return table


def expectations_from_object(info: dict, cpu_sized: list | tuple = (), possible_cpus: int | None = None) -> dict:
    """The same table from ``_kernel.objects.object_info``: every map the object pins by name.

    Maps named in ``cpu_sized`` are resized to the possible CPUs at load, so their
    expected max_entries is min(object value, possible CPUs).
    """
    table: dict = {}
    for m in info.get("maps", []):
        if not m.get("pinning"):
            continue
        max_entries = m["max_entries"]
        if m["name"] in cpu_sized and possible_cpus:
            max_entries = min(max_entries, possible_cpus)
        for attribute, value in (("type", m["type_name"]), ("key_size", m["key_size"]),
                                 ("value_size", m["value_size"]), ("max_entries", max_entries),
                                 ("flags", m["flags"]), ("map_extra", m.get("map_extra", 0))):
            _add_check(table, m["name"], attribute, value, SOURCE_OBJECT)
    return table


def merge_expectations(*tables) -> dict:
    merged: dict = {}
    for table in tables:
        for name, entry in table.items():
            for source in entry["sources"]:
                _add_check(merged, name, None, None, source)
            merged[name]["checks"].extend(entry["checks"])
    return merged


def expected_view(entry: dict) -> dict:
    """The flat ``expected`` dict of a pin: one value per attribute (the object's
    value wins when sources disagree) plus the sources it came from."""
    view: dict = {}
    for attribute, value, source in entry["checks"]:
        if attribute not in view or source == SOURCE_OBJECT:
            view[attribute] = value
    ordered = {a: view[a] for a in ATTRIBUTES if a in view}
    ordered["sources"] = list(entry["sources"])
    return ordered


def conflicts(expectations: dict) -> list:
    """[{map, attribute, values: {source: value}}] where the sources disagree."""
    out = []
    for name in sorted(expectations):
        by_attr: dict = {}
        for attribute, value, source in expectations[name]["checks"]:
            by_attr.setdefault(attribute, {})[source] = value
        for attribute in ATTRIBUTES:
            values = by_attr.get(attribute, {})
            if len(set(values.values())) > 1:
                out.append({"map": name, "attribute": attribute, "values": values})
    return out


def compare(entry: dict, actual: dict) -> list:
    """[{attribute, expected, actual, sources}] for every expectation the pinned map misses."""
    grouped: dict = {}
    for attribute, value, source in entry["checks"]:
        grouped.setdefault((attribute, value), []).append(source)
    out = []
    for attribute in ATTRIBUTES:
        for (attr, value), sources in grouped.items():
            if attr == attribute and actual.get(attribute) != value:
                out.append({"attribute": attribute, "expected": value, "actual": actual.get(attribute),
                            "sources": sources})
    return out


def describe_differences(differences: list) -> str:
    return "; ".join("%s: expected %s (%s), pinned %s" % (d["attribute"], _fmt(d["attribute"], d["expected"]),
                                                          ", ".join(d["sources"]), _fmt(d["attribute"], d["actual"]))
                     for d in differences)


def _fmt(attribute: str, value) -> str:
    if attribute == "flags" and isinstance(value, int):
        return "0x%x" % value
    return str(value)
