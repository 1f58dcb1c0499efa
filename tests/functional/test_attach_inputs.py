"""lqos.bpf.attach given bad input or failing half way: one clear error naming the problem and
the fix, and nothing left behind (kernel state and pin folders read back)."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import build_reference, run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("inputs"), "reference", "ref")


def attach(pair, bpffs, state_dir, obj, resolve_spec=True, **kw):
    args = dict(spec="reference", object=obj, pin_root=bpffs, interface=pair.if_a, netns=pair.ns_a,
                state_dir=state_dir, approve=True)
    args.update(kw)
    return run_module("attach", args, resolve_spec=resolve_spec)


def test_a_failed_hw_attach_leaves_no_pin_folder(reference, netns_pair, bpffs, tmp_path):
    res = attach(netns_pair, bpffs, str(tmp_path / "state"), reference, xdp_mode="hw")
    assert res["_rc"] == 1
    assert res["msg"].startswith("attaching XDP program xdp_shaper to %s in hw mode failed: " % netns_pair.if_a)
    assert not os.path.exists(os.path.join(bpffs, "lqos_bpf")), os.listdir(bpffs)
    with H.netns(netns_pair.ns_a):
        idx = H.ifindex(netns_pair.if_a)
        assert H.xdp_query(idx)["prog_id"] == 0
        assert H.tc_query(idx, "egress", 1, 0xC02F) is None


def test_a_state_dir_that_is_a_file_is_named(reference, netns_pair, bpffs, tmp_path):
    state = tmp_path / "state"
    state.write_text("not a folder")
    for approve in (True, False):
        res = attach(netns_pair, bpffs, str(state), reference, approve=approve)
        assert res["_rc"] == 1
        assert res["msg"] == ("state_dir %s is not a folder. Fix: point state_dir at a folder (default "
                              "/run/lqos-bpf/attach) or remove what is there." % state)
        assert "exception" not in res or "Traceback" not in res.get("exception", "")


@pytest.mark.parametrize("key,value,bounds", [("handle", 1 << 40, "from 1 to 4294967295 (0xffffffff)"),
                                              ("priority", 0x10000, "from 1 to 65535 (0xffff)"),
                                              ("handle", 0, "from 1 to 4294967295 (0xffffffff)")])
def test_tc_handle_and_priority_out_of_range_are_spec_errors(reference, netns_pair, bpffs, tmp_path, key, value, bounds):
    spec = {"name": "wide", "sources": {"kern": "shaper_kern.c"}, "outputs": {"object": "shaper_kern.o"},
            "attach": {"xdp": "xdp_shaper", "tc": [{"program": "tc_classify", "direction": "egress", key: value}]}}
    res = attach(netns_pair, bpffs, str(tmp_path / "state"), reference, spec=spec, resolve_spec=False)
    assert res["_rc"] == 1
    assert res["msg"] == ("pipeline spec 'wide': `attach.tc[0].%s` must be an integer %s, got %d. Fix: write a number "
                          "in that range (hex like 0xC02F is fine in YAML)" % (key, bounds, value))
