#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: service
short_description: Read, stop, start, mask and verify a service that loads the BPF programs itself (lqosd)
version_added: 0.1.0
description:
  - On a LibreQoS shaper the programs are loaded by LibreQoS's daemon C(lqosd), a systemd service whose binary embeds
    the BPF object (a bpftool skeleton); the reference pipeline's stand-in C(shaperd) behaves the same way
    (C(docs/standin-daemon.md)). This module is the service loader's view of such a service.
  - Every run reads the service and returns it - the systemd unit (C(systemctl show)), its configuration (the
    interfaces it attaches to, in LibreQoS's C(/etc/lqos.conf) TOML or shaperd's C(key = value) format), its binary
    and the BPF object embedded in it, the program ids its main process holds (C(/proc/<MainPID>/fdinfo)) and, per
    configured interface, the programs on the XDP hook and the TC egress and ingress hooks with their owner
    (V(service) when the main process holds them, V(collection) when this collection attached them, else
    V(foreign)).
  - O(state=stopped), V(started), V(restarted), V(masked) and V(unmasked) change the unit through C(systemctl) only
    with O(approve=true); without it (or in check mode) the module returns the commands in RV(actions) and changes
    nothing. V(masked) is a runtime mask (C(systemctl mask --runtime), gone at reboot), so neither systemd's
    C(Restart=) nor a package script starts the service behind a rollout's back; V(started) refuses a masked unit.
  - O(state=started) and V(restarted) wait up to O(timeout) until every configured interface holds an XDP program
    held by the unit's main process, and return how long the stop took and how long from C(systemctl start) until
    the hooks were the service's (RV(timings)).
  - O(state=extracted) writes the BPF object embedded in the binary to O(object_dest) (atomically; only when its
    content differs). It writes a file, not the live host, so it needs no approval; check mode writes nothing.
  - O(state=verified) fails unless every configured interface holds, on XDP and on each TC hook the service uses,
    a program held by the main process whose kernel tag is the expected one (RV(problems) lists each difference).
  - With O(pid) the service is run by another supervisor - systemd is not asked, and the states that need it fail.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.common.requirements_libbpf
  - lqos.bpf.common.approve
attributes:
  check_mode:
    support: full
    description: Returns the planned RV(actions) without changing the unit or writing O(object_dest).
  diff_mode:
    support: none
    description: The changes are commands to systemd and one file written whole; RV(actions) lists them.
  idempotent:
    support: partial
    details: V(restarted) restarts the unit every time it is asked.
    description: A second identical run reports C(changed=false), for every state but V(restarted).
options:
  name:
    description: The systemd unit (V(lqosd), V(shaperd)); C(.service) is appended when missing.
    type: str
    required: true
  kind:
    description:
      - Which configuration format O(config) is in - V(lqosd) (TOML, C([bridge]) C(use_xdp_bridge), C(to_internet),
        C(to_network), or C([single_interface]) C(interface), C(internet_vlan), C(network_vlan)) or V(shaperd)
        (C(key = value) lines, C(docs/standin-daemon.md)).
      - Default - from the unit's name; a unit named otherwise needs it.
    type: str
    choices: [lqosd, shaperd]
  config:
    description: The service's configuration file. Default C(/etc/lqos.conf) for lqosd, C(/etc/shaperd.conf) for
      shaperd.
    type: path
  binary:
    description:
      - The service's binary, whose embedded BPF object is read. Default - the program of the unit's C(ExecStart)
        (with O(pid), the process's C(/proc/<pid>/exe)).
      - A masked unit has no C(ExecStart); give it then when the object is needed (O(state=extracted), V(verified)).
    type: path
  pid:
    description:
      - The service's main process, when another supervisor than systemd runs it. systemd is not asked; O(state=stopped),
        V(started), V(restarted), V(masked) and V(unmasked) fail.
    type: int
  state:
    description:
      - V(read) reads and changes nothing (ansible-test refuses a state named C(info)). V(extracted) writes the
        embedded object to O(object_dest).
        V(stopped), V(started), V(restarted), V(masked), V(unmasked) act on the unit (approval needed).
        V(verified) checks the hooks against the expected tags.
    type: str
    choices: [read, extracted, stopped, started, restarted, masked, unmasked, verified]
    default: read
  object_dest:
    description: Where O(state=extracted) writes the embedded BPF object (mode 0644, written atomically).
    type: path
  timeout:
    description:
      - Seconds O(state=started), V(restarted) and V(verified) wait for every configured interface to hold the
        service's XDP program (polled every 0.1 s).
    type: float
    default: 30
  expected_tags:
    description:
      - For O(state=verified) - the kernel tag (16 hex digits, as C(bpftool prog show) prints it) of each program by
        name. Names are compared on their first 15 characters, as the kernel keeps them.
      - Default - the tags of a trial load of O(object), else of the object embedded in O(binary) (loaded with
        nothing pinned or reused, then closed).
    type: dict
  object:
    description: For O(state=verified) without O(expected_tags) - the BPF object whose XDP and TC programs' tags
      are expected (default the object embedded in O(binary)).
    type: path
  attach_state_dir:
    description: The attach module's record folder (its O(lqos.bpf.attach#module:state_dir)), read to tell the
      programs this collection attached.
    type: path
    default: /run/lqos-bpf/attach
notes:
  - The pin root searched for this collection's programs (C(<pin_root>/lqos_bpf/)) is the configuration's
    C(pin_root) for shaperd and C(/sys/fs/bpf) for lqosd.
  - The TC hooks read are the clsact slot lqosd and shaperd use (handle 0x1, priority 0xC02F); the ingress hook is
    expected on a stick and in a bridge with C(use_xdp_bridge).
seealso:
  - module: lqos.bpf.attach
  - module: lqos.bpf.pinned_maps
"""

EXAMPLES = r"""
- name: What lqosd runs, and whose programs are on its interfaces
  lqos.bpf.service:
    name: lqosd
  register: lqosd

- name: Take the BPF object out of the installed lqosd build (for the ABI check and trial load)
  lqos.bpf.service:
    name: lqosd
    state: extracted
    object_dest: /var/lib/lqos-bpf/lqosd-embedded.o

- name: Keep systemd and package scripts from starting it during the window
  lqos.bpf.service:
    name: lqosd
    state: masked
    approve: true

- name: Stop it
  lqos.bpf.service:
    name: lqosd
    state: stopped
    approve: true

- name: Lift the runtime mask and start it; wait for its XDP programs on every interface
  lqos.bpf.service:
    name: lqosd
    state: "{{ item }}"
    timeout: 60
    approve: true
  loop: [unmasked, started]

- name: Every interface runs the service's programs with the embedded object's tags
  lqos.bpf.service:
    name: lqosd
    binary: /opt/libreqos/src/bin/lqosd
    state: verified

- name: The stand-in daemon run by another supervisor
  lqos.bpf.service:
    name: shaperd
    config: /etc/shaperd.conf
    pid: "{{ shaperd_pid }}"
"""

RETURN = r"""
unit:
  description: The systemd unit after the action (null with O(pid)). C(mask) is V(runtime), V(persistent) or null.
  returned: always
  type: dict
  sample: {name: lqosd.service, active_state: active, sub_state: running, main_pid: 1234, n_restarts: 0,
           masked: false, mask: null, load_state: loaded, unit_file_state: enabled,
           exec_start_path: /opt/libreqos/src/bin/lqosd}
main_pid:
  description: The service's main process (O(pid), or the unit's MainPID; null when none runs).
  returned: always
  type: int
