# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What every lqos.bpf module shares: one error type, one way to fail, the
shared option sets, atomic writes, hashing, a C-locale command runner and
bpffs path confinement.

May import: nothing."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import tempfile
import traceback


DEFAULT_PIN_ROOT = "/sys/fs/bpf"
# Where the collection keeps its state on a target: builds, map backups.
STATE_ROOT = "/var/lib/lqos-bpf"
# pinned_maps: backups of removed pins, the replacement journal (gone at reboot, like the pins), and the folder
# under the pin root that holds replaced pins until they are committed. Defined here so that a module's option
# defaults cost no import of the files that use them.
MAP_BACKUP_DIR = STATE_ROOT + "/map-backups"
MAP_STATE_DIR = "/run/lqos-bpf/maps"
MAP_ASIDE_DIR = "lqos_bpf_aside"
# The ABI check's record in a build folder (written by pipeline's check and abi_check's record, read by abi_info).
ABI_CHECK_FILE = "abi-check.json"
C_LOCALE = {"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"}

# Option set shared by every module that works from a pipeline spec.
SPEC_ARGS = dict(
    spec=dict(type="raw", required=True),
)
# Option set shared by modules that read or change pins.
PIN_ARGS = dict(
    pin_root=dict(type="path", default=DEFAULT_PIN_ROOT),
)
# The approval gate: live changes only when this is true.
APPROVE_ARGS = dict(
    approve=dict(type="bool", default=False),
)


def run_literal(module, argv: list, **kwargs) -> tuple:
    """``module.run_command`` taken literally: ``argv`` (a list of str) runs as given, without a shell and
    without expanding ``~`` or ``$VAR`` (AnsibleModule expands both by default), so ``-DX=$HOME`` reaches the
    tool as written, as cargo's build.rs passes it. Returns (rc, stdout, stderr). Every command a module of
    this collection runs goes through here."""
    return module.run_command(argv, expand_user_and_vars=False, **kwargs)


def why_not_live(module) -> str | None:
    """Why a module that has APPROVE_ARGS makes no live change in this run: ``"check mode"``,
    ``"approve is false"``, or None when it may."""
    if module.check_mode:
        return "check mode"
    if not module.params["approve"]:
        return "approve is false"
    return None


class LqosError(Exception):
    """A failure the operator can act on: what is wrong, then how to fix it.

    ``details`` are returned as extra keys of the failed result (rc, stderr,
    cmd, ...), never as a traceback.
    """

    def __init__(self, msg: str, fix: str | None = None, **details):
        super().__init__(msg)
        self.msg = msg
        self.fix = fix
        self.details = details

    def __str__(self) -> str:
        if self.fix:
            return "%s Fix: %s" % (self.msg.rstrip(), self.fix)
        return self.msg


READ_ONLY_CACHES = "LQOS_BPF_READ_ONLY_CACHES"   # set in check mode: caches are read, never written


def run_module(module, run) -> None:
    """Call ``run(module)`` and turn its outcome into exit_json/fail_json.

    Every known failure becomes one ``msg``. An OSError that escaped with an
    environment errno (no space, read-only, permission, a file where a folder
    belongs) is reported as that fault with the path and its fix. Anything else is a bug: one line in
    ``msg`` and the full traceback always in the result's ``exception``
    (ansible-core 2.19 drops a traceback string unless ANSIBLE_DISPLAY_TRACEBACK
    is set, so it is returned here without that filter).
    """
    module.run_command_environ_update = dict(C_LOCALE)
    if getattr(module, "check_mode", False):
        # Check mode writes nothing, not even the caches under /var/cache/lqos-bpf (read, never written).
        os.environ[READ_ONLY_CACHES] = "1"
    try:
        result = run(module)
    except LqosError as exc:
        details = dict(exc.details)
        # changed means changed: a failure says whether the host was left changed (_changes.failure).
        details["changed"] = bool(details.get("changed", False))
        module.fail_json(msg=str(exc), **details)
    except Exception as exc:  # pylint: disable=broad-except
        lib_msg = getattr(exc, "msg", None)
        if lib_msg and exc.__class__.__name__ == "LibbpfError":
            module.fail_json(msg=lib_msg, errno=getattr(exc, "errno", None), changed=False)
        if isinstance(exc, OSError) and exc.errno in ENV_FIXES:
            module.fail_json(msg=str(os_fault(exc)), errno=errno_name(exc.errno), changed=False)
        fail_with_traceback(
            module,
            "internal error in %s: %s: %s. This is a bug in lqos.bpf: please report it with the traceback in "
            "this result's `exception` (ANSIBLE_DISPLAY_TRACEBACK=error prints it)."
            % (module._name, exc.__class__.__name__, exc),
            traceback.format_exc())
    module.exit_json(**result)


