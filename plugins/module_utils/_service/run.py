# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""One run of the ``service`` module: read the service (unit, configuration, binary, hooks), act on the state
asked for (behind the approval gate for the systemd changes), read it all again and return it.

The result keys are documented in ``plugins/modules/service.py`` (RETURN). Failures are one LqosError; one after
a change says what it left (``_changes.failure``), and a failed ``verified`` carries the whole read (hooks,
problems) in the failed result.
"""

from __future__ import annotations

import os
import tempfile
import time

from . import hooks as SH
from . import unit as SU
from .._changes import failure
from .._common import LqosError, sha256_bytes, why_not_live
from .._ownership.owners import ATTACH_STATE_DIR, collection_prog_ids
from .._ownership.processes import embedded_object, held_prog_ids
from .config import DEFAULT_CONFIG, KINDS, read_config

POLL_S = 0.1


def kind_of(unit: str, kind: str | None) -> str:
    """The configuration format: ``kind`` when given, else from the unit's name (lqosd, shaperd)."""
    if kind:
        return kind
    base = unit[:-len(".service")] if unit.endswith(".service") else unit
    if base in KINDS:
        return base
    raise LqosError("unit %s is neither lqosd nor shaperd, so its configuration format is unknown." % unit,
                    "give kind: lqosd (a LibreQoS /etc/lqos.conf) or shaperd (the stand-in's key = value file).")


def read_params(name: str, kind: str | None = None, config: str | None = None, binary: str | None = None,
                pid: int | None = None, attach_state_dir: str = ATTACH_STATE_DIR) -> dict:
    """The service module's options for a read (``state: read``, its defaults for the rest), as another module
    (lqos.bpf.abi_info's ``service``) reads the service through ServiceRun."""
    return {"name": name, "kind": kind, "config": config, "binary": binary, "pid": pid, "state": "read",
            "object_dest": None, "timeout": 30.0, "expected_tags": None, "object": None,
            "attach_state_dir": attach_state_dir}


