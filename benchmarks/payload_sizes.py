"""What each module ships: the collection module_utils in its AnsiballZ payload.

Builds each module's payload the way the controller does (ansible-core's
``ansible.executor.module_common.recursive_finder``, the function that fills the
AnsiballZ zip with every module_util a module imports, package ``__init__.py``
files included) and prints, per module, how many files of this collection it
carries and their source bytes (a payload ships every module_util a module
may import, lazy imports included; the target compiles only those a run
imports: docs/architecture.md "Start-up on the target"). ansible-core's own module_utils
(``basic.py`` and what it pulls in) are the same for every module and counted
apart. Per module: files, source bytes, "code" (the Python tokens without
docstrings, comments and whitespace: what is code rather than documentation)
and "zip" (the files deflated as AnsiballZ stores them: what goes over the
wire before base64). With ``--files`` it lists the files; with
``--against REV`` it measures the git revision REV of this checkout too, in a
subprocess on an exported copy, and prints both side by side.

    python3 benchmarks/payload_sizes.py [--files] [--json] [--against REV]

Needs ansible-core on the controller; asserts nothing.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
import tokenize
import zipfile

REPO = os.environ.get("LQOS_BPF_PAYLOAD_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")
SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
               tokenize.ENCODING, tokenize.ENDMARKER}


def code_bytes(source: bytes) -> int:
    """Bytes of ``source``'s tokens, docstrings, comments and whitespace left out."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docs.add((first.lineno, first.col_offset))
    total = 0
    for tok in tokenize.tokenize(io.BytesIO(source).readline):
        if tok.type in SKIP_TOKENS or (tok.type == tokenize.STRING and tok.start in docs):
            continue
        total += len(tok.string.encode("utf-8"))
    return total


def payload(name: str) -> dict:
    """{'collection': {path: (bytes, code bytes, deflated bytes)}, 'ansible': {path: bytes}} of module
    ``name``'s AnsiballZ zip."""
    from ansible.executor import module_common
    from ansible._internal._ansiballz import _builder

    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    with open(path, "rb") as f:
        data = f.read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        module_common.recursive_finder(
            name, "ansible_collections.lqos.bpf.plugins.modules." + name, data, zf,
            datetime.datetime(2020, 1, 1), _builder.ExtensionManager())
    out = {"collection": {}, "ansible": {}}
    with zipfile.ZipFile(buf) as zf:
        for info in zf.infolist():
            if info.filename.startswith("ansible_collections/lqos/bpf/"):
                out["collection"][info.filename] = (info.file_size, code_bytes(zf.read(info)), info.compress_size)
            else:
                out["ansible"][info.filename] = info.file_size
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", action="store_true", help="list the collection files of each payload")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--against", metavar="REV", help="also measure git revision REV of this checkout, side by side")
    args = ap.parse_args()
    if args.against:
        return compare(args.against, args.files)
    if not os.path.isdir(COLLECTIONS):
        sys.exit("no %s: the checkout's .collections/ansible_collections/lqos/bpf symlink is missing" % COLLECTIONS)
    from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
    _AnsibleCollectionFinder(paths=[COLLECTIONS])._install()  # pylint: disable=protected-access

    names = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                   if f.endswith(".py") and not f.startswith("_"))
    result = {}
    for name in names:
        p = payload(name)
        sizes = p["collection"].values()
        result[name] = {"files": len(p["collection"]), "bytes": sum(s[0] for s in sizes),
                        "code": sum(s[1] for s in sizes), "zip": sum(s[2] for s in sizes),
                        "ansible_files": len(p["ansible"]), "ansible_bytes": sum(p["ansible"].values()),
                        "list": sorted(p["collection"])}
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0
    print("%-16s %6s %9s %9s %9s   %s" % ("module", "files", "bytes", "code", "zip",
                                          "(ansible-core module_utils: files, bytes)"))
    for name in names:
        r = result[name]
        print("%-16s %6d %9d %9d %9d   (%d, %d)" % (
            name, r["files"], r["bytes"], r["code"], r["zip"], r["ansible_files"], r["ansible_bytes"]))
        if args.files:
            for f in r["list"]:
                print("    " + f[len("ansible_collections/lqos/bpf/"):])
    return 0


def measure(repo: str) -> dict:
    """This script's --json result for the checkout at ``repo`` (run in a subprocess: one collection per process)."""
    env = dict(os.environ, LQOS_BPF_PAYLOAD_REPO=repo)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--json"], env=env, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    return json.loads(out)


def compare(rev: str, files: bool) -> int:
    """Print REV's payloads beside this checkout's: files, bytes, code and zip, before -> after."""
    with tempfile.TemporaryDirectory(prefix="lqos-payload-") as tmp:
        old = os.path.join(tmp, "tree")
        os.mkdir(old)
        archive = subprocess.run(["git", "-C", REPO, "archive", rev], check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        link = os.path.join(old, ".collections", "ansible_collections", "lqos")
        os.makedirs(link)
        os.symlink(old, os.path.join(link, "bpf"))
        before, after = measure(old), measure(REPO)
    print("%s -> this checkout (bytes of this collection's files in each payload)" % rev)
    print("%-16s %9s %19s %17s %17s" % ("module", "files", "bytes", "code", "zip"))
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name, {}), after.get(name, {})
        cells = ["%d -> %d" % (b.get("files", 0), a.get("files", 0))]
        for key in ("bytes", "code", "zip"):
            cells.append("%+d" % (a.get(key, 0) - b.get(key, 0)))
        print("%-16s %9s %19s %17s %17s" % (
            name, cells[0], "%d %s" % (a.get("bytes", 0), cells[1]), "%d %s" % (a.get("code", 0), cells[2]),
            "%d %s" % (a.get("zip", 0), cells[3])))
        if files:
            for f in sorted(set(a.get("list", [])) - set(b.get("list", []))):
                print("    + " + f[len("ansible_collections/lqos/bpf/"):])
            for f in sorted(set(b.get("list", [])) - set(a.get("list", []))):
                print("    - " + f[len("ansible_collections/lqos/bpf/"):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
