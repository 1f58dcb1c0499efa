# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Validation of a pipeline spec (docs/pipeline-spec.md).

The YAML is read on the controller (plugin_utils/_spec_loader.py); modules
receive a mapping and validate it here, so a malformed spec fails with one
message that names the key and the fix, whichever side reads it first.

Every value is checked for its type before it is used: a scalar where a list
or mapping belongs, a key nobody reads (a typo) or a value out of range is an
``LqosError`` naming the key path (``attach.tc[0].handle``), never a Python
exception.

May import: _common, _cexpr."""

from __future__ import annotations

import os
import re

from ._common import LqosError
# Re-exported: header constants lived here before they got their own file.
from ._cexpr import (  # noqa: F401 pylint: disable=unused-import
    eval_int_expr, header_constants,
)

DEFAULT_CLANG_FLAGS = [
    "-S", "-target", "bpf", "-Wall", "-Wno-unused-value", "-Wno-pointer-sign",
    "-Wno-compare-distinct-pointer-types", "-Werror", "-emit-llvm", "-g", "-O2",
]
DEFAULT_LLC_FLAGS = ["-march=bpf", "-filetype=obj"]
OUTPUT_KEYS = ("ir", "object", "skeleton", "wrapper_object", "archive", "bindings")
TC_DIRECTIONS = ("egress", "ingress")
# What abi_check/pipeline derive from the tree and its object (docs/pipeline-spec.md, `derive`).
DERIVE_DEFAULTS = {"mirrors": True, "constants": True, "calls": True, "flags": False}
SPECIAL_VALUES = ("possible_cpus", "ifindex", "ifindex:NAME", "be16:N")
_SPECIAL_VALUE = re.compile(r"^(possible_cpus|ifindex|ifindex:[^/:\s]{1,15}|be16:(0x[0-9a-fA-F]{1,4}|[0-9]{1,5}))$")


def is_load_value(value) -> bool:
    """An attach.rodata/attach.data value: an integer, ``possible_cpus``, ``ifindex`` (the interface's
    own index), ``ifindex:NAME`` (another interface's index in the same netns) or ``be16:N`` (N in
    network byte order, e.g. a VLAN id)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    if not isinstance(value, str) or not _SPECIAL_VALUE.match(value):
        return False
    return not value.startswith("be16:") or int(value[5:], 0) <= 0xFFFF


PROGRAM_ROLES = ("required", "optional", "disabled")
# The shaper topologies (deploy role's lqos_bpf_topology); a TC program of attach.tc is attached in those its
# `topologies` lists (default: every one, but the bridge redirector of topology.bridge in bridge mode only).
TOPOLOGIES = ("pair", "bridge", "stick")
TOP_KEYS = ("name", "description", "sources", "outputs", "flags", "expect", "cpu_sized_maps", "rust",
            "mirrors", "constants", "pinned_maps", "attach", "toolchain", "programs", "derive", "health",
            "topology")
