"""The stand-in daemon (bpf/shaper_sys/src/daemon, shaperd) for functional tests: build it against a real
pipeline build, run it as a plain process, read its write log."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from lqos_testlib import REPO, copy_bpf, run_pipeline, sh

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H

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


def bridge_config(path, bpffs, pair, **keys) -> str:
    """A bridge configuration at ``path``/shaperd.conf for the ``bridge`` fixture (to_internet = if_a,
    to_network = if_c, in ns_a), the pins under ``bpffs``, writes logged to ``path``/writes.log; ``keys`` override."""
    keys = dict(dict(mode="bridge", to_internet=pair.if_a, to_network=pair.if_c, netns=pair.ns_a,
                     pin_root=bpffs, write_log=str(path / "writes.log"), write_interval_ms=1,
                     write_limit=200), **keys)
    return write_config(path / "shaperd.conf", **keys)


def start(running: list, binary: str, conf: str, **kw) -> "Shaperd":
    """Start a daemon, remembered in ``running`` (the fixture kills any still running at the end)."""
    daemon = Shaperd(binary, conf, **kw)
    running.append(daemon)
    return daemon.start()


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


# Hook reads the shaperd tests share (the fixtures shaperd, bridge and running live in conftest.py).

def xdp(pair, ifname):
    with H.netns(pair.ns_a):
        return H.xdp_query(H.ifindex(ifname))


def tc(pair, ifname, direction):
    with H.netns(pair.ns_a):
        return H.tc_query(H.ifindex(ifname), direction, TC_HANDLE, TC_PRIORITY)
