# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The bpffs every pin lives on: whether a folder is a bpffs (statfs magic), where one may be mounted and the fix
when it is not, folder options that must not point into it, and pin paths confined to the pin root (no .., no
symlink out). Shared by every layer.

May import: _common."""

from __future__ import annotations

import ctypes
import os

from ._common import DEFAULT_PIN_ROOT, LqosError


BPFFS_MAGIC = 0xCAFE4A11


def statfs_type(path: str) -> int:
    """The filesystem magic of ``path`` (statfs f_type), or raise OSError."""
    buf = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def is_bpffs(path: str) -> bool:
    try:
        return statfs_type(path) == BPFFS_MAGIC
    except OSError:
        return False


# Folders of the system a bpffs must never be mounted over (it would hide what they hold); below the kernel's
# pseudo filesystems (KERNEL_FOLDERS) no folder is a place for one either, except /sys/fs/bpf and below.
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
                  "/opt", "/proc", "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/var")
KERNEL_FOLDERS = ("/dev", "/proc", "/sys")


def bpffs_mount_fix(pin_root: str) -> str:
    """The fix for "no bpffs at ``pin_root``": the mount command when ``pin_root`` is a place for a bpffs (under
    /sys/fs/bpf, or a folder of its own that is missing or empty), never for / or a system folder
    (``SYSTEM_FOLDERS``, anything under /proc, /sys or /dev but /sys/fs/bpf, a folder that holds files: a mount
    would hide them): then the fix is to choose a bpffs location."""
    path = os.path.normpath(pin_root) if os.path.isabs(pin_root) else pin_root
    bpffs_place = path == DEFAULT_PIN_ROOT or path.startswith(DEFAULT_PIN_ROOT + "/")
    under_kernel = any(path.startswith(k + "/") for k in KERNEL_FOLDERS)
    system = path == "/" or path in SYSTEM_FOLDERS or DEFAULT_PIN_ROOT.startswith(path + "/") or under_kernel
    try:
        busy = os.path.isdir(path) and bool(os.listdir(path))
    except OSError:
        busy = True
    if bpffs_place or not (system or busy):
        return "mount bpffs there: %smount -t bpf bpf %s" % ("" if os.path.isdir(path) else "mkdir -p %s && " % path,
                                                             path)
    what = "a system folder" if system else "a folder that already holds files"
    return ("set pin_root to a bpffs mount point such as %s (mounted by systemd; else mkdir -p %s && mount -t bpf "
            "bpf %s). Never mount a bpffs over %s: it is %s and the mount would hide what it holds."
            % (DEFAULT_PIN_ROOT, DEFAULT_PIN_ROOT, DEFAULT_PIN_ROOT, path, what))


def require_bpffs(pin_root: str) -> str:
    """Return the canonical pin root, or fail clearly if it is not a bpffs mount."""
    if not os.path.isabs(pin_root):
        raise LqosError("pin_root %r is not an absolute path." % pin_root,
                        "give the bpffs mount point, e.g. /sys/fs/bpf.")
    real = os.path.realpath(pin_root)
    if os.path.exists(real) and not os.path.isdir(real):
        inside = is_bpffs(os.path.dirname(real))
        raise LqosError("pin_root %s is %s, not a folder." % (pin_root, "a pinned object inside a bpffs" if inside
                                                              else "a file"),
                        "give the bpffs mount point (e.g. %s), not a pin in it." % (
                            _mount_point(real) if inside else DEFAULT_PIN_ROOT))
    if not os.path.isdir(real):
        raise LqosError("pin_root %s does not exist." % pin_root, bpffs_mount_fix(pin_root))
    if not is_bpffs(real):
        raise LqosError("pin_root %s is not a bpffs mount (statfs magic is not BPF_FS_MAGIC)." % pin_root,
                        bpffs_mount_fix(pin_root))
    return real


def refuse_bpffs_folder(path: str, option: str, fix: str) -> None:
    """Refuse (LqosError) a folder option (``backup_dir``, ...) that is, or would be created, inside a bpffs,
    directly or through a symlinked folder, before anything is created: a bpffs holds only pins, never files.
    The nearest existing ancestor of the resolved path is the one whose filesystem is checked."""
    real = os.path.realpath(path)
    probe = real
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    if is_bpffs(probe):
        via = " (through a symlink, it is %s)" % real if real != os.path.normpath(path) else ""
        raise LqosError("%s %s is inside the bpffs mounted at %s%s, which holds only pins, never files; nothing "
                        "was changed." % (option, path, _mount_point(probe + "/x"), via), fix)


def _mount_point(path: str) -> str:
    """The closest ancestor of ``path`` that is a mount point."""
    path = os.path.dirname(path)
    while path != "/" and not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def confine_pin(pin_root: str, name: str) -> str:
    """Resolve ``name`` (relative to ``pin_root``, or absolute under it) and refuse
    anything that leaves the bpffs root: ``..``, symlinks, other absolute paths."""
    root = os.path.realpath(pin_root)
    path = name if os.path.isabs(name) else os.path.join(root, name)
    norm = os.path.normpath(path)
    if ".." in name.split("/") or not (norm == root or norm.startswith(root + "/")):
        raise LqosError("pin path %r leaves the pin root %s." % (name, root),
                        "name pins relative to pin_root, without '..'.")
    probe = root
    for part in os.path.relpath(norm, root).split("/"):
        if part in (".", ""):
            continue
        probe = os.path.join(probe, part)
        if os.path.islink(probe):
            raise LqosError("pin path %s is a symlink (-> %s); symlinks are never followed under the pin root."
                            % (probe, os.readlink(probe)), "remove the symlink or name the real pin.")
    return norm


def normalise_names(pin_root: str, names, option: str = "maps") -> list | None:
    """An option's pin names (``option``: maps, pin) as paths relative to ``pin_root``: a list of
    str, or None when ``names`` is empty. Refuses (LqosError) absolute paths outside the root and '..'."""
    if not names:
        return None
    out = []
    root = pin_root.rstrip("/") or "/"
    for name in names:
        rel = name
        if os.path.isabs(name):
            norm = os.path.normpath(name)
            if not norm.startswith(root + "/"):
                raise LqosError("%s entry %r is outside pin_root %s." % (option, name, pin_root),
                                "name pins relative to pin_root, e.g. map_traffic.")
            rel = norm[len(root) + 1:]
        if not rel or ".." in rel.split("/"):
            raise LqosError("%s entry %r leaves the pin root %s." % (option, name, pin_root),
                            "name pins relative to pin_root, without '..'.")
        out.append(os.path.normpath(rel))
    return out
