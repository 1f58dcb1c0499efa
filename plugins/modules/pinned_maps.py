#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pinned_maps
short_description: Audit every pinned BPF map's ABI and remove incompatible pins safely, with backups
version_added: 0.1.0
description:
  - Lists every entry under the bpffs O(pin_root) (recursively, never following symlinks) and reads each pinned
    map's type, key size, value size, max_entries, flags, name, id and BTF key/value type names through libbpf
    (C(bpf_obj_get), C(bpf_obj_get_info_by_fd)).
  - Compares each pin with what is expected of it. Expectations come from the spec's explicit C(pinned_maps) list
    (key and value sizes, as LibreQoS keeps them), the names in the spec's C(expect.maps), and, by default, are
    derived from the built object O(object) - every map it pins by name, with its type, key/value sizes,
    max_entries, flags and map_extra. Maps listed in the spec's C(cpu_sized_maps) are expected with
    max_entries = min(object value, possible CPUs), as they are resized at load.
  - Each pin is reported as V(compatible), V(incompatible) (with every differing attribute), V(unknown) (not
    expected), V(missing) (expected but absent), V(not_a_map) (a program or link pin, a symlink, a directory, or a
    bpffs entry that is no pinned object such as C(maps.debug)/C(progs.debug); never touched), V(vanished)
    (removed while the audit ran) or V(unreadable) (a folder that cannot be listed or a pin that cannot be opened;
    the rest of the audit goes on). Each map pin lists the loaded programs that use it.
  - O(state=clean) removes only incompatible map pins, and only with O(approve=true); before each removal the
    map's entries are dumped to a timestamped JSON backup in O(backup_dir), and a pin whose backup failed is never
    removed. O(state=restored) loads such a backup back into a compatible map.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.requirements_libbpf
  - lqos.bpf.common.pin_root
  - lqos.bpf.common.approve
  - lqos.bpf.common.attributes_action
