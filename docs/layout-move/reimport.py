"""Point imports of moved names at their new module.

usage: reimport.py [--alias-map OLD=NEW,...] OLD_MODULE NEW_MODULE name [name ...]
  OLD_MODULE/NEW_MODULE: dotted (ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf).
Every tracked .py file: ``from OLD import a, b, c`` (parenthesized or not, at any indentation) loses the
moved names, and ``from NEW import <them>`` is added right after it. Uses through a module alias
(``L.name`` after ``from ..._kernel import libbpf as L``) are listed, not changed; with ``--alias-map R=RR``
``R.name`` becomes ``RR.name`` and ``from <new package> import <new module> as RR`` is added after the
alias's import (an alias not in the map is listed).
"""
import ast
import subprocess
import sys


def main():
    args = sys.argv[1:]
    amap = None
    if args[0] == "--alias-map":
        amap, args = dict(x.split("=") for x in args[1].split(",")), args[2:]
    old, new, names = args[0], args[1], set(args[2:])
    new_pkg, new_leaf = new.rsplit(".", 1)
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
        attr_edits = []   # (line index, col, alias)
        alias_lines = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == old_pkg:
                for a in node.names:
                    if a.name == old_leaf:
                        alias_lines.setdefault(a.asname or a.name, []).append(node)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr in names:
                if amap is None or node.value.id not in amap:
                    print("%s:%d: %s.%s (module alias: change by hand)" % (path, node.lineno, node.value.id, node.attr))
                else:
                    attr_edits.append((node.value.lineno - 1, node.value.col_offset, node.value.id))
        used_aliases = set()
        for ln, col, alias in sorted(attr_edits, reverse=True):
            line = lines[ln]
            assert line[col:col + len(alias)] == alias, (path, ln, alias)
            lines[ln] = line[:col] + amap[alias] + line[col + len(alias):]
            used_aliases.add(alias)
        for alias in used_aliases:
            for node in alias_lines[alias]:
                ind = lines[node.lineno - 1][:len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())]
                edits.append((node.end_lineno, node.end_lineno,
                              "%sfrom %s import %s as %s" % (ind, new_pkg, new_leaf, amap[alias])))
        if attr_edits:
            print("rewrote %d uses through a module alias in %s" % (len(attr_edits), path))
        if not edits and not attr_edits:
            continue
        for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            lines[start:end] = text.split("\n")
        open(path, "w", encoding="utf-8").write("\n".join(lines))
        print("rewrote", path)


main()
