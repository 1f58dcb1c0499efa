"""Benchmark a map-layout upgrade: lqos.bpf.pinned_maps state=migrated side by side with
LibreQoS's behaviour, on 100,000 flow-sized entries, in one run.

Two objects are compiled: v1 has an LRU hash ``flow_table`` (40-byte key, 136-byte
value, like the reference pipeline's flows) used by an XDP program; v2's value
gains an 8-byte field (144 bytes). For each side, v1 is loaded into a private bpffs,
its XDP program attached (generic mode) to a veth in a private network
namespace, and the map filled. Then:

  A. lqos.bpf: the pinned_maps module, run as a process like Ansible runs it,
     moves the old pin aside, creates the v2 map and migrates every entry; then
     the v2 program replaces v1 on the hook in one call (XDP_FLAGS_REPLACE),
     which is what lqos.bpf.attach does.
  B. LibreQoS's way: the incompatible pin is unlinked (no backup), v2 loads on a
     new, empty map, the old program is detached and the new one attached.

A sampler thread reads the hook (bpf_xdp_query) in a loop during the swap; the
time with no program attached is measured around the swap calls themselves.
Printed: migration time per 1,000 entries, entries kept, samples with no
program, no-program time. Exits 0 unless ``--strict`` and A lost entries or
showed an empty hook. Never touches the host's /sys/fs/bpf or interfaces:
it re-executes itself under ``unshare -m`` and uses its own netns.

    python3 benchmarks/bench_migrate.py [--entries N] [--strict]
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
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NS_MARK = "LQOS_BENCH_MIGRATE_NS"

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
    __uint(max_entries, 131072);
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


def compile_obj(tmp: str, name: str, extra: str) -> str:
    src, obj = os.path.join(tmp, name + ".c"), os.path.join(tmp, name + ".o")
    with open(src, "w") as fh:
        fh.write(FLOW_C % extra)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I", "/usr/include/%s-linux-gnu" % os.uname().machine,
                    "-c", src, "-o", obj], check=True)
    return obj


class Sampler(threading.Thread):
    """Reads the hook's XDP program id in a loop, inside the netns, until stopped."""

    def __init__(self, H, ns: str, ifname: str):
        super().__init__(daemon=True)
        self.H, self.ns, self.ifname = H, ns, ifname
        self.samples = self.empty = 0
        self.stop = threading.Event()

    def run(self):
        with self.H.netns(self.ns):
            idx = self.H.ifindex(self.ifname)
            while not self.stop.is_set():
                self.samples += 1
                if not self.H.xdp_query(idx)["prog_id"]:
                    self.empty += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100000)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    reexec_in_private_mount_namespace()

    sys.path.insert(0, os.path.join(REPO, "tests"))
    import conftest  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    # pylint: disable=import-outside-toplevel
    from ansible_collections.lqos.bpf.plugins.module_utils import _libbpf as L
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_maps as M
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_object as O  # noqa: E741
    from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_hooks as H

    tmp = tempfile.mkdtemp(prefix="lqos-bench-migrate-")
    ns, ifname = "lqbm%d" % os.getpid(), "bm0"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    results = {}
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", "bm1"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", ifname, "up"], check=True)
        v1, v2 = compile_obj(tmp, "v1", ""), compile_obj(tmp, "v2", "\n    __u64 retransmits;")
        for side in ("lqos.bpf", "LibreQoS"):
            root = os.path.join(tmp, side + "-bpffs")
            os.mkdir(root)
            subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
            old = O.load_object(v1, pin_root=root)
            with H.netns(ns):
                idx = H.ifindex(ifname)
                H.xdp_attach(idx, old.prog_fd("flows"), mode="skb")
            path = os.path.join(root, "flow_table")
            fd = L._obj_get(path)
            started = time.perf_counter()
            for i in range(args.entries):
                key = struct.pack("<QQ16sHHB3x", 0, i, b"\1" * 16, i & 0xFFFF, 443, 6)
                M.map_update(fd, key, struct.pack("<Q", i) * 17)
            os.close(fd)
            fill = time.perf_counter() - started
            sampler = Sampler(H, ns, ifname)
            sampler.start()
            started = time.perf_counter()
            if side == "lqos.bpf":
                argfile = os.path.join(tmp, "args.json")
                with open(argfile, "w") as fh:
                    json.dump({"ANSIBLE_MODULE_ARGS": {"object": v2, "pin_root": root, "state": "migrated",
                                                       "state_dir": os.path.join(tmp, "state"), "approve": True}}, fh)
                env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
                proc = subprocess.run([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pinned_maps",
                                       argfile], capture_output=True, text=True, env=env, cwd="/", check=False)
                if proc.returncode != 0:
                    raise SystemExit("migrate failed: %s%s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
            else:
                os.unlink(path)  # LibreQoS removes a pin whose sizes differ, with no backup
            migrate = time.perf_counter() - started
            new = O.load_object(v2, pin_root=root)
            with H.netns(ns):
                started = time.perf_counter()
                if side == "lqos.bpf":
                    H.xdp_attach(idx, new.prog_fd("flows"), mode="skb", replace_prog_fd=old.prog_fd("flows"))
                    gap = 0.0  # one replace call: the hook is never empty
                else:
                    H.xdp_detach(idx, mode="skb")
                    detached = time.perf_counter()
                    H.xdp_attach(idx, new.prog_fd("flows"), mode="skb")
                    gap = time.perf_counter() - detached
                swap = time.perf_counter() - started
            time.sleep(0.05)
            sampler.stop.set()
            sampler.join()
            kept = sum(1 for k, v in M.map_entries(path) if len(v) == 144)
            results[side] = {"fill": fill, "migrate": migrate, "swap": swap, "gap": gap, "kept": kept,
                             "samples": sampler.samples, "empty": sampler.empty}
            with H.netns(ns):
                H.xdp_detach(idx, mode="skb")
            old.close()
            new.close()
            subprocess.run(["umount", "-l", root], check=False)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.entries
    a, b = results["lqos.bpf"], results["LibreQoS"]
    print("%d flow entries (40-byte key, 136-byte value -> 144 bytes: one field added)" % n)
    print("%-36s %18s %18s" % ("", "lqos.bpf migrated", "LibreQoS-style"))
    print("%-36s %18d %18d" % ("entries kept in the new layout", a["kept"], b["kept"]))
    print("%-36s %18.3f %18.3f" % ("migration time per 1,000 entries (s)", a["migrate"] * 1000 / n,
                                   b["migrate"] * 1000 / n))
    print("%-36s %18.3f %18.3f" % ("whole map step (s)", a["migrate"], b["migrate"]))
    print("%-36s %18.6f %18.6f" % ("no program on the hook (s)", a["gap"], b["gap"]))
    print("%-36s %11d of %4d %11d of %4d" % ("hook samples with no program", a["empty"], a["samples"],
                                             b["empty"], b["samples"]))
    print("goal: every entry kept (%s), no time without a program (%s)"
          % ("met" if a["kept"] == n else "MISSED", "met" if a["empty"] == 0 and a["gap"] == 0 else "MISSED"))
    if args.strict and (a["kept"] != n or a["empty"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
