# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The build folder of lqos.bpf.pipeline (``dest``): lock, publish, prune, roll back.

Layout of ``dest``::

    dest/.lock                    flock held during a build (never created in check mode)
    dest/builds/<id>[.<n>]/       one complete build (outputs + manifest.json)
    dest/current -> builds/...    the build in use
    dest/previous -> builds/...   the build that was current before
    dest/failed -> builds/...     the build a rollback replaced
    dest/.staging-*               a build in progress (removed by the next run)

Publishing never removes or rewrites a folder a link points at: a finished
staging folder is renamed to a name no link uses, then ``previous`` and
``current`` are retargeted with an atomic symlink replace, and only then are
unreferenced folders pruned. A reader of ``current/<file>`` always finds a
complete build, and a kill -9 at any step leaves ``current`` usable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import time

from .._common import (
    atomic_symlink, fsync_dir, LqosError, os_fault,
)

LINKS = ("current", "previous", "failed")
STAGING_PREFIX = ".staging-"
# Test hook: SIGKILL this process when publishing reaches the named step
# (staged, renamed, previous, current, pruned), to prove every step is safe.
KILL_AT_ENV = "LQOS_BPF_TEST_KILL_AT"


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_AT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def check_dest(dest: str) -> None:
    """Refuse a ``dest`` that exists but is not a folder (or sits under a file)."""
    probe = dest
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.islink(probe) and not os.path.exists(probe):
        raise LqosError("dest %s%s is a symlink to %s, which does not exist." % (
            dest, "" if probe == dest else " lies under %s, which" % probe, os.readlink(probe)),
            "create the folder it points to, or give another dest.")
    if not os.path.isdir(probe):
        what = "dest %s is" % dest if probe == dest else "dest %s lies under %s, which is" % (dest, probe)
        raise LqosError("%s a file, not a folder." % what,
                        "give a folder for the builds (the default is /var/lib/lqos-bpf/<spec name>) or move the "
                        "file away.")


def prepare_dest(dest: str) -> None:
    """Create ``dest`` and prove it is writable; never called in check mode."""
    check_dest(dest)
    try:
        os.makedirs(dest, exist_ok=True)
        probe = os.path.join(dest, ".write-test-%d" % os.getpid())
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise os_fault(exc, "cannot write the build folder %s" % dest, dest)
        raise LqosError("cannot write the build folder %s: %s." % (dest, exc.strerror),
                        "choose a writable `dest` or fix its permissions/mount.")


class BuildLock:
    """An exclusive flock on ``dest/.lock``; waits up to ``timeout`` seconds."""

    def __init__(self, dest: str, timeout: float):
        self.path = os.path.join(dest, ".lock")
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(self.fd)
                    raise LqosError("another build of %s is running (pid %s holds %s) and did not finish within "
                                    "%ss." % (os.path.dirname(self.path), holder, self.path, self.timeout),
                                    "wait for it, or raise lock_timeout.")
                time.sleep(0.05)
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        except OSError as exc:
            self.__exit__()
            raise os_fault(exc, "cannot write the build lock %s" % self.path, os.path.dirname(self.path))
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def link(dest: str, name: str) -> str | None:
    """The real folder ``dest/<name>`` points at, or None when it is absent or dangling."""
    path = os.path.join(dest, name)
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    return target if os.path.isdir(target) else None


def new_staging(dest: str) -> str:
    staging = os.path.join(dest, "%s%d-%d" % (STAGING_PREFIX, os.getpid(), time.monotonic_ns()))
    os.makedirs(staging)
    return staging


def clean_staging(dest: str) -> None:
    """Remove what killed builds left behind."""
    for name in os.listdir(dest):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(os.path.join(dest, name), ignore_errors=True)


def free_build_dir(dest: str, build_id: str) -> str:
    """``builds/<id>``, or ``builds/<id>.<n>`` when a (linked) folder already has that name."""
    builds = os.path.join(dest, "builds")
    path, n = os.path.join(builds, build_id), 0
    while os.path.lexists(path):
        n += 1
        path = os.path.join(builds, "%s.%d" % (build_id, n))
    return path


def builds_of(dest: str, build_id: str) -> list:
    """The existing folders of builds with this id: ``builds/<id>`` and ``builds/<id>.<n>``."""
    builds = os.path.join(dest, "builds")
    if not os.path.isdir(builds):
        return []
    names = [n for n in os.listdir(builds)
             if n == build_id or (n.startswith(build_id + ".") and n[len(build_id) + 1:].isdigit())]
    return [os.path.join(builds, n) for n in sorted(names, key=lambda n: (len(n), n))]


def _fsync_tree(folder: str) -> None:
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder)


def publish(dest: str, staging: str | None, build_id: str, reuse: str | None, previous: str | None) -> str:
    """Make a finished build current and return its folder.

    ``staging`` (a complete build) is renamed to a free name under ``builds/``,
    or ``reuse`` (an intact existing build) is linked as it is. ``previous``
    (the build current before) becomes ``dest/previous``. Old folders are pruned
    only after ``current`` has moved away from them.
    """
    builds = os.path.join(dest, "builds")
    os.makedirs(builds, exist_ok=True)
    if reuse:
        final = reuse
    else:
        _fsync_tree(staging)
        _kill_point("staged")
        final = free_build_dir(dest, build_id)
        os.rename(staging, final)
        fsync_dir(builds)
        _kill_point("renamed")
    if previous and previous != final:
        atomic_symlink(os.path.relpath(previous, dest), os.path.join(dest, "previous"))
        _kill_point("previous")
    atomic_symlink(os.path.relpath(final, dest), os.path.join(dest, "current"))
    _kill_point("current")
    prune(dest)
    _kill_point("pruned")
    return final


def prune(dest: str) -> None:
    """Remove every build folder no link points at."""
    keep = {link(dest, n) for n in LINKS}
    builds = os.path.join(dest, "builds")
    if not os.path.isdir(builds):
        return
    for name in sorted(os.listdir(builds)):
        path = os.path.join(builds, name)
        if os.path.realpath(path) not in keep:
            shutil.rmtree(path, ignore_errors=True)


def rollback(dest: str, check_mode: bool) -> dict:
    """Make the previous build current again; the build it replaces is kept as ``failed``."""
    previous, current = link(dest, "previous"), link(dest, "current")
    if not previous:
        return {"changed": False, "msg": "no previous build to roll back to in %s" % dest}
    if not check_mode:
        if current:
            atomic_symlink(os.path.relpath(current, dest), os.path.join(dest, "failed"))
        atomic_symlink(os.path.relpath(previous, dest), os.path.join(dest, "current"))
        os.unlink(os.path.join(dest, "previous"))
    return {"changed": True, "msg": "rolled back %s to %s" % (dest, os.path.basename(previous)),
            "rolled_back_from": current, "build_dir": previous}
