# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What an attach run decides from what it observed: the decision for the XDP hook and each TC slot (attach,
replace, adopt, verify, detach), the trial loads of the optional programs and those left out, the actions
worded for the result, and the results a run that applies nothing reports. The planning part of the Attacher."""

from __future__ import annotations

import os

from .._common import LqosError
from .._kernel import libbpf as _libbpf
from .._kernel import maps as _kmaps
from .._kernel import objects as _objects
from .plan import (
    ATTACH,
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
    describe_params,
    pin_component,
    prog_desc,
    refuse_error,
    slot_id,
    tc_action,
    xdp_action,
)
from .._kernel.programs import feature_of


class Planner(object):
    """The planner part of an ``Attacher``: ``att`` is the run it belongs to (its state, its other parts)."""

    def __init__(self, att):
        self.att = att

    def plan_present(self) -> None:
        recorded = self.att.observer.recorded_tc()
        if self.att.with_tc and self.att.tc_slots:
            self.att.observer.check_ingress_slot()
        self.att.observer.read_hooks(self.att.tc_slots + (list(recorded.values()) if self.att.with_tc else []))
        rec_xdp = self.att.record.get("xdp") if isinstance(self.att.record.get("xdp"), dict) else None
        d = decide_xdp(self.att.xdp_prog, self.att.want_mode, self.att.xdp_now, self.att.ours, rec_xdp, self.att.fp, self.att.force)
        if d.get("reason") != "multi":
            if d.get("foreign") or d.get("reason") == "foreign":
                self.att.observer.refuse_service("XDP", d.get("old_id"))
            d = self.att.observer.xdp_link_of(d)
        old = prog_desc(d.get("old_id"), self.att.xdp_now["info"].get(d.get("old_id")))
        if d["kind"] == REFUSE:
            if d.get("reason") == "multi":
                raise LqosError("%s on %s: %s" % ("XDP", self.att.ifname, d["msg"]),
                                "detach them by hand (ip link set dev %s xdp off; xdpoffload off)." % self.att.ifname)
            raise refuse_error("XDP", self.att.ifname, self.att.netns, old, d.get("old_mode"))
        self.att.xdp_plan = d
        if d["kind"] == REPLACE_FOREIGN or (d["kind"] == REATTACH and d.get("foreign")):
            self.att.warnings.append("replacing foreign XDP program %s on %s (force: true)" % (old, self.att.ifname))
        if d["kind"] == REATTACH:
            self.att.warnings.append("XDP mode change on %s (%s -> %s) cannot be atomic: the interface runs without an "
                                     "XDP program between the detach and the attach"
                                     % (self.att.ifname, d["old_mode"], d["mode"]))
        if self.att.with_tc:
            wanted = {slot_id(s) for s in self.att.tc_slots}
            for slot in self.att.tc_slots:
                now = self.att.tc_now[slot_id(slot)]
                rec = recorded.get(slot_id(slot))
                td = decide_tc(slot, now["id"], now["info"], self.att.ours, rec, self.att.fp, self.att.force)
                where = "TC %s (handle 0x%x priority 0x%x)" % (slot["direction"], slot["handle"], slot["priority"])
                if td.get("foreign"):
                    self.att.observer.refuse_service(where, now["id"])
                if td["kind"] == REFUSE:
                    raise refuse_error(where, self.att.ifname, self.att.netns, prog_desc(now["id"], now["info"]))
                if td["kind"] == REPLACE_FOREIGN:
                    self.att.warnings.append("replacing foreign TC program %s on %s %s (force: true)"
                                             % (prog_desc(now["id"], now["info"]), self.att.ifname, slot["direction"]))
                self.att.tc_plan.append((slot, td))
            for sid, slot in sorted(recorded.items()):
                if sid in wanted:
                    continue
                now = self.att.tc_now[sid]
                td = decide_tc(None, now["id"], now["info"], self.att.ours, slot, self.att.fp, self.att.force)
                if td["kind"] == DETACH:
                    self.att.tc_plan.append((dict(slot), td))
        self.att.kprobes.plan_kprobes()
        self.att.observer.refuse_bad_pins()
        self.plan_actions_present()
        self.att.kprobes.plan_kprobe_actions()

    def needs_load(self) -> bool:
        kinds = [self.att.xdp_plan["kind"]] + [d["kind"] for dummy, d in self.att.tc_plan]
        loads = any(k in (ATTACH, REPLACE, VERIFY, REPLACE_FOREIGN, REATTACH, REPLACE_LINK) for k in kinds)
        return loads or self.att.kprobes.kprobe_loads()

    def live_maps(self) -> dict:
        """{kernel map name: id} of the maps used by our programs that are attached now."""
        ids = set(self.att.xdp_now["ids"].values()) | {t["id"] for t in self.att.tc_now.values() if t["id"]}
        live = {}
        for prog_id in sorted(ids & self.att.ours):
            try:
                map_ids = _kmaps.prog_info_by_id(prog_id)["map_ids"]
            except _libbpf.LibbpfError:
                continue  # unloaded since the hooks were read
            for map_id in map_ids:
                try:
                    live.setdefault(_kmaps.map_info_by_id(map_id)["name"], map_id)
                except _libbpf.LibbpfError:
                    continue
        return live

    def plan_actions_present(self) -> None:
        acts = []
        if self.needs_load():
            self.probe_optional()
            without = sorted(self.att.disabled - self.att.kprobes_off)
            acts.append("load %s (sha256 %s; %s%s)" % (self.att.object, self.att.object_sha256[:16],
                                                       describe_params(self.att.params) or "no load-time values",
                                                       "; without %s" % ", ".join(without) if without else ""))
            for name, path in self.att.maps_to_pin:
                acts.append("pin new map %s at %s" % (name, path))
        elif self.att.maps_to_pin:
            # A pin removed (e.g. by lqos.bpf.pinned_maps) while our programs keep running: pin the map
            # they use again, so userspace reaches the live map. The kernel keeps 15 chars of a map name.
            live = self.live_maps()
            for name, path in self.att.maps_to_pin:
                map_id = live.get(name[:15])
                if map_id:
                    self.att.repin.append((name, map_id, path))
                    acts.append("re-pin live map %s (id %d) at %s" % (name, map_id, path))
        d = self.att.xdp_plan
        if self.att.xdp_prog or d["kind"] == DETACH:
            text = xdp_action(d["kind"], self.att.xdp_prog, self.att.ifname, d,
                              prog_desc(d.get("old_id"), self.att.xdp_now["info"].get(d.get("old_id"))))
            if text:
                acts.append(text)
        hooks_needed = sorted({s["direction"] for s, td in self.att.tc_plan if td["kind"] == ATTACH})
        if self.att.replace_ingress:
            acts.append("delete the legacy ingress qdisc on %s (and the filters it holds) and create clsact"
                        % self.att.ifname)
        elif hooks_needed:
            acts.append("create the clsact qdisc on %s if it is missing" % self.att.ifname)
        for slot, td in self.att.tc_plan:
            now = self.att.tc_now[slot_id(slot)]
            text = tc_action(td["kind"], slot, self.att.ifname, prog_desc(now["id"], now["info"]))
            if text:
                acts.append(text)
        pinned = []
        if self.att.xdp_prog and d["kind"] not in (KEEP, NONE, LEAVE, DETACH):
            pinned.append(self.att.xdp_prog)
        pinned += [s["program"] for s, td in self.att.tc_plan if td["kind"] not in (KEEP, NONE, LEAVE, DETACH)]
        for name in sorted(set(pinned)):
            acts.append("pin %s at %s" % (name, os.path.join(self.att.pin_dir, pin_component(name))))
        self.att.actions = acts

    def plan_absent(self) -> None:
        recorded = self.att.observer.recorded_tc()
        slots = {slot_id(s): s for s in self.att.tc_slots}
        slots.update({k: v for k, v in recorded.items() if k not in slots})
        if self.att.ifindex is not None:
            self.att.observer.read_hooks(list(slots.values()))
            ids = self.att.xdp_now["ids"]
            for mode, pid in sorted(ids.items()):
                desc = prog_desc(pid, self.att.xdp_now["info"].get(pid))
                if pid in self.att.ours:
                    self.att.xdp_plan = {"kind": DETACH, "mode": mode, "old_id": pid, "old_mode": mode}
                    self.att.actions.append(xdp_action(DETACH, None, self.att.ifname, self.att.xdp_plan, desc))
                else:
                    self.att.notes.append("XDP program %s on %s (%s mode) is not ours%s: left in place"
                                          % (desc, self.att.ifname, mode, self.att.observer.held_by(pid)))
            for sid, slot in sorted(slots.items()):
                now = self.att.tc_now[sid]
                if not now["id"]:
                    continue
                desc = prog_desc(now["id"], now["info"])
                if now["id"] in self.att.ours:
                    self.att.tc_plan.append((slot, {"kind": DETACH, "old_id": now["id"]}))
                    self.att.actions.append(tc_action(DETACH, slot, self.att.ifname, desc))
                else:
                    self.att.notes.append("TC %s program %s on %s is not ours%s: left in place"
                                          % (slot["direction"], desc, self.att.ifname, self.att.observer.held_by(now["id"])))
        for name, pin in sorted(self.att.pins.items()):
            self.att.actions.append("unpin %s (%s)" % (pin["path"], prog_desc(pin["id"], pin)))
        self.att.kprobes.plan_kprobes_absent()

    def probe_optional(self) -> None:
        """Trial-load every optional program alone (nothing pinned or attached); leave out the refused ones."""
        if self.att.probed:
            return
        self.att.probed = True
        optional = sorted(n for n, r in self.att.roles.items() if r == "optional" and n not in self.att.disabled)
        if not optional:
            return
        rows = _objects.probe_programs(self.att.object, names=optional, resize=self.att.params["resize"],
                                       rodata=self.att.params["rodata"], data=self.att.params["data"])
        for row in rows:
            if not row["loadable"]:
                self.leave_out(row)

    def leave_out(self, refusal: dict) -> None:
        name = refusal["name"]
        section = refusal.get("section") or self.att.sections.get(name)
        entry = {"program": name, "section": section, "class": refusal["class"], "reason": refusal["reason"],
                 "fix": refusal["fix"], "feature": feature_of(section)}
        self.att.left_out.append(entry)
        self.att.disabled.add(name)

    def left_out_warnings(self) -> None:
        for e in self.att.left_out:
            self.att.warnings.append("optional program %s (SEC(\"%s\")) was left out on %s: %s. Lost: %s. Fix: %s"
                                     % (e["program"], e["section"], self.att.ifname, e["reason"], e["feature"], e["fix"]))

    # -- results ------------------------------------------------------------------
    def planned_xdp(self) -> dict | None:
        """The xdp return value when nothing was applied: what is there now, and what would change."""
        d = self.att.xdp_plan
        if d is None or (not self.att.xdp_prog and d["kind"] != DETACH):
            return None
        old_id = d.get("old_id")
        info = self.att.xdp_now["info"].get(old_id) or {}
        keep = d["kind"] in (KEEP, NONE, LEAVE)
        return {"program": self.att.xdp_prog or info.get("name"), "id": old_id if keep else None,
                "tag": info.get("tag") if keep else None,
                "mode": d.get("old_mode") if keep else (None if d["kind"] == DETACH else d.get("mode")),
                "previous_id": None if keep else old_id, "previous_tag": None if keep else info.get("tag"),
                "action": d["kind"], "tried": []}

    def planned_tc(self) -> list:
        out = []
        for slot, td in self.att.tc_plan:
            now = self.att.tc_now[slot_id(slot)]
            keep = td["kind"] in (KEEP, NONE, LEAVE)
            info = now["info"] or {}
            out.append({"program": slot.get("program") or info.get("name"), "direction": slot["direction"],
                        "handle": slot["handle"], "priority": slot["priority"],
                        "id": now["id"] if keep else None, "tag": info.get("tag") if keep else None,
                        "previous_id": None if keep else now["id"],
                        "previous_tag": None if keep else info.get("tag"), "action": td["kind"]})
        return out

    def skb_warning(self, xdp: dict | None) -> None:
        """A warning for an XDP program in skb (generic) mode: why it is there and how to get native XDP."""
        if not xdp or xdp.get("mode") != "skb":
            return
        slow = "generic XDP is much slower than native XDP"
        if xdp.get("tried"):
            self.att.warnings.append(
                "XDP program %s on %s fell back to skb (generic) mode: the driver refused %s; %s. To get native XDP: "
                "shape on an interface whose driver supports native XDP (ethtool -i %s names the driver; see its "
                "XDP limits, e.g. MTU or queue count, in dmesg), then set xdp_mode: native to fail instead of "
                "falling back" % (xdp["program"], self.att.ifname,
                                  " and ".join("%s mode (%s)" % (t["mode"], t["error"]) for t in xdp["tried"]), slow,
                                  self.att.ifname))
        elif self.att.want_mode == "skb":
            self.att.warnings.append("XDP program %s on %s runs in skb (generic) mode because xdp_mode is skb; %s. To "
                                     "get native XDP: set xdp_mode: auto or native" % (xdp["program"], self.att.ifname, slow))
        else:
            why = ("the program it replaced ran in skb mode and an atomic replace keeps the mode"
                   if xdp.get("action") in (REPLACE, REPLACE_FOREIGN) else "it stays as it was attached earlier")
            self.att.warnings.append(
                "XDP program %s on %s runs in skb (generic) mode: %s; %s. To get native XDP: set xdp_mode: native "
                "(a detach and an attach, not atomic), and if the driver refuses it, shape on an interface whose "
                "driver supports native XDP" % (xdp["program"], self.att.ifname, why, slow))