config:
  description:
    - The service's configuration - C(path), C(kind), C(mode) (V(bridge) or V(stick)), C(interfaces) (each
      C(name), C(role) V(internet), V(isp) or V(stick), C(netns)), C(vlans) (C(internet), C(isp); null for a
      bridge), C(use_xdp_bridge) and C(pin_root).
  returned: always
  type: dict
  sample: {path: /etc/lqos.conf, kind: lqosd, mode: bridge, vlans: null, use_xdp_bridge: true,
           pin_root: /sys/fs/bpf, interfaces: [{name: eth1, role: internet, netns: null},
                                               {name: eth2, role: isp, netns: null}]}
binary:
  description: The service's binary - C(path) and C(sha256) (both null when it is not known).
  returned: always
  type: dict
embedded:
  description: The BPF object the binary embeds - C(sha256), C(size) (bytes); null when it embeds none.
  returned: always
  type: dict
held_prog_ids:
  description: Ids of the BPF programs the main process holds as file descriptors.
  returned: always
  type: list
  elements: int
hooks:
  description:
    - Per configured interface - C(interface), C(netns), and C(xdp) (C(id), C(name), C(tag), C(mode), C(owner)),
      C(tc_egress), C(tc_ingress) (C(id), C(name), C(tag), C(owner)), each null when the hook is empty.
    - C(owner) is V(service) (held by the main process), V(collection) (attached by lqos.bpf.attach) or V(foreign).
  returned: always
  type: list
  elements: dict
verified:
  description: Whether the hooks run the service's programs with the expected tags.
  returned: when O(state=verified)
  type: bool
problems:
  description: Each difference found by O(state=verified), naming the interface and hook, what was found and what
    was expected.
  returned: when O(state=verified)
  type: list
  elements: str
  sample: ["eth1 XDP: no program; expected one of tc_bridge_redir, tc_classify, xdp_shaper held by the service's
            main process 1234."]
timings:
  description:
    - C(stop_s) - how long C(systemctl stop) took; C(start_to_hooks_s) - from C(systemctl start) until every
      configured interface held the service's XDP program (seconds, null when not done in this run).
  returned: always
  type: dict
  sample: {stop_s: 0.412, start_to_hooks_s: 1.87}
actions:
  description: What was done, or (RV(applied) false) what would be done.
  returned: always
  type: list
  elements: str
  sample: ["would run: systemctl mask --runtime lqosd.service (approve is false)"]
applied:
  description: True when RV(actions) were carried out; C(changed) says whether there was work to do.
  returned: always
  type: bool
msg:
  description: Why nothing was changed although actions are planned.
  returned: when actions were planned but not applied
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lqos.bpf.plugins.module_utils._common import APPROVE_ARGS, run_module
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import CFFI_IMP_ERR, HAS_CFFI
from ansible_collections.lqos.bpf.plugins.module_utils._service.config import SERVICE_ARGS
from ansible_collections.lqos.bpf.plugins.module_utils._service.run import run_service


def argument_spec() -> dict:
    spec = dict(
        SERVICE_ARGS,
        state=dict(type="str", default="read",
                   choices=["read", "extracted", "stopped", "started", "restarted", "masked", "unmasked", "verified"]),
        object_dest=dict(type="path"),
        timeout=dict(type="float", default=30),
        expected_tags=dict(type="dict"),
        object=dict(type="path"),
        attach_state_dir=dict(type="path", default="/run/lqos-bpf/attach"),
    )
    spec.update(APPROVE_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_CFFI:
        module.fail_json(msg=missing_required_lib("cffi (Debian: python3-cffi)"), exception=CFFI_IMP_ERR)
    run_module(module, run_service)


if __name__ == "__main__":
    main()
