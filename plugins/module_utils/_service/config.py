# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""The configuration of a service that loads the programs itself: which interfaces it attaches to, and how.

Two formats, one result (``read_config``):

- ``lqosd`` - LibreQoS's ``/etc/lqos.conf``, TOML. Only two tables matter here: ``[bridge]`` (``use_xdp_bridge``,
  ``to_internet``, ``to_network``) or ``[single_interface]`` (``interface``, ``internet_vlan``, ``network_vlan``);
  lqosd refuses a file with both (LibreQoS ``lqos_config``, ``etc/v15``). Read with ``tomllib`` (Python 3.11+),
  else with a minimal reader of exactly those keys (strings, booleans, integers; every other table skipped).
- ``shaperd`` - the reference pipeline's stand-in daemon, ``key = value`` lines (docs/standin-daemon.md; its
  reader is ``bpf/shaper_sys/src/daemon/config.c``, whose checks and defaults are mirrored here).

The result: ``{path, kind, mode (bridge|stick), interfaces: [{name, role (internet|isp|stick), netns}],
vlans: {internet, isp} | None, use_xdp_bridge (bool; None for lqosd on a stick, which has no such key),
pin_root}``. ``netns`` is shaperd's ``netns`` key (None for
lqosd: it runs in the host's namespace); ``pin_root`` is shaperd's ``pin_root`` (default /sys/fs/bpf, lqosd's).
Every bad input raises one LqosError naming the file, the key and the fix.
"""

from __future__ import annotations

import errno
import re

from .._common import DEFAULT_PIN_ROOT, LqosError

# The options that name a service, shared by the service module and abi_info's ``service`` option.
SERVICE_ARGS = dict(
    name=dict(type="str", required=True),
    kind=dict(type="str", choices=["lqosd", "shaperd"]),
    config=dict(type="path"),
    binary=dict(type="path"),
    pid=dict(type="int"),
)

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - Python < 3.11 on the target
    tomllib = None

KINDS = ("lqosd", "shaperd")
DEFAULT_CONFIG = {"lqosd": "/etc/lqos.conf", "shaperd": "/etc/shaperd.conf"}
IFNAME_MAX = 15
_IFNAME_BAD = re.compile(r"[/:\s]")

SHAPERD_KEYS = {
    "mode": "bridge or stick",
    "to_internet": "an interface name shorter than 16 bytes",
    "to_network": "an interface name shorter than 16 bytes",
    "interface": "an interface name shorter than 16 bytes",
    "use_xdp_bridge": "true or false",
    "log_fsync": "true or false",
    "internet_vlan": "a VLAN id, 1-4094",
    "network_vlan": "a VLAN id, 1-4094",
    "stick_offset": "a number, 0-4294967295",
    "write_interval_ms": "milliseconds, 1-3600000",
    "write_limit": "a count, 0-4194304 and at most the entries of ip_to_shaper",
    "netns": "a path shorter than 4096 bytes",
    "pin_root": "an absolute path shorter than 4096 bytes",
    "write_log": "an absolute path shorter than 4096 bytes",
}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_RANGES = {"internet_vlan": (1, 4094), "network_vlan": (1, 4094), "stick_offset": (0, 0xFFFFFFFF),
           "write_interval_ms": (1, 3600000), "write_limit": (0, 4194304)}


def read_config(kind: str, path: str) -> dict:
    """The configuration of service ``kind`` (``lqosd`` or ``shaperd``) read from ``path``."""
    if kind not in KINDS:
        raise LqosError("kind %r is not a service this module knows." % (kind,), "use lqosd or shaperd.")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise LqosError("the %s configuration %s does not exist." % (kind, path),
                            "give its path in config (default %s), or install the service's configuration."
                            % DEFAULT_CONFIG[kind])
        raise LqosError("reading the %s configuration %s failed: %s." % (kind, path, exc.strerror),
                        "run as root, or fix the file's permissions.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LqosError("the %s configuration %s is not UTF-8 text (byte %d)." % (kind, path, exc.start),
                        "give the service's text configuration file.")
    return parse_lqosd(text, path) if kind == "lqosd" else parse_shaperd(text, path)


def _check_ifname(path: str, key: str, value) -> str:
    if not isinstance(value, str) or not value or len(value) > IFNAME_MAX or _IFNAME_BAD.search(value):
        raise LqosError("%s: %s = %r is not an interface name." % (path, key, value),
                        "give the name `ip link` shows (at most 15 characters, no '/', ':' or spaces).")
    return value


def _result(path: str, kind: str, mode: str, names: dict, vlans, use_xdp_bridge: bool, netns, pin_root) -> dict:
    if mode == "bridge":
        interfaces = [{"name": names["to_internet"], "role": "internet", "netns": netns},
                      {"name": names["to_network"], "role": "isp", "netns": netns}]
    else:
        interfaces = [{"name": names["interface"], "role": "stick", "netns": netns}]
    return {"path": path, "kind": kind, "mode": mode, "interfaces": interfaces, "vlans": vlans,
            "use_xdp_bridge": use_xdp_bridge, "pin_root": pin_root}


# --------------------------------------------------------------------------
# lqosd: /etc/lqos.conf (TOML)
# --------------------------------------------------------------------------

_TOML_KEY = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.*)$")


def _toml_value(raw: str):
    """One scalar of the minimal reader: "string", 'string', true/false, integer; else ValueError."""
    raw = raw.strip()
    if raw[:1] in ('"', "'"):
        end = raw.find(raw[0], 1)
        if end < 0 or (raw[end + 1:].strip() and not raw[end + 1:].strip().startswith("#")):
            raise ValueError(raw)
        return raw[1:end]
    raw = raw.split("#", 1)[0].strip()
    if raw in ("true", "false"):
        return raw == "true"
    if re.match(r"^[+-]?[0-9][0-9_]*$", raw):
        return int(raw.replace("_", ""))
    raise ValueError(raw)


def minimal_toml(text: str, path: str, tables=("bridge", "single_interface")) -> dict:
    """The scalar keys of ``tables`` in a TOML text, for a target without ``tomllib``: {table: {key: value}}.
    Lines of other tables are skipped unread; a line of these tables that is not ``key = scalar`` is an error."""
    out, current = {}, None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            name = stripped.split("#", 1)[0].strip()
            current = name[1:-1].strip() if name.endswith("]") and not name.startswith("[[") else None
            if current in tables:
                if current in out:
                    raise LqosError("%s:%d: table [%s] is defined twice." % (path, lineno, current),
                                    "keep one [%s] table." % current)
                out[current] = {}
            continue
        if current not in tables:
            continue
        match = _TOML_KEY.match(stripped)
        try:
            if not match:
                raise ValueError(stripped)
            value = _toml_value(match.group(2))
        except ValueError:
            raise LqosError("%s:%d: expected `key = value` in [%s], got %s." % (path, lineno, current, stripped),
                            "write strings in double quotes, booleans as true/false, numbers as digits.")
        out[current][match.group(1)] = value
    return out


def parse_lqosd(text: str, path: str, use_tomllib: bool = True) -> dict:
    """lqosd's /etc/lqos.conf text (see the module docstring); ``use_tomllib=False`` forces the minimal reader."""
    if use_tomllib and tomllib is not None:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise LqosError("%s is not valid TOML: %s." % (path, exc), "fix the file (lqosd reads it the same way).")
    else:
        doc = minimal_toml(text, path)
    bridge, stick = doc.get("bridge"), doc.get("single_interface")
    for name, table in (("bridge", bridge), ("single_interface", stick)):
        if table is not None and not isinstance(table, dict):
            raise LqosError("%s: %s is not a table." % (path, name), "write it as a [%s] table." % name)
    if bridge is not None and stick is not None:
        raise LqosError("%s has both a [bridge] and a [single_interface] table." % path,
                        "keep one: lqosd refuses a configuration with both.")
    if bridge is None and stick is None:
        raise LqosError("%s has neither a [bridge] nor a [single_interface] table: no interface to shape." % path,
                        "add [bridge] with to_internet and to_network, or [single_interface] with interface, "
                        "internet_vlan and network_vlan.")
    table, name = (bridge, "bridge") if bridge is not None else (stick, "single_interface")
    want = ("use_xdp_bridge", "to_internet", "to_network") if bridge is not None else (
        "interface", "internet_vlan", "network_vlan")
    missing = [k for k in want if k not in table]
    if missing:
        pronoun = "it" if len(missing) == 1 else "them"
        raise LqosError("%s: [%s] has no %s." % (path, name, ", ".join(missing)),
                        "add %s (lqosd refuses the file without %s)." % (", ".join(missing), pronoun))
    if bridge is not None:
        if not isinstance(bridge["use_xdp_bridge"], bool):
            raise LqosError("%s: bridge.use_xdp_bridge = %r is not a boolean." % (path, bridge["use_xdp_bridge"]),
                            "write true or false.")
        names = {k: _check_ifname(path, "bridge." + k, bridge[k]) for k in ("to_internet", "to_network")}
        if names["to_internet"] == names["to_network"]:
            raise LqosError("%s: bridge.to_internet and bridge.to_network are both %s." % (path, names["to_internet"]),
                            "give the two ports of the bridge, or use [single_interface].")
        return _result(path, "lqosd", "bridge", names, None, bridge["use_xdp_bridge"], None, DEFAULT_PIN_ROOT)
    names = {"interface": _check_ifname(path, "single_interface.interface", stick["interface"])}
    vlans = {}
    for key, role in (("internet_vlan", "internet"), ("network_vlan", "isp")):
        value = stick[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4094:
            raise LqosError("%s: single_interface.%s = %r is not a VLAN id." % (path, key, value),
                            "give a VLAN id, 1-4094.")
        vlans[role] = value
    if vlans["internet"] == vlans["isp"]:
        raise LqosError("%s: single_interface.internet_vlan and network_vlan are both %d." % (path, vlans["isp"]),
                        "give two VLAN ids.")
    return _result(path, "lqosd", "stick", names, vlans, None, None, DEFAULT_PIN_ROOT)


# --------------------------------------------------------------------------
# shaperd: key = value
# --------------------------------------------------------------------------

def _shaperd_value(path: str, lineno: int, key: str, value: str):
    bad = LqosError("%s:%d: %s = %s is invalid." % (path, lineno, key, value), "give %s." % SHAPERD_KEYS[key])
    if key == "mode":
        if value not in ("bridge", "stick"):
            raise bad
        return value
    if key in ("to_internet", "to_network", "interface"):
        if len(value.encode("utf-8")) > IFNAME_MAX:
            raise bad
        return value
    if key in ("use_xdp_bridge", "log_fsync"):
        if value not in _BOOLS:
            raise bad
        return _BOOLS[value]
    if key in _RANGES:
        low, high = _RANGES[key]
        if not value.isdigit() or not low <= int(value) <= high:
            raise bad
        return int(value)
    if key in ("pin_root", "write_log") and not value.startswith("/"):
        raise bad
    if len(value.encode("utf-8")) >= 4096:
        raise bad
    return value


def parse_shaperd(text: str, path: str) -> dict:
    """shaperd's configuration text (see the module docstring), with the daemon's own checks and defaults."""
    keys = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise LqosError("%s:%d: expected `key = value`, got %s." % (path, lineno, line),
                            "write one `key = value` per line (see shaperd.conf.example).")
        key, value = key.strip(), value.strip()
        if value.startswith('"'):
            end = value.find('"', 1)
            if end < 0:
                raise LqosError("%s:%d: unterminated quoted value of %s." % (path, lineno, key), "close the quote.")
            rest = value[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise LqosError("%s:%d: text after the quoted value of %s." % (path, lineno, key),
                                "put comments after a #.")
            value = value[1:end]
        else:
            value = value.split("#", 1)[0].strip()
        if not value:
            raise LqosError("%s:%d: %s has no value." % (path, lineno, key), "give %s a value or remove the line."
                            % key)
        if key not in SHAPERD_KEYS:
            raise LqosError("%s:%d: unknown key %s." % (path, lineno, key),
                            "use the keys of shaperd.conf.example (%s)." % ", ".join(sorted(SHAPERD_KEYS)))
        keys[key] = _shaperd_value(path, lineno, key, value)
    mode = keys.get("mode")
    if mode is None:
        raise LqosError("%s: no mode." % path, "add `mode = bridge` or `mode = stick`.")
    netns = keys.get("netns")
    pin_root = keys.get("pin_root", DEFAULT_PIN_ROOT)
    use_xdp_bridge = keys.get("use_xdp_bridge", True)
    if mode == "bridge":
        if not keys.get("to_internet") or not keys.get("to_network"):
            raise LqosError("%s: mode bridge needs to_internet and to_network." % path, "add both interface names.")
        names = {k: _check_ifname(path, k, keys[k]) for k in ("to_internet", "to_network")}
        if names["to_internet"] == names["to_network"]:
            raise LqosError("%s: to_internet and to_network are both %s." % (path, names["to_internet"]),
                            "give two interfaces, or use mode stick.")
        return _result(path, "shaperd", mode, names, None, use_xdp_bridge, netns, pin_root)
    if not keys.get("interface") or not keys.get("internet_vlan") or not keys.get("network_vlan"):
        raise LqosError("%s: mode stick needs interface, internet_vlan and network_vlan." % path, "add all three.")
    if keys["internet_vlan"] == keys["network_vlan"]:
        raise LqosError("%s: internet_vlan and network_vlan are both %d." % (path, keys["network_vlan"]),
                        "give two VLAN ids.")
    names = {"interface": _check_ifname(path, "interface", keys["interface"])}
    return _result(path, "shaperd", mode, names, {"internet": keys["internet_vlan"], "isp": keys["network_vlan"]},
                   use_xdp_bridge, netns, pin_root)
