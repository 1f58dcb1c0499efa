# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""A service that loads the programs itself (LibreQoS' lqosd, the reference pipeline's shaperd).

Two facts the service loader and the ownership model need, read without the kernel's BPF API:

- ``held_prog_ids(pid)``: the BPF program ids a process holds open, from
  ``/proc/<pid>/fdinfo/<fd>`` (the kernel prints ``prog_id:`` for a program
  fd, and for the program of a bpf_link fd; ``fs/proc/fd.c`` and
  ``kernel/bpf/syscall.c`` ``bpf_prog_show_fdinfo``, ``bpf_link_show_fdinfo``).
  A program on a hook held by the service's main process is the service's.
- ``embedded_objects(data)`` / ``embedded_object(data)``: the BPF ELF object a
  binary carries. ``bpftool gen skeleton`` embeds the object file's bytes
  verbatim as a string in the generated ``<name>__elf_bytes()``, so the binary
  holds a complete ELF image of machine ``EM_BPF`` (247); its end is found
  from its own ELF header and section table (System V gABI, "ELF Header" and
  "Sections").
"""

from __future__ import annotations

import errno
import os
import struct

from .._common import LqosError

ELF_MAGIC = b"\x7fELF"
EM_BPF = 247
SHT_NOBITS = 8


# --------------------------------------------------------------------------
# Program ids a process holds
# --------------------------------------------------------------------------

def prog_id_of_fdinfo(text: str) -> int | None:
    """The ``prog_id:`` of one fdinfo text (a BPF program fd), or None for any other fd."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == "prog_id":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


def held_prog_ids(pid: int, proc_root: str = "/proc") -> list:
    """Sorted, distinct ids (int) of the BPF programs process ``pid`` holds as file descriptors.

    Reads ``<proc_root>/<pid>/fdinfo/*``; an fd closed while it is read is skipped. Raises LqosError
    when the process does not exist (or exits meanwhile) or its fdinfo is not readable (needs root or
    the same user, and a /proc of the process's pid namespace)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise LqosError("pid %r is not a process id." % (pid,), "give the service's MainPID, a positive integer.")
    folder = os.path.join(proc_root, str(pid), "fdinfo")
    try:
        names = os.listdir(folder)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            raise LqosError("process %d does not exist (no %s)." % (pid, folder),
                            "check that the service is running (systemctl show -p MainPID <unit>).")
        raise LqosError("reading %s failed: %s." % (folder, exc.strerror),
                        "run as root, with /proc of the service's pid namespace mounted.")
    ids = set()
    for name in names:
        try:
            with open(os.path.join(folder, name)) as fh:
                found = prog_id_of_fdinfo(fh.read())
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EBADF):
                continue  # closed since the listing
            raise LqosError("reading %s/%s failed: %s." % (folder, name, exc.strerror),
                            "run as root, with /proc of the service's pid namespace mounted.")
        if found:
            ids.add(found)
    if not os.path.isdir(folder):
        raise LqosError("process %d exited while its file descriptors were read." % pid,
                        "check that the service is running and read it again.")
    return sorted(ids)


# --------------------------------------------------------------------------
# The BPF object a binary carries
# --------------------------------------------------------------------------

def elf_image_size(data: bytes, offset: int) -> int | None:
    """Size in bytes of the ELF image that starts at ``offset`` of ``data``: the furthest end of its
    header, its section header table and every section with file contents. None when the bytes there
    are not a consistent ELF header, or the image would run past the end of ``data``."""
    head = data[offset:offset + 64]
    if len(head) < 52 or head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    if wide:
        if len(head) < 64:
            return None
        shoff, = struct.unpack_from(order + "Q", head, 40)
        halves = struct.unpack_from(order + "6H", head, 52)  # ehsize phentsize phnum shentsize shnum shstrndx
        want_shent = 64
    else:
        shoff, = struct.unpack_from(order + "I", head, 32)
        halves = struct.unpack_from(order + "6H", head, 40)
        want_shent = 40
    ehsize, shentsize, shnum = halves[0], halves[3], halves[4]
    if ehsize != (64 if wide else 52) or shoff < ehsize or shentsize != want_shent:
        return None
    if shnum == 0:  # extended numbering: section 0's sh_size holds the count
        first = data[offset + shoff:offset + shoff + shentsize]
        if len(first) < shentsize:
            return None
        shnum = struct.unpack_from(order + ("Q" if wide else "I"), first, 32 if wide else 20)[0]
        if shnum == 0:
            return None
    end = shoff + shnum * shentsize
    if offset + end > len(data):
        return None
    for i in range(shnum):
        at = offset + shoff + i * shentsize
        if wide:
            sh_type, = struct.unpack_from(order + "I", data, at + 4)
            sh_offset, sh_size = struct.unpack_from(order + "QQ", data, at + 24)
        else:
            sh_type, = struct.unpack_from(order + "I", data, at + 4)
            sh_offset, sh_size = struct.unpack_from(order + "II", data, at + 16)
        if sh_type != SHT_NOBITS and sh_size:
            end = max(end, sh_offset + sh_size)
    return end if offset + end <= len(data) else None


def _machine(data: bytes, offset: int) -> int:
    order = "<" if data[offset + 5] == 1 else ">"
    return struct.unpack_from(order + "H", data, offset + 18)[0]


def embedded_objects(data: bytes) -> list:
    """Every complete BPF ELF image (``e_machine`` EM_BPF) inside ``data``, in file order, as
    ``[{"offset": int, "size": int}]`` (bytes). The host binary's own ELF header (machine x86-64,
    aarch64, ...) and stray magic bytes are skipped."""
    found = []
    at = data.find(ELF_MAGIC)
    while at >= 0:
        size = elf_image_size(data, at)
        if size is not None and _machine(data, at) == EM_BPF:
            found.append({"offset": at, "size": size})
            at = data.find(ELF_MAGIC, at + size)
        else:
            at = data.find(ELF_MAGIC, at + 1)
    return found


def embedded_object(data: bytes, what: str = "the binary") -> bytes:
    """The one BPF object embedded in ``data`` (a service binary built with a bpftool skeleton). Identical
    copies count as one (a C program that includes the skeleton header in two files carries two). Raises
    LqosError when there is none or more than one distinct (``what`` names the binary in the message)."""
    found = embedded_objects(data)
    images = {data[f["offset"]:f["offset"] + f["size"]] for f in found}
    if len(images) == 1:
        return images.pop()
    if not found:
        raise LqosError("%s embeds no BPF object (no ELF image of machine BPF inside it)." % what,
                        "give the service's binary as installed (built with the skeleton), not a stripped "
                        "wrapper or a script that starts it.")
    raise LqosError("%s embeds %d different BPF objects (at offsets %s)." % (
        what, len(images), ", ".join(str(f["offset"]) for f in found)),
        "name the object to use: this build links more than one skeleton.")
