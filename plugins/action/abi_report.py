# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.abi_report: aggregates the fleet's abi_info results on the controller
and writes the report (JSON, Markdown, HTML). No module runs on any target."""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.lqos.bpf.plugins.modules.abi_report import argument_spec
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import report as _report
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import render as _render

ARGUMENT_SPEC = argument_spec()  # one definition, documented in plugins/modules/abi_report.py
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILT_IN_TEMPLATES = {fmt: os.path.join(COLLECTION_ROOT, "roles", "audit", "templates", "fleet-abi-report%s.j2" % suffix)
                      for fmt, suffix in (("markdown", ".md"), ("html", ".html"))}


def _read(path: str):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _previous_time(path: str):
    """``generated_at`` of the report already at ``path`` (JSON), if any."""
    data = _read(path)
    try:
        return json.loads(data)["generated_at"] if data else None
    except (ValueError, KeyError, TypeError):
        return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    @staticmethod
    def _partial(item):
        """One entry of ``inputs``: a report (or artifact) as data, or the path of a JSON report on the controller."""
        if isinstance(item, dict):
            return item
        path = os.path.abspath(os.path.expanduser(str(item)))
        data = _read(path)
        if data is None:
            raise _report.ReportMergeError("%s cannot be read" % path)
        try:
            part = json.loads(data)
        except ValueError as exc:
            raise _report.ReportMergeError("%s is not JSON (%s)" % (path, exc))
        if isinstance(part, dict):
            part["_source"] = path
        return part

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _valid, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        if not _report.HAS_JMESPATH:
            result.update(failed=True, msg=_report.MISSING_JMESPATH, exception=_report.JMESPATH_IMP_ERR)
            return result
        if args["results"] is not None:
            results = {h: args["results"].get(h) for h in args["hosts"]}
        else:
            hostvars = task_vars.get("hostvars", {})
            results = {}
            for host in args["hosts"]:
                hv = hostvars.get(host) if host in hostvars else None
                results[host] = hv.get(args["result_var"]) if hv is not None else None
        generated_at = _render.now()
        meta = {"generated_at": generated_at, "spec": args["spec"],
                "collection": {"name": "lqos.bpf", "version": _render.collection_version(COLLECTION_ROOT)}}
        try:
            parts = [self._partial(item) for item in args["inputs"] or []]
            report = _report.merge(parts, [_report.host_summary(h, results[h]) for h in sorted(results)], meta)
        except _report.ReportMergeError as exc:
            result.update(failed=True, msg="cannot merge the partial reports: %s. Fix: give lqos_bpf_report_inputs "
                                           "the JSON reports (or artifacts) of the audit's parts." % exc)
            return result
        try:
            _render.check_basename(args["basename"])
        except _render.ReportError as exc:
            result.update(failed=True, msg="%s." % exc)
            return result
        templates = {}
        for fmt in ("markdown", "html"):
            given = (args["templates"] or {}).get(fmt)
            if not given:
                templates[fmt] = BUILT_IN_TEMPLATES[fmt]
                continue
            try:
                # A relative name is looked up like the template module does: the role's templates/, then
                # the playbook's.
                templates[fmt] = self._find_needle("templates", os.path.expanduser(given))
            except AnsibleError:
                result.update(failed=True, msg="the %s report template %s was not found (looked in the role's and "
                                               "the playbook's templates/). Fix: give an existing path in "
                                               "lqos_bpf_report_templates.%s." % (fmt, given, fmt))
                return result
            try:
                _render.check_template(templates[fmt])
            except _render.ReportTemplateError as exc:
                result.update(failed=True, msg="the %s report template: %s in lqos_bpf_report_templates.%s." % (
                    fmt, exc, fmt))
                return result
        # Without dest (an AWX job whose working folder is thrown away) the report is only returned.
        formats = args["formats"] if args["dest"] else []
        dest = os.path.abspath(os.path.expanduser(args["dest"] or "."))
        # Every file is rendered before any is written: a template that fails leaves the older set untouched.
        try:
            rendered = _render.render_set(report, dest, args["basename"], formats, templates)
        except _render.ReportError as exc:
            result.update(failed=True, msg="%s. Fix: correct the template or drop it from "
                                           "lqos_bpf_report_templates to use the built-in one. Nothing was written."
                          % exc)
            return result
        if formats and not self._task.check_mode:
            try:
                os.makedirs(dest, exist_ok=True)
            except OSError as exc:
                result.update(failed=True, msg="cannot create the report folder %s: %s. Fix: choose a writable "
                                               "lqos_bpf_report_dir on the controller." % (dest, exc.strerror))
                return result
        previous = _previous_time(os.path.join(dest, args["basename"] + _render.SUFFIXES["json"]))
        files, changed, writes = {}, False, {}
        for fmt, (path, text) in rendered.items():
            data = text.encode("utf-8")
            files[fmt] = path
            old = _read(path)
            if old != data:
                # A new time alone is no change: the fleet's state is what the report is about.
                if previous is None or old != text.replace(generated_at, previous).encode("utf-8"):
                    changed = True
                writes[path] = data
        if writes and not self._task.check_mode:
            try:
                _render.write_set(writes)
            except OSError as exc:
                result.update(failed=True, msg="cannot write the report into %s: %s. Nothing was replaced: the "
                                               "older report files are as they were. Fix: free space or choose a "
                                               "writable lqos_bpf_report_dir on the controller." % (
                                                   dest, exc.strerror or exc))
                return result
        line = _report.summary_line(report)
        result.update(changed=changed, ok=report["ok"], files=files, status_counts=report["status_counts"],
                      groups=report["groups"], drift=report["drift"], drifted_hosts=report["drifted_hosts"],
                      hosts_total=report["hosts_total"], msg=line, report=_report.artifact(report))
        if args["fail_on_drift"] and not report["ok"]:
            details = "; ".join("%s: %s %s: %s" % (d["host"], d["kind"], d["subject"], d["detail"])
                                for d in report["drift"])
            result.update(failed=True, msg="%s. Drift: %s. Fix: see the report %s; redeploy the drifted hosts "
                                           "(lqos_bpf_approve=true) or fix the Rust mirrors/spec."
                          % (line, details, files.get("html") or next(iter(files.values()), dest)))
        return result
