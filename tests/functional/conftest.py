"""Functional tests run the real toolchain and the real kernel, never the host's state.

On import, before pytest starts any thread, this process leaves the host's
mount namespace (``unshare(CLONE_NEWNS)``), makes every mount private, and
mounts a fresh bpffs over ``/sys/fs/bpf``. Every child process (ansible,
modules, bpftool, ip) inherits that namespace, so no pin a test makes can reach
the host's real bpffs. Network tests make their own network namespaces and veth
pairs (``netns_pair``) and delete them afterwards.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import uuid

import pytest

from lqos_testlib import (LIBREQOS_REFS, TRACING_REFUSED, NetnsPair, libreqos_build, libreqos_copy,
                          libreqos_crate, mount_bpffs, set_libreqos_root, umount)

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def bpffs_mounts() -> list:
    """Mount points of every bpf filesystem this mount namespace sees, in mount order."""
    with open("/proc/self/mounts") as fh:
        rows = [line.split() for line in fh]
    return [row[1].encode().decode("unicode_escape") for row in rows if len(row) > 2 and row[2] == "bpf"]


def _enter_private_mount_namespace() -> None:
    if os.environ.get("LQOS_TEST_PRIVATE_NS") == str(os.getpid()):
        return
    if os.geteuid() != 0:
        pytest.exit("functional tests need root (CAP_SYS_ADMIN, CAP_BPF, CAP_NET_ADMIN)", returncode=2)
    host_ns = os.readlink("/proc/self/ns/mnt")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        pytest.exit("unshare(CLONE_NEWNS) failed: %s" % os.strerror(ctypes.get_errno()), returncode=2)
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        pytest.exit("making / private failed: %s" % os.strerror(ctypes.get_errno()), returncode=2)
    if os.readlink("/proc/self/ns/mnt") == host_ns:
        pytest.exit("still in the host mount namespace; refusing to run", returncode=2)
    # No host bpffs may stay visible here: iproute2 and bpftool pick the first bpf mount in
    # /proc/mounts, which could be the host's (or the sandbox's of the README's first command).
    for path in reversed(bpffs_mounts()):
        if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
            pytest.exit("detaching the host bpffs at %s failed: %s" % (path, os.strerror(ctypes.get_errno())),
                        returncode=2)
    if bpffs_mounts():
        pytest.exit("host bpffs mounts are still visible: %s" % ", ".join(bpffs_mounts()), returncode=2)
    os.makedirs("/sys/fs/bpf", exist_ok=True)
    mount_bpffs("/sys/fs/bpf")
    # `ip netns add` bind-mounts under /run/netns: keep even those files private.
    os.makedirs("/run/netns", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "lqos-test-netns", "/run/netns"], check=True)
    # The collection's default state folders (build outputs, backups, tool cache) are private too.
    for path in ("/var/lib/lqos-bpf", "/var/cache/lqos-bpf", "/run/lqos-bpf"):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "lqos-test-state", path], check=True)
    os.environ["LQOS_TEST_PRIVATE_NS"] = str(os.getpid())


_enter_private_mount_namespace()


@pytest.fixture
def full_dir(tmp_path):
    """A 64 KiB tmpfs (mounted in the tests' private mount namespace) filled up to the last byte: a record
    folder on a full filesystem."""
    path = str(tmp_path / "full")
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "lqos-test-full", path], check=True)
    subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(path, "filler"), "bs=4k"], capture_output=True,
                   check=False)
    yield path
    subprocess.run(["umount", "-l", path], check=False)


@pytest.fixture
def bpffs(tmp_path):
    """A fresh, empty bpffs instance private to this test."""
    path = str(tmp_path / "bpffs")
    os.makedirs(path)
    mount_bpffs(path)
    yield path
    umount(path)


@pytest.fixture
def netns_pair():
    """Two network namespaces joined by a veth pair (10.211.x.1 <-> 10.211.x.2)."""
    pair = NetnsPair("lqt" + uuid.uuid4().hex[:8])
    pair.create()
    try:
        yield pair
    finally:
        pair.destroy()


@pytest.fixture(scope="session")
def shaperd(tmp_path_factory):
    """The stand-in daemon built once per session against a pipeline build of bpf/ (standin.build_daemon):
    {"binary", "object", "build_dir", "crate"}."""
    from standin import build_daemon
    return build_daemon(tmp_path_factory.mktemp("shaperd"))


@pytest.fixture
def bridge(netns_pair):
    """The pair's ns_a with a second veth (``<name>c0``, peer ``<name>d0`` in the same ns): the two ports
    of a bridge, to_internet = if_a, to_network = <name>c0."""
    pair = netns_pair
    pair.if_c, pair.if_d = pair.name + "c0", pair.name + "d0"
    subprocess.run(["ip", "-n", pair.ns_a, "link", "add", pair.if_c, "type", "veth", "peer", "name", pair.if_d],
                   check=True, capture_output=True)
    for ifname in (pair.if_c, pair.if_d):
        subprocess.run(["ip", "-n", pair.ns_a, "link", "set", ifname, "up"], check=True, capture_output=True)
    return pair


@pytest.fixture
def running():
    """Daemons (standin.Shaperd) a test started; any still running at the end is killed."""
    started = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture(scope="session")
def repo():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tools():
    missing = [t for t in ("clang", "llc", "bpftool", "bindgen", "ar") if not shutil.which(t)]
    if missing:
        pytest.fail("toolchain missing: %s (run tests/bootstrap.sh --tests)" % ", ".join(missing))
    return True


def pytest_report_header(config):
    if TRACING_REFUSED:
        return ["tracing programs: refused to every module and playbook (LQOS_TEST_TRACING_REFUSED=1, "
                "tests/functional/tracing_refusal.py)"]
    return ["tracing programs: as this kernel's policy allows them (expectations probed)"]


@pytest.fixture(scope="session", autouse=True)
def _libreqos_session_root(tmp_path_factory):
    """Unpacked LibreQoS trees and their builds live in one session folder (lqos_testlib.libreqos_crate)."""
    set_libreqos_root(str(tmp_path_factory.mktemp("libreqos")))


@pytest.fixture(scope="session")
def libreqos():
    """The real LibreQoS trees of ../shared/libreqos/, unpacked at first use and built once per session:
    ``libreqos.crate(ref)``, ``libreqos.build(ref)`` (lqos_testlib), ``libreqos.copy(dest, ref)``."""
    import types
    return types.SimpleNamespace(crate=libreqos_crate, build=libreqos_build, copy=libreqos_copy, refs=LIBREQOS_REFS)
