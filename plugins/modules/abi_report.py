#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: abi_report
short_description: Aggregate the fleet's lqos.bpf.abi_info results into one ABI report (JSON, Markdown, HTML)
version_added: 0.1.0
description:
  - "Runs on the controller only (action plugin); nothing runs on the targets. Call it once for the play
    (C(run_once: true), C(delegate_to: localhost)) after every host ran M(lqos.bpf.abi_info)."
  - Reads each host's abi_info result (from the host variable O(result_var), or O(results)), classifies every host
    as V(drift), V(deployed) (built, checked, its programs attached), V(built) (built and checked, nothing attached),
    V(unchecked) (built, no ABI check recorded for the current build), V(not_built) or V(no_data) (abi_info did not
    run there), groups the hosts by object hash and ABI status, and lists every drift finding - a failed ABI check
    of the current build, an incompatible pinned map, an attached program that is not the one the deploy recorded,
    or a map pin missing under attached programs.
  - Writes the report to O(dest) as JSON, Markdown and a self-contained HTML page (inline CSS, no script, no
    external resources), the last two from Jinja2 templates (O(templates)). Each carries the time, the spec, the
    collection version and a legend of the statuses; hashes are shortened in tables (the full one is in the JSON
    and, in HTML, on hover). Field extraction uses jmespath on the controller.
  - The files are written as a set, all or none; every file is rendered first, then each is written beside the
    old one and renamed over it, so a template or a write that fails leaves the older set as it was.
  - Fails when any host drifts, unless O(fail_on_drift=false); the files are written first.
author: lqos.bpf maintainers (@lqos-bpf)
extends_documentation_fragment:
  - lqos.bpf.attributes.platform
