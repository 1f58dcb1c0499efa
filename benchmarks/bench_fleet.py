"""Benchmark the rollout itself: deploy.yml and audit.yml over local hosts, in one run.

1. No-op rollout: ``deploy.yml`` in plan mode on one unchanged, already
   deployed host versus Ansible's floor, a one-task ad-hoc run
   (``ansible HOST -m ansible.builtin.stat``) against the same inventory.
   Interleaved rounds, medians. Goal: ratio <= 3.
2. Fleet scale: N local hosts (N = 1, 5, 20 by default) are deployed
   (approved, cold), deployed again (no-op) and audited. For each run it
   prints the controller's CPU seconds per host and the wall time against
   the ideal for the forks used. Goal: controller CPU per host at the largest
   N within 1.1x of N = 1 (no per-host serial work, nothing quadratic).

"Controller CPU" is the CPU of ansible-playbook and its worker processes:
every module runs under an interpreter wrapper that records the CPU of the
module process and the tools it started (``/usr/bin/time``), and that is
subtracted from all the CPU the run used. The "ideal" wall time of a run is
the N = 1 wall time of the same run times the number of rounds the batches
need with the forks used (``serial`` batches [1, 25 %, 100 %], ``--forks``).

Each host is a network-namespace pair with a veth (as the tests make them),
its own bpffs and its own state folders. The script re-executes itself under
``unshare -m --propagation private``: the namespaces, bpffs mounts and
/run/netns entries it makes are private and vanish with it; the host's
interfaces and /sys/fs/bpf are never touched. Needs root; asserts nothing.

    python3 benchmarks/bench_fleet.py [--sizes 1,5,20] [--rounds 5] [--forks 5] [--skip-fleet]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS_MARK = "LQOS_BENCH_FLEET_NS"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)")


def reexec_in_private_mount_namespace() -> None:
    if os.environ.get(NS_MARK) == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet needs root (unshare -m, ip netns, mount -t bpf, CAP_BPF)")
    env = dict(os.environ, **{NS_MARK: "1", NS_MARK + "_PARENT": os.readlink("/proc/self/ns/mnt")})
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, os.path.abspath(__file__)]
                          + sys.argv[1:], env=env, check=False)
    raise SystemExit(proc.returncode)


def sh(*argv) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Host:
    def __init__(self, root: str, index: int, tag: str):
        self.name = "h%02d" % index
        self.dir = os.path.join(root, self.name)
        self.pin_root = os.path.join(self.dir, "bpffs")
        self.ns_a, self.ns_b = "lqf%s%02da" % (tag, index), "lqf%s%02db" % (tag, index)
        self.if_a, self.if_b = self.ns_a + "0", self.ns_b + "0"
        self.ip_a, self.ip_b = "10.212.%d.1" % index, "10.212.%d.2" % index

    def create(self) -> None:
        os.makedirs(self.pin_root)
        sh("mount", "-t", "bpf", "bpf", self.pin_root)
        sh("ip", "netns", "add", self.ns_a)
        sh("ip", "netns", "add", self.ns_b)
        sh("ip", "-n", self.ns_a, "link", "add", self.if_a, "type", "veth", "peer", "name", self.if_b,
           "netns", self.ns_b)
        for ns, ifname, ip in ((self.ns_a, self.if_a, self.ip_a), (self.ns_b, self.if_b, self.ip_b)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
        subprocess.run(["umount", "-l", self.pin_root], check=False, capture_output=True)

    def inventory_vars(self, python: str) -> dict:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "lqos_bpf_pin_root": self.pin_root,
            "lqos_bpf_state_dir": os.path.join(self.dir, "state"),
            "lqos_bpf_attach_state_dir": os.path.join(self.dir, "attach"),
            "lqos_bpf_interfaces": [{"name": self.if_a, "netns": self.ns_a, "xdp_mode": "auto"}],
            "lqos_bpf_probe_target": self.ip_b,
            "lqos_bpf_probe_count": 1,
        }


def write_inventory(path: str, hosts: list, python: str) -> str:
    import yaml
    with open(path, "w") as fh:
        yaml.safe_dump({"all": {"hosts": {h.name: h.inventory_vars(python) for h in hosts}}}, fh, sort_keys=False)
    return path


def module_python(tmp: str) -> tuple:
    """An interpreter wrapper that appends each module process's CPU (with its tools) to a log."""
    log = os.path.join(tmp, "module-cpu.log")
    wrapper = os.path.join(tmp, "python-timed")
    with open(wrapper, "w") as fh:
        fh.write('#!/bin/sh\nexec /usr/bin/time -a -o %s -f "%%U %%S" %s "$@"\n' % (log, sys.executable))
    os.chmod(wrapper, 0o755)
    return wrapper, log


