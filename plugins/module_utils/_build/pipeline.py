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

Files outside the crate that the compile reads (``linux/bpf.h`` from
linux-libc-dev, ``bpf/bpf_helpers.h`` from libbpf-dev, a header reached through
an ``-I`` flag) are not known before the first build: clang (``-MD -MF``) and
bindgen (``--depfile``) write every file they really read, the build record
keeps each one's hash (``deps``), and the plan re-hashes them, so upgrading one
rebuilds with that file named as the reason.

The layout of ``dest`` and how a build is published: ``_build/builds.py``.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from . import builds as _builds
from .buildrs import apply_build_rs_flags
from .._common import (
    atomic_write, canonical_json, ENV_FIXES, LqosError, os_fault, run_step, sha256_bytes, sha256_file,
)
from .toolchain import TOOL_CACHE, tool_versions

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: the build record keeps the hash of every file the compile read
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


def parse_depfile(text: str, cwd: str) -> list:
    """The files a make-style dependency file (clang -MD, bindgen --depfile) lists, as absolute paths."""
    text = text.replace("\\\n", " ")
    deps = []
    for line in text.splitlines():
        head, sep, tail = line.partition(": ")
        if not sep:
            continue
        for word in re.split(r"(?<!\\)\s+", tail.strip()):
            if word:
                path = word.replace("\\ ", " ").replace("$$", "$")
                deps.append(os.path.normpath(os.path.join(cwd, path)))
    return deps


def changed_deps(recorded: dict) -> list:
    """[(path, 'changed'|'removed')] for the recorded dependencies whose content is no longer the same."""
    changed = []
    for path, digest in sorted(recorded.items()):
        try:
            now = sha256_file(path)
        except OSError:
            now = None
        if now != digest:
            changed.append((path, "removed" if now is None else "changed"))
    return changed


