"""Print the module_utils/plugin_utils tree, one line per package and per file, from each docstring's first sentence."""
import ast
import os
import re

PL = "plugins"


def first(path):
    src = open(path, encoding="utf-8").read()
    doc = ast.get_docstring(ast.parse(src)) or ""
    if not doc:
        head = []
        for line in src.splitlines():
            if not line.startswith("#"):
                break
            head.append(line[1:].strip())
        parts = "\n".join(head).split("\n\n")
        parts = [p for p in parts if p.strip() and "PRIVATE" not in p and "coding:" not in p]
        doc = parts[0] if parts else ""
    para = " ".join(doc.split("\n\n")[0].split())
    m = re.match(r"(.+?[.:])(\s|$)", para)
    s = (m.group(1) if m else para).rstrip(".:;")
    return s


out = []
for folder in ("module_utils", "plugin_utils"):
    base = os.path.join(PL, folder)
    out.append("plugins/%s/" % folder)
    entries = sorted(os.listdir(base), key=lambda n: (os.path.isdir(os.path.join(base, n)), n))
    for name in entries:
        p = os.path.join(base, name)
        if name == "__pycache__":
            continue
        if os.path.isdir(p):
            rule = re.search(r"^May import:(.*(?:\n(?!\s*\n).*)*)", ast.get_docstring(ast.parse(open(os.path.join(p, "__init__.py")).read())), re.M)
            out.append("  %-22s %s (may import: %s)" % (name + "/", first(os.path.join(p, "__init__.py")), " ".join(rule.group(1).split()).rstrip(".")))
            for sub in sorted(os.listdir(p)):
                if sub.endswith(".py") and sub != "__init__.py":
                    out.append("    %-20s %s" % (sub, first(os.path.join(p, sub))))
        elif name.endswith(".py"):
            out.append("  %-22s %s" % (name, first(p)))
print("\n".join(out))
