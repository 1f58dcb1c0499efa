# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""XDP and TC attach/detach of a built BPF object (module lqos.bpf.attach).

What this collection attached is recorded in two places:

* **Pins (ownership)**: every program it attaches is pinned under
  ``<pin_root>/lqos_bpf/<netns or host>/<ifname>/<program>``. A program on a
  hook is *ours* iff its id is the id of a program pinned there. The pins also
  keep the programs alive after the module exits.
* **State file (idempotence)**: ``<state_dir>/<netns>-<ifname>-<hash>.json``
  (default state_dir ``/run/lqos-bpf/attach``) records, per hook slot, the id
  and tag attached and the *fingerprint* it was loaded from: sha256 over the
  object file's sha256 and the resolved load parameters (map resizes,
  ``.rodata``/``.data`` values). A second run whose fingerprint, program, mode
  and position match the record and whose hooks still hold the recorded ids
  changes nothing and loads nothing. ``/run`` is chosen because it lives
  exactly as long as XDP/TC attachments and bpffs pins: all vanish at reboot.
  Without a usable record the object is loaded and compared by program tag and
  by the load-time values the spec sets (the tag does not cover ``.rodata``).

Pure planning (``decide_*``, ``*_action`` text, naming) is separate from the
kernel work (``Attacher``) so it can be unit-tested with plain data.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    atomic_write, canonical_json, confine_pin, default_build_root, LqosError, require_bpffs, sha256_file,
)
from ansible_collections.lqos.bpf.plugins.module_utils import _libbpf
from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_btf
from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_hooks
from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps
from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_object
from ansible_collections.lqos.bpf.plugins.module_utils._programs import feature_of, program_roles

PIN_SUBDIR = "lqos_bpf"
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

def resolve_values(values: dict, ncpus: int, ifindex: int) -> dict:
    """Replace the special words of attach.rodata/attach.data by their values."""
    out = {}
    for var, value in sorted(values.items()):
        if value == "possible_cpus":
            out[var] = ncpus
        elif value == "ifindex":
            out[var] = ifindex
        else:
            out[var] = value
    return out


def load_params(spec: dict, ncpus: int, ifindex: int) -> dict:
    """What load_object gets besides the path: map resizes and global values."""
    return {
        "resize": {item["map"]: ncpus for item in spec.get("cpu_sized_maps") or []},
        "rodata": resolve_values(spec["attach"].get("rodata") or {}, ncpus, ifindex),
        "data": resolve_values(spec["attach"].get("data") or {}, ncpus, ifindex),
    }


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

def wanted_slots(spec: dict, programs: dict, with_tc: bool, object_path: str) -> tuple:
    """(xdp program or None, [tc slots], notes) for an object whose programs are
    ``programs`` {name: prog type name}. Fails when a required program is
    missing or has the wrong type."""
    attach = spec.get("attach") or {}
    notes = []

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


# ---------------------------------------------------------------------------
# Kernel work
# ---------------------------------------------------------------------------

def _lib_error(exc) -> LqosError:
    return LqosError(getattr(exc, "msg", None) or str(exc))