def module_cpu(log: str) -> float:
    total = 0.0
    if os.path.exists(log):
        with open(log) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2:
                    try:
                        total += float(parts[0]) + float(parts[1])
                    except ValueError:
                        pass
    return total


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Result:
    def __init__(self, rc, out, wall, cpu, mod_cpu):
        self.rc, self.out, self.wall, self.cpu, self.mod_cpu = rc, out, wall, cpu, mod_cpu
        self.recap = {}
        for line in out.splitlines():
            m = RECAP.match(line)
            if m:
                self.recap[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                                          "failed": int(m.group(5)), "skipped": int(m.group(6))}

    @property
    def controller_cpu(self) -> float:
        return max(self.cpu - self.mod_cpu, 0.0)


def run(argv: list, env: dict, log: str) -> Result:
    if os.path.exists(log):
        os.unlink(log)
    cpu0, started = children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    res = Result(proc.returncode, proc.stdout + proc.stderr, wall, children_cpu() - cpu0, module_cpu(log))
    if proc.returncode != 0:
        raise SystemExit("benchmark run failed (rc=%d): %s\n%s" % (proc.returncode, argv, res.out[-4000:]))
    return res


def playbook_argv(name: str, inventory: str, *extra) -> list:
    return [shutil.which("ansible-playbook"), "-i", inventory, name] + list(extra)


def noop_rollout(tmp: str, env: dict, rounds: int, tag: str) -> None:
    host = Host(os.path.join(tmp, "noop"), 0, tag + "n")
    host.create()
    try:
        python, log = module_python(tmp)
        inventory = write_inventory(os.path.join(tmp, "noop.yml"), [host], python)
        state = ("-e", "lqos_bpf_state_dir=%s" % os.path.join(host.dir, "state"))
        run(playbook_argv("deploy.yml", inventory, "-e", "lqos_bpf_approve=true", *state), env, log)
        floor_argv = [shutil.which("ansible"), "-i", inventory, host.name, "-m", "ansible.builtin.stat",
                      "-a", "path=%s" % host.pin_root]
        plan, floor = [], []
        for _round in range(rounds):
            plan.append(run(playbook_argv("deploy.yml", inventory, *state), env, log))
            floor.append(run(floor_argv, env, log))
        recap = plan[-1].recap[host.name]
        p, f = statistics.median(r.wall for r in plan), statistics.median(r.wall for r in floor)
        print("no-op rollout (deploy.yml plan, 1 unchanged deployed host): %d tasks ok, %d skipped, changed=%d"
              % (recap["ok"], recap["skipped"], recap["changed"]))
        print("  deploy.yml plan   %.3f s   (runs: %s)" % (p, ", ".join("%.2f" % r.wall for r in plan)))
        print("  ansible -m stat   %.3f s   (runs: %s)" % (f, ", ".join("%.2f" % r.wall for r in floor)))
        paired = statistics.median(a.wall / b.wall for a, b in zip(plan, floor))
        print("  ratio no-op rollout / floor: %.2f   (median of the per-round ratios %.2f; goal <= 3.00: %s)"
              % (p / f, paired, "meets" if p / f <= 3 else "MISSES"))
    finally:
        host.destroy()


