# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for lqos.bpf.abi_info: resolves ``spec`` on the controller, then runs the module."""

from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._action import SpecActionBase


class ActionModule(SpecActionBase):
    pass
