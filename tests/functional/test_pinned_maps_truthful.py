"""lqos.bpf.pinned_maps state: migrated tells the truth when its record folder fails (issue 25, item 2): a full
folder stops the run before any pin moves; a record that fails after pins moved reports changed: true with
what is left, how to finish and how to undo. Real kernel, private bpffs, a tiny tmpfs for the folder."""
from __future__ import annotations

import hashlib
import os

import pytest

# The fixtures versions and world are used by name.
from test_map_migrate import (  # noqa: F401 pylint: disable=unused-import
    entries, fill_v1, ok, pins, synthetic_flows, versions, world,
)

pytestmark = pytest.mark.usefixtures("tools")

REPLACED = ["flow_table", "ip_to_shaper", "shaper_hotcache"]


def test_migrated_with_a_full_record_folder_moves_nothing(world, versions, full_dir):
    w = world
    w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    before = pins(w.bpffs)
    res = w.maps("migrated", state_dir=full_dir)
    assert res["failed"] is True and res["changed"] is False, res
    assert res["msg"].startswith("the replacement journal cannot be written in %s: No space left on device (ENOSPC) "
                                 "on %s; nothing was changed." % (full_dir, full_dir)), res["msg"]
    assert pins(w.bpffs) == before


def test_a_journal_that_fails_after_pins_moved_reports_what_is_left(world, versions):
    """The journal's own path is a folder: the probe passes, the first journal write fails after the first new
    map was filled at its temporary pin (docs/upgrades.md: the names keep the old maps until each new one is
    renamed over its name). The result says changed: true, lists it, how to finish and undo; the names still
    hold the old maps; the rollback it names puts everything back."""
    w = world
    w.attach("v1")
    fill_v1(w.bpffs, versions["v1"])
    before = pins(w.bpffs)
    old_flows = synthetic_flows(w.bpffs)
    journal = os.path.join(w.maps_state, "replace-%s.json" % hashlib.sha256(
        os.path.realpath(w.bpffs).encode()).hexdigest()[:16])
    os.makedirs(journal)
    res = w.maps("migrated")
    assert res["failed"] is True and res["changed"] is True, res
    msg = res["msg"]
    assert "(EISDIR)" in msg, msg
    assert " This run changed the host and this is left: " in msg, msg
    left = res["changes_left"]
    temp = [c["change"] for c in left if " pinned at the temporary " in c["change"]]
    assert temp and len(temp) == len(left), left
    undo = "lqos.bpf.pinned_maps state: rolled_back approve: true (pin_root %s, state_dir %s)" % (
        os.path.realpath(w.bpffs), w.maps_state)
    assert all(c["undo"] == undo for c in left), left
    assert msg.endswith("To finish instead: fix the cause, then run state: migrated again (it finishes the "
                        "replacement from the pins). Fix: %s" % res["msg"].rsplit("Fix: ", 1)[1]), msg
    now = pins(w.bpffs)
    assert {name: now[name] for name in REPLACED} == {name: before[name] for name in REPLACED}   # never missing
    # The undo it names works.
    os.rmdir(journal)
    ok(w.maps("rolled_back"))
    assert pins(w.bpffs) == before and synthetic_flows(w.bpffs) == old_flows
