"""Print the module_utils/plugin_utils tree, one line per package and per file, from each docstring's first sentence."""
import ast
import os
import re

PL = "plugins"
# Where a file's first sentence says too little for the tree.
OVERRIDE = {
    "_kernel/batch.py": "Whole maps read and written with the kernel's batch commands (BPF_MAP_LOOKUP_BATCH/UPDATE_BATCH)",
    "_kernel/hooks.py": "Where programs run: netns, interfaces, the XDP hook, TC clsact filters, bpf_links",
    "_kernel/objects.py": "BPF object files: contents, load, the per-program probe, why a load failed",
    "_build/toolchain.py": "Preflight: the tools and their versions, kernel facts, the object's checks",
    "_build/sources.py": "A build tied to its sources (manifest.json against the tree under src)",
    "_maps/pinned_maps.py": "The pinned_maps module's run and its cleanup plan",
    "_maps/commit.py": "After the new maps took their names: the catch-up pass, commit, roll back",
    "_ownership/owners.py": "The ownership model: collection, service or foreign, for every hook",
    "_ownership/processes.py": "What a process holds (program ids, /proc/<pid>/fdinfo) and the BPF object a binary embeds",
    "_rust/crate.py": "The crate walk and the RustCrate API, composed with its parts (layout, consts, assertions)",
    "_rust/parse.py": "tree-sitter, the layout model (Field, Layout, SizeAssertion, RustLayoutError), shared node helpers",
    "_rust/derive.py": "What the crate's code says about its BPF object (map openings, binding calls, skeleton uses)",
    "_abi/check.py": "The ABI check on the target (run_check), its record",
}


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
                    out.append("    %-20s %s" % (sub, OVERRIDE.get(name + "/" + sub) or first(os.path.join(p, sub))))
        elif name.endswith(".py"):
            out.append("  %-22s %s" % (name, first(p)))
print("\n".join(out))
