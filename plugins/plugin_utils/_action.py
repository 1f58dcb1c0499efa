# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""Base action plugin: resolve ``spec`` on the controller, then run the module.

May import: _spec_loader, module_utils._common."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option


class SpecActionBase(ActionBase):
    """Loads the pipeline spec here, so targets need no YAML parser.

    Subclasses may override ``controller_work(args, task_vars)`` to add data
    computed on the controller (e.g. Rust layouts) before the module runs.
    """

    TRANSFERS_FILES = False
    _requires_connection = True

    def controller_work(self, args: dict, task_vars: dict) -> dict:
        return args

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = dict(self._task.args)
        try:
            if "spec" in args:
                args["spec"] = resolve_spec_option(args["spec"], self._loader.get_basedir())
            args = self.controller_work(args, task_vars)
        except LqosError as exc:
            result.update(failed=True, msg=str(exc), **exc.details)
            return result
        module = self._task.resolved_action or self._task.action
        result.update(self._execute_module(module_name=module, module_args=args, task_vars=task_vars))
        return result
