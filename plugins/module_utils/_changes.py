# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The rule every lqos.bpf task follows when it fails: changed means changed.

A task that fails after it changed the host either puts everything back and
reports ``changed: false`` with what it rolled back (``rolled_back``), or
reports ``changed: true`` with what it changed and left (``changes_left``:
each change with how to undo it by hand) and how to finish. ``HostChanges``
records the changes of one run as they are made, each with the callable that
rolls it back; ``failure`` turns an error plus that outcome into the one
LqosError the task fails with. ``_common.run_module`` puts ``changed`` in
every failed result (false unless the error says otherwise).

``probe_writable`` checks that a folder takes a file of a given size before a
run changes anything that a record in that folder must follow (ENOSPC, EROFS,
EDQUOT found up front, so the run stops with nothing changed).

May import: _common."""

from __future__ import annotations

import os
import tempfile

from ._common import LqosError, os_fault


def failure(err: LqosError, rolled_back: list, left: list, finish: str = "", who: str = "this run") -> LqosError:
    """``err`` with the outcome of what the run had changed, by the rule above.

    ``rolled_back``: [str] changes this run made and put back. ``left``: [{"change": str, "undo": str}] changes
    it made and did not put back (``undo``: how to undo it by hand). ``finish``: how to finish the run instead
    (e.g. "run the task again once there is space"); ``who`` names the part that made the changes ("this run",
    "the pin step"). Adds to ``err.details`` ``changed`` (true when anything is left, now or by an earlier call),
    ``rolled_back`` and ``changes_left``; the message ends with what was rolled back and what is left."""
    msg = err.msg.rstrip()
    if not msg.endswith("."):
        msg += "."
    if rolled_back:
        msg += " Rolled back what %s had changed: %s." % (who, "; ".join(rolled_back))
    if left:
        msg += (" %s changed the host and this is left: %s." % (who[0].upper() + who[1:], "; ".join(
            "%s (undo: %s)" % (c["change"], c["undo"]) if c.get("undo") else c["change"] for c in left)))
        if finish:
            msg += " To finish instead: %s." % finish.rstrip(".")
    err.msg = msg
    err.details["changed"] = bool(left) or bool(err.details.get("changed"))
    if rolled_back:
        err.details["rolled_back"] = list(err.details.get("rolled_back") or []) + list(rolled_back)
    if left:
        err.details["changes_left"] = list(err.details.get("changes_left") or []) + [dict(c) for c in left]
    return err


def as_error(exc: BaseException, doing: str = "") -> LqosError:
    """Any failure as an LqosError: itself, an OSError as its environment fault (``doing`` first), a LibbpfError
    (whose text names the step) by its text."""
    if isinstance(exc, LqosError):
        return exc
    if isinstance(exc, OSError):
        return os_fault(exc, doing)
    return LqosError(getattr(exc, "msg", None) or str(exc))


class HostChanges:
    """The changes one run made on the host, oldest first, each with how to roll it back.

    ``add(change, rollback, undo)``: ``change`` says what was done ("XDP program xdp_main (id 12) attached to
    eth0"); ``rollback`` is a callable that puts it back (it returns what it did as str, "" when that is not worth a
    word, or None for "undid: <change>"),
    or None when the run cannot; ``undo`` is how an operator undoes it by hand."""

    def __init__(self):
        self.steps = []

    def __bool__(self) -> bool:
        return bool(self.steps)

    def add(self, change: str, rollback=None, undo: str = "") -> None:
        self.steps.append({"change": change, "rollback": rollback, "undo": undo})

    def changes(self) -> list:
        return [s["change"] for s in self.steps]

    def roll_back(self) -> tuple:
        """Roll back every step, newest first: ([rolled back text], [left {change, undo}]); a step whose
        rollback raised, or that has none, is left (its error in ``rollback_error``)."""
        rolled, left = [], []
        for s in reversed(self.steps):
            if s["rollback"] is None:
                left.append({"change": s["change"], "undo": s["undo"]})
                continue
            try:
                text = s["rollback"]()
            except Exception as exc:  # pylint: disable=broad-except
                left.append({"change": s["change"], "undo": s["undo"],
                             "rollback_error": getattr(exc, "msg", None) or str(exc)})
                continue
            if text is None:
                rolled.append("undid: %s" % s["change"])
            elif text:  # "" : housekeeping not worth a word (temporary pins removed, ...)
                rolled.append(text)
        self.steps = []
        left.reverse()
        return rolled, left

    def fail(self, exc: BaseException, doing: str = "", finish: str = "") -> LqosError:
        """Roll back and return the error to raise (see ``failure``)."""
        err = as_error(exc, doing)
        rolled, left = self.roll_back()
        return failure(err, rolled, left, finish)


def probe_writable(folder: str, size: int, what: str) -> None:
    """Write and remove a ``size``-byte file in ``folder`` (created when missing); raise the LqosError of the
    fault (no space, read-only, ...) saying that nothing was changed, before a run changes the host."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".lqos-bpf-probe.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * max(size, 1))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(tmp)
    except OSError as exc:
        err = os_fault(exc, "%s cannot be written in %s" % (what, folder), folder)
        err.msg = err.msg.rstrip(".") + "; nothing was changed."
        raise err
