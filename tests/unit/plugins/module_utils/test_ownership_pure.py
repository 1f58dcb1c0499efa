"""The ownership model (collection, service, foreign) with plain data: cgroup texts, a /proc tree of plain files,
the refusal's text and the loader summary. The real daemon holding real hooks: tests/functional/
test_attach_service_owned.py."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._ownership.owners import (
    describe_holders, holders, is_collection_pin, loader_summary, owner_of, service_refusal, unit_of_cgroup,
)

PROG = "pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_tag:\tb2c7b85e2ccd5913\nprog_id:\t%d\n"
MAP = "pos:\t0\nflags:\t02000002\nmap_type:\t11\nmap_id:\t88\n"


@pytest.mark.parametrize("text,unit", [
    ("0::/system.slice/lqosd.service\n", "lqosd.service"),
    ("0::/system.slice/lqosd.service/worker\n", "lqosd.service"),
    ("0::/system.slice/system-getty.slice/getty@tty1.service\n", "getty@tty1.service"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
    ("0::/\n", None),
    ("", None),
    ("0::/.service\n", None),
    # cgroup v1: the name=systemd hierarchy names the unit; others (memory) do not
    ("4:memory:/process_api/6e71\n1:name=systemd:/system.slice/shaperd.service\n0::/\n", "shaperd.service"),
    ("4:memory:/x.service\n0::/\n", None),
])
def test_the_unit_is_the_deepest_service_of_the_cgroup_path(text, unit):
    assert unit_of_cgroup(text) == unit


def test_owner_collection_first_then_a_holding_process_then_foreign():
    held = {7: [{"pid": 90, "comm": "b", "unit": None}, {"pid": 12, "comm": "lqosd", "unit": "lqosd.service"}]}
    assert owner_of(7, {7}, held) == ("collection", None)
    assert owner_of(7, set(), held) == ("service", [{"pid": 12, "comm": "lqosd", "unit": "lqosd.service"},
                                                    {"pid": 90, "comm": "b", "unit": None}])
    assert owner_of(8, set(), held) == ("foreign", None)
    assert owner_of(8, None, None) == ("foreign", None)


def test_collection_pins_are_those_under_lqos_bpf():
    assert is_collection_pin("lqos_bpf/host/eth0/xdp_shaper")
    assert not is_collection_pin("lqos_bpf_aside/ip_to_shaper")
    assert not is_collection_pin("ip_to_shaper") and not is_collection_pin(None)


def proc_tree(root, processes):
    """A /proc of plain files: {pid: (comm, cgroup text, [fdinfo texts])}."""
    for pid, (comm, cgroup, fds) in processes.items():
        fdinfo = root / str(pid) / "fdinfo"
        fdinfo.mkdir(parents=True)
        (root / str(pid) / "comm").write_text(comm + "\n")
        (root / str(pid) / "cgroup").write_text(cgroup)
        for n, text in enumerate(fds):
            (fdinfo / str(n)).write_text(text)
    (root / "self").mkdir()
    (root / "sys").mkdir()
    return str(root)


def test_holders_name_every_process_holding_a_wanted_program(tmp_path):
    root = proc_tree(tmp_path, {
        812: ("lqosd", "0::/system.slice/lqosd.service\n", [PROG % 41, PROG % 42, MAP]),
        900: ("bpftool", "0::/user.slice/user-0.slice/session-1.scope\n", [PROG % 41]),
        901: ("other", "0::/\n", [PROG % 99, MAP]),
    })
    assert holders([41, 42, 43], root) == {
        41: [{"pid": 812, "comm": "lqosd", "unit": "lqosd.service"}, {"pid": 900, "comm": "bpftool", "unit": None}],
        42: [{"pid": 812, "comm": "lqosd", "unit": "lqosd.service"}],
    }
    assert holders([], root) == {} and holders([43], root) == {}
    assert holders([41], str(tmp_path / "no-proc")) == {}


def test_a_process_whose_fdinfo_cannot_be_listed_is_skipped(tmp_path):
    root = proc_tree(tmp_path, {812: ("lqosd", "0::/system.slice/lqosd.service\n", [PROG % 41])})
    (tmp_path / "813").mkdir()   # exited: no fdinfo folder
    assert list(holders([41], root)) == [41]


HOLDERS = [{"pid": 812, "comm": "lqosd", "unit": "lqosd.service"}]


def test_the_refusal_names_hook_interface_program_process_unit_and_the_fix():
    err = service_refusal("XDP", "eth1", "shaper", "id 41 (xdp_shaper, tag 0011223344556677)", HOLDERS)
    assert str(err) == (
        "XDP on eth1 (netns shaper) holds program id 41 (xdp_shaper, tag 0011223344556677), loaded and held by "
        "process 812 (lqosd) of unit lqosd.service: the service's, not this collection's; it is left in place and "
        "nothing was changed (force: true does not replace a running service's programs: the service attaches its "
        "own again when it restarts). Fix: this host's programs are loaded by lqosd.service: deploy with "
        "lqos_bpf_loader: service (lqos_bpf_service: lqosd.service), or stop lqosd.service first.")
    assert err.details == {"owner": "service", "holders": HOLDERS}


def test_the_refusal_without_a_unit_names_the_process_to_stop():
    err = service_refusal("TC egress (handle 0x1 priority 0xc02f)", "eth1", None, "id 42",
                          [{"pid": 77, "comm": "shaperd", "unit": None}])
    assert err.msg.startswith("TC egress (handle 0x1 priority 0xc02f) on eth1 holds program id 42, loaded and held "
                              "by process 77 (shaperd), in no systemd service: ")
    assert err.fix == ("this host's programs are loaded by process 77 (shaperd), which runs in no systemd service: "
                       "stop it first (or run it as a service and deploy with lqos_bpf_loader: service).")
    assert describe_holders(HOLDERS + [{"pid": 9, "comm": None, "unit": None}]) == (
        "process 812 (lqosd) of unit lqosd.service, process 9 (?), in no systemd service")


@pytest.mark.parametrize("owners,kind,units", [
    ([], "none", []),
    ([None, None], "none", []),
    (["collection", "collection", None], "collection", []),
    (["service", "service"], "service", ["lqosd.service"]),
    (["foreign"], "foreign", []),
    (["collection", "service"], "mixed", ["lqosd.service"]),
    (["service", "foreign"], "mixed", ["lqosd.service"]),
])
def test_the_loader_summary(owners, kind, units):
    hooks = [{"owner": o, "holders": HOLDERS if o == "service" else None} for o in owners]
    summary = loader_summary(hooks)
    assert summary["kind"] == kind and summary["units"] == units
    assert sum(summary["counts"].values()) == len([o for o in owners if o])
