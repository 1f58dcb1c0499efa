# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The fleet ABI report (module lqos.bpf.abi_report), controller only.

``report`` aggregates abi_info results with jmespath (and merges partial reports); ``render`` renders JSON,
Markdown and HTML from the Jinja2 templates of ``roles/audit/templates/`` (escaped by output kind, the set
written all or none); ``cells`` are the cells of the ownership model (loader, service columns).

May import: module_utils._common.
"""
