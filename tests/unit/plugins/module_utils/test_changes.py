"""The shared rule of failed tasks (_changes): plain data, no kernel."""
from __future__ import annotations

import errno

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._changes import HostChanges, failure, probe_writable
from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError


def test_everything_rolled_back_is_changed_false_and_says_what():
    undone = []
    changes = HostChanges()
    changes.add("a attached", lambda: (undone.append("a"), "a detached")[1], "detach a")
    changes.add("b pinned", lambda: undone.append("b"), "rm b")        # None: "undid: <change>"
    changes.add("tmp pins", lambda: "", "rm tmp")                       # "": not worth a word
    err = changes.fail(LqosError("step c failed", "fix c"))
    assert undone == ["b", "a"]                                          # newest first
    assert err.msg == "step c failed. Rolled back what this run had changed: undid: b pinned; a detached."
    assert err.details == {"changed": False, "rolled_back": ["undid: b pinned", "a detached"]}
    assert err.fix == "fix c"
    assert not changes                                                   # consumed


def test_a_rollback_that_fails_leaves_changed_true_with_the_undo():
    def boom():
        raise OSError(errno.EIO, "Input/output error")

    changes = HostChanges()
    changes.add("a attached", lambda: "a detached", "detach a")
    changes.add("b pinned", boom, "rm b")
    changes.add("c made", None, "rmdir c")                              # cannot be rolled back
    err = changes.fail(LqosError("d failed."), finish="run again")
    assert err.details["changed"] is True
    assert err.details["rolled_back"] == ["a detached"]
    assert err.details["changes_left"] == [
        {"change": "b pinned", "undo": "rm b", "rollback_error": "[Errno 5] Input/output error"},
        {"change": "c made", "undo": "rmdir c"}]
    assert err.msg == ("d failed. Rolled back what this run had changed: a detached. This run changed the host and "
                       "this is left: b pinned (undo: rm b); c made (undo: rmdir c). To finish instead: run again.")


def test_failure_adds_to_an_earlier_outcome():
    err = failure(LqosError("x"), ["p back"], [])
    err = failure(err, [], [{"change": "m aside", "undo": "roll back"}], who="the pin step")
    assert err.details["changed"] is True and err.details["rolled_back"] == ["p back"]
    assert err.msg == ("x. Rolled back what this run had changed: p back. The pin step changed the host and this is "
                       "left: m aside (undo: roll back).")


def test_an_os_error_is_its_environment_fault():
    changes = HostChanges()
    err = changes.fail(OSError(errno.ENOSPC, "No space left on device", "/run/x/rec.json"), "writing the record")
    assert err.msg == "writing the record: No space left on device (ENOSPC) on /run/x/rec.json."
    assert err.details == {"changed": False}


def test_probe_writable(tmp_path):
    probe_writable(str(tmp_path / "new"), 10000, "the record")
    assert list((tmp_path / "new").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LqosError) as ei:
        probe_writable(str(blocker / "sub"), 1, "the record")
    assert ei.value.msg.startswith("the record cannot be written in %s: " % (blocker / "sub"))
    assert ei.value.msg.endswith("; nothing was changed.")
