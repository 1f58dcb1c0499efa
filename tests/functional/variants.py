"""Layout variants of the reference pipeline for upgrade tests (pytest and molecule/service).

``make_v2(root)`` copies ``bpf/`` under ``root`` and grows two maps' values - ``flow_table`` 136 -> 144 bytes
(``FlowData`` gains ``retransmits``) and ``ip_to_shaper``/``shaper_hotcache`` 24 -> 32 bytes (``cpu`` becomes
``__u64``) - with the Rust mirrors, the stand-in daemon's own mirror (``shaperd.c``, as lqosd's Rust mirrors change
with the C) and a spec whose ``pinned_maps`` sizes say so. Returns ``(crate_root, spec_path)``.

As a command (molecule/service runs it on the controller): ``python3 variants.py v2 ROOT`` prints
``{"crate": ..., "spec": ...}`` as JSON; ``ROOT`` must not hold a ``bpf/`` yet.
"""
from __future__ import annotations

import json
import os
import sys

import yaml

from lqos_testlib import REPO, copy_bpf, edit


def make_v2(root):
    crate = copy_bpf(os.path.join(root, "src_v2"))
    common = os.path.join(crate, "src", "bpf", "common")
    edit(os.path.join(common, "flows.h"), "\t__u64 owner_hash[2]; /* [0] circuit id, [1] device id */\n",
         "\t__u64 owner_hash[2]; /* [0] circuit id, [1] device id */\n\t__u64 retransmits;\n")
    edit(os.path.join(common, "ip_hash.h"), "\t__u32 cpu;        /* cpumap slot", "\t__u64 cpu;        /* cpumap slot")
    flow_rs = os.path.join(crate, "src", "flow_data.rs")
    edit(flow_rs, "    pub owner_hash: [u64; 2],\n}", "    pub owner_hash: [u64; 2],\n    pub retransmits: u64,\n}")
    edit(flow_rs, "const _: [(); 136] = [(); std::mem::size_of::<FlowData>()];",
         "const _: [(); 144] = [(); std::mem::size_of::<FlowData>()];")
    edit(flow_rs, "assert_eq!(std::mem::size_of::<FlowData>(), 136);", "assert_eq!(std::mem::size_of::<FlowData>(), 144);")
    ip_rs = os.path.join(crate, "src", "ip_mapping", "ip_hash_data.rs")
    edit(ip_rs, "    pub cpu: u32,", "    pub cpu: u64,")
    edit(ip_rs, "assert_eq!(std::mem::size_of::<IpHashData>(), 24);", "assert_eq!(std::mem::size_of::<IpHashData>(), 32);")
    daemon = os.path.join(crate, "src", "daemon", "shaperd.c")
    edit(daemon, "struct ip_value {\n\t__u32 cpu;", "struct ip_value {\n\t__u64 cpu;")
    edit(daemon, "_Static_assert(sizeof(struct ip_value) == 24, \"ip_hash_info is 24 bytes\");",
         "_Static_assert(sizeof(struct ip_value) == 32, \"ip_hash_info is 32 bytes\");")
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        spec = yaml.safe_load(fh)
    sizes = {"flow_table": 144, "ip_to_shaper": 32, "shaper_hotcache": 32}
    for item in spec["pinned_maps"]:
        item["value_size"] = sizes.get(item["name"], item["value_size"])
    path = os.path.join(root, "reference-v2.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(spec, fh)
    return crate, path


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "v2":
        sys.exit("usage: variants.py v2 ROOT")
    crate_root, spec_path = make_v2(sys.argv[2])
    print(json.dumps({"crate": crate_root, "spec": spec_path}))