options:
  spec:
    description:
      - Optional pipeline spec (built-in name V(reference) or V(libreqos), a YAML path on the controller, or a
        mapping). Its C(pinned_maps) and C(expect.maps) add expectations; its C(cpu_sized_maps) tell which maps
        are resized to the possible CPUs.
    type: raw
  object:
    description:
      - Path on the target of the built BPF object (for example C(object.path) of RV(lqos.bpf.pipeline#module:outputs)).
        Expectations are derived from every map it pins by name, unless O(derive_from_object=false).
    type: path
  derive_from_object:
    description: Derive expectations from O(object). With V(false) only the spec's lists are used.
    type: bool
    default: true
  state:
    description:
      - V(audited) only reports; it never changes anything.
      - V(clean) removes the incompatible map pins (with O(approve=true)), each after a verified backup.
      - V(restored) writes the entries of the backup O(restore_from) into the map pinned at the backup's pin path (or
        O(pin)), after checking that key and value sizes match; a backup that stored the BTF of its key and value
        (every backup since state V(migrated) exists) is migrated into a newer layout field by field instead.
        Entries already equal are skipped; entries the map holds that the backup lacks are kept.
      - V(migrated) replaces each incompatible map pin the new O(object) makes without losing its entries (with
        O(approve=true)), and the name is never missing. The object is loaded with no program so libbpf creates the
        new map pinned at C(lqos_bpf_aside/lqos_bpf_new/NAME), every entry is copied into it field by field by name
        with the kernel's batch operations, using the BTF of both layouts (new fields zero or O(defaults), integers
        widened, dropped fields reported, narrowing refused unless O(allow_narrowing)), the old map is pinned a
        second time at C(lqos_bpf_aside/NAME) (the programs using it keep running) and the new pin renamed over
        NAME in one step. Attach the new programs next (M(lqos.bpf.attach) swaps them atomically, then carries over
        what was written into the old maps since the copy). A rerun finishes an interrupted replacement.
      - When the programs this collection attached (pinned under C(<pin_root>/lqos_bpf/)) already use a live map of
        the new layout under that name - a stale pin was put over it while they kept their map - V(migrated)
        publishes that live map at the name the same way instead of creating an empty one; the
        stale map's entries are not copied, and V(committed) backs it up.
      - V(committed) (after the health check) carries over what was written into each moved-aside map since the
        copy (never over a newer value; a spec map with C(counter=true) gets its increases added), backs it up to
        O(backup_dir), with the BTF of its key and value, and unpins it.
      - V(rolled_back) (on failure) renames the moved-aside pins back over their names; re-attach
        the previous build next and it reuses them, entries and all.
    type: str
    choices: [audited, clean, restored, migrated, committed, rolled_back]
    default: audited
  state_dir:
    description:
      - Folder of the replacement record (which new map was filled from which moved-aside map) and of the
        snapshot taken at copy time (a digest per key), so a rerun never overwrites entries written since. Lives in
        C(/run), like the pins it describes.
    type: path
    default: /run/lqos-bpf/maps
  defaults:
    description:
      - For O(state=migrated), values of fields the new layout adds, per map and dotted field path (map name,
        then field path, then an integer; see the examples). Fields without a default start at zero.
    type: dict
    default: {}
  unmigratable:
    description:
      - For O(state=migrated), what to do with a map whose entries cannot move to the new layout (no BTF and other
        sizes, a kind change no entry survives, entries that do not fit). V(fail) changes nothing and names each.
        V(start_empty) still replaces it in two phases, with an empty new map; the old map and its entries are
        backed up at commit (and put back on rollback).
    type: str
    choices: [fail, start_empty]
    default: fail
  allow_narrowing:
    description:
      - For O(state=migrated), truncate integer fields that became narrower even when a value does not fit. By
        default such an entry refuses the whole migration before anything changes.
    type: bool
    default: false
  backup_dir:
    description:
      - Folder on the target for the backups written by O(state=clean). Created (mode 0700) when missing. Must not
        be on a bpffs.
    type: path
    default: /var/lib/lqos-bpf/map-backups
  restore_from:
    description:
      - The backup file to load, for O(state=restored) (see RV(backups)).
      - The alias O(backup) is deprecated and will be removed in 1.0.0 (elsewhere in Ansible C(backup) is a
        boolean that makes a backup, not a file to restore from).
    type: path
    aliases: [backup]
  pin:
    description:
      - For O(state=restored), the map to restore into, relative to O(pin_root) (or absolute under it). Defaults to
        the pin path recorded in the backup.
    type: str
  maps:
    description:
      - Limit the audit (and so the cleanup) to these pins, named relative to O(pin_root) (for example
        V(map_traffic) or V(tc/globals/cpu_map)).
    type: list
    elements: str
notes:
  - Removing a pin does not free a map that loaded programs still hold; RV(pins[].used_by) names them so the
    operator knows what the cleanup disturbs. Load the new object right after the cleanup.
  - Backups hold every key and value hex-encoded with the layout they had (per-CPU values as the full blob of
    round_up(value_size, 8) bytes for each possible CPU). Map types whose keys cannot be walked (queue, stack,
    ring buffer, bloom filter, storage maps) cannot be backed up, so their pins are never removed by this module.
"""

EXAMPLES = r"""
- name: Audit every pin against the freshly built object
  lqos.bpf.pinned_maps:
    spec: reference
    object: "{{ build.outputs.object.path }}"
  register: audit

- name: Show what a cleanup would remove, and why
  lqos.bpf.pinned_maps:
    spec: reference
    object: "{{ build.outputs.object.path }}"
    state: clean
  register: plan

- name: Remove the incompatible pins (each one backed up first)
  lqos.bpf.pinned_maps:
    spec: reference
    object: "{{ build.outputs.object.path }}"
    state: clean
    approve: true
  register: cleanup

- name: Load a backup back into the new, compatible map
  lqos.bpf.pinned_maps:
    state: restored
    restore_from: "{{ cleanup.backups[0].file }}"
    approve: true