def fail_with_traceback(module, msg: str, formatted_traceback: str):
    """fail_json that keeps ``exception`` (the traceback text) whatever the traceback settings."""
    try:
        module.exit_json(failed=True, msg=msg, exception=formatted_traceback)
    except SystemExit:
        pass
    raise SystemExit(1)


# errno -> how to fix the environment (``{path}`` is the file or folder concerned).
ENV_FIXES = {
    errno.ENOSPC: "free space on the filesystem holding {path} (df -h {path}) and run again.",
    errno.EDQUOT: "raise the disk quota of the filesystem holding {path} or free space in it, and run again.",
    errno.EROFS: "{path} is on a read-only filesystem: remount it read-write or choose another folder.",
    errno.EACCES: "run the task as root (become: true) or fix the permissions of {path}.",
    errno.EPERM: "run the task as root (become: true) with CAP_SYS_ADMIN/CAP_BPF, or fix {path}.",
    errno.EIO: "the device holding {path} reports I/O errors: check it (dmesg) before running again.",
    # Wrong file types: a folder was needed where a file is, or the other way round.
    errno.EEXIST: "{path} exists but is not a folder: remove it or give another folder.",
    errno.ENOTDIR: "a part of {path} is a file, not a folder: give a path made of folders.",
    errno.EISDIR: "{path} is a folder where a file was expected: give the file's path.",
}


# The same, when the OSError names no path.
ENV_FIXES_NO_PATH = {
    errno.ENOSPC: "free space on the target (df -h shows the full filesystem) and run again.",
    errno.EDQUOT: "raise the disk quota or free space on the target, and run again.",
    errno.EROFS: "remount the read-only filesystem read-write (mount shows it) or choose another folder.",
    errno.EACCES: "run the task as root (become: true) or fix the permissions.",
    errno.EPERM: "run the task as root (become: true) with CAP_SYS_ADMIN/CAP_BPF.",
    errno.EIO: "check the target's disks (dmesg) before running again.",
    errno.EEXIST: "a path that must be a folder is a file: give another folder.",
    errno.ENOTDIR: "a path that must be a folder is a file: give another folder.",
    errno.EISDIR: "a path that must be a file is a folder: give the file's path.",
}


def os_fault(exc: OSError, doing: str = "", path: str | None = None) -> LqosError:
    """An OSError as one operator-facing error: what failed, on which path (when known), and the fix."""
    path = path or exc.filename
    what = "%s: " % doing if doing else ""
    if path is None:
        return LqosError("%s%s (%s)." % (what, exc.strerror or exc, errno_name(exc.errno)),
                         ENV_FIXES_NO_PATH.get(exc.errno, "check the target's filesystems (df -h, mount) and run again."))
    fix = ENV_FIXES.get(exc.errno, "check {path} and run again.").format(path=path)
    return LqosError("%s%s (%s) on %s." % (what, exc.strerror or exc, errno_name(exc.errno), path), fix)


