#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline
short_description: Build the whole lqos_sys eBPF chain on the target, idempotently and atomically
version_added: 0.1.0
description:
  - Runs the chain of an lqos_sys-shaped crate exactly as its C(build.rs) does - clang to LLVM IR (same
    flags, working directory C(sources.workdir)), llc to a BPF object, C(bpftool gen skeleton), C(wrapper.h)
    and C(wrapper.c) copied to the output folder, the wrapper compiled against the skeleton and archived with
    C(ar), and bindgen on C(wrapper.h). The wrapper compile and bindgen run side by side.
  - Anything clang, llc or the wrapper compile write to stderr is fatal (as in C(build.rs), which checks all three
    with the same panicking helper); the error names the step, the command, the first diagnostic's file:line and
    the compiler's own message.
  - With the spec's C(derive.flags) (the built-in C(libreqos) spec sets it) the clang, llc and wrapper flags are read
    from the crate's own C(build.rs) argument lists, so every release builds with its own flags (LibreQoS v1.4's
    clang step also passes C(-c)); RV(flags_source) says which lines they came from.
  - Idempotent by content - a manifest of hashes of every input (sources, headers, spec, flags, tool versions)
    decides. An unchanged tree returns C(changed=false) without running any tool.
  - Files outside the crate that the compile reads (C(linux/bpf.h) of linux-libc-dev, C(bpf/bpf_helpers.h) of
    libbpf-dev, a header reached through an C(-I) flag) come from clang's C(-MD) and bindgen's C(--depfile) output;
    the build record keeps their hashes and a changed or removed one rebuilds, named in RV(rebuild_reasons).
  - Outputs land atomically - each build goes to a staging folder and is then published by renaming it to a
    folder name no link uses (C(dest/builds/<id>), or C(<id>.<n>) when a forced rebuild has the same id) and
    swapping the C(dest/current) symlink; old folders are pruned only after C(current) has left them. A reader of
    C(dest/current/<output>) always finds a complete build, even during O(force=true) rebuilds, and a failed or
    killed build leaves the previous outputs in use. The build that was current before is kept as
    C(dest/previous) for rollback.
  - Every input is read first; a source of the wrong type, a file name that is not UTF-8 or a missing tool fails
    before O(dest) is touched. A tool that fails because the build folder's filesystem is full, over quota or
    read-only (or succeeds while it filled up) is reported as that, with the folder to free.
  - A lock (C(dest/.lock)) keeps two builds of the same output folder from running at once.
  - Check mode reads O(dest) only - no lock file, no write probe, no tool version cache.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.spec
  - lqos.bpf.common.attributes_action
