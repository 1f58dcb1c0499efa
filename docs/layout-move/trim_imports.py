"""Drop the names a file's module-level imports bind but its code never reads (after code moved out of it).

usage: trim_imports.py FILE [FILE ...]   (``from __future__`` and try/except import blocks are kept)
"""
import ast
import symtable
import sys


def used(src):
    out = set()

    def walk(t, top):
        for sym in t.get_symbols():
            if sym.is_referenced() and (top or sym.is_global()):
                out.add(sym.get_name())
        for c in t.get_children():
            walk(c, False)
    walk(symtable.symtable(src, "<x>", "exec"), True)
    return out


def main():
    for path in sys.argv[1:]:
        src = open(path, encoding="utf-8").read()
        tree = ast.parse(src)
        lines = src.split("\n")
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        code_lines = [l for i, l in enumerate(lines)
                      if not any(n.lineno - 1 <= i < n.end_lineno for n in imports)]
        need = used("\n".join(code_lines))
        edits = []
        for node in imports:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            keep = [a for a in node.names if (a.asname or a.name).split(".")[0] in need]
            if len(keep) == len(node.names):
                continue
            indent = ""
            if not keep:
                text = None
            elif isinstance(node, ast.ImportFrom):
                items = [a.name + (" as " + a.asname if a.asname else "") for a in keep]
                text = "%sfrom %s import %s" % (indent, node.module, ", ".join(items))
                if len(text) > 120:
                    text = "from %s import (\n%s)" % (node.module, "".join("    %s,\n" % i for i in items))
            else:
                text = "import " + ", ".join(a.name + (" as " + a.asname if a.asname else "") for a in keep)
            edits.append((node.lineno - 1, node.end_lineno, text))
        for s, e, text in sorted(edits, reverse=True):
            lines[s:e] = [] if text is None else text.split("\n")
        open(path, "w", encoding="utf-8").write("\n".join(lines))
        print("%s: %d import statements trimmed" % (path, len(edits)))


main()
