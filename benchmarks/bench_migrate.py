"""Benchmark a map-layout upgrade: lqos.bpf's migration beside a plain batch copy (the floor), then the writes
made while a live upgrade runs, in one run.

A. Speed. A flow map (LRU hash, 40-byte key, 136-byte value -> 144 bytes: one field added) of N entries
   (default 100,000 and 1,000,000) is migrated by the pinned_maps module (state=migrated), run as a process
   like Ansible runs it. Its map step (read with BPF_MAP_LOOKUP_BATCH, convert, fill with BPF_MAP_UPDATE_BATCH,
   count back) is printed beside the floor: the same map dumped and written into a map of the same layout
   with the same batch calls, no conversion. Also printed: the snapshot the catch-up needs, the time from the
   copy to the new map holding the name, the whole module run.

B. Writers. An object with an XDP program counting packets (tests/functional/lqos_writers.py) is attached to
   a veth in a private netns and its flow map filled with --writers-entries entries; then, while a user-space
   writer holding an fd on the map, one opening the pin path for every write and the XDP program (ping -i
   0.005) run, lqos.bpf.attach with the pin step upgrades it (fill, publish, swap, catch-up) and
   pinned_maps commits it. Printed: the window (copy to the catch-up's read of the old map, which comes right
   after the swap), writes lost per writer, failed path lookups, and newer values a rerun overwrote.

Never touches the host's /sys/fs/bpf or interfaces: it re-executes itself under ``unshare -m`` and uses its
own bpffs and netns. Exits 0 unless ``--strict`` and a goal is missed.

    python3 benchmarks/bench_migrate.py [--entries 100000,1000000] [--writers-entries 100000] [--repeat 3]
                                        [--state-dir-on-disk] [--strict]

The journal and snapshots go to a tmpfs the bench mounts (the modules' default state_dir is under /run, a tmpfs
on a systemd host); ``--state-dir-on-disk`` puts them in the temporary folder instead.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS_MARK = "LQOS_BENCH_MIGRATE_NS"
RUN = [None]   # a tmpfs for the state_dir files (journal, snapshot), as /run is on a systemd host

FLOW_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct flow_key { __u8 local[16]; __u8 remote[16]; __u16 lport; __u16 rport; __u8 proto; __u8 pad[3]; };
struct flow_value {
    __u64 first_seen_ns; __u64 last_seen_ns; __u64 bytes[2]; __u64 packets[2]; __u32 rate_bps[2];
    __u64 windows[6]; __u8 ip_protocol; __u8 tos; __u8 end_reason; __u8 pad[5]; __u32 tc_handle; __u32 cpu;
    __u64 owner_hash[2];%s
};
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, %d);
    __type(key, struct flow_key);
    __type(value, struct flow_value);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_table SEC(".maps");
SEC("xdp")
int flows(struct xdp_md *ctx)
{
    struct flow_key k = {};
    struct flow_value *v = bpf_map_lookup_elem(&flow_table, &k);
    if (v)
        v->packets[0]++;
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def reexec_in_private_mount_namespace() -> None:
    if os.environ.get(NS_MARK) == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_migrate needs root (unshare -m, mount -t bpf, CAP_BPF, CAP_NET_ADMIN)")
    env = dict(os.environ, **{NS_MARK: "1"})
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, os.path.abspath(__file__)]
                          + sys.argv[1:], env=env, check=False)
    raise SystemExit(proc.returncode)


def compile_src(tmp: str, name: str, text: str) -> str:
    src, obj = os.path.join(tmp, name + ".c"), os.path.join(tmp, name + ".o")
    with open(src, "w") as fh:
        fh.write(text)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I", "/usr/include/%s-linux-gnu" % os.uname().machine,
                    "-c", src, "-o", obj], check=True)
    return obj


def module(name: str, args: dict, tmp: str) -> tuple:
    """(result, seconds) of one module run as a process."""
    argfile = os.path.join(tmp, "args.json")
    with open(argfile, "w") as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, fh)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules." + name, argfile],
                          capture_output=True, text=True, env=env, cwd="/", check=False)
    took = time.perf_counter() - started
    res = json.loads(proc.stdout)
    if proc.returncode != 0 or res.get("failed"):
        raise SystemExit("%s failed: %s%s" % (name, res.get("msg"), proc.stderr[-2000:]))
    return res, took


def mount_bpffs(tmp: str, name: str) -> str:
    root = os.path.join(tmp, name)
    os.mkdir(root)
    subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    return root


def speed(n: int, tmp: str, rep: int = 0) -> dict:
    # pylint: disable=import-outside-toplevel
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import batch as BB
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O  # noqa: E741
    cap = n + n // 4
    v1 = compile_src(tmp, "v1-%d" % n, FLOW_C % ("", cap))
    v2 = compile_src(tmp, "v2-%d" % n, FLOW_C % ("\n    __u64 retransmits;", cap))
    root = mount_bpffs(tmp, "speed-%d-%d" % (n, rep))
    O.load_object(v1, pin_root=root, disabled=["flows"]).close()
    path = os.path.join(root, "flow_table")
    keys = b"".join(struct.pack("<QQ16sHHB3x", 0, i, b"\1" * 16, i & 0xFFFF, 443, 6) for i in range(n))
    values = b"".join(struct.pack("<Q", i) * 17 for i in range(n))
    BB.fill(path, BB.Table(keys, values, 40, 136))
    # The floor: the same entries dumped and written into a map of the same layout, batch calls, no conversion.
    fd = M.map_create("lru_hash", 40, 136, cap, name="floor")
    try:
        started = time.perf_counter()
        table = BB.dump(path)
        dumped = time.perf_counter()
        BB.fill(fd, table)
        floor = {"read": dumped - started, "fill": time.perf_counter() - dumped}
    finally:
        os.close(fd)
    del table, keys, values
    res, took = module("pinned_maps", {"object": v2, "pin_root": root, "state": "migrated",
                                       "state_dir": os.path.join(RUN[0] or tmp, "state-%d-%d" % (n, rep)),
                                       "approve": True},
                       tmp)
    row = res["migrated"][0]
    kept = M.map_info_by_path(path)["value_size"] == 144 and len(BB.dump(path).keys) // 40 == n
    subprocess.run(["umount", "-l", root], check=False)
    return {"n": n, "floor": floor, "timings": row["timings"], "published": row["published_at"] - row["copied_at"],
            "module": took, "kept": kept, "batched": L.possible_cpus() > 0, "load": load()}


def writers(n: int, tmp: str, rep: int = 0) -> dict:
    # pylint: disable=import-outside-toplevel
    import lqos_writers as WR
    from lqos_testlib import NetnsPair
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
    tmp = os.path.join(tmp, "writers-%d" % rep)
    os.mkdir(tmp)
    objs = {v: compile_src(tmp, "w%d" % v, WR.source(v, n + n // 4)) for v in (1, 2)}
    root = mount_bpffs(tmp, "bpffs")
    pair = NetnsPair("lqbw%d" % os.getpid())
    pair.create()
    try:
        base = dict(pin_root=root, interface=pair.if_a, netns=pair.ns_a,
                    state_dir=os.path.join(RUN[0] or tmp, "attach-%d" % rep),
                    approve=True)
        maps = dict(state="migrated", state_dir=os.path.join(RUN[0] or tmp, "maps-%d" % rep),
                    backup_dir=os.path.join(tmp, "backups"))
        module("attach", dict(base, spec=WR.spec(1), object=objs[1]), tmp)
        flows, counts = os.path.join(root, "flow_table"), os.path.join(root, "pkt_count")
        WR.fill(flows, n)
        rx0, counted0 = WR.rx_packets(pair.ns_a, pair.if_a), WR.counted(counts)
        fd_w, path_w = WR.Writer(flows, WR.FD_KEYS, False), WR.Writer(flows, WR.PATH_KEYS, True)
        pinger = WR.Pinger(pair)
        fd_w.start()
        path_w.start()
        try:
            time.sleep(0.5)
            res, took = module("attach", dict(base, spec=WR.spec(2), object=objs[2], pinned_maps=maps), tmp)
            time.sleep(0.5)
            path_w.finish()
            pinger.finish()
            row = {m["name"]: m for m in res["pinned_maps"]["migrated"]}["flow_table"]
            caught = res["pinned_maps"]["caught_up"]["flow_table"]
            now = dict(M.map_entries(flows))
            out = {"n": n, "attach": took, "window": caught["old_read_at"] - row["copied_at"],
                   "published": row["published_at"] - row["copied_at"], "caught": caught, "load": load(),
                   "timings": row["timings"], "copy": migrate_s(row),
                   "path_lost": path_w.lost(now), "path_writes": len(path_w.records),
                   "path_failed": path_w.failed_opens + path_w.failed_writes}
            # A rerun after newer writes into the new map: nothing older may come back over them.
            newer = {WR.key(i): struct.pack("<QQQQ", 10 ** 12 + i, 0, 0, 1) for i in range(1000)}
            for k, v in newer.items():
                M.map_update(flows, k, v)
            module("attach", dict(base, spec=WR.spec(2), object=objs[2], pinned_maps=maps), tmp)
            done, _took = module("pinned_maps", dict(spec=WR.spec(2), object=objs[2], pin_root=root,
                                                     state="committed", state_dir=maps["state_dir"],
                                                     backup_dir=maps["backup_dir"], approve=True), tmp)
            time.sleep(0.3)       # the fd writer goes on writing into the retired map
        finally:
            path_w.finish()
            fd_w.finish()
            pinger.finish()
        committed = {d["name"]: d for d in done["actions"]}["flow_table"]["caught_up"]["old_read_at"]
        after = dict(M.map_entries(flows))
        first = caught["old_read_at"]
        out.update(fd_lost=fd_w.lost(after, first), fd_before=fd_w.made(first),
                   fd_mid_lost=fd_w.lost(after, committed, first), fd_mid=fd_w.made(committed, first),
                   fd_late_lost=fd_w.lost(after, None, committed), fd_late=fd_w.made(None, committed),
                   overwritten=sum(1 for k, v in newer.items() if after.get(k) != v))
        arrived = WR.rx_packets(pair.ns_a, pair.if_a) - rx0
        out.update(packets=arrived, xdp_lost=arrived - (WR.counted(counts) - counted0))
        return out
    finally:
        pair.destroy()
        subprocess.run(["umount", "-l", root], check=False)


def load() -> str:
    return "%.2f" % os.getloadavg()[0]


def migrate_s(r: dict) -> float:
    return sum(r["timings"][k] for k in ("read", "convert", "fill", "check"))


def median_run(runs: list, key):
    """The run whose ``key`` is the median (the lower middle one for an even count)."""
    return sorted(runs, key=key)[(len(runs) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", default="100000,1000000")
    parser.add_argument("--writers-entries", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per size and of the writers; the median is printed (losses: the worst run)")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--state-dir-on-disk", action="store_true",
                        help="journal and snapshots in the temporary folder (fsync to disk) instead of a tmpfs, as "
                             "/run is on a systemd host (the modules' default state_dir is under /run)")
    args = parser.parse_args()
    reexec_in_private_mount_namespace()
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import conftest  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    sys.path.append(os.path.join(REPO, "tests", "functional"))   # lqos_writers, lqos_testlib

    tmp = tempfile.mkdtemp(prefix="lqos-bench-migrate-")
    missed = []
    if not args.state_dir_on_disk:
        RUN[0] = os.path.join(tmp, "run")
        os.mkdir(RUN[0])
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "lqos-bench-run", RUN[0]], check=True)
    print("state_dir (journal, snapshots): %s" % ("on disk: %s" % tmp if args.state_dir_on_disk
                                                  else "a tmpfs, as /run on a systemd host"))
    try:
        print("A. migration of a flow map (LRU hash, 40-byte key, 136 -> 144-byte value: one field added); "
              "the run of the median ratio of %d runs each (load: 1-minute load average)" % max(1, args.repeat))
        print("%-10s %10s %10s %7s %10s %10s %10s %8s"
              % ("entries", "floor s", "migrate s", "ratio", "snapshot s", "to name s", "module s", "kept"))
        for n in [int(x) for x in args.entries.split(",") if x]:
            runs = [speed(n, tmp, i) for i in range(max(1, args.repeat))]
            for r in runs:
                floor, mig = r["floor"]["read"] + r["floor"]["fill"], migrate_s(r)
                r["ratio"] = mig / floor
                print("%-10s run: floor %.3f (read %.3f + fill %.3f); migrate %.3f (read %.3f, convert %.3f, "
                      "fill %.3f, count back %.3f): %.2fx; load %s"
                      % ("", floor, r["floor"]["read"], r["floor"]["fill"], mig, r["timings"]["read"],
                         r["timings"]["convert"], r["timings"]["fill"], r["timings"]["check"], r["ratio"], r["load"]))
            # the run of the median ratio: floor and migration measured side by side in the same run
            r = median_run(runs, lambda x: x["ratio"])
            floor, mig, t = r["floor"]["read"] + r["floor"]["fill"], migrate_s(r), r["timings"]
            kept = all(x["kept"] for x in runs)
            print("%-10d %10.3f %10.3f %6.2fx %10.3f %10.3f %10.3f %8s" % (
                n, floor, mig, r["ratio"], t["snapshot"], r["published"], r["module"], "all" if kept else "NO"))
            if r["ratio"] > 2 or not kept:
                missed.append("migration of %d entries within 2x of the floor" % n)
        ws = [writers(args.writers_entries, tmp, i) for i in range(max(1, args.repeat))]
        for x in ws:
            print("window run: %.3f s (copy %.3f: read %.3f, convert %.3f, fill %.3f, count back %.3f; aside pin, "
                  "rename and journal %.3f; rename to the catch-up's read (programs loaded, swapped) %.3f); load %s"
                  % (x["window"], x["copy"], x["timings"]["read"], x["timings"]["convert"], x["timings"]["fill"],
                     x["timings"]["check"], x["published"] - x["copy"], x["window"] - x["published"], x["load"]))
        w = median_run(ws, lambda x: x["window"])
        for k in ("fd_lost", "fd_mid_lost", "path_lost", "path_failed", "overwritten", "xdp_lost"):
            w[k] = max(x[k] for x in ws)     # losses: the worst run
        print()
        print("B. writers during a live upgrade of %d entries (attach with the pin step, then commit); window: the "
              "median of %d runs, losses: the worst run" % (w["n"], len(ws)))
        rows = [
            ("window: copy to the catch-up's read (s)", "%.3f" % w["window"], "<= 0.5"),
            ("  of which copy to the new map at the name (s)", "%.3f" % w["published"], ""),
            ("  of which rename to the catch-up's read (s)", "%.3f" % (w["window"] - w["published"]), ""),
            ("attach module run, whole (s)", "%.3f" % w["attach"], ""),
            ("fd writer: lost of those made before the catch-up", "%d of %d" % (w["fd_lost"], w["fd_before"]), "0"),
            ("fd writer: lost of those before the commit's pass", "%d of %d" % (w["fd_mid_lost"], w["fd_mid"]), "0"),
            ("fd writer: lost of those after the commit (stale fd)", "%d of %d" % (w["fd_late_lost"], w["fd_late"]),
             "all, by design"),
            ("path writer: writes lost", "%d of %d" % (w["path_lost"], w["path_writes"]), "0"),
            ("path writer: failed lookups or writes", "%d" % w["path_failed"], "0"),
            ("XDP program: packets not counted", "%d of %d" % (w["xdp_lost"], w["packets"]), "<= swap"),
            ("newer values overwritten by a rerun", "%d of 1000" % w["overwritten"], "0"),
        ]
        for label, value, goal in rows:
            print("%-52s %16s   goal %s" % (label, value, goal))
        print("catch-up after the swap: %s" % json.dumps({k: v for k, v in w["caught"].items() if k != "old_read_at"}))
        if w["window"] > 0.5:
            missed.append("window <= 0.5 s")
        if w["fd_lost"] or w["fd_mid_lost"] or w["path_lost"] or w["path_failed"] or w["overwritten"] or w["xdp_lost"] > 2:
            missed.append("writes lost")
    finally:
        if RUN[0]:
            subprocess.run(["umount", "-l", RUN[0]], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print("goals: %s" % ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    if args.strict and missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
