# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Applying an attach plan to the kernel (lqos.bpf.attach): load the object, swap the
XDP and TC programs atomically, pin them, detach (state absent), roll back what this run changed when a step
fails, and write the state record. ``Applier`` is the part ``attacher.Attacher`` (which
observes and plans) is composed with; nothing here runs without approval."""

from __future__ import annotations

import fcntl
import json
import os
import signal

from .._common import (
    atomic_write, LqosError,
)
from .._changes import HostChanges, probe_writable
from .._kernel import libbpf as _libbpf
from .._kernel import btf as _btf
from .._kernel import hooks as _hooks
from .._kernel import qdiscs as _qdiscs
from .._kernel import maps as _kmaps
from .._kernel import objects as _objects
from .plan import (
    ADOPT,
    ATTACH,
    DETACH,
    NEW_SUFFIX,
    NO_FALLBACK_ERRNOS,
    REATTACH,
    REPLACE,
    REPLACE_FOREIGN,
    REPLACE_LINK,
    STATE_VERSION,
    VERIFY,
    XDP_WALK,
    pin_component,
    slot_id,
)


def _rmdirs(paths: list) -> None:
    for path in paths:          # deepest first
        try:
            os.rmdir(path)
        except OSError:
            break


def _unlink_tmp(new_pins: list) -> None:
    for tmp, dummy in new_pins:
        if os.path.lexists(tmp):
            os.unlink(tmp)


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
    for map_id in _kmaps.prog_info_by_id(prog_id)["map_ids"]:
        info = _kmaps.map_info_by_id(map_id)
        name = info["name"]
        dot = name.find(".")
        if dot < 0 or name[dot:] not in sections or info["type_name"] != "array" or info["key_size"] != 4:
            continue
        try:
            fd = _kmaps.map_fd_by_id(map_id)
        except _libbpf.LibbpfError:
            continue  # freed since prog_info was read
        try:
            value = _kmaps.map_lookup(fd, b"\0\0\0\0")
        finally:
            os.close(fd)
        if value is not None:
            out[name[dot:]] = value
    return out


class Applier(object):
    """The applying part of an attach run: applies the plan of ``att`` (an ``attacher.Attacher``, whose observed
    state and plan it reads and whose results it sets) with ``kprobes`` (its ``kprobe.Kprobes`` part) for the
    kprobe step."""

    def __init__(self, att, kprobes):
        self.att = att
        self.kprobes = kprobes

    # -- applying ---------------------------------------------------------------
    def load(self):
        """Load the object without the disabled programs; an optional program the real load refuses is left out
        and the load retried. A refused required program, or any other failure, changes nothing."""
        while True:
            try:
                return _objects.load_object(self.att.object, pin_root=self.att.pin_root,
                                            resize=self.att.params["resize"], rodata=self.att.params["rodata"],
                                            data=self.att.params["data"], disabled=sorted(self.att.disabled))
            except _objects.LoadError as exc:
                if self.att.roles.get(exc.program) == "optional" and exc.program not in self.att.disabled:
                    self.att.planner.leave_out(exc.refusal)
                    continue
                raise LqosError("%s; %s program %s was refused, so nothing was attached or changed on %s."
                                % (exc.msg.rstrip("."), self.att.roles.get(exc.program, "required"), exc.program,
                                   self.att.ifname), "%s, then attach again." % exc.refusal["fix"])
            except _libbpf.LibbpfError as exc:
                if "pinned_maps" in exc.msg:
                    raise LqosError(exc.msg, "run lqos.bpf.pinned_maps (state: clean) for those pins, then attach "
                                             "again; nothing was attached or changed on %s." % self.att.ifname)
                raise LqosError("%s; nothing was attached or changed on %s." % (exc.msg, self.att.ifname))

    def same_program(self, lo, name: str, old_id: int) -> bool:
        """True when the attached program has the new program's tag and the load-time values the spec sets
        (in the .rodata/.data/.bss maps the program uses; the tag does not cover them)."""
        new = lo.prog_info(name)
        old = _kmaps.prog_info_by_id(old_id)
        if new["tag"] != old["tag"]:
            return False
        want_vars = list(self.att.params["rodata"]) + list(self.att.params["data"])
        if not want_vars:
            return True
        with _btf.Btf.from_file(self.att.object) as btf:
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
        modes = XDP_WALK if self.att.xdp_plan["mode"] == "auto" else (self.att.xdp_plan["mode"],)
        tried = []
        for i, mode in enumerate(modes):
            try:
                _hooks.xdp_attach(self.att.ifindex, fd, mode, only_if_none=True)
                return mode, tried
            except _libbpf.LibbpfError as exc:
                tried.append({"mode": mode, "error": exc.msg, "errno": exc.errno})
                if exc.errno in NO_FALLBACK_ERRNOS or i == len(modes) - 1:
                    if len(modes) == 1:
                        raise LqosError("attaching XDP program %s to %s in %s mode failed: %s."
                                        % (self.att.xdp_prog, self.att.ifname, mode, exc.msg),
                                        "use xdp_mode: auto (falls back to skb) or a mode the driver supports.")
                    raise LqosError("attaching XDP program %s to %s failed in every mode: %s."
                                    % (self.att.xdp_prog, self.att.ifname,
                                       "; ".join("%s: %s" % (t["mode"], t["error"]) for t in tried)),
                                    "check the interface and its driver (dmesg).")
        raise LqosError("no XDP mode to try")  # not reached

    def apply_present(self) -> None:
        """Apply the plan; all or nothing. Every change is recorded in a HostChanges with its rollback, and the
        state record is written before the new pins take their names: a step that fails, the record write
        included (a full state_dir), rolls back what this run changed and says so (``_changes.failure``)."""
        probe_writable(self.att.state_dir, len(json.dumps(self.att.record, indent=2)) + 4096, "the attach record")
        changes = HostChanges()   # what this run changed, oldest first, each with its rollback
        new_pins = []     # (temporary pin, final pin) of the programs attached in this run
        held = []         # fds of replaced programs, kept open so a rollback can put them back
        try:
            lo = self.load() if self.att.planner.needs_load() else None
        except LqosError:
            self._unpin_new_maps()  # libbpf pinned them before the load failed
            raise
        try:
            if lo is not None:
                self._track_load(lo, changes, new_pins)
            if self.att.xdp_prog or self.att.xdp_plan["kind"] == DETACH:
                self.apply_xdp(lo, changes, held, new_pins)
            self.apply_tc(lo, changes, held, new_pins)
            self.kprobes.apply_kprobes(lo, new_pins)
            for name, map_id, path in self.att.repin:
                fd = _kmaps.map_fd_by_id(map_id)
                try:
                    _libbpf.obj_pin(fd, path)
                finally:
                    os.close(fd)
                changes.add("live map %s (id %d) pinned at %s" % (name, map_id, path),
                            lambda p=path, n=name: (os.unlink(p), "re-pin of %s undone" % n)[1],
                            "rm %s" % path)
            self.write_state()
        except (LqosError, _libbpf.LibbpfError, OSError) as exc:
            raise changes.fail(exc, "attaching on %s" % self.att.ifname, "fix the cause, then run the task again")
        finally:
            for fd in held:
                os.close(fd)
            if lo is not None:
                lo.close()
        if os.environ.get("LQOS_BPF_TEST_KILL_AT") == "attach:swapped":   # test hook: a crash right after the swap
            os.kill(os.getpid(), signal.SIGKILL)
        for tmp, final in new_pins:
            os.rename(tmp, final)     # bpffs rename replaces the old pin atomically
        self.kprobes.apply_kprobe_detach()
        self.cleanup_pins()

    def _track_load(self, lo, changes, new_pins: list) -> None:
        """Record what the load left on the host (new map pins, the pin folders) and make the pin folder."""
        for name, path in self.att.maps_to_pin:
            if os.path.lexists(path):
                changes.add("new map %s pinned at %s" % (name, path),
                            lambda p=path: (os.unlink(p) if os.path.lexists(p) else None,
                                            "new map pin %s removed" % p)[1], "rm %s" % path)
        made = []         # pin folders this run creates, deepest first
        path = self.att.pin_dir
        while not os.path.isdir(path) and path != self.att.pin_root:
            made.append(path)
            path = os.path.dirname(path)
        os.makedirs(self.att.pin_dir, exist_ok=True)
        if made:
            changes.add("pin folder %s created" % made[-1], lambda: (_rmdirs(made), "")[1], "rmdir %s" % made[0])
        changes.add("new programs pinned under temporary names in %s" % self.att.pin_dir,
                    lambda: (_unlink_tmp(new_pins), "")[1], "rm %s/*%s" % (self.att.pin_dir, NEW_SUFFIX))

    def _unpin_new_maps(self) -> None:
        for dummy, path in self.att.maps_to_pin:
            if os.path.lexists(path):
                os.unlink(path)

    def _pin_new(self, lo, name: str, new_pins: list) -> None:
        final = os.path.join(self.att.pin_dir, pin_component(name))
        if any(f == final for dummy, f in new_pins):
            return
        tmp = final + NEW_SUFFIX
        if os.path.lexists(tmp):
            os.unlink(tmp)
        lo.pin_program(name, tmp)
        new_pins.append((tmp, final))

    def apply_xdp(self, lo, undo: HostChanges, held: list, new_pins: list) -> None:
        d = self.att.xdp_plan
        kind = d["kind"]
        old_id = d.get("old_id")
        old_info = self.att.xdp_now["info"].get(old_id) or {}
        name = self.att.xdp_prog or old_info.get("name")
        res = {"program": name, "id": old_id, "tag": old_info.get("tag"), "mode": d.get("old_mode"),
               "previous_id": None, "previous_tag": None, "action": kind, "tried": []}
        if kind == VERIFY:
            kind = ADOPT if self.same_program(lo, self.att.xdp_prog, old_id) else REPLACE
            res["action"] = kind
        if kind in (REPLACE, REPLACE_FOREIGN, REATTACH, REPLACE_LINK, DETACH):
            old_fd = _kmaps.prog_fd_by_id(old_id)
            held.append(old_fd)
            res.update(previous_id=old_id, previous_tag=old_info.get("tag"))
        if kind in (REPLACE, REPLACE_FOREIGN):
            new_fd = lo.prog_fd(self.att.xdp_prog)
            self._pin_new(lo, self.att.xdp_prog, new_pins)
            mode = d["mode"]
            _hooks.xdp_attach(self.att.ifindex, new_fd, mode, replace_prog_fd=old_fd)
            undo.add("XDP on %s: id %d replaced by the new %s" % (self.att.ifname, old_id, self.att.xdp_prog),
                     lambda m=mode, o=old_fd, n=new_fd, i=old_id: (
                _hooks.xdp_attach(self.att.ifindex, o, m, replace_prog_fd=n), "XDP back to id %d" % i)[1])
            res["mode"] = mode
        elif kind in (ATTACH, REATTACH, REPLACE_LINK):
            new_fd = lo.prog_fd(self.att.xdp_prog)
            self._pin_new(lo, self.att.xdp_prog, new_pins)
            if kind == REPLACE_LINK:
                link_id, old_mode = d["link"]["id"], d["old_mode"]
                _hooks.link_detach(link_id)
                undo.add("bpf_link %d of XDP id %d on %s detached" % (link_id, old_id, self.att.ifname),
                         lambda m=old_mode, o=old_fd, i=old_id, lid=link_id: (
                    _hooks.xdp_attach(self.att.ifindex, o, m, only_if_none=True),
                    "XDP id %d re-attached through netlink (its bpf_link %d stays detached)" % (i, lid))[1])
            if kind == REATTACH:
                old_mode = d["old_mode"]
                _hooks.xdp_detach(self.att.ifindex, old_mode, expected_prog_fd=old_fd)
                undo.add("XDP id %d detached from %s (%s mode)" % (old_id, self.att.ifname, old_mode),
                         lambda m=old_mode, o=old_fd, i=old_id: (
                    _hooks.xdp_attach(self.att.ifindex, o, m, only_if_none=True), "XDP id %d re-attached" % i)[1])
            mode, tried = self.xdp_walk(new_fd)
            undo.add("XDP program %s attached to %s in %s mode" % (self.att.xdp_prog, self.att.ifname, mode),
                     lambda m=mode, n=new_fd: (
                _hooks.xdp_detach(self.att.ifindex, m, expected_prog_fd=n), "new XDP program detached")[1])
            res.update(mode=mode, tried=tried)
        elif kind == DETACH:
            mode = d["mode"]
            _hooks.xdp_detach(self.att.ifindex, mode, expected_prog_fd=old_fd)
            undo.add("XDP id %d detached from %s (%s mode)" % (old_id, self.att.ifname, mode),
                     lambda m=mode, o=old_fd, i=old_id: (
                _hooks.xdp_attach(self.att.ifindex, o, m, only_if_none=True), "XDP id %d re-attached" % i)[1])
            res.update(id=None, tag=None, mode=None)
        if kind in (REPLACE, REPLACE_FOREIGN, ATTACH, REATTACH, REPLACE_LINK):
            info = lo.prog_info(self.att.xdp_prog)
            res.update(id=info["id"], tag=info["tag"])
        self.att.result_xdp = res

    def apply_tc(self, lo, undo: HostChanges, held: list, new_pins: list) -> None:
        created = set()
        if self.att.replace_ingress and lo is not None:
            _qdiscs.qdisc_delete_ingress(self.att.ifindex)   # not restorable: the plan and a warning said so
        for slot, td in self.att.tc_plan:
            kind = td["kind"]
            sid = slot_id(slot)
            now = self.att.tc_now[sid]
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
                        _hooks.tc_hook_create(self.att.ifindex, direction)
                        created.add(direction)
                    _hooks.tc_attach(self.att.ifindex, direction, new_fd, handle, prio)
                    undo.add("TC %s program %s attached on %s" % (direction, slot["program"], self.att.ifname),
                             lambda dr=direction, h=handle, p=prio: (
                        _hooks.tc_detach(self.att.ifindex, dr, h, p), "TC %s filter removed" % dr)[1])
                else:
                    old_fd = _kmaps.prog_fd_by_id(old_id)
                    held.append(old_fd)
                    _hooks.tc_attach(self.att.ifindex, direction, new_fd, handle, prio, replace=True)
                    undo.add("TC %s on %s: id %d replaced by the new %s"
                             % (direction, self.att.ifname, old_id, slot["program"]),
                             self._tc_back(direction, handle, prio, old_fd, old_id))
                    res.update(previous_id=old_id, previous_tag=(now["info"] or {}).get("tag"))
                info = lo.prog_info(slot["program"])
                res.update(id=info["id"], tag=info["tag"])
            elif kind == DETACH:
                old_fd = _kmaps.prog_fd_by_id(old_id)
                held.append(old_fd)
                _hooks.tc_detach(self.att.ifindex, direction, handle, prio)
                undo.add("TC %s filter id %d removed from %s" % (direction, old_id, self.att.ifname),
                         lambda dr=direction, h=handle, p=prio, fd=old_fd: (
                    _hooks.tc_attach(self.att.ifindex, dr, fd, h, p), "TC %s filter restored" % dr)[1])
                res.update(id=None, tag=None, previous_id=old_id, previous_tag=(now["info"] or {}).get("tag"))
            self.att.result_tc.append(res)

    def _tc_back(self, direction: str, handle: int, prio: int, old_fd: int, old_id: int):
        """The rollback of a TC replace: put program ``old_id`` back at its slot."""
        def back() -> str:
            _hooks.tc_attach(self.att.ifindex, direction, old_fd, handle, prio, replace=True)
            return "TC %s back to id %d" % (direction, old_id)
        return back

    def live_ids(self) -> set:
        """Ids of the programs on the hooks this module manages on the interface (XDP, TC slots)."""
        live = set()
        q = _hooks.xdp_query(self.att.ifindex)
        live.update(i for i in (q["drv_prog_id"], q["skb_prog_id"], q["hw_prog_id"]) if i)
        slots = {slot_id(s): s for s in self.att.tc_slots}
        slots.update(self.att.observer.recorded_tc())
        for slot in slots.values():
            cur = _hooks.tc_query(self.att.ifindex, slot["direction"], slot["handle"], slot["priority"])
            if cur:
                live.add(cur)
        return live

    def publish_leftover_pins(self) -> list:
        """A run killed between a swap and the rename of the new program's pin left the program on the hook
        pinned at NAME__new: rename it over NAME (what that run would have done next), so the program stays
        pinned and ours. Returns the published pins."""
        if self.att.ifindex is None or not os.path.isdir(self.att.pin_dir):
            return []
        live = self.live_ids()
        out = []
        for entry in sorted(os.listdir(self.att.pin_dir)):
            path = os.path.join(self.att.pin_dir, entry)
            if not entry.endswith(NEW_SUFFIX) or _libbpf.pinned_kind(path) != "prog":
                continue
            if _kmaps.prog_info_by_path(path)["id"] in live:
                os.rename(path, path[:-len(NEW_SUFFIX)])
                out.append(path[:-len(NEW_SUFFIX)])
        return out

    def cleanup_pins(self) -> None:
        """Unpin our programs that no hook we manage holds any more; a leftover __new pin of a program a hook
        holds is renamed over its name, any other is removed."""
        live = self.live_ids()
        if not os.path.isdir(self.att.pin_dir):
            return
        for entry in os.listdir(self.att.pin_dir):
            path = os.path.join(self.att.pin_dir, entry)
            if _libbpf.pinned_kind(path) != "prog":
                continue
            on_hook = _kmaps.prog_info_by_path(path)["id"] in live
            if entry.endswith(NEW_SUFFIX) and on_hook:
                os.rename(path, path[:-len(NEW_SUFFIX)])
            elif entry.endswith(NEW_SUFFIX) or not on_hook:
                os.unlink(path)

    def write_state(self) -> None:
        record = {"version": STATE_VERSION, "pin_root": self.att.pin_root, "netns": self.att.netns,
                  "interface": self.att.ifname, "ifindex": self.att.ifindex, "object": self.att.object,
                  "object_sha256": self.att.object_sha256, "fingerprint": self.att.fp, "params": self.att.params,
                  "left_out": self.att.left_out}
        x = self.att.result_xdp
        if x and x["id"]:
            record["xdp"] = {"program": x["program"], "id": x["id"], "tag": x["tag"], "mode": x["mode"],
                             "requested_mode": self.att.want_mode, "fingerprint": self.att.fp}
        tc = []
        if self.att.with_tc:
            for t in self.att.result_tc:
                if t["id"]:
                    tc.append({"program": t["program"], "direction": t["direction"], "handle": t["handle"],
                               "priority": t["priority"], "id": t["id"], "tag": t["tag"], "fingerprint": self.att.fp})
        else:
            tc = [s for s in self.att.record.get("tc") or [] if isinstance(s, dict)]
        record["tc"] = tc
        record["kprobes"] = self.kprobes.kprobe_record()
        os.makedirs(self.att.state_dir, mode=0o700, exist_ok=True)
        atomic_write(self.att.state_path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=0o600)

    def apply_absent(self) -> None:
        """Detach our programs; a detach that fails re-attaches what this run had detached (all or nothing)."""
        changes, held, new_pins = HostChanges(), [], []
        try:
            if self.att.xdp_plan:
                self.apply_xdp(None, changes, held, new_pins)
            self.apply_tc(None, changes, held, new_pins)
        except (LqosError, _libbpf.LibbpfError, OSError) as exc:
            raise changes.fail(exc, finish="fix the cause, then run the task again")
        finally:
            for fd in held:
                os.close(fd)
        for pin in self.att.pins.values():
            if os.path.lexists(pin["path"]):
                os.unlink(pin["path"])
        self.kprobes.apply_kprobe_detach()
        # remove our now-empty folders: <ifname>, <netns>, lqos_bpf
        path = self.att.pin_dir
        for dummy in range(3):
            try:
                os.rmdir(path)
            except OSError:
                break
            path = os.path.dirname(path)
        if os.path.exists(self.att.state_path):
            os.unlink(self.att.state_path)
