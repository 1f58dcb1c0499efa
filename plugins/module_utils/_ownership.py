# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Whose program is on a hook: the one ownership decision (issue 23, item 4).

A program on an XDP or TC hook is

- ``collection``'s: this collection attached it - its id is that of a program pinned under
  ``<pin_root>/lqos_bpf/`` (module ``attach`` pins every program it attaches there) or of a program an attach
  record under ``/run/lqos-bpf/attach`` names with the tag the kernel still reports for that id;
- ``service``'s: the configured service (lqosd, shaperd) holds it - its id is among the program ids of the
  service main process's file descriptors (``_service.held_prog_ids``, ``/proc/<MainPID>/fdinfo``);
- ``foreign`` otherwise (another loader, ``ip link set ... xdp``, a service that exited and left its TC
  filters behind).

``owner_of`` is the decision, pure; ``collection_prog_ids`` reads the collection's side from the host. The
collection wins over the service when both claim a program (a pin keeps it alive whoever holds an fd).
"""

from __future__ import annotations

import json
import os

OWNERS = ("collection", "service", "foreign")
PIN_SUBDIR = "lqos_bpf"               # the attach module's pin folder under the pin root (_attach_plan.PIN_SUBDIR)
ATTACH_STATE_DIR = "/run/lqos-bpf/attach"  # the attach module's records (_attach_plan.DEFAULT_STATE_DIR)


def owner_of(prog_id: int, collection_ids, service_ids) -> str:
    """``collection``, ``service`` or ``foreign`` for program ``prog_id`` (int) on a hook.

    ``collection_ids``: ids this collection attached (``collection_prog_ids``); ``service_ids``: ids the service's
    main process holds (``_service.held_prog_ids``). Both any iterable of int."""
    if prog_id in set(collection_ids or ()):
        return "collection"
    if prog_id in set(service_ids or ()):
        return "service"
    return "foreign"


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
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps, _libbpf
    try:
        return _bpf_maps.prog_info_by_id(prog_id)
    except _libbpf.LibbpfError:
        return None


def _kernel_pinned_prog(path: str) -> int | None:
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps, _libbpf
    if _libbpf.pinned_kind(path) != "prog":
        return None
    try:
        return _bpf_maps.prog_info_by_path(path)["id"]
    except _libbpf.LibbpfError:
        return None


def collection_prog_ids(pin_root: str, state_dir: str = ATTACH_STATE_DIR, prog_info=None, pinned_prog=None) -> set:
    """Ids (int) of the programs this collection attached, read from the host: programs pinned anywhere under
    ``<pin_root>/lqos_bpf/`` and programs the attach records name whose id the kernel still has with the
    recorded tag. ``prog_info(id)`` -> {"tag", ...} or None, ``pinned_prog(path)`` -> id or None are the kernel
    reads (default: libbpf through ``_bpf_maps`` / ``_libbpf``); a pin folder that is missing gives no ids."""
    prog_info = prog_info or _kernel_prog_info
    pinned_prog = pinned_prog or _kernel_pinned_prog
    ids = set()
    top = os.path.join(pin_root, PIN_SUBDIR)
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