SECTION_KEYS = {
    "sources": ("workdir", "kern", "wrapper_c", "wrapper_h", "inputs"),
    "outputs": OUTPUT_KEYS,
    "flags": ("clang", "llc", "wrapper", "bindgen", "bindgen_clang"),
    "expect": ("programs", "maps"),
    "rust": ("roots", "workspace"),
    "attach": ("xdp", "tc", "rodata", "data"),
    "toolchain": ("minimum_versions",),
    "health": ("map", "down", "up", "ipv4"),
    "topology": ("direction", "own_ifindex", "internet_ifindex", "isp_ifindex", "internet_vlan", "isp_vlan",
                 "stick_offset", "bridge"),
    "topology.bridge": ("program", "map", "target", "vlan", "stick_flag"),
    "topology.bridge.vlan": ("map", "key", "value"),
    "topology.bridge.vlan.key": ("ifindex", "tag"),
}
# A VLAN redirect map keyed by one 32-bit integer: the interface index in the high 16 bits, the tag in the low 16
# (LibreQoS's bifrost_vlan_map); otherwise the key is a struct whose two fields the spec names.
VLAN_PACKED_KEY = "ifindex<<16|tag"
# Load-time variables a topology sets (spec `topology`, docs/pipeline-spec.md): key -> what the variable holds.
TOPOLOGY_VARIABLES = {
    "direction": "the interface's direction (1 Internet-facing, 2 ISP-facing, 3 on a stick)",
    "own_ifindex": "the interface's own index",
    "internet_ifindex": "the index of the Internet-facing interface",
    "isp_ifindex": "the index of the ISP-facing interface",
    "internet_vlan": "the Internet VLAN id on a stick (network byte order)",
    "isp_vlan": "the ISP VLAN id on a stick (network byte order)",
    "stick_offset": "the CPU offset of upload traffic on a stick",
}
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ITEM_KEYS = {
    "cpu_sized_maps": ("map", "constant", "header"),
    "mirrors": ("rust", "c"),
    "constants": ("name", "header", "rust", "rust_name"),
    "pinned_maps": ("name", "key_size", "value_size", "counter"),
    "attach.tc": ("program", "direction", "handle", "priority", "optional", "topologies"),
}
# The spec name is a folder name (the default build root is /var/lib/lqos-bpf/<name>).
NAME_PATTERN = "[a-z0-9_-]+"
_NAME = re.compile(r"^%s$" % NAME_PATTERN)
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUST_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")
U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF


def _fail(spec_name: str, key: str, problem: str, fix: str) -> LqosError:
    return LqosError("pipeline spec %r: %s %s." % (spec_name, key, problem), fix)


def _kind(value) -> str:
    """A YAML-ish name for a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Type checks that name the key path in their one error."""

    def __init__(self, name: str):
        self.name = name

    def fail(self, key: str, problem: str, fix: str) -> LqosError:
        return _fail(self.name, "`%s`" % key, problem, fix)

    def mapping(self, key: str, value, keys=None, required: bool = False) -> dict:
        """``value`` as a dict (None -> {} unless required); with ``keys``, unknown keys are refused."""
        if value is None:
            if required:
                raise self.fail(key, "is missing", "add the `%s:` mapping (see docs/pipeline-spec.md)" % key)
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping, got %s %s" % (_kind(value), _show(value)),
                            "write `%s:` as key: value pairs" % key)
        if keys is not None:
            for k in value:
                if k not in keys:
                    raise self.fail("%s.%s" % (key, k), "is not a known key",
                                    "remove it or fix the spelling; known keys under `%s`: %s" % (key, ", ".join(keys)))
        return value

    def items(self, key: str, value) -> list:
        """``value`` as a list (None -> [])."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "must be a list, got %s %s" % (_kind(value), _show(value)),
                            "write it as a YAML list (`- item` lines or [a, b]), or leave it out")
        return value

    def item(self, list_key: str, i: int, value) -> dict:
        key = "%s[%d]" % (list_key, i)
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping, got %s %s" % (_kind(value), _show(value)),
                            "give its keys: %s" % ", ".join(ITEM_KEYS[list_key]))
        return self.mapping(key, value, ITEM_KEYS[list_key])

    def rel_path(self, key: str, value) -> str:
        if not isinstance(value, str) or not value or "\0" in value:
            raise self.fail(key, "must be a non-empty path string, got %s" % _show(value),
                            "give a path relative to the crate root")
        if os.path.isabs(value):
            raise self.fail(key, "must be relative, got %r" % value,
                            "give it relative to the crate root (the module's `src`)")
        return os.path.normpath(value)

    def file_name(self, key: str, value) -> str:
        if not isinstance(value, str) or not _FILE_NAME.match(value) or value in (".", ".."):
            raise self.fail(key, "must be a plain file name (letters, digits, _ . -), got %s" % _show(value),
                            "outputs are file names inside the build folder, without '/'")
        return value

    def str_list(self, key: str, value) -> list:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) or _is_int(v) for v in value):
            raise self.fail(key, "must be a list of strings, got %s" % _show(value),
                            "write it as a YAML list, one flag or name per item")
        return [str(v) for v in value]

    def ident(self, key: str, value) -> str:
        if not isinstance(value, str) or not _IDENT.match(value):
            raise self.fail(key, "must be a C identifier, got %s" % _show(value),
                            "use the name as it is written in the C source")
        return value

    def text(self, key: str, value) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string, got %s" % _show(value), "quote it if YAML reads it as "
                            "something else")
        return value

    def boolean(self, key: str, value) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false, got %s" % _show(value), "write true or false")
        return value

    def integer(self, key: str, value, minimum: int = 0, maximum: int | None = None) -> int:
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            bound = ">= %d" % minimum if maximum is None else "from %d to %d (0x%x)" % (minimum, maximum, maximum)
            raise self.fail(key, "must be an integer %s, got %s" % (bound, _show(value)),
                            "write a number in that range (hex like 0xC02F is fine in YAML)")
        return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def tc_topologies(spec: dict, item: dict) -> list:
    """The topologies a TC program of ``attach.tc`` is attached in: its ``topologies``, else every one but for the
    bridge redirector of ``topology.bridge`` (bridge mode only). ``spec`` is validated."""
    if item.get("topologies"):
        return list(item["topologies"])
    bridge = (spec.get("topology") or {}).get("bridge")
    return ["bridge"] if bridge and bridge["program"] == item["program"] else list(TOPOLOGIES)


def _topologies(c: "_Checker", key: str, value):
    """attach.tc[i].topologies: None (the default, see ``tc_topologies``) or a non-empty list of TOPOLOGIES."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or any(v not in TOPOLOGIES for v in value):
        raise c.fail(key, "must be a non-empty list of %s, got %s" % (", ".join(TOPOLOGIES), _show(value)),
                     "list the topologies this TC program is attached in, e.g. [bridge, stick]")
    return [t for t in TOPOLOGIES if t in value]


