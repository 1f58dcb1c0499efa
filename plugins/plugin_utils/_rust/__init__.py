# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The Rust side of an lqos_sys-shaped crate, read on the controller with tree-sitter (targets never need it).

``layout`` parses the Rust mirror types and computes their ``#[repr(C)]`` layouts and size assertions;
``derive`` reads what the code says about the BPF object (map openings, binding calls, skeleton uses);
``workspace`` finds the Rust roots a check reads (spec ``rust.roots``, the Cargo workspace). Pure
parsing: it imports nothing of the collection.

May import: nothing.
"""
