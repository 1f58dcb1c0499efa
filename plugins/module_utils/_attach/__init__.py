# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""XDP, TC and kprobe attach and detach (module lqos.bpf.attach).

``plan`` is the pure plan (what to attach where, names and validation); ``attacher`` the ``Attacher``, one
run's state and the run, composed with its parts: ``observe`` (``Observer``: the hooks, pins and programs
read), ``planner`` (``Planner``: the decisions), ``kprobe`` (``Kprobes``: the kprobes only when asked) and
``apply`` (``Applier``: the approved changes, their rollback, the record). It sits on the kernel layer and
asks the ownership layer who holds a hook.

May import: _common, _bpffs, _changes, _spec, _kernel, _ownership.
"""
