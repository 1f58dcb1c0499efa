#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: map_entries
short_description: Write entries into a pinned BPF map by BTF field name, behind an approval gate
version_added: 0.1.0
description:
  - Sets (or, with O(state=absent), deletes) the given entries of one map pinned under O(pin_root). Keys and values
    are written as plain data - an integer, a mapping of the C struct's field names, a list for an array - laid out
    with the map's own BTF, read from the kernel through the pin; fields left out are zero.
  - Integer fields also take V(ifindex:NAME) (the index of interface NAME, in O(netns) when set), V(be16:N)
    (N in network byte order, for a 2-byte field such as a VLAN id) and V(ifindex_vlan:NAME:TAG) (the index of NAME
    shifted left 16 bits, or'ed with the VLAN id TAG 1-4094, for a field of 4 bytes or more - the key of LibreQoS's
    C(bifrost_vlan_map)).
  - A map not pinned yet is planned (check mode, or no approval - on a fresh host the attach that pins it is only
    planned too) - every entry would be set, shown as given - and refused when the write is approved.
  - Only the named entries are read and compared; other entries of the map are left alone. An entry that already
    holds the value is not written, so a second identical run reports C(changed=false).
  - The deploy role's bridge mode writes the bridge redirector's interface map with it (each port redirected to
    the other), and its VLAN redirect map when the topology has a C(vlan_mapping).
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.common.requirements_libbpf
  - lqos.bpf.common.pin_root
  - lqos.bpf.common.approve
  - lqos.bpf.common.attributes_action
options:
  map:
    description: The map's pin, relative to O(pin_root) (e.g. V(bridge_redirect)); it may not leave O(pin_root)
      nor pass a symlink.
    type: str
    required: true
  entries:
    description: The entries, each a mapping with C(key) and (for O(state=present)) C(value).
    type: list
    elements: raw
    required: true
  state:
    description: V(present) sets each entry to its value; V(absent) deletes each key.
    type: str
    choices: [present, absent]
    default: present
  netns:
    description: Network namespace (a name under C(/run/netns)) in which V(ifindex:NAME) values are resolved.
    type: str
notes:
  - Per-CPU maps and maps without BTF for their key and value are refused with the reason.
seealso:
  - module: lqos.bpf.attach
"""

EXAMPLES = r"""
- name: Redirect between the two ports of an XDP bridge (reference pipeline's bridge_redirect map)
  lqos.bpf.map_entries:
    map: bridge_redirect
    netns: shaper
    entries:
      - {key: "ifindex:wan0", value: {to_ifindex: "ifindex:lan0"}}
      - {key: "ifindex:lan0", value: {to_ifindex: "ifindex:wan0"}}
    approve: true

- name: Leave VLAN 100 of wan0 as VLAN 200 (reference pipeline's bridge_vlan_map map, ids host order)
  lqos.bpf.map_entries:
    map: bridge_vlan_map
    netns: shaper
    entries:
      - {key: {ifindex: "ifindex:wan0", vlan_id: 100}, value: {vlan_id: 200}}
    approve: true

- name: The same on LibreQoS (bifrost_vlan_map, one integer key)
  lqos.bpf.map_entries:
    map: bifrost_vlan_map
    entries:
      - {key: "ifindex_vlan:wan0:100", value: {redirect_to: 200}}
    approve: true

- name: Remove them again
  lqos.bpf.map_entries:
    map: bridge_redirect
    netns: shaper
    state: absent
    entries: [{key: "ifindex:wan0"}, {key: "ifindex:lan0"}]
    approve: true
"""

RETURN = r"""
map:
  description: The pin path of the map.
  returned: always
  type: str
  sample: /sys/fs/bpf/bridge_redirect
applied:
  description: Whether the changes were written (false in check mode and without approval).
  returned: always
  type: bool
actions:
  description: Every write made (or, not applied, planned), one line each, key and value in hex.
  returned: always
  type: list
  elements: str
  sample: ["set /sys/fs/bpf/bridge_redirect[03000000] = 0400000000000000"]
entries:
  description: Each entry as bytes in hex - C(key), C(value) (null for a deletion), C(before) (null when absent) and
    C(action) (V(set), V(unchanged), V(delete), V(absent)).
  returned: always
  type: list
  elements: dict
diff:
  description: The named entries before and after, one C(key = value) line each.
  returned: in diff mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lqos.bpf.plugins.module_utils._common import APPROVE_ARGS, PIN_ARGS, run_module
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import CFFI_IMP_ERR, HAS_CFFI
from ansible_collections.lqos.bpf.plugins.module_utils._maps.entries import run_map_entries


def argument_spec() -> dict:
    spec = dict(
        map=dict(type="str", required=True),
        entries=dict(type="list", elements="raw", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        netns=dict(type="str"),
    )
    spec.update(PIN_ARGS)
    spec.update(APPROVE_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_CFFI:
        module.fail_json(msg=missing_required_lib("cffi (Debian: python3-cffi)"), exception=CFFI_IMP_ERR)
    run_module(module, run_map_entries)


if __name__ == "__main__":
    main()
