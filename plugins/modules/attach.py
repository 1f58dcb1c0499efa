#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: attach
short_description: Attach the built lqos_sys object to XDP and TC hooks, idempotently and behind an approval gate
version_added: 0.1.0
description:
  - Loads the built BPF object with libbpf (through cffi) the way the LibreQoS daemon does - read-only and data
    variables set before load (C(attach.rodata), C(attach.data) of the spec; the words V(possible_cpus) and
    V(ifindex) stand for this host's possible-CPU count and the interface's index), maps listed in
    C(cpu_sized_maps) resized to the possible CPUs, maps pinned by name under O(pin_root) reused when compatible.
  - Attaches the spec's XDP program (C(attach.xdp)) and, with O(tc), its TC programs (C(attach.tc)) on a clsact
    qdisc at their handle and priority. O(xdp_mode=auto) tries hardware offload, then native (driver), then
    generic (skb) mode, and reports which one held; skb mode gives a warning.
  - Every program it attaches is pinned under C(<pin_root>/lqos_bpf/<netns or host>/<interface>/<program>). That
    pin is what makes a program I(ours) (a program on a hook is ours if its id is that of our pin) and keeps it
    alive after the module exits. C(.) in names is written C(%2E) (bpffs refuses dots).
  - Idempotent. A state file under O(state_dir) records, per hook, the program id and tag and the fingerprint it
    was loaded from (sha256 of the object and the resolved load parameters). When the record, the pins and the
    hooks agree, a run changes nothing and loads nothing. Without a usable record the object is loaded and
    compared with the attached program by tag and by the load-time values the spec sets.
  - A newer object replaces the old one atomically - the new object is loaded first, then XDP is swapped with
    C(XDP_FLAGS_REPLACE) (in the mode the old program runs in) and TC with C(BPF_TC_F_REPLACE) at the same handle
    and priority, so traffic never runs unshaped. If a later step fails, the hooks already swapped are swapped back.
    Only an explicit change of XDP mode needs a detach and an attach (reported as not atomic).
  - A program this collection did not attach is never replaced without O(force=true), and never detached.
  - A program a running process holds (a service such as LibreQoS' C(lqosd), which loads its programs at every start;
    the program ids among its file descriptors, C(/proc/<pid>/fdinfo)) is the service's, not foreign - it is never
    replaced, even with O(force=true) (the service would attach its own again at its next restart). The run fails
    naming the interface, hook, program, process and systemd unit, and the fix (C(lqos_bpf_loader=service), or stop
    the service first); a plan and check mode fail the same way. See C(docs/behaviour.md), section "Who owns a hook".
  - The approval gate - without O(approve=true) the module only returns the planned RV(actions) and changes
    nothing (C(changed) then says whether there is work, RV(applied) is false). Check mode plans only.
  - Warnings (skb-mode fallback, forced replacement of a foreign program, non-atomic mode change) are issued as
    Ansible warnings and so appear in the task result's C(warnings).
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.requirements_libbpf
  - lqos.bpf.common.spec
  - lqos.bpf.common.pin_root
  - lqos.bpf.common.approve
  - lqos.bpf.common.attributes_action