options:
  hosts:
    description: The hosts to report on, for example C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
  result_var:
    description: The host variable that holds each host's registered M(lqos.bpf.abi_info) result.
    type: str
    default: lqos_bpf_abi_info
  results:
    description: The results by host name, instead of reading O(result_var) from each host's variables.
    type: dict
  inputs:
    description:
      - Partial reports to merge into this one, each a path on the controller of a JSON report this module wrote,
        or a report as data (the RV(report) of an earlier run, for example an AWX job artifact).
      - For an audit split into parts (AWX job slicing, one run per site), the hosts of every part and of
        O(hosts) make one report, aggregated as if one run had audited them all. A host in two parts must have
        the same row in both. Every part must have this collection's C(schema_version) (docs/report-schema.md).
    type: list
    elements: raw
  dest:
    description:
      - Folder on the controller for the report files (created when missing), any path. A relative path is
        relative to the folder C(ansible-playbook) runs in (under ansible-runner or AWX, the project folder,
        which is thrown away after the job; give an absolute path there, or none).
      - Without it no file is written; the report is returned (RV(report)) only.
    type: path
  basename:
    description:
      - File name of the report without its suffix (C(.json), C(.md), C(.html)).
      - A plain name only; one with a path in it (C(../x), C(a/b), C(.), C(..)) is refused and nothing is written.
    type: str
    default: fleet-abi-report
  formats:
    description: Which files to write.
    type: list
    elements: str
    choices: [html, json, markdown]
    default: [json, markdown, html]
  fail_on_drift:
    description: Fail the task (after writing the report) when any host drifts.
    type: bool
    default: true
  spec:
    description: Name of the pipeline spec the fleet was audited against, shown in the report's header.
    type: str
  templates:
    description:
      - Jinja2 templates for the Markdown and HTML files, instead of the built-in ones (C(roles/audit/templates/) of
        this collection). A relative name is looked up like M(ansible.builtin.template) does (the role's, then the
        playbook's C(templates/)).
      - "A template gets C(report) (the JSON report as data), C(summary) (the one-line summary) and C(statuses) (in
        order), and the filters C(short) (a hash's first 12 characters) and C(md) (a Markdown table cell)."
      - Escaping follows the output kind, never the template's file name. The HTML template is always autoescaped.
        In the Markdown template every expression is HTML-escaped and Markdown-escaped (C(\ ` * [ ] | ~), a line
        break as C(<br>)), whether or not it uses C(md), because Markdown renders HTML.
      - A template that is a folder is refused as one.
    type: dict
    suboptions:
      markdown:
        description: Template of the C(.md) file.
        type: path
      html:
        description: Template of the C(.html) file.
        type: path
attributes:
  check_mode:
    support: full
    description: Computes the report and says whether the files would change, without writing them.
  diff_mode:
    support: none
    description: No diff is returned.
  idempotent:
    support: full
    description: The task reports a change only when the report's content changes; a new time alone is no change
      (the files are rewritten with it).
  action:
    support: full
    description: Runs entirely on the controller as an action plugin.
requirements:
  - jmespath on the controller
seealso:
  - module: lqos.bpf.abi_info
"""

EXAMPLES = r"""
- name: Gather the ABI facts of every host
  lqos.bpf.abi_info:
    spec: reference
    interfaces: [{name: eth1}]
  register: lqos_bpf_abi_info

- name: Write the fleet report and fail on drift
  lqos.bpf.abi_report:
    hosts: "{{ ansible_play_hosts_all }}"
    dest: reports
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
ok:
  description: True when no host drifts.
  returned: always
  type: bool
  sample: false
files:
  description: The written report files by format.
  returned: always
  type: dict
  sample: {json: /srv/reports/fleet-abi-report.json, markdown: /srv/reports/fleet-abi-report.md,
           html: /srv/reports/fleet-abi-report.html}
status_counts:
  description: How many hosts have each ABI status.
  returned: always
  type: dict
  sample: {drift: 1, deployed: 40, built: 0, unchecked: 0, not_built: 2, no_data: 0}
groups:
  description: Hosts grouped by object sha256 and ABI status, drifted groups first.
  returned: always
  type: list
  elements: dict
  sample: [{object_sha256: "9b1c...", status: deployed, build_ids: [3f2a9c0d1e4b5a6c], hosts: [shaper1, shaper2]}]
drift:
  description: Every drift finding, each with C(host), C(kind) (V(abi), V(pin) or V(program)), C(subject) and C(detail).
  returned: always
  type: list
  elements: dict
  sample: [{host: shaper3, kind: pin, subject: host_traffic, detail: "value_size: expected 112 (object), pinned 128"}]
drifted_hosts:
  description: Names of the hosts with drift.
  returned: always
  type: list
  elements: str
  sample: [shaper3]
hosts_total:
  description: Number of hosts in the report.
  returned: always
  type: int
  sample: 43
report:
  description:
    - The whole report (as the JSON file holds it, without the legends), with C(schema_version), the summary
      fields above and one row per host under C(hosts). The audit role returns it as C(set_stats) data
      (C(lqos_bpf_audit_report)) for ansible-runner and AWX job artifacts; O(inputs) merges such reports.
  returned: always
  type: dict
  sample: {schema_version: 3, ok: true, hosts_total: 1, drifted_hosts: [], status_counts: {deployed: 1},
           hosts: {shaper1: {host: shaper1, status: deployed, build_id: 3f2a9c0d1e4b5a6c}}}
msg:
  description: One line summing the report up (and, on failure, every drift finding and the fix).
  returned: always
  type: str
  sample: "fleet ABI audit: 43 host(s), 2 object hash(es): 1 drift, 40 deployed, 2 not_built; 1 drift finding(s) on shaper3"
"""

from ansible.module_utils.basic import AnsibleModule


def argument_spec() -> dict:
    return dict(
        hosts=dict(type="list", elements="str", required=True),
        result_var=dict(type="str", default="lqos_bpf_abi_info"),
        results=dict(type="dict"),
        inputs=dict(type="list", elements="raw"),
        dest=dict(type="path"),
        basename=dict(type="str", default="fleet-abi-report"),
        formats=dict(type="list", elements="str", choices=["html", "json", "markdown"],
                     default=["json", "markdown", "html"]),
        fail_on_drift=dict(type="bool", default=True),
        spec=dict(type="str"),
        templates=dict(type="dict", options=dict(markdown=dict(type="path"), html=dict(type="path"))),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.fail_json(msg="lqos.bpf.abi_report runs on the controller as an action plugin; use it as a task "
                         "(run_once, delegate_to: localhost), not as a module on a target.")


if __name__ == "__main__":
    main()
