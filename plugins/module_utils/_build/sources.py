# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""A build is tied to its sources: the BPF sources under a crate against the ``inputs`` of a build folder's
manifest.json (written by ``_build.pipeline``), so a check never compares another tree's object with these mirrors."""

from __future__ import annotations

import os

from .._common import LqosError, sha256_file
from .pipeline import MANIFEST, Pipeline, _read_json


def source_drift(spec: dict, src: str, build_dir: str) -> list:
    """How the BPF sources under ``src`` differ from those the build in ``build_dir`` was made from (its
    manifest.json ``inputs``: path relative to the crate -> sha256): ["file F changed" | "file F added" |
    "file F removed"], sorted by path; [] when they are the same. A build folder without a readable manifest
    is not comparable: [] (the check reports the missing outputs itself)."""
    recorded = _read_json(os.path.join(build_dir, MANIFEST))
    inputs = ((recorded or {}).get("manifest") or {}).get("inputs")
    if not isinstance(inputs, dict):
        return []
    pipeline = Pipeline(None, spec, src, build_dir)
    pipeline._check_sources()
    now = {os.path.relpath(p, pipeline.src): p for p in pipeline.input_files()}
    out = []
    for rel in sorted(set(now) | set(inputs)):
        if rel not in now:
            out.append("file %s removed" % rel)
        elif rel not in inputs:
            out.append("file %s added" % rel)
        elif sha256_file(now[rel]) != inputs[rel]:
            out.append("file %s changed" % rel)
    return out


def refuse_other_sources(spec: dict, src: str, build_dir: str) -> None:
    """Raise LqosError when the build in ``build_dir`` was made from other sources than those in ``src``:
    comparing its object with the Rust mirrors of another tree gives a false pass or a false alarm."""
    drift = source_drift(spec, src, build_dir)
    if drift:
        shown = ", ".join(drift[:3]) + (" and %d more" % (len(drift) - 3) if len(drift) > 3 else "")
        raise LqosError("build %s was made from other sources (%s): rebuild first."
                        % (os.path.basename(os.path.realpath(build_dir)), shown),
                        "build %s with lqos.bpf.pipeline (or the build role), then check the new build; nothing was "
                        "compared." % src)
