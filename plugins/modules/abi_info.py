#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: abi_info
short_description: Gather one host's eBPF ABI facts for the fleet audit (kernel, toolchain, build, programs, pins)
version_added: 0.1.0
description:
  - One call per host returns everything the fleet ABI report (M(lqos.bpf.abi_report), role C(lqos.bpf.audit)) needs.
  - The kernel release, BTF and possible CPUs; the version of every tool of the build chain and of libbpf.
  - The current build of the pipeline under O(build_root) (as M(lqos.bpf.pipeline) publishes it) - build id, object
    path and sha256, the skeleton's object, program and map names - and the ABI check recorded for that build
    (C(abi-check.json) in the build folder, written by the C(lqos.bpf.build) role).
  - For each interface in O(interfaces) (inside its network namespace when one is given), the XDP program (attach
    mode, id, name, tag) and the TC program at each hook of the spec's C(attach.tc), compared with what the
    C(lqos.bpf.deploy) role recorded in C(build_root/deployed.json), and who owns each program (this collection, a
    service's running process, or foreign) with the host's RV(loader) summary.
  - Every pin under O(pin_root), audited exactly as M(lqos.bpf.pinned_maps) with O(lqos.bpf.pinned_maps#module:state=audited)
    does, against the spec and the current build's object.
  - With O(service), the service that loads the programs itself (LibreQoS' C(lqosd), the stand-in C(shaperd)) as
    M(lqos.bpf.service) reads it, and whether the programs it runs are the object its installed binary embeds, the
    collection's own build, and an object that passed the ABI check (RV(service)).
  - Read-only. Nothing is pinned, attached or written (trial loads are closed again). A part that cannot be read (a missing interface, a pin
    root that is not a bpffs) is reported in RV(errors) or in the part's own C(error), never as a failure.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
  - lqos.bpf.attributes.action
  - lqos.bpf.attributes.actiongroup_bpf
  - lqos.bpf.common.requirements_libbpf
  - lqos.bpf.common.spec
  - lqos.bpf.common.pin_root
  - lqos.bpf.common.attributes_info
options:
  build_root:
    description:
      - The pipeline's output folder (O(lqos.bpf.pipeline#module:dest)). Defaults to C(/var/lib/lqos-bpf/<spec name>).
    type: path
  interfaces:
    description:
      - The interfaces the deploy attaches to, as in the C(lqos_bpf_interfaces) role variable.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Interface name.
        type: str
        required: true
      netns:
        description: Network namespace the interface lives in (a name under C(/run/netns) or a path).
        type: str
      xdp_mode:
        description: Accepted so the deploy's interface list can be passed as is; not used here.
        type: str
        choices: [auto, hw, native, skb]
  toolchain:
    description: Report the build chain's tool versions (runs each tool's version command once).
    type: bool
    default: true
  counters:
    description:
      - IP addresses whose per-host counters to read from the spec's C(health) map (its pin under O(pin_root),
        decoded with the map's own BTF, per-CPU values summed). The deploy role reads them before and after its
        traffic probe to prove the attached programs see the probe's packets, in the right direction.
    type: list
    elements: str
  probes:
    description:
      - Traffic probes of the deploy role's health check. For each, where the attached programs count its replies
        and the count now (RV(probes)); read before and after the probe, the difference proves the programs saw
        the probe's packets in the right direction.
    type: list
    elements: dict
    suboptions:
      target:
        description: The address the probe pings.
        type: str
        required: true
      netns:
        description: Network namespace the probe runs in.
        type: str
      direction:
        description:
          - The interface's C(direction) load-time value. V(1) (faces the Internet) counts the replies C(down) on
            this host's own source address; V(2) (faces the customers) counts them C(up) on the target's address.
        type: int
        default: 1
  programs:
    description:
      - Trial-load every program of the current build alone on this kernel (nothing is pinned or attached) and
        report in RV(programs) which load and why the others do not. A V(required) program that cannot load is a
        problem.
    type: bool
    default: true
  service:
    description:
      - The service that loads the programs on this host (the C(lqos.bpf.deploy) role's C(lqos_bpf_loader=service)),
        read as M(lqos.bpf.service) reads it; the result is RV(service). The C(lqos.bpf.audit) role passes it when
        C(lqos_bpf_loader) is V(service).
    type: dict
    suboptions:
      name:
        description: The systemd unit (V(lqosd), V(shaperd)); C(.service) is appended when missing.
        type: str
        required: true
      kind:
        description: The configuration format, as M(lqos.bpf.service)'s O(lqos.bpf.service#module:kind) (default
          from the unit's name).
        type: str
        choices: [lqosd, shaperd]
      config:
        description: The service's configuration file (default C(/etc/lqos.conf) for lqosd, C(/etc/shaperd.conf)
          for shaperd).
        type: path
      binary:
        description: The service's installed binary (default the program of the unit's C(ExecStart); with O(service.pid)
          the process's C(/proc/<pid>/exe)).
        type: path
      pid:
        description: The service's main process when another supervisor than systemd runs it (systemd is not
          asked).
        type: int
      state_dir:
        description:
          - The deploy role's C(lqos_bpf_state_dir). The ABI check of the embedded object is read from
            C(<state_dir>/service/<unit>/abi-check.json), where the deploy role's service loader records it.
        type: path
        default: /var/lib/lqos-bpf
notes:
  - Needs root (CAP_SYS_ADMIN or CAP_BPF) to read program and map information.
seealso:
  - module: lqos.bpf.abi_report
  - module: lqos.bpf.pinned_maps
  - module: lqos.bpf.service
"""

EXAMPLES = r"""
- name: Gather the ABI facts of this shaper
  lqos.bpf.abi_info:
    spec: reference
    pin_root: /sys/fs/bpf
    interfaces:
      - name: eth1
      - name: veth0
        netns: shaper
  register: lqos_bpf_abi_info

- name: What lqosd runs, against its installed binary, the collection's build and the ABI check
  lqos.bpf.abi_info:
    spec: libreqos
    service:
      name: lqosd
  register: lqos_bpf_abi_info

- name: Show the attached XDP programs
  ansible.builtin.debug:
    msg: "{{ lqos_bpf_abi_info.attached | map(attribute='xdp') | list }}"
"""

RETURN = r"""
kernel:
  description: Kernel release, machine, whether kernel BTF is present and the possible CPUs.
  returned: always
  type: dict
  sample: {release: "6.1.0-27-amd64", machine: x86_64, btf: true, possible_cpus: 2}
toolchain:
  description: Version of each build tool (null when not found) and of libbpf.
  returned: always
  type: dict
  sample: {clang: "14.0.6", llc: "14.0.6", bpftool: "7.1.0", bindgen: "0.60.1", ar: "2.40", libbpf: "1.1"}
probes:
  description:
    - With O(probes), each probe with the C(address) and C(field) (down or up) its replies are counted on,
      and the C(count) now.
    - With a counter map (spec C(health)), also the C(key) looked up (hex, encoded for the map's key size and the
      spec's C(health.ipv4)), the C(map), whether it C(found) an entry, and without one the C(nearest) keys the
      map holds (hex, most alike first), so a key in another encoding is plain to see.
  returned: when O(probes) is given
  type: list
  elements: dict
  sample: [{target: 10.0.0.1, netns: shaper, direction: 1, address: 10.0.0.2, field: down, count: 6,
            key: ffffffffffffffffffffffff0a000002, map: map_traffic, found: true, nearest: []}]
counters:
  description: With O(counters), C(down) and C(up) of each address (null when the map has no entry for it).
  returned: when O(counters) is given
  type: dict
  sample: {"10.0.0.2": {down: 3, up: 3}, "10.0.0.9": null}
programs:
  description:
    - With O(programs), every program of the current build with its role and whether this kernel loads it;
      C(class), C(reason) and C(fix) say why one does not (see lqos.bpf.toolchain_info). Null without a build.
    - >-
      C(verifier) is what the verifier said of the program on this kernel, as M(lqos.bpf.toolchain_info) returns
      it (instructions and stack against their limits, the headroom, the load time; V(not loaded: refused) or
      V(not loaded: left out) without figures). The fleet report tabulates it per program and kernel.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: flow_reader, section: iter/bpf_map_elem, role: optional, loadable: false, class: kernel_policy,
       reason: "the kernel refused program flow_reader ... before verifying it: ...", fix: "...",
       verifier: {status: "not loaded: refused", kernel: "6.1.0-27-amd64", headroom_pct: null}}
spec_name:
  description: The spec's name.
  returned: always
  type: str
  sample: reference
build_root:
  description: The pipeline output folder that was read.
  returned: always
  type: str
  sample: /var/lib/lqos-bpf/reference
build:
  description:
    - The current build, or null when there is none. C(object) has C(path), C(sha256) and C(size); C(skeleton) has
      the skeleton's C(object), C(programs) and C(maps) names.
  returned: always
  type: dict
  sample: {build_id: 3f2a9c0d1e4b5a6c, build_dir: /var/lib/lqos-bpf/reference/builds/3f2a9c0d1e4b5a6c,
           object: {path: /var/lib/lqos-bpf/reference/builds/3f2a9c0d1e4b5a6c/shaper_kern.o, sha256: "9b1c...",
           size: 41232}, skeleton: {object: shaper_kern, programs: [xdp_shaper, tc_classify], maps: [cpu_map]},
           previous_build_id: null, built_at: "2026-01-01T12:00:00Z"}
abi_check:
  description:
    - The ABI check recorded for the current build (C(ok), C(build_id), C(object_sha256), C(summary), C(problems),
      C(drift), C(pairs), C(checked_at)), or null when none was recorded.
  returned: always
  type: dict
  sample: {ok: true, build_id: 3f2a9c0d1e4b5a6c, summary: "spec 'reference': ABI parity holds", problems: []}
deployed:
  description: What the last deploy recorded (build id, object sha256, programs and tags per interface), or null.
  returned: always
  type: dict
attached:
  description:
    - One entry per interface of O(interfaces) with C(interface), C(netns), C(ifindex), C(present), C(error), C(xdp)
      and C(tc).
    - C(xdp) has C(mode), C(id), C(name), C(tag), C(expected_program), C(expected_tag) and C(matches) (true when the
      program and tag are what the deploy recorded, false when not, null when the deploy recorded nothing here).
    - C(tc) has one entry per TC hook of the spec with C(direction), C(handle), C(priority), C(id), C(name), C(tag),
      C(expected_program), C(expected_tag) and C(matches).
    - Each C(xdp) and C(tc) entry also has C(owner) - V(collection) (pinned under C(<pin_root>/lqos_bpf/) by
      M(lqos.bpf.attach)), V(service) (a running process holds it, as LibreQoS' C(lqosd) does its programs),
      V(foreign) (neither), or null for an empty hook - and C(holders), for a service the processes holding it
      (C(pid), C(comm), and C(unit), the systemd unit from C(/proc/<pid>/cgroup) or null outside one), else null.
  returned: always
  type: list
  elements: dict
  sample: [{interface: eth1, netns: null, ifindex: 3, present: true, error: null,
            xdp: {mode: native, id: 41, name: xdp_shaper, tag: "0a1b2c3d4e5f6789", expected_program: xdp_shaper,
                  expected_tag: "0a1b2c3d4e5f6789", matches: true, owner: service,
                  holders: [{pid: 812, comm: lqosd, unit: lqosd.service}]}, tc: []}]
loader:
  description:
    - Who loaded the programs on this host's hooks (the ownership of RV(attached)'s entries) - C(kind) V(collection),
      V(service), V(foreign), V(mixed) (more than one of those) or V(none) (nothing on the hooks); C(units) the systemd
      units of the services holding them; C(counts) the hooks per owner.
  returned: always
  type: dict
  sample: {kind: service, units: [lqosd.service], counts: {collection: 0, service: 6, foreign: 0}}
pins:
  description:
    - The pinned-map audit - C(pin_root), C(error) (null, or why the audit could not run), C(maps) (each pin with
      C(name), C(path), C(kind), C(status), C(reason), C(differences), C(used_by) and the map's attributes) and
      C(summary) (count per status).
  returned: always
  type: dict
  sample: {pin_root: /sys/fs/bpf, error: null, summary: {total: 9, compatible: 6, incompatible: 1, not_a_map: 2},
           maps: [{name: host_traffic, status: incompatible, reason: "value_size: expected 112 (object), pinned 128"}]}
problems:
  description:
    - What is wrong on this host now, one sentence each - an ABI check of the current build that failed, a hook that
      does not hold the program and tag the deploy recorded (or an interface that cannot be read), a pin root that
      cannot be audited, an incompatible pinned map; with O(service), a running service whose programs are not its
      embedded object's or whose object failed the ABI check. The C(lqos.bpf.deploy) role's health check requires
      it empty.
  returned: always
  type: list
  elements: str
  sample: ["pinned map host_traffic is incompatible: value_size: expected 112 (object), pinned 128"]
service:
  description:
    - With O(service), the service as M(lqos.bpf.service) reads it - C(unit), C(active_state), C(sub_state),
      C(main_pid) (null when no process runs), C(n_restarts) (systemd's C(NRestarts); with O(service.pid)
      C(active_state) is V(active) while the process exists and the others null), C(binary) (C(path), C(sha256)),
      C(embedded) (the object the binary embeds - C(sha256), C(size) - or null) and C(running) - the programs on the
      hooks of its configuration that its main process holds (C(interface), C(netns), C(hook) V(xdp), V(tc_egress)
      or V(tc_ingress), C(id), C(name), C(tag)).
    - C(tags_vs_embedded) - V(match) when every hook of its configuration holds a program of the main process whose
      tag is the one a trial load of the embedded object gives, V(differ) (each difference in
      C(differences.embedded), as M(lqos.bpf.service)'s O(lqos.bpf.service#module:state=verified) words it) or
      V(unknown) (not running, no embedded object, a trial load that failed; C(reasons.tags_vs_embedded) says why).
    - C(tags_vs_build) - the same against a trial load of the collection's current build under O(build_root)
      (C(differences.build), C(reasons.tags_vs_build)); V(unknown) without a build.
    - C(abi_check) - V(passed) or V(failed) when the service runs the embedded object (C(tags_vs_embedded) V(match))
      and the deploy role recorded an ABI check of exactly that object (C(<state_dir>/service/<unit>/abi-check.json),
      its C(object_sha256) the embedded one's; C(abi_check_record) has its C(path), C(object_sha256), C(ok) and
      C(summary)), else V(unknown) with C(reasons.abi_check).
    - C(error) - why the service could not be read (a bad name, a missing configuration, systemctl that fails),
      else null; then every verdict is V(unknown).
    - A running service whose tags differ from its embedded object, or that runs an object which failed the ABI
      check, adds a line to RV(problems) naming the unit and the fix.
  returned: when O(service) is given
  type: dict
  sample: {unit: lqosd.service, active_state: active, sub_state: running, main_pid: 812, n_restarts: 0,
           binary: {path: /opt/libreqos/src/bin/lqosd, sha256: "5e0c..."}, embedded: {sha256: "9b1c...", size: 41232},
           running: [{interface: ens19, netns: null, hook: xdp, id: 41, name: xdp_prog, tag: "0a1b2c3d4e5f6789"}],
           tags_vs_embedded: match, tags_vs_build: differ, abi_check: passed,
           differences: {embedded: [], build: ["ens19 XDP: xdp_prog (id 41, owner service) has tag 0a1b2c3d4e5f6789;
           expected 1f2e3d4c5b6a7980 (the tag of xdp_prog in the collection's build)."]},
           abi_check_record: {path: /var/lib/lqos-bpf/service/lqosd/abi-check.json, object_sha256: "9b1c...",
           ok: true, summary: "spec 'libreqos': ABI parity holds"},
           reasons: {tags_vs_embedded: null, tags_vs_build: null, abi_check: null}, error: null}
errors:
  description: Parts of the facts that could not be read, one message each.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lqos.bpf.plugins.module_utils._info.host import gather
from ansible_collections.lqos.bpf.plugins.module_utils._info.service import SERVICE_OPTIONS
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.counters import counter_facts, probe_facts
from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    default_build_root, PIN_ARGS, SPEC_ARGS, run_module,
)
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec


def argument_spec() -> dict:
    spec = dict(
        build_root=dict(type="path"),
        interfaces=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            netns=dict(type="str"),
            xdp_mode=dict(type="str", choices=["auto", "hw", "native", "skb"]),
        )),
        toolchain=dict(type="bool", default=True),
        programs=dict(type="bool", default=True),
        counters=dict(type="list", elements="str"),
        probes=dict(type="list", elements="dict", options=dict(
            target=dict(type="str", required=True),
            netns=dict(type="str"),
            direction=dict(type="int", default=1),
        )),
        service=dict(type="dict", options=SERVICE_OPTIONS),
    )
    spec.update(SPEC_ARGS)
    spec.update(PIN_ARGS)
    return spec


def run(module) -> dict:
    params = module.params
    spec = validate_spec(params["spec"])
    build_root = params["build_root"] or default_build_root(spec["name"])
    facts = gather(module, spec, build_root, params["pin_root"], params["interfaces"], params["toolchain"],
                   params["programs"])
    if params["counters"] is not None:
        facts["counters"] = counter_facts(params["pin_root"], spec, params["counters"])
    if params["probes"] is not None:
        facts["probes"] = probe_facts(params["pin_root"], spec, params["probes"])
    if params["service"] is not None:
        from ansible_collections.lqos.bpf.plugins.module_utils._info.service import service_facts, service_problems
        facts["service"] = service = service_facts(module, params["service"], facts["build"])
        if service["error"]:
            facts["errors"].append("service %s: %s" % (service["unit"], service["error"]))
        facts["problems"].extend(service_problems(service))
    return dict(changed=False, **facts)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
