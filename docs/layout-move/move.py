"""Move flat module_utils/plugin_utils files into a package and rewrite every reference.

usage: move.py FOLDER PKG 'DOCSTRING' old=new [old=new ...]
  FOLDER: module_utils | plugin_utils; PKG: _kernel; old: _bpf_btf; new: btf
"""
import os
import re
import subprocess
import sys

REPO = os.getcwd()
PREFIX = "ansible_collections.lqos.bpf.plugins."
HEADER = """# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this package is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""


def text_files():
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if os.path.isfile(f) and f.endswith((".py", ".md", ".yml", ".yaml", ".sh", ".txt", ".cfg", ".toml", ".j2", ".ini"))]


def package_files(folder, pkg):
    d = os.path.join("plugins", folder, pkg)
    return {f[:-3] for f in os.listdir(d) if f.endswith(".py") and f != "__init__.py"} if os.path.isdir(d) else set()


def rewrite(text, folder, pkg, mapping, is_md):
    esc = re.escape(PREFIX + folder)
    # 1. from PREFIX.folder import _a [as X], _b
    pat = re.compile(r"(?P<ind>[ \t]*)(?P<q>[\"']?)from " + esc + r" import (?P<names>_\w+(?: as \w+)?(?:, _\w+(?: as \w+)?)*)")

    def one(m):
        names = [n.strip() for n in m.group("names").split(",")]
        keep, moved = [], []
        for n in names:
            parts = n.split(" as ")
            old = parts[0]
            alias = parts[1] if len(parts) > 1 else old
            if old in mapping:
                moved.append("from %s%s.%s import %s as %s" % (PREFIX, folder, pkg, mapping[old], alias))
            else:
                keep.append(n)
        if not moved:
            return m.group(0)
        stmts = (["from %s%s import %s" % (PREFIX, folder, ", ".join(keep))] if keep else []) + moved
        if m.group("q") and len(stmts) > 1:
            raise SystemExit("multi-name import in a string: %r" % m.group(0))
        return m.group("ind") + m.group("q") + ("\n" + m.group("ind")).join(stmts)
    # a name already in the new layout (_attach.plan when _attach.py becomes _attach/attacher.py) stays
    names = "|".join(sorted(set(mapping.values()) | package_files(folder, pkg)))
    inside = r"(?!\w|\.(?:%s)\b)" % names
    for old, new in mapping.items():
        # 2. dotted module paths
        text = re.sub(re.escape(PREFIX + folder + "." + old) + inside, PREFIX + folder + "." + pkg + "." + new, text)
        text = re.sub(r"(?<![\w.])" + re.escape("plugins." + folder + "." + old) + inside, "plugins." + folder + "." + pkg + "." + new, text)
        # 3. file paths
        text = re.sub(re.escape(folder + "/" + old + ".py") + r"(?!\w)", folder + "/" + pkg + "/" + new + ".py", text)
        if is_md:
            text = re.sub(r"(?<![\w/.])" + re.escape(old + ".py") + r"(?!\w)", pkg + "/" + new + ".py", text)
            text = re.sub(r"(?<![\w/.])" + re.escape(old) + r"\.(?=[A-Za-z_])(?!py\b)(?!(?:%s)\b)" % names, pkg + "." + new + ".", text)
    # after the dotted paths: a package named like the old file (_ownership/) must not be rewritten twice
    text = pat.sub(one, text)
    return text


def main():
    folder, pkg, doc = sys.argv[1], sys.argv[2], sys.argv[3]
    mapping = dict(a.split("=") for a in sys.argv[4:])
    base = os.path.join("plugins", folder)
    os.makedirs(os.path.join(base, pkg), exist_ok=True)
    init = os.path.join(base, pkg, "__init__.py")
    if not os.path.exists(init):
        with open(init, "w", encoding="utf-8") as f:
            f.write(HEADER + '"""' + doc.strip() + '\n"""\n')
        subprocess.run(["git", "add", init], check=True)
    for old, new in mapping.items():
        subprocess.run(["git", "mv", os.path.join(base, old + ".py"), os.path.join(base, pkg, new + ".py")], check=True)
    for path in text_files():
        if path.startswith(("docs/layout-move-status.md", "docs/layout-move/")):
            continue
        with open(path, encoding="utf-8") as f:
            try:
                text = f.read()
            except UnicodeDecodeError:
                continue
        new_text = rewrite(text, folder, pkg, mapping, path.endswith(".md"))
        if new_text != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new_text)
            print("rewrote", path)


main()