class ServiceRun(object):
    """The state of one module run: what was read, what was done."""

    def __init__(self, module, params: dict | None = None):
        """``params``: the service module's options (default ``module.params``); lqos.bpf.abi_info passes its
        ``service`` option completed with the service module's defaults (``read_params``)."""
        p = self.params = module.params if params is None else params
        self.module = module
        self.state = p["state"]
        self.pid = p["pid"]
        self.unit_name = SU.unit_name(p["name"])
        if self.pid is not None and self.state in SU.SYSTEMD_STATES:
            raise LqosError("state %s needs systemd, and pid %d says the service is run by another supervisor."
                            % (self.state, self.pid),
                            "drop pid to manage the systemd unit %s, or stop and start the process through its "
                            "own supervisor." % self.unit_name)
        if self.pid is not None and self.pid <= 0:
            raise LqosError("pid %d is not a process id." % self.pid, "give the service's main process id (> 0).")
        if p["timeout"] < 0:
            raise LqosError("timeout %s is negative." % p["timeout"], "give seconds, 0 or more (default 30).")
        self.kind = kind_of(self.unit_name, p["kind"])
        self.config_path = p["config"] or DEFAULT_CONFIG[self.kind]
        self.config = None
        self.unit = None
        self.binary_path = None
        self.binary_data = None
        self.embedded = None
        self.embedded_error = None
        self.actions = []
        self.applied = False
        self.changed = False
        self.timings = {"stop_s": None, "start_to_hooks_s": None}
        self.collection_ids = set()
        self.warnings = []

    # -- reading ------------------------------------------------------------------
    def main_pid(self) -> int:
        if self.pid is not None:
            return self.pid
        return self.unit["main_pid"] if self.unit else 0

    def held(self) -> list:
        """The program ids the main process holds; [] when none runs (MainPID 0, or the process given exited)."""
        pid = self.main_pid()
        if not pid:
            return []
        if not os.path.isdir("/proc/%d" % pid):
            if self.pid is not None and not self.warnings:
                self.warnings.append("process %d (pid) does not exist: no program is the service's." % pid)
            return []
        try:
            return held_prog_ids(pid)
        except LqosError:
            if not os.path.isdir("/proc/%d" % pid):
                return []   # it exited while its fds were read
            raise

    def read_binary(self) -> None:
        p = self.params
        path = p["binary"] or (self.unit or {}).get("exec_start_path")
        if not path and self.pid is not None:
            try:
                path = os.readlink("/proc/%d/exe" % self.pid)
            except OSError:
                path = None
        self.binary_path = path
        if not path:
            return
        try:
            with open(path, "rb") as fh:
                self.binary_data = fh.read()
        except OSError as exc:
            raise LqosError("the service's binary %s cannot be read: %s." % (path, exc.strerror),
                            "install the service's build there, or give its path in binary.")
        try:
            self.embedded = embedded_object(self.binary_data, "the service's binary %s" % path)
        except LqosError as exc:
            self.embedded_error = exc

    def need_embedded(self, why: str) -> bytes:
        if not self.binary_path:
            if self.pid is not None:
                known = "process %d has exited, so /proc/%d/exe is gone" % (self.pid, self.pid)
            else:
                known = "%s has no ExecStart%s" % (self.unit_name, ": it is masked" if self.unit["masked"] else "")
            raise LqosError("the service's binary is not known (%s), and %s needs it." % (known, why),
                            "give binary: the path of the installed service build.")
        if self.embedded_error is not None:
            raise self.embedded_error
        return self.embedded

    def read_hooks(self) -> list:
        return SH.read_hooks(self.config, self.collection_ids, self.held())

    # -- acting -------------------------------------------------------------------
    def wait_for_hooks(self, timeout: float) -> tuple:
        """Poll until every configured interface holds an XDP program the main process holds; returns
        (ready, seconds waited, last hooks)."""
        started = time.monotonic()
        while True:
            if self.pid is None:
                self.unit = SU.show(self.module, self.unit_name)
            hooks = self.read_hooks()
            waited = time.monotonic() - started
            if SH.hooks_ready(hooks) or waited >= timeout:
                return SH.hooks_ready(hooks), waited, hooks
            time.sleep(min(POLL_S, max(timeout - waited, 0)))

    def not_ready(self, hooks: list, timeout: float) -> LqosError:
        held = []
        for h in hooks:
            x = h["xdp"]
            held.append("%s%s: %s" % (h["interface"], " (netns %s)" % h["netns"] if h["netns"] else "",
                                      "no XDP program" if x is None else "XDP %s (id %d, tag %s) owned by %s" % (
                                          x["name"], x["id"], x["tag"], x["owner"])))
        if self.unit:
            last = "%s is %s/%s, MainPID %d, %s restart(s)" % (
                self.unit_name, self.unit["active_state"], self.unit["sub_state"], self.unit["main_pid"],
                self.unit["n_restarts"])
        else:
            last = "process %d %s" % (self.pid, "runs" if os.path.isdir("/proc/%d" % self.pid) else "has exited")
        return LqosError("the service's XDP programs did not appear within %gs: %s; %s." % (
            timeout, "; ".join(held), last),
            "see `journalctl -u %s` (or the service's log) for why it did not attach, or raise timeout."
            % self.unit_name)

    def systemd_state(self) -> None:
        todo = SU.unit_actions(self.state, self.unit)
        commands = [" ".join(SU.action_argv(a, self.unit_name)) for a in todo]
        self.changed = bool(todo)
        why_not = why_not_live(self.module)
        if why_not:
            self.actions = ["would run: %s (%s)" % (c, why_not) for c in commands]
            return
        done = []
        timeout = self.params["timeout"]
        try:
            for action, command in zip(todo, commands):
                took = SU.run_action(self.module, action, self.unit_name)
                self.actions.append(command)
                done.append(action)
                self.applied = True
                if action == "stop":
                    self.timings["stop_s"] = round(took, 3)
                elif action == "start":
                    ready, waited, hooks = self.wait_for_hooks(timeout)
                    self.timings["start_to_hooks_s"] = round(took + waited, 3)
                    if not ready:
                        raise self.not_ready(hooks, timeout)
        except LqosError as exc:
            undo = {"stop": "systemctl start %s" % self.unit_name, "start": "systemctl stop %s" % self.unit_name,
                    "mask": "systemctl unmask --runtime %s" % self.unit_name,
                    "unmask": "systemctl mask --runtime %s" % self.unit_name}
            left = [{"change": "ran `%s`" % " ".join(SU.action_argv(a, self.unit_name)), "undo": undo[a]}
                    for a in done]
            raise failure(exc, [], left, who="this run")

    def extracted(self) -> None:
        dest = self.params["object_dest"]
        data = self.need_embedded("state extracted")
        folder = os.path.dirname(os.path.abspath(dest)) or "/"
        if os.path.isdir(dest):
            raise LqosError("object_dest %s is a folder." % dest, "give the path of the object file to write.")
        if not os.path.isdir(folder):
            raise LqosError("object_dest's folder %s does not exist." % folder, "create it first, or fix object_dest.")
        try:
            with open(dest, "rb") as fh:
                same = fh.read() == data
        except OSError:
            same = False
        if same:
            return
        self.changed = True
        self.actions = ["write the embedded object (%d bytes, sha256 %s) to %s" % (len(data), sha256_bytes(data), dest)]
        if self.module.check_mode:
            return
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(dest), dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            self.module.atomic_move(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.applied = True

    def expected(self) -> tuple:
        """(expected tags, where they come from) for state verified."""
        p = self.params
        if p["expected_tags"]:
            tags = {}
            for name, tag in p["expected_tags"].items():
                tag = str(tag).lower()
                if len(tag) != 16 or any(c not in "0123456789abcdef" for c in tag):
                    raise LqosError("expected_tags.%s = %r is not a program tag." % (name, tag),
                                    "give the 16 hex digits bpftool prog show prints as tag.")
                tags[name] = tag
            return tags, "expected_tags"
        if p["object"]:
            return SH.trial_tags(p["object"]), "the object %s" % p["object"]
        data = self.need_embedded("state verified (without expected_tags or object)")
        fd, tmp = tempfile.mkstemp(prefix="lqos-embedded-", suffix=".o", dir=getattr(self.module, "tmpdir", None))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            what = "the object embedded in %s" % self.binary_path
            return SH.trial_tags(tmp, what), what
        finally:
            os.unlink(tmp)

    # -- the run ------------------------------------------------------------------
    def read(self) -> None:
        """Read the service as every run starts: its configuration (each interface must exist), the unit (unless
        ``pid``), its binary and embedded object, the programs this collection attached. LqosError on bad input."""
        self.config = read_config(self.kind, self.config_path)
        SH.check_interfaces(self.config)
        if self.pid is None:
            self.unit = SU.show(self.module, self.unit_name)
        self.read_binary()
        self.collection_ids = collection_prog_ids(self.config["pin_root"], self.params["attach_state_dir"])

    def run(self) -> dict:
        p = self.params
        if self.state == "extracted" and not p["object_dest"]:
            raise LqosError("state extracted needs object_dest.", "give the path to write the embedded object to.")
        self.read()
        if self.state in SU.SYSTEMD_STATES:
            self.systemd_state()
        elif self.state == "extracted":
            self.extracted()
        expected = None
        if self.state == "verified":
            expected = self.expected()
            self.wait_for_hooks(p["timeout"])   # then the hooks as the result reads them are judged
        if self.pid is None:
            self.unit = SU.show(self.module, self.unit_name)
        result = self.result()
        if expected is not None:
            verify = SH.problems(self.config, result["hooks"], expected[0], self.main_pid(), expected[1])
            result["verified"] = not verify
            result["problems"] = verify
            if verify:
                raise LqosError("%s is not verified: %s" % (self.unit_name, " ".join(verify)),
                                "restart the service with the build that passed the checks, or roll back.",
                                **result)
        return result

    def result(self) -> dict:
        held = self.held()
        hooks = SH.read_hooks(self.config, self.collection_ids, held)
        config = {k: self.config[k] for k in ("path", "kind", "mode", "interfaces", "vlans", "use_xdp_bridge",
                                              "pin_root")}
        unit = None
        if self.unit is not None:
            unit = {k: self.unit[k] for k in ("name", "active_state", "sub_state", "main_pid", "n_restarts", "masked",
                                              "mask", "load_state", "unit_file_state", "exec_start_path")}
        out = {
            "changed": self.changed,
            "applied": self.applied,
            "unit": unit,
            "main_pid": self.main_pid() or None,
            "config": config,
            "binary": {"path": self.binary_path,
                       "sha256": sha256_bytes(self.binary_data) if self.binary_data is not None else None},
            "embedded": None if self.embedded is None else {"sha256": sha256_bytes(self.embedded),
                                                            "size": len(self.embedded)},
            "held_prog_ids": held,
            "hooks": hooks,
            "timings": self.timings,
            "actions": self.actions,
        }
        if self.actions and not self.applied:
            out["msg"] = "%d action(s) planned for %s; nothing was changed (%s)." % (
                len(self.actions), self.unit_name, why_not_live(self.module) or "check mode")
        for text in self.warnings:
            self.module.warn(text)
        return out


def run_service(module) -> dict:
    return ServiceRun(module).run()
