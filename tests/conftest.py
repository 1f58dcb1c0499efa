"""Make the working tree importable as ``ansible_collections.lqos.bpf``.

Every test (unit and functional) imports the collection the way Ansible does,
so a throwaway collections folder holding a symlink to this checkout is put on
``sys.path`` and on ``ANSIBLE_COLLECTIONS_PATH`` before any test module loads.

Under ``ansible-test units`` (tests/units.sh) the tree already sits at
``ansible_collections/lqos/bpf`` and ansible-test installs its own collection
loader in every worker: a second ``ansible_collections`` on ``sys.path`` would
break that loader, so then this file changes nothing.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collections_root() -> str:
    # One folder per checkout: two checkouts tested at once on one machine must not
    # retarget each other's link.
    tag = hashlib.sha256(REPO.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    root = os.path.join(tempfile.gettempdir(), "lqos-bpf-collections-%d-%s" % (os.getuid(), tag))
    link = os.path.join(root, "ansible_collections", "lqos", "bpf")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.realpath(link) != REPO:
        tmp = link + ".%d" % os.getpid()
        os.symlink(REPO, tmp)
        os.replace(tmp, link)
    return root


def _inside_collection_layout() -> bool:
    """True when this tree already is ``<root>/ansible_collections/lqos/bpf`` (ansible-test's layout)."""
    parts = os.path.realpath(REPO).split(os.sep)
    return parts[-3:] == ["ansible_collections", "lqos", "bpf"]


if not _inside_collection_layout():
    COLLECTIONS = _collections_root()
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS
