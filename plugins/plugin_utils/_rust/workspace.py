# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf collection, not a public API.
"""The Rust roots an ABI check reads: the spec's ``rust.roots`` and, with ``rust.workspace``, the crates of the
Cargo workspace that open a pinned map of the object by its pin path.

Maps are opened by pin path from more than the crate that builds the object (LibreQoS: ``lqos_heimdall`` opens
``heimdall_config`` with its own mirror of the C struct), so a fixed list of roots misses mirrors. The workspace
is the nearest ``Cargo.toml`` above the crate with a ``[workspace]`` table; its ``members`` (globs allowed) are
the candidates, and a member is read when one of its ``.rs`` files has a string literal ending in
``/<map>`` for a map the C sources pin (``LIBBPF_PIN_BY_NAME``) - the same names the object pins.
"""

from __future__ import annotations

import glob
import os
import re

PIN_BY_NAME = re.compile(r"__uint\s*\(\s*pinning\s*,\s*LIBBPF_PIN_BY_NAME\s*\)[^{}]*\}\s*([A-Za-z_]\w*)\s+SEC\s*\(\s*\"\.maps\"")
C_SUFFIXES = (".c", ".h")
_MEMBERS = re.compile(r"^\s*members\s*=\s*\[(.*?)\]", re.S | re.M)
_STRING = re.compile(r"\"((?:[^\"\\]|\\.)*)\"")
MAX_UP = 4


def pinned_map_names(workdir: str) -> set:
    """Names of the maps the C sources under ``workdir`` declare with ``pinning LIBBPF_PIN_BY_NAME``."""
    names = set()
    for root, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.endswith(C_SUFFIXES):
                try:
                    with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                        names.update(PIN_BY_NAME.findall(fh.read()))
                except OSError:
                    continue
    return names


def _members(text: str) -> list | None:
    """The ``members`` of a Cargo.toml's ``[workspace]`` table (None: no workspace table)."""
    try:
        import tomllib
    except ImportError:   # Python < 3.11: the members array is simple enough to read with a pattern
        tomllib = None
    if tomllib is not None:
        try:
            ws = tomllib.loads(text).get("workspace")
        except tomllib.TOMLDecodeError:
            return None
        return [m for m in (ws or {}).get("members", []) if isinstance(m, str)] if isinstance(ws, dict) else None
    if not re.search(r"^\s*\[workspace\]\s*$", text, re.M):
        return None
    section = text.split("[workspace]", 1)[1]
    m = _MEMBERS.search(section)
    body = re.sub(r"#[^\n]*", "", m.group(1)) if m else ""
    return _STRING.findall(body)


def find_workspace(crate: str) -> tuple:
    """(workspace folder, [member crate folders]) of the nearest Cargo.toml above ``crate`` with a [workspace]
    table, or (None, [])."""
    here = os.path.dirname(os.path.abspath(crate))
    for unused_level in range(MAX_UP):
        manifest = os.path.join(here, "Cargo.toml")
        if os.path.isfile(manifest):
            try:
                with open(manifest, encoding="utf-8", errors="replace") as fh:
                    members = _members(fh.read())
            except OSError:
                members = None
            if members is not None:
                folders = []
                for pattern in members:
                    for path in sorted(glob.glob(os.path.join(here, pattern))):
                        if os.path.isfile(os.path.join(path, "Cargo.toml")) and path not in folders:
                            folders.append(os.path.normpath(path))
                return here, folders
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return None, []


def _names_a_pin(src: str, maps: set) -> list:
    """The maps of ``maps`` a string literal under ``src`` names by pin path ("/.../<map>"), sorted."""
    found = set()
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.endswith(".rs"):
                continue
            try:
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            for literal in _STRING.findall(text):
                tail = literal.rsplit("/", 1)
                if len(tail) == 2 and tail[1] in maps:
                    found.add(tail[1])
    return sorted(found)


def rust_roots(spec: dict, crate: str) -> dict:
    """{"roots": [absolute folders to read, in order], "missing": [{"root", "path"}] (spec roots the tree lacks),
    "workspace": {"path", "members": [{"crate", "src", "maps"}]} or None}. ``crate`` is the crate root on the
    controller; spec roots are relative to it."""
    roots, missing = [], []
    for rel in spec["rust"]["roots"]:
        path = os.path.normpath(os.path.join(crate, rel))
        if os.path.isdir(path):
            roots.append(path)
        else:
            missing.append({"root": rel, "path": path})
    workspace = None
    if spec["rust"].get("workspace"):
        ws, members = find_workspace(crate)
        if ws is not None:
            maps = pinned_map_names(os.path.normpath(os.path.join(crate, spec["sources"]["workdir"])))
            workspace = {"path": ws, "members": []}
            for member in members:
                src = os.path.join(member, "src")
                if os.path.normpath(member) == os.path.normpath(crate) or not os.path.isdir(src):
                    continue
                named = _names_a_pin(src, maps)
                if named:
                    workspace["members"].append({"crate": os.path.relpath(member, ws), "src": src, "maps": named})
                    if src not in roots:
                        roots.append(src)
    return {"roots": roots, "missing": missing, "workspace": workspace}
