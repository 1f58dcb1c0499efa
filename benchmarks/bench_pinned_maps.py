"""Benchmark lqos.bpf.pinned_maps side by side with bpftool, in one run.

Creates 1,000 pinned maps in a private bpffs, then times

  A. an audit through the module: the bare module process (``python -m``, as
     tests' run_module runs it; Python and ansible-core from their installed
     bytecode, the collection's own files compiled at every start as in a
     payload, PYTHONDONTWRITEBYTECODE=1), which lists and reads every pin, and
     finds the programs that use each map;
  B. a loop of ``bpftool map show pinned PATH -j`` over the same 1,000 pins;
  C. the floor of any module: a Python process that only imports
     ``ansible.module_utils.basic`` (what every AnsibleModule needs), so the
     part of A that is this collection's own is visible;
  C2. the floor of any AnsibleModule returning this audit: a module that only
     exits with the same 1,000-pin result (ansible-core scrubs every value of a
     result for no_log strings and serialises it: that cost grows with the
     result, not with the audit);
  D. the same audit as Ansible really runs it on a target: the module's
     AnsiballZ payload (built by ansible-core's module_common, as for a
     pipelined task) run by the same Python - it unpacks the payload and
     compiles ansible.module_utils.basic from it at every run;
  E. ``ansible.builtin.ping``'s AnsiballZ payload: the floor of any module
     Ansible runs.

Goal: A / B <= 0.1 (at least 10x faster) and A < 0.5 s. Runs are interleaved
(A, B, A, B, ...) and medians compared, so load on the machine hits both sides
alike. The in-process audit time is printed too, to show how much of A is the
Python and Ansible start-up. Prints timings and the ratio; exits 0 unless
``--strict`` is given and a goal is missed.

The script never touches the host's /sys/fs/bpf: it re-executes itself under
``unshare -m --propagation private`` and mounts its own bpffs in a temporary
folder, which vanishes with the namespace.

    python3 benchmarks/bench_pinned_maps.py [--maps N] [--rounds N] [--strict]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS_MARK = "LQOS_BENCH_PINNED_MAPS_NS"


def reexec_in_private_mount_namespace() -> None:
    """Run this script again in a new mount namespace with private propagation."""
    if os.environ.get(NS_MARK) == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_pinned_maps needs root (unshare -m, mount -t bpf, CAP_BPF)")
    unshare = shutil.which("unshare")
    if not unshare:
        raise SystemExit("unshare (util-linux) is needed to make a private mount namespace")
    env = dict(os.environ, **{NS_MARK: "1"})
    proc = subprocess.run([unshare, "-m", "--propagation", "private", sys.executable, os.path.abspath(__file__)]
                          + sys.argv[1:], env=env, check=False)
    raise SystemExit(proc.returncode)


def check_private(host_ns: str) -> None:
    if os.readlink("/proc/self/ns/mnt") == host_ns:
        raise SystemExit("still in the host's mount namespace; refusing to mount anything")


def timed(argv, **kw) -> tuple:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit("benchmark command failed: %s\n%s%s" % (argv, proc.stdout[-2000:], proc.stderr[-2000:]))
    return elapsed, proc.stdout


EXIT_ONLY = """
import json, os
from ansible.module_utils.basic import AnsibleModule
with open(os.environ["LQOS_BENCH_RESULT"]) as fh:
    result = json.load(fh)
module = AnsibleModule(argument_spec=dict(pin_root=dict(type="path")), supports_check_mode=True)
result.pop("invocation", None)
module.exit_json(**result)
"""


# Run in a fresh interpreter: the plugin loader must own the ansible_collections package from the start.
BUILD_PAYLOAD = """
import json, sys
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, module_loader
from ansible.template import Templar
name, args, path, collections = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
init_plugin_loader([collections])
found = module_loader.find_plugin_with_context(name)
built = module_common.modify_module(module_name=name, module_path=found.plugin_resolved_path, module_args=args,
                                    templar=Templar(loader=DataLoader()),
                                    task_vars={"ansible_python_interpreter": sys.executable},
                                    module_compression="ZIP_DEFLATED")
with open(path, "wb") as fh:
    fh.write(built.b_module_data)
