# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""kprobe programs attached only when asked (module lqos.bpf.attach, option ``kprobes``).

A kprobe program of the object (section ``kprobe/<function>`` or
``kretprobe/<function>``, e.g. the transmit-path counter) is never loaded or
attached unless its name is in ``kprobes``. An attached one is held by a
bpf_link pinned at ``<pin_root>/lqos_bpf/<netns or host>/<ifname>/<program>``
(next to the interface's program pins), so it outlives the module process; the
state file records its link, program and the fingerprint it was loaded from.
Taking a name out of ``kprobes`` unpins the link, which detaches the kprobe.

``decide_kprobes`` and ``kprobe_action`` are pure (unit-tested with plain
data); ``Kprobes`` is the kernel part ``attacher.Attacher`` is composed with.
"""

from __future__ import annotations

import os

from .._common import LqosError
from .._kernel import libbpf as _libbpf
from .._kernel.libbpf import _ObjFd
from .._kernel.hooks import link_info_by_fd
from .plan import (
    ATTACH, DETACH, KEEP, NEW_SUFFIX, REPLACE, pin_component,
)
from .._kernel.programs import kprobe_target

LOADING = (ATTACH, REPLACE)


def kprobe_programs(sections: dict) -> dict:
    """{program: kernel function} of the kprobe/kretprobe programs among {program: ELF section}."""
    return {name: kprobe_target(sec) for name, sec in sections.items() if kprobe_target(sec)}


def resolve_kprobes(wanted, sections: dict):
    """The ``kprobes`` option as program names: each entry is a program name or an ELF section
    (``kprobe/dev_hard_start_xmit``, LibreQoS's and the reference pipeline's transmit hook, whatever the
    program is called). A section no program has is kept as written (decide_kprobes refuses it)."""
    if wanted is None:
        return None
    out = set()
    for entry in wanted:
        named = sorted(n for n, sec in sections.items() if sec == entry and kprobe_target(sec))
        out.update(named if entry not in sections and named else [entry])
    return sorted(out)


def decide_kprobes(wanted, available: dict, roles: dict, pinned: dict, recorded: dict, fp: str | None) -> list:
    """What to do with each kprobe link of this interface.

    wanted: the ``kprobes`` option (None: leave every link as it is). available: {program: function} of the
    object. pinned: {program: {"path", "kind", "link_id", "prog_id"}} found in our pin folder. recorded:
    {program: {"prog_id", "fingerprint"}} of the state file. Returns [{"program", "target", "kind", ...}] in
    name order; raises LqosError for a name that is not a kprobe program of the object."""
    if wanted is None:
        return []
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise LqosError("kprobes names %s, which %s no kprobe program of the object (it has %s)."
                        % (", ".join(unknown), "is" if len(unknown) == 1 else "are",
                           ", ".join(sorted(available)) or "none"),
                        "name kprobe programs of the object or their sections (kprobe/<function>), or leave "
                        "kprobes out.")
    off = sorted(n for n in wanted if roles.get(n) == "disabled")
    if off:
        raise LqosError("kprobes names %s, but spec programs.%s is disabled." % (", ".join(off), off[0]),
                        "take it out of kprobes, or make it optional in the spec's programs.")
    out = []
    for name in sorted(set(wanted) | set(pinned)):
        pin = pinned.get(name)
        row = {"program": name, "target": available.get(name), "pin": pin["path"] if pin else None,
               "link_id": pin.get("link_id") if pin else None, "prog_id": pin.get("prog_id") if pin else None}
        if pin and pin.get("kind") != "link":
            raise LqosError("%s is in the way of the kprobe link of %s: it is %s, not a bpf_link."
                            % (pin["path"], name, "a pinned " + pin["kind"] if pin.get("kind") else
                               "not a BPF object"), "remove it (rm %s), then attach again." % pin["path"])
        if name not in wanted:
            row["kind"] = DETACH
        elif not pin:
            row["kind"] = ATTACH
        else:
            rec = recorded.get(name) or {}
            same = rec.get("prog_id") == pin.get("prog_id") and rec.get("fingerprint") == fp and fp
            row["kind"] = KEEP if same else REPLACE
        out.append(row)
    return out


def kprobe_action(row: dict, ifname: str) -> str | None:
    """The plan's wording for one kprobe decision (None: nothing to do)."""
    kind, name = row["kind"], row["program"]
    if kind == ATTACH:
        return "attach kprobe program %s to kernel function %s (asked on %s) and pin its link at %s" % (
            name, row["target"], ifname, row["pin"])
    if kind == REPLACE:
        return "replace the kprobe link %s (link id %s, program id %s) by %s of the new load" % (
            row["pin"], row["link_id"], row["prog_id"], name)
    if kind == DETACH:
        return "detach kprobe program %s: unpin its link %s (link id %s)" % (name, row["pin"], row["link_id"])
    return None


def refusal_error(name: str, target: str, row: dict) -> LqosError:
    """A kprobe asked for that this kernel cannot attach: one line, the kernel's reason and the fix."""
    fix = (row.get("fix") or "").split(", or leave it out")[0] or "use a kernel that can attach it"
    return LqosError("kprobe program %s (kernel function %s) cannot be attached on this host: %s; nothing was "
                     "changed." % (name, target, (row.get("reason") or "refused").rstrip(".")),
                     "%s; or take %s out of kprobes (deploy role: lqos_bpf_xmit_kprobe: false)." % (fix, name))


class Kprobes(object):
    """The kprobe part of an attach run: reads, plans and applies the kprobes of ``att`` (an
    ``attacher.Attacher``; the kprobe state, ``want_kprobes``, ``kprobe_pins``, ``kprobe_plan`` and
    ``kprobes_off``, stays on it with the rest of the run's state)."""

    def __init__(self, att):
        self.att = att

    def read_kprobe_pins(self) -> None:
        """Our pinned kprobe links (and anything else pinned under a kprobe program's name)."""
        self.att.kprobe_pins = {}
        if not os.path.isdir(self.att.pin_dir):
            return
        names = {pin_component(n): n for n in list(self.att.programs) + list(self.kprobes_recorded())}
        for entry in sorted(os.listdir(self.att.pin_dir)):
            path = os.path.join(self.att.pin_dir, entry)
            kind = _libbpf.pinned_kind(path)
            if entry.endswith(NEW_SUFFIX) or kind == "prog":
                continue
            if kind != "link" and entry not in names:
                continue
            row = {"path": path, "kind": kind, "link_id": None, "prog_id": None}
            if kind == "link":
                with _ObjFd(path) as fd:
                    info = link_info_by_fd(fd)
                row.update(link_id=info["id"], prog_id=info["prog_id"], type_name=info["type_name"])
            self.att.kprobe_pins[names.get(entry, entry)] = row

    def kprobes_recorded(self) -> dict:
        rec = self.att.record.get("kprobes")
        return {k: v for k, v in rec.items() if isinstance(v, dict)} if isinstance(rec, dict) else {}

    def plan_kprobes(self) -> None:
        """Decide, and keep every kprobe program that is not to be attached out of the load."""
        available = kprobe_programs(self.att.sections)
        wanted = resolve_kprobes(self.att.want_kprobes, self.att.sections)
        for row in decide_kprobes(wanted, available, self.att.roles, self.att.kprobe_pins,
                                  self.kprobes_recorded(), self.att.fp):
            row["pin"] = row["pin"] or os.path.join(self.att.pin_dir, pin_component(row["program"]))
            self.att.kprobe_plan.append(row)
        loading = {r["program"] for r in self.att.kprobe_plan if r["kind"] in LOADING}
        for name in available:
            if name in loading:
                self.att.roles[name] = "required"    # asked for: a refusal fails the run, it is never left out
            else:
                self.att.disabled.add(name)
                self.att.kprobes_off.add(name)

    def kprobe_loads(self) -> bool:
        return any(r["kind"] in LOADING for r in self.att.kprobe_plan)

    def plan_kprobe_actions(self) -> None:
        """Trial-load the kprobes to attach (CONFIG_KPROBES, the kernel function), then word the plan."""
        loading = sorted(r["program"] for r in self.att.kprobe_plan if r["kind"] in LOADING)
        if loading:
            from .._kernel.objects import probe_programs
            rows = probe_programs(self.att.object, names=loading, resize=self.att.params["resize"],
                                  rodata=self.att.params["rodata"], data=self.att.params["data"])
            for row in rows:
                if not row["loadable"]:
                    raise refusal_error(row["name"], kprobe_target(row["section"]), row)
        for row in self.att.kprobe_plan:
            text = kprobe_action(row, self.att.ifname)
            if text:
                self.att.actions.append(text)

    def plan_kprobes_absent(self) -> None:
        for name, pin in sorted(self.att.kprobe_pins.items()):
            row = {"program": name, "target": None, "kind": DETACH, "pin": pin["path"],
                   "link_id": pin["link_id"], "prog_id": pin["prog_id"]}
            self.att.kprobe_plan.append(row)
            self.att.actions.append(kprobe_action(row, self.att.ifname))

    def apply_kprobes(self, lo, new_pins: list) -> None:
        """Attach and pin (under a temporary name, renamed with the program pins) the kprobes to attach; the
        links to detach are unpinned by apply_kprobe_detach after the renames."""
        for row in self.att.kprobe_plan:
            if row["kind"] not in LOADING:
                continue
            tmp = row["pin"] + NEW_SUFFIX
            if os.path.lexists(tmp):
                os.unlink(tmp)
            try:
                link = lo.attach_program(row["program"])
            except _libbpf.LibbpfError as exc:
                raise LqosError("attaching kprobe program %s to kernel function %s failed: %s."
                                % (row["program"], row["target"], exc.msg.rstrip(".")),
                                "check that this kernel has CONFIG_KPROBES=y and the function (grep -w %s "
                                "/proc/kallsyms), or take %s out of kprobes." % (row["target"], row["program"]))
            try:
                try:
                    link.pin(tmp)
                except _libbpf.LibbpfError as exc:
                    raise LqosError("%s; the kprobe was not kept." % exc.msg.rstrip("."),
                                    "a kprobe link can be pinned from Linux 5.15 on (BPF perf links): use such "
                                    "a kernel, or take %s out of kprobes." % row["program"])
                link.disconnect()
            finally:
                link.close()
            new_pins.append((tmp, row["pin"]))
            with _ObjFd(tmp) as fd:
                info = link_info_by_fd(fd)
            row.update(link_id=info["id"], prog_id=info["prog_id"])

    def apply_kprobe_detach(self) -> None:
        for row in self.att.kprobe_plan:
            if row["kind"] == DETACH and os.path.lexists(row["pin"]):
                os.unlink(row["pin"])

    def kprobe_record(self) -> dict:
        """The state file's kprobes: the links attached now (after an applied run)."""
        out = {}
        if self.att.want_kprobes is None:
            return {k: v for k, v in self.kprobes_recorded().items() if k in self.att.kprobe_pins}
        for row in self.att.kprobe_plan:
            if row["kind"] in LOADING:
                out[row["program"]] = {"link_id": row["link_id"], "prog_id": row["prog_id"],
                                       "target": row["target"], "fingerprint": self.att.fp}
            elif row["kind"] == KEEP:
                out[row["program"]] = dict(self.kprobes_recorded().get(row["program"]) or {})
        return out

    def kprobe_results(self) -> list:
        return [{"program": r["program"], "target": r["target"], "action": r["kind"], "pin": r["pin"],
                 "link_id": r["link_id"], "prog_id": r["prog_id"]} for r in self.att.kprobe_plan]