def _vlan_map(c, raw):
    """topology.bridge.vlan: {map, key: {ifindex, tag} or VLAN_PACKED_KEY, value} or None."""
    vv = c.mapping("topology.bridge.vlan", raw, SECTION_KEYS["topology.bridge.vlan"])
    if not vv:
        return None
    key = vv.get("key")
    if key != VLAN_PACKED_KEY:
        if not isinstance(key, dict):
            raise c.fail("topology.bridge.vlan.key", "must name the key's fields {ifindex: FIELD, tag: FIELD} or be "
                         "%s, got %s" % (VLAN_PACKED_KEY, _show(key)),
                         "name the key struct's two fields, or write %s for one 32-bit key" % VLAN_PACKED_KEY)
        c.mapping("topology.bridge.vlan.key", key, SECTION_KEYS["topology.bridge.vlan.key"])
        key = {k: c.ident("topology.bridge.vlan.key.%s" % k, key.get(k)) for k in ("ifindex", "tag")}
    value = vv.get("value")
    if not isinstance(value, str) or not _FIELD_PATH.match(value):
        raise c.fail("topology.bridge.vlan.value", "must be a field path of the map's value, got %s" % _show(value),
                     "name the field that holds the VLAN id to send the frame out with, e.g. `vlan_id`")
    return {"map": c.ident("topology.bridge.vlan.map", vv.get("map")), "key": key, "value": value}


