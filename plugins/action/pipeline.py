# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.pipeline: resolves ``spec`` on the controller and, for the ``check`` option,
computes the Rust mirror layouts as lqos.bpf.abi_check's action plugin does; then runs the module."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._action import SpecActionBase


class ActionModule(SpecActionBase):
    def controller_work(self, args: dict, task_vars: dict) -> dict:
        check = args.get("check")
        if not isinstance(check, dict) or args.get("state", "present") != "present":
            return args
        # Imported only for a check: tree-sitter and the Rust layout code are not loaded for a plain build.
        from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
        prepared = prepare_args({"spec": args["spec"], "src": check.get("src"), "rust_src": check.get("rust_src"),
                                 "rust_layouts": check.get("rust_layouts")}, self._loader.get_basedir())
        if prepared.get("rust_layouts") is not None:
            args = dict(args, check=dict(check, rust_layouts=prepared["rust_layouts"]))
        return args
