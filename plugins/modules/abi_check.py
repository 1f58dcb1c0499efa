#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: abi_check
short_description: Check ABI parity between the Rust mirror types and a built BPF object, and drift along the build chain
version_added: 0.1.0
description:
  - For every mirror pair of the spec (C(mirrors), Rust type to C struct tag or typedef), compares the C layout read
    from the BTF of the built object (libbpf C(btf__parse) and friends, through cffi) with the C-compatible layout of
    the Rust type (its C(repr) attribute - C, packed, align), and with every size assertion on that type in the
    Rust sources, in both styles - a constant array whose length is C(size_of::<T>), and C(assert_eq!) of
    C(size_of::<T>) and a number (C(std::mem), C(core::mem) or imported). Each pair gets a three-way
    report (BTF size, Rust size, asserted sizes) and a field-by-field table (name, C offset/size, Rust offset/size;
    nested structs expanded) that marks the first divergence.
  - The Rust half runs on the controller in the action plugin, which parses the mirror sources with tree-sitter
    (search roots C(rust.roots) of the spec, relative to O(rust_src)); the target needs only python3-cffi and libbpf.
  - Chain drift - program and map names in the generated skeleton against the spec's C(expect) (and program section
    types against the object), names C(wrapper.c) uses through the skeleton (C(skel->progs.NAME),
    C(skel->maps.NAME), C(skel->links.NAME), C(skel->rodata->VAR), the skeleton's C(NAME__open) and friends) against the
    skeleton, every function declared in C(wrapper.h) against C(bindings.rs) (present, same number of parameters),
    the sizing constants of the spec's C(constants) between the C header and the Rust const that restates them, and
    size assertions on other Rust types against their computed layout.
  - Derivation (spec C(derive), on by default) - mirror pairs come from the code and the object as well as from
    C(mirrors). On the controller the Rust sources are read for maps opened through a generic map type with key and
    value on a pin path (C(BpfMap::<IpHashKey, IpHashData>::from_path("/sys/fs/bpf/map_ip_to_cpu_and_tc")), the path
    a literal, a C(const) or a local C(let)), iterator readers (C(Iter::new(skel.progs.P, skel.maps.M)) with the key
    and value of the C(static) the function uses), calls through the bindings module, skeleton uses
    (C(X.progs.NAME), C(X.maps.NAME)), the pins C(lqos_kernel.rs) lists, and C(#[repr(C)]) structs. On the target
    the object gives each map's C key and value type (BTF of C(.maps)); they pair by map name, then by name
    (C(TcClassifyControl) with C(tc_classify_control)). Explicit C(mirrors) win. A construct the derivation cannot
    follow is reported with file, line and construct, never guessed.
  - Non-circular drift - every function the Rust side calls through the bindings is checked against C(bindings.rs)
    (name and number of arguments, naming the calling file:line), every skeleton program/map the Rust side uses
    against the skeleton, and every pin C(lqos_kernel.rs) lists against the maps the object pins. Rust consts named
    like a C(#define) of a C(maximums.h) are checked against it without configuration (C(derive.constants)).
  - Chain files are read from the build folder (the copies of C(wrapper.c) and C(wrapper.h) the pipeline made next to
    the skeleton); missing ones are listed in RV(skipped).
  - Read-only, except for the O(record) file when one is asked for; C(changed) is true only when that record was
    (or, in check mode, would be) rewritten. Every finding names the struct or file, the field or name, and what
    to change.
  - Comparing nothing is not a pass - when no mirror pair was compared (C(mirrors) empty, or none found) the result
    is C(ok=false) with that problem.
  - An O(object) that is a folder, not an ELF file, truncated, or built for another machine is named as such before
    libbpf reads it.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.spec
  - lqos.bpf.common.attributes_info
options:
  src:
    description:
      - The crate root (the folder that holds C(src/bpf)), as given to M(lqos.bpf.pipeline).
      - Read on the controller for the Rust mirror types and the C header constants when O(rust_src) is not set,
        so it must exist there too.
      - On the target, where it exists there, the build must have been made from these sources - the BPF sources
        under it hash as the build folder's C(manifest.json) records them. A build made from other sources is
        refused before anything is compared, naming the build and the first files that differ (C(build X was made
        from other sources (file F changed)), then C(rebuild first)) - comparing another tree's object with these
        Rust mirrors gives a false pass or a false alarm.
    type: path
  rust_src:
    description:
      - The crate root on the controller, when it differs from O(src). C(rust.roots), C(constants[].rust) and
        C(constants[].header) of the spec are relative to it (headers through C(sources.workdir)).
      - Required (or O(src)) when the spec has C(mirrors) or C(constants), or derives them (C(derive.mirrors),
        C(derive.constants), on by default).
    type: path
  build_dir:
    description:
      - The build folder holding the object, skeleton, C(wrapper.c), C(wrapper.h) and C(bindings.rs).
      - Defaults to the folder of O(object) when that is given, else C(/var/lib/lqos-bpf/<spec name>/current)
        (the current build of M(lqos.bpf.pipeline) with its default C(dest)).
    type: path
  object:
    description: The BPF object whose BTF is read. Defaults to C(outputs.object) of the spec inside O(build_dir).
    type: path
  fail_on_drift:
    description:
      - Fail the task when any pair differs or any drift is found. With V(false) the findings are returned in
        RV(problems) (and as warnings) and the task succeeds with RV(ok=false).
    type: bool
    default: true
  trial_load:
    description:
      - Also trial-load every program of the object alone on this kernel and probe every map type it uses, exactly
        as M(lqos.bpf.toolchain_info) does with C(checks=object) (nothing is pinned or attached), returned in
        RV(object_checks). A required program the kernel refuses fails the task with the preflight's message
        (after the O(record) is written and after an ABI drift, which is reported first); a refused optional one
        is a warning.
      - Lets one call check a build before any live change (role P(lqos.bpf.build#role) does).
    type: bool
    default: false
  record:
    description:
      - Write the outcome as JSON to this file on the target (spec, build id, object sha256, ok, summary, problems,
        drift, and each pair's rust/c/status), atomically and only when its content changes - before failing on
        drift, so a failed check is on record too. Role P(lqos.bpf.build#role) keeps it as C(<build_dir>/abi-check.json).
      - Not written in check mode.
    type: path
  rust_layouts:
    description:
      - The Rust half of the check as data (mirror layouts, size assertions, constants, derivation facts), as this
        module's action plugin computes it on the controller from O(rust_src) or O(src).
      - A normal task leaves it unset. Give it only to check layouts computed elsewhere (for example the
        C(rust_layouts) of an earlier result); it is then used as it is and nothing is parsed on the controller.
    type: dict
requirements:
  - tree-sitter and tree-sitter-rust on the controller (the Rust mirrors are parsed there)
  - python3-cffi and libbpf1 (C(libbpf.so.1)) on the target (the object's BTF is read through libbpf)
notes:
  - The task must run through the action plugin (a normal C(lqos.bpf.abi_check) task does) for the Rust half; run
    without it, every mirror pair is reported as not computed.
  - When C(wrapper.c) uses a skeleton name the BPF source no longer has, M(lqos.bpf.pipeline) already fails at its
    wrapper step and keeps the previous build current; this module reports the same drift for build folders made
    elsewhere (for example Cargo's C(OUT_DIR) of a partial C(build.rs) run), and the spec-side drift
    (C(expect.programs)) when C(wrapper.c) was fixed but the spec was not.
"""

EXAMPLES = r"""
- name: Check the reference build against its Rust mirrors
  lqos.bpf.abi_check:
    spec: reference
    src: /opt/lqos/shaper_sys
    build_dir: /var/lib/lqos-bpf/reference/current

- name: LibreQoS checkout on the controller, built on the shaper
  lqos.bpf.abi_check:
    spec: libreqos
    rust_src: "{{ playbook_dir }}/LibreQoS/src/rust/lqos_sys"
    build_dir: /var/lib/lqos-bpf/libreqos/current
  register: abi

- name: Report without failing, for an audit
  lqos.bpf.abi_check:
    spec: libreqos
    src: /opt/libreqos/src/rust/lqos_sys
    fail_on_drift: false
  register: abi_audit
"""

RETURN = r"""
ok:
  description: True when every pair matches and no drift was found.
  returned: always
  type: bool
  sample: true
derivation:
  description:
    - What was derived (spec C(derive.mirrors)); null when the Rust side was not read.
    - C(pairs) [{rust, c, origin (V(map) or V(name)), maps}] - the derived pairs and the map openings (file:line)
      that made them; C(map_sizes) [{map, side, rust, c, rust_size, c_size, where}] - primitive keys/values,
      compared by size; C(programs) [{name, section, type_name}] - the object's programs; C(pinned_maps)
      [{name, type, key_size, value_size, max_entries, flags, explicit}] - every map the object pins, with the
      file:line of C(lqos_kernel.rs) that lists it (or null); C(map_types)
      (per map, its C key and value type from BTF); C(notes) - what was not checked and why; C(bindings_module),
      C(calls), C(skeleton_uses) - the bindings module found and how many calls and skeleton uses were checked.
  returned: always
  type: dict
object_checks:
  description:
    - With O(trial_load=true), the object's checks as M(lqos.bpf.toolchain_info) returns them with C(checks=object) -
      C(checks), C(programs) (role, loaded or why not, and C(verifier), what the verifier said of it on this kernel),
      C(verifier_headroom) (one flat row per program - instructions and stack against their limits, the headroom),
      C(map_types), C(problems) (required checks that failed), C(warnings_found), C(ok).
      See docs/verifier-headroom.md.
  returned: when trial_load is true
  type: dict
summary:
  description: One line on the outcome.
  returned: always
  type: str
  sample: "spec 'reference': ABI parity holds: 4 mirror pair(s) match their C BTF layout, no chain drift"
pairs:
  description: >-
    One three-way report per mirror pair - the spec's C(mirrors) in spec order, then the derived pairs (each with
    C(origin) V(map) or V(name) and C(maps), the openings that made it; spec pairs have C(origin) V(spec)).
  returned: always
  type: list
  elements: dict
  contains:
    rust:
      description: The Rust type.
      returned: always
      type: str
      sample: IpHashData
    c:
      description: The C struct tag or typedef.
      returned: always
      type: str
      sample: ip_hash_info
    rust_file:
      description: Where the Rust type is defined (file:line, relative to the crate root), or null when unresolved.
      returned: always
      type: str
      sample: src/ip_mapping/ip_hash_data.rs:4
    btf_size:
      description: Size in bytes from the object's BTF, or null when the C type is missing there.
      returned: always
      type: int
      sample: 24
    rust_size:
      description: Size in bytes of the computed C-compatible Rust layout, or null when it cannot be computed.
      returned: always
      type: int
      sample: 24
    btf_align:
      description: Alignment from BTF.
      returned: always
      type: int
      sample: 8
    rust_align:
      description: Alignment of the Rust layout.
      returned: always
      type: int
      sample: 8
    asserted:
      description: Size assertions on the Rust type found in the sources.
      returned: always
      type: list
      elements: dict
      sample: [{size: 24, style: assert_eq, file: src/ip_mapping/ip_hash_data.rs, line: 24}]
      contains:
        size:
          description: The asserted size.
          returned: always
          type: int
        style:
          description: V(const_array) (a constant array whose length is C(size_of::<T>)) or V(assert_eq).
          returned: always
          type: str
        file:
          description: File, relative to the crate root.
          returned: always
          type: str
        line:
          description: Line of the assertion.
          returned: always
          type: int
    status:
      description: V(ok), V(mismatch), or V(error) when a side could not be computed (for example an unresolvable
        Rust type or a C type missing from the BTF).
      returned: always
      type: str
      sample: ok
    problems:
      description: The pair's findings, each naming the struct, the field and what to change.
      returned: always
      type: list
      elements: str
      sample: []
    fields:
      description: The field-by-field table in C order; nested struct members have dotted names.
      returned: always
      type: list
      elements: dict
      sample:
        - {name: cpu, c_name: cpu, c_type: __u32, c_offset: 0, c_size: 4, rust_name: cpu, rust_type: u32,
           rust_offset: 0, rust_size: 4, status: ok, first_divergence: false}
      contains:
        name:
          description: The field (C name, or the Rust name when C has no counterpart).
          returned: always
          type: str
        c_name:
          description: C member name, null when missing in C.
          returned: always
          type: str
        c_type:
          description: C type as BTF spells it.
          returned: always
          type: str
        c_offset:
          description: Byte offset in C (from the start of the mirrored struct).
          returned: always
          type: int
        c_size:
          description: Size in C.
          returned: always
          type: int
        rust_name:
          description: Rust field name, null when missing in Rust.
          returned: always
          type: str
        rust_type:
          description: Rust type as written, generics substituted.
          returned: always
          type: str
        rust_offset:
          description: Byte offset in Rust.
          returned: always
          type: int
        rust_size:
          description: Size in Rust.
          returned: always
          type: int
        status:
          description: V(ok), V(size), V(offset), V(element) (same size, other array element), V(missing_in_rust)
            or V(missing_in_c).
          returned: always
          type: str
        first_divergence:
          description: True on the first row that is not V(ok).
          returned: always
          type: bool
    first_divergence:
      description: A copy of the first row that is not V(ok), or null.
      returned: always
      type: dict
      sample: {name: tc_handle, c_offset: 8, c_size: 8, rust_offset: 4, rust_size: 4, status: size}
drift:
  description: Chain drift findings (skeleton, C(wrapper.c), C(wrapper.h), C(bindings.rs), constants, size assertions
    on types that are not mirror pairs).
  returned: always
  type: list
  elements: dict
  sample:
    - kind: wrapper
      subject: tc_classify
      message: "wrapper.c:67 uses skel->progs.tc_classify but the skeleton shaper_kern_skel.h has no program `tc_classify` (it has: xdp_shaper, tc_shape)"
      fix: "update wrapper.c to the new skeleton name `tc_shape`, or rename it back in the BPF source"
  contains:
    kind:
      description: V(program), V(map), V(wrapper), V(binding), V(constant) or V(asserted_size).
      returned: always
      type: str
    subject:
      description: The name concerned (program, map, function, constant or Rust type).
      returned: always
      type: str
    message:
      description: What differs, with file:line where there is one.
      returned: always
      type: str
    fix:
      description: What to change.
      returned: always
      type: str
constants:
  description: The spec's sizing constants, C header against the Rust const that restates it.
  returned: always
  type: list
  elements: dict
  sample: [{name: MAX_TRACKED_IPS, header: src/bpf/common/maximums.h, c_value: 65536, rust: src/lib.rs,
            rust_name: MAX_TRACKED_IPS, rust_value: 65536, status: ok}]
  contains:
    name:
      description: The C C(#define).
      returned: always
      type: str
    header:
      description: The header, relative to the crate root.
      returned: always
      type: str
    c_value:
      description: Its integer value (simple arithmetic on earlier defines is evaluated).
      returned: always
      type: int
    rust:
      description: The Rust file that restates it, or null.
      returned: always
      type: str
    rust_name:
      description: The Rust const name.
      returned: always
      type: str
    rust_value:
      description: The Rust value, or null.
      returned: always
      type: int
    status:
      description: V(ok), V(mismatch), V(c_only) (the Rust side does not restate it) or V(error).
      returned: always
      type: str
problems:
  description: Every finding as one message that says what differs and what to change (pairs first, then drift).
  returned: always
  type: list
  elements: str
  sample: []
skipped:
  description: Checks that could not run, with the reason (for example a build folder without bindings.rs).
  returned: always
  type: list
  elements: str
  sample: []
object:
  description: The BPF object whose BTF was read.
  returned: always
  type: str
  sample: /var/lib/lqos-bpf/reference/current/shaper_kern.o
build_dir:
  description: The build folder the chain files were read from.
  returned: always
  type: str
  sample: /var/lib/lqos-bpf/reference/current
skeleton:
  description: Names the skeleton declares (C(object), C(programs), C(maps), C(internal_maps)), or null without one.
  returned: always
  type: dict
  sample: {object: shaper_kern, programs: [xdp_shaper, tc_classify], maps: [cpu_map, host_traffic],
           internal_maps: [rodata, data, bss]}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lqos.bpf.plugins.module_utils._abi.check import run_check
from ansible_collections.lqos.bpf.plugins.module_utils._common import default_build_root, LqosError, SPEC_ARGS, run_module
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec


def argument_spec() -> dict:
    spec = dict(
        src=dict(type="path"),
        rust_src=dict(type="path"),
        build_dir=dict(type="path"),
        object=dict(type="path"),
        fail_on_drift=dict(type="bool", default=True),
        record=dict(type="path"),
        trial_load=dict(type="bool", default=False),
        rust_layouts=dict(type="dict"),
    )
    spec.update(SPEC_ARGS)
    return spec


def run(module) -> dict:
    params = module.params
    spec = validate_spec(params["spec"])
    build_dir = params["build_dir"]
    if not build_dir:
        build_dir = (os.path.dirname(params["object"]) if params["object"]
                     else os.path.join(default_build_root(spec["name"]), "current"))
    if os.path.lexists(build_dir) and not os.path.isdir(build_dir):
        raise LqosError("build_dir %s is a file, not a build folder." % build_dir,
                        "give the folder lqos.bpf.pipeline built (its build_dir, or <dest>/current).")
    obj = params["object"] or os.path.join(build_dir, spec["outputs"]["object"])
    # src is the crate on this host, as given to lqos.bpf.pipeline: the build must have been made from it.
    src = params["src"] if params["src"] and os.path.isdir(params["src"]) else None
    return run_check(spec, build_dir, obj, params["rust_layouts"], params["record"], params["fail_on_drift"],
                     params["trial_load"], module.check_mode, module.warn, src=src)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
