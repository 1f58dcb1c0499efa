# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Who owns a BPF program on a hook: this collection, a service that loads the programs itself, or another tool.

``owners`` is the one ownership model (collection, service, foreign; the attach records and the collection
pins); ``processes`` reads what a running process holds (program ids from ``/proc/<pid>/fdinfo``) and the
BPF object a service binary embeds. attach, the pin step, the service module and abi_info ask this layer;
it sits on the kernel layer only.

May import: _common, _kernel.
"""
