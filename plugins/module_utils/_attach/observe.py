# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What an attach run reads before it plans: the network namespace and the interface, the object (programs,
roles, load-time values), the pins under the pin folder, the attach record, the XDP and TC hooks with the
owner of each program on them, and the hooks again for the diff. The observing part of the Attacher."""

from __future__ import annotations

import errno
import os

from .._common import (
    check_bpf_object,
    int_bytes,
    LqosError,
    sha256_file,
)
from .._kernel import libbpf as _libbpf
from .._kernel import btf as _btf
from .._kernel import hooks as _hooks
from .._kernel import qdiscs as _qdiscs
from .._kernel import maps as _kmaps
from .._kernel import objects as _objects
from .apply import _lib_error
from .._ownership import owners as _owners
from .plan import (
    REATTACH,
    REFUSE,
    REPLACE_FOREIGN,
    REPLACE_LINK,
    fingerprint,
    link_holder,
    link_refuse_error,
    load_params,
    prog_desc,
    slot_id,
    wanted_slots,
)
from .._kernel.programs import program_roles


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


class Observer(object):
    """The observer part of an ``Attacher``: ``att`` is the run it belongs to (its state, its other parts)."""

    def __init__(self, att):
        self.att = att

    # -- observation --------------------------------------------------------
    def enter_netns(self) -> None:
        if not self.att.netns:
            return
        try:
            _hooks.enter_netns(self.att.netns)
        except _libbpf.LibbpfError as exc:
            if exc.errno == errno.ENOENT:
                raise LqosError("network namespace %s does not exist (no /run/netns/%s)." % (self.att.netns, self.att.netns),
                                "create it (ip netns add %s) or fix the netns option." % self.att.netns)
            raise _lib_error(exc)

    def lookup_ifindex(self, name: str) -> int:
        """The index of another interface in this network namespace (``ifindex:NAME`` values)."""
        try:
            return _hooks.ifindex(name)
        except _libbpf.LibbpfError:
            raise LqosError("interface %s (named in a load-time value ifindex:%s) does not exist in %s."
                            % (name, name, "network namespace %s" % self.att.netns if self.att.netns else
                               "the host's network namespace"), "fix the name in data/rodata.")

    def resolve_interface(self, required: bool) -> bool:
        try:
            self.att.ifindex = _hooks.ifindex(self.att.ifname)
        except _libbpf.LibbpfError:
            where = "network namespace %s" % self.att.netns if self.att.netns else "the host's network namespace"
            if not required:
                self.att.notes.append("interface %s does not exist in %s: nothing can be attached there"
                                      % (self.att.ifname, where))
                return False
            raise LqosError("interface %s does not exist in %s." % (self.att.ifname, where),
                            "check the name with `ip%s link show` (names are case-sensitive)."
                            % (" -n %s" % self.att.netns if self.att.netns else ""))
        return True

    def inspect_object(self) -> None:
        if not os.path.lexists(self.att.object):
            raise LqosError("BPF object %s does not exist." % self.att.object,
                            "build it first with lqos.bpf.pipeline (spec %s), or point the object option at the "
                            "built .o file." % self.att.spec["name"])
        check_bpf_object(self.att.object)
        try:
            info = _objects.object_info(self.att.object, self.att.pin_root)
        except _libbpf.LibbpfError as exc:
            raise _lib_error(exc)
        self.att.programs = {p["name"]: p["type_name"] for p in info["programs"]}
        self.att.sections = {p["name"]: p["section"] for p in info["programs"]}
        self.att.xdp_prog, self.att.tc_slots, notes = wanted_slots(self.att.spec, self.att.programs, self.att.with_tc, self.att.object,
                                                                   self.att.tc_only)
        self.att.notes.extend(notes)
        self.att.roles = program_roles(self.att.spec, info["programs"])
        for name in [self.att.xdp_prog] + [s["program"] for s in self.att.tc_slots]:
            if name and self.att.roles.get(name) != "required":
                if self.att.roles.get(name) == "disabled":
                    raise LqosError("program %s is attached by the spec but spec programs.%s is disabled."
                                    % (name, name), "remove it from attach, or make it required.")
                self.att.roles[name] = "required"
        self.att.disabled = {n for n, r in self.att.roles.items() if r == "disabled"}
        self.att.object_sha256 = sha256_file(self.att.object)
        ncpus = _libbpf.possible_cpus()
        with _btf.Btf.from_file(self.att.object) as btf:
            known = {v: btf.var_info(v) is not None for s in ("rodata", "data")
                     for v in list(self.att.spec["attach"].get(s) or {}) + list(self.att.overrides.get(s) or {})}
            self.att.params = load_params(self.att.spec, ncpus, self.att.ifindex, self.att.overrides, self.lookup_ifindex,
                                          known.get, self.att.notes)
            _check_ranges(btf, self.att.params)
        self.att.fp = fingerprint(self.att.object_sha256, self.att.params)
        self.check_pins(info["maps"])

    def check_pins(self, maps: list) -> None:
        """Refuse early (also when only planning) when an existing map pin cannot be reused."""
        bad = []
        for m in maps:
            path = m.get("pin_path")
            if not m.get("pinning") or not path:
                continue
            want = dict(m)
            if m["name"] in self.att.params["resize"]:
                want["max_entries"] = self.att.params["resize"][m["name"]]
            if not os.path.lexists(path):
                self.att.maps_to_pin.append((m["name"], path))
                continue
            real, root = os.path.realpath(path), os.path.realpath(self.att.pin_root)
            if os.path.islink(path) or not real.startswith(root + "/"):
                bad.append("%s is a symbolic link to %s, %s the pin root; libbpf would follow it, so it is never "
                           "used" % (path, os.readlink(path) if os.path.islink(path) else real,
                                     "inside" if real.startswith(root + "/") else "outside"))
                continue
            kind = _libbpf.pinned_kind(path)
            if kind != "map":
                bad.append("%s is %s, not a map" % (path, "a pinned " + kind if kind else "not a BPF object"))
                continue
            have = _kmaps.map_info_by_path(path)
            diffs = ["%s pinned %s, object %s" % (k, have[k], want[k])
                     for k in ("type_name", "key_size", "value_size", "max_entries", "flags")
                     if have[k] != want[k]]
            if diffs:
                bad.append("map %s: pin %s (%s)" % (m["name"], path, "; ".join(diffs)))
        self.att.bad_pins = bad

    def refuse_bad_pins(self) -> None:
        if self.att.bad_pins and self.att.planner.needs_load():
            raise LqosError("existing map pins are incompatible with %s: %s; libbpf reuses a pin only when type, "
                            "sizes, max_entries and flags match, so nothing was loaded or attached."
                            % (self.att.object, "; ".join(self.att.bad_pins)),
                            "replace the old pins with lqos.bpf.pinned_maps (state: migrated keeps their entries; "
                            "state: clean removes them after a backup), then attach again.",
                            incompatible_pins=list(self.att.bad_pins))

    def read_pins(self) -> None:
        """Our pinned programs: their ids define what is ours (and the record's, see recorded_ids)."""
        self.att.ours |= self.recorded_ids()
        if not os.path.isdir(self.att.pin_dir):
            return
        for entry in sorted(os.listdir(self.att.pin_dir)):
            path = os.path.join(self.att.pin_dir, entry)
            if _libbpf.pinned_kind(path) != "prog":
                continue
            info = _kmaps.prog_info_by_path(path)
            self.att.pins[entry] = {"id": info["id"], "name": info["name"], "tag": info["tag"], "path": path}
            self.att.ours.add(info["id"])
        self.att.kprobes.read_kprobe_pins()

    def recorded_ids(self) -> set:
        """Ids of the programs the attach record says this collection attached here that the kernel still holds
        with the recorded tag: ours even when their pins were lost (bpffs remounted) while they stay attached."""
        rows = [self.att.record.get("xdp")] + list(self.att.record.get("tc") or [])
        out = set()
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("id"), int) and row.get("tag"):
                info = self.prog_info(row["id"])
                if info and info["tag"] == row["tag"]:
                    out.add(row["id"])
        return out

    def prog_info(self, prog_id: int) -> dict | None:
        try:
            info = _kmaps.prog_info_by_id(prog_id)
        except _libbpf.LibbpfError:
            return None
        return {"name": info["name"], "tag": info["tag"]}

    def read_hooks(self, tc_slots: list) -> None:
        q = _hooks.xdp_query(self.att.ifindex)
        for mode, key in (("native", "drv_prog_id"), ("skb", "skb_prog_id"), ("hw", "hw_prog_id")):
            if q[key]:
                self.att.xdp_now["ids"][mode] = q[key]
                self.att.xdp_now["info"][q[key]] = self.prog_info(q[key])
        for slot in tc_slots:
            sid = slot_id(slot)
            if sid in self.att.tc_now:
                continue
            if self.att.replace_ingress:   # the qdisc and every filter on it go before anything is attached
                self.att.tc_now[sid] = {"slot": slot, "id": None, "info": None}
                continue
            cur = _hooks.tc_query(self.att.ifindex, slot["direction"], slot["handle"], slot["priority"])
            self.att.tc_now[sid] = {"slot": slot, "id": cur or None, "info": self.prog_info(cur) if cur else None}

    def recorded_tc(self) -> dict:
        return {slot_id(s): s for s in self.att.record.get("tc") or [] if isinstance(s, dict) and "direction" in s}

    # -- planning -------------------------------------------------------------
    def check_ingress_slot(self) -> None:
        """A legacy `ingress` qdisc in the clsact slot accepts an egress filter and runs it on ingress: refuse,
        or (force) replace it by clsact."""
        if _qdiscs.ingress_slot_kind(self.att.ifindex) != "ingress":
            return
        if not self.att.force:
            raise LqosError("%s has a legacy `ingress` qdisc where TC programs need clsact: a filter attached to its "
                            "egress would be accepted and run on ingress (both qdiscs take parent ffff:fff1); "
                            "nothing was changed." % self.att.ifname,
                            "remove it (tc%s qdisc del dev %s ingress; the filters it holds go with it), or set force: "
                            "true to replace it by clsact." % (" -n %s" % self.att.netns if self.att.netns else "",
                                                               self.att.ifname))
        self.att.replace_ingress = True
        self.att.warnings.append("replacing the legacy ingress qdisc on %s by clsact (force: true): the filters it "
                                 "holds are removed" % self.att.ifname)

    def service_holders(self, prog_id) -> list | None:
        """The processes holding ``prog_id`` when it is a service's (``_ownership.owners.owner_of``), else None. The scan of
        /proc runs once, and only when a hook holds a program that is not ours."""
        if not prog_id or prog_id in self.att.ours:
            return None
        if self.att.held is None:
            ids = set(self.att.xdp_now["ids"].values()) | {t["id"] for t in self.att.tc_now.values() if t["id"]}
            self.att.held = _owners.holders(ids - self.att.ours)
        owner, detail = _owners.owner_of(prog_id, self.att.ours, self.att.held)
        return detail if owner == _owners.SERVICE else None

    def held_by(self, prog_id) -> str:
        held = self.service_holders(prog_id)
        return " (a service's: held by %s)" % _owners.describe_holders(held) if held else ""

    def refuse_service(self, hook: str, prog_id) -> None:
        """A program a running process holds is the service's: never replaced, with or without force."""
        held = self.service_holders(prog_id)
        if held:
            info = self.att.xdp_now["info"].get(prog_id) if hook == "XDP" else self.prog_info(prog_id)
            raise _owners.service_refusal(hook, self.att.ifname, self.att.netns, prog_desc(prog_id, info), held)

    def xdp_link_of(self, d: dict) -> dict:
        """A foreign XDP program held by a bpf_link: refuse, or (force) plan to detach the link."""
        old_id = d.get("old_id")
        if not old_id or old_id in self.att.ours or d["kind"] not in (REFUSE, REPLACE_FOREIGN, REATTACH):
            return d
        links = _hooks.xdp_links(self.att.ifindex, old_id)
        if not links:
            return d
        link = dict(links[0], pin=_hooks.link_pins(self.att.pin_root, [links[0]["id"]]).get(links[0]["id"]))
        old = prog_desc(old_id, self.att.xdp_now["info"].get(old_id))
        if d["kind"] == REFUSE:
            raise link_refuse_error(self.att.ifname, self.att.netns, old, link)
        self.att.warnings.append("detaching bpf_link %d (%s) to replace foreign XDP program %s on %s (force: true): not "
                                 "atomic" % (link["id"], link_holder(link), old, self.att.ifname))
        return dict(d, kind=REPLACE_LINK, link=link, mode=self.att.want_mode)

    def hooks_snapshot(self) -> dict:
        """What each hook we look at holds, and our pins (diff mode)."""
        xdp = {m: prog_desc(i, self.att.xdp_now["info"].get(i)) for m, i in sorted(self.att.xdp_now["ids"].items())}
        tc = {sid: prog_desc(now["id"], now["info"]) for sid, now in sorted(self.att.tc_now.items()) if now["id"]}
        return {"xdp": xdp, "tc": tc, "pins": sorted(p["path"] for p in self.att.pins.values())}

    def reread(self) -> dict:
        slots = list(self.att.tc_now[sid]["slot"] for sid in sorted(self.att.tc_now))
        self.att.xdp_now, self.att.tc_now, self.att.pins, self.att.ours = {"ids": {}, "info": {}}, {}, {}, set()
        self.read_pins()
        if self.att.ifindex is not None:
            self.read_hooks(slots)
        return self.hooks_snapshot()
