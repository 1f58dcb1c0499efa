# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.pipeline: resolves ``spec`` on the controller and, for the ``check`` option,
computes the Rust mirror layouts as lqos.bpf.abi_check's action plugin does; then runs the module."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.plugin_utils._action import SpecActionBase


class ActionModule(SpecActionBase):
    def controller_work(self, args: dict, task_vars: dict) -> dict:
        check = args.get("check")
        if isinstance(check, str) and check.strip():
            # key=value task arguments give `check` as a string ("trial_load=true src=..." or JSON): read it as
            # the module will, so the Rust side is computed here for it exactly as for the YAML form.
            from ansible.module_utils.common.validation import check_type_dict
            try:
                check = check_type_dict(check)
            except (TypeError, ValueError) as exc:
                raise LqosError("pipeline: `check` is not a mapping (%s): %r." % (exc, check),
                                "give check as a YAML mapping, as JSON, or as key=value pairs such as "
                                "check='trial_load=true src=/path/to/crate'.")
            args = dict(args, check=check)
        if not isinstance(check, dict) or args.get("state", "present") != "present":
            return args
        # Imported only for a check: tree-sitter and the Rust layout code are not loaded for a plain build.
        from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
        # Without its own src the check reads the Rust side where the pipeline's src is (same path on both sides,
        # as lqos.bpf.abi_check's src).
        prepared = prepare_args({"spec": args["spec"], "src": check.get("src") or args.get("src"),
                                 "rust_src": check.get("rust_src"),
                                 "rust_layouts": check.get("rust_layouts")}, self._loader.get_basedir())
        if prepared.get("rust_layouts") is not None:
            args = dict(args, check=dict(check, rust_layouts=prepared["rust_layouts"]))
        return args