options:
  src:
    description:
      - The crate root on the target (the folder that holds C(src/bpf)), for example C(bpf/shaper_sys) of this
        collection or C(src/rust/lqos_sys) of a LibreQoS checkout.
    type: path
    required: true
  dest:
    description:
      - The output folder (Cargo's OUT_DIR analogue). Builds live in C(dest/builds/<id>); C(dest/current) points to
        the one in use.
      - Defaults to C(/var/lib/lqos-bpf/<spec name>).
    type: path
  state:
    description:
      - V(present) builds when any input changed.
      - V(rolled_back) makes C(dest/previous) current again and keeps the replaced build as C(dest/failed); a second
        run finds no previous build and changes nothing.
    type: str
    choices: [present, rolled_back]
    default: present
  force:
    description: Rebuild even when the manifest says nothing changed.
    type: bool
    default: false
  lock_timeout:
    description: Seconds to wait for another build (or rollback) of the same O(dest) to finish.
    type: int
    default: 300
  synced_from:
    description:
      - Build only sources synced from this archive - C(sha1) (its SHA-1) must be the content of the file C(stamp)
        (on the target, written after the archive was unpacked). When it is not (no stamp yet, another archive),
        nothing is read, built or checked - RV(sources_current) is false and the task reports no change - so the
        caller syncs the sources first and runs the module again (without this option).
      - Lets a rollout ask "are the synced sources current?" and build in one module run. Ignored with
        O(state=rolled_back).
    type: dict
    suboptions:
      stamp:
        description: The stamp file on the target.
        type: path
        required: true
      sha1:
        description: The SHA-1 of the archive the sources must come from.
        type: str
        required: true
  check:
    description:
      - Also check the current build in the same run, exactly as M(lqos.bpf.abi_check) does with the same options
        (its O(lqos.bpf.abi_check#module:build_dir) is RV(build_dir)) - one module run instead of two. The result is
        RV(abi_check).
      - Runs whenever a build of these sources exists after this run. In check mode with a rebuild pending it
        does not run (the current build is of other sources) and a warning says so; a build made from other
        sources is refused as by M(lqos.bpf.abi_check). A failed check fails the task with the check's own
        message; the build stays published.
      - Accepted in every form Ansible allows - a YAML mapping, a JSON string, or key=value pairs
        (C(check='trial_load=true record=false')) - with the same result. Without its own C(src) the check reads
        the Rust side at O(src).
      - Ignored with O(state=rolled_back).
    type: dict
    suboptions:
      src:
        description: The crate root on the controller, where the Rust mirrors are read (O(lqos.bpf.abi_check#module:src));
          defaults to O(src).
        type: path
      rust_src:
        description: As O(lqos.bpf.abi_check#module:rust_src).
        type: path
      rust_layouts:
        description: As O(lqos.bpf.abi_check#module:rust_layouts) (normally computed by the action plugin).
        type: dict
      record:
        description: Keep the outcome in the build folder as C(abi-check.json), where M(lqos.bpf.abi_info) reads it
          (written only when it changes, never in check mode).
        type: bool
        default: true
      fail_on_drift:
        description: As O(lqos.bpf.abi_check#module:fail_on_drift).
        type: bool
        default: true
      trial_load:
        description: As O(lqos.bpf.abi_check#module:trial_load).
        type: bool
        default: false
  preflight:
    description:
      - Preflight the toolchain and the kernel first, exactly as M(lqos.bpf.toolchain_info) does with
        C(fail_on_missing=true) and the same options - one module run instead of two (the build role does this).
        The result is RV(preflight).
      - A required check that fails and is not named in O(preflight.ignore) fails the task with the preflight's own
        message, one line per problem with its fix, before anything is read or built.
      - Ignored with O(state=rolled_back).
    type: dict
    suboptions:
      pin_root:
        description: The bpffs folder whose mount is checked (O(lqos.bpf.toolchain_info#module:pin_root)).
        type: path
        default: /sys/fs/bpf
      minimum_versions:
        description: As O(lqos.bpf.toolchain_info#module:minimum_versions).
        type: dict
        default: {}
      ignore:
        description: As O(lqos.bpf.toolchain_info#module:ignore), e.g. V(bpffs), which a build does not need.
        type: list
        elements: str
        default: []
requirements:
  - clang, llc (llvm), bpftool, bindgen, ar (binutils), libbpf-dev and gcc-multilib (the asm headers) on the target
"""

EXAMPLES = r"""
- name: Build this collection's reference pipeline
  lqos.bpf.pipeline:
    spec: reference
    src: /opt/lqos/shaper_sys
    dest: /var/lib/lqos-bpf/reference
  register: build

- name: Build a LibreQoS checkout with the built-in spec
  lqos.bpf.pipeline:
    spec: libreqos
    src: /opt/libreqos/src/rust/lqos_sys

- name: What would be rebuilt, and why
  lqos.bpf.pipeline:
    spec: reference
    src: /opt/lqos/shaper_sys
  check_mode: true
  diff: true

- name: Build, then check ABI parity with the Rust mirrors and trial-load every program, in one run
  lqos.bpf.pipeline:
    spec: reference
    src: /opt/lqos/shaper_sys
    check:
      src: "{{ playbook_dir }}/bpf/shaper_sys"
      trial_load: true

- name: Preflight the toolchain and the kernel, then build - a host that lacks a tool stops before the build
  lqos.bpf.pipeline:
    spec: reference
    src: /opt/lqos/shaper_sys
    preflight:
      ignore: [bpffs]   # a build does not need it; the deploy role mounts it before the attach
  register: build

- name: Roll back to the previous build
  lqos.bpf.pipeline:
    spec: reference
    src: /opt/lqos/shaper_sys
    state: rolled_back
"""

RETURN = r"""
rebuild_reasons:
  description: Why a build ran (or would run in check mode); empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: ["input src/bpf/common/maximums.h: changed",
           "dependency /usr/include/linux/bpf.h (read by the compile, outside the crate): changed"]
build_dir:
  description: The folder of the current build.
  returned: when a build exists
  type: str
  sample: /var/lib/lqos-bpf/reference/builds/3f2a9c0d1e4b5a6c
build_id:
  description: The current build's folder name - the first 16 hex digits of its manifest hash, with a C(.<n>) suffix
    when a forced rebuild of the same inputs was published next to the build it replaces.
  returned: when a build exists
  type: str
manifest_hash:
  description: sha256 over every input, the spec's build sections, flags and tool versions.
  returned: always
  type: str
previous_build_dir:
  description: The build kept for rollback, if any.
  returned: always
  type: str
outputs:
  description: Every output of the chain with its path, sha256 and size.
  returned: when a build exists
  type: dict
  sample: {object: {path: /var/lib/lqos-bpf/reference/builds/3f2a9c0d1e4b5a6c/shaper_kern.o, sha256: "9b1c...", size: 41232}}
programs:
  description: Program names declared by the generated skeleton.
  returned: when a build exists
  type: list
  elements: str
  sample: [xdp_shaper, tc_classify]
maps:
  description: Map names declared by the generated skeleton (internal .rodata/.data/.bss maps excluded).
  returned: when a build exists
  type: list
  elements: str
timings:
  description: Seconds per step (clang, llc, skeleton, copy, wrapper, ar, bindgen, total) of the build that produced the current outputs.
  returned: when a build exists
  type: dict
  sample: {clang: 0.21, llc: 0.09, skeleton: 0.02, wrapper: 0.05, ar: 0.01, bindgen: 0.3, total: 0.68}
flags:
  description: The flags the chain ran with (C(clang), C(llc), C(wrapper), C(bindgen), C(bindgen_clang)).
  returned: always
  type: dict
flags_source:
  description: V(spec), or C(build.rs:L1,L2,L3) - the lines of the clang, llc and wrapper argument lists read with C(derive.flags).
  returned: always
  type: str
  sample: build.rs:76,100,133
tool_warnings:
  description: What bpftool, ar or bindgen wrote to stderr without failing.
  returned: when a build exists
  type: list
  elements: str
reused_build:
  description: True when an intact build with the same manifest already existed and was made current without running any tool.
  returned: always
  type: bool
sources_current:
  description: With O(synced_from) - false when the stamp did not name that archive (nothing was done then).
  returned: with O(synced_from)
  type: bool
preflight:
  description: The preflight's result, as M(lqos.bpf.toolchain_info) returns it (C(ok), C(checks), C(problems),
    C(warnings_found), C(toolchain), C(libbpf), C(kernel) - C(kernel.bpffs.mounted) says whether bpffs is mounted at
    O(preflight.pin_root)).
  returned: with O(preflight), unless O(state=rolled_back)
  type: dict
abi_check:
  description: The result of the ABI check of the current build, as M(lqos.bpf.abi_check) returns it (C(ok), C(summary),
    C(problems), C(pairs), C(drift), C(object_checks), ...; its C(changed) says whether the record changed).
  returned: with O(check), when a build exists
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    ABI_CHECK_FILE, default_build_root, LqosError, SPEC_ARGS, run_module,
)
from ansible_collections.lqos.bpf.plugins.module_utils._build.pipeline import Pipeline, run_pipeline
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec
from ansible_collections.lqos.bpf.plugins.module_utils._build.toolchain import run_preflight


def argument_spec() -> dict:
    spec = dict(
        src=dict(type="path", required=True),
        dest=dict(type="path"),
        state=dict(type="str", choices=["present", "rolled_back"], default="present"),
        force=dict(type="bool", default=False),
        lock_timeout=dict(type="int", default=300),
        synced_from=dict(type="dict", options=dict(
            stamp=dict(type="path", required=True),
            sha1=dict(type="str", required=True),
        )),
        check=dict(type="dict", options=dict(
            src=dict(type="path"),
            rust_src=dict(type="path"),
            rust_layouts=dict(type="dict"),
            record=dict(type="bool", default=True),
            fail_on_drift=dict(type="bool", default=True),
            trial_load=dict(type="bool", default=False),
        )),
        preflight=dict(type="dict", options=dict(
            pin_root=dict(type="path", default="/sys/fs/bpf"),
            minimum_versions=dict(type="dict", default={}),
            ignore=dict(type="list", elements="str", default=[]),
        )),
    )
    spec.update(SPEC_ARGS)
    return spec


def run(module) -> dict:
    params = module.params
    spec = validate_spec(params["spec"])
    dest = params["dest"] or default_build_root(spec["name"])
    if params["state"] == "rolled_back":
        return Pipeline(module, spec, params["src"], dest).rollback(module.check_mode, params["lock_timeout"])
    checked = {}
    if params["preflight"]:
        pre = params["preflight"]
        checked["preflight"] = run_preflight(module, spec, pre["pin_root"], pre["minimum_versions"], fail=True,
                                             ignore=pre["ignore"])
    synced = params["synced_from"]
    if synced:
        try:
            with open(synced["stamp"]) as fh:
                stamp = fh.read().strip()
        except (OSError, UnicodeDecodeError):
            stamp = None
        if stamp != synced["sha1"].strip():
            return {"changed": False, "sources_current": False, **checked,
                    "msg": "the sources in %s are not those of archive %s (stamp %s: %s): nothing was built"
                           % (params["src"], synced["sha1"], synced["stamp"], stamp or "missing")}
    result = dict(run_pipeline(module, spec, params["src"], dest, params["force"], params["lock_timeout"]), **checked)
    if synced:
        result["sources_current"] = True
    check = params["check"]
    if check and result.get("build_dir") and module.check_mode and result.get("changed"):
        # The current build is of other sources than src (a rebuild is pending): checking it would compare the
        # Rust mirrors of this tree with another tree's object.
        module.warn("the ABI check runs on the build of these sources, which this check-mode run only plans "
                    "(%s)" % "; ".join(result.get("rebuild_reasons") or ["no build yet"]))
    elif check and result.get("build_dir"):
        # Imported here: a build without a check compiles none of it.
        from ansible_collections.lqos.bpf.plugins.module_utils._abi.check import run_check
        build_dir = result["build_dir"]
        try:
            result["abi_check"] = run_check(
                spec, build_dir, os.path.join(build_dir, spec["outputs"]["object"]), check["rust_layouts"],
                os.path.join(build_dir, ABI_CHECK_FILE) if check["record"] else None, check["fail_on_drift"],
                check["trial_load"], module.check_mode, module.warn, src=params["src"])
        except LqosError as exc:
            # The build stays published: report it along with the check that failed.
            built = {k: v for k, v in result.items() if k != "msg"}
            raise LqosError(exc.msg, exc.fix, **dict(built, abi_check=exc.details))
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
