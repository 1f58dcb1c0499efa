"""The service module's pure parts with plain data: both configuration readers (lqosd's TOML through tomllib and
through the minimal reader, shaperd's key = value), the ownership decision, and the systemctl calls."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._service import config as C
from ansible_collections.lqos.bpf.plugins.module_utils._service import unit as U
from ansible_collections.lqos.bpf.plugins.module_utils._service import hooks as SH
from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.owners import collection_prog_ids, owner_of, recorded_rows

BRIDGE_TOML = """
version = "1.5"
lqos_directory = "/opt/libreqos/src"

[usage_stats]
send_anonymous = true

[tuning]
stop_irq_balance = true
netdev_budget_usecs = 8000

[bridge]
use_xdp_bridge = false   # a comment
to_internet = "wan0"
to_network = 'lan0'

[ip_ranges]
ignore_subnets = []
allow_subnets = [
    "172.16.0.0/12",
    "10.0.0.0/8",
]
"""

STICK_TOML = """
[single_interface]
interface = "trunk0"
internet_vlan = 2
network_vlan = 3
"""

READERS = [pytest.param(True, id="tomllib"), pytest.param(False, id="minimal")]


@pytest.mark.parametrize("use_tomllib", READERS)
def test_lqosd_bridge(use_tomllib):
    got = C.parse_lqosd(BRIDGE_TOML, "/etc/lqos.conf", use_tomllib)
    assert got == {"path": "/etc/lqos.conf", "kind": "lqosd", "mode": "bridge", "vlans": None,
                   "use_xdp_bridge": False, "pin_root": "/sys/fs/bpf",
                   "interfaces": [{"name": "wan0", "role": "internet", "netns": None},
                                  {"name": "lan0", "role": "isp", "netns": None}]}


@pytest.mark.parametrize("use_tomllib", READERS)
def test_lqosd_stick(use_tomllib):
    got = C.parse_lqosd(STICK_TOML, "/etc/lqos.conf", use_tomllib)
    assert got["mode"] == "stick" and got["vlans"] == {"internet": 2, "isp": 3}
    assert got["interfaces"] == [{"name": "trunk0", "role": "stick", "netns": None}]
    assert got["use_xdp_bridge"] is None


@pytest.mark.parametrize("use_tomllib", READERS)
@pytest.mark.parametrize("text,message", [
    (BRIDGE_TOML + STICK_TOML, "/etc/lqos.conf has both a [bridge] and a [single_interface] table. Fix: keep one: "
                               "lqosd refuses a configuration with both."),
    ("[tuning]\nx = 1\n", "/etc/lqos.conf has neither a [bridge] nor a [single_interface] table: no interface to "
                          "shape. Fix: add [bridge] with to_internet and to_network, or [single_interface] with "
                          "interface, internet_vlan and network_vlan."),
    ('[bridge]\nuse_xdp_bridge = true\nto_internet = "a"\n', "/etc/lqos.conf: [bridge] has no to_network. Fix: add "
                                                             "to_network (lqosd refuses the file without it)."),
    ('[bridge]\nuse_xdp_bridge = "yes"\nto_internet = "a"\nto_network = "b"\n',
     "/etc/lqos.conf: bridge.use_xdp_bridge = 'yes' is not a boolean. Fix: write true or false."),
    ('[bridge]\nuse_xdp_bridge = true\nto_internet = "a"\nto_network = "a"\n',
     "/etc/lqos.conf: bridge.to_internet and bridge.to_network are both a. Fix: give the two ports of the bridge, "
     "or use [single_interface]."),
    ('[bridge]\nuse_xdp_bridge = true\nto_internet = "a/b"\nto_network = "c"\n',
     "/etc/lqos.conf: bridge.to_internet = 'a/b' is not an interface name. Fix: give the name `ip link` shows (at "
     "most 15 characters, no '/', ':' or spaces)."),
    ('[single_interface]\ninterface = "t"\ninternet_vlan = 2\nnetwork_vlan = 4095\n',
     "/etc/lqos.conf: single_interface.network_vlan = 4095 is not a VLAN id. Fix: give a VLAN id, 1-4094."),
    ('[single_interface]\ninterface = "t"\ninternet_vlan = 7\nnetwork_vlan = 7\n',
     "/etc/lqos.conf: single_interface.internet_vlan and network_vlan are both 7. Fix: give two VLAN ids."),
])
def test_lqosd_bad(use_tomllib, text, message):
    with pytest.raises(LqosError) as err:
        C.parse_lqosd(text, "/etc/lqos.conf", use_tomllib)
    assert str(err.value) == message


def test_lqosd_not_toml_is_named_by_each_reader():
    text = '[bridge]\nuse_xdp_bridge = true\nto_internet = eth0\nto_network = "b"\n'
    with pytest.raises(LqosError) as err:
        C.parse_lqosd(text, "/etc/lqos.conf", False)
    assert str(err.value) == ("/etc/lqos.conf:3: expected `key = value` in [bridge], got to_internet = eth0. Fix: "
                              "write strings in double quotes, booleans as true/false, numbers as digits.")
    with pytest.raises(LqosError) as err:
        C.parse_lqosd(text, "/etc/lqos.conf", True)
    assert str(err.value).startswith("/etc/lqos.conf is not valid TOML: ")
    assert str(err.value).endswith("Fix: fix the file (lqosd reads it the same way).")


def test_read_config_missing_file(tmp_path):
    with pytest.raises(LqosError) as err:
        C.read_config("lqosd", str(tmp_path / "nope.conf"))
    assert str(err.value) == ("the lqosd configuration %s does not exist. Fix: give its path in config (default "
                              "/etc/lqos.conf), or install the service's configuration." % (tmp_path / "nope.conf"))


def test_shaperd_bridge_and_stick():
    got = C.parse_shaperd('# c\nmode = bridge\nto_internet = "a0"\nto_network = b0 # c\nnetns = "ns1"\n'
                          'pin_root = "/tmp/bpf"\nuse_xdp_bridge = no\n', "s.conf")
    assert got == {"path": "s.conf", "kind": "shaperd", "mode": "bridge", "vlans": None, "use_xdp_bridge": False,
                   "pin_root": "/tmp/bpf", "interfaces": [{"name": "a0", "role": "internet", "netns": "ns1"},
                                                          {"name": "b0", "role": "isp", "netns": "ns1"}]}
    got = C.parse_shaperd("mode = stick\ninterface = t0\ninternet_vlan = 100\nnetwork_vlan = 200\n", "s.conf")
    assert got["vlans"] == {"internet": 100, "isp": 200} and got["use_xdp_bridge"] is True
    assert got["interfaces"] == [{"name": "t0", "role": "stick", "netns": None}]
    assert got["pin_root"] == "/sys/fs/bpf"


@pytest.mark.parametrize("text,message", [
    ("mode = bridge\nto_internet = a\n", "s.conf: mode bridge needs to_internet and to_network. Fix: add both "
                                         "interface names."),
    ("mode = stick\ninterface = a\ninternet_vlan = 100\nnetwork_vlan = 5000\n",
     "s.conf:4: network_vlan = 5000 is invalid. Fix: give a VLAN id, 1-4094."),
    ("mode = bridge\nwrite_logs = /x\n", "s.conf:2: unknown key write_logs. Fix: use the keys of "
                                         "shaperd.conf.example (%s)." % ", ".join(sorted(C.SHAPERD_KEYS))),
    ("to_internet = a\n", "s.conf: no mode. Fix: add `mode = bridge` or `mode = stick`."),
    ("mode = bridge\npin_root = relative\n", "s.conf:2: pin_root = relative is invalid. Fix: give an absolute path "
                                             "shorter than 4096 bytes."),
    ("mode = bridge\nto_internet\n", "s.conf:2: expected `key = value`, got to_internet. Fix: write one "
                                     "`key = value` per line (see shaperd.conf.example)."),
    ('mode = "bridge\n', 's.conf:1: unterminated quoted value of mode. Fix: close the quote.'),
    ("mode = stick\ninterface = a\ninternet_vlan = 9\nnetwork_vlan = 9\n",
     "s.conf: internet_vlan and network_vlan are both 9. Fix: give two VLAN ids."),
    ("mode = bridge\nto_internet = a\nto_network = a\n",
     "s.conf: to_internet and to_network are both a. Fix: give two interfaces, or use mode stick."),
    ("mode = bridge\nto_internet = abcdefghijklmnop\nto_network = b\n",
     "s.conf:2: to_internet = abcdefghijklmnop is invalid. Fix: give an interface name shorter than 16 bytes."),
])
def test_shaperd_bad(text, message):
    """The same faults the daemon itself refuses (test_standin_daemon.test_bad_configuration_one_message_exit_2)."""
    with pytest.raises(LqosError) as err:
        C.parse_shaperd(text, "s.conf")
    assert str(err.value) == message


def test_owner_of_with_the_service_as_the_only_holder():
    held = {5: [{"pid": 0}]}
    assert SH.owner(5, {5}, [5]) == "collection"
    assert SH.owner(5, set(), [4, 5]) == "service"
    assert SH.owner(5, [1], [2]) == "foreign"
    assert owner_of(5, None, None) == ("foreign", None)
    assert owner_of(5, set(), held)[0] == "service"


def test_collection_ids_from_pins_and_records(tmp_path):
    pins = tmp_path / "bpffs" / "lqos_bpf" / "host" / "eth0"
    pins.mkdir(parents=True)
    (pins / "xdp_main").write_text("")
    (pins / "not_a_prog").write_text("")
    (tmp_path / "bpffs" / "ip_to_shaper").write_text("")   # outside lqos_bpf/: never looked at
    state = tmp_path / "attach"
    state.mkdir()
    (state / "host-eth1-abc.json").write_text('{"version": 1, "xdp": {"id": 21, "tag": "aa"}, '
                                              '"tc": [{"id": 22, "tag": "bb"}, {"id": 23, "tag": "cc"}]}')
    (state / "broken.json").write_text("{")
    assert sorted(recorded_rows(str(state))) == [(21, "aa"), (22, "bb"), (23, "cc")]
    kernel = {21: {"tag": "aa"}, 22: {"tag": "other"}}   # 22 was replaced by another program with that id; 23 gone
    looked = []

    def pinned(path):
        looked.append(path)
        return 7 if path.endswith("xdp_main") else None

    ids = collection_prog_ids(str(tmp_path / "bpffs"), str(state), kernel.get, pinned)
    assert ids == {7, 21}
    assert all("/lqos_bpf/" in p for p in looked)
    assert collection_prog_ids(str(tmp_path / "none"), str(tmp_path / "none"), kernel.get, pinned) == set()


SHOW = """ActiveState=active
SubState=running
MainPID=4321
NRestarts=2
LoadState=loaded
UnitFileState=enabled
ExecStart={ path=/usr/local/sbin/shaperd ; argv[]=/usr/local/sbin/shaperd /etc/shaperd.conf ; ignore_errors=no ; \
start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
"""


def test_unit_argv():
    assert U.unit_name("lqosd") == "lqosd.service" and U.unit_name("shaperd.service") == "shaperd.service"
    assert U.show_argv("lqosd.service") == [
        "systemctl", "show", "--property=ActiveState,SubState,MainPID,NRestarts,LoadState,UnitFileState,ExecStart",
        "lqosd.service"]
    assert U.action_argv("stop", "lqosd.service") == ["systemctl", "stop", "lqosd.service"]
    assert U.action_argv("start", "lqosd.service") == ["systemctl", "start", "lqosd.service"]
    assert U.action_argv("mask", "lqosd.service") == ["systemctl", "mask", "--runtime", "lqosd.service"]
    assert U.action_argv("unmask", "lqosd.service") == ["systemctl", "unmask", "--runtime", "lqosd.service"]
    for bad in ("", "a b", "-x", "x;y", "../x"):
        with pytest.raises(LqosError):
            U.unit_name(bad)


def test_parse_show_and_what_each_state_does():
    unit = U.parse_show(SHOW, "shaperd.service")
    assert unit == {"name": "shaperd.service", "active_state": "active", "sub_state": "running", "main_pid": 4321,
                    "n_restarts": 2, "masked": False, "mask": None, "load_state": "loaded",
                    "unit_file_state": "enabled", "exec_start_path": "/usr/local/sbin/shaperd"}
    assert U.unit_actions("stopped", unit) == ["stop"]
    assert U.unit_actions("started", unit) == []
    assert U.unit_actions("restarted", unit) == ["stop", "start"]
    assert U.unit_actions("masked", unit) == ["mask"]
    assert U.unit_actions("unmasked", unit) == []
    masked = U.parse_show("ActiveState=inactive\nSubState=dead\nMainPID=0\nNRestarts=0\nLoadState=masked\n"
                          "UnitFileState=masked-runtime\nExecStart=\n", "lqosd.service")
    assert masked["masked"] and masked["mask"] == "runtime" and masked["exec_start_path"] is None
    assert masked["main_pid"] == 0
    assert U.unit_actions("stopped", masked) == [] and U.unit_actions("masked", masked) == []
    assert U.unit_actions("unmasked", masked) == ["unmask"]
    for state in ("started", "restarted"):
        with pytest.raises(LqosError) as err:
            U.unit_actions(state, masked)
        assert str(err.value) == ("lqosd.service is masked (masked-runtime), so systemd refuses to start it. Fix: "
                                  "unmask it first (lqos.bpf.service state=unmasked, as the deploy role does after "
                                  "its window), then start it.")
    persistent = dict(masked, mask="persistent", unit_file_state="masked")
    with pytest.raises(LqosError) as err:
        U.unit_actions("unmasked", persistent)
    assert "masked in /etc (UnitFileState=masked), not at runtime" in str(err.value)
    assert U.unit_actions("started", dict(unit, active_state="failed")) == ["start"]


def test_problems_name_interface_found_and_expected():
    from ansible_collections.lqos.bpf.plugins.module_utils._service.hooks import hooks_ready, problems, tc_directions

    config = C.parse_shaperd("mode = bridge\nto_internet = a0\nto_network = b0\nnetns = ns1\n", "s.conf")
    assert tc_directions(config) == ["egress", "ingress"]
    assert tc_directions(dict(config, use_xdp_bridge=False)) == ["egress"]
    expected = {"xdp_shaper": "1" * 16, "tc_classify": "2" * 16, "tc_bridge_redirect": "3" * 16}

    def prog(i, name, tag, owner="service", mode=None):
        out = {"id": i, "name": name, "tag": tag, "owner": owner}
        if mode:
            out["mode"] = mode
        return out

    good = [{"interface": n, "netns": "ns1", "xdp": prog(1, "xdp_shaper", "1" * 16, mode="native"),
             "tc_egress": prog(2, "tc_classify", "2" * 16), "tc_ingress": prog(3, "tc_bridge_redir", "3" * 16)}
            for n in ("a0", "b0")]
    assert hooks_ready(good) and problems(config, good, expected, 99) == []
    bad = [dict(good[0], xdp=None, tc_egress=prog(2, "tc_classify", "2" * 16, "foreign")),
           dict(good[1], xdp=prog(8, "foreign_xdp", "9" * 16, "foreign", "native"),
                tc_ingress=prog(3, "tc_bridge_redir", "4" * 16))]
    assert not hooks_ready(bad)
    names = "tc_bridge_redir, tc_classify, xdp_shaper"
    assert problems(config, bad, expected, 99, "the object embedded in /x") == [
        "a0 (netns ns1) XDP: no program; expected one of %s held by the service's main process 99." % names,
        "a0 (netns ns1) TC egress: tc_classify (id 2, tag %s, owner foreign) is not held by the service's main "
        "process 99; expected one of %s held by it." % ("2" * 16, names),
        "b0 (netns ns1) XDP: foreign_xdp (id 8, tag %s, owner foreign) is not held by the service's main process 99; "
        "expected one of %s held by it." % ("9" * 16, names),
        "b0 (netns ns1) XDP: foreign_xdp (id 8, tag %s, owner foreign) is not one of the expected programs (%s)."
        % ("9" * 16, names),
        "b0 (netns ns1) TC ingress: tc_bridge_redir (id 3, owner service) has tag %s; expected %s (the tag of "
        "tc_bridge_redir in the object embedded in /x)." % ("4" * 16, "3" * 16),
    ]