"""


def ansiballz(name: str, args: dict, path: str, collections: str) -> str | None:
    """Write the AnsiballZ payload Ansible would send for ``name`` with ``args`` to ``path`` (ansible-core's
    module_common, as for a pipelined task); None if this ansible-core cannot build one (the API is internal)."""
    proc = subprocess.run([sys.executable, "-c", BUILD_PAYLOAD, name, json.dumps(args), path, collections],
                          capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0 or not os.path.isfile(path):
        print("no AnsiballZ payload for %s with this ansible-core (%s): D and E are skipped"
              % (name, proc.stderr.strip().splitlines()[-1:] or proc.returncode))
        return None
    return path


def bpftool_loop(paths: list) -> float:
    started = time.perf_counter()
    for path in paths:
        proc = subprocess.run(["bpftool", "map", "show", "pinned", path, "-j"], capture_output=True, check=False)
        if proc.returncode != 0:
            raise SystemExit("bpftool failed on %s: %s" % (path, proc.stderr.decode(errors="replace")))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--maps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()

    host_ns = os.readlink("/proc/1/ns/mnt") if os.path.exists("/proc/1/ns/mnt") else ""
    reexec_in_private_mount_namespace()
    if host_ns:
        check_private(host_ns)

    sys.path.insert(0, os.path.join(REPO, "tests"))
    # conftest makes ansible_collections.lqos.bpf importable
    import conftest  # pylint: disable=import-outside-toplevel
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L  # pylint: disable=import-outside-toplevel
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M  # pylint: disable=import-outside-toplevel
    from ansible_collections.lqos.bpf.plugins.module_utils._maps import audit as PA

    tmp = tempfile.mkdtemp(prefix="lqos-bench-pins-")
    root = os.path.join(tmp, "bpffs")
    os.mkdir(root)
    subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    try:
        started = time.perf_counter()
        paths = []
        for i in range(args.maps):
            path = os.path.join(root, "m%04d" % i)
            fd = M.map_create("array", 4, 8, 1, name="m%04d" % i)
            try:
                L.obj_pin(fd, path)
            finally:
                L.close(fd)
            paths.append(path)
        print("created %d pinned maps in a private bpffs at %s (%.2f s)"
              % (args.maps, root, time.perf_counter() - started))

        argfile = os.path.join(tmp, "args.json")
        with open(argfile, "w") as fh:
            json.dump({"ANSIBLE_MODULE_ARGS": {"pin_root": root}}, fh)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        module = [sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pinned_maps", argfile]

        mod_times, tool_times, inproc, floor_times, exit_times, az_times, ping_times = [], [], [], [], [], [], []
        floor = [sys.executable, "-c", "import ansible.module_utils.basic"]
        exit_script = os.path.join(tmp, "exit_only.py")
        with open(exit_script, "w") as fh:
            fh.write(EXIT_ONLY)
        exit_env = dict(env, LQOS_BENCH_RESULT=os.path.join(tmp, "result.json"))
        exit_only = [sys.executable, exit_script, argfile]
        collections = conftest.COLLECTIONS
        az_module = ansiballz("lqos.bpf.pinned_maps", {"pin_root": root}, os.path.join(tmp, "az_pinned_maps.py"),
                              collections)
        az_ping = ansiballz("ansible.builtin.ping", {}, os.path.join(tmp, "az_ping.py"), collections)
        for dummy in range(args.rounds):
            floor_times.append(timed(floor, env=env, cwd="/")[0])
            elapsed, out = timed(module, env=env, cwd="/")
            result = json.loads(out)
            if result.get("summary", {}).get("unknown") != args.maps:
                raise SystemExit("the module did not audit every pin: %s" % result.get("summary", result))
            mod_times.append(elapsed)
            with open(exit_env["LQOS_BENCH_RESULT"], "w") as fh:
                fh.write(out)
            exit_times.append(timed(exit_only, env=exit_env, cwd="/")[0])
            if az_module and az_ping:
                elapsed, out = timed([sys.executable, az_module], cwd="/")
                if json.loads(out).get("summary", {}).get("unknown") != args.maps:
                    raise SystemExit("the AnsiballZ payload did not audit every pin")
                az_times.append(elapsed)
                ping_times.append(timed([sys.executable, az_ping], cwd="/")[0])
            tool_times.append(bpftool_loop(paths))
            started = time.perf_counter()
            PA.audit(root, {})
            inproc.append(time.perf_counter() - started)

        mod, tool = statistics.median(mod_times), statistics.median(tool_times)
        ratio = mod / tool
        print("module audit (process, %d pins):  %.3f s   (runs: %s)" % (
            args.maps, mod, ", ".join("%.3f" % t for t in mod_times)))
        print("bpftool map show pinned x %d:     %.3f s   (runs: %s)" % (
            args.maps, tool, ", ".join("%.3f" % t for t in tool_times)))
        print("audit inside the module process:   %.3f s   (the rest is Python/Ansible/cffi start-up)"
              % statistics.median(inproc))
        floor_med = statistics.median(floor_times)
        print("python + ansible.module_utils.basic: %.3f s   (runs: %s)" % (
            floor_med, ", ".join("%.3f" % t for t in floor_times)))
        exit_med = statistics.median(exit_times)
        print("AnsibleModule exiting with the same result, no audit: %.3f s   (runs: %s)" % (
            exit_med, ", ".join("%.3f" % t for t in exit_times)))
        print("this collection's own share of A:   %.3f s   (A minus that floor)" % (mod - exit_med))
        if az_times:
            az, ping = statistics.median(az_times), statistics.median(ping_times)
            print("as Ansible runs it (AnsiballZ payload): %.3f s   (runs: %s)" % (
                az, ", ".join("%.3f" % t for t in az_times)))
            print("ansible.builtin.ping's AnsiballZ payload: %.3f s   (runs: %s)" % (
                ping, ", ".join("%.3f" % t for t in ping_times)))
        print("ratio module / bpftool:             %.3f   (goal <= 0.100)" % ratio)
        print("ratio ansible-core floor / bpftool: %.3f   (importing ansible.module_utils.basic)" % (floor_med / tool))
        print("ratio exit-only floor / bpftool:    %.3f   (an AnsibleModule returning this result cannot go below "
              "this)" % (exit_med / tool))
        if az_times:
            print("ratio AnsiballZ payload / bpftool:  %.3f   (ping's payload: %.3f)" % (az / tool, ping / tool))
        met = ratio <= 0.1 and mod < 0.5
        print("goals: ratio <= 0.1 %s, module < 0.5 s %s"
              % ("met" if ratio <= 0.1 else "MISSED", "met" if mod < 0.5 else "MISSED"))
        if args.strict and not met:
            raise SystemExit(1)
    finally:
        subprocess.run(["umount", "-l", root], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
