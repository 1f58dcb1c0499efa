# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Preflight: is this host able to build, load and attach the pipeline?

Every check yields one row: what was looked at, what was found, and - when it
is not good enough - the exact fix (Debian/Ubuntu package, mount command, or
the constant to change)."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from .._common import (
    atomic_write,
    count_cpu_list,
    LqosError,
    run_literal,
)
from .._bpffs import bpffs_mount_fix, is_bpffs
from .._kernel.programs import CAP_BITS, kernel_config
from .._spec import header_constants

# name -> (version argv, version regex, Debian package, default minimum)
TOOLS = {
    "clang": (["--version"], r"clang version (\d+(?:\.\d+)+)", "clang", "11.0"),
    "llc": (["--version"], r"LLVM version (\d+(?:\.\d+)+)", "llvm", "11.0"),
    "bpftool": (["version"], r"bpftool v(\d+(?:\.\d+)+)", "bpftool", "5.6"),
    "bindgen": (["--version"], r"bindgen (\d+(?:\.\d+)+)", "bindgen", "0.59"),
    "ar": (["--version"], r"GNU ar .*?(\d+\.\d+(?:\.\d+)?)", "binutils", "2.30"),
}
LIBBPF_MINIMUM = "1.0"
KERNEL_MINIMUM = "5.10"
CAPS = CAP_BITS


def version_tuple(text: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:4])


def meets(version: str | None, minimum: str | None) -> bool:
    if not minimum:
        return True
    if not version:
        return False
    return version_tuple(version) >= version_tuple(minimum)


_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def check_minimums(minimums: dict, given: dict) -> None:
    """Refuse a minimum version that does not parse (LqosError naming the tool, the value and where it was
    given: the module's ``minimum_versions`` or the spec's ``toolchain.minimum_versions``). A version is 1 to 4
    dot-separated numbers, as `version_tuple` compares them ("14", "5.10", "0.59.2")."""
    bad = sorted(name for name, value in minimums.items() if not _VERSION.match(str(value).strip()))
    if bad:
        source = {name: "minimum_versions" if name in given else "the spec's toolchain.minimum_versions"
                  for name in bad}
        where = ["%s: %r (%s)" % (name, minimums[name], source[name]) for name in bad]
        raise LqosError("minimum version(s) that do not parse as a version: %s." % ", ".join(where),
                        "give dot-separated numbers, e.g. clang: \"14\" or kernel: \"5.10\".")


def _stat_key(path: str) -> str:
    st = os.stat(path)
    return "%s:%d:%d" % (path, st.st_mtime_ns, st.st_size)


TOOL_CACHE = "/var/cache/lqos-bpf/tool-versions.json"


def tool_versions(module, names=None, cache_path: str | None = None, path_prefix: str | None = None) -> dict:
    """Find each tool and its version. ``cache_path`` keeps versions keyed by the
    binary's real path, mtime and size, so an unchanged toolchain is never run
    again; cache misses are probed side by side."""
    cache: dict = {}
    if cache_path and os.path.isfile(cache_path):
        try:
            with open(cache_path) as fh:
                cache = json.load(fh)
        except (OSError, ValueError):
            cache = {}
    found, probes = {}, {}
    for name in names or TOOLS:
        package = TOOLS[name][2]
        path = module.get_bin_path(name, opt_dirs=[path_prefix] if path_prefix else [])
        if not path:
            found[name] = {"found": False, "path": None, "version": None, "package": package}
            continue
        key = _stat_key(os.path.realpath(path))
        found[name] = {"found": True, "path": path, "version": cache.get(key), "package": package}
        if found[name]["version"] is None:
            probes[name] = key

    def probe(name):
        argv, regex = TOOLS[name][0], TOOLS[name][1]
        rc, out, err = run_literal(module, [found[name]["path"]] + argv)
        match = re.search(regex, out + err)
        return rc, match.group(1) if match else None, (err.strip() or out.strip())

    if probes:
        with ThreadPoolExecutor(max_workers=len(probes)) as pool:
            results = dict(zip(probes, pool.map(probe, probes)))
        for name, (rc, version, output) in results.items():
            found[name]["version"] = version
            if version is None:
                found[name].update(no_version_problem(name, found[name]["path"], rc, output))
            if rc == 0 and version:
                cache[probes[name]] = version
        if cache_path and not os.environ.get("LQOS_BPF_READ_ONLY_CACHES"):
            try:
                os.makedirs(os.path.dirname(cache_path), exist_ok=True)
                atomic_write(cache_path, json.dumps(cache, sort_keys=True))
            except OSError:
                pass  # a cache that cannot be written only costs time
    return found


