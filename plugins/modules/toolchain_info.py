#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: toolchain_info
short_description: Preflight a host for building, loading and attaching the lqos_sys eBPF pipeline
version_added: 0.1.0
description:
  - Reports, for the target host, every tool of the build chain (clang, llc, bpftool, bindgen, ar) with
    path, version and whether it meets the minimum; libbpf headers and shared library; python3-cffi;
    the kernel release, BTF, bpffs at the pin root, capabilities, XDP and TC support; and the possible-CPU
    count against every CPU-sized map of the pipeline (predicts E2BIG before a load fails).
  - Each miss carries its fix (Debian/Ubuntu package, mount command, or constant to change).
  - Read-only; C(changed) is always false.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.pin_root
  - lqos.bpf.common.attributes_info
options:
  spec:
    description:
      - Optional pipeline spec (built-in name, YAML path on the controller, or mapping). When given with
        O(src), CPU-sized maps are checked against the possible CPUs, and the spec's
        C(toolchain.minimum_versions) apply.
    type: raw
  src:
    description: Crate root on the target (the folder that holds C(src/bpf)), used with O(spec).
    type: path
  minimum_versions:
    description:
      - Minimum versions by name (V(clang), V(llc), V(bpftool), V(bindgen), V(ar), V(libbpf), V(kernel)).
        Override the spec's and the built-in minimums.
    type: dict
    default: {}
  object:
    description:
      - A built BPF object on the target. Every program in it is trial-loaded alone (nothing is pinned or
        attached; the load changes nothing on the host) and every map type it uses is probed through libbpf, so
        a program this kernel refuses is known before a rollout. Results are in RV(programs) and RV(map_types).
      - A refused V(required) program (one the spec attaches, or spec C(programs) says so) is a problem; a refused
        V(optional) one is a warning, because lqos.bpf.attach leaves it out.
    type: path
  checks:
    description:
      - V(all) runs every check; V(object) only the checks of O(object) (programs and map types), for a host
        whose toolchain was checked already (the build role does this right after a build).
    type: str
    choices: [all, object]
    default: all
  fail_on_missing:
    description:
      - Fail with one summary of every required check that did not pass (but those named in O(ignore)).
      - The failed result holds that message and RV(problems) only.
    type: bool
    default: false
  ignore:
    description:
      - Names of checks (the C(name) of a row of RV(checks), e.g. V(bpffs)) whose failure does not fail the task with
        O(fail_on_missing). They are still reported under RV(problems) and RV(ok). The toolchain role ignores
        V(bpffs) when it mounts bpffs itself right after the preflight.
      - A O(pin_root) where no bpffs may be mounted (V(/), a system folder such as V(/usr) or V(/etc), anything under
        V(/proc) or V(/sys) but V(/sys/fs/bpf), a folder that holds files) fails the check V(pin_root) as well, whose
        fix is to choose a bpffs location; ignoring V(bpffs) never leads a role to mount over it.
    type: list
    elements: str
    default: []
requirements:
  - python3 on the target; what it checks (clang, llc, bpftool, bindgen, ar, libbpf1, python3-cffi, kernel BTF,
    bpffs, capabilities) it reports as problems with their fix, it does not need them to run
notes:
  - Checks marked not required (CPU-sized maps) are reported under RV(warnings_found) and never fail the task.
"""

EXAMPLES = r"""
- name: Preflight the shaper
  lqos.bpf.toolchain_info:
    spec: reference
    src: /opt/lqos/shaper_sys
    fail_on_missing: true

- name: Preflight a LibreQoS checkout with a newer clang required
  lqos.bpf.toolchain_info:
    spec: libreqos
    src: /opt/libreqos/src/rust/lqos_sys
    minimum_versions:
      clang: "14"
  register: preflight
"""

RETURN = r"""
ok:
  description: True when every required check passed.
  returned: always
  type: bool
  sample: true
checks:
  description: One row per check, with the fix for each that did not pass.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: clang, ok: true, required: true, message: "clang 14.0.6 at /usr/lib/llvm-14/bin/clang", fix: null}
    - {name: bpffs, ok: false, required: true, message: "bpffs not mounted at /sys/fs/bpf (the kernel supports it)",
       fix: "mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf"}
problems:
  description: The required checks that did not pass.
  returned: always
  type: list
  elements: dict
warnings_found:
  description: Checks that did not pass but are not required (for example a CPU map that will be resized).
  returned: always
  type: list
  elements: dict
toolchain:
  description:
    - Per tool, whether it was found, its path, version, minimum and package.
    - A tool found but printing no version also has C(problem) and C(fix), and C(wrapper=true) when it is a
      distribution wrapper that found no binary for the running kernel (Ubuntu's C(/usr/sbin/bpftool) without the
      kernel's C(linux-tools-$(uname -r)) package); the fix names the package that provides one (Ubuntu
      C(linux-tools-$(uname -r)) or C(linux-tools-generic), Debian C(bpftool)). M(lqos.bpf.pipeline) refuses to
      build with such a wrapper, with the same text.
  returned: always
  type: dict
  sample: {clang: {found: true, path: /usr/lib/llvm-14/bin/clang, version: "14.0.6", minimum: "11.0",
           meets_minimum: true, package: clang}}
