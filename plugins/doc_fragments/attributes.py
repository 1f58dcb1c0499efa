# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Attributes the modules share, as ansible-core's own modules and community.docker declare them.
    Use as ``lqos.bpf.attributes.platform``, ``lqos.bpf.attributes.action``, ``lqos.bpf.attributes.actiongroup_bpf``."""

    DOCUMENTATION = r"""
options: {}
"""

    PLATFORM = r"""
options: {}
attributes:
  platform:
    description: Targets run Linux (bpffs, libbpf, netlink, network namespaces).
    support: full
    platforms: linux
"""

    ACTION = r"""
options: {}
attributes:
  action:
    description: An action plugin of the same name runs on the controller first (it reads the pipeline spec or the
      Rust mirrors there) and then runs the module on the target with plain data.
    support: full
"""

    ACTIONGROUP_BPF = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/lqos.bpf.bpf) in C(module_defaults) to set defaults for this module (C(spec), the one
      option every module of the group takes).
    support: full
    membership:
      - lqos.bpf.bpf
"""
