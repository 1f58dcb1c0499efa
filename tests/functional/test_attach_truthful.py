"""lqos.bpf.attach tells the truth when it fails (issue 25, items 1, 3 and 5): a failed run that changed the host
says so, one that rolled back says what it rolled back; our own programs are known by the attach record too.
Real kernel: a veth pair in private netns, a private bpffs, a tiny tmpfs for the record folder."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import sh
# objects is a fixture, used by name.
from test_attach import Env, failed, ok, objects  # noqa: F401 pylint: disable=unused-import

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture
def env(tmp_path, bpffs, netns_pair, objects):  # noqa: F811
    return Env(tmp_path, bpffs, netns_pair, objects)


def nothing_attached(env):
    hooks = env.hooks()
    return (not any(hooks["xdp"][k] for k in ("drv_prog_id", "skb_prog_id", "hw_prog_id"))
            and not any(hooks["tc"].values()))


def test_attach_with_a_full_record_folder_changes_nothing(env, full_dir):
    """The record folder is checked before anything is attached: the run stops with nothing changed (it used to
    leave XDP and TC attached and report changed: false)."""
    result = env.attach(state_dir=full_dir)
    msg = failed(result)
    assert result["changed"] is False
    assert msg.startswith("the attach record cannot be written in %s: No space left on device (ENOSPC) on %s; "
                          "nothing was changed. Fix: free space on the filesystem holding %s"
                          % (full_dir, full_dir, full_dir)), msg
    assert nothing_attached(env)
    assert env.pins() == {}


def test_a_record_that_cannot_be_written_after_attaching_rolls_the_attach_back(env):
    """The record write fails after the programs were attached (its path is taken by a folder): every change of
    the run is rolled back (hooks, program pins, the new map pins, the pin folders) and the result says so."""
    os.makedirs(env.state_dir)
    result = env.attach(diff=False)
    assert result["_rc"] == 0, result
    record = result["state_file"]
    ok(env.attach(state="absent"))
    assert nothing_attached(env)
    for name in os.listdir(env.bpffs):   # start from an empty bpffs: the attach pins new maps
        path = os.path.join(env.bpffs, name)
        if L.pinned_kind(path) == "map":
            os.unlink(path)
    os.makedirs(record)   # the record's own path is a folder: the probe passes, the rename fails
    result = env.attach()
    msg = failed(result)
    assert result["changed"] is False, result
    assert "Is a directory" in msg and "(EISDIR)" in msg, msg
    assert "Rolled back what this run had changed: " in msg, msg
    assert "new XDP program detached" in msg and "TC egress filter removed" in msg, msg
    assert "This run changed the host" not in msg
    assert result["rolled_back"] and "changes_left" not in result
    assert nothing_attached(env)
    assert env.pins() == {}


def test_programs_whose_pins_were_lost_are_known_by_the_record_and_detached(env):
    """bpffs remounted (every pin gone) while XDP and TC stay attached: the record's ids and tags say the programs
    are ours, so the plan names them and state: absent approved detaches them (it left them with changed: false)."""
    first = ok(env.attach())
    xdp_id = first["xdp"]["id"]
    sh("umount", env.bpffs)
    sh("mount", "-t", "bpf", "bpf", env.bpffs)
    assert env.pins() == {}
    assert env.hooks()["xdp"]["drv_prog_id"] == xdp_id
    plan = ok(env.attach(state="absent", approve=False))
    assert plan["changed"] is True, plan
    assert any(a.startswith("detach XDP") and "id %d" % xdp_id in a for a in plan["actions"]), plan["actions"]
    assert not [n for n in plan["notes"] if "not ours" in n], plan["notes"]
    done = ok(env.attach(state="absent"))
    assert done["changed"] is True
    assert nothing_attached(env)
    again = ok(env.attach(state="absent"))
    assert again["changed"] is False


def test_a_recorded_id_with_another_tag_is_not_ours(env):
    """Only id and tag together make a recorded program ours: a record naming the id with another tag does not."""
    import json
    first = ok(env.attach())
    sh("umount", env.bpffs)
    sh("mount", "-t", "bpf", "bpf", env.bpffs)
    with open(first["state_file"]) as fh:
        record = json.load(fh)
    record["xdp"]["tag"] = "0000000000000000"
    record["tc"] = []
    with open(first["state_file"], "w") as fh:
        json.dump(record, fh)
    plan = ok(env.attach(state="absent", approve=False))
    assert [n for n in plan["notes"] if "is not ours" in n and "XDP" in n], plan["notes"]
    assert not [a for a in plan["actions"] if a.startswith("detach XDP")]


def test_a_negative_value_for_an_unsigned_variable_is_refused_already_in_the_plan(env):
    """data: {direction: -1} for a __u32 was written as 4294967295; it is refused as map_entries refuses it, with
    the same words, before anything is loaded (a plan too)."""
    for approve in (False, True):
        res = env.attach(data={"direction": -1}, approve=approve)
        assert res["failed"] is True and res["changed"] is False, res
        assert res["msg"] == (".data variable direction: -1 does not fit a 4-byte unsigned integer (0 to "
                              "4294967295). Fix: give a number in that range.")
    assert nothing_attached(env) and env.pins() == {}
