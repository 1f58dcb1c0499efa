# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What lqos.bpf.attach plans, as pure logic: naming of pins and state files, the
load parameters and their fingerprint, what the spec wants on each hook, the decision
for each hook slot (keep, attach, replace, ...), the plan's wording and the refusals.
Plain data in, plain data out: unit-tested without a kernel (test_attach_pure.py)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re

from .._common import (
    canonical_json, default_build_root, LqosError,
)
from .._ownership.owners import COLLECTION_PIN_DIR

PIN_SUBDIR = COLLECTION_PIN_DIR   # what makes a program ours (_ownership)
HOST_NETNS = "host"
NEW_SUFFIX = "__new"
DEFAULT_STATE_DIR = "/run/lqos-bpf/attach"
STATE_VERSION = 1
XDP_MODES = ("auto", "hw", "native", "skb")
XDP_WALK = ("hw", "native", "skb")
KERNEL_NAME_LEN = 15          # BPF_OBJ_NAME_LEN - 1: the kernel truncates program names
# Attach errors that end the hw -> native -> skb walk instead of trying the next mode.
NO_FALLBACK_ERRNOS = frozenset((errno.EEXIST, errno.EBUSY, errno.ENODEV, errno.EPERM, errno.EACCES))
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_IFNAME_BAD = re.compile(r"[/:\s]")

# Decision kinds for one hook slot.
KEEP = "keep"                        # ours, same fingerprint/program/mode: nothing to do
ATTACH = "attach"                    # hook empty: attach the new program
REPLACE = "replace"                  # ours, different fingerprint/program: atomic swap
VERIFY = "verify"                    # ours, no record: load, compare by tag + values, keep or swap
REPLACE_FOREIGN = "replace_foreign"  # not ours, force: atomic swap
REATTACH = "reattach"                # XDP mode change: detach, then attach (not atomic)
REPLACE_LINK = "replace_link"        # foreign program held by a bpf_link, force: detach the link, attach (not atomic)
REFUSE = "refuse"                    # not ours, no force
DETACH = "detach"                    # ours, no longer wanted (or state=absent)
LEAVE = "leave"                      # not ours and not ours to touch (state=absent)
NONE = "none"                        # nothing there, nothing wanted
ADOPT = "adopt"                      # VERIFY found the attached program identical


# ---------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------

def pin_component(name: str) -> str:
    """``name`` as one bpffs path component. bpffs refuses '.' in names (EPERM),
    so '.', '%' and '/' are percent-encoded: ``eth0.100`` -> ``eth0%2E100``."""
    if not name:
        raise LqosError("an empty name cannot be a pin path component.", "give a non-empty name.")
    return name.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


def pin_rel_dir(netns: str | None, ifname: str) -> str:
    """Our pin folder relative to pin_root: ``lqos_bpf/<netns or host>/<ifname>``."""
    return "/".join((PIN_SUBDIR, pin_component(netns or HOST_NETNS), pin_component(ifname)))


def state_file_name(pin_root: str, netns: str | None, ifname: str) -> str:
    """One state file per (pin root, netns, interface)."""
    key = hashlib.sha256(("%s\0%s\0%s" % (pin_root, netns or "", ifname)).encode("utf-8")).hexdigest()[:12]
    return "%s-%s-%s.json" % (pin_component(netns or HOST_NETNS), pin_component(ifname), key)


def default_object(spec: dict) -> str:
    return os.path.join(default_build_root(spec["name"]), "current", spec["outputs"]["object"])


def slot_id(slot: dict) -> str:
    """``egress:0x1:0xc02f`` for a TC slot."""
    return "%s:0x%x:0x%x" % (slot["direction"], slot["handle"], slot["priority"])


def validate_netns(netns: str | None) -> None:
    if netns is None:
        return
    if not _NETNS_NAME.match(netns) or netns == HOST_NETNS:
        raise LqosError("netns %r is not a network namespace name." % (netns,),
                        "give the name of a namespace under /run/netns (as `ip netns list` shows it), without '/'; "
                        "omit netns for the host's namespace.")


def validate_ifname(ifname: str) -> None:
    if not ifname or len(ifname) > 15 or _IFNAME_BAD.search(ifname) or ifname in (".", ".."):
        raise LqosError("interface %r is not a valid interface name." % (ifname,),
                        "give the name `ip link` shows (at most 15 characters, no '/', ':' or spaces).")


# ---------------------------------------------------------------------------
# Load parameters and fingerprint
# ---------------------------------------------------------------------------