def validate_spec(raw) -> dict:
    """Return a normalised copy of ``raw`` (a mapping, as loaded from YAML) with
    defaults filled in; raise LqosError naming the first bad key otherwise."""
    if not isinstance(raw, dict):
        raise LqosError("pipeline spec must be a mapping, got %s." % type(raw).__name__,
                        "pass a built-in name (reference, libreqos), a YAML file path, or a mapping.")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise LqosError("pipeline spec: `name` must match %s (it names the build folder), got %s."
                        % (NAME_PATTERN, _show(name)),
                        "add e.g. `name: reference` at the top of the spec.")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise _fail(name, "key(s) %s" % ", ".join("`%s`" % (k,) for k in unknown), "are not known",
                    "remove them or fix the spelling; known keys: %s" % ", ".join(sorted(TOP_KEYS)))
    c = _Checker(name)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "must be a string, got %s" % _show(description), "quote it")

    src = c.mapping("sources", raw.get("sources"), SECTION_KEYS["sources"], required=True)
    sources = {
        "workdir": c.rel_path("sources.workdir", src.get("workdir", ".")),
        "kern": c.rel_path("sources.kern", src.get("kern")),
        "wrapper_c": c.rel_path("sources.wrapper_c", src.get("wrapper_c", "wrapper.c")),
        "wrapper_h": c.rel_path("sources.wrapper_h", src.get("wrapper_h", "wrapper.h")),
        "inputs": [c.rel_path("sources.inputs", p) for p in c.str_list("sources.inputs", src.get("inputs"))],
    }

    out = c.mapping("outputs", raw.get("outputs"), SECTION_KEYS["outputs"], required=True)
    stem = os.path.splitext(os.path.basename(sources["kern"]))[0]
    defaults = {"ir": stem + ".ll", "object": stem + ".o", "skeleton": stem + "_skel.h",
                "wrapper_object": "libwrapper.o", "archive": "libwrapper.a", "bindings": "bindings.rs"}
    outputs = {k: c.file_name("outputs." + k, out.get(k, defaults[k])) for k in OUTPUT_KEYS}
    if len(set(outputs.values())) != len(outputs):
        raise _fail(name, "`outputs`", "name the same file twice", "give each output its own file name")

    fl = c.mapping("flags", raw.get("flags"), SECTION_KEYS["flags"])
    flags = {
        "clang": c.str_list("flags.clang", fl.get("clang", DEFAULT_CLANG_FLAGS)),
        "llc": c.str_list("flags.llc", fl.get("llc", DEFAULT_LLC_FLAGS)),
        "wrapper": c.str_list("flags.wrapper", fl.get("wrapper")),
        "bindgen": c.str_list("flags.bindgen", fl.get("bindgen")),
        "bindgen_clang": c.str_list("flags.bindgen_clang", fl.get("bindgen_clang")),
    }
    for bad in ("-o", "-c"):
        if bad in flags["clang"]:
            raise _fail(name, "`flags.clang`", "contains %s" % bad, "leave output and mode flags to the module")

    ex = c.mapping("expect", raw.get("expect"), SECTION_KEYS["expect"])
    programs = c.mapping("expect.programs", ex.get("programs"))
    expect = {
        "programs": {c.ident("expect.programs", k): c.text("expect.programs.%s" % k, v) for k, v in programs.items()},
        "maps": [c.ident("expect.maps", m) for m in c.str_list("expect.maps", ex.get("maps"))],
    }

    cpu_sized = []
    for i, item in enumerate(c.items("cpu_sized_maps", raw.get("cpu_sized_maps"))):
        key = "cpu_sized_maps[%d]" % i
        item = c.item("cpu_sized_maps", i, item)
        cpu_sized.append({
            "map": c.ident(key + ".map", item.get("map")),
            "constant": c.ident(key + ".constant", item.get("constant")),
            "header": c.rel_path(key + ".header", item.get("header")),
        })

    rust_raw = c.mapping("rust", raw.get("rust"), SECTION_KEYS["rust"])
    rust = {"roots": [c.rel_path("rust.roots", p) for p in c.str_list("rust.roots", rust_raw.get("roots", ["src"]))],
            # Also every crate of the Cargo workspace around the crate that names a pin path of a map the C
            # sources pin (plugin_utils/_rust/workspace.py), e.g. LibreQoS's lqos_heimdall.
            "workspace": c.boolean("rust.workspace", rust_raw.get("workspace", False))}

    mirrors = []
    for i, item in enumerate(c.items("mirrors", raw.get("mirrors"))):
        key = "mirrors[%d]" % i
        item = c.item("mirrors", i, item)
        if not item.get("rust") or not item.get("c"):
            raise c.fail(key, "must have both `rust` and `c`", "e.g. `{rust: IpHashData, c: ip_hash_info}`")
        rust_type = item["rust"]
        if not isinstance(rust_type, str) or not _RUST_PATH.match(rust_type):
            raise c.fail(key + ".rust", "must be a Rust type name, got %s" % _show(rust_type),
                         "use the struct's name as written after `struct` in the Rust source")
        mirrors.append({"rust": rust_type, "c": c.ident(key + ".c", item["c"])})

    constants = []
    for i, item in enumerate(c.items("constants", raw.get("constants"))):
        key = "constants[%d]" % i
        item = c.item("constants", i, item)
        constants.append({
            "name": c.ident(key + ".name", item.get("name")),
            "header": c.rel_path(key + ".header", item.get("header")),
            "rust": c.rel_path(key + ".rust", item["rust"]) if item.get("rust") is not None else None,
            "rust_name": c.ident(key + ".rust_name", item.get("rust_name", item.get("name"))),
        })

    pinned = []
    for i, item in enumerate(c.items("pinned_maps", raw.get("pinned_maps"))):
        key = "pinned_maps[%d]" % i
        item = c.item("pinned_maps", i, item)
        pinned.append({"name": c.ident(key + ".name", item.get("name")),
                       "key_size": c.integer(key + ".key_size", item.get("key_size"), 1, U32_MAX),
                       "value_size": c.integer(key + ".value_size", item.get("value_size"), 1, U32_MAX),
                       "counter": _counter_flag(c, key + ".counter", item.get("counter", False))})

    at = c.mapping("attach", raw.get("attach"), SECTION_KEYS["attach"])
    tc = []
    for i, item in enumerate(c.items("attach.tc", at.get("tc"))):
        key = "attach.tc[%d]" % i
        item = c.item("attach.tc", i, item)
        direction = item.get("direction", "egress")
        if direction not in TC_DIRECTIONS:
            raise c.fail(key + ".direction", "must be egress or ingress, got %s" % _show(direction),
                         "use egress for the classifier, ingress for a bridge redirector")
        tc.append({
            "program": c.ident(key + ".program", item.get("program")),
            "direction": direction,
            # A tc filter handle is a u32, its priority a u16 (the kernel's tcm_info halves).
            "handle": c.integer(key + ".handle", item.get("handle", 1), 1, U32_MAX),
            "priority": c.integer(key + ".priority", item.get("priority", 0xC02F), 1, U16_MAX),
            "optional": c.boolean(key + ".optional", item.get("optional", False)),
            "topologies": _topologies(c, key + ".topologies", item.get("topologies")),
        })
    variables = {}
    for section in ("rodata", "data"):
        values = c.mapping("attach.%s" % section, at.get(section))
        for var, value in values.items():
            c.ident("attach.%s" % section, var)
            if not is_load_value(value):
                raise c.fail("attach.%s.%s" % (section, var),
                             "must be an integer or one of %s, got %s" % (", ".join(SPECIAL_VALUES), _show(value)),
                             "write a number or a special word")
        variables[section] = dict(values)
    xdp = at.get("xdp")
    attach = {"xdp": c.ident("attach.xdp", xdp) if xdp is not None else None, "tc": tc,
              "rodata": variables["rodata"], "data": variables["data"]}

    dv = c.mapping("derive", raw.get("derive"), tuple(DERIVE_DEFAULTS))
    derive = {}
    for key, default in DERIVE_DEFAULTS.items():
        derive[key] = c.boolean("derive.%s" % key, dv.get(key, default))

    roles = {}
    for prog, role in c.mapping("programs", raw.get("programs")).items():
        c.ident("programs", prog)
        if role not in PROGRAM_ROLES:
            raise c.fail("programs.%s" % prog, "must be one of %s, got %s" % (", ".join(PROGRAM_ROLES), _show(role)),
                         "required: the host fails without it; optional: left out with a warning when the kernel "
                         "refuses it; disabled: never loaded")
        roles[prog] = role

    hv = c.mapping("health", raw.get("health"), SECTION_KEYS["health"])
    health = None
    if hv:
        health = {"map": c.ident("health.map", hv.get("map"))}
        for key in ("down", "up"):
            if not isinstance(hv.get(key), str) or not _FIELD_PATH.match(hv[key]):
                raise c.fail("health.%s" % key, "must be a field path of the map's value, got %s" % _show(hv.get(key)),
                             "name the counter field, e.g. `icmp_packets.down` or `icmp_download_packets`")
            health[key] = hv[key]
        # How the map's 16-byte address keys hold IPv4 (module_utils/_kernel/counters.py IPV4_PREFIXES).
        ipv4 = hv.get("ipv4", "mapped")
        if ipv4 not in ("mapped", "ff_prefix"):
            raise c.fail("health.ipv4", "must be mapped or ff_prefix, got %s" % _show(ipv4),
                         "mapped: ::ffff:a.b.c.d (RFC 4291); ff_prefix: twelve 0xff bytes then the address "
                         "(LibreQoS)")
        health["ipv4"] = ipv4

    tv = c.mapping("topology", raw.get("topology"), SECTION_KEYS["topology"])
    topology = None
    if tv:
        topology = {}
        for key in TOPOLOGY_VARIABLES:
            topology[key] = c.ident("topology.%s" % key, tv[key]) if tv.get(key) is not None else None
        if topology["direction"] is None:
            raise c.fail("topology.direction", "is missing",
                         "name the load-time variable that holds the interface's direction")
        bv = c.mapping("topology.bridge", tv.get("bridge"), SECTION_KEYS["topology.bridge"])
        topology["bridge"] = None
        if bv:
            topology["bridge"] = {k: c.ident("topology.bridge.%s" % k, bv.get(k)) for k in ("program", "map")}
            target = bv.get("target")
            if not isinstance(target, str) or not _FIELD_PATH.match(target):
                raise c.fail("topology.bridge.target", "must be a field path of the map's value, got %s"
                             % _show(target), "name the field that holds the interface to redirect to, e.g. "
                             "`to_ifindex`")
            topology["bridge"]["target"] = target
            topology["bridge"]["vlan"] = _vlan_map(c, bv.get("vlan"))
            # On a stick the redirector sends a frame back out of the interface it came in on, VLAN tag swapped:
            # the interface map's entry for the stick sets this value field to 1 (LibreQoS: scan_vlans).
            flag = bv.get("stick_flag")
            if flag is not None and (not isinstance(flag, str) or not _FIELD_PATH.match(flag)):
                raise c.fail("topology.bridge.stick_flag", "must be a field path of the map's value, got %s"
                             % _show(flag), "name the field set to 1 for a stick, e.g. `scan_vlans`")
            topology["bridge"]["stick_flag"] = flag

    tool = c.mapping("toolchain", raw.get("toolchain"), SECTION_KEYS["toolchain"])
    minimums = c.mapping("toolchain.minimum_versions", tool.get("minimum_versions"))
    for tool_name, version in minimums.items():
        if not isinstance(tool_name, str) or not _FILE_NAME.match(tool_name):
            raise c.fail("toolchain.minimum_versions", "must map tool name -> version, got key %s" % _show(tool_name),
                         "e.g. `clang: '11'`")
        if isinstance(version, bool) or not isinstance(version, (str, int, float)):
            raise c.fail("toolchain.minimum_versions.%s" % tool_name, "must be a version, got %s" % _show(version),
                         "e.g. `clang: '11'` (quote dotted versions)")

    return {
        "name": name,
        "description": description,
        "sources": sources,
        "outputs": outputs,
        "flags": flags,
        "expect": expect,
        "cpu_sized_maps": cpu_sized,
        "rust": rust,
        "mirrors": mirrors,
        "constants": constants,
        "pinned_maps": pinned,
        "attach": attach,
        "health": health,
        "topology": topology,
        "programs": roles,
        "toolchain": {"minimum_versions": {str(k): str(v) for k, v in minimums.items()}},
        "derive": derive,
    }


def _counter_flag(c, key: str, value) -> bool:
    """pinned_maps[].counter: true when every field of the map's values is a count that adds up (a catch-up
    after a replacement then adds the old map's increases to the new map's values)."""
    if not isinstance(value, bool):
        raise c.fail(key, "must be true or false, got %s" % _show(value),
                     "write counter: true for a map whose fields all add up, or leave it out")
    return value
