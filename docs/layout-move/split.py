"""Split top-level definitions of a Python file into sibling files, with the imports each needs.

usage: split.py SRC NEW=DOC=name,name,... [NEW=DOC=...]
  SRC: plugins/module_utils/_abi/check.py; NEW: parity (written next to SRC as parity.py);
  DOC: the new file's docstring (one paragraph); names: top-level defs/classes/assignments moved there,
  each with the comment lines right above it. What is not named stays in SRC. Every file gets the import
  lines of SRC whose names it uses, and ``from <package>.<new> import ...`` for the moved names it uses.
  Fails on a cycle between the new files and SRC.
"""
import ast
import os
import symtable
import sys
import textwrap


def main():
    src_path = sys.argv[1]
    folder = os.path.dirname(src_path)
    pkg = src_path[:-3].replace("/", ".").rsplit(".", 1)[0]
    pkg = "ansible_collections.lqos.bpf." + pkg
    src_mod = os.path.basename(src_path)[:-3]
    text = open(src_path, encoding="utf-8").read()
    lines = text.split("\n")
    tree = ast.parse(text)
    plan = []
    for arg in sys.argv[2:]:
        new, doc, names = arg.split("=", 2)
        plan.append((new, doc, [n.strip() for n in names.split(",") if n.strip()]))
    where = {}
    for new, doc, names in plan:
        for n in names:
            where[n] = new

    def bound(node):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            return {node.name}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out = set()
            for tg in targets:
                for n in ast.walk(tg):
                    if isinstance(n, ast.Name):
                        out.add(n.id)
            return out
        return set()

    body = tree.body
    doc_node = body[0] if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) else None
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom)) or
               (isinstance(n, ast.Try) and all(isinstance(x, (ast.Import, ast.ImportFrom, ast.Assign)) for x in n.body))]
    defs = [n for n in body if n not in imports and n is not doc_node]
    # the header: comment lines before the docstring
    first = (doc_node.lineno if doc_node else body[0].lineno) - 1
    header = "\n".join(lines[:first])

    def start_of(node):
        s = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while True:
            while s > 0 and lines[s - 1].startswith("#"):
                s -= 1
            # a column-0 comment block (a section heading) up to two blank lines above belongs here too
            b = s
            while b > 0 and s - b < 2 and not lines[b - 1].strip():
                b -= 1
            if b < s and b > 0 and lines[b - 1].startswith("#"):
                s = b
                continue
            return s

    chunks = {}   # target module -> [(start, end)]
    names_of = {}
    for node in defs:
        b = bound(node)
        targets = {where.get(n, src_mod) for n in b} or {src_mod}
        if len(targets) != 1:
            raise SystemExit("line %d binds names going to different files: %s" % (node.lineno, b))
        tgt = targets.pop()
        chunks.setdefault(tgt, []).append((start_of(node), node.end_lineno))
        for n in b:
            names_of[n] = tgt
    missing = set(where) - set(names_of)
    if missing:
        raise SystemExit("not defined at top level: %s" % sorted(missing))

    def used_names(src):
        """Names the code reads from module scope (symtable: a parameter or local of the same name is not one)."""
        out = set()

        def walk(table, top):
            for sym in table.get_symbols():
                if not sym.is_referenced():
                    continue
                if top or sym.is_global() or (sym.is_free() and False):
                    out.add(sym.get_name())
            for child in table.get_children():
                walk(child, False)
        walk(symtable.symtable(src, "<split>", "exec"), True)
        return out

    def import_binds(node):
        if isinstance(node, ast.Try):
            out = set()
            for x in node.body:
                out |= import_binds(x) if isinstance(x, (ast.Import, ast.ImportFrom)) else bound(x)
            for h in node.handlers:
                for x in h.body:
                    out |= bound(x)
            return out
        return {(a.asname or a.name).split(".")[0] for a in node.names}

    def import_text(node, need):
        """The import statement restricted to the names needed (multi-name from-imports trimmed)."""
        seg = "\n".join(lines[node.lineno - 1:node.end_lineno])
        if isinstance(node, ast.ImportFrom) and len(node.names) > 1:
            keep = [a for a in node.names if (a.asname or a.name) in need]
            if not keep:
                return None
            names = ", ".join(a.name + (" as " + a.asname if a.asname else "") for a in keep)
            stmt = "from %s import %s" % ("." * node.level + (node.module or ""), names)
            if len(stmt) > 120:
                stmt = "from %s import (\n%s)" % ("." * node.level + (node.module or ""),
                                                  "".join("    %s,\n" % n for n in names.split(", ")))
            return stmt
        if import_binds(node) & need or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            return seg
        return None

    out_files = {}
    deps = {}
    for tgt in [src_mod] + [p[0] for p in plan]:
        parts = []
        prev_end = None
        for s_, e_ in chunks.get(tgt, []):
            between = lines[prev_end:s_] if prev_end is not None else None
            if between is not None and len(between) <= 2 and not any(x.strip() for x in between):
                parts[-1] += "\n" + "\n".join(between + lines[s_:e_])   # adjacent in the source: as it was
            else:
                parts.append("\n".join(lines[s_:e_]))
            prev_end = e_
        code = "\n\n\n".join(parts)
        need = used_names(code)
        for dummy in range(3):   # an import block kept (try: import cffi ... except: traceback) needs its names too
            imp = []
            for node in imports:
                t = import_text(node, need)
                if t:
                    imp.append(t)
            more = set().union(*(used_names(textwrap.dedent(t)) for t in imp)) - need if imp else set()
            if not more:
                break
            need |= more
        from_new = {}
        for n in sorted(need):
            owner = names_of.get(n)
            if owner and owner != tgt:
                from_new.setdefault(owner, []).append(n)
        deps[tgt] = set(from_new)
        for owner, ns in sorted(from_new.items()):
            stmt = "from %s.%s import %s" % (pkg, owner, ", ".join(ns))
            if len(stmt) > 120:
                stmt = "from %s.%s import (\n%s)" % (pkg, owner, "".join("    %s,\n" % n for n in ns))
            imp.append(stmt)
        out_files[tgt] = (imp, code)
    # cycles

    def visit(n, path):
        for d in deps.get(n, ()):
            if d in path:
                raise SystemExit("import cycle: %s" % " -> ".join(path + [d]))
            visit(d, path + [d])
    for n in deps:
        visit(n, [n])
    docs = {p[0]: p[1] for p in plan}
    for tgt, (imp, code) in out_files.items():
        if tgt == src_mod:
            docstring = "\n".join(lines[doc_node.lineno - 1:doc_node.end_lineno]) if doc_node else ""
        else:
            docstring = '"""%s"""' % "\n\n".join("\n".join(textwrap.wrap(para, 110))
                                                 for para in docs[tgt].split("\n\n"))
        future = [i for i in imp if "__future__" in i]
        ours = [i for i in imp if "__future__" not in i and "ansible_collections" in i.split("import")[0]]
        rest = [i for i in imp if "__future__" not in i and i not in ours]
        blocks = ["\n".join(b) for b in (future, rest, ours) if b]
        head = header
        if tgt != src_mod:   # a new file: the collection's PRIVATE note, not the old file's description
            paras = header.split("\n#\n")
            keep = [i for i, para in enumerate(paras) if "PRIVATE" in para]
            head = "\n#\n".join(paras[:keep[0] + 1] if keep else paras[:1])
        text_out = head + "\n" + docstring + "\n\n" + "\n\n".join(blocks) + "\n\n\n" + code.strip("\n") + "\n"
        open(os.path.join(folder, tgt + ".py"), "w", encoding="utf-8").write(text_out)
        print(tgt, len(text_out.split("\n")))


main()