def resolve_values(values: dict, ncpus: int, ifindex: int, lookup=None) -> dict:
    """Replace the special words of attach.rodata/attach.data (and the module's rodata/data) by their values:
    ``possible_cpus``, ``ifindex``, ``ifindex:NAME`` (``lookup(NAME)``), ``be16:N`` (N byte-swapped into the
    little-endian integer whose bytes are N in network order: BPF objects here are little-endian)."""
    out = {}
    for var, value in sorted(values.items()):
        if value == "possible_cpus":
            out[var] = ncpus
        elif value == "ifindex":
            out[var] = ifindex
        elif isinstance(value, str) and value.startswith("ifindex:"):
            out[var] = lookup(value[len("ifindex:"):]) if lookup else value
        elif isinstance(value, str) and value.startswith("be16:"):
            out[var] = int.from_bytes(int(value[5:], 0).to_bytes(2, "big"), "little")
        else:
            out[var] = value
    return out


def load_params(spec: dict, ncpus: int, ifindex: int, overrides: dict | None = None, lookup=None,
                has_var=None, notes: list | None = None) -> dict:
    """What load_object gets besides the path: map resizes and global values.

    overrides: the module's own {"rodata": {}, "data": {}} for this interface, over the spec's. has_var(name):
    does the object have that global? A spec value for a variable the object lacks (an older release) is left
    out with a note; an override for one is an error."""
    values = {}
    for section in ("rodata", "data"):
        wanted = dict(spec["attach"].get(section) or {})
        if has_var is not None:
            for var in sorted(wanted):
                if not has_var(var):
                    del wanted[var]
                    if notes is not None:
                        notes.append("spec attach.%s.%s is not set: the object has no such variable" % (section, var))
        mine = (overrides or {}).get(section) or {}
        missing = sorted(v for v in mine if has_var is not None and not has_var(v))
        if missing:
            raise LqosError("%s %s: the object has no such global variable." % (section, ", ".join(missing)),
                            "check the names against the BPF source (non-static globals of .rodata, .data, .bss).")
        wanted.update(mine)
        values[section] = resolve_values(wanted, ncpus, ifindex, lookup)
    return {"resize": {item["map"]: ncpus for item in spec.get("cpu_sized_maps") or []},
            "rodata": values["rodata"], "data": values["data"]}


def fingerprint(object_sha256: str, params: dict) -> str:
    """sha256 over the object's content hash and the load parameters: equal
    fingerprints load identical programs with identical load-time values."""
    blob = canonical_json({"object_sha256": object_sha256, "params": params})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def describe_params(params: dict) -> str:
    parts = ["%s max_entries=%d" % (m, n) for m, n in sorted(params["resize"].items())]
    parts += ["rodata %s=%s" % (k, v) for k, v in sorted(params["rodata"].items())]
    parts += ["data %s=%s" % (k, v) for k, v in sorted(params["data"].items())]
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# What the spec wants
# ---------------------------------------------------------------------------

def wanted_slots(spec: dict, programs: dict, with_tc: bool, object_path: str, only=None) -> tuple:
    """(xdp program or None, [tc slots], notes) for an object whose programs are
    ``programs`` {name: prog type name}; ``only``: the names of the spec's TC
    programs to attach (None: those the spec attaches on a plain interface, its
    ``topologies`` listing ``pair``; the others are named in a note). Fails when a required program is missing or
    has the wrong type."""
    attach = spec.get("attach") or {}
    notes = []
    if only is None and with_tc:
        # No topology given: the interface is a plain one (a pair's port); a TC program the spec marks for other
        # topologies only (LibreQoS's bifrost: bridge, stick) is left out, and the note says which. A program
        # without `topologies` is attached, as before they existed.
        left = [t for t in attach.get("tc") or [] if "pair" not in (t.get("topologies") or ["pair"])]
        only = [t["program"] for t in attach.get("tc") or [] if t not in left]
        for t in left:
            notes.append("TC program %s left out: the spec attaches it only in the %s topolog%s (attach.tc "
                         "topologies); name it in tc_programs, or deploy with that lqos_bpf_topology, to attach it"
                         % (t["program"], " and ".join(t["topologies"]), "y" if len(t["topologies"]) == 1 else "ies"))
    elif only is not None:
        listed = [t["program"] for t in attach.get("tc") or []]
        unknown = [p for p in only if p not in listed]
        if unknown:
            raise LqosError("tc_programs: %s %s not among the spec's TC programs (attach.tc: %s)."
                            % (", ".join(unknown), "is" if len(unknown) == 1 else "are", ", ".join(listed) or "none"),
                            "name programs of attach.tc, or leave tc_programs out to attach all of them.")

    def check(name, want_type, key, optional=False):
        if name not in programs:
            if optional:
                notes.append("optional program %s (%s) is not in %s: skipped" % (name, key, object_path))
                return False
            raise LqosError("program %s (spec %s) is not in %s; it has %s."
                            % (name, key, object_path, ", ".join(sorted(programs)) or "no programs"),
                            "rebuild the object with lqos.bpf.pipeline, or fix spec %s." % key)
        if programs[name] != want_type:
            raise LqosError("program %s (spec %s) in %s is a %s program, not %s."
                            % (name, key, object_path, programs[name], want_type),
                            "name a SEC(\"%s\") program there." % ("xdp" if want_type == "xdp" else "tc"))
        return True

    xdp = attach.get("xdp")
    if xdp:
        check(xdp, "xdp", "attach.xdp")
    tc = []
    if with_tc:
        seen = {}
        for i, item in enumerate(attach.get("tc") or []):
            key = "attach.tc[%d]" % i
            if only is not None and item["program"] not in only:
                continue
            if not check(item["program"], "sched_cls", key, item.get("optional", False)):
                continue
            slot = {"program": item["program"], "direction": item["direction"],
                    "handle": item["handle"], "priority": item["priority"]}
            sid = slot_id(slot)
            if sid in seen:
                raise LqosError("spec attach.tc[%d] and attach.tc[%d] both use %s handle 0x%x priority 0x%x."
                                % (seen[sid], i, slot["direction"], slot["handle"], slot["priority"]),
                                "give each TC program its own handle/priority.")
            seen[sid] = i
            tc.append(slot)
    if not xdp and not tc:
        raise LqosError("spec %r attaches nothing%s." % (spec["name"], "" if with_tc else " (tc: false)"),
                        "add attach.xdp and/or attach.tc to the spec (see docs/pipeline-spec.md).")
    return xdp, tc, notes