libbpf:
  description: libbpf headers, shared library version and cffi availability.
  returned: always
  type: dict
programs:
  description:
    - With O(object), one row per program of the object. C(class) says why a program cannot load
      (V(kernel_policy) refused before verification, V(attach_target) its kernel function or BTF id is missing,
      V(verifier), V(resource_limit), V(load_error)), C(reason) and C(fix) say what to do, C(feature) what is
      lost without it.
    - >-
      C(verifier) is what the verifier said of the program on this kernel (docs/verifier-headroom.md) -
      C(status) (V(verified), V(not loaded: refused), V(not loaded: left out)), C(kernel), C(insns) (C(used)
      verified instructions, C(limit) 1000000, C(source) V(bpf_prog_info.verified_insns) or V(verifier log),
      C(headroom_pct)), C(stack) (C(used) bytes along the deepest call chain, C(limit) 512, C(depths) per
      subprogram, C(chain), C(method) V(call_graph) or the conservative V(all_subprograms), C(headroom_pct)),
      C(headroom_pct) (the smaller), C(load_ms), C(verification_usec), C(summary). No figures (null) for a program
      that did not load or is left out.
  returned: when O(object) is given
  type: list
  elements: dict
  sample:
    - {name: flow_reader, section: iter/bpf_map_elem, type_name: tracing, role: optional, loadable: false,
       class: kernel_policy, reason: "the kernel refused program flow_reader ... before verifying it: ...",
       fix: "boot a kernel that allows tracing programs, or ...", errno: 1, log_tail: null,
       feature: "reading maps through a BPF iterator (userspace must walk the map itself)",
       verifier: {status: "not loaded: refused", kernel: "6.1.0-27-amd64", insns: null, stack: null,
                  headroom_pct: null, load_ms: 7.5, verification_usec: null, summary: "not loaded: refused"}}
    - {name: tc_classify, section: tc, type_name: sched_cls, role: required, loadable: true,
       verifier: {status: verified, kernel: "6.1.0-27-amd64",
                  insns: {used: 2199, limit: 1000000, source: bpf_prog_info.verified_insns, headroom_pct: 99.78},
                  stack: {used: 256, limit: 512, depths: [240], chain: [0], method: call_graph, headroom_pct: 50.0},
                  headroom_pct: 50.0, load_ms: 6.3, verification_usec: 806,
                  summary: "headroom 50.0 % (insns 2199 of 1000000, 99.78 %; stack 256 of 512 bytes, 50.0 %)"}}
verifier_headroom:
  description:
    - >-
      With O(object), each program's verifier figures as one flat row (see RV(programs)); C(status) is
      V(verified), V(not loaded: refused) or V(not loaded: left out), and the figures are null without
      verification. Null without O(object).
  returned: always
  type: list
  elements: dict
  sample:
    - {program: tc_classify, kernel: "6.1.0-27-amd64", status: verified, headroom_pct: 50.0, insns: 2199,
       insns_limit: 1000000, insns_source: bpf_prog_info.verified_insns, insns_headroom_pct: 99.78, stack: 256,
       stack_limit: 512, stack_method: call_graph, stack_headroom_pct: 50.0, load_ms: 6.3}
map_types:
  description: With O(object), whether this kernel supports each map type the object uses (libbpf probe).
  returned: when O(object) is given
  type: dict
  sample: {lpm_trie: true, lru_hash: true, cpumap: true}
kernel:
  description: Kernel release, BTF, bpffs, capabilities, XDP/TC support and possible CPUs.
  returned: always
  type: dict
  sample: {release: "6.1.0-27-amd64", btf: true, possible_cpus: 2, xdp: true, tc: true}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError, PIN_ARGS, run_module
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec
from ansible_collections.lqos.bpf.plugins.module_utils._build.toolchain import run_preflight


def argument_spec() -> dict:
    spec = dict(
        spec=dict(type="raw"),
        src=dict(type="path"),
        minimum_versions=dict(type="dict", default={}),
        object=dict(type="path"),
        checks=dict(type="str", choices=["all", "object"], default="all"),
        fail_on_missing=dict(type="bool", default=False),
        ignore=dict(type="list", elements="str", default=[]),
    )
    spec.update(PIN_ARGS)
    return spec


def run(module) -> dict:
    params = module.params
    spec = validate_spec(params["spec"]) if params["spec"] is not None else None
    if params["checks"] == "object" and not params["object"]:
        raise LqosError("checks: object needs the object option.", "name the built .o file in object.")
    result = run_preflight(module, spec, params["pin_root"], params["minimum_versions"], params["src"],
                           params["object"], params["checks"], params["fail_on_missing"], params["ignore"])
    return dict(changed=False, **result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
