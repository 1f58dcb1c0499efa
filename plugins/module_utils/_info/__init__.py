# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""What a host runs, read for the fleet audit (module lqos.bpf.abi_info); it changes nothing.

``host`` is the per-host ABI facts (build, pins, hooks with their owners, programs, kernel facts);
``service`` the ``service`` section (what the service that loads the programs runs, against its embedded
object, the collection's build and the recorded ABI check). It reads every layer below it (the pins as
the pinned_maps audit sees them, the service as the service module reads it); only the module imports it.

May import: _common, _bpffs, _kernel, _ownership, _build.pipeline, _build.toolchain, _maps.audit,
_maps.expectations, _service.config, _service.hooks, _service.run.
"""