# ---------------------------------------------------------------------------
# Decisions (pure)
# ---------------------------------------------------------------------------

def _record_matches(record, current_id, fp, program) -> tuple:
    """(record describes the attached id, and it was loaded from fp as program)."""
    valid = bool(record) and record.get("id") == current_id
    same = valid and record.get("fingerprint") == fp and record.get("program") == program
    return valid, same


def decide_xdp(program: str | None, want_mode: str, current: dict, ours: set, record: dict | None,
               fp: str, force: bool) -> dict:
    """current: {"ids": {mode: id}, "info": {id: {name, tag}}}. Returns {kind, mode, old_id, old_mode, reason}."""
    ids = current.get("ids") or {}
    if len(ids) > 1:
        desc = ", ".join("id %d in %s mode" % (i, m) for m, i in sorted(ids.items()))
        return {"kind": REFUSE, "reason": "multi",
                "msg": "XDP programs are attached in several modes at once (%s)." % desc}
    old_mode, old_id = next(iter(ids.items())) if ids else (None, 0)
    base = {"old_id": old_id or None, "old_mode": old_mode}
    if program is None:
        if old_id and old_id in ours:
            return dict(base, kind=DETACH, mode=old_mode, reason="the spec attaches no XDP program any more")
        return dict(base, kind=NONE if not old_id else LEAVE, mode=old_mode)
    if not old_id:
        return dict(base, kind=ATTACH, mode=want_mode)
    mode_ok = want_mode in ("auto", old_mode)
    if old_id not in ours:
        if not force:
            return dict(base, kind=REFUSE, reason="foreign", mode=old_mode)
        if want_mode == "auto" and old_mode == "skb":
            # Someone else's generic-mode program says nothing about the driver: detach it and walk hw -> native
            # -> skb, as for an empty hook, rather than keep the slow mode an atomic replace would keep.
            return dict(base, kind=REATTACH, foreign=True, mode="auto")
        return dict(base, kind=REPLACE_FOREIGN if mode_ok else REATTACH, foreign=True,
                    mode=old_mode if mode_ok else want_mode)
    if not mode_ok:
        return dict(base, kind=REATTACH, mode=want_mode, foreign=False)
    valid, same = _record_matches(record, old_id, fp, program)
    if same:
        return dict(base, kind=KEEP, mode=old_mode)
    if valid:
        return dict(base, kind=REPLACE, mode=old_mode)
    name = (current.get("info") or {}).get(old_id, {}).get("name")
    if name is not None and name != program[:KERNEL_NAME_LEN]:
        return dict(base, kind=REPLACE, mode=old_mode)
    return dict(base, kind=VERIFY, mode=old_mode)


def decide_tc(slot: dict | None, current_id: int | None, current_info: dict | None, ours: set,
              record: dict | None, fp: str, force: bool) -> dict:
    """slot None: a slot we recorded that the spec no longer wants."""
    base = {"old_id": current_id or None}
    if slot is None:
        if current_id and current_id in ours:
            return dict(base, kind=DETACH, reason="the spec no longer attaches a program there")
        return dict(base, kind=NONE if not current_id else LEAVE)
    if not current_id:
        return dict(base, kind=ATTACH)
    if current_id not in ours:
        return dict(base, kind=REPLACE_FOREIGN if force else REFUSE, foreign=True, reason="foreign")
    valid, same = _record_matches(record, current_id, fp, slot["program"])
    if same:
        return dict(base, kind=KEEP)
    if valid:
        return dict(base, kind=REPLACE)
    name = (current_info or {}).get("name")
    if name is not None and name != slot["program"][:KERNEL_NAME_LEN]:
        return dict(base, kind=REPLACE)
    return dict(base, kind=VERIFY)


