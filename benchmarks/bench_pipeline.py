"""Benchmark lqos.bpf.pipeline side by side with the plain chain, in one run.

1. Cold build: the module (run as a process, exactly as Ansible's local
   connection runs it) versus the same commands in a plain shell script,
   each into a fresh output folder. Goal: ratio <= 1.05.
2. The same cold build inside ansible-playbook: a task running the module
   versus a task running the shell script (equal Ansible overhead).
3. No-op rerun: an ansible-playbook task running the module on an unchanged
   tree versus a task running ansible.builtin.stat. Goal: ratio <= 1.2.
4. Does running the wrapper compile (+ ar) and bindgen side by side pay on this
   machine? The plain shell chain with those two steps side by side versus one
   after the other (the module runs them side by side); below 1: it helps.

Runs are interleaved (A, B, A, B, ...) and medians compared, so load on the
machine hits both sides alike. Prints timings and ratios; asserts nothing.

    python3 benchmarks/bench_pipeline.py [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
# conftest makes the checkout importable as ansible_collections.lqos.bpf.
import conftest  # noqa: E402,F401  pylint: disable=unused-import
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option  # noqa: E402


def shell_script(spec: dict, src: str, side_by_side: bool = False) -> str:
    """The chain as six plain commands (clang, llc, skeleton, wrapper copy+compile, ar, bindgen); with
    ``side_by_side`` the wrapper compile and ar run in the background while bindgen runs, as in the module."""
    s, o, f = spec["sources"], spec["outputs"], spec["flags"]
    workdir = os.path.join(src, s["workdir"])
    q = shlex.quote
    out = '"$OUT"'
    lines = [
        "set -e",
        "OUT=$1",
        "cd %s" % q(workdir),
        "clang %s -o %s/%s %s" % (" ".join(map(q, f["clang"])), out, q(o["ir"]), q(s["kern"])),
        "llc %s -o %s/%s %s/%s" % (" ".join(map(q, f["llc"])), out, q(o["object"]), out, q(o["ir"])),
        "bpftool gen skeleton %s/%s > %s/%s" % (out, q(o["object"]), out, q(o["skeleton"])),
        "cp %s %s %s/" % (q(s["wrapper_h"]), q(s["wrapper_c"]), out),
    ]
    wrapper = "clang -c %s -I %s %s -o %s/%s && ar r %s/%s %s/%s 2>/dev/null" % (
        q(s["wrapper_c"]), out, " ".join(map(q, f["wrapper"])), out, q(o["wrapper_object"]),
        out, q(o["archive"]), out, q(o["wrapper_object"]))
    bindgen = "bindgen %s/%s -o %s/%s %s -- -I %s %s" % (out, q(os.path.basename(s["wrapper_h"])), out, q(o["bindings"]),
                                                         " ".join(map(q, f["bindgen"])), out,
                                                         " ".join(map(q, f["bindgen_clang"])))
    if side_by_side:
        lines += ["( %s ) & wrapper=$!" % wrapper, bindgen, "wait $wrapper"]
    else:
        lines += [wrapper, bindgen]
    return "\n".join(lines) + "\n"


def timed(argv, **kw) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit("benchmark command failed: %s\n%s%s" % (argv, proc.stdout[-2000:], proc.stderr[-2000:]))
    return elapsed


def module_argv(tmp: str, spec: dict, src: str, dest: str) -> list:
    path = os.path.join(tmp, "args-%d.json" % time.monotonic_ns())
    with open(path, "w") as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": {"spec": spec, "src": src, "dest": dest}}, fh)
    return [sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pipeline", path]


def playbook(tmp: str, name: str, task: str) -> str:
    path = os.path.join(tmp, name + ".yml")
    with open(path, "w") as fh:
        fh.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n%s" % task)
    return path


def run_playbook(path: str, env: dict) -> float:
    return timed(["ansible-playbook", "-i", "localhost,", "-c", "local",
                  "-e", "ansible_python_interpreter=%s" % sys.executable, path], env=env)


def ratio_line(label, a, b, goal):
    ma, mb = statistics.median(a), statistics.median(b)
    verdict = "meets" if ma / mb <= goal else "MISSES"
    print("%-58s %7.3fs vs %7.3fs  ratio %.3f  (goal <= %.2f: %s)" % (label, ma, mb, ma / mb, goal, verdict))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for tool in ("clang", "llc", "bpftool", "bindgen", "ar", "ansible-playbook"):
        if not shutil.which(tool):
            raise SystemExit("%s not found: run tests/bootstrap.sh --tests first" % tool)
    spec = resolve_spec_option("reference")
    src = os.path.join(REPO, "bpf", "shaper_sys")
    tmp = tempfile.mkdtemp(prefix="lqos-bench-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        script = os.path.join(tmp, "chain.sh")
        with open(script, "w") as fh:
            fh.write(shell_script(spec, src))
        script_par = os.path.join(tmp, "chain-side-by-side.sh")
        with open(script_par, "w") as fh:
            fh.write(shell_script(spec, src, side_by_side=True))

        # Warm the page cache and the tool-version cache location once, outside the measurement.
        warm = os.path.join(tmp, "warm")
        os.makedirs(warm)
        timed(["bash", script, warm])

        mod, sh, sh_par = [], [], []
        for i in range(args.rounds):
            dest = os.path.join(tmp, "mod-%d" % i)
            mod.append(timed(module_argv(tmp, spec, src, dest), env=env))
            out = os.path.join(tmp, "sh-%d" % i)
            os.makedirs(out)
            sh.append(timed(["bash", script, out]))
            out = os.path.join(tmp, "shpar-%d" % i)
            os.makedirs(out)
            sh_par.append(timed(["bash", script_par, out]))

        pb_mod, pb_sh = [], []
        for i in range(args.rounds):
            p1 = playbook(tmp, "mod-%d" % i, "    - lqos.bpf.pipeline:\n        spec: reference\n        src: %s\n"
                          "        dest: %s\n" % (src, os.path.join(tmp, "pbmod-%d" % i)))
            out = os.path.join(tmp, "pbsh-%d" % i)
            os.makedirs(out)
            p2 = playbook(tmp, "sh-%d" % i, "    - ansible.builtin.command: bash %s %s\n      changed_when: true\n"
                          % (script, out))
            pb_mod.append(run_playbook(p1, env))
            pb_sh.append(run_playbook(p2, env))

        noop_dest = os.path.join(tmp, "pbmod-0")
        p_noop = playbook(tmp, "noop", "    - lqos.bpf.pipeline:\n        spec: reference\n        src: %s\n"
                          "        dest: %s\n" % (src, noop_dest))
        p_stat = playbook(tmp, "stat", "    - ansible.builtin.stat:\n        path: %s\n" % noop_dest)
        noop, stat = [], []
        for _round in range(args.rounds):
            noop.append(run_playbook(p_noop, env))
            stat.append(run_playbook(p_stat, env))

        print("lqos.bpf.pipeline benchmark, %d rounds each, medians (bpf/shaper_sys, spec reference)" % args.rounds)
        ratio_line("cold build: module process vs plain shell script", mod, sh, 1.05)
        ratio_line("cold build in ansible-playbook: module task vs script task", pb_mod, pb_sh, 1.05)
        ratio_line("no-op rerun in ansible-playbook: module vs ansible.builtin.stat", noop, stat, 1.2)
        ratio_line("shell chain: wrapper+ar next to bindgen vs one after the other", sh_par, sh, 1.0)
        print("(the cold build figures are medians of these runs: module %s; shell %s)" % (
            ", ".join("%.2f" % t for t in mod), ", ".join("%.2f" % t for t in sh)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