- name: Replace the incompatible pins keeping their entries (old maps moved aside, new ones filled by BTF)
  lqos.bpf.pinned_maps:
    spec: reference
    object: "{{ build.outputs.object.path }}"
    state: migrated
    defaults: {flow_table: {retransmits: 0}}
    approve: true

- name: After the health check passed, back the old maps up and unpin them
  lqos.bpf.pinned_maps:
    state: committed
    approve: true

- name: On failure, put the old maps back at their names (then re-attach the previous build)
  lqos.bpf.pinned_maps:
    state: rolled_back
    approve: true

- name: LibreQoS-style check of a few maps by key/value size only
  lqos.bpf.pinned_maps:
    spec: libreqos
    maps: [map_traffic, flowbee]
"""

RETURN = r"""
pins:
  description:
    - Every entry under O(pin_root) (or only O(maps)), plus the expected maps that are missing, as audited before
      any removal. Map pins also carry C(id), C(map_name), C(type), C(key_size), C(value_size), C(max_entries),
      C(flags), C(map_extra), C(btf_id), C(key_type) and C(value_type) (BTF type names, or null without BTF).
      Program pins carry C(id), C(prog_name), C(prog_type) and C(tag); symlinks carry C(target).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The pin's path relative to O(pin_root).
      type: str
      sample: map_traffic
    path:
      description: The pin's absolute path.
      type: str
      sample: /sys/fs/bpf/map_traffic
    kind:
      description: V(map), V(prog), V(link), V(symlink), V(directory), V(other) (not a pinned object), or null
        when missing or vanished.
      type: str
      sample: map
    status:
      description: V(compatible), V(incompatible), V(unknown), V(missing), V(not_a_map), V(vanished),
        V(unreadable) or V(aside) (an old map moved aside by an unfinished replacement).
      type: str
      sample: incompatible
    reason:
      description: Why the pin has its status (every difference, for incompatible pins).
      type: str
      sample: "key_size: expected 20 (object, spec.pinned_maps), pinned 16"
    expected:
      description: What is expected of this pin (one value per attribute) and the C(sources) it came from, or null.
      type: dict
      sample: {type: percpu_hash, key_size: 20, value_size: 128, max_entries: 128000, flags: 0, map_extra: 0,
               sources: [object, spec.pinned_maps]}
    differences:
      description: Each attribute that differs, with C(attribute), C(expected), C(actual) and C(sources).
      type: list
      elements: dict
      sample: [{attribute: key_size, expected: 20, actual: 16, sources: [object]}]
    used_by:
      description: Loaded programs whose map ids include this map, each with C(id), C(name) and C(tag).
      type: list
      elements: dict
      sample: [{id: 41, name: xdp_shaper, tag: "0a1b2c3d4e5f6789"}]
    id:
      description: Kernel id of the map (or program).
      type: int
      sample: 17
    type:
      description: Map type as bpftool names it.
      type: str
      sample: percpu_hash
summary:
  description: How many pins have each status, and C(total).
  returned: always
  type: dict
  sample: {total: 15, compatible: 12, incompatible: 1, unknown: 0, missing: 0, not_a_map: 2, vanished: 0, unreadable: 0}
actions:
  description:
    - What this run does or would do. For O(state=clean) one C(remove) per incompatible map pin with C(pin),
      C(name), C(id), C(reason), C(differences), C(used_by), C(backup_dir) (and C(backup) once written); for
      O(state=restored) one C(restore) with C(pin), C(backup) and the number of C(entries) to write.
  returned: always
  type: list
  elements: dict
  sample: [{action: remove, pin: /sys/fs/bpf/map_traffic, name: map_traffic, id: 17,
            reason: "key_size: expected 20 (object), pinned 16", backup_dir: /var/lib/lqos-bpf/map-backups}]
removed:
  description: Paths of the pins removed by this run.
  returned: always
  type: list
  elements: str
  sample: [/sys/fs/bpf/map_traffic]
backups:
  description: Backups written by this run, each with C(pin), C(name), C(file), C(entries) and C(sha256).
  returned: always
  type: list
  elements: dict
  sample: [{pin: /sys/fs/bpf/map_traffic, name: map_traffic, entries: 3, sha256: "5d41...",
            file: /var/lib/lqos-bpf/map-backups/map_traffic.20260101T120000.000001Z.json}]
