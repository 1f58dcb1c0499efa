# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The build layer: the clang -> llc -> bpftool skeleton -> wrapper archive -> bindgen chain on the target.

``toolchain`` is the preflight (tools, versions, kernel facts, object checks); ``pipeline`` the chain itself
(plan, manifest, steps); ``builds`` the build folder (dest layout, lock, atomic publish, prune, rollback);
``buildrs`` the flags a crate's own build.rs passes; ``sources`` ties a build to the sources it was built
from. It sits on the kernel layer (trial loads, kernel facts) and the shared spec.

May import: _common, _bpffs, _spec, _kernel.
"""
