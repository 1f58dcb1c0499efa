# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The whole build chain of an lqos_sys-shaped crate, as build.rs runs it.

clang -> LLVM IR, llc -> BPF object, bpftool gen skeleton, wrapper copied and
compiled against the skeleton, ar, bindgen. Idempotent by content (a manifest
of input hashes decides), atomic (staging folder, then a symlink swap), locked
(one build per output folder), and the previous build is kept for rollback.

Layout of ``dest``::

    dest/.lock                 flock held during a build
    dest/builds/<id>/          one complete build (outputs + manifest.json)
    dest/current -> builds/<id>
    dest/previous -> builds/<id>   the build that was current before
    dest/.staging-*            a build in progress (removed on failure)
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.lqos.bpf.plugins.module_utils._buildrs import apply_build_rs_flags
from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    atomic_symlink, atomic_write, canonical_json, LqosError, sha256_bytes, sha256_file,
)
from ansible_collections.lqos.bpf.plugins.module_utils._toolchain import TOOL_CACHE, tool_versions

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CHAIN_TOOLS = ("clang", "llc", "bpftool", "bindgen", "ar")
SOURCE_SUFFIXES = (".c", ".h")
INTERNAL_MAP = re.compile(r"^(rodata|data|bss|kconfig)(_|$)")
_DIAGNOSTIC = re.compile(r"^([^\s:]+\.[ch]):(\d+):\d+: ((?:warning|error): [^\n]*)", re.M)


def skeleton_names(text: str) -> dict:
    """Program and map names as the generated skeleton declares them."""
    def block(kind: str, member: str) -> list:
        match = re.search(r"struct \{\s*((?:struct %s \*\w+;\s*)+)\} %s;" % (kind, member), text)
        return re.findall(r"\*(\w+);", match.group(1)) if match else []

    name = re.search(r"^struct (\w+) \{\s*struct bpf_object_skeleton \*skeleton;", text, re.M)
    maps = block("bpf_map", "maps")
    return {
        "object": name.group(1) if name else None,
        "programs": block("bpf_program", "progs"),
        "maps": [m for m in maps if not INTERNAL_MAP.match(m)],
        "internal_maps": [m for m in maps if INTERNAL_MAP.match(m)],
    }


