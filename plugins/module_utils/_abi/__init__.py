# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The ABI check: the built object against its Rust mirrors and against the chain it came from.

``check`` is the check as the ``abi_check`` module (and ``pipeline``'s ``check``) runs it: parity of each
mirror pair, chain drift, the record, the drift stop, the trial load; ``parity`` compares one mirror pair
(size, offsets, padding; pure); ``drift`` compares the chain a build ran with the chain the spec names
(pure); ``derive`` derives the pairs, pins and maxima from the built object. The controller half (the Rust side) is plugin_utils. It sits on the
kernel layer (BTF, object files) and the build layer (what a build is, the preflight of the object).

May import: _common, _kernel, _build.pipeline, _build.sources, _build.toolchain.
"""
