# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.abi_report: aggregates the fleet's abi_info results on the controller
and writes the report (JSON, Markdown, HTML). No module runs on any target."""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.lqos.bpf.plugins.module_utils._common import atomic_write
from ansible_collections.lqos.bpf.plugins.modules.abi_report import argument_spec
from ansible_collections.lqos.bpf.plugins.plugin_utils import _report

ARGUMENT_SPEC = argument_spec()  # one definition, documented in plugins/modules/abi_report.py


def _read(path: str):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

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
        report = _report.aggregate(results)
        dest = os.path.expanduser(args["dest"])
        files, changed = {}, False
        if not self._task.check_mode:
            try:
                os.makedirs(dest, exist_ok=True)
            except OSError as exc:
                result.update(failed=True, msg="cannot create the report folder %s: %s. Fix: choose a writable "
                                               "lqos_bpf_report_dir on the controller." % (dest, exc.strerror))
                return result
        for fmt in args["formats"]:
            suffix, render = _report.RENDERERS[fmt]
            path = os.path.join(dest, args["basename"] + suffix)
            data = render(report).encode("utf-8")
            files[fmt] = path
            if _read(path) != data:
                changed = True
                if not self._task.check_mode:
                    atomic_write(path, data)
        line = _report.summary_line(report)
        result.update(changed=changed, ok=report["ok"], files=files, status_counts=report["status_counts"],
                      groups=report["groups"], drift=report["drift"], drifted_hosts=report["drifted_hosts"],
                      hosts_total=report["hosts_total"], msg=line)
        if args["fail_on_drift"] and not report["ok"]:
            details = "; ".join("%s: %s %s: %s" % (d["host"], d["kind"], d["subject"], d["detail"])
                                for d in report["drift"])
            result.update(failed=True, msg="%s. Drift: %s. Fix: see the report %s; redeploy the drifted hosts "
                                           "(lqos_bpf_approve=true) or fix the Rust mirrors/spec."
                          % (line, details, files.get("html") or next(iter(files.values()), dest)))
        return result