def int_range(size: int, signed: bool | None) -> tuple:
    """(lowest, highest) integer a ``size``-byte field holds: signed (two's complement), unsigned, or, with
    ``signed`` None (a type BTF does not call an integer), either."""
    bits = 8 * size
    if signed is None:
        return -(1 << (bits - 1)), (1 << bits) - 1
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def int_bytes(value: int, size: int, signed: bool | None, where: str, order: str = "little") -> bytes:
    """The ``size`` bytes of ``value`` for a field that is ``signed`` or not (from its BTF type), after the one
    range check every load-time value and map field goes through. Raises LqosError naming ``where``, the range
    and the type, e.g. ".data variable direction: -1 does not fit a 4-byte unsigned integer (0 to 4294967295)"."""
    low, high = int_range(size, signed)
    if not low <= value <= high:
        kind = {True: "signed ", False: "unsigned ", None: ""}[signed]
        raise LqosError("%s: %d does not fit a %d-byte %sinteger (%d to %d)." % (where, value, size, kind, low, high),
                        "give a number in that range.")
    return value.to_bytes(size, order, signed=value < 0)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old file or the new one, never half.

    An OSError (ENOSPC while writing, say) carries ``path`` as its filename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    # The pid in the temporary name lets a later run remove what a killed writer left (remove_stale_temps).
    fd, tmp = tempfile.mkstemp(prefix=".%s.%d." % (os.path.basename(path), os.getpid()), dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        kill = os.environ.get("LQOS_BPF_TEST_KILL_AT", "")
        if kill.startswith("write:") and os.path.basename(path).startswith(kill[6:]):
            os.kill(os.getpid(), 9)   # test hook: a crash with the temporary file written, not yet renamed
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = path
        raise
    fsync_dir(directory)


_TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.(?P<pid>[0-9]+)\.[A-Za-z0-9_]+$")


def remove_stale_temps(directory: str, base_pattern: str) -> list:
    """Remove the temporary files atomic_write left in ``directory`` for final names matching ``base_pattern``
    (a regular expression) when the process that wrote them is gone (killed mid-write); returns their paths."""
    pattern = re.compile(base_pattern + "$")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if not m or not pattern.match(m.group("base")):
            continue
        try:
            os.kill(int(m.group("pid")), 0)
            continue            # its writer still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except OSError:
            pass
    return removed


def atomic_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` in one rename."""
    tmp = "%s.tmp-%d" % (link, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(os.path.abspath(link)))


ELF_MAGIC = b"\x7fELF"
EM_BPF = 247
ELF_CLASSES = {1: "32-bit", 2: "64-bit"}


def check_bpf_object(path: str, option: str = "object") -> str:
    """Return ``path`` if it is a complete 64-bit ELF BPF object; otherwise raise
    LqosError saying what it is instead (missing, a folder, not ELF, another
    machine, truncated) before libbpf sees it."""
    fix = ("give the BPF object built by lqos.bpf.pipeline (its outputs.object.path, e.g. "
           "<dest>/current/<spec outputs.object>); rebuild it if it was damaged.")
    if not os.path.lexists(path):
        raise LqosError("%s %s does not exist." % (option, path), fix)
    if os.path.isdir(path):
        raise LqosError("%s %s is a folder, not a BPF object file." % (option, path), fix)
    if not os.path.isfile(path):
        raise LqosError("%s %s is not a regular file." % (option, path), fix)
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise os_fault(exc, "cannot read %s" % option, path)
    if head[:4] != ELF_MAGIC:
        raise LqosError("%s %s is not an ELF object (it starts with %r)." % (option, path, head[:8]), fix)
    if len(head) < 64 or head[4] != 2 or head[5] not in (1, 2):
        raise LqosError("%s %s is not a 64-bit ELF object (%s, %d bytes), as BPF objects are."
                        % (option, path, ELF_CLASSES.get(head[4], "class %d" % head[4]) if len(head) > 4 else
                           "no class", size), fix)
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if machine != EM_BPF:
        raise LqosError("%s %s is an ELF object for machine %d, not BPF (EM_BPF = %d)."
                        % (option, path, machine, EM_BPF), fix)
    shoff = int.from_bytes(head[40:48], order)
    shentsize, shnum = int.from_bytes(head[58:60], order), int.from_bytes(head[60:62], order)
    end = shoff + shentsize * shnum
    if not shnum:
        raise LqosError("%s %s has no section headers, so it holds no BPF programs or maps." % (option, path), fix)
    if end > size:
        raise LqosError("%s %s is truncated: its section headers end at byte %d, but the file has %d bytes."
                        % (option, path, end, size), fix)
    return path


def default_build_root(spec_name: str) -> str:
    """The pipeline's output folder for a spec when none is given (its ``current`` is the build in use)."""
    return os.path.join(STATE_ROOT, spec_name)


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Count CPUs in the kernel's possible mask ("0-1", "0,2-3")."""
    with open(path) as fh:
        return count_cpu_list(fh.read())


def count_cpu_list(text: str) -> int:
    total = 0
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            total += int(hi) - int(lo) + 1
        else:
            total += 1
    return total


def errno_name(num: int | None) -> str:
    if not num:
        return ""
    return errno.errorcode.get(num, str(num))


MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argument or environment string (32 pages, linux/binfmts.h)


def _size(n: int) -> str:
    return "%.1f MB" % (n / 1e6) if n >= 1e6 else "%d KB" % (n // 1000) if n >= 1000 else "%d bytes" % n


def argv_too_long(step: str, argv: list, env: dict | None = None) -> str:
    """Why the kernel refused to start ``argv`` with E2BIG, in one line: the step (``step``, e.g. "build step
    clang", starts the line), the size of the argument list
    and the environment, and the limit (``os.sysconf("SC_ARG_MAX")``, what ``getconf ARG_MAX`` prints; or
    MAX_ARG_STRLEN for one argument). Never the command itself: it is what is too long."""
    env = os.environ if env is None else env
    args = sum(len(os.fsencode(a)) + 1 for a in argv)
    envs = sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())
    pointers = (len(argv) + len(env) + 2) * ctypes.sizeof(ctypes.c_void_p)
    longest = max(range(len(argv)), key=lambda i: len(argv[i])) if argv else 0
    tool = os.path.basename(argv[0]) if argv else "?"
    if argv and len(os.fsencode(argv[longest])) + 1 > MAX_ARG_STRLEN:
        return ("%s: the kernel refused to start %s: argument %d alone is %s, over the kernel's limit for one "
                "argument (MAX_ARG_STRLEN, %d bytes) [E2BIG: Argument list too long]"
                % (step, tool, longest, _size(len(os.fsencode(argv[longest]))), MAX_ARG_STRLEN))
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = -1
    return ("%s: the kernel refused to start %s: its %d arguments take %s and the environment %s (%s in all, "
            "with the pointers), over the limit ARG_MAX of %s (%d bytes, getconf ARG_MAX) [E2BIG: Argument list "
            "too long]" % (step, tool, len(argv), _size(args), _size(envs), _size(args + envs + pointers),
                           _size(limit) if limit > 0 else "this system", limit))


def run_step(module, step: str, argv: list, fix: str, **kwargs) -> tuple:
    """``run_literal(module, argv, **kwargs)`` (no ~ or $VAR expansion) that turns a command the kernel cannot
    start into one LqosError
    naming ``step`` (E2BIG: the sizes and the limit, not the command; another OSError: its errno), instead of
    Ansible's failure that dumps the whole command. Returns (rc, stdout, stderr)."""
    try:
        return run_literal(module, argv, handle_exceptions=False, **kwargs)
    except OSError as exc:
        if exc.errno == errno.E2BIG:
            env = dict(os.environ)
            env.update(getattr(module, "run_command_environ_update", None) or {})
            env.update(kwargs.get("environ_update") or {})
            raise LqosError(argv_too_long(step, argv, env) + ".", fix)
        raise LqosError("%s: cannot start %s: %s (%s)." % (
            step, argv[0] if argv else "?", exc.strerror, errno_name(exc.errno)), fix)
