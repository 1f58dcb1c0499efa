# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Pinned maps: audit, cleanup, backup and restore, and the two-phase replacement that migrates their entries.

``pinned_maps`` is the ``pinned_maps`` module's run (and its cleanup plan) over ``expectations`` (what a pin
must be, pure) and ``audit`` (every pin read and classified); ``backup`` the backup files, pin removal and
restore; ``migrate`` the pure field plan and conversion between two layouts; ``replace`` the kernel side of a
replacement (temporary and aside pins, new maps, publish); ``window`` the journal and copy-time snapshots of
writes made meanwhile; ``commit`` the catch-up, commit and roll back; ``states`` the module states of a
replacement; ``entries`` entries written by BTF field name (module ``map_entries``); ``pin_step`` the pin step
run inside an attach. It sits on the kernel layer, asks the ownership layer whose a pin is, and validates
interface and netns names with the attach plan's rules.

May import: _common, _bpffs, _changes, _spec, _kernel, _ownership, _attach.plan.
"""