options:
  object:
    description:
      - Path of the built BPF object on the target.
      - Defaults to C(/var/lib/lqos-bpf/<spec name>/current/<outputs.object>), where M(lqos.bpf.pipeline) publishes it.
      - Not needed with O(state=absent).
    type: path
  interface:
    description: The network interface to attach to (or detach from).
    type: str
    required: true
  netns:
    description:
      - Name of the network namespace (under C(/run/netns), as C(ip netns list) shows it) that holds O(interface).
        The module enters it before it resolves the interface. Omit for the host's namespace.
    type: str
  state:
    description:
      - V(present) attaches the spec's programs (or keeps them).
      - V(absent) detaches exactly the programs this collection attached to O(interface) (by id) and removes their
        pins; programs of others stay. The clsact qdisc is left in place.
    type: str
    choices: [present, absent]
    default: present
  xdp_mode:
    description:
      - V(auto) tries V(hw), then V(native), then V(skb) and keeps the first that holds; when a program of ours is
        already attached, V(auto) keeps the mode it runs in. A foreign program in V(skb) mode replaced with
        O(force) is detached and the walk starts at V(hw) (not atomic), so the new program gets native XDP where
        the driver has it.
      - A program left in V(skb) mode gets a warning that says why (each refused mode with the driver's error, or
        the mode kept from the program it replaced) and how to get native XDP.
      - V(hw), V(native) and V(skb) ask for exactly that mode. Changing the mode of an attached program cannot be
        atomic (the kernel allows only one of native and skb at a time).
    type: str
    choices: [auto, hw, native, skb]
    default: auto
  tc:
    description:
      - Attach the spec's TC programs (C(attach.tc)) too. With V(false), TC hooks are left as they are.
    type: bool
    default: true
  tc_programs:
    description:
      - With O(tc), attach only these of the spec's TC programs (names from C(attach.tc)); a TC program this
        collection attached on the interface earlier and not named here is detached. Left out, those the spec
        attaches on a plain interface (a pair's port, C(attach.tc[].topologies) listing V(pair)); each one left out
        (for example LibreQoS's bridge redirector C(bifrost), attached only in bridge and stick topologies) is named
        in RV(notes).
      - The deploy role's topologies use it to attach the bridge redirector only in bridge mode.
    type: list
    elements: str
  kprobes:
    description:
      - kprobe programs of the object (sections C(kprobe/<function>), C(kretprobe/<function>)) to attach, e.g. the
        reference pipeline's transmit-path counter V(xmit_counter) (C(kprobe/dev_hard_start_xmit)). A kprobe program
        not named here is never loaded. An entry may also be a section, e.g. V(kprobe/dev_hard_start_xmit), which
        names the transmit-path kprobe of both LibreQoS and the reference pipeline whatever the program is called.
      - Each one is attached through libbpf and its bpf_link pinned at C(<pin_root>/lqos_bpf/<netns or host>/<interface>/<program>),
        so it outlives the module; a program id and fingerprint in the state file make a second run change nothing.
        A newer object replaces the link. A kprobe sees the whole host, so ask for it on one interface only.
      - A name taken out of the list unpins its link, which detaches the kprobe; V([]) detaches all of them. Left out,
        kprobe links are left as they are. O(state=absent) detaches them with the rest.
      - A kernel that cannot attach it (built without C(CONFIG_KPROBES), the kernel function absent, no BPF perf links
        before Linux 5.15) fails the run with the kernel's reason and the fix; nothing is changed.
    type: list
    elements: str
  force:
    description:
      - Replace a program on a hook that this collection did not attach. Without it such a program makes the run fail
        and nothing is changed.
      - Never replaces a program a running process holds (a service's); that run fails with or without it.
    type: bool
    default: false
  state_dir:
    description:
      - Folder of the state files (one JSON per pin root, network namespace and interface). The default under C(/run)
        lives exactly as long as XDP/TC attachments and bpffs pins (all vanish at reboot).
      - Losing it is harmless - the next run loads the object once to compare tags.
    type: path
    default: /run/lqos-bpf/attach
  rodata:
    description:
      - Load-time values of C(.rodata) variables for this interface, over the spec's C(attach.rodata).
      - Each value is an integer, V(possible_cpus), V(ifindex) (this interface's index), C(ifindex:NAME) (the index
        of interface NAME in the same network namespace) or C(be16:N) (N in network byte order, e.g. a VLAN id).
      - A variable the object does not have is an error here; a spec value for one (an older release) is left out
        with a note.
    type: dict
    default: {}
  data:
    description:
      - Load-time values of C(.data)/C(.bss) variables for this interface, over the spec's C(attach.data); values as
        for O(rodata). LibreQoS's topologies set C(direction) (1 Internet-facing, 2 ISP-facing, 3 on a stick),
        C(to_internet_ifindex)/C(to_isp_ifindex) (C(ifindex:NAME)) and, on a stick, C(internet_vlan)/C(isp_vlan)
        (C(be16:N)) and C(stick_offset) this way.
    type: dict
    default: {}
  topology_data:
    description:
      - Load-time values a topology derived from the spec's C(topology) section (the deploy role's
        C(lqos_bpf_topology), filter C(lqos.bpf.topology_plan)); values as for O(data). They count as the spec's own
        values - over C(attach.data), under O(data) - so a variable the object lacks (an older release) is left out
        with a note instead of failing the run.
    type: dict
    default: {}
  pinned_maps:
    description:
      - Run the pin step of M(lqos.bpf.pinned_maps) first, in the same process, with the suboptions below. The
        step uses this module's O(spec), O(pin_root), O(object) (without it, the object the attach loads, the
        spec's current build), O(approve) and check mode. One module run instead
        of two (the deploy role passes it on every interface; after the first, the maps are already in place and
        the step finds nothing to do). Its result is RV(pinned_maps).
      - When the step plans pin changes it does not make (no approval, or check mode) and those pins are all that
        stops the attach, the run does not fail - RV(actions) says the attach follows once they are replaced.
      - Only with O(state=present).
    type: dict
    suboptions:
      state:
        description: As O(lqos.bpf.pinned_maps#module:state) - V(migrated) (replace incompatible pins keeping their
          entries, old maps kept aside until committed) or V(audited) (report only).
        type: str
        choices: [audited, migrated]
        default: migrated
      unmigratable:
        description: As O(lqos.bpf.pinned_maps#module:unmigratable).
        type: str
        choices: [fail, start_empty]
        default: fail
      backup_dir:
        description: As O(lqos.bpf.pinned_maps#module:backup_dir).
        type: path
        default: /var/lib/lqos-bpf/map-backups
      state_dir:
        description: As O(lqos.bpf.pinned_maps#module:state_dir).
        type: path
        default: /run/lqos-bpf/maps
      allow_narrowing:
        description: As O(lqos.bpf.pinned_maps#module:allow_narrowing).
        type: bool
        default: false
notes:
  - Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN), libbpf1 and python3-cffi on the target.
  - An existing map pin that the object cannot reuse (other type, sizes, max_entries or flags) fails the run before
    anything is loaded; replace it first - O(pinned_maps) does so in the same run (C(state=migrated) keeps its
    entries), or M(lqos.bpf.pinned_maps) on its own (C(migrated), or C(clean) after a backup).
seealso:
  - module: lqos.bpf.pipeline
"""

EXAMPLES = r"""
- name: A LibreQoS-style pair, Internet-facing side (the ISP-facing side passes direction 2)
  lqos.bpf.attach:
    spec: libreqos
    object: /var/lib/lqos-bpf/libreqos/current/lqos_kern.o
    interface: eth0
    data:
      direction: 1
      to_internet_ifindex: ifindex:eth0
      to_isp_ifindex: ifindex:eth1
    approve: true

- name: Show what attaching would do (no approval, nothing changes)
  lqos.bpf.attach:
    spec: reference
    interface: eth1
  register: plan

- name: Attach XDP and TC programs of the current build
  lqos.bpf.attach:
    spec: reference
    interface: eth1
    approve: true

- name: Attach in generic mode inside a network namespace
  lqos.bpf.attach:
    spec: reference
    interface: veth0
    netns: shaper-test
    xdp_mode: skb
    approve: true

- name: Replace a program another tool attached
  lqos.bpf.attach:
    spec: reference
    interface: eth1
    force: true
    approve: true

- name: Replace incompatible map pins (keeping their entries), then attach, in one module run
  lqos.bpf.attach:
    spec: reference
    object: /var/lib/lqos-bpf/reference/current/shaper_kern.o
    interface: eth1
    pinned_maps:
      state: migrated
      unmigratable: start_empty
    approve: true
  register: attached
  # attached.pinned_maps is what lqos.bpf.pinned_maps would have returned; commit its replacements with
  # lqos.bpf.pinned_maps (state: committed) once the health check passes.

- name: Count the kernel's transmit calls per CPU too (the reference pipeline's optional kprobe)
  lqos.bpf.attach:
    spec: reference
    interface: eth1
    kprobes: [xmit_counter]
    approve: true

- name: Detach the kprobe again (XDP and TC stay)
  lqos.bpf.attach:
    spec: reference
    interface: eth1
    kprobes: []
    approve: true

- name: Detach what this collection attached
  lqos.bpf.attach:
    spec: reference
    interface: eth1
    state: absent
    approve: true
"""

RETURN = r"""
interface:
  description: The interface name.
  returned: always
  type: str
  sample: eth1
ifindex:
  description: Its index in its network namespace (null when it does not exist and O(state=absent)).
  returned: always
  type: int
  sample: 3
netns:
  description: The network namespace (null for the host's).
  returned: always
  type: str
  sample: shaper-test
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
applied:
  description:
    - True when the planned actions were carried out (O(approve=true), not in check mode).
    - C(changed) is true when there is work to do; without approval or in check mode RV(applied) is false and nothing
      was changed.
  returned: always
  type: bool
  sample: true
msg:
  description: Why nothing was changed although actions are planned (check mode, or O(approve) is false).
  returned: when actions were planned but not applied
  type: str
  sample: "9 action(s) planned on eth1; nothing was changed (approve is false: set approve: true to apply them)."
loaded:
  description: True when the object was loaded into the kernel during this run.
  returned: always
  type: bool
  sample: false
programs:
  description:
    - Role of every program of the object. V(required) programs are the ones the spec attaches (a refusal fails
      the task and changes nothing); V(optional) ones (iterators, kprobes, programs of modes not in use) are left
      out when this kernel refuses them; V(disabled) ones are never loaded (spec C(programs)).
  returned: when state is present
  type: dict
  sample: {xdp_shaper: required, tc_classify: required, flow_reader: optional}
left_out:
  description:
    - Optional programs this kernel refused, so the object was loaded without them. Before the load each optional
      program is trial-loaded alone (nothing pinned or attached); one refused only by the real load is left out and
      the load retried. A warning names each one with the feature lost.
    - C(class) is V(kernel_policy) (refused before verification), V(attach_target) (its kernel function or BTF id is
      missing), V(verifier), V(resource_limit) or V(load_error).
  returned: when state is present
  type: list
  elements: dict
  sample:
    - program: flow_reader
      section: iter/bpf_map_elem
      class: kernel_policy
      reason: "the kernel refused program flow_reader (SEC(\"iter/bpf_map_elem\"), tracing) before verifying it: ..."
      fix: "boot a kernel that allows tracing programs, or it is optional: leave it out ..."
      feature: "reading maps through a BPF iterator (userspace must walk the map itself)"
object:
  description: The object path (O(state=present)).
  returned: always
  type: str
  sample: /var/lib/lqos-bpf/reference/current/shaper_kern.o
object_sha256:
  description: sha256 of the object file (O(state=present)).
  returned: always
  type: str
  sample: b8665fda759cbd98772ca5a6b774ae448353462631461b10480e610d9018c926
fingerprint:
  description: sha256 over the object's hash and the resolved load parameters; equal fingerprints load identical programs.
  returned: always
  type: str
  sample: 5d1f0c8e2b7a4e6f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f
xdp:
  description:
    - The XDP hook. After a run with O(approve=true) it describes the program attached now; otherwise what is attached
      now (for V(keep)) or what would change. Null when the spec attaches no XDP program.
  returned: always
  type: dict
  contains:
    program:
      description: Program name.
      type: str
      sample: xdp_shaper
    id:
      description: Kernel program id (null when not known yet, or detached).
      type: int
      sample: 1207
    tag:
      description: Program tag (hex of the kernel's 8-byte instruction hash).
      type: str
      sample: 8150469489252e15
    mode:
      description: V(hw), V(native) or V(skb); V(auto) in a plan whose mode is decided at attach time.
      type: str
      sample: native
    previous_id:
      description: The program that was replaced or detached, for rollback (null if none).
      type: int
      sample: 1188
    previous_tag:
      description: Its tag.
      type: str
      sample: 77a0d7b0bd7ab4d1
    action:
      description: V(keep), V(attach), V(replace), V(replace_foreign), V(reattach), V(verify), V(adopt), V(detach), V(none) or V(leave).
      type: str
      sample: replace
    tried:
      description: Modes that refused the program before one held (O(xdp_mode=auto)), with the kernel's error.
      type: list
      elements: dict
      sample: [{mode: hw, error: "XDP on eth1: hardware offload refused ...", errno: 22}]
  sample: {program: xdp_shaper, id: 1207, tag: 8150469489252e15, mode: native, previous_id: 1188,
           previous_tag: 77a0d7b0bd7ab4d1, action: replace, tried: []}
tc:
  description: The TC hooks, one entry per slot (same meaning of keys as RV(xdp)).
  returned: always
  type: list
  elements: dict
  contains:
    program:
      description: Program name.
      type: str
    direction:
      description: V(egress) or V(ingress).
      type: str
    handle:
      description: Filter handle.
      type: int
    priority:
      description: Filter priority.
      type: int
    id:
      description: Kernel program id.
      type: int
    tag:
      description: Program tag.
      type: str
    previous_id:
      description: The program that was replaced or detached.
      type: int
    previous_tag:
      description: Its tag.
      type: str
    action:
      description: As in RV(xdp.action).
      type: str
  sample: [{program: tc_classify, direction: egress, handle: 1, priority: 49199, id: 1209, tag: f6263b7c0f910202,
            previous_id: null, previous_tag: null, action: attach}]
kprobes:
  description:
    - The kprobe links of this interface (O(kprobes)); empty when O(kprobes) is left out and O(state=present).
  returned: always
  type: list
  elements: dict
  contains:
    action:
      description: V(keep), V(attach), V(replace) or V(detach).
      type: str
    program:
      description: The kprobe program's name (or, for a link no longer asked for, its pin's).
      type: str
    target:
      description: The kernel function it probes (null for a link found but no longer asked for).
      type: str
    pin:
      description: The link's pin.
      type: str
    link_id:
      description: The kernel's link id (after an applied attach, the new link's; before a detach, the old one's).
      type: int
    prog_id:
      description: The id of the program the link holds.
      type: int
  sample: [{program: xmit_counter, target: dev_hard_start_xmit, action: attach,
            pin: /sys/fs/bpf/lqos_bpf/host/eth1/xmit_counter, link_id: 12, prog_id: 1211}]
actions:
  description: Every live change of this run, in order - carried out when RV(applied), else only planned.
  returned: always
  type: list
  elements: str
  sample:
    - "load /var/lib/lqos-bpf/reference/current/shaper_kern.o (sha256 b8665fda759cbd98; cpu_map max_entries=2, rodata cpu_count=2)"
    - "replace XDP program id 1188 (xdp_shaper, tag 77a0d7b0bd7ab4d1) on eth1 with the new xdp_shaper atomically (native mode)"
    - "pin xdp_shaper at /sys/fs/bpf/lqos_bpf/host/eth1/xdp_shaper"
notes:
  description: Facts worth knowing that need no action (modes refused before one held, foreign programs left in place).
  returned: always
  type: list
  elements: str
  sample: ["TC egress program id 77 (other, tag 0123456789abcdef) on eth1 is not ours: left in place"]
pin_dir:
  description: The folder that holds our program pins for this interface.
  returned: always
  type: str
  sample: /sys/fs/bpf/lqos_bpf/host/eth1
state_file:
  description: The state file of this interface.
  returned: always
  type: str
  sample: /run/lqos-bpf/attach/host-eth1-3a5f0c2d9e1b.json
diff:
  description: Hooks and pins before and after (after is the list of planned actions when nothing was applied).
  returned: in diff mode
  type: dict
pinned_maps:
  description:
    - The result of the pin step (O(pinned_maps)), as M(lqos.bpf.pinned_maps) returns it - C(actions), C(migrated),
      C(pins), C(summary), C(msg), ... Also in the result of a run that failed after the step, without C(pins).
    - After an applied attach, C(caught_up) says per replaced map what the catch-up pass carried from the old map
      into the new one since the copy - C(carried), C(deleted), C(kept_newer) (written in the new map since, so
      kept), C(added_up) (a counter map's increases added).
  returned: with O(pinned_maps)
  type: dict
  sample: {changed: false, actions: [], migrated: [], summary: {total: 9, compatible: 9},
           msg: "no incompatible pin and no unfinished replacement under /sys/fs/bpf; nothing to migrate"}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.lqos.bpf.plugins.module_utils._attach.attacher import run_attach
from ansible_collections.lqos.bpf.plugins.module_utils._attach.plan import DEFAULT_STATE_DIR, default_object, XDP_MODES
from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    APPROVE_ARGS, LqosError, PIN_ARGS, run_module, SPEC_ARGS,
)
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import CFFI_IMP_ERR, HAS_CFFI
from ansible_collections.lqos.bpf.plugins.module_utils._maps.pin_step import (
    catch_up, flush, pending, roll_back_step, run_pin_step, STEP_OPTIONS,
)
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec


def argument_spec() -> dict:
    spec = dict(
        object=dict(type="path"),
        interface=dict(type="str", required=True),
        netns=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        xdp_mode=dict(type="str", choices=list(XDP_MODES), default="auto"),
        tc=dict(type="bool", default=True),
        tc_programs=dict(type="list", elements="str"),
        kprobes=dict(type="list", elements="str"),
        force=dict(type="bool", default=False),
        state_dir=dict(type="path", default=DEFAULT_STATE_DIR),
        rodata=dict(type="dict", default={}),
        data=dict(type="dict", default={}),
        topology_data=dict(type="dict", default={}),
        pinned_maps=dict(type="dict", options=STEP_OPTIONS),
    )
    spec.update(SPEC_ARGS)
    spec.update(PIN_ARGS)
    spec.update(APPROVE_ARGS)
    return spec


def run(module) -> dict:
    spec = validate_spec(module.params["spec"])
    step = module.params["pinned_maps"]
    if step is None:
        return run_attach(module, spec)
    if module.params["state"] != "present":
        raise LqosError("pinned_maps is a step before an attach; it has no meaning with state: absent.",
                        "leave pinned_maps out when detaching (lqos.bpf.pinned_maps audits or cleans pins on its own).")
    # The object the attach loads: the one given, or the current build of the spec (as run_attach resolves it).
    try:
        pins = run_pin_step(module, step, module.params["object"] or default_object(spec))
        return _attach_after_step(module, spec, step, pins)
    finally:
        flush()   # snapshots the catch-up did not take (a failed attach): written for the commit's pass


def _attach_after_step(module, spec: dict, step: dict, pins: dict) -> dict:
    try:
        result = run_attach(module, spec)
    except LqosError as exc:
        if exc.details.get("incompatible_pins") and pending(module, pins):
            # The pins the step would replace are what blocks the attach plan: that is the plan, not a failure.
            return {"changed": True, "applied": False, "interface": module.params["interface"],
                    "netns": module.params["netns"], "state": "present", "pinned_maps": pins,
                    "actions": ["attach on %s once the incompatible pins are replaced" % module.params["interface"]],
                    "notes": ["the attach is planned past the pins the step above would replace: %s"
                              % "; ".join(exc.details["incompatible_pins"])],
                    "msg": "%s; the attach is planned once they are replaced." % pins.get("msg", "").rstrip(".")}
        # All or nothing: what the step changed in this run is put back too, and the error says so.
        exc = roll_back_step(module, pins, exc)
        # What the step did, without its per-pin records: a failed task prints its whole result.
        brief = {k: pins[k] for k in ("changed", "actions", "migrated", "summary", "msg") if k in pins}
        raise LqosError(exc.msg, exc.fix, **dict(exc.details, pinned_maps=brief))
    if result.get("applied") or (pins.get("migrated") and not pending(module, pins)):
        # the programs now run on the new maps: carry over what the old ones received since the copy
        pins["caught_up"] = catch_up(module, step)
    result["pinned_maps"] = pins
    result["changed"] = bool(result["changed"] or pins["changed"])
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_CFFI:
        module.fail_json(msg=missing_required_lib("cffi (Debian: python3-cffi)"), exception=CFFI_IMP_ERR)
    run_module(module, run)


if __name__ == "__main__":
    main()
