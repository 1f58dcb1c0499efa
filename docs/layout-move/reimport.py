"""Point imports of moved names at their new module.

usage: reimport.py OLD_MODULE NEW_MODULE name [name ...]
  OLD_MODULE/NEW_MODULE: dotted (ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf).
Every tracked .py file: ``from OLD import a, b, c`` (parenthesized or not, at any indentation) loses the
moved names, and ``from NEW import <them>`` is added right after it. Uses through a module alias
(``L.name`` after ``from ..._kernel import libbpf as L``) are listed, not changed.
"""
import ast
import subprocess
import sys


def main():
    old, new, names = sys.argv[1], sys.argv[2], set(sys.argv[3:])
    files = [f for f in subprocess.run(["git", "ls-files", "*.py"], capture_output=True, text=True,
                                       check=True).stdout.split() if not f.startswith("docs/layout-move/")]
    old_pkg, old_leaf = old.rsplit(".", 1)
    for path in files:
        src = open(path, encoding="utf-8").read()
        if old_leaf not in src:
            continue
        tree = ast.parse(src)
        lines = src.split("\n")
        edits = []
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == old_pkg:
                for a in node.names:
                    if a.name == old_leaf:
                        aliases.add(a.asname or a.name)
            if not (isinstance(node, ast.ImportFrom) and node.module == old and not node.level):
                continue
            moved = [a for a in node.names if a.name in names]
            if not moved:
                continue
            keep = [a for a in node.names if a.name not in names]
            indent = lines[node.lineno - 1][:len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())]

            def stmt(module, alist):
                items = [a.name + (" as " + a.asname if a.asname else "") for a in alist]
                one = "%sfrom %s import %s" % (indent, module, ", ".join(items))
                if len(one) <= 120:
                    return one
                return "%sfrom %s import (\n%s%s)" % (indent, module, "".join("%s    %s,\n" % (indent, i) for i in items),
                                                     indent)
            text = ([stmt(old, keep)] if keep else []) + [stmt(new, moved)]
            edits.append((node.lineno - 1, node.end_lineno, "\n".join(text)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr in names:
                print("%s:%d: %s.%s (module alias: change by hand)" % (path, node.lineno, node.value.id, node.attr))
        if not edits:
            continue
        for start, end, text in sorted(edits, reverse=True):
            lines[start:end] = text.split("\n")
        open(path, "w", encoding="utf-8").write("\n".join(lines))
        print("rewrote", path)


main()
