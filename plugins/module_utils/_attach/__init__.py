# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""XDP, TC and kprobe attach and detach (module lqos.bpf.attach).

``plan`` is the pure plan (what to attach where, names and validation); ``attacher`` the ``Attacher`` that
observes the hooks and runs a plan; ``apply`` applies a plan to the kernel (the swap, its lock, the
record); ``kprobe`` the kprobes attached only when asked. It sits on the kernel layer and asks the
ownership layer who holds a hook.

May import: _common, _bpffs, _changes, _spec, _kernel, _ownership.
"""