# Ubuntu's /usr/sbin/bpftool (linux-tools-common) is a script that runs the bpftool of the running kernel's
# linux-tools package; without that package it prints this and exits 2.
_WRAPPER_MISS = re.compile(r"(\S+) not found for kernel (\S+)")


def wrapper_fix(name: str, release: str | None = None) -> str:
    """How to get a real ``name`` (bpftool) for the running kernel (``release``: ``uname -r``), by distribution:
    the package that provides it."""
    release = release or os.uname().release
    return ("install the package that provides %s for kernel %s: on Ubuntu linux-tools-%s (apt-get install "
            "linux-tools-$(uname -r)) or linux-tools-generic to follow the kernel; on Debian the %s package "
            "(apt-get install %s)" % (name, release, release, TOOLS[name][2], TOOLS[name][2]))


def no_version_problem(name: str, path: str, rc: int, output: str) -> dict:
    """``problem`` and ``fix`` for a tool that printed no version: a distribution wrapper that found no binary for
    this kernel (``wrapper: true``), or a tool that failed or printed something else (its exit code and first line)."""
    miss = _WRAPPER_MISS.search(output)
    if miss and miss.group(1).endswith(name):
        return {"wrapper": True, "fix": wrapper_fix(name),
                "problem": "%s at %s is a distribution wrapper that found no %s for this kernel (%s): %s not found "
                           "for kernel %s" % (name, path, name, miss.group(2), name, miss.group(2))}
    first = output.splitlines()[0] if output else "no output"
    fix = "check the %s at %s (run it with %s) or reinstall the %s package" % (
        name, path, " ".join(TOOLS[name][0]), TOOLS[name][2])
    return {"wrapper": False, "fix": fix,
            "problem": "%s at %s printed no version (exit code %d: %s)" % (name, path, rc, first[:200])}


def libbpf_status() -> dict:
    """libbpf headers (libbpf-dev) and shared library (libbpf1), with its version."""
    headers = [h for h in ("/usr/include/bpf/libbpf.h", "/usr/include/bpf/bpf_helpers.h") if os.path.isfile(h)]
    status = {"headers": len(headers) == 2, "header_path": "/usr/include/bpf" if headers else None,
              "library": False, "version": None, "cffi": False, "error": None}
    try:
        from .._kernel import libbpf as _libbpf
    except ImportError as exc:  # pragma: no cover - shipped with the collection
        status["error"] = str(exc)
        return status
    status["cffi"] = bool(getattr(_libbpf, "HAS_CFFI", False))
    if not status["cffi"]:
        status["error"] = "python3-cffi is not installed"
        return status
    try:
        status["version"] = _libbpf.libbpf_version()
        status["library"] = True
    except Exception as exc:  # LibbpfError: reported, not raised
        status["error"] = getattr(exc, "msg", str(exc))
    return status


