# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Shared option docs. Use as ``lqos.bpf.common.spec`` and friends."""

    DOCUMENTATION = r"""
options: {}
"""

    SPEC = r"""
options:
  spec:
    description:
      - The pipeline spec that describes the crate (sources, flags, outputs, expected programs and maps,
        Rust mirror pairs, pinned-map ABI, attach points). See C(docs/pipeline-spec.md).
      - A built-in name (V(reference) for this collection's own C(bpf/shaper_sys), V(libreqos) for a
        LibreQoS checkout's C(src/rust/lqos_sys)), a path to a YAML file on the controller, or a mapping.
      - The YAML is read on the controller by the action plugin; the target receives plain data.
    type: raw
    required: true
"""

    REQUIREMENTS_LIBBPF = r"""
options: {}
requirements:
  - python3-cffi on the target (libbpf is called through cffi in ABI mode; no compiler needed)
  - libbpf1 (C(libbpf.so.1)) on the target
  - root on the target (CAP_BPF or CAP_SYS_ADMIN; CAP_NET_ADMIN to attach)
"""

    PIN_ROOT = r"""
options:
  pin_root:
    description:
      - The bpffs mount under which maps are pinned. Must be a bpffs mount (checked with statfs);
        pin paths never leave it.
    type: path
    default: /sys/fs/bpf
"""

    APPROVE = r"""
options:
  approve:
    description:
      - The approval gate. Live changes (attaching or detaching programs, replacing, removing or restoring
        map pins, writing or deleting map entries) are made only when this is V(true). Without it the module
        returns the exact plan in RV(actions) and changes nothing.
      - A failed approved run says what it left (C(docs/behaviour.md)) - C(changed=false) and C(rolled_back) when it
        put back everything it had changed, C(changed=true) and C(changes_left) (each change with how to undo it)
        when something stays changed.
    type: bool
    default: false
"""

    ATTRIBUTES_INFO = r"""
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything; C(changed) is always false.
"""

    ATTRIBUTES_ACTION = r"""
attributes:
  check_mode:
    support: full
    description: Computes and returns the plan without changing anything.
  diff_mode:
    support: full
    description: Returns C(diff) with the before and after state.
  idempotent:
    support: full
    description: A second identical run reports C(changed=false).
"""
