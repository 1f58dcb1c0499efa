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

Three files, one phase each: ``_attach_plan.py`` (pure planning: naming,
fingerprints, ``decide_*``, the plan's wording; unit-tested with plain data),
this file (``Attacher``: observe the hooks, pins and programs, and plan), and
``_attach_apply.py`` (the approved changes and their rollback).
"""

from __future__ import annotations

import errno
import os

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    check_bpf_object,
    int_bytes,
    LqosError,
    sha256_file,
)
from ansible_collections.lqos.bpf.plugins.module_utils._bpffs import confine_pin, require_bpffs
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as _libbpf
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as _bpf_btf
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as _bpf_hooks
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import qdiscs as _qdiscs
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as _bpf_maps
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as _bpf_object
from ansible_collections.lqos.bpf.plugins.module_utils._attach.apply import Applier, _lib_error, _Lock
from ansible_collections.lqos.bpf.plugins.module_utils._attach.kprobe import Kprobes
from ansible_collections.lqos.bpf.plugins.module_utils._ownership import owners as _ownership
from ansible_collections.lqos.bpf.plugins.module_utils._attach.plan import (
    ATTACH,
    DEFAULT_STATE_DIR,
    DETACH,
    KEEP,
    LEAVE,
    NONE,
    REATTACH,
    REFUSE,
    REPLACE,
    REPLACE_FOREIGN,
    REPLACE_LINK,
    VERIFY,
    decide_tc,
    decide_xdp,
    default_object,
    describe_params,
    fingerprint,
    link_holder,
    link_refuse_error,
    load_params,
    pin_component,
    pin_rel_dir,
    prog_desc,
    read_state,
    refuse_error,
    slot_id,
    state_file_name,
    tc_action,
    validate_ifname,
    validate_netns,
    wanted_slots,
    xdp_action,
)
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import feature_of, program_roles
from ansible_collections.lqos.bpf.plugins.module_utils._spec import is_load_value, SPECIAL_VALUES


def _check_ranges(btf, params: dict) -> None:
    """Every integer load-time value against its variable's BTF type (size and signedness), already in a plan:
    the one range check of _common.int_bytes, which the load and map_entries use too."""
    for section in ("rodata", "data"):
        for var, value in sorted(params[section].items()):
            vi = btf.var_info(var)
            if vi is None or isinstance(value, bool) or not isinstance(value, int) or vi["size"] not in (1, 2, 4, 8):
                continue
            shape = btf.shape(vi["type_id"])
            int_bytes(value, vi["size"], shape["signed"] if shape["kind"] == "int" else None,
                      "%s variable %s" % (vi["section"], var))


class Attacher(object):
    """One module run: observe, plan, and (approved) apply. Observing and planning live here; the kprobes are
    the part ``self.kprobes`` (``kprobe.Kprobes``), applying the part ``self.applier`` (``apply.Applier``), each
    made from the class passed in with this run's Attacher."""

    def __init__(self, module, spec: dict, kprobes=Kprobes, applier=Applier):
        p = module.params
        self.module = module
        self.spec = spec
        self.state = p["state"]
        self.ifname = p["interface"]
        self.netns = p["netns"]
        self.want_mode = p["xdp_mode"]
        self.with_tc = p["tc"]
        self.tc_only = p.get("tc_programs")
        self.force = p["force"]
        self.want_kprobes = None if p.get("kprobes") is None else sorted(set(p["kprobes"]))
        self.kprobe_pins = {}  # program -> {path, kind, link_id, prog_id}: our pinned kprobe links
        self.kprobe_plan = []  # [{program, target, kind, pin, link_id, prog_id}]
        self.kprobes_off = set()  # kprobe programs not asked for: never loaded
        validate_netns(self.netns)
        validate_ifname(self.ifname)
        self.pin_root = require_bpffs(p["pin_root"])
        self.object = p["object"] or default_object(spec)
        self.state_dir = p["state_dir"]
        if os.path.lexists(self.state_dir) and not os.path.isdir(self.state_dir):
            raise LqosError("state_dir %s is not a folder." % self.state_dir,
                            "point state_dir at a folder (default %s) or remove what is there." % DEFAULT_STATE_DIR)
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
        self.held = None      # {prog id: [{pid, comm, unit}]}: processes holding the programs not ours (_ownership)
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
        self.overrides = {"rodata": dict(p.get("rodata") or {}), "data": dict(p.get("data") or {})}
        # Values a topology derived from the spec (deploy role): spec values, so a variable the object lacks (an
        # older release) is left out with a note instead of failing.
        topo = dict(p.get("topology_data") or {})
        if topo:
            self.spec = dict(spec, attach=dict(spec["attach"], data=dict(spec["attach"].get("data") or {}, **topo)))
        for section, values in list(self.overrides.items()) + [("topology_data", topo)]:
            for var, value in values.items():
                if not is_load_value(value):
                    raise LqosError("%s.%s must be an integer or one of %s, got %r." % (
                        section, var, ", ".join(SPECIAL_VALUES), value),
                        "write a number, possible_cpus, ifindex, ifindex:<interface> or be16:<number>.")
        self.replace_ingress = False
        self.kprobes = kprobes(self)
        self.applier = applier(self, self.kprobes)

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

    def lookup_ifindex(self, name: str) -> int:
        """The index of another interface in this network namespace (``ifindex:NAME`` values)."""
        try:
            return _bpf_hooks.ifindex(name)
        except _libbpf.LibbpfError:
            raise LqosError("interface %s (named in a load-time value ifindex:%s) does not exist in %s."
                            % (name, name, "network namespace %s" % self.netns if self.netns else
                               "the host's network namespace"), "fix the name in data/rodata.")

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
        if not os.path.lexists(self.object):
            raise LqosError("BPF object %s does not exist." % self.object,
                            "build it first with lqos.bpf.pipeline (spec %s), or point the object option at the "
                            "built .o file." % self.spec["name"])
        check_bpf_object(self.object)
        try:
            info = _bpf_object.object_info(self.object, self.pin_root)
        except _libbpf.LibbpfError as exc:
            raise _lib_error(exc)
        self.programs = {p["name"]: p["type_name"] for p in info["programs"]}
        self.sections = {p["name"]: p["section"] for p in info["programs"]}
        self.xdp_prog, self.tc_slots, notes = wanted_slots(self.spec, self.programs, self.with_tc, self.object,
                                                           self.tc_only)
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
        with _bpf_btf.Btf.from_file(self.object) as btf:
            known = {v: btf.var_info(v) is not None for s in ("rodata", "data")
                     for v in list(self.spec["attach"].get(s) or {}) + list(self.overrides.get(s) or {})}
            self.params = load_params(self.spec, ncpus, self.ifindex, self.overrides, self.lookup_ifindex,
                                      known.get, self.notes)
            _check_ranges(btf, self.params)
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
                            "replace the old pins with lqos.bpf.pinned_maps (state: migrated keeps their entries; "
                            "state: clean removes them after a backup), then attach again.",
                            incompatible_pins=list(self.bad_pins))

    def read_pins(self) -> None:
        """Our pinned programs: their ids define what is ours (and the record's, see recorded_ids)."""
        self.ours |= self.recorded_ids()
        if not os.path.isdir(self.pin_dir):
            return
        for entry in sorted(os.listdir(self.pin_dir)):
            path = os.path.join(self.pin_dir, entry)
            if _libbpf.pinned_kind(path) != "prog":
                continue
            info = _bpf_maps.prog_info_by_path(path)
            self.pins[entry] = {"id": info["id"], "name": info["name"], "tag": info["tag"], "path": path}
            self.ours.add(info["id"])
        self.kprobes.read_kprobe_pins()

    def recorded_ids(self) -> set:
        """Ids of the programs the attach record says this collection attached here that the kernel still holds
        with the recorded tag: ours even when their pins were lost (bpffs remounted) while they stay attached."""
        rows = [self.record.get("xdp")] + list(self.record.get("tc") or [])
        out = set()
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("id"), int) and row.get("tag"):
                info = self.prog_info(row["id"])
                if info and info["tag"] == row["tag"]:
                    out.add(row["id"])
        return out

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
        if _qdiscs.ingress_slot_kind(self.ifindex) != "ingress":
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

    def service_holders(self, prog_id) -> list | None:
        """The processes holding ``prog_id`` when it is a service's (``_ownership.owner_of``), else None. The scan of
        /proc runs once, and only when a hook holds a program that is not ours."""
        if not prog_id or prog_id in self.ours:
            return None
        if self.held is None:
            ids = set(self.xdp_now["ids"].values()) | {t["id"] for t in self.tc_now.values() if t["id"]}
            self.held = _ownership.holders(ids - self.ours)
        owner, detail = _ownership.owner_of(prog_id, self.ours, self.held)
        return detail if owner == _ownership.SERVICE else None

    def held_by(self, prog_id) -> str:
        held = self.service_holders(prog_id)
        return " (a service's: held by %s)" % _ownership.describe_holders(held) if held else ""

    def refuse_service(self, hook: str, prog_id) -> None:
        """A program a running process holds is the service's: never replaced, with or without force."""
        held = self.service_holders(prog_id)
        if held:
            info = self.xdp_now["info"].get(prog_id) if hook == "XDP" else self.prog_info(prog_id)
            raise _ownership.service_refusal(hook, self.ifname, self.netns, prog_desc(prog_id, info), held)

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
            if d.get("foreign") or d.get("reason") == "foreign":
                self.refuse_service("XDP", d.get("old_id"))
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
                where = "TC %s (handle 0x%x priority 0x%x)" % (slot["direction"], slot["handle"], slot["priority"])
                if td.get("foreign"):
                    self.refuse_service(where, now["id"])
                if td["kind"] == REFUSE:
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
        self.kprobes.plan_kprobes()
        self.refuse_bad_pins()
        self.plan_actions_present()
        self.kprobes.plan_kprobe_actions()

    def needs_load(self) -> bool:
        kinds = [self.xdp_plan["kind"]] + [d["kind"] for dummy, d in self.tc_plan]
        loads = any(k in (ATTACH, REPLACE, VERIFY, REPLACE_FOREIGN, REATTACH, REPLACE_LINK) for k in kinds)
        return loads or self.kprobes.kprobe_loads()

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
            without = sorted(self.disabled - self.kprobes_off)
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
                    self.notes.append("XDP program %s on %s (%s mode) is not ours%s: left in place"
                                      % (desc, self.ifname, mode, self.held_by(pid)))
            for sid, slot in sorted(slots.items()):
                now = self.tc_now[sid]
                if not now["id"]:
                    continue
                desc = prog_desc(now["id"], now["info"])
                if now["id"] in self.ours:
                    self.tc_plan.append((slot, {"kind": DETACH, "old_id": now["id"]}))
                    self.actions.append(tc_action(DETACH, slot, self.ifname, desc))
                else:
                    self.notes.append("TC %s program %s on %s is not ours%s: left in place"
                                      % (slot["direction"], desc, self.ifname, self.held_by(now["id"])))
        for name, pin in sorted(self.pins.items()):
            self.actions.append("unpin %s (%s)" % (pin["path"], prog_desc(pin["id"], pin)))
        self.kprobes.plan_kprobes_absent()

    def probe_optional(self) -> None:
        """Trial-load every optional program alone (nothing pinned or attached); leave out the refused ones."""
        if self.probed:
            return
        self.probed = True
        optional = sorted(n for n, r in self.roles.items() if r == "optional" and n not in self.disabled)
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
        """A warning for an XDP program in skb (generic) mode: why it is there and how to get native XDP."""
        if not xdp or xdp.get("mode") != "skb":
            return
        slow = "generic XDP is much slower than native XDP"
        if xdp.get("tried"):
            self.warnings.append(
                "XDP program %s on %s fell back to skb (generic) mode: the driver refused %s; %s. To get native XDP: "
                "shape on an interface whose driver supports native XDP (ethtool -i %s names the driver; see its "
                "XDP limits, e.g. MTU or queue count, in dmesg), then set xdp_mode: native to fail instead of "
                "falling back" % (xdp["program"], self.ifname,
                                  " and ".join("%s mode (%s)" % (t["mode"], t["error"]) for t in xdp["tried"]), slow,
                                  self.ifname))
        elif self.want_mode == "skb":
            self.warnings.append("XDP program %s on %s runs in skb (generic) mode because xdp_mode is skb; %s. To "
                                 "get native XDP: set xdp_mode: auto or native" % (xdp["program"], self.ifname, slow))
        else:
            why = ("the program it replaced ran in skb mode and an atomic replace keeps the mode"
                   if xdp.get("action") in (REPLACE, REPLACE_FOREIGN) else "it stays as it was attached earlier")
            self.warnings.append(
                "XDP program %s on %s runs in skb (generic) mode: %s; %s. To get native XDP: set xdp_mode: native "
                "(a detach and an attach, not atomic), and if the driver refuses it, shape on an interface whose "
                "driver supports native XDP" % (xdp["program"], self.ifname, why, slow))


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
        if apply and have_if:
            att.applier.publish_leftover_pins()
        att.read_pins()
        if present:
            att.plan_present()
        elif have_if or att.pins or att.kprobe_pins:
            att.plan_absent()
        before = att.hooks_snapshot()
        applied = bool(att.actions) and apply
        if applied and present:
            att.applier.apply_present()
            xdp, tc = att.result_xdp, att.result_tc
            kinds = [t["action"] for t in tc] + ([xdp["action"]] if xdp else [])
            changed = any(k in CHANGING for k in kinds) or bool(att.needs_load() and att.maps_to_pin)
            changed = changed or bool(att.repin) or any(r["kind"] != KEEP for r in att.kprobe_plan)
        elif applied:
            att.applier.apply_absent()
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
        "kprobes": att.kprobes.kprobe_results(),
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