def _read_json(path: str):
    import json
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


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
            if os.path.lexists(self.src):
                raise LqosError("src %s is a file, not the crate folder." % self.src,
                                "give the crate root (the folder holding src/bpf, e.g. .../src/rust/lqos_sys).")
            raise LqosError("src %s does not exist on the target." % self.src,
                            "sync the crate to the target first (role lqos.bpf.build does) or fix `src`.")
        if not os.path.isdir(self.workdir):
            what = "is a file, not a folder" if os.path.lexists(self.workdir) else "does not exist"
            raise LqosError("sources.workdir %s %s under src %s." % (self.spec["sources"]["workdir"], what, self.src),
                            "check that `src` is the crate root (e.g. .../src/rust/lqos_sys) for spec %r."
                            % self.spec["name"])
        for key in ("kern", "wrapper_c", "wrapper_h"):
            path = os.path.join(self.workdir, self.spec["sources"][key])
            if not os.path.isfile(path):
                what = "is a folder, not a file" if os.path.isdir(path) else "is missing"
                raise LqosError("sources.%s %s %s." % (key, path, what),
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
        for path in files:
            _require_utf8_name(self.src, path)
        return sorted(files)

    def manifest(self) -> dict:
        self._check_sources()
        inputs = {os.path.relpath(p, self.src): sha256_file(p) for p in self.input_files()}
        # The version cache is written when it misses: check mode probes without it.
        tools = tool_versions(self.module, CHAIN_TOOLS, cache_path=None if self.module.check_mode else TOOL_CACHE)
        missing = [name for name, info in tools.items() if not info["found"]]
        if missing:
            raise LqosError("build tool(s) not found in PATH: %s." % ", ".join(missing),
                            "apt-get install %s (lqos.bpf.toolchain_info lists every miss)."
                            % " ".join(sorted({tools[m]["package"] for m in missing})))
        # A distribution wrapper without its binary would fail the first step that runs it, with its own text.
        broken = [name for name, info in tools.items() if info.get("wrapper")]
        if broken:
            raise LqosError("build tool(s) that cannot run: %s." % "; ".join(tools[n]["problem"] for n in broken),
                            "; ".join(tools[n]["fix"] for n in broken) + ".")
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
        return _builds.link(self.dest, name)

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

    def plan(self, force: bool = False, manifest: dict | None = None) -> dict:
        """What a build would do and why, without running any tool."""
        manifest = manifest or self.manifest()
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
                for path, how in changed_deps(current.get("deps") or {}):
                    changed_inputs.append({"path": path, "before": current["deps"][path],
                                           "after": None if how == "removed" else sha256_file(path)})
                    reasons.append("dependency %s (read by the compile, outside the crate): %s" % (path, how))
                for name in self.verify_outputs(current_dir, current):
                    reasons.append("output %s missing or modified" % name)
            elif not reasons:
                reasons.append("build manifest format changed")
        reuse = None
        if reasons and not force:
            for candidate in _builds.builds_of(self.dest, manifest["hash"][:16]):
                recorded = self.read_build(candidate)
                if not recorded or recorded["manifest"]["hash"] != manifest["hash"]:
                    continue
                if not self.verify_outputs(candidate, recorded) and not changed_deps(recorded.get("deps") or {}):
                    reuse = candidate
                    break
        return {"manifest": manifest, "reasons": reasons, "changed_inputs": changed_inputs,
                "current_dir": current_dir, "current": current, "reuse": reuse}

    # ----- the chain -----------------------------------------------------------
    def _run(self, step: str, argv: list, cwd: str, stderr_fatal: bool, timings: dict, warnings: list,
             stdout_to: str | None = None, output: str | None = None) -> None:
        """Run one step; it fails on a non-zero exit, on stderr when ``stderr_fatal``, and when its
        ``output`` file is missing, empty or possibly truncated because the build folder filled up."""
        started = time.monotonic()
        rc, out, err = run_step(self.module, "build step " + step, argv, _STEP_E2BIG.get(step, _STEP_FIX.get(step, "")), cwd=cwd)
        timings[step] = round(time.monotonic() - started, 4)
        cmd = shlex.join(argv)
        tool = argv[0].rsplit("/", 1)[-1]
        details = dict(step=step, cmd=cmd, rc=rc, stderr=err, stdout=out if stdout_to is None else "")
        if rc != 0 or (stderr_fatal and err.strip()):
            why = "exited with %d" % rc if rc != 0 else "wrote to stderr (fatal, as in build.rs)"
            message = (err.strip() or out.strip() or "(no output)")
            first = _DIAGNOSTIC.search(err) if rc == 0 else None
            if first:  # a warning made fatal: name its file:line up front
                why += " at %s:%s (%s)" % (first.group(1), first.group(2), first.group(3).strip())
            fault = environment_fault(message) or (errno.ENOSPC if output and _fs_full(output) else None)
            fix = _STEP_FIX.get(step, "fix the error above and run again.")
            if fault:
                why += ", because the filesystem of the build folder %s %s (%s)" % (
                    self.dest, _FAULT_WORDS[fault], errno.errorcode[fault])
                fix = ENV_FIXES[fault].format(path=self.dest)
            raise LqosError("build step %s failed: %s %s in %s:\n%s" % (step, tool, why, cwd, message), fix, **details)
        if output is not None:
            if _fs_full(output):
                raise LqosError("build step %s failed: %s exited with 0, but the filesystem of the build folder %s is "
                                "full (ENOSPC), so %s may be truncated."
                                % (step, tool, self.dest, os.path.basename(output)),
                                ENV_FIXES[errno.ENOSPC].format(path=self.dest), **details)
            if not os.path.isfile(output) or not os.path.getsize(output):
                raise LqosError("build step %s failed: %s exited with 0 but left %s %s." % (
                    step, tool, output, "empty" if os.path.isfile(output) else "unwritten"),
                    _STEP_FIX.get(step, "fix the error above and run again."), **details)
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
        depfile = {step: os.path.join(out, ".%s.d" % step) for step in ("clang", "wrapper", "bindgen")}
        kern = spec["sources"]["kern"]
        self._run("clang", [tools["clang"]] + flags["clang"] + ["-MD", "-MF", depfile["clang"], "-o", path["ir"], kern],
                  self.workdir, True, timings, warnings, output=path["ir"])
        self._run("llc", [tools["llc"]] + flags["llc"] + ["-o", path["object"], path["ir"]],
                  self.workdir, True, timings, warnings, output=path["object"])
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
            argv = [tools["clang"], "-c", spec["sources"]["wrapper_c"], "-I", out, *flags["wrapper"],
                    "-MD", "-MF", depfile["wrapper"], "-o", path["wrapper_object"]]
            self._run("wrapper", argv, self.workdir, True, timings, warnings, output=path["wrapper_object"])
            self._run("ar", [tools["ar"], "r", path["archive"], path["wrapper_object"]],
                      self.workdir, False, timings, warnings, output=path["archive"])

        def bindings():
            argv = [tools["bindgen"], wrapper_h, "-o", path["bindings"], "--depfile", depfile["bindgen"],
                    *flags["bindgen"], "--", "-I", out, *flags["bindgen_clang"]]
            self._run("bindgen", argv, self.workdir, False, timings, warnings, output=path["bindings"])

        # wrapper.c and bindgen both need the skeleton, not each other: run them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(wrapper_and_archive), pool.submit(bindings)]
            errors = [f.exception() for f in futures]
        # When both sides failed, report the step that exited non-zero before one that only found the disk full.
        failures = sorted((e for e in errors if e is not None),
                          key=lambda e: 0 if getattr(e, "details", {}).get("rc") else 1)
        if failures:
            raise failures[0]
        return timings, warnings, self._read_deps(out, depfile.values())

    def _read_deps(self, out: str, depfiles) -> dict:
        """{path: sha256} of every file the compile read that the manifest does not already hash (files of
        the crate are inputs; files of the staging folder are outputs). The depfiles are removed."""
        known = set(self.input_files())
        deps = set()
        for name in depfiles:
            with open(name) as fh:
                deps.update(parse_depfile(fh.read(), self.workdir))
            os.unlink(name)
        return {p: sha256_file(p) for p in sorted(deps)
                if p not in known and not p.startswith(out + os.sep) and os.path.isfile(p)}

    def build(self, plan: dict, previous_dir: str | None) -> dict:
        """Run the chain into a staging folder (unless an intact build is reused) and publish it."""
        manifest = plan["manifest"]
        timings, warnings, names, staging = {}, [], None, None
        if plan["reuse"]:
            recorded = self.read_build(plan["reuse"])
            warnings, names = recorded.get("warnings", []), recorded.get("skeleton", {})
        try:
            if not plan["reuse"]:
                staging = _builds.new_staging(self.dest)
                timings, warnings, names = self._build_into(staging, manifest)
            _builds.publish(self.dest, staging, manifest["hash"][:16], plan["reuse"], previous_dir)
        except OSError as exc:
            # Every file of a build is under dest (staging folders vanish): name dest, where space is freed.
            raise os_fault(exc, "writing the build into %s failed, nothing was published" % self.dest, self.dest)
        finally:
            if staging and os.path.isdir(staging):
                shutil.rmtree(staging, ignore_errors=True)
        return {"timings": timings, "tool_warnings": warnings, "skeleton": names}

    def _build_into(self, staging: str, manifest: dict) -> tuple:
        started = time.monotonic()
        tools = {n: t["path"] for n, t in manifest["tools"].items()}
        timings, warnings, deps = self._chain(staging, tools)
        with open(os.path.join(staging, self.outputs["skeleton"])) as fh:
            names = skeleton_names(fh.read())
        outputs = {}
        for key, name in self.outputs.items():
            p = os.path.join(staging, name)
            outputs[key] = {"name": name, "sha256": sha256_file(p), "size": os.path.getsize(p)}
        timings["total"] = round(time.monotonic() - started, 4)
        record = {"manifest": manifest, "outputs": outputs, "skeleton": names, "timings": timings,
                  "warnings": warnings, "deps": deps, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(os.path.join(staging, MANIFEST), canonical_json(record))
        return timings, warnings, names

    def rollback(self, check_mode: bool, lock_timeout: float = 300) -> dict:
        """Make the previous build current again; the build it replaces is kept as ``failed``.
        Holds the build lock (never created in check mode) so no build publishes meanwhile."""
        _builds.check_dest(self.dest)
        if check_mode or not os.path.isdir(self.dest):
            return _builds.rollback(self.dest, check_mode)
        with _builds.BuildLock(self.dest, lock_timeout):
            return _builds.rollback(self.dest, False)

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


# A step the kernel cannot start because its argument list is too long (E2BIG): the spec's flags of that step.
_STEP_E2BIG = {
    step: "shorten flags.%s in the spec (the limit counts every argument and the environment): put -D definitions "
          "in a header the source includes, fold -I folders into fewer ones." % key
    for step, key in (("clang", "clang"), ("llc", "llc"), ("wrapper", "wrapper"),
                      ("bindgen", "bindgen / flags.bindgen_clang"))
}


_FAULT_WORDS = {errno.ENOSPC: "is full", errno.EDQUOT: "is over quota", errno.EROFS: "is read-only"}
_FAULTS = {os.strerror(e): e for e in _FAULT_WORDS}


def _fs_full(path: str) -> bool:
    """True when no block is left for this process on the filesystem holding ``path``'s folder."""
    try:
        st = os.statvfs(os.path.dirname(path))
    except OSError:
        return False
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0


def environment_fault(text: str) -> int | None:
    """The errno of a full, over-quota or read-only filesystem named in a tool's output (C locale), if any."""
    for words, num in _FAULTS.items():
        if words in text:
            return num
    return None


def _require_utf8_name(src: str, path: str) -> None:
    """File names travel back to the controller as JSON text: refuse one that is not UTF-8 before anything runs."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        rel = os.fsencode(os.path.relpath(path, src))
        raise LqosError("the crate holds a file whose name is not valid UTF-8: %s under %s; nothing was built."
                        % (repr(rel)[2:-1], src),
                        "rename or remove it (its bytes are shown with \\x escapes); file names must be UTF-8.")


def run_pipeline(module, spec: dict, src: str, dest: str, force: bool, lock_timeout: float) -> dict:
    """Plan and, unless nothing changed or in check mode, build and publish.

    Check mode reads ``dest`` only: no lock file, no write probe, no staging.
    """
    spec = apply_build_rs_flags(spec, src)  # derive.flags: the flags as build.rs passes them
    pipeline = Pipeline(module, spec, src, dest)
    _builds.check_dest(pipeline.dest)
    # Every input is read (and every bad one refused) before dest is touched.
    manifest = pipeline.manifest()
    if module.check_mode:
        if not os.path.isdir(pipeline.dest):
            plan = {"reasons": ["no previous build in %s" % pipeline.dest], "changed_inputs": [],
                    "manifest": manifest, "current_dir": None, "reuse": None}
        else:
            plan = pipeline.plan(force, manifest)
        return _result(module, pipeline, plan, None)
    _builds.prepare_dest(pipeline.dest)
    with _builds.BuildLock(pipeline.dest, lock_timeout):
        _builds.clean_staging(pipeline.dest)
        _builds.prune(pipeline.dest)
        plan = pipeline.plan(force, manifest)
        if not plan["reasons"]:
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
