"""The stand-in daemon (bpf/shaper_sys/src/daemon, shaperd) for functional tests: build it against a real
pipeline build, run it as a plain process, read its write log."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from lqos_testlib import REPO, copy_bpf, run_pipeline, sh

from ansible_collections.lqos.bpf.plugins.module_utils import _bpf_hooks as H

DAEMON_SRC = os.path.join(REPO, "bpf", "shaper_sys", "src", "daemon")
TC_HANDLE, TC_PRIORITY = 0x1, 0xC02F   # the clsact slot shaperd attaches at (as lqosd does)


def build_daemon(work) -> dict:
    """Build a private copy of bpf/ with the pipeline module (spec reference), then shaperd against that
    build's outputs with the daemon's own build.sh. Returns {"binary", "object", "build_dir", "crate"}."""
    crate = copy_bpf(work)
    result = run_pipeline(crate, str(work / "out"))
    assert result["_rc"] == 0, result
    obj = result["outputs"]["object"]["path"]
    build_dir = os.path.dirname(obj)
    binary = str(work / "shaperd")
    sh(os.path.join(crate, "src", "daemon", "build.sh"), build_dir, binary)
    return {"binary": binary, "object": obj, "build_dir": build_dir, "crate": crate}


def write_config(path, **keys) -> str:
    """A shaperd configuration file of ``key = value`` lines (strings quoted, booleans as true/false)."""
    lines = []
    for key, value in keys.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, str):
            value = '"%s"' % value
        lines.append("%s = %s" % (key, value))
    with open(str(path), "w") as fh:
        fh.write("# written by the functional tests\n" + "\n".join(lines) + "\n")
    return str(path)


class Shaperd:
    """One run of the daemon as a plain process; its stderr goes to ``<config>.stderr``."""

    def __init__(self, binary: str, config: str, prefix: tuple = ()):
        self.argv = list(prefix) + [binary, config]
        self.stderr_path = config + ".stderr"
        self.proc = None

    def start(self, ready: bool = True, timeout: float = 30) -> "Shaperd":
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err, cwd="/")
        if ready:
            self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.stderr_path) as fh:
            return fh.read()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "shaperd: ready:" in self.stderr():
                return
            if self.proc.poll() is not None:
                raise AssertionError("shaperd exited with %d before it was ready:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            time.sleep(0.05)
        raise AssertionError("shaperd not ready after %ss:\n%s" % (timeout, self.stderr()))

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("shaperd did not exit within %ss:\n%s" % (timeout, self.stderr()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_write_log(path: str) -> list:
    """[(seq, key bytes, value bytes, "ok" | "errno=N")] of a write log, in file order."""
    rows = []
    with open(path) as fh:
        for line in fh:
            seq, key, value, result = line.split()
            rows.append((int(seq), bytes.fromhex(key), bytes.fromhex(value), result))
    return rows


def wait_for_writes(path: str, count: int, daemon: Shaperd, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        rows = read_write_log(path) if os.path.exists(path) else []
        if len(rows) >= count:
            return rows
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError("%d of %d writes logged:\n%s" % (len(rows), count, daemon.stderr()))


# Fixtures and helpers the shaperd tests share (import the fixtures into the test module to use them).

@pytest.fixture(scope="module")
def shaperd(tmp_path_factory):
    return build_daemon(tmp_path_factory.mktemp("shaperd"))


@pytest.fixture
def bridge(netns_pair):
    """The pair's ns_a with a second veth (``<name>c0``, peer ``<name>d0`` in the same ns): the two ports
    of a bridge, to_internet = if_a, to_network = <name>c0."""
    pair = netns_pair
    pair.if_c, pair.if_d = pair.name + "c0", pair.name + "d0"
    sh("ip", "-n", pair.ns_a, "link", "add", pair.if_c, "type", "veth", "peer", "name", pair.if_d)
    for ifname in (pair.if_c, pair.if_d):
        sh("ip", "-n", pair.ns_a, "link", "set", ifname, "up")
    return pair


@pytest.fixture
def running():
    """Daemons a test started; any still running at the end is killed."""
    started = []
    yield started
    for daemon in started:
        daemon.kill()


def config(tmp_path, bpffs, pair, **keys):
    keys = dict(dict(mode="bridge", to_internet=pair.if_a, to_network=pair.if_c, netns=pair.ns_a,
                     pin_root=bpffs, write_log=str(tmp_path / "writes.log"), write_interval_ms=1,
                     write_limit=200), **keys)
    return write_config(tmp_path / "shaperd.conf", **keys)


def start(running, binary, conf, **kw):
    daemon = Shaperd(binary, conf, **kw)
    running.append(daemon)
    return daemon.start()


def xdp(pair, ifname):
    with H.netns(pair.ns_a):
        return H.xdp_query(H.ifindex(ifname))


def tc(pair, ifname, direction):
    with H.netns(pair.ns_a):
        return H.tc_query(H.ifindex(ifname), direction, TC_HANDLE, TC_PRIORITY)