restored:
  description: For O(state=restored), C(pin), C(name), C(backup), C(entries_total), C(entries_to_write),
    C(entries_written) and C(migration) (the field plan when the backup's layout differed, else null).
  returned: when state is restored
  type: dict
  sample: {pin: /sys/fs/bpf/map_traffic, name: map_traffic, backup: /var/lib/lqos-bpf/map-backups/x.json,
           entries_total: 3, entries_to_write: 3, entries_written: 3}
migrated:
  description: For O(state=migrated), one item per map filled by this run, with C(name), C(entries_total),
    C(entries_written), C(new_id), C(copied_at) and C(published_at) (seconds since the epoch, when the copy
    began and when the new map took the name) and C(timings) (seconds spent to C(read), C(convert), C(fill),
    C(check) and C(snapshot)) (C(repinned=true) when that is the live map the attached programs use, with
    C(entries_total=null); C(started_empty=true) and C(aside) when the map starts empty with
    O(unmigratable=start_empty) or holds what never moves, such as a ring buffer, and then C(entries_total) is the
    number of entries kept in the old map aside, null for a ring buffer).
    RV(actions) carries C(live_id) for such a map, and each map's plan in C(migration) (C(from), C(to), C(entries),
    C(key)/C(value) with C(copied), C(widened), C(narrowed), C(defaulted), C(zeroed), C(lost), and C(refused)) and a
    one-line C(change).
  returned: when state is migrated
  type: list
  elements: dict
  sample: [{name: flow_table, entries_total: 10000, entries_written: 10000, new_id: 52}]
rolled_back:
  description: For O(state=rolled_back), the names of the maps put back.
  returned: when state is rolled_back
  type: list
  elements: str
  sample: [flow_table]
conflicts:
  description: Attributes on which the expectation sources disagree (each with C(map), C(attribute) and
    C(values) by source). A cleanup of such a map is refused.
  returned: always
  type: list
  elements: dict
  sample: [{map: map_traffic, attribute: key_size, values: {object: 20, spec.pinned_maps: 16}}]
pin_root:
  description: The canonical pin root that was audited.
  returned: always
  type: str
  sample: /sys/fs/bpf
msg:
  description: One line saying what was found or done.
  returned: always
  type: str
  sample: "removed 1 incompatible pin(s) after backing them up to /var/lib/lqos-bpf/map-backups: map_traffic"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    APPROVE_ARGS, MAP_BACKUP_DIR as DEFAULT_BACKUP_DIR, MAP_STATE_DIR as DEFAULT_STATE_DIR, PIN_ARGS, run_module,
)
from ansible_collections.lqos.bpf.plugins.module_utils._maps.pinned_maps import run_pinned_maps


def argument_spec() -> dict:
    spec = dict(
        spec=dict(type="raw"),
        object=dict(type="path"),
        derive_from_object=dict(type="bool", default=True),
        state=dict(type="str", choices=["audited", "clean", "restored", "migrated", "committed", "rolled_back"],
                   default="audited"),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
        defaults=dict(type="dict", default={}),
        allow_narrowing=dict(type="bool", default=False),
        unmigratable=dict(type="str", choices=["fail", "start_empty"], default="fail"),
        backup_dir=dict(type="path", default=DEFAULT_BACKUP_DIR),
        restore_from=dict(type="path", aliases=["backup"],
                          deprecated_aliases=[dict(name="backup", version="1.0.0", collection_name="lqos.bpf")]),
        pin=dict(type="str"),
        maps=dict(type="list", elements="str"),
    )
    spec.update(PIN_ARGS)
    spec.update(APPROVE_ARGS)
    return spec


def run(module) -> dict:
    return run_pinned_maps(module)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_if=[("state", "restored", ["restore_from"]), ("state", "migrated", ["object"])])
    run_module(module, run)


if __name__ == "__main__":
    main()
