# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""A service that loads the programs itself (lqosd; the reference pipeline's stand-in shaperd), as the ``service`` module handles it.

``run`` is one run of the module; ``unit`` the systemd unit through ``systemctl`` argument lists (what
each state does: pure); ``config`` the service's configuration readers (pure); ``hooks`` the hooks of
its interfaces read from the kernel, the trial-load tags and the problems found on them. It sits on the
kernel layer and asks the ownership layer which programs the service holds.

May import: _common, _changes, _kernel, _ownership.
"""
