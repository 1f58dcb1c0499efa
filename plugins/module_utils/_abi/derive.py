# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Mirror pairs and chain facts derived from the built object (target side).

The controller (``plugin_utils/_rust/derive.py``) reads from the Rust code
which map each key/value type is opened on (``BpfMap::<K, V>`` with a pin
path, iterator readers), which functions it calls through the bindings, which
skeleton programs/maps it touches, and which pins ``lqos_kernel.rs`` lists.
Here the object supplies the other half: every map's name, type, sizes and
pinning (``_kernel.objects.object_info``) and its C key/value types (the BTF of the
``.maps`` section, ``_kernel.btf.Btf.var_info`` / ``Btf.layout``).

Everything but :func:`btf_map_types` is pure and works on plain data.
"""

from __future__ import annotations

import re

_STRUCT = re.compile(r"^(?:const |volatile )*(struct|union) (\w+)$")
_C_NAME_SUFFIX = re.compile(r"_t$")


def btf_map_types(btf, names: list) -> dict:
    """{map name: {"key": C type spelling or None, "value": ...}} from the BTF
    map definitions (``__type(key, T)`` members of the map's ``.maps`` variable).
    Maps defined without BTF types (``__uint(key_size, N)``, legacy
    ``SEC("maps")``) get None: only their sizes are known."""
    out = {}
    for name in names:
        types = {"key": None, "value": None}
        info = btf.var_info(name)
        if info is not None and info.get("section") == ".maps":
            try:
                lay = btf.layout("#%d" % info["type_id"])
            except Exception:  # pylint: disable=broad-except
                lay = None  # not a struct (cannot happen for a libbpf map definition)
            for m in (lay or {}).get("members", []):
                if m["name"] in types and m["type"].endswith("*"):
                    types[m["name"]] = m["type"][:-1].strip()
        out[name] = types
    return out


def c_struct_name(c_type: str | None) -> str | None:
    """``struct ip_hash_key`` -> ``ip_hash_key``; a typedef name stays as is;
    None for primitives and arrays (compared by size only)."""
    if not c_type:
        return None
    m = _STRUCT.match(c_type)
    if m:
        return m.group(2)
    if "[" in c_type or "*" in c_type or " " in c_type or c_type.startswith("__") or c_type in _PRIMITIVE_C:
        return None
    return c_type


_PRIMITIVE_C = frozenset(("char", "int", "long", "short", "float", "double", "_Bool", "bool", "u8", "u16", "u32",
                          "u64", "s8", "s16", "s32", "s64", "uint8_t", "uint16_t", "uint32_t", "uint64_t",
                          "int8_t", "int16_t", "int32_t", "int64_t", "size_t"))


def _find(btf, c_name: str):
    """True when ``c_name`` resolves to a struct/union (tag or typedef) in the BTF."""
    try:
        btf.find(c_name)
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def resolvable_structs(btf, map_types: dict) -> set:
    """The C names among the map key/value types that BTF resolves to a struct/union."""
    names = {c_struct_name(t) for types in map_types.values() for t in types.values()}
    return {n for n in names if n and _find(btf, n)}


def derive_pairs(spec: dict, maps: list, map_types: dict, structs: set, derived: dict) -> dict:
    """Pair Rust types with C types by map name, then by name for the rest.

    ``maps``: ``object_info(...)["maps"]``; ``map_types``: :func:`btf_map_types`;
    ``structs``: :func:`resolvable_structs`; ``derived``: the controller's
    data (``maps``, ``repr_c``, ``types`` {rust type: {layout, error, asserted}}).

    Returns {"pairs": [{rust, c, origin, maps}], "sizes": [{map, side, rust, c, rust_size, c_size}],
    "notes": [str], "drift": [{kind, subject, message, fix}]}. Explicit spec
    mirrors win over derived pairs of the same Rust type or the same C type.
    """
    by_name = {m["name"]: m for m in maps}
    pairs: dict = {}
    sizes, notes, drift = [], [], []
    explicit_rust = {m["rust"] for m in spec.get("mirrors", [])}
    explicit_c = {m["c"] for m in spec.get("mirrors", [])}
    types = derived.get("types", {})
    missing_maps = {}
    seen_sizes = set()
    for opening in derived.get("maps", []):
        where = "%s:%d" % (opening["file"], opening["line"])
        m = by_name.get(opening["map"])
        if m is None:
            missing_maps.setdefault(opening["map"], where)
            continue
        for side in ("key", "value"):
            rust = opening[side]
            c_type = map_types.get(m["name"], {}).get(side)
            c_name = c_struct_name(c_type)
            if c_name and c_name in structs:
                if rust in explicit_rust or c_name in explicit_c:
                    continue
                entry = pairs.setdefault((rust, c_name), {"rust": rust, "c": c_name, "origin": "map", "maps": []})
                label = "%s %s (%s)" % (m["name"], side, where)
                if label not in entry["maps"]:
                    entry["maps"].append(label)
                continue
            info = types.get(rust) or {}
            lay = info.get("layout")
            want = m["%s_size" % side]
            if (m["name"], side, rust) in seen_sizes:
                continue  # one row per map side and Rust type, at its first opening
            seen_sizes.add((m["name"], side, rust))
            row = {"map": m["name"], "side": side, "rust": rust, "c": c_type or "(%d bytes)" % want,
                   "rust_size": lay["size"] if lay else None, "c_size": want, "where": where}
            sizes.append(row)
            if info.get("error"):
                drift.append(_d("map_type", rust, "%s opens map %s with %s `%s`, whose layout cannot be computed: %s"
                                % (where, m["name"], side, rust, info["error"]),
                                "fix the Rust type, or add a mirrors entry for it to the spec"))
            elif lay and lay["size"] != want:
                drift.append(_d("map_type", "%s.%s" % (m["name"], side),
                                "%s opens map %s with %s type `%s` (%d bytes) but the object's %s is %s (%d bytes)"
                                % (where, m["name"], side, rust, lay["size"], side, c_type or "untyped", want),
                                "change the Rust %s type to match the C map definition (%d bytes)" % (side, want)))
    for name, where in sorted(missing_maps.items()):
        notes.append("%s opens pin %s, which the object does not define (legacy or optional map): not checked"
                     % (where, name))
    paired_c = {p["c"] for p in pairs.values()} | explicit_c
    paired_rust = {p["rust"] for p in pairs.values()} | explicit_rust
    by_snake = {}
    for r in derived.get("repr_c", []):
        by_snake.setdefault(r["snake"], []).append(r)
    for c_name in sorted(structs - paired_c):
        key = _C_NAME_SUFFIX.sub("", c_name)
        cands = [r for r in by_snake.get(key, []) if r["name"] not in paired_rust]
        if len(cands) == 1:
            pairs[(cands[0]["name"], c_name)] = {"rust": cands[0]["name"], "c": c_name, "origin": "name",
                                                 "maps": [mm for mm, t in sorted(map_types.items())
                                                          if c_name in {c_struct_name(x) for x in t.values()}]}
        else:
            used = [mm for mm, t in sorted(map_types.items()) if c_name in {c_struct_name(x) for x in t.values()}]
            notes.append("C type %s (map %s) has no Rust mirror found in the code (no opening of the map with "
                         "typed key/value, no #[repr(C)] struct named %s): not checked; add a mirrors entry to "
                         "the spec to check it" % (c_name, ", ".join(used), _camel(key)))
    return {"pairs": sorted(pairs.values(), key=lambda p: (p["rust"], p["c"])), "sizes": sizes,
            "notes": notes, "drift": drift}


def _camel(snake: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in snake.split("_"))


def _d(kind: str, subject: str, message: str, fix: str) -> dict:
    return {"kind": kind, "subject": subject, "message": message, "fix": fix}


def pinned_table(maps: list, derived: dict) -> list:
    """Pinned-map ABI expectations from the object (every map it pins by name),
    with the tree's explicit list (``lqos_kernel.rs``) reported beside them:
    [{name, type, key_size, value_size, max_entries, flags, explicit: "file:line" | None}]."""
    explicit = {e["name"]: "%s:%d" % (e["file"], e["line"]) for e in derived.get("explicit_pins", [])}
    rows = [{"name": m["name"], "type": m["type_name"], "key_size": m["key_size"], "value_size": m["value_size"],
             "max_entries": m["max_entries"], "flags": m["flags"], "explicit": explicit.get(m["name"])}
            for m in maps if m.get("pinning")]
    return rows


def explicit_pin_drift(maps: list, derived: dict) -> list:
    """The tree's explicit pin list names a map the object does not pin."""
    pinned = {m["name"] for m in maps if m.get("pinning")}
    out = []
    for e in derived.get("explicit_pins", []):
        if e["name"] not in pinned:
            out.append(_d("pinned_map", e["name"],
                          "%s:%d checks pin /sys/fs/bpf/%s at start-up but the object pins no map %s (it pins: %s)"
                          % (e["file"], e["line"], e["name"], e["name"], ", ".join(sorted(pinned)) or "none"),
                          "restore the map (with LIBBPF_PIN_BY_NAME) in the BPF source, or update %s" % e["file"]))
    return out


def call_drift(calls: list, bound: dict | None, bindings_file: str) -> list:
    """Every function the Rust side calls through the bindings, checked against
    bindings.rs (``bound``: name -> parameter count, from ``_abi.drift.bindings_functions``)."""
    out = []
    if bound is None:
        return out
    seen = set()
    for c in calls:
        key = (c["name"], c["arity"])
        if key in seen:
            continue
        if c["name"] not in bound:
            seen.add(key)
            out.append(_d("binding_call", c["name"],
                          "%s:%d calls %s() through the bindings but %s has no `pub fn %s` (wrapper.h no longer "
                          "declares it, or libbpf's headers do not): cargo build would fail"
                          % (c["file"], c["line"], c["name"], bindings_file, c["name"]),
                          "declare %s() in wrapper.h (and define it in wrapper.c), or change the caller"
                          % c["name"]))
        elif bound[c["name"]] != c["arity"] and not bound.get("%s#variadic" % c["name"]):
            seen.add(key)
            out.append(_d("binding_call", c["name"],
                          "%s:%d calls %s() with %d argument(s) but %s declares it with %d parameter(s)"
                          % (c["file"], c["line"], c["name"], c["arity"], bindings_file, bound[c["name"]]),
                          "make wrapper.h's prototype and the Rust call agree"))
    return out


def skeleton_use_drift(uses: list, skel: dict | None, skel_file: str) -> list:
    """``X.progs.NAME`` / ``X.maps.NAME`` / ``X.links.NAME`` in Rust against the skeleton."""
    out = []
    if skel is None:
        return out
    have = {"progs": skel["programs"], "links": skel["programs"],
            "maps": skel["maps"] + skel.get("internal_maps", [])}
    for u in uses:
        pool = have.get(u["kind"], [])
        if u["name"] not in pool:
            out.append(_d("skeleton_use", u["name"],
                          "%s:%d uses skeleton %s.%s but %s has no %s `%s` (it has: %s)"
                          % (u["file"], u["line"], u["kind"], u["name"], skel_file,
                             "map" if u["kind"] == "maps" else "program", u["name"], ", ".join(pool) or "none"),
                          "update the Rust code to the skeleton's name, or restore `%s` in the BPF source"
                          % u["name"]))
    return out


def derive_from_object(spec: dict, obj_path: str, info: dict | None, derived: dict) -> tuple:
    """(pair entries for ``_abi.parity.compare_pair``, the ``derivation`` report, drift) of the derivation.

    Reads the object's BTF (``_kernel.btf.Btf.from_file``); ``info`` is
    ``_kernel.objects.object_info(obj_path)`` (None when it could not be read)."""
    from .._kernel.btf import Btf

    maps = (info or {}).get("maps", [])
    with Btf.from_file(obj_path) as btf:
        map_types = btf_map_types(btf, [m["name"] for m in maps])
        structs = resolvable_structs(btf, map_types)
    found = derive_pairs(spec, maps, map_types, structs, derived)
    entries = []
    for p in found["pairs"]:
        missing = {"layout": None, "asserted": [], "error": "the controller computed no layout for %s" % p["rust"]}
        t = derived["types"].get(p["rust"]) or missing
        entries.append({"rust": p["rust"], "c": p["c"], "layout": t["layout"], "error": t["error"],
                        "asserted": t.get("asserted", []), "origin": p["origin"], "maps": p["maps"]})
    drift = list(found["drift"])
    for u in derived.get("unsupported", []):
        drift.append(_d("unsupported", u["construct"],
                        "%s:%d: the ABI derivation does not understand this construct: %s (`%s`)"
                        % (u["file"], u["line"], u["message"], u["construct"]), u["fix"]))
    drift.extend(explicit_pin_drift(maps, derived))
    typed = sorted(m for m, t in map_types.items() if any(c_struct_name(x) in structs for x in t.values()))
    if typed and not spec.get("mirrors") and not any(p["origin"] == "map" for p in found["pairs"]):
        drift.append(_d("unsupported", "map openings",
                        "the ABI derivation found no Rust code under rust.roots that opens the object's maps (no "
                        "`Map::<K, V>::...(\"/sys/fs/bpf/NAME\")` and no iterator reader `Iter::new(skel.progs.P, "
                        "skel.maps.M)`), so the struct-typed maps %s were not compared with any Rust type"
                        % ", ".join(typed),
                        "point rust.roots at the Rust code that opens the pinned maps, or add mirrors entries "
                        "(Rust type <-> C type) to the spec"))
    if derived.get("calls") == [] and derived.get("bindings_module") is None:
        found["notes"].append("no Rust module includes bindings.rs under rust.roots: calls through the bindings "
                              "were not checked")
    report = {"pairs": [{k: p[k] for k in ("rust", "c", "origin", "maps")} for p in found["pairs"]],
              "map_sizes": found["sizes"], "notes": found["notes"],
              "programs": [{k: p[k] for k in ("name", "section", "type_name")} for p in (info or {}).get("programs", [])],
              "pinned_maps": pinned_table(maps, derived),
              "map_types": map_types, "bindings_module": derived.get("bindings_module"),
              "calls": len(derived.get("calls", [])), "skeleton_uses": len(derived.get("skeleton_uses", []))}
    return entries, report, drift
