"""The functional tests' private mount namespace: no host state leaks in."""
from __future__ import annotations

from conftest import bpffs_mounts


def test_only_the_private_bpffs_is_visible():
    """A host bpffs (e.g. the sandbox's of the README's first command) would be picked by iproute2."""
    visible = [p for p in bpffs_mounts() if not p.startswith("/tmp/")]
    assert visible == ["/sys/fs/bpf"]