def _read_json(path: str):
    import json
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


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
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Pipeline:
    def __init__(self, module, spec: dict, src: str, dest: str):
        self.module = module
        self.spec = spec
        self.src = os.path.abspath(src)
        self.dest = os.path.abspath(dest)
        self.workdir = os.path.normpath(os.path.join(self.src, spec["sources"]["workdir"]))
        self.outputs = spec["outputs"]

    # ----- inputs and manifest -------------------------------------------------
    def _check_sources(self) -> None:
        if not os.path.isdir(self.src):
            raise LqosError("src %s does not exist on the target." % self.src,
                            "sync the crate to the target first (role lqos.bpf.build does) or fix `src`.")
        if not os.path.isdir(self.workdir):
            raise LqosError("sources.workdir %s does not exist under src %s." % (self.spec["sources"]["workdir"], self.src),
                            "check that `src` is the crate root (e.g. .../src/rust/lqos_sys) for spec %r."
                            % self.spec["name"])
        for key in ("kern", "wrapper_c", "wrapper_h"):
            path = os.path.join(self.workdir, self.spec["sources"][key])
            if not os.path.isfile(path):
                raise LqosError("sources.%s %s is missing." % (key, path),
                                "check the spec's sources section against the crate.")

    def input_files(self) -> list:
        files = set()
        for root, dirs, names in os.walk(self.workdir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files.update(os.path.join(root, n) for n in names if n.endswith(SOURCE_SUFFIXES))
        for extra in self.spec["sources"]["inputs"]:
            path = os.path.normpath(os.path.join(self.workdir, extra))
            if os.path.isdir(path):
                for root, dirs, names in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    files.update(os.path.join(root, n) for n in names if not n.startswith("."))
            elif os.path.isfile(path):
                files.add(path)
            else:
                raise LqosError("sources.inputs entry %s does not exist." % path,
                                "remove it from the spec or fix the path (relative to sources.workdir).")
        for key in ("kern", "wrapper_c", "wrapper_h"):
            files.add(os.path.normpath(os.path.join(self.workdir, self.spec["sources"][key])))
        return sorted(files)

    def manifest(self) -> dict:
        self._check_sources()
        inputs = {os.path.relpath(p, self.src): sha256_file(p) for p in self.input_files()}
        tools = tool_versions(self.module, CHAIN_TOOLS, cache_path=TOOL_CACHE)
        missing = [name for name, info in tools.items() if not info["found"]]
        if missing:
            raise LqosError("build tool(s) not found in PATH: %s." % ", ".join(missing),
                            "apt-get install %s (lqos.bpf.toolchain_info lists every miss)."
                            % " ".join(sorted({tools[m]["package"] for m in missing})))
        build_spec = {k: self.spec[k] for k in ("sources", "outputs", "flags")}
        manifest = {
            "version": MANIFEST_VERSION,
            "spec_name": self.spec["name"],
            "inputs": inputs,
            "spec": sha256_bytes(canonical_json(build_spec).encode()),
            "flags": self.spec["flags"],
            "tools": {n: {"path": t["path"], "version": t["version"]} for n, t in tools.items()},
        }
        manifest["hash"] = sha256_bytes(canonical_json(manifest).encode())
        return manifest

    def link(self, name: str) -> str | None:
        path = os.path.join(self.dest, name)
        if not os.path.islink(path):
            return None
        target = os.path.realpath(path)
        return target if os.path.isdir(target) else None

    def read_build(self, build_dir: str | None) -> dict | None:
        if not build_dir:
            return None
        return _read_json(os.path.join(build_dir, MANIFEST))

    def verify_outputs(self, build_dir: str, recorded: dict) -> list:
        """Names of outputs that are missing or whose hash no longer matches."""
        bad = []
        for key, name in self.outputs.items():
            path = os.path.join(build_dir, name)
            want = recorded.get("outputs", {}).get(key, {}).get("sha256")
            if not os.path.isfile(path) or not want or sha256_file(path) != want:
                bad.append(name)
        return bad

    def plan(self, force: bool = False) -> dict:
        """What a build would do and why, without running any tool."""
        manifest = self.manifest()
        current_dir = self.link("current")
        current = self.read_build(current_dir)
        reasons, changed_inputs = [], []
        if force:
            reasons.append("forced rebuild (force=true)")
        if current is None:
            reasons.append("no previous build in %s" % self.dest)
        else:
            old = current["manifest"]
            for path in sorted(set(old["inputs"]) | set(manifest["inputs"])):
                before, after = old["inputs"].get(path), manifest["inputs"].get(path)
                if before != after:
                    changed_inputs.append({"path": path, "before": before, "after": after})
                    reasons.append("input %s: %s" % (path, "added" if before is None else
                                                     "removed" if after is None else "changed"))
            for name in sorted(set(old["tools"]) | set(manifest["tools"])):
                if old["tools"].get(name) != manifest["tools"].get(name):
                    reasons.append("tool %s changed: %s -> %s" % (
                        name, (old["tools"].get(name) or {}).get("version"), manifest["tools"][name]["version"]))
            if old["flags"] != manifest["flags"]:
                reasons.append("flags changed")
            elif old["spec"] != manifest["spec"]:
                reasons.append("spec sources/outputs changed")
            if old.get("hash") == manifest["hash"]:
                for name in self.verify_outputs(current_dir, current):
                    reasons.append("output %s missing or modified" % name)
            elif not reasons:
                reasons.append("build manifest format changed")
        reuse = None
        if reasons:
            candidate = os.path.join(self.dest, "builds", manifest["hash"][:16])
            recorded = self.read_build(candidate)
            if (not force and recorded and recorded["manifest"]["hash"] == manifest["hash"]
                    and not self.verify_outputs(candidate, recorded)):
                reuse = candidate
        return {"manifest": manifest, "reasons": reasons, "changed_inputs": changed_inputs,
                "current_dir": current_dir, "current": current, "reuse": reuse}

    # ----- the chain -----------------------------------------------------------
    def _run(self, step: str, argv: list, cwd: str, stderr_fatal: bool, timings: dict, warnings: list,
             stdout_to: str | None = None) -> None:
        started = time.monotonic()
        rc, out, err = self.module.run_command(argv, cwd=cwd)
        timings[step] = round(time.monotonic() - started, 4)
        cmd = shlex.join(argv)
        if rc != 0 or (stderr_fatal and err.strip()):
            why = "exited with %d" % rc if rc != 0 else "wrote to stderr (fatal, as in build.rs)"
            message = (err.strip() or out.strip() or "(no output)")
            first = _DIAGNOSTIC.search(err) if rc == 0 else None
            if first:  # a warning made fatal: name its file:line up front
                why += " at %s:%s (%s)" % (first.group(1), first.group(2), first.group(3).strip())
            raise LqosError("build step %s failed: %s %s in %s:\n%s" % (step, argv[0].rsplit("/", 1)[-1], why, cwd, message),
                            _STEP_FIX.get(step, "fix the error above and run again."),
                            step=step, cmd=cmd, rc=rc, stderr=err, stdout=out if stdout_to is None else "")
        # `ar r` announces "creating <archive>" on stderr; that is not a warning.
        warnings.extend("%s: %s" % (step, line) for line in err.strip().splitlines()
                        if line and not (step == "ar" and ": creating " in line))
        if stdout_to is not None:
            atomic_write(stdout_to, out)

    def _chain(self, out: str, tools: dict) -> tuple:
        spec, o, flags = self.spec, self.outputs, self.spec["flags"]
        timings: dict = {}
        warnings: list = []
        path = {k: os.path.join(out, v) for k, v in o.items()}
        kern = spec["sources"]["kern"]
        self._run("clang", [tools["clang"]] + flags["clang"] + ["-o", path["ir"], kern],
                  self.workdir, True, timings, warnings)
        self._run("llc", [tools["llc"]] + flags["llc"] + ["-o", path["object"], path["ir"]],
                  self.workdir, True, timings, warnings)
        self._run("skeleton", [tools["bpftool"], "gen", "skeleton", path["object"]],
                  self.workdir, False, timings, warnings, stdout_to=path["skeleton"])
        started = time.monotonic()
        for key in ("wrapper_h", "wrapper_c"):
            shutil.copyfile(os.path.join(self.workdir, spec["sources"][key]),
                            os.path.join(out, os.path.basename(spec["sources"][key])))
        timings["copy"] = round(time.monotonic() - started, 4)
        wrapper_h = os.path.join(out, os.path.basename(spec["sources"]["wrapper_h"]))

        def wrapper_and_archive():
            # build.rs checks this step's stderr with the same panicking helper as clang and llc.
            self._run("wrapper", [tools["clang"], "-c", spec["sources"]["wrapper_c"], "-I", out] + flags["wrapper"]
                      + ["-o", path["wrapper_object"]], self.workdir, True, timings, warnings)
            self._run("ar", [tools["ar"], "r", path["archive"], path["wrapper_object"]],
                      self.workdir, False, timings, warnings)

        def bindings():
            self._run("bindgen", [tools["bindgen"], wrapper_h, "-o", path["bindings"]] + flags["bindgen"]
                      + ["--", "-I", out] + flags["bindgen_clang"], self.workdir, False, timings, warnings)

        # wrapper.c and bindgen both need the skeleton, not each other: run them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(wrapper_and_archive), pool.submit(bindings)]
            errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc
        return timings, warnings

    def build(self, plan: dict, previous_dir: str | None) -> dict:
        manifest = plan["manifest"]
        build_id = manifest["hash"][:16]
        builds = os.path.join(self.dest, "builds")
        os.makedirs(builds, exist_ok=True)
        final = os.path.join(builds, build_id)
        timings, warnings, names = {}, [], None
        if plan["reuse"]:
            recorded = self.read_build(plan["reuse"])
            timings, warnings, names = {}, recorded.get("warnings", []), recorded.get("skeleton", {})
        else:
            staging = os.path.join(self.dest, ".staging-%d-%d" % (os.getpid(), time.monotonic_ns()))
            os.makedirs(staging)
            try:
                started = time.monotonic()
                tools = {n: t["path"] for n, t in manifest["tools"].items()}
                timings, warnings = self._chain(staging, tools)
                with open(os.path.join(staging, self.outputs["skeleton"])) as fh:
                    names = skeleton_names(fh.read())
                outputs = {}
                for key, name in self.outputs.items():
                    p = os.path.join(staging, name)
                    outputs[key] = {"name": name, "sha256": sha256_file(p), "size": os.path.getsize(p)}
                timings["total"] = round(time.monotonic() - started, 4)
                record = {"manifest": manifest, "outputs": outputs, "skeleton": names, "timings": timings,
                          "warnings": warnings, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                atomic_write(os.path.join(staging, MANIFEST), canonical_json(record))
                if os.path.isdir(final):
                    shutil.rmtree(final)
                os.rename(staging, final)
            finally:
                if os.path.isdir(staging):
                    shutil.rmtree(staging, ignore_errors=True)
        if previous_dir and previous_dir != final:
            atomic_symlink(os.path.relpath(previous_dir, self.dest), os.path.join(self.dest, "previous"))
        atomic_symlink(os.path.relpath(final, self.dest), os.path.join(self.dest, "current"))
        self.prune()
        return {"timings": timings, "tool_warnings": warnings, "skeleton": names}

    def prune(self) -> None:
        keep = {self.link(n) for n in ("current", "previous", "failed")}
        builds = os.path.join(self.dest, "builds")
        for name in os.listdir(builds):
            path = os.path.join(builds, name)
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def clean_staging(self) -> None:
        for name in os.listdir(self.dest):
            if name.startswith(".staging-"):
                shutil.rmtree(os.path.join(self.dest, name), ignore_errors=True)

    def rollback(self, check_mode: bool) -> dict:
        """Make the previous build current again; the build it replaces is kept as ``failed``."""
        previous, current = self.link("previous"), self.link("current")
        if not previous:
            return {"changed": False, "msg": "no previous build to roll back to in %s" % self.dest}
        if not check_mode:
            if current:
                atomic_symlink(os.path.relpath(current, self.dest), os.path.join(self.dest, "failed"))
            atomic_symlink(os.path.relpath(previous, self.dest), os.path.join(self.dest, "current"))
            os.unlink(os.path.join(self.dest, "previous"))
        return {"changed": True, "msg": "rolled back %s to %s" % (self.dest, os.path.basename(previous)),
                "rolled_back_from": current, "build_dir": previous}

    def describe(self, build_dir: str) -> dict:
        record = self.read_build(build_dir) or {}
        outputs = {k: {"path": os.path.join(build_dir, v["name"]), "sha256": v["sha256"], "size": v["size"]}
                   for k, v in record.get("outputs", {}).items()}
        skel = record.get("skeleton") or {}
        return {"build_dir": build_dir, "build_id": os.path.basename(build_dir), "outputs": outputs,
                "programs": skel.get("programs", []), "maps": skel.get("maps", []),
                "skeleton_object": skel.get("object")}


_STEP_FIX = {
    "clang": "fix the C error at the file:line above (warnings are errors: -Werror).",
    "llc": "fix the LLVM IR problem above; check that llc and clang come from the same LLVM.",
    "skeleton": "the BPF object is not valid for bpftool; check the llc step and the object file.",
    "wrapper": "fix wrapper.c against the generated skeleton (names in the skeleton come from the BPF source).",
    "ar": "check that binutils' ar is installed and the build folder is writable.",
    "bindgen": "fix wrapper.h or flags.bindgen / flags.bindgen_clang in the spec.",
}


def prepare_dest(dest: str) -> None:
    try:
        os.makedirs(dest, exist_ok=True)
        probe = os.path.join(dest, ".write-test-%d" % os.getpid())
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise LqosError("cannot write the build folder %s: %s." % (dest, exc.strerror),
                        "choose a writable `dest` or fix its permissions/mount.")


def run_pipeline(module, spec: dict, src: str, dest: str, force: bool, lock_timeout: float) -> dict:
    spec = apply_build_rs_flags(spec, src)  # derive.flags: the flags as build.rs passes them
    pipeline = Pipeline(module, spec, src, dest)
    if module.check_mode and not os.path.isdir(pipeline.dest):
        plan = {"reasons": ["no previous build in %s" % pipeline.dest], "changed_inputs": [],
                "manifest": pipeline.manifest(), "current_dir": None, "reuse": None}
        return _result(module, pipeline, plan, None)
    prepare_dest(pipeline.dest)
    with BuildLock(pipeline.dest, lock_timeout):
        if not module.check_mode:
            pipeline.clean_staging()
        plan = pipeline.plan(force)
        if not plan["reasons"] or module.check_mode:
            return _result(module, pipeline, plan, None)
        built = pipeline.build(plan, plan["current_dir"])
        return _result(module, pipeline, plan, built)


def _result(module, pipeline: Pipeline, plan: dict, built: dict | None) -> dict:
    changed = bool(plan["reasons"])
    result = {"changed": changed, "rebuild_reasons": plan["reasons"], "manifest_hash": plan["manifest"]["hash"],
              "build_root": pipeline.dest, "spec_name": pipeline.spec["name"], "src": pipeline.src,
              "reused_build": bool(plan["reuse"]), "flags": pipeline.spec["flags"],
              "flags_source": pipeline.spec.get("flags_source", "spec")}
    current = pipeline.link("current")
    if current:
        result.update(pipeline.describe(current))
        recorded = pipeline.read_build(current) or {}
        result["timings"] = recorded.get("timings", {}) if built is None else built["timings"]
        result["tool_warnings"] = recorded.get("warnings", []) if built is None else built["tool_warnings"]
    result["previous_build_dir"] = pipeline.link("previous")
    if module.check_mode and changed:
        result["msg"] = "would rebuild: " + "; ".join(plan["reasons"])
    if module._diff and plan["changed_inputs"]:
        result["diff"] = {
            "before_header": "inputs of the current build", "after_header": "inputs now",
            "before": "".join("%s %s\n" % (c["path"], c["before"]) for c in plan["changed_inputs"] if c["before"]),
            "after": "".join("%s %s\n" % (c["path"], c["after"]) for c in plan["changed_inputs"] if c["after"]),
        }
    elif module._diff and changed and plan["current_dir"] is None:
        result["diff"] = {"before": "", "after": "".join("%s %s\n" % kv for kv in
                                                         sorted(plan["manifest"]["inputs"].items()))}
    return result
