# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""The fleet report's cells of the ownership model (issue 23): who loaded the programs on a host's hooks (the
Loader column) and, with the service loader, the service's state, its running tags against its embedded object and
the collection's build, and the ABI check of the object it runs (the Service, vs embedded, vs build and ABI check
columns). Pure: plain data from lqos.bpf.abi_info's ``loader`` and ``service`` in, the row's field out
(docs/report-schema.md)."""

from __future__ import annotations

VERDICTS = ("tags_vs_embedded", "tags_vs_build", "abi_check")


def loader_cell(loader) -> dict | None:
    """A host's ``loader`` (abi_info's summary of who owns the programs on its hooks: ``kind`` collection, service,
    foreign, mixed or none; ``units`` the services' systemd units) as the report keeps it, with ``text`` for the
    Loader column (``service (lqosd.service)``); None when the host's abi_info has no loader (older releases)."""
    if not isinstance(loader, dict) or not loader.get("kind"):
        return None
    units = [str(u) for u in loader.get("units") or []]
    return {"kind": str(loader["kind"]), "units": units,
            "text": "%s (%s)" % (loader["kind"], ", ".join(units)) if units else str(loader["kind"])}


def _str(value) -> str | None:
    return None if value is None else str(value)


def service_cell(service) -> dict | None:
    """A host's ``service`` (abi_info's ``service`` section, with its ``service`` option: the audit role passes it
    when ``lqos_bpf_loader`` is ``service``) as the report keeps it: ``unit``, ``active_state``, ``main_pid``,
    ``n_restarts``, the three verdicts ``tags_vs_embedded``, ``tags_vs_build`` (``match``, ``differ``, ``unknown``)
    and ``abi_check`` (``passed``, ``failed``, ``unknown``), ``reasons`` (verdict -> why it is unknown or failed,
    only those that have one), ``error`` (why the service could not be read, or None) and ``text`` for the Service
    column (``lqosd.service active``, ``... (pid 812)`` while a process runs). None for a host without the section
    (the collection loader, or an abi_info that predates it)."""
    if not isinstance(service, dict) or service.get("unit") is None:
        return None
    unit = str(service["unit"]) or "?"   # an empty name: the section's error says why
    pid = service.get("main_pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    state = _str(service.get("active_state")) or "unknown"
    reasons = service.get("reasons") if isinstance(service.get("reasons"), dict) else {}
    row = {"unit": unit, "active_state": state, "main_pid": pid,
           "n_restarts": service.get("n_restarts") if isinstance(service.get("n_restarts"), int) else None,
           "reasons": {k: str(reasons[k]) for k in VERDICTS if reasons.get(k)},
           "error": _str(service.get("error")),
           "text": "%s %s%s" % (unit, state, " (pid %d)" % pid if pid else "")}
    for key in VERDICTS:
        row[key] = _str(service.get(key)) or "unknown"
    return row