def fleet(tmp: str, env: dict, sizes: list, forks: int, tag: str) -> None:
    rows = {}
    for n in sizes:
        root = os.path.join(tmp, "fleet-%d" % n)
        hosts = [Host(root, i, tag + "%02d" % n) for i in range(n)]
        made = []
        try:
            for h in hosts:
                h.create()
                made.append(h)
            python, log = module_python(root)
            inventory = write_inventory(os.path.join(root, "inventory.yml"), hosts, python)
            common = ("-f", str(forks))
            deploy = run(playbook_argv("deploy.yml", inventory, *common, "-e", "lqos_bpf_approve=true"), env, log)
            again = run(playbook_argv("deploy.yml", inventory, *common, "-e", "lqos_bpf_approve=true"), env, log)
            changed = sum(r["changed"] for h, r in again.recap.items() if h != "localhost")
            audit = run(playbook_argv("audit.yml", inventory, *common, "-e",
                                      "lqos_bpf_report_dir=%s" % os.path.join(root, "report")), env, log)
            rows[n] = {"deploy": deploy, "again": again, "audit": audit, "again_changed": changed}
        finally:
            for h in made:
                h.destroy()

    def rounds_needed(n: int, kind: str) -> int:
        if kind == "audit":
            return -(-n // forks)
        batches, left = [], n
        for size in (1, max(1, n * 25 // 100), n):  # serial: [1, '25%', '100%']
            if left <= 0:
                break
            take = min(size, left)
            batches.append(take)
            left -= take
        return sum(-(-b // forks) for b in batches)

    base = min(sizes)
    print("\nfleet scale, forks=%d, serial [1, 25%%, 100%%] for deploy.yml (CPU in seconds)" % forks)
    header = ("run", "N", "wall", "ctrl CPU", "ctrl CPU/h", "ideal", "wall/id", "vs N=%d" % base)
    print("%-8s %4s %9s %12s %12s %9s %9s %7s" % header)
    for kind in ("deploy", "again", "audit"):
        one = rows[base][kind]
        per_host_base = one.controller_cpu / base
        for n in sizes:
            r = rows[n][kind]
            ideal = one.wall * rounds_needed(n, kind) / rounds_needed(base, kind)
            print("%-8s %4d %8.2fs %11.2fs %11.3fs %8.2fs %9.2f %7.2f" % (
                kind, n, r.wall, r.controller_cpu, r.controller_cpu / n, ideal, r.wall / ideal,
                (r.controller_cpu / n) / per_host_base))
    top = max(sizes)
    for kind in ("deploy", "again", "audit"):
        ratio = (rows[top][kind].controller_cpu / top) / (rows[base][kind].controller_cpu / base)
        print("controller CPU per host, %s: N=%d vs N=%d ratio %.2f  (goal <= 1.10: %s)"
              % (kind, top, base, ratio, "meets" if ratio <= 1.1 else "MISSES"))
    print("no-op redeploy changed tasks over all hosts: %s" % {n: rows[n]["again_changed"] for n in sizes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forks", type=int, default=5)
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-noop", action="store_true")
    args = parser.parse_args()
    reexec_in_private_mount_namespace()
    if os.readlink("/proc/self/ns/mnt") == os.environ.get(NS_MARK + "_PARENT"):
        raise SystemExit("still in the host's mount namespace; refusing to mount anything")
    for tool in ("ansible-playbook", "ansible", "clang", "bpftool", "ip"):
        if not shutil.which(tool):
            raise SystemExit("%s not found: run tests/bootstrap.sh --tests and put the venv on PATH" % tool)
    tmp = tempfile.mkdtemp(prefix="lqos-bench-fleet-")
    tag = "%04x" % (os.getpid() % 0xffff)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    print("machine: %s, %d CPUs, kernel %s; ansible-core %s" % (
        os.uname().nodename, os.cpu_count(), os.uname().release,
        subprocess.run(["ansible", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]))
    try:
        if not args.skip_noop:
            noop_rollout(tmp, env, args.rounds, tag)
        if not args.skip_fleet:
            fleet(tmp, env, [int(s) for s in args.sizes.split(",")], args.forks, tag)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
