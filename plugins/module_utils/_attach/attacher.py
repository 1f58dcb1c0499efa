# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""One run of module lqos.bpf.attach (XDP and TC attach/detach of a built BPF object): its state and its steps, composed of
its parts Observer (observe.py), Planner (planner.py), Kprobes (kprobe.py) and Applier (apply.py).

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

One phase per file: ``plan.py`` (pure planning: naming, fingerprints,
``decide_*``, the plan's wording; unit-tested with plain data), this file (the
``Attacher``: one run's state, and the run itself), ``observe.py`` (the hooks,
pins and programs read), ``planner.py`` (the decisions), ``kprobe.py`` (the
kprobes asked for) and ``apply.py`` (the approved changes and their rollback).
"""

from __future__ import annotations

import os

from .._common import LqosError
from .._bpffs import confine_pin, require_bpffs
from .._kernel import libbpf as _libbpf
from .apply import Applier, _lib_error, _Lock
from .kprobe import Kprobes
from .observe import Observer
from .planner import Planner
from .plan import (
    ATTACH,
    DEFAULT_STATE_DIR,
    DETACH,
    KEEP,
    REATTACH,
    REPLACE,
    REPLACE_FOREIGN,
    REPLACE_LINK,
    default_object,
    pin_rel_dir,
    read_state,
    state_file_name,
    validate_ifname,
    validate_netns,
)
from .._spec import is_load_value, SPECIAL_VALUES


class Attacher(object):
    """One module run: observe, plan, and (approved) apply. The run's state (options, what was observed, the
    plan, the results) lives here; the behaviour is in its parts, each holding this Attacher: ``self.observer``
    (``observe.Observer``), ``self.planner`` (``planner.Planner``), ``self.kprobes`` (``kprobe.Kprobes``) and
    ``self.applier`` (``apply.Applier``); the four classes are passed in (defaults: those)."""

    def __init__(self, module, spec: dict, kprobes=Kprobes, applier=Applier, observer=Observer, planner=Planner):
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
        self.observer = observer(self)
        self.planner = planner(self)


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
        att.observer.enter_netns()
        have_if = att.observer.resolve_interface(required=present)
        if present:
            att.observer.inspect_object()
        else:
            att.tc_slots = [{"program": t["program"], "direction": t["direction"], "handle": t["handle"],
                             "priority": t["priority"]} for t in (att.spec.get("attach") or {}).get("tc") or []]
        if apply and have_if:
            att.applier.publish_leftover_pins()
        att.observer.read_pins()
        if present:
            att.planner.plan_present()
        elif have_if or att.pins or att.kprobe_pins:
            att.planner.plan_absent()
        before = att.observer.hooks_snapshot()
        applied = bool(att.actions) and apply
        if applied and present:
            att.applier.apply_present()
            xdp, tc = att.result_xdp, att.result_tc
            kinds = [t["action"] for t in tc] + ([xdp["action"]] if xdp else [])
            changed = any(k in CHANGING for k in kinds) or bool(att.planner.needs_load() and att.maps_to_pin)
            changed = changed or bool(att.repin) or any(r["kind"] != KEEP for r in att.kprobe_plan)
        elif applied:
            att.applier.apply_absent()
            xdp, tc = att.result_xdp, att.result_tc
            changed = True
        else:
            xdp, tc = att.planner.planned_xdp(), att.planner.planned_tc()
            changed = bool(att.actions)
        att.planner.skb_warning(xdp)
        if present and att.planner.needs_load():
            att.planner.left_out_warnings()
        elif present and att.record.get("fingerprint") == att.fp:
            att.left_out = [e for e in att.record.get("left_out") or [] if isinstance(e, dict)]
            for e in att.left_out:
                att.notes.append("optional program %s (SEC(\"%s\")) is not loaded on %s: %s"
                                 % (e.get("program"), e.get("section"), att.ifname, e.get("reason")))
        after = None
        if module._diff:  # pylint: disable=protected-access
            after = att.observer.reread() if applied else ({"planned": list(att.actions)} if att.actions else before)
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
        "loaded": bool(applied and present and att.planner.needs_load()),
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