class _Lock(object):
    """flock on the state folder itself: one applying attach run at a time (no lock file left behind)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


def _attached_globals(prog_id: int, sections: set) -> dict:
    """{section: bytes} of the internal maps (.rodata, .data, .bss) of an attached program."""
    out = {}
    for map_id in _bpf_maps.prog_info_by_id(prog_id)["map_ids"]:
        info = _bpf_maps.map_info_by_id(map_id)
        name = info["name"]
        dot = name.find(".")
        if dot < 0 or name[dot:] not in sections or info["type_name"] != "array" or info["key_size"] != 4:
            continue
        try:
            fd = _bpf_maps.map_fd_by_id(map_id)
        except _libbpf.LibbpfError:
            continue  # freed since prog_info was read
        try:
            value = _bpf_maps.map_lookup(fd, b"\0\0\0\0")
        finally:
            os.close(fd)
        if value is not None:
            out[name[dot:]] = value
    return out


class Attacher(object):
    """One module run: observe, plan, and (approved) apply."""

    def __init__(self, module, spec: dict):
        p = module.params
        self.module = module
        self.spec = spec
        self.state = p["state"]
        self.ifname = p["interface"]
        self.netns = p["netns"]
        self.want_mode = p["xdp_mode"]
        self.with_tc = p["tc"]
        self.force = p["force"]
        validate_netns(self.netns)
        validate_ifname(self.ifname)
        self.pin_root = require_bpffs(p["pin_root"])
        self.object = p["object"] or default_object(spec)
        self.state_dir = p["state_dir"]
        self.state_path = os.path.join(self.state_dir, state_file_name(self.pin_root, self.netns, self.ifname))
        self.pin_dir = confine_pin(self.pin_root, pin_rel_dir(self.netns, self.ifname))
        self.record = read_state(self.state_path)
        self.warnings = []
        self.notes = []
        self.actions = []
        self.ifindex = None
        self.object_sha256 = None
        self.params = None
        self.fp = None
        self.programs = {}
        self.maps_to_pin = []
        self.repin = []       # (map name, live map id, pin path): pins lost while our programs still run
        self.bad_pins = []
        self.xdp_prog = None
        self.tc_slots = []
        self.pins = {}        # pin name -> {id, name, tag, path}
        self.ours = set()
        self.xdp_now = {"ids": {}, "info": {}}
        self.tc_now = {}      # slot id -> {"slot", "id", "info"}
        self.xdp_plan = None
        self.tc_plan = []     # [(slot, decision)]
        self.result_xdp = None
        self.result_tc = []
        self.roles = {}       # program -> required | optional | disabled
        self.sections = {}    # program -> ELF section
        self.disabled = set()  # programs not loaded: spec-disabled, or optional and refused by this kernel
        self.left_out = []    # [{program, section, class, reason, fix, feature}] optional programs refused
        self.probed = False
        self.replace_ingress = False

    # -- observation --------------------------------------------------------
    def enter_netns(self) -> None:
        if not self.netns:
            return
        try:
            _bpf_hooks.enter_netns(self.netns)
        except _libbpf.LibbpfError as exc:
            if exc.errno == errno.ENOENT:
                raise LqosError("network namespace %s does not exist (no /run/netns/%s)." % (self.netns, self.netns),
                                "create it (ip netns add %s) or fix the netns option." % self.netns)
            raise _lib_error(exc)

    def resolve_interface(self, required: bool) -> bool:
        try:
            self.ifindex = _bpf_hooks.ifindex(self.ifname)
        except _libbpf.LibbpfError:
            where = "network namespace %s" % self.netns if self.netns else "the host's network namespace"
            if not required:
                self.notes.append("interface %s does not exist in %s: nothing can be attached there"
                                  % (self.ifname, where))
                return False
            raise LqosError("interface %s does not exist in %s." % (self.ifname, where),
                            "check the name with `ip%s link show` (names are case-sensitive)."
                            % (" -n %s" % self.netns if self.netns else ""))
        return True

    def inspect_object(self) -> None:
        if not os.path.isfile(self.object):
            raise LqosError("BPF object %s does not exist." % self.object,
                            "build it first with lqos.bpf.pipeline (spec %s), or point the object option at the "
                            "built .o file." % self.spec["name"])
        try:
            info = _bpf_object.object_info(self.object, self.pin_root)
        except _libbpf.LibbpfError as exc:
            raise _lib_error(exc)
        self.programs = {p["name"]: p["type_name"] for p in info["programs"]}
        self.sections = {p["name"]: p["section"] for p in info["programs"]}
        self.xdp_prog, self.tc_slots, notes = wanted_slots(self.spec, self.programs, self.with_tc, self.object)
        self.notes.extend(notes)
        self.roles = program_roles(self.spec, info["programs"])
        for name in [self.xdp_prog] + [s["program"] for s in self.tc_slots]:
            if name and self.roles.get(name) != "required":
                if self.roles.get(name) == "disabled":
                    raise LqosError("program %s is attached by the spec but spec programs.%s is disabled."
                                    % (name, name), "remove it from attach, or make it required.")
                self.roles[name] = "required"
        self.disabled = {n for n, r in self.roles.items() if r == "disabled"}
        self.object_sha256 = sha256_file(self.object)
        ncpus = _libbpf.possible_cpus()
        self.params = load_params(self.spec, ncpus, self.ifindex)
        self.fp = fingerprint(self.object_sha256, self.params)
        self.check_pins(info["maps"])

    def check_pins(self, maps: list) -> None:
        """Refuse early (also when only planning) when an existing map pin cannot be reused."""
        bad = []
        for m in maps:
            path = m.get("pin_path")
            if not m.get("pinning") or not path:
                continue
            want = dict(m)
            if m["name"] in self.params["resize"]:
                want["max_entries"] = self.params["resize"][m["name"]]
            if not os.path.lexists(path):
                self.maps_to_pin.append((m["name"], path))
                continue
            real, root = os.path.realpath(path), os.path.realpath(self.pin_root)
            if os.path.islink(path) or not real.startswith(root + "/"):
                bad.append("%s is a symbolic link to %s, %s the pin root; libbpf would follow it, so it is never "
                           "used" % (path, os.readlink(path) if os.path.islink(path) else real,
                                     "inside" if real.startswith(root + "/") else "outside"))
                continue
            kind = _libbpf.pinned_kind(path)
            if kind != "map":
                bad.append("%s is %s, not a map" % (path, "a pinned " + kind if kind else "not a BPF object"))
                continue
            have = _bpf_maps.map_info_by_path(path)
            diffs = ["%s pinned %s, object %s" % (k, have[k], want[k])
                     for k in ("type_name", "key_size", "value_size", "max_entries", "flags")
                     if have[k] != want[k]]
            if diffs:
                bad.append("map %s: pin %s (%s)" % (m["name"], path, "; ".join(diffs)))
        self.bad_pins = bad

    def refuse_bad_pins(self) -> None:
        if self.bad_pins and self.needs_load():
            raise LqosError("existing map pins are incompatible with %s: %s; libbpf reuses a pin only when type, "
                            "sizes, max_entries and flags match, so nothing was loaded or attached."
                            % (self.object, "; ".join(self.bad_pins)),
                            "migrate or remove the old pins with lqos.bpf.pinned_maps (state: clean), then attach "
                            "again.")

    def read_pins(self) -> None:
        """Our pinned programs: their ids define what is ours."""
        if not os.path.isdir(self.pin_dir):
            return
        for entry in sorted(os.listdir(self.pin_dir)):
            path = os.path.join(self.pin_dir, entry)
            if _libbpf.pinned_kind(path) != "prog":
                continue
            info = _bpf_maps.prog_info_by_path(path)
            self.pins[entry] = {"id": info["id"], "name": info["name"], "tag": info["tag"], "path": path}
            self.ours.add(info["id"])

    def prog_info(self, prog_id: int) -> dict | None:
        try:
            info = _bpf_maps.prog_info_by_id(prog_id)
        except _libbpf.LibbpfError:
            return None
        return {"name": info["name"], "tag": info["tag"]}

    def read_hooks(self, tc_slots: list) -> None:
        q = _bpf_hooks.xdp_query(self.ifindex)
        for mode, key in (("native", "drv_prog_id"), ("skb", "skb_prog_id"), ("hw", "hw_prog_id")):
            if q[key]:
                self.xdp_now["ids"][mode] = q[key]
                self.xdp_now["info"][q[key]] = self.prog_info(q[key])
        for slot in tc_slots:
            sid = slot_id(slot)
            if sid in self.tc_now:
                continue
            if self.replace_ingress:   # the qdisc and every filter on it go before anything is attached
                self.tc_now[sid] = {"slot": slot, "id": None, "info": None}
                continue
            cur = _bpf_hooks.tc_query(self.ifindex, slot["direction"], slot["handle"], slot["priority"])
            self.tc_now[sid] = {"slot": slot, "id": cur or None, "info": self.prog_info(cur) if cur else None}

    def recorded_tc(self) -> dict:
        return {slot_id(s): s for s in self.record.get("tc") or [] if isinstance(s, dict) and "direction" in s}

    # -- planning -------------------------------------------------------------
    def check_ingress_slot(self) -> None:
        """A legacy `ingress` qdisc in the clsact slot accepts an egress filter and runs it on ingress: refuse,
        or (force) replace it by clsact."""
        if _bpf_hooks.ingress_slot_kind(self.ifindex) != "ingress":
            return
        if not self.force:
            raise LqosError("%s has a legacy `ingress` qdisc where TC programs need clsact: a filter attached to its "
                            "egress would be accepted and run on ingress (both qdiscs take parent ffff:fff1); "
                            "nothing was changed." % self.ifname,
                            "remove it (tc%s qdisc del dev %s ingress; the filters it holds go with it), or set force: "
                            "true to replace it by clsact." % (" -n %s" % self.netns if self.netns else "",
                                                               self.ifname))
        self.replace_ingress = True
        self.warnings.append("replacing the legacy ingress qdisc on %s by clsact (force: true): the filters it "
                             "holds are removed" % self.ifname)

    def xdp_link_of(self, d: dict) -> dict:
        """A foreign XDP program held by a bpf_link: refuse, or (force) plan to detach the link."""
        old_id = d.get("old_id")
        if not old_id or old_id in self.ours or d["kind"] not in (REFUSE, REPLACE_FOREIGN, REATTACH):
            return d
        links = _bpf_hooks.xdp_links(self.ifindex, old_id)
        if not links:
            return d
        link = dict(links[0], pin=_bpf_hooks.link_pins(self.pin_root, [links[0]["id"]]).get(links[0]["id"]))
        old = prog_desc(old_id, self.xdp_now["info"].get(old_id))
        if d["kind"] == REFUSE:
            raise link_refuse_error(self.ifname, self.netns, old, link)
        self.warnings.append("detaching bpf_link %d (%s) to replace foreign XDP program %s on %s (force: true): not "
                             "atomic" % (link["id"], link_holder(link), old, self.ifname))
        return dict(d, kind=REPLACE_LINK, link=link, mode=self.want_mode)

    def plan_present(self) -> None:
        recorded = self.recorded_tc()
        if self.with_tc and self.tc_slots:
            self.check_ingress_slot()
        self.read_hooks(self.tc_slots + (list(recorded.values()) if self.with_tc else []))
        rec_xdp = self.record.get("xdp") if isinstance(self.record.get("xdp"), dict) else None
        d = decide_xdp(self.xdp_prog, self.want_mode, self.xdp_now, self.ours, rec_xdp, self.fp, self.force)
        if d.get("reason") != "multi":
            d = self.xdp_link_of(d)
        old = prog_desc(d.get("old_id"), self.xdp_now["info"].get(d.get("old_id")))
        if d["kind"] == REFUSE:
            if d.get("reason") == "multi":
                raise LqosError("%s on %s: %s" % ("XDP", self.ifname, d["msg"]),
                                "detach them by hand (ip link set dev %s xdp off; xdpoffload off)." % self.ifname)
            raise refuse_error("XDP", self.ifname, self.netns, old, d.get("old_mode"))
        self.xdp_plan = d
        if d["kind"] == REPLACE_FOREIGN or (d["kind"] == REATTACH and d.get("foreign")):
            self.warnings.append("replacing foreign XDP program %s on %s (force: true)" % (old, self.ifname))
        if d["kind"] == REATTACH:
            self.warnings.append("XDP mode change on %s (%s -> %s) cannot be atomic: the interface runs without an "
                                 "XDP program between the detach and the attach"
                                 % (self.ifname, d["old_mode"], d["mode"]))
        if self.with_tc:
            wanted = {slot_id(s) for s in self.tc_slots}
            for slot in self.tc_slots:
                now = self.tc_now[slot_id(slot)]
                rec = recorded.get(slot_id(slot))
                td = decide_tc(slot, now["id"], now["info"], self.ours, rec, self.fp, self.force)
                if td["kind"] == REFUSE:
                    where = "TC %s (handle 0x%x priority 0x%x)" % (slot["direction"], slot["handle"], slot["priority"])
                    raise refuse_error(where, self.ifname, self.netns, prog_desc(now["id"], now["info"]))
                if td["kind"] == REPLACE_FOREIGN:
                    self.warnings.append("replacing foreign TC program %s on %s %s (force: true)"
                                         % (prog_desc(now["id"], now["info"]), self.ifname, slot["direction"]))
                self.tc_plan.append((slot, td))
            for sid, slot in sorted(recorded.items()):
                if sid in wanted:
                    continue
                now = self.tc_now[sid]
                td = decide_tc(None, now["id"], now["info"], self.ours, slot, self.fp, self.force)
                if td["kind"] == DETACH:
                    self.tc_plan.append((dict(slot), td))
        self.refuse_bad_pins()
        self.plan_actions_present()

    def needs_load(self) -> bool:
        kinds = [self.xdp_plan["kind"]] + [d["kind"] for dummy, d in self.tc_plan]
        return any(k in (ATTACH, REPLACE, VERIFY, REPLACE_FOREIGN, REATTACH, REPLACE_LINK) for k in kinds)

    def live_maps(self) -> dict:
        """{kernel map name: id} of the maps used by our programs that are attached now."""
        ids = set(self.xdp_now["ids"].values()) | {t["id"] for t in self.tc_now.values() if t["id"]}
        live = {}
        for prog_id in sorted(ids & self.ours):
            try:
                map_ids = _bpf_maps.prog_info_by_id(prog_id)["map_ids"]
            except _libbpf.LibbpfError:
                continue  # unloaded since the hooks were read
            for map_id in map_ids:
                try:
                    live.setdefault(_bpf_maps.map_info_by_id(map_id)["name"], map_id)
                except _libbpf.LibbpfError:
                    continue
        return live

    def plan_actions_present(self) -> None:
        acts = []
        if self.needs_load():
            self.probe_optional()
            without = sorted(self.disabled)
            acts.append("load %s (sha256 %s; %s%s)" % (self.object, self.object_sha256[:16],
                                                       describe_params(self.params) or "no load-time values",
                                                       "; without %s" % ", ".join(without) if without else ""))
            for name, path in self.maps_to_pin:
                acts.append("pin new map %s at %s" % (name, path))
        elif self.maps_to_pin:
            # A pin removed (e.g. by lqos.bpf.pinned_maps) while our programs keep running: pin the map
            # they use again, so userspace reaches the live map. The kernel keeps 15 chars of a map name.
            live = self.live_maps()
            for name, path in self.maps_to_pin:
                map_id = live.get(name[:15])
                if map_id:
                    self.repin.append((name, map_id, path))
                    acts.append("re-pin live map %s (id %d) at %s" % (name, map_id, path))
        d = self.xdp_plan
        if self.xdp_prog or d["kind"] == DETACH:
            text = xdp_action(d["kind"], self.xdp_prog, self.ifname, d,
                              prog_desc(d.get("old_id"), self.xdp_now["info"].get(d.get("old_id"))))
            if text:
                acts.append(text)
        hooks_needed = sorted({s["direction"] for s, td in self.tc_plan if td["kind"] == ATTACH})
        if self.replace_ingress:
            acts.append("delete the legacy ingress qdisc on %s (and the filters it holds) and create clsact"
                        % self.ifname)
        elif hooks_needed:
            acts.append("create the clsact qdisc on %s if it is missing" % self.ifname)
        for slot, td in self.tc_plan:
            now = self.tc_now[slot_id(slot)]
            text = tc_action(td["kind"], slot, self.ifname, prog_desc(now["id"], now["info"]))
            if text:
                acts.append(text)
        pinned = []
        if self.xdp_prog and d["kind"] not in (KEEP, NONE, LEAVE, DETACH):
            pinned.append(self.xdp_prog)
        pinned += [s["program"] for s, td in self.tc_plan if td["kind"] not in (KEEP, NONE, LEAVE, DETACH)]
        for name in sorted(set(pinned)):
            acts.append("pin %s at %s" % (name, os.path.join(self.pin_dir, pin_component(name))))
        self.actions = acts

    def plan_absent(self) -> None:
        recorded = self.recorded_tc()
        slots = {slot_id(s): s for s in self.tc_slots}
        slots.update({k: v for k, v in recorded.items() if k not in slots})
        if self.ifindex is not None:
            self.read_hooks(list(slots.values()))
            ids = self.xdp_now["ids"]
            for mode, pid in sorted(ids.items()):
                desc = prog_desc(pid, self.xdp_now["info"].get(pid))
                if pid in self.ours:
                    self.xdp_plan = {"kind": DETACH, "mode": mode, "old_id": pid, "old_mode": mode}
                    self.actions.append(xdp_action(DETACH, None, self.ifname, self.xdp_plan, desc))
                else:
                    self.notes.append("XDP program %s on %s (%s mode) is not ours: left in place"
                                      % (desc, self.ifname, mode))
            for sid, slot in sorted(slots.items()):
                now = self.tc_now[sid]
                if not now["id"]:
                    continue
                desc = prog_desc(now["id"], now["info"])
                if now["id"] in self.ours:
                    self.tc_plan.append((slot, {"kind": DETACH, "old_id": now["id"]}))
                    self.actions.append(tc_action(DETACH, slot, self.ifname, desc))
                else:
                    self.notes.append("TC %s program %s on %s is not ours: left in place"
                                      % (slot["direction"], desc, self.ifname))
        for name, pin in sorted(self.pins.items()):
            self.actions.append("unpin %s (%s)" % (pin["path"], prog_desc(pin["id"], pin)))

    def probe_optional(self) -> None:
        """Trial-load every optional program alone (nothing pinned or attached); leave out the refused ones."""
        if self.probed:
            return
        self.probed = True
        optional = sorted(n for n, r in self.roles.items() if r == "optional")
        if not optional:
            return
        rows = _bpf_object.probe_programs(self.object, names=optional, resize=self.params["resize"],
                                          rodata=self.params["rodata"], data=self.params["data"])
        for row in rows:
            if not row["loadable"]:
                self.leave_out(row)

    def leave_out(self, refusal: dict) -> None:
        name = refusal["name"]
        section = refusal.get("section") or self.sections.get(name)
        entry = {"program": name, "section": section, "class": refusal["class"], "reason": refusal["reason"],
                 "fix": refusal["fix"], "feature": feature_of(section)}
        self.left_out.append(entry)
        self.disabled.add(name)

    def left_out_warnings(self) -> None:
        for e in self.left_out:
            self.warnings.append("optional program %s (SEC(\"%s\")) was left out on %s: %s. Lost: %s. Fix: %s"
                                 % (e["program"], e["section"], self.ifname, e["reason"], e["feature"], e["fix"]))

    # -- applying ---------------------------------------------------------------
    def load(self):
        """Load the object without the disabled programs; an optional program the real load refuses is left out
        and the load retried. A refused required program, or any other failure, changes nothing."""
        while True:
            try:
                return _bpf_object.load_object(self.object, pin_root=self.pin_root, resize=self.params["resize"],
                                               rodata=self.params["rodata"], data=self.params["data"],
                                               disabled=sorted(self.disabled))
            except _bpf_object.LoadError as exc:
                if self.roles.get(exc.program) == "optional" and exc.program not in self.disabled:
                    self.leave_out(exc.refusal)
                    continue
                raise LqosError("%s; %s program %s was refused, so nothing was attached or changed on %s."
                                % (exc.msg.rstrip("."), self.roles.get(exc.program, "required"), exc.program,
                                   self.ifname), "%s, then attach again." % exc.refusal["fix"])
            except _libbpf.LibbpfError as exc:
                if "pinned_maps" in exc.msg:
                    raise LqosError(exc.msg, "run lqos.bpf.pinned_maps (state: clean) for those pins, then attach "
                                             "again; nothing was attached or changed on %s." % self.ifname)
                raise LqosError("%s; nothing was attached or changed on %s." % (exc.msg, self.ifname))

    def same_program(self, lo, name: str, old_id: int) -> bool:
        """True when the attached program has the new program's tag and the load-time values the spec sets
        (in the .rodata/.data/.bss maps the program uses; the tag does not cover them)."""
        new = lo.prog_info(name)
        old = _bpf_maps.prog_info_by_id(old_id)
        if new["tag"] != old["tag"]:
            return False
        want_vars = list(self.params["rodata"]) + list(self.params["data"])
        if not want_vars:
            return True
        with _bpf_btf.Btf.from_file(self.object) as btf:
            infos = {v: btf.var_info(v) for v in want_vars}
        if any(vi is None for vi in infos.values()):
            return False
        sections = {vi["section"] for vi in infos.values()}
        new_vals = _attached_globals(new["id"], sections)
        old_vals = _attached_globals(old_id, sections)
        for vi in infos.values():
            new_blob, old_blob = new_vals.get(vi["section"]), old_vals.get(vi["section"])
            if new_blob is None and old_blob is None:
                continue   # this program does not use that section
            if new_blob is None or old_blob is None:
                return False
            lo_, hi = vi["offset"], vi["offset"] + vi["size"]
            if new_blob[lo_:hi] != old_blob[lo_:hi]:
                return False
        return True

    def xdp_walk(self, fd: int) -> tuple:
        """Attach in the wanted mode, or walk hw -> native -> skb for auto. Returns (mode, tried)."""
        modes = XDP_WALK if self.xdp_plan["mode"] == "auto" else (self.xdp_plan["mode"],)
        tried = []
        for i, mode in enumerate(modes):
            try:
                _bpf_hooks.xdp_attach(self.ifindex, fd, mode, only_if_none=True)
                return mode, tried
            except _libbpf.LibbpfError as exc:
                tried.append({"mode": mode, "error": exc.msg, "errno": exc.errno})
                if exc.errno in NO_FALLBACK_ERRNOS or i == len(modes) - 1:
                    if len(modes) == 1:
                        raise LqosError("attaching XDP program %s to %s in %s mode failed: %s."
                                        % (self.xdp_prog, self.ifname, mode, exc.msg),
                                        "use xdp_mode: auto (falls back to skb) or a mode the driver supports.")
                    raise LqosError("attaching XDP program %s to %s failed in every mode: %s."
                                    % (self.xdp_prog, self.ifname,
                                       "; ".join("%s: %s" % (t["mode"], t["error"]) for t in tried)),
                                    "check the interface and its driver (dmesg).")
        raise LqosError("no XDP mode to try")  # not reached

    def apply_present(self) -> None:
        undo = []         # callables that restore the previous hook state, newest last
        new_pins = []     # (temporary pin, final pin) of the programs attached in this run
        held = []         # fds of replaced programs, kept open so a rollback can put them back
        lo = self.load() if self.needs_load() else None
        try:
            if lo is not None:
                os.makedirs(self.pin_dir, exist_ok=True)
            if self.xdp_prog or self.xdp_plan["kind"] == DETACH:
                self.apply_xdp(lo, undo, held, new_pins)
            self.apply_tc(lo, undo, held, new_pins)
            for dummy, map_id, path in self.repin:
                fd = _bpf_maps.map_fd_by_id(map_id)
                try:
                    _libbpf.obj_pin(fd, path)
                finally:
                    os.close(fd)
        except (LqosError, _libbpf.LibbpfError, OSError) as exc:
            err = exc if isinstance(exc, LqosError) else _lib_error(exc)
            rolled = self.rollback(undo, new_pins)
            if rolled:
                err.msg = "%s Rolled back what this run had changed: %s." % (err.msg.rstrip(), "; ".join(rolled))
            raise err
        finally:
            for fd in held:
                os.close(fd)
            if lo is not None:
                lo.close()
        for tmp, final in new_pins:
            os.rename(tmp, final)     # bpffs rename replaces the old pin atomically
        self.cleanup_pins()
        self.write_state()

    @staticmethod
    def rollback(undo: list, new_pins: list) -> list:
        rolled = []
        for step in reversed(undo):
            try:
                rolled.append(step())
            except Exception as exc:  # pylint: disable=broad-except
                rolled.append("FAILED (%s)" % exc)
        for tmp, dummy in new_pins:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        return rolled

    def _pin_new(self, lo, name: str, new_pins: list) -> None:
        final = os.path.join(self.pin_dir, pin_component(name))
        if any(f == final for dummy, f in new_pins):
            return
        tmp = final + NEW_SUFFIX
        if os.path.lexists(tmp):
            os.unlink(tmp)
        lo.pin_program(name, tmp)
        new_pins.append((tmp, final))

    def apply_xdp(self, lo, undo: list, held: list, new_pins: list) -> None:
        d = self.xdp_plan
        kind = d["kind"]
        old_id = d.get("old_id")
        old_info = self.xdp_now["info"].get(old_id) or {}
        name = self.xdp_prog or old_info.get("name")
        res = {"program": name, "id": old_id, "tag": old_info.get("tag"), "mode": d.get("old_mode"),
               "previous_id": None, "previous_tag": None, "action": kind, "tried": []}
        if kind == VERIFY:
            kind = ADOPT if self.same_program(lo, self.xdp_prog, old_id) else REPLACE
            res["action"] = kind
        if kind in (REPLACE, REPLACE_FOREIGN, REATTACH, REPLACE_LINK, DETACH):
            old_fd = _bpf_maps.prog_fd_by_id(old_id)
            held.append(old_fd)
            res.update(previous_id=old_id, previous_tag=old_info.get("tag"))
        if kind in (REPLACE, REPLACE_FOREIGN):
            new_fd = lo.prog_fd(self.xdp_prog)
            self._pin_new(lo, self.xdp_prog, new_pins)
            mode = d["mode"]
            _bpf_hooks.xdp_attach(self.ifindex, new_fd, mode, replace_prog_fd=old_fd)
            undo.append(lambda m=mode, o=old_fd, n=new_fd, i=old_id: (
                _bpf_hooks.xdp_attach(self.ifindex, o, m, replace_prog_fd=n), "XDP back to id %d" % i)[1])
            res["mode"] = mode
        elif kind in (ATTACH, REATTACH, REPLACE_LINK):
            new_fd = lo.prog_fd(self.xdp_prog)
            self._pin_new(lo, self.xdp_prog, new_pins)
            if kind == REPLACE_LINK:
                link_id, old_mode = d["link"]["id"], d["old_mode"]
                _bpf_hooks.link_detach(link_id)
                undo.append(lambda m=old_mode, o=old_fd, i=old_id, lid=link_id: (
                    _bpf_hooks.xdp_attach(self.ifindex, o, m, only_if_none=True),
                    "XDP id %d re-attached through netlink (its bpf_link %d stays detached)" % (i, lid))[1])
            if kind == REATTACH:
                old_mode = d["old_mode"]
                _bpf_hooks.xdp_detach(self.ifindex, old_mode, expected_prog_fd=old_fd)
                undo.append(lambda m=old_mode, o=old_fd, i=old_id: (
                    _bpf_hooks.xdp_attach(self.ifindex, o, m, only_if_none=True), "XDP id %d re-attached" % i)[1])
            mode, tried = self.xdp_walk(new_fd)
            undo.append(lambda m=mode, n=new_fd: (
                _bpf_hooks.xdp_detach(self.ifindex, m, expected_prog_fd=n), "new XDP program detached")[1])
            res.update(mode=mode, tried=tried)
        elif kind == DETACH:
            mode = d["mode"]
            _bpf_hooks.xdp_detach(self.ifindex, mode, expected_prog_fd=old_fd)
            undo.append(lambda m=mode, o=old_fd, i=old_id: (
                _bpf_hooks.xdp_attach(self.ifindex, o, m, only_if_none=True), "XDP id %d re-attached" % i)[1])
            res.update(id=None, tag=None, mode=None)
        if kind in (REPLACE, REPLACE_FOREIGN, ATTACH, REATTACH, REPLACE_LINK):
            info = lo.prog_info(self.xdp_prog)
            res.update(id=info["id"], tag=info["tag"])
        self.result_xdp = res

    def apply_tc(self, lo, undo: list, held: list, new_pins: list) -> None:
        created = set()
        if self.replace_ingress and lo is not None:
            _bpf_hooks.qdisc_delete_ingress(self.ifindex)   # not restorable: the plan and a warning said so
        for slot, td in self.tc_plan:
            kind = td["kind"]
            sid = slot_id(slot)
            now = self.tc_now[sid]
            old_id = now["id"]
            direction, handle, prio = slot["direction"], slot["handle"], slot["priority"]
            res = {"program": slot["program"], "direction": direction, "handle": handle, "priority": prio,
                   "id": old_id, "tag": (now["info"] or {}).get("tag"), "previous_id": None, "previous_tag": None,
                   "action": kind}
            if kind == VERIFY:
                kind = ADOPT if self.same_program(lo, slot["program"], old_id) else REPLACE
                res["action"] = kind
            if kind in (ATTACH, REPLACE, REPLACE_FOREIGN):
                new_fd = lo.prog_fd(slot["program"])
                self._pin_new(lo, slot["program"], new_pins)
                if kind == ATTACH:
                    if direction not in created:
                        _bpf_hooks.tc_hook_create(self.ifindex, direction)
                        created.add(direction)
                    _bpf_hooks.tc_attach(self.ifindex, direction, new_fd, handle, prio)
                    undo.append(lambda dr=direction, h=handle, p=prio: (
                        _bpf_hooks.tc_detach(self.ifindex, dr, h, p), "TC %s filter removed" % dr)[1])
                else:
                    old_fd = _bpf_maps.prog_fd_by_id(old_id)
                    held.append(old_fd)
                    _bpf_hooks.tc_attach(self.ifindex, direction, new_fd, handle, prio, replace=True)
                    undo.append(lambda dr=direction, h=handle, p=prio, fd=old_fd, oid=old_id: (
                        _bpf_hooks.tc_attach(self.ifindex, dr, fd, h, p, replace=True),
                        "TC %s back to id %d" % (dr, oid))[1])
                    res.update(previous_id=old_id, previous_tag=(now["info"] or {}).get("tag"))
                info = lo.prog_info(slot["program"])
                res.update(id=info["id"], tag=info["tag"])
            elif kind == DETACH:
                old_fd = _bpf_maps.prog_fd_by_id(old_id)
                held.append(old_fd)
                _bpf_hooks.tc_detach(self.ifindex, direction, handle, prio)
                undo.append(lambda dr=direction, h=handle, p=prio, fd=old_fd: (
                    _bpf_hooks.tc_attach(self.ifindex, dr, fd, h, p), "TC %s filter restored" % dr)[1])
                res.update(id=None, tag=None, previous_id=old_id, previous_tag=(now["info"] or {}).get("tag"))
            self.result_tc.append(res)

    def cleanup_pins(self) -> None:
        """Unpin our programs that no hook we manage holds any more (and leftover __new pins)."""
        live = set()
        q = _bpf_hooks.xdp_query(self.ifindex)
        live.update(i for i in (q["drv_prog_id"], q["skb_prog_id"], q["hw_prog_id"]) if i)
        slots = {slot_id(s): s for s in self.tc_slots}
        slots.update(self.recorded_tc())
        for slot in slots.values():
            cur = _bpf_hooks.tc_query(self.ifindex, slot["direction"], slot["handle"], slot["priority"])
            if cur:
                live.add(cur)
        if not os.path.isdir(self.pin_dir):
            return
        for entry in os.listdir(self.pin_dir):
            path = os.path.join(self.pin_dir, entry)
            if _libbpf.pinned_kind(path) != "prog":
                continue
            if entry.endswith(NEW_SUFFIX) or _bpf_maps.prog_info_by_path(path)["id"] not in live:
                os.unlink(path)

    def write_state(self) -> None:
        record = {"version": STATE_VERSION, "pin_root": self.pin_root, "netns": self.netns,
                  "interface": self.ifname, "ifindex": self.ifindex, "object": self.object,
                  "object_sha256": self.object_sha256, "fingerprint": self.fp, "params": self.params,
                  "left_out": self.left_out}
        x = self.result_xdp
        if x and x["id"]:
            record["xdp"] = {"program": x["program"], "id": x["id"], "tag": x["tag"], "mode": x["mode"],
                             "requested_mode": self.want_mode, "fingerprint": self.fp}
        tc = []
        if self.with_tc:
            for t in self.result_tc:
                if t["id"]:
                    tc.append({"program": t["program"], "direction": t["direction"], "handle": t["handle"],
                               "priority": t["priority"], "id": t["id"], "tag": t["tag"], "fingerprint": self.fp})
        else:
            tc = [s for s in self.record.get("tc") or [] if isinstance(s, dict)]
        record["tc"] = tc
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        atomic_write(self.state_path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def apply_absent(self) -> None:
        undo, held, new_pins = [], [], []
        try:
            if self.xdp_plan:
                self.apply_xdp(None, undo, held, new_pins)
            self.apply_tc(None, undo, held, new_pins)
        finally:
            for fd in held:
                os.close(fd)
        for pin in self.pins.values():
            if os.path.lexists(pin["path"]):
                os.unlink(pin["path"])
        # remove our now-empty folders: <ifname>, <netns>, lqos_bpf
        path = self.pin_dir
        for dummy in range(3):
            try:
                os.rmdir(path)
            except OSError:
                break
            path = os.path.dirname(path)
        if os.path.exists(self.state_path):
            os.unlink(self.state_path)

    # -- results ------------------------------------------------------------------
    def planned_xdp(self) -> dict | None:
        """The xdp return value when nothing was applied: what is there now, and what would change."""
        d = self.xdp_plan
        if d is None or (not self.xdp_prog and d["kind"] != DETACH):
            return None
        old_id = d.get("old_id")
        info = self.xdp_now["info"].get(old_id) or {}
        keep = d["kind"] in (KEEP, NONE, LEAVE)
        return {"program": self.xdp_prog or info.get("name"), "id": old_id if keep else None,
                "tag": info.get("tag") if keep else None,
                "mode": d.get("old_mode") if keep else (None if d["kind"] == DETACH else d.get("mode")),
                "previous_id": None if keep else old_id, "previous_tag": None if keep else info.get("tag"),
                "action": d["kind"], "tried": []}

    def planned_tc(self) -> list:
        out = []
        for slot, td in self.tc_plan:
            now = self.tc_now[slot_id(slot)]
            keep = td["kind"] in (KEEP, NONE, LEAVE)
            info = now["info"] or {}
            out.append({"program": slot.get("program") or info.get("name"), "direction": slot["direction"],
                        "handle": slot["handle"], "priority": slot["priority"],
                        "id": now["id"] if keep else None, "tag": info.get("tag") if keep else None,
                        "previous_id": None if keep else now["id"],
                        "previous_tag": None if keep else info.get("tag"), "action": td["kind"]})
        return out

    def hooks_snapshot(self) -> dict:
        """What each hook we look at holds, and our pins (diff mode)."""
        xdp = {m: prog_desc(i, self.xdp_now["info"].get(i)) for m, i in sorted(self.xdp_now["ids"].items())}
        tc = {sid: prog_desc(now["id"], now["info"]) for sid, now in sorted(self.tc_now.items()) if now["id"]}
        return {"xdp": xdp, "tc": tc, "pins": sorted(p["path"] for p in self.pins.values())}

    def reread(self) -> dict:
        slots = list(self.tc_now[sid]["slot"] for sid in sorted(self.tc_now))
        self.xdp_now, self.tc_now, self.pins, self.ours = {"ids": {}, "info": {}}, {}, {}, set()
        self.read_pins()
        if self.ifindex is not None:
            self.read_hooks(slots)
        return self.hooks_snapshot()

    def skb_warning(self, xdp: dict | None) -> None:
        if not xdp or xdp.get("mode") != "skb":
            return
        if xdp.get("tried"):
            self.warnings.append("XDP program %s on %s fell back to skb (generic) mode: the driver refused %s mode; "
                                 "generic XDP is much slower than native XDP"
                                 % (xdp["program"], self.ifname, " and ".join(t["mode"] for t in xdp["tried"])))
        else:
            self.warnings.append("XDP program %s on %s runs in skb (generic) mode, which is much slower than "
                                 "native XDP" % (xdp["program"], self.ifname))


CHANGING = (ATTACH, REPLACE, REPLACE_FOREIGN, REATTACH, REPLACE_LINK, DETACH)


def run_attach(module, spec: dict) -> dict:
    """The whole module run; returns the result dict."""
    att = Attacher(module, spec)
    apply = bool(module.params["approve"]) and not module.check_mode
    if not apply:
        return _run(module, att, False)
    os.makedirs(att.state_dir, mode=0o700, exist_ok=True)
    with _Lock(att.state_dir):
        return _run(module, att, True)


def _run(module, att: Attacher, apply: bool) -> dict:
    present = att.state == "present"
    try:
        att.enter_netns()
        have_if = att.resolve_interface(required=present)
        if present:
            att.inspect_object()
        else:
            att.tc_slots = [{"program": t["program"], "direction": t["direction"], "handle": t["handle"],
                             "priority": t["priority"]} for t in (att.spec.get("attach") or {}).get("tc") or []]
        att.read_pins()
        if present:
            att.plan_present()
        elif have_if or att.pins:
            att.plan_absent()
        before = att.hooks_snapshot()
        applied = bool(att.actions) and apply
        if applied and present:
            att.apply_present()
            xdp, tc = att.result_xdp, att.result_tc
            kinds = [t["action"] for t in tc] + ([xdp["action"]] if xdp else [])
            changed = (any(k in CHANGING for k in kinds) or bool(att.needs_load() and att.maps_to_pin)
                       or bool(att.repin))
        elif applied:
            att.apply_absent()
            xdp, tc = att.result_xdp, att.result_tc
            changed = True
        else:
            xdp, tc = att.planned_xdp(), att.planned_tc()
            changed = bool(att.actions)
        att.skb_warning(xdp)
        if present and att.needs_load():
            att.left_out_warnings()
        elif present and att.record.get("fingerprint") == att.fp:
            att.left_out = [e for e in att.record.get("left_out") or [] if isinstance(e, dict)]
            for e in att.left_out:
                att.notes.append("optional program %s (SEC(\"%s\")) is not loaded on %s: %s"
                                 % (e.get("program"), e.get("section"), att.ifname, e.get("reason")))
        after = None
        if module._diff:  # pylint: disable=protected-access
            after = att.reread() if applied else ({"planned": list(att.actions)} if att.actions else before)
    except _libbpf.LibbpfError as exc:
        raise _lib_error(exc)
    result = {
        "changed": changed,
        "applied": applied,
        "interface": att.ifname,
        "ifindex": att.ifindex,
        "netns": att.netns,
        "state": att.state,
        "object": att.object if present else None,
        "object_sha256": att.object_sha256,
        "fingerprint": att.fp,
        "loaded": bool(applied and present and att.needs_load()),
        "programs": att.roles,
        "left_out": att.left_out,
        "xdp": xdp,
        "tc": tc,
        "actions": att.actions,
        "notes": att.notes,
        "pin_dir": att.pin_dir,
        "state_file": att.state_path,
    }
    if att.actions and not applied:
        result["msg"] = ("%d action(s) planned on %s; nothing was changed (%s)."
                         % (len(att.actions), att.ifname, "check mode" if module.check_mode else
                            "approve is false: set approve: true to apply them"))
    if after is not None:
        result["diff"] = {"before": before, "after": after}
    for text in att.warnings:
        module.warn(text)
    return result
