# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The kernel layer: everything lqos.bpf asks the kernel, through libbpf in cffi ABI mode.

``libbpf`` is the core (loading libbpf through cffi, errors, libbpf's messages, file descriptors and pins)
over ``declarations`` (the constants and C declarations it uses) and ``open_object`` (the handle base class,
an object file opened and its maps and programs as definitions); one file per kernel object sits on it:
``btf`` (BTF of objects and of the kernel), ``maps`` (maps and programs the kernel holds), ``batch`` (whole
maps through the batch commands), ``objects`` (object files: load, per-program probe, why a load failed),
``loaded`` (a loaded object), ``hooks`` (netns, interfaces, XDP and TC, bpf_links), ``qdiscs`` (the ingress
slot through rtnetlink). ``programs`` (program roles, kernel facts), ``verifier`` (what the verifier said) and
``counters`` (per-host counters read by BTF) read what those return. The other layers import this one; it
imports none of them.

May import: _common.
"""
