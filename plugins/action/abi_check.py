# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.abi_check: resolves ``spec``, computes the Rust mirror
layouts, size assertions and constants on the controller (tree-sitter), then runs
the module, which compares them with the built object's BTF on the target."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
from ansible_collections.lqos.bpf.plugins.plugin_utils._action import SpecActionBase


class ActionModule(SpecActionBase):
    def controller_work(self, args: dict, task_vars: dict) -> dict:
        return prepare_args(args, self._loader.get_basedir())
