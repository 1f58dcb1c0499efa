"""Move methods of a class into part classes in sibling files; the class holds the parts, the parts hold it.

usage: class_split.py SRC CLASS PART_ATTR=FILE=PartClass=DOC=method,method,... [...] [--users FILE ...]
  SRC: plugins/module_utils/_attach/attacher.py; CLASS: Attacher; PART_ATTR: observer (the attribute of
  CLASS holding the part); FILE: observe (written next to SRC); DOC: the new file's docstring.
Inside a moved method ``self.x`` becomes ``self.att.x`` (state and the class's other methods), stays
``self.x`` for a method of the same part, and becomes ``self.att.<part>.x`` for a method of another part;
in SRC ``self.m``/``att.m`` of a moved method becomes ``self.<part>.m``/``att.<part>.m``; in each --users file
``self.att.m`` becomes ``self.att.<part>.m``. Module-level helpers used only by one part move with it.
CLASS.__init__ gets ``self.<part> = <PartClass>(self)`` for each part, after its last line.
"""
import ast
import os
import re
import symtable
import sys
import textwrap


def main():
    args = sys.argv[1:]
    users = []
    if "--users" in args:
        i = args.index("--users")
        users, args = args[i + 1:], args[:i]
    src_path, cls_name = args[0], args[1]
    parts = []
    for a in args[2:]:
        attr, fname, pcls, doc, methods = a.split("=", 4)
        parts.append((attr, fname, pcls, doc, [m for m in methods.split(",") if m]))
    folder = os.path.dirname(src_path)
    src = open(src_path, encoding="utf-8").read()
    lines = src.split("\n")
    tree = ast.parse(src)
    cls = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name][0]
    methods = {m.name: m for m in cls.body if isinstance(m, ast.FunctionDef)}
    owner = {}
    for attr, fname, pcls, doc, ms in parts:
        for m in ms:
            assert m in methods, m
            owner[m] = attr

    def method_span(m):
        s = min([m.lineno] + [d.lineno for d in m.decorator_list]) - 1
        while s > 0 and lines[s - 1].strip().startswith("# --"):
            s -= 1
        return s, m.end_lineno

    def in_part(text, attr):
        def r(mo):
            x = mo.group(1)
            if owner.get(x) == attr:
                return mo.group(0)
            if x in owner:
                return "self.att.%s.%s" % (owner[x], x)
            return "self.att." + x
        return re.sub(r"\bself\.(\w+)", r, text)

    # module-level functions (helpers) used by the moved methods only
    top_funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    spans_moved = set()
    new_files = {}
    for attr, fname, pcls, doc, ms in parts:
        body = []
        for m in ms:
            s, e = method_span(methods[m])
            spans_moved.update(range(s, e))
            body.append(in_part("\n".join(lines[s:e]), attr))
        new_files[attr] = "\n\n".join(body)

    def free_names(text):
        out = set()

        def walk(t, top):
            for sym in t.get_symbols():
                if sym.is_referenced() and (top or sym.is_global()):
                    out.add(sym.get_name())
            for c in t.get_children():
                walk(c, False)
        walk(symtable.symtable(text, "<x>", "exec"), True)
        return out

    # helpers: move a module function when only one part uses it and SRC's remaining code does not
    remaining = "\n".join(l for i, l in enumerate(lines) if i not in spans_moved)
    helper_of = {}
    for name, fn in top_funcs.items():
        users_of = [a for a, t in new_files.items() if re.search(r"\b%s\b" % re.escape(name), t)]
        rest = remaining.replace("\n".join(lines[fn.lineno - 1:fn.end_lineno]), "")
        if len(users_of) == 1 and not re.search(r"\b%s\b" % re.escape(name), rest):
            helper_of[name] = users_of[0]
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]

    def import_lines(need):
        out = []
        for node in imports:
            names = [a for a in node.names if (a.asname or a.name).split(".")[0] in need]
            if not names:
                continue
            if isinstance(node, ast.ImportFrom):
                items = [a.name + (" as " + a.asname if a.asname else "") for a in names]
                one = "from %s import %s" % (node.module, ", ".join(items))
                if len(one) > 120:
                    one = "from %s import (\n%s)" % (node.module, "".join("    %s,\n" % i for i in items))
                out.append(one)
            else:
                out.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
        return out

    header = src.split('"""', 1)[0].rstrip("\n")
    for attr, fname, pcls, doc, ms in parts:
        helpers = [n for n, a in helper_of.items() if a == attr]
        helper_text = "\n\n\n".join("\n".join(lines[top_funcs[n].lineno - 1:top_funcs[n].end_lineno]) for n in helpers)
        cls_text = ('class %s(object):\n    """The %s part of an ``%s``: ``att`` is the run it belongs to (its state, its other parts)."""\n\n'
                    '    def __init__(self, att):\n        self.att = att\n\n%s\n' % (pcls, attr, cls_name, new_files[attr]))
        code = (helper_text + "\n\n\n" if helper_text else "") + cls_text
        need = free_names(code)
        imp = [i for i in import_lines(need) if "__future__" not in i]
        ours = [i for i in imp if "ansible_collections" in i.split(" import")[0]]
        rest = [i for i in imp if i not in ours]
        docstring = '"""' + "\n".join(textwrap.wrap(doc, 110)) + '"""'
        text = header + "\n" + docstring + "\n\nfrom __future__ import annotations\n\n" + \
            ("\n".join(rest) + "\n\n" if rest else "") + "\n".join(ours) + "\n\n\n" + code.rstrip("\n") + "\n"
        open(os.path.join(folder, fname + ".py"), "w", encoding="utf-8").write(text)
        print("wrote", fname, len(text.split("\n")))
    # SRC: drop moved methods and helpers, rewrite uses, build the parts in __init__
    drop = set(spans_moved)
    for n in helper_of:
        fn = top_funcs[n]
        s = fn.lineno - 1
        while s > 0 and not lines[s - 1].strip():
            s -= 1
        drop.update(range(s, fn.end_lineno))
    init = methods["__init__"]
    new_lines = []
    for i, l in enumerate(lines):
        if i in drop:
            continue
        new_lines.append(l)
        if i == init.end_lineno - 1:
            for attr, fname, pcls, doc, ms in parts:
                new_lines.append("        self.%s = %s(self)" % (attr, pcls))
    text = "\n".join(new_lines)

    def outside(mo):
        who, x = mo.group(1), mo.group(2)
        return "%s.%s.%s" % (who, owner[x], x) if x in owner else mo.group(0)
    text = re.sub(r"\b(self|att)\.(\w+)", outside, text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    open(src_path, "w", encoding="utf-8").write(text)
    for u in users:
        t = open(u, encoding="utf-8").read()
        t = re.sub(r"\bself\.att\.(\w+)", lambda mo: "self.att.%s.%s" % (owner[mo.group(1)], mo.group(1))
                   if mo.group(1) in owner else mo.group(0), t)
        open(u, "w", encoding="utf-8").write(t)


main()
