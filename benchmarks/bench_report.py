"""Benchmark the fleet ABI report: 1,000 synthetic abi_info host results through the report code.

Measures, for a fleet of N hosts (default 1,000) shaped like real abi_info results
(15 pins, 2 interfaces with XDP + 2 TC hooks each, a recorded ABI check; a few
hosts drifting, a few unbuilt or unreachable, three object hashes):

1. aggregation alone (``_report.report.aggregate``: jmespath extraction, classification,
   grouping, drift list);
2. the whole report (aggregation + JSON + Markdown + HTML rendering), which is what
   ``lqos.bpf.abi_report`` does before writing the files.

Goal: the whole report under 1 s for 1,000 hosts. Prints the median of several
rounds and the verdict; asserts nothing.

    python3 benchmarks/bench_report.py [--hosts N] [--rounds R]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
# tests/conftest.py makes ansible_collections.lqos.bpf importable from this checkout.
import conftest  # noqa: E402,F401  pylint: disable=unused-import
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import report as _report  # noqa: E402
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import render as _render

GOAL_SECONDS = 1.0
MAPS = ["ip_to_shaper", "shaper_hotcache", "host_traffic", "flow_table", "cpu_map", "cpus_available",
        "shaper_control", "bridge_redirect", "map_a", "map_b", "map_c", "map_d", "map_e"]


def synthetic_host(i: int, rng: random.Random) -> dict | None:
    if i % 200 == 7:
        return None                                            # unreachable
    if i % 250 == 3:
        return {"failed": True, "msg": "abi_info failed"}      # module error
    sha = ("%064x" % (i % 3)) if i % 97 else None             # three object hashes; a few unbuilt hosts
    build_id = "%016x" % (i % 3)
    drifting = i % 50 == 0
    pins = [{"name": m, "path": "/sys/fs/bpf/" + m, "kind": "map", "status": "compatible", "reason": "",
             "differences": [], "id": 1000 + j, "type": "hash", "key_size": 16, "value_size": 24,
             "max_entries": 65536, "used_by": [{"id": 40 + j, "name": "xdp_shaper", "tag": "0a1b2c3d4e5f6789"}]}
            for j, m in enumerate(MAPS)]
    pins += [{"name": "maps.debug", "status": "not_a_map"}, {"name": "progs.debug", "status": "not_a_map"}]
    if drifting:
        pins[2].update(status="incompatible", reason="value_size: expected 112 (object), pinned 128")
    tag = "%016x" % rng.getrandbits(64)
    attached = []
    for n in range(2):
        recorded = tag if not (drifting and n == 1) else "ffffffffffffffff"
        attached.append({
            "interface": "eth%d" % n, "netns": None, "ifindex": 2 + n, "present": True, "error": None,
            "xdp": {"mode": "native", "id": 100 + n, "name": "xdp_shaper", "tag": tag,
                    "expected_program": "xdp_shaper", "expected_tag": recorded, "matches": recorded == tag},
            "tc": [{"interface": "eth%d" % n, "netns": None, "direction": d, "handle": 1, "priority": 0xC02F,
                    "id": 200 + n, "name": p[:15], "tag": tag, "expected_program": p, "expected_tag": tag,
                    "matches": True} for d, p in (("egress", "tc_classify"), ("ingress", "tc_bridge_redirect"))],
        })
    return {
        "changed": False,
        "kernel": {"release": "6.1.0-%d-amd64" % (20 + i % 8), "btf": True, "possible_cpus": 16},
        "toolchain": {"clang": "14.0.6", "llc": "14.0.6", "bpftool": "7.1.0", "bindgen": "0.60.1",
                      "ar": "2.40", "libbpf": "1.1"},
        "build": None if sha is None else {
            "build_id": build_id, "build_dir": "/var/lib/lqos-bpf/reference/builds/" + build_id,
            "object": {"path": "/var/lib/lqos-bpf/reference/builds/%s/shaper_kern.o" % build_id, "sha256": sha,
                       "size": 41232},
            "skeleton": {"object": "shaper_kern", "programs": ["xdp_shaper", "tc_classify"], "maps": MAPS[:8]}},
        "abi_check": None if sha is None else {
            "ok": i % 333 != 5, "build_id": build_id, "summary": "spec 'reference': ...",
            "problems": [] if i % 333 != 5 else ["struct flow_key: size 40 in C, 48 in Rust"]},
        "attached": attached,
        "pins": {"pin_root": "/sys/fs/bpf", "error": None, "maps": pins,
                 "summary": {"total": len(pins), "compatible": len(pins) - 3, "incompatible": int(drifting),
                             "not_a_map": 2}},
        "errors": [],
    }


def median_seconds(fn, rounds: int) -> float:
    times = []
    for dummy in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(42)
    results = {"shaper%04d" % i: synthetic_host(i, rng) for i in range(args.hosts)}

    templates = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "roles", "audit", "templates")

    def whole():
        report = _report.aggregate(results)
        _render.to_json(report)
        for name in ("fleet-abi-report.md.j2", "fleet-abi-report.html.j2"):
            _render.render(report, os.path.join(templates, name))
        return report

    report = whole()
    agg = median_seconds(lambda: _report.aggregate(results), args.rounds)
    total = median_seconds(whole, args.rounds)
    print("fleet report benchmark: %d hosts, median of %d rounds" % (args.hosts, args.rounds))
    print("  %s" % _report.summary_line(report))
    print("  aggregation only            %.3f s  (%.2f ms/host)" % (agg, 1000 * agg / args.hosts))
    print("  aggregation + JSON/MD/HTML  %.3f s  (%.2f ms/host)" % (total, 1000 * total / args.hosts))
    verdict = "meets" if total < GOAL_SECONDS else "MISSES"
    print("  goal < %.1f s for the whole report: %s (ratio %.2f of the goal)"
          % (GOAL_SECONDS, verdict, total / GOAL_SECONDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