def effective_caps(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as fh:
        match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", fh.read(), re.M)
    return int(match.group(1), 16) if match else 0


def probe_prog_types() -> dict | None:
    """Ask the running kernel (through libbpf) whether it loads XDP and TC programs."""
    try:
        from .._kernel import libbpf as _libbpf
        probe = getattr(_libbpf, "probe_prog_type", None)
        if probe is None:
            return None
        return {"xdp": probe("xdp"), "tc": probe("sched_cls")}
    except Exception:  # the probe is a best effort; config flags are the fallback
        return None


def cpu_map_prediction(spec: dict | None, src: str | None, possible: int, nr_cpus: int | None = None) -> list:
    """For every cpu-sized map: the constant's value versus the kernel's limits.

    The kernel refuses a cpumap larger than its build-time NR_CPUS with E2BIG
    (read from the kernel config when there is one; otherwise the possible-CPU
    count is the safe bound). Slots beyond the possible CPUs are never used."""
    rows = []
    if not spec or not src:
        return rows
    workdir = os.path.join(src, spec["sources"]["workdir"])
    for item in spec["cpu_sized_maps"]:
        header = os.path.join(workdir, item["header"])
        value = None
        if os.path.isfile(header):
            with open(header, errors="replace") as fh:
                value = header_constants(fh.read()).get(item["constant"])
        limit = nr_cpus if nr_cpus else possible
        rows.append({"map": item["map"], "constant": item["constant"], "header": header,
                     "max_entries": value, "possible_cpus": possible, "nr_cpus": nr_cpus,
                     "e2big": value is not None and value > limit,
                     "oversized": value is not None and value > possible})
    return rows


def _check(name, ok, message, fix=None, required=True, **extra):
    row = {"name": name, "ok": bool(ok), "required": required, "message": message, "fix": None if ok else fix}
    row.update(extra)
    return row


def object_checks(spec: dict | None, obj_path: str, possible: int) -> tuple:
    """Per-program and per-map-type rows for a built object: every program is
    trial-loaded alone (nothing pinned or attached) and every map type probed.

    Returns (checks, programs, map_types): a required program or an unsupported
    map type that fails is a required check; an optional program that fails is
    a warning (the loader leaves it out). Raises LqosError when the object is
    missing or not a BPF object."""
    from .._kernel import objects as _objects
    from .._kernel.libbpf import LibbpfError
    from .._kernel import verifier as V
    from .._kernel.programs import feature_of, kprobe_target, program_roles

    if not os.path.isfile(obj_path):
        raise LqosError("BPF object %s does not exist." % obj_path,
                        "build it first with lqos.bpf.pipeline, or point the object option at the built .o file.")
    resize = {item["map"]: possible for item in (spec or {}).get("cpu_sized_maps") or []}
    try:
        info = _objects.object_info(obj_path)
        rows = _objects.probe_programs(obj_path, resize=resize)
        map_types = _objects.probe_map_types(m["type_name"] for m in info["maps"])
    except LibbpfError as exc:
        raise LqosError("probing %s failed: %s." % (obj_path, exc.msg.rstrip(".")),
                        "check that it is a BPF object built by lqos.bpf.pipeline.")
    roles = program_roles(spec, info["programs"])
    checks = []
    for row in rows:
        row["role"] = roles.get(row["name"], "optional")
        row["feature"] = feature_of(row["section"])
        if row["role"] == "disabled":
            row["verifier"] = V.not_loaded(V.LEFT_OUT, (row.get("verifier") or {}).get("kernel"))
            continue
        required = row["role"] == "required"
        # lqos.bpf.attach loads an optional kprobe only when asked (its kprobes option): one this kernel refuses
        # is a fact to know, not a warning on every run (asking for it fails with this reason).
        when_asked = not required and kprobe_target(row["section"]) is not None
        if row["loadable"]:
            msg = "program %s (SEC(\"%s\"), %s) loads on this kernel" % (row["name"], row["section"], row["role"])
        else:
            msg = "%s program %s cannot load here (%s): %s" % (row["role"], row["name"], row["class"], row["reason"])
            if when_asked:
                msg += "; nothing loads it unless asked (lqos.bpf.attach kprobes), and asking fails with this reason"
            elif not required:
                msg += "; it will be left out, losing %s" % row["feature"]
        checks.append(_check("program:" + row["name"], row["loadable"], msg, row["fix"], required=required,
                             program=row["name"], role=row["role"], refusal=row["class"], when_asked=when_asked))
    for tname, ok in sorted(map_types.items()):
        text = "%s maps %s (libbpf probe)" % (tname, "supported" if ok else "not supported")
        checks.append(_check("map-type:" + tname, ok, text, "boot a kernel that supports %s maps" % tname,
                             map_type=tname))
    return checks, rows, map_types


def _split(checks: list) -> tuple:
    """``(problems, warnings)`` of a list of check rows: the required checks that failed, and the optional ones
    that failed (a program nobody asked for, ``when_asked``, is neither)."""
    problems = [c for c in checks if not c["ok"] and c["required"]]
    warnings = [c for c in checks if not c["ok"] and not c["required"] and not c.get("when_asked")]
    return problems, warnings


def preflight(module, pin_root: str, minimums: dict, spec: dict | None = None, src: str | None = None,
              obj_path: str | None = None) -> dict:
    checks = []
    tools = tool_versions(module, cache_path=TOOL_CACHE)
    for name, info in tools.items():
        minimum = minimums.get(name, TOOLS[name][3])
        info["minimum"] = minimum
        info["meets_minimum"] = meets(info["version"], minimum)
        if not info["found"]:
            checks.append(_check(name, False, "%s not found in PATH" % name,
                                 "apt-get install %s" % info["package"], tool=name))
        elif info.get("problem"):
            checks.append(_check(name, False, info["problem"], info["fix"], tool=name))
        elif not info["meets_minimum"]:
            checks.append(_check(name, False, "%s %s is older than %s" % (name, info["version"], minimum),
                                 "upgrade the %s package (or lower toolchain.minimum_versions.%s in the spec)"
                                 % (info["package"], name), tool=name))
        else:
            checks.append(_check(name, True, "%s %s at %s" % (name, info["version"], info["path"]), tool=name))

    lib = libbpf_status()
    lib_min = minimums.get("libbpf", LIBBPF_MINIMUM)
    lib["minimum"] = lib_min
    checks.append(_check("libbpf-headers", lib["headers"], "libbpf headers in /usr/include/bpf"
                         if lib["headers"] else "libbpf headers (bpf/libbpf.h, bpf/bpf_helpers.h) not found",
                         "apt-get install libbpf-dev"))
    checks.append(_check("python3-cffi", lib["cffi"], "python cffi importable" if lib["cffi"]
                         else "python cffi is not importable by the module's interpreter",
                         "apt-get install python3-cffi"))
    if lib["cffi"]:
        ok = lib["library"] and meets(lib["version"], lib_min)
        msg = ("libbpf %s" % lib["version"]) if lib["library"] else (lib["error"] or "libbpf.so.1 not loadable")
        if lib["library"] and not ok:
            msg = "libbpf %s is older than %s" % (lib["version"], lib_min)
        checks.append(_check("libbpf", ok, msg, "apt-get install libbpf1 (libbpf >= %s)" % lib_min))
    asm_ok = os.path.isfile("/usr/include/asm/types.h") or any(
        f.startswith("-I/usr/include/") and f.endswith("-linux-gnu") for f in (spec or {}).get("flags", {}).get("clang", []))
    checks.append(_check("asm-headers", asm_ok, "asm/types.h reachable for -target bpf" if asm_ok
                         else "asm/types.h not on clang's BPF include path: compiling <linux/bpf.h> fails",
                         "apt-get install gcc-multilib (or add -I/usr/include/%s-linux-gnu to flags.clang)"
                         % os.uname().machine))

    release = os.uname().release
    kmin = minimums.get("kernel", KERNEL_MINIMUM)
    kernel = {"release": release, "minimum": kmin, "meets_minimum": meets(release, kmin)}
    checks.append(_check("kernel", kernel["meets_minimum"], "kernel %s" % release,
                         "boot a kernel >= %s" % kmin))
    kernel["btf"] = os.path.isfile("/sys/kernel/btf/vmlinux")
    checks.append(_check("btf", kernel["btf"], "kernel BTF at /sys/kernel/btf/vmlinux" if kernel["btf"]
                         else "/sys/kernel/btf/vmlinux is missing", "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"))

    mounted = os.path.isdir(pin_root) and is_bpffs(pin_root)   # statfs of a pin also says bpffs
    with open("/proc/filesystems") as fh:
        mountable = "\tbpf\n" in fh.read()
    kernel["bpffs"] = {"pin_root": pin_root, "mounted": mounted, "mountable": mountable}
    if os.path.lexists(pin_root) and not os.path.isdir(pin_root):
        checks.append(_check("bpffs", False, "pin_root %s is a %s, not a folder" % (
            pin_root, "pinned BPF object" if is_bpffs(pin_root) else "file"),
            "set pin_root to the bpffs folder that holds it (e.g. %s)" % (os.path.dirname(pin_root) or "/")))
    else:
        fix = bpffs_mount_fix(pin_root)
        bad = not mounted and not fix.startswith("mount bpffs there")
        if bad:
            # Never a place to mount one: a check of its own, which ignore: [bpffs] (the role then mounts) does
            # not skip, so no role mounts a bpffs over / or a system folder.
            kernel["bpffs"]["mount_here"] = False
            checks.append(_check("pin_root", False, "pin_root %s is not a bpffs and no place to mount one" % pin_root,
                                 fix))
        checks.append(_check("bpffs", mounted,
                             "bpffs mounted at %s" % pin_root if mounted else
                             ("bpffs not mounted at %s (the kernel supports it)" % pin_root if mountable
                              else "the kernel has no bpf filesystem"),
                             "mkdir -p %s && mount -t bpf bpf %s" % (pin_root, pin_root) if mountable and not bad
                             else fix if mountable
                             else "boot a kernel with CONFIG_BPF_SYSCALL=y"))

    caps = effective_caps()
    have = {name: bool(caps & (1 << bit)) for name, bit in CAPS.items()}
    kernel["capabilities"] = have
    bpf_ok = have["CAP_SYS_ADMIN"] or have["CAP_BPF"]
    cap_ok = bpf_ok and have["CAP_NET_ADMIN"]
    checks.append(_check("capabilities", cap_ok,
                         "running as uid %d with CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN" % os.geteuid() if cap_ok
                         else "missing %s" % ", ".join(n for n in ("CAP_BPF", "CAP_NET_ADMIN")
                                                       if not (have[n] or (n == "CAP_BPF" and have["CAP_SYS_ADMIN"]))),
                         "run the task as root (become: true) or grant CAP_BPF and CAP_NET_ADMIN"))

    config = kernel_config(release)
    probed = probe_prog_types()
    for hook, prog_type, options in (("xdp", "xdp", ("CONFIG_BPF_SYSCALL",)),
                                     ("tc", "sched_cls", ("CONFIG_NET_CLS_BPF", "CONFIG_NET_SCH_INGRESS"))):
        if probed is not None:
            ok, how = probed[hook], "probed through libbpf"
        elif config is not None:
            ok, how = all(config.get(o) in ("y", "m") for o in options), "from the kernel config"
        else:
            ok, how = True, "assumed (no kernel config and no libbpf probe)"
        kernel[hook] = ok
        checks.append(_check(hook, ok, "%s programs supported (%s)" % (prog_type, how) if ok
                             else "%s programs not supported (%s)" % (prog_type, how),
                             "boot a kernel with %s" % " and ".join("%s=y" % o for o in options)))

    with open("/sys/devices/system/cpu/possible") as fh:
        possible = count_cpu_list(fh.read())
    kernel["possible_cpus"] = possible
    nr_cpus = int(config["CONFIG_NR_CPUS"]) if config and config.get("CONFIG_NR_CPUS", "").isdigit() else None
    kernel["nr_cpus"] = nr_cpus
    for row in cpu_map_prediction(spec, src, possible, nr_cpus):
        if row["max_entries"] is None:
            checks.append(_check("cpu-map:" + row["map"], False,
                                 "cannot read %s from %s" % (row["constant"], row["header"]),
                                 "check spec cpu_sized_maps and src", required=False, **row))
        elif row["e2big"]:
            checks.append(_check(
                "cpu-map:" + row["map"], False,
                "%s has max_entries %s=%d but the kernel allows %d (%s): a plain load fails with E2BIG"
                % (row["map"], row["constant"], row["max_entries"], nr_cpus or possible,
                   "CONFIG_NR_CPUS" if nr_cpus else "possible CPUs; kernel config not found"),
                "lqos.bpf.attach resizes it to %d before load (spec cpu_sized_maps); for other loaders set "
                "%s to %d in %s" % (possible, row["constant"], possible, row["header"]),
                required=False, **row))
        else:
            checks.append(_check("cpu-map:" + row["map"], True, "%s max_entries %d <= %d possible CPUs"
                                 % (row["map"], row["max_entries"], possible), required=False, **row))

    programs, map_types = None, None
    if obj_path:
        rows, programs, map_types = object_checks(spec, obj_path, possible)
        checks.extend(rows)

    problems, warnings = _split(checks)
    return {"toolchain": tools, "libbpf": lib, "kernel": kernel, "checks": checks, "programs": programs,
            "verifier_headroom": None if programs is None else headroom_table(programs), "map_types": map_types,
            "problems": problems, "warnings_found": warnings, "ok": not problems}


def object_preflight(spec: dict | None, obj_path: str) -> dict:
    """Only the object's checks (``checks: object``): what every program and map type of a built object
    needs from this kernel, for a host that passed the toolchain preflight already."""
    with open("/sys/devices/system/cpu/possible") as fh:
        possible = count_cpu_list(fh.read())
    checks, programs, map_types = object_checks(spec, obj_path, possible)
    problems, warnings = _split(checks)
    return {"toolchain": {}, "libbpf": {}, "kernel": {"possible_cpus": possible, "release": os.uname().release},
            "checks": checks, "programs": programs, "verifier_headroom": headroom_table(programs),
            "map_types": map_types, "problems": problems, "warnings_found": warnings, "ok": not problems}


def headroom_table(programs: list) -> list:
    """[{program, kernel, status, headroom_pct, insns, insns_headroom_pct, stack, stack_headroom_pct, stack_method,
    load_ms}]: each program's verifier figures (_kernel.verifier.figures) as one flat row."""
    from .._kernel.verifier import flat
    return [flat(row["name"], row.get("verifier")) for row in programs or []]


def summary(problems: list) -> str:
    lines = ["preflight found %d problem(s) on this host:" % len(problems)]
    for row in problems:
        lines.append("- %s: %s. Fix: %s" % (row["name"], row["message"], row["fix"]))
    return "\n".join(lines)


def require(result: dict, ignore=()) -> None:
    """Raise `LqosError` with `summary` of the result's problems, leaving out the checks named in ``ignore``
    (e.g. ``bpffs``, which the toolchain role mounts after the preflight). The failed result carries those
    problem rows (``problems``), not every check: a failed task prints its whole result."""
    problems = [row for row in result["problems"] if row["name"] not in ignore]
    if problems:
        raise LqosError(summary(problems), problems=problems)


def run_preflight(module, spec: dict | None, pin_root: str, minimum_versions: dict, src: str | None = None,
                  obj_path: str | None = None, checks: str = "all", fail: bool = False, ignore=()) -> dict:
    """The preflight as `toolchain_info` and `pipeline` (option ``preflight``) run it.

    ``minimum_versions`` (``{name: version}``) override the spec's ``toolchain.minimum_versions``. ``checks``
    ``all`` runs `preflight`, ``object`` only `object_preflight` of ``obj_path``. With ``fail``, a required
    check that failed and is not named in ``ignore`` raises `LqosError` (`summary`: one line per problem with its
    fix). Every optional check that failed becomes one ``module.warn``. Returns the result dict of `preflight`.
    """
    minimums = dict(spec["toolchain"]["minimum_versions"]) if spec else {}
    minimums.update({str(k): str(v) for k, v in minimum_versions.items()})
    check_minimums(minimums, dict(minimum_versions))
    if checks == "object":
        result = object_preflight(spec, obj_path)
    else:
        result = preflight(module, pin_root, minimums, spec, src, obj_path)
    if fail:
        require(result, ignore)
    for row in result["warnings_found"]:
        module.warn("%s: %s. Fix: %s" % (row["name"], row["message"], row["fix"]))
    return result
