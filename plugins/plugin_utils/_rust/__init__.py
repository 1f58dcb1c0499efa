# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The Rust side of an lqos_sys-shaped crate, read on the controller with tree-sitter (targets never need it).

``crate`` is the crate walk (the sources under the roots, parsed and indexed) and the API of the layout
engine (``RustCrate``), composed with its parts: ``layout`` (``LayoutEngine``: a type's ``#[repr(C)]``
layout), ``consts`` (``ConstEvaluator``: constant expressions) and ``assertions`` (``AssertionFinder``: the
size assertions of the sources); ``parse`` loads tree-sitter and holds the model (``Field``, ``Layout``,
``SizeAssertion``, ``RustLayoutError``) and the syntax helpers they share; ``repr_rules`` the repr rules and
primitive sizes. ``derive`` reads what the code says about the BPF object (map openings, binding calls,
skeleton uses); ``workspace`` finds the Rust roots a check reads (spec ``rust.roots``, the Cargo
workspace). Pure parsing: it imports nothing of the collection.

May import: nothing.
"""