def prog_desc(prog_id, info: dict | None) -> str:
    """``id 42 (xdp_shaper, tag 8150469489252e15)``."""
    if not prog_id:
        return "no program"
    if not info:
        return "id %d" % prog_id
    return "id %d (%s, tag %s)" % (prog_id, info.get("name") or "?", info.get("tag") or "?")


def xdp_mode_text(mode: str) -> str:
    if mode == "auto":
        return "mode auto (hw, then native, then skb)"
    return "%s mode" % mode


def xdp_action(kind: str, program: str, ifname: str, d: dict, old: str) -> str | None:
    if kind == ATTACH:
        return "attach XDP program %s to %s in %s" % (program, ifname, xdp_mode_text(d["mode"]))
    if kind == REPLACE:
        return "replace XDP program %s on %s with the new %s atomically (%s)" % (old, ifname, program, d["mode"] + " mode")
    if kind == REPLACE_FOREIGN:
        return ("replace foreign XDP program %s on %s with %s atomically (%s mode, force)"
                % (old, ifname, program, d["mode"]))
    if kind == VERIFY:
        return ("compare XDP program %s on %s with the new %s by tag and load-time values (no record of how it "
                "was loaded): keep it if equal, else replace it atomically" % (old, ifname, program))
    if kind == REATTACH:
        return ("detach %sXDP program %s from %s (%s mode), then attach %s in %s: not atomic (XDP mode change)"
                % ("foreign " if d.get("foreign") else "", old, ifname, d["old_mode"], program,
                   xdp_mode_text(d["mode"])))
    if kind == REPLACE_LINK:
        link = d["link"]
        return ("detach bpf_link %d (%s) holding foreign XDP program %s on %s, then attach %s in %s: not atomic (a "
                "link-held program cannot be swapped through netlink; force)"
                % (link["id"], link_holder(link), old, ifname, program, xdp_mode_text(d["mode"])))
    if kind == DETACH:
        return "detach XDP program %s from %s (%s mode)" % (old, ifname, d["mode"])
    return None


def link_holder(link: dict) -> str:
    return "pinned at %s" % link["pin"] if link.get("pin") else "not pinned: a running process holds it open"


def link_refuse_error(ifname: str, netns: str | None, old: str, link: dict) -> LqosError:
    where = "%s%s" % (ifname, " (netns %s)" % netns if netns else "")
    return LqosError("XDP on %s holds program %s through bpf_link %d (%s), which this collection did not attach; "
                     "it is left in place and nothing was changed." % (where, old, link["id"], link_holder(link)),
                     "unload it with the tool that attached it (e.g. xdp-loader unload %s --all%s), or set force: true "
                     "to detach the link and attach (not atomic: the interface runs without XDP in between)."
                     % (ifname, "; or rm %s" % link["pin"] if link.get("pin") else ""))


def tc_action(kind: str, slot: dict, ifname: str, old: str) -> str | None:
    where = "TC %s of %s at handle 0x%x priority 0x%x" % (slot["direction"], ifname, slot["handle"], slot["priority"])
    prog = slot.get("program")
    if kind == ATTACH:
        return "attach %s to %s" % (prog, where)
    if kind == REPLACE:
        return "replace %s on %s with the new %s atomically" % (old, where, prog)
    if kind == REPLACE_FOREIGN:
        return "replace foreign program %s on %s with %s atomically (force)" % (old, where, prog)
    if kind == VERIFY:
        return ("compare %s on %s with the new %s by tag and load-time values (no record of how it was loaded): "
                "keep it if equal, else replace it atomically" % (old, where, prog))
    if kind == DETACH:
        return "detach %s from %s" % (old, where)
    return None


def refuse_error(hook: str, ifname: str, netns: str | None, old: str, mode: str | None = None) -> LqosError:
    where = "%s%s" % (ifname, " (netns %s)" % netns if netns else "")
    return LqosError("%s on %s holds program %s%s, which this collection did not attach; it is left in place and "
                     "nothing was changed." % (hook, where, old, " in %s mode" % mode if mode else ""),
                     "detach it yourself, or set force: true to replace it.")


# ---------------------------------------------------------------------------
# State file
# ---------------------------------------------------------------------------

def read_state(path: str) -> dict:
    """The record of what was attached, or {} (missing, unreadable or of another version)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return {}
    return data
