"""What each module ships: the collection module_utils in its AnsiballZ payload.

Builds each module's payload the way the controller does (ansible-core's
``ansible.executor.module_common.recursive_finder``, the function that fills the
AnsiballZ zip with every module_util a module imports, package ``__init__.py``
files included) and prints, per module, how many files of this collection it
carries and their source bytes (a payload ships every module_util a module
may import, lazy imports included; the target compiles only those a run
imports: docs/architecture.md "Start-up on the target"). ansible-core's own module_utils
(``basic.py`` and what it pulls in) are the same for every module and counted
apart. With ``--files`` it lists the files.

    python3 benchmarks/payload_sizes.py [--files] [--json]

Needs ansible-core on the controller; asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")


def payload(name: str) -> dict:
    """{'collection': {path: bytes}, 'ansible': {path: bytes}} of module ``name``'s AnsiballZ zip."""
    from ansible.executor import module_common
    from ansible._internal._ansiballz import _builder

    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    with open(path, "rb") as f:
        data = f.read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        module_common.recursive_finder(
            name, "ansible_collections.lqos.bpf.plugins.modules." + name, data, zf,
            datetime.datetime(2020, 1, 1), _builder.ExtensionManager())
    out = {"collection": {}, "ansible": {}}
    with zipfile.ZipFile(buf) as zf:
        for info in zf.infolist():
            side = "collection" if info.filename.startswith("ansible_collections/lqos/bpf/") else "ansible"
            out[side][info.filename] = info.file_size
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", action="store_true", help="list the collection files of each payload")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    if not os.path.isdir(COLLECTIONS):
        sys.exit("no %s: the checkout's .collections/ansible_collections/lqos/bpf symlink is missing" % COLLECTIONS)
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
    _AnsibleCollectionFinder(paths=[COLLECTIONS])._install()  # pylint: disable=protected-access

    names = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                   if f.endswith(".py") and not f.startswith("_"))
    result = {}
    for name in names:
        p = payload(name)
        result[name] = {"files": len(p["collection"]), "bytes": sum(p["collection"].values()),
                        "ansible_files": len(p["ansible"]), "ansible_bytes": sum(p["ansible"].values()),
                        "list": sorted(p["collection"])}
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0
    print("%-16s %6s %9s   %s" % ("module", "files", "bytes", "(ansible-core module_utils: files, bytes)"))
    for name in names:
        r = result[name]
        print("%-16s %6d %9d   (%d, %d)" % (name, r["files"], r["bytes"], r["ansible_files"], r["ansible_bytes"]))
        if args.files:
            for f in r["list"]:
                print("    " + f[len("ansible_collections/lqos/bpf/"):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
