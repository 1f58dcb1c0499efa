# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Who owns a BPF program on a hook: the one ownership model of lqos.bpf (docs/behaviour.md, "Who owns a hook").

A program on an XDP or TC hook is, in this order:

- **collection**: this collection attached it. It is pinned under ``<pin_root>/lqos_bpf/<netns|host>/<ifname>/``
  (``_attach.plan.PIN_SUBDIR``), or the attach record names its id with the tag the kernel still reports
  (``_attach.observe.Observer.recorded_ids``). Its id is in ``collection_ids``.
- **service**: a running process holds it as a file descriptor (a program fd, or a bpf_link fd of it): the
  kernel prints ``prog_id:`` in ``/proc/<pid>/fdinfo/<fd>`` (``_ownership.processes.held_prog_ids``). That is how LibreQoS'
  lqosd (and the reference pipeline's stand-in shaperd) keeps its programs: it loads them at every start, so
  replacing them lasts only until its next restart. The process is named by ``comm`` and, when it runs in a
  systemd service, by its unit, the last ``<name>.service`` of its cgroup path (``/proc/<pid>/cgroup``; the
  unified ``0::`` line, else the ``name=systemd`` line of cgroup v1).
- **foreign**: neither: another tool attached it and exited (``ip link set ... xdp obj``, a pinned link of
  xdp-loader). Only ``force: true`` replaces it.

Pure parts (plain data in and out, unit-tested in ``test_ownership_pure.py``): ``unit_of_cgroup``,
``owner_of``, ``describe_holders``, ``service_refusal``, ``loader_summary``, ``is_collection_pin``. Parts
that read the host: ``holders`` (``/proc``) and ``collection_prog_ids`` (bpffs and the attach records).
"""

from __future__ import annotations

import json
import os

from .._common import LqosError

COLLECTION = "collection"
SERVICE = "service"
FOREIGN = "foreign"
OWNERS = (COLLECTION, SERVICE, FOREIGN)
# Where lqos.bpf.attach pins the programs it attached, under the pin root (_attach.plan.PIN_SUBDIR).
COLLECTION_PIN_DIR = "lqos_bpf"
ATTACH_STATE_DIR = "/run/lqos-bpf/attach"  # the attach module's records (_attach.plan.DEFAULT_STATE_DIR)


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

def is_collection_pin(name: str) -> bool:
    """True for a pin name relative to the pin root (``lqos_bpf/host/eth0/xdp_shaper``) under the folder where
    lqos.bpf.attach pins its programs."""
    return isinstance(name, str) and name.startswith(COLLECTION_PIN_DIR + "/")


def unit_of_cgroup(text: str) -> str | None:
    """The systemd service unit (``lqosd.service``) of a process from its ``/proc/<pid>/cgroup`` text, or None
    when it runs in none (a login session's scope, a container's own root, a plain ``0::/``).

    The unified hierarchy's ``0::<path>`` line is read first, then cgroup v1's ``<n>:name=systemd:<path>``; the
    unit is the deepest path component ending in ``.service`` (a service's own sub-cgroups, e.g.
    ``/system.slice/lqosd.service/worker``, still belong to it)."""
    paths = {}
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths.setdefault(parts[1], parts[2])
    path = paths.get("") if paths.get("") not in (None, "/") else paths.get("name=systemd")
    for component in reversed((path or "").split("/")):
        if component.endswith(".service") and len(component) > len(".service"):
            return component
    return None


def owner_of(prog_id: int, collection_ids, holders: dict) -> tuple:
    """(owner, detail) of the program ``prog_id`` on a hook.

    ``collection_ids``: ids this collection attached (a set); ``holders``: ``{prog_id: [{pid, comm, unit}]}`` as
    ``holders()`` returns it. Returns ``("collection", None)``, ``("service", [{pid, comm, unit}, ...])`` (sorted by
    pid) or ``("foreign", None)``. The collection comes first: a program it pinned is its own even while a tool
    (bpftool, a test) holds it open."""
    if prog_id in (collection_ids or ()):
        return COLLECTION, None
    held = (holders or {}).get(prog_id)
    if held:
        return SERVICE, sorted(held, key=lambda h: h["pid"])
    return FOREIGN, None


def describe_holder(holder: dict) -> str:
    """``process 812 (lqosd) of unit lqosd.service``, or ``process 812 (lqosd), in no systemd service``."""
    text = "process %d (%s)" % (holder["pid"], holder.get("comm") or "?")
    return text + (" of unit %s" % holder["unit"] if holder.get("unit") else ", in no systemd service")


def describe_holders(holders: list) -> str:
    return ", ".join(describe_holder(h) for h in holders)


def service_refusal(hook: str, ifname: str, netns: str | None, program: str, holders: list) -> LqosError:
    """The one error of lqos.bpf.attach for a hook whose program a running process holds (``owner_of`` gave
    "service"), with or without ``force``. ``program`` is ``_attach.plan.prog_desc`` text (id, name, tag)."""
    where = "%s%s" % (ifname, " (netns %s)" % netns if netns else "")
    units = sorted({h["unit"] for h in holders if h.get("unit")})
    msg = ("%s on %s holds program %s, loaded and held by %s: the service's, not this collection's; it is left in "
           "place and nothing was changed (force: true does not replace a running service's programs: the "
           "service attaches its own again when it restarts)." % (hook, where, program, describe_holders(holders)))
    if units:
        unit = units[0]
        fix = ("this host's programs are loaded by %s: deploy with lqos_bpf_loader: service (lqos_bpf_service: %s), "
               "or stop %s first." % (unit, unit, unit))
    else:
        first = holders[0]
        fix = ("this host's programs are loaded by process %d (%s), which runs in no systemd service: stop it first "
               "(or run it as a service and deploy with lqos_bpf_loader: service)." % (first["pid"], first["comm"]))
    return LqosError(msg, fix, owner=SERVICE, holders=list(holders))


def loader_summary(hooks: list) -> dict:
    """Who loaded what runs on a host's hooks, from every hook's ``{"owner", "holders"}`` (owner None: the hook
    is empty). Returns ``{"kind", "units", "counts"}``: ``kind`` ``none`` (nothing on the hooks), ``collection``,
    ``service`` (every program held by processes; ``units`` names their systemd units), ``foreign`` (only programs
    nobody holds and the collection did not attach) or ``mixed`` (more than one of those); ``counts`` the hooks
    per owner."""
    counts = {o: 0 for o in OWNERS}
    units = set()
    for hook in hooks:
        owner = hook.get("owner")
        if owner in counts:
            counts[owner] += 1
        if owner == SERVICE:
            units.update(h["unit"] for h in hook.get("holders") or [] if h.get("unit"))
    present = [o for o in OWNERS if counts[o]]
    kind = "none" if not present else present[0] if len(present) == 1 else "mixed"
    return {"kind": kind, "units": sorted(units), "counts": counts}


# --------------------------------------------------------------------------
# Reading the host
# --------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def holders(prog_ids, proc_root: str = "/proc") -> dict:
    """``{prog_id: [{"pid": int, "comm": str, "unit": str | None}]}`` for each id of ``prog_ids`` some process
    holds as a file descriptor (ids nobody holds are left out).

    Scans every process of ``proc_root`` with ``_ownership.processes.held_prog_ids``; this process itself is left out (a
    module that loaded a program to compare it is no service), and so are processes that exit meanwhile or
    whose fdinfo cannot be read (needs root, or a /proc of their pid namespace)."""
    from .processes import held_prog_ids

    wanted = {int(i) for i in prog_ids or () if i}
    out: dict = {}
    if not wanted:
        return out
    try:
        pids = sorted(int(n) for n in os.listdir(proc_root) if n.isdigit())
    except OSError:
        return out
    me = os.getpid() if proc_root == "/proc" else None
    for pid in pids:
        if pid == me:
            continue
        try:
            held = wanted.intersection(held_prog_ids(pid, proc_root))
        except LqosError:
            continue
        if not held:
            continue
        comm = (_read(os.path.join(proc_root, str(pid), "comm")) or "").strip() or None
        unit = unit_of_cgroup(_read(os.path.join(proc_root, str(pid), "cgroup")) or "")
        for prog_id in held:
            out.setdefault(prog_id, []).append({"pid": pid, "comm": comm, "unit": unit})
    return out


def recorded_rows(state_dir: str = ATTACH_STATE_DIR) -> list:
    """[(prog id, tag)] of every program the attach records under ``state_dir`` name (XDP and TC rows); a record
    that is missing, unreadable or not JSON is skipped (the attach module treats it the same way)."""
    rows = []
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return rows
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(state_dir, name)) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        for row in [data.get("xdp")] + list(data.get("tc") or []):
            if isinstance(row, dict) and isinstance(row.get("id"), int) and isinstance(row.get("tag"), str):
                rows.append((row["id"], row["tag"]))
    return rows


def _kernel_prog_info(prog_id: int) -> dict | None:
    from .._kernel import maps as _kmaps
    from .._kernel import libbpf as _libbpf
    try:
        return _kmaps.prog_info_by_id(prog_id)
    except _libbpf.LibbpfError:
        return None


def _kernel_pinned_prog(path: str) -> int | None:
    from .._kernel import maps as _kmaps
    from .._kernel import libbpf as _libbpf
    try:
        if _libbpf.pinned_kind(path) != "prog":
            return None
        return _kmaps.prog_info_by_path(path)["id"]
    except (_libbpf.LibbpfError, OSError):
        return None


def collection_prog_ids(pin_root: str, state_dir: str = ATTACH_STATE_DIR, prog_info=None, pinned_prog=None) -> set:
    """Ids (int) of the programs this collection attached, read from the host: programs pinned anywhere under
    ``<pin_root>/lqos_bpf/`` and programs the attach records name whose id the kernel still has with the
    recorded tag. ``prog_info(id)`` -> {"tag", ...} or None, ``pinned_prog(path)`` -> id or None are the kernel
    reads (default: libbpf through ``_kernel.maps`` / ``_kernel.libbpf``); a pin folder that is missing gives no ids."""
    prog_info = prog_info or _kernel_prog_info
    pinned_prog = pinned_prog or _kernel_pinned_prog
    ids = set()
    top = os.path.join(pin_root, COLLECTION_PIN_DIR)
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            found = pinned_prog(os.path.join(folder, name))
            if found:
                ids.add(found)
    for prog_id, tag in recorded_rows(state_dir):
        info = prog_info(prog_id)
        if info and info.get("tag") == tag:
            ids.add(prog_id)
    return ids
