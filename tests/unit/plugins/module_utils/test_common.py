"""Shared helpers: pin confinement, CPU lists, atomic writes, errors."""
from __future__ import annotations

import os

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    atomic_symlink, atomic_write, confine_pin, count_cpu_list, LqosError,
)


@pytest.mark.parametrize("text,count", [("0-1\n", 2), ("0", 1), ("0,2-3", 3), ("0-127", 128), ("", 0)])
def test_count_cpu_list(text, count):
    assert count_cpu_list(text) == count


def test_error_carries_its_fix():
    err = LqosError("bpffs not mounted.", "mount -t bpf bpf /sys/fs/bpf", rc=1)
    assert str(err) == "bpffs not mounted. Fix: mount -t bpf bpf /sys/fs/bpf"
    assert err.details == {"rc": 1}
    assert str(LqosError("plain")) == "plain"


def test_confine_pin_accepts_names_under_the_root(tmp_path):
    root = str(tmp_path)
    (tmp_path / "lqos").mkdir()
    assert confine_pin(root, "map_traffic") == os.path.join(root, "map_traffic")
    assert confine_pin(root, "lqos/flows") == os.path.join(root, "lqos", "flows")
    assert confine_pin(root, os.path.join(root, "x")) == os.path.join(root, "x")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b", "/etc/passwd"])
def test_confine_pin_refuses_escapes(tmp_path, name):
    with pytest.raises(LqosError) as err:
        confine_pin(str(tmp_path), name)
    assert str(err.value) == ("pin path %r leaves the pin root %s. Fix: name pins relative to pin_root, "
                              "without '..'." % (name, tmp_path))


def test_confine_pin_refuses_symlinks(tmp_path):
    os.symlink("/etc", tmp_path / "escape")
    with pytest.raises(LqosError) as err:
        confine_pin(str(tmp_path), "escape/passwd")
    assert str(err.value) == ("pin path %s/escape is a symlink (-> /etc); symlinks are never followed under the "
                              "pin root. Fix: remove the symlink or name the real pin." % tmp_path)


def test_atomic_write_and_symlink(tmp_path):
    path = tmp_path / "f"
    atomic_write(str(path), "one")
    atomic_write(str(path), b"two", mode=0o600)
    assert path.read_bytes() == b"two"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    atomic_symlink("a", str(tmp_path / "link"))
    atomic_symlink("b", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "b"
