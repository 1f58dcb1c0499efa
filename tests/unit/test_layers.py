"""The layers of docs/architecture.md, as the imports of plugins/module_utils and plugins/plugin_utils make them.

Each package under ``plugins/module_utils/`` and ``plugins/plugin_utils/`` is a layer; its ``README.md``
says what it owns and what it may import (its ``__init__.py`` stays empty: ansible-core 2.16's sanity test
``empty-init`` requires that under module_utils, and ansible-lint does not let a collection ignore it), and
so does the docstring of each file shared at the top of the folder (``_common.py``, ``_spec.py``, ...). The
rule is one paragraph of that text::

    May import: _common, _changes, _kernel, _attach.plan

- entries are separated by commas and may wrap onto the next lines of the paragraph (it ends at a blank
  line); a trailing period is allowed; ``nothing`` alone means nothing outside its own package;
- an entry names, relative to the folder of the file (``plugins/module_utils/`` or
  ``plugins/plugin_utils/``), a shared file (``_common``), a whole package (``_kernel``: any of its files)
  or one file of a package (``_attach.plan``: that file only, not the rest of that layer's internals);
  ``module_utils.<entry>`` names module_utils from plugin_utils;
- a file of a package may always import the files of its own package; a package's files follow its
  ``README.md`` rule, a shared file its own docstring's.

This test walks every ``import`` of every file (ast, lazy imports inside functions included: AnsiballZ ships
them all) and fails on an import its rule does not allow, on a package or shared file with no rule, on a
rule naming what does not exist, and on module_utils importing plugin_utils (targets never carry the
controller's code). The rules themselves are held too: the kernel layer may import only the shared files,
the packages' rules form no cycle, and no rule names what none of its files imports. It also keeps every
file under 500 lines, every package ``__init__.py`` empty, and docs/architecture.md's folder tree equal to
the folders (one line per package and per file, each package's line ending in its rule).
"""
from __future__ import annotations

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = os.path.join(REPO, "plugins")
FOLDERS = ("module_utils", "plugin_utils")
PREFIX = "ansible_collections.lqos.bpf.plugins."
MAX_LINES = 500

_RULE = re.compile(r"^May import:(.*(?:\n(?!\s*\n).*)*)", re.M)


def rule_of(path: str):
    """The set of entries of the ``May import:`` paragraph of ``path`` (a package's README.md, or a .py file's
    docstring), qualified (``module_utils._common``); None without one."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = text if path.endswith(".md") else ast.get_docstring(ast.parse(text, path))
    if not doc:
        return None
    match = _RULE.search(doc)
    if not match:
        return None
    folder = os.path.basename(os.path.dirname(path))
    if folder not in FOLDERS:
        folder = os.path.basename(os.path.dirname(os.path.dirname(path)))
    return rule_entries(match.group(1), folder, path)


def rule_entries(text: str, folder: str, where: str) -> set:
    """The entries of a rule's text (``_common, _kernel.`` or ``nothing``), qualified by ``folder``."""
    text = " ".join(text.split()).rstrip(".").strip()
    if text == "nothing":
        return set()
    entries = set()
    for entry in (e.strip() for e in text.split(",")):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", entry), "%s: bad entry %r in its May import rule" % (where, entry)
        entries.add(entry if entry.split(".")[0] in FOLDERS else folder + "." + entry)
    return entries


def files():
    """(folder, relative path) of every .py file under the two folders."""
    out = []
    for folder in FOLDERS:
        base = os.path.join(PLUGINS, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(".py"):
                    out.append((folder, os.path.relpath(os.path.join(dirpath, name), base)))
    return out


def owner(folder: str, rel: str) -> str:
    """The layer a file belongs to: ``module_utils._kernel`` for ``_kernel/btf.py``, itself when shared."""
    parts = rel[:-3].split(os.sep)
    return folder + "." + parts[0]


def rule_file(folder: str, rel: str) -> str:
    parts = rel.split(os.sep)
    if len(parts) == 1:
        return os.path.join(PLUGINS, folder, rel)
    return os.path.join(PLUGINS, folder, parts[0], "README.md")


def exists(qualified: str) -> bool:
    """True when ``module_utils._kernel`` / ``module_utils._kernel.btf`` / ``module_utils._common`` is a package or file."""
    path = os.path.join(PLUGINS, *qualified.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def imports(path: str, folder: str, rel: str):
    """(line, qualified target) of every import of this collection's plugins in ``path``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = [folder] + rel[:-3].split(os.sep)[:-1]
    if os.path.basename(rel) == "__init__.py":
        package = [folder] + rel.split(os.sep)[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX):
                    out.append((node.lineno, alias.name[len(PREFIX):]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith(PREFIX):
                module = node.module[len(PREFIX):]
            else:
                continue
            for alias in node.names:
                # "from pkg import name": name is a file of pkg, or a name defined in pkg.
                sub = module + "." + alias.name
                out.append((node.lineno, sub if exists(sub) else module))
    return out


def allowed(target: str, own: str, rule: set) -> bool:
    parts = target.split(".")
    if parts[0] == "plugin_utils" and own.startswith("module_utils."):
        return False
    if len(parts) < 2:
        return False  # a bare "from ...plugins.module_utils import <name>" that is no file
    top = ".".join(parts[:2])
    return top == own or top in rule or ".".join(parts[:3]) in rule


CASES = files()


@pytest.mark.parametrize("folder,rel", CASES, ids=["%s/%s" % c for c in CASES])
def test_imports_follow_the_layer_rule(folder, rel):
    path = os.path.join(PLUGINS, folder, rel)
    ruled = rule_file(folder, rel)
    if not os.path.isfile(ruled):
        pytest.fail("%s is in a package without README.md: add one that says what the package owns and "
                    "'May import: ...'" % path)
    rule = rule_of(ruled)
    if rule is None and ruled.endswith("README.md"):
        pytest.fail("%s has no 'May import: ...' paragraph: end it with one naming what the package may import "
                    "(or 'May import: nothing.')" % ruled)
    if rule is None:
        pytest.fail("%s has no 'May import: ...' paragraph: a file at the top of the folder is "
                    "shared by every layer and says what it imports; any other file belongs in a layer's package"
                    % ruled)
    for entry in sorted(rule):
        assert exists(entry), "%s: its May import rule names %s, which is no file or package" % (ruled, entry)
    own = owner(folder, rel)
    wrong = ["line %d: %s" % (line, target) for line, target in imports(path, folder, rel)
             if not allowed(target, own, rule)]
    assert not wrong, "%s/%s (layer %s, May import: %s) imports what its layer may not: %s" % (
        folder, rel, own, ", ".join(sorted(rule)) or "nothing", "; ".join(wrong))


@pytest.mark.parametrize("folder,rel", [c for c in CASES if c[1].endswith("__init__.py")],
                         ids=["%s/%s" % c for c in CASES if c[1].endswith("__init__.py")])
def test_package_init_files_are_empty(folder, rel):
    """ansible-core 2.16's sanity test empty-init wants every module_utils ``__init__.py`` empty, and ansible-lint
    refuses an ignore entry for it; plugin_utils keeps the same shape. A package's words go in its README.md."""
    size = os.path.getsize(os.path.join(PLUGINS, folder, rel))
    assert size == 0, "%s/%s has %d bytes: leave __init__.py empty and say what the package owns and may import " \
        "in its README.md" % (folder, rel, size)


@pytest.mark.parametrize("folder,rel", CASES, ids=["%s/%s" % c for c in CASES])
def test_files_stay_under_500_lines(folder, rel):
    with open(os.path.join(PLUGINS, folder, rel), encoding="utf-8") as f:
        lines = len(f.readlines())
    assert lines <= MAX_LINES, "%s/%s has %d lines: split it by concern (docs/architecture.md)" % (folder, rel, lines)


def test_the_rule_reader():
    """The rule format itself, on plain text: wrapped entries, a trailing period, ``nothing``, qualification."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "module_utils", "_x")
        os.makedirs(folder)
        path = os.path.join(folder, "shared.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write('"""Owns x.\n\nMay import: _common, _kernel,\n    _attach.plan.\n\nMore text.\n"""\n')
        assert rule_of(path) == {"module_utils._common", "module_utils._kernel", "module_utils._attach.plan"}
        with open(path, "w", encoding="utf-8") as f:
            f.write('"""Owns x.\n\nMay import: nothing.\n"""\n')
        assert rule_of(path) == set()
        with open(path, "w", encoding="utf-8") as f:
            f.write('"""Owns x."""\n')
        assert rule_of(path) is None
        readme = os.path.join(folder, "README.md")
        with open(readme, "w", encoding="utf-8") as f:
            f.write("# `_x`: owns x\n\nMore text.\n\nMay import: _common,\n_attach.plan.\n")
        assert rule_of(readme) == {"module_utils._common", "module_utils._attach.plan"}
    assert allowed("module_utils._kernel.btf", "module_utils._attach", {"module_utils._kernel"})
    assert allowed("module_utils._attach.plan", "module_utils._maps", {"module_utils._attach.plan"})
    assert not allowed("module_utils._attach.apply", "module_utils._maps", {"module_utils._attach.plan"})
    assert not allowed("plugin_utils._report", "module_utils._common", {"plugin_utils._report"})
    assert allowed("module_utils._common", "plugin_utils._report", {"module_utils._common"})


def tree_lines():
    """(entry, folder, line) of each package and file line of docs/architecture.md's folder tree; entry is
    ``module_utils/_kernel/`` for a package, ``module_utils/_kernel/btf.py`` for its file, ``module_utils/_common.py``
    for a shared file."""
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    begin, end = "<!-- folder tree: one line per package and per file -->", "<!-- end of the folder tree -->"
    assert begin in text and end in text, "docs/architecture.md has lost its folder tree markers"
    folder, package = None, None
    for line in text[text.index(begin):text.index(end)].splitlines():
        if line.startswith("plugins/"):
            folder, package = line.split("/")[1], None
        elif line.startswith("    ") and package and line.split()[0].endswith(".py"):
            yield "%s/%s/%s" % (folder, package, line.split()[0]), folder, line
        elif line.startswith("  ") and not line.startswith("    ") and folder:
            name = line.split()[0]
            package = name.rstrip("/") if name.endswith("/") else None
            yield "%s/%s" % (folder, name), folder, line


def test_the_architecture_tree_lists_every_package_and_file():
    """docs/architecture.md's folder tree has one line per package and per file of both folders, and no other."""
    listed = {entry for entry, _folder, _line in tree_lines()}
    actual = set()
    for folder, rel in CASES:
        parts = rel.split(os.sep)
        if parts[-1] == "__init__.py":
            actual.add("%s/%s/" % (folder, parts[0]))
        else:
            actual.add("%s/%s" % (folder, "/".join(parts)))
    assert listed == actual, "docs/architecture.md's tree differs from the folders: missing %s, gone %s" % (
        sorted(actual - listed), sorted(listed - actual))


def test_the_architecture_tree_states_each_package_rule():
    """Each package's line in docs/architecture.md's tree ends in its README.md's rule: "(may import: ...)"."""
    for entry, folder, line in tree_lines():
        if not entry.endswith("/"):
            continue
        package = entry.split("/")[1]
        rule = rule_of(os.path.join(PLUGINS, folder, package, "README.md"))
        assert rule is not None, "plugins/%s/%s/README.md has no 'May import: ...' paragraph" % (folder, package)
        match = re.search(r"\(may import: ([^)]*)\)\s*$", line)
        assert match, "docs/architecture.md: the line of %s/%s does not end in its (may import: ...)" % (folder, package)
        entries = rule_entries(match.group(1), folder, "docs/architecture.md")
        assert entries == rule, "docs/architecture.md states %s/%s may import %s; its README.md says %s" % (
            folder, package, sorted(entries), sorted(rule))


def package_rules() -> dict:
    """{"module_utils._kernel": its README.md rule} for every package of both folders."""
    out = {}
    for folder in FOLDERS:
        base = os.path.join(PLUGINS, folder)
        for name in sorted(os.listdir(base)):
            readme = os.path.join(base, name, "README.md")
            if os.path.isfile(readme):
                out[folder + "." + name] = rule_of(readme) or set()
    return out


def shared_files(folder: str) -> set:
    """The files at the top of ``folder`` (``module_utils._common``, ...): shared by every layer."""
    return {folder + "." + f[:-3] for f in os.listdir(os.path.join(PLUGINS, folder)) if f.endswith(".py")}


def test_the_kernel_layer_imports_no_other_layer():
    """docs/architecture.md: the kernel layer imports none of the others, whatever its README.md says."""
    rule = package_rules()["module_utils._kernel"]
    others = sorted(rule - shared_files("module_utils"))
    assert not others, "module_utils/_kernel/README.md lets the kernel layer import %s: it may import only files " \
        "every layer shares (%s)" % (", ".join(others), ", ".join(sorted(shared_files("module_utils"))))


def test_the_layers_form_no_cycle():
    """The packages' rules, read as edges from a package to the packages it may import, have no cycle."""
    rules = package_rules()
    edges = {pkg: {".".join(e.split(".")[:2]) for e in rule} & set(rules) - {pkg} for pkg, rule in rules.items()}
    state = {}

    def visit(pkg, path):
        if state.get(pkg) == "done":
            return
        assert state.get(pkg) != "open", "the layer rules form a cycle: %s" % " -> ".join(path + [pkg])
        state[pkg] = "open"
        for nxt in sorted(edges[pkg]):
            visit(nxt, path + [pkg])
        state[pkg] = "done"

    for pkg in sorted(edges):
        visit(pkg, [])


def test_every_rule_entry_is_used():
    """A package's rule names only what its files import: an entry nothing uses widens the layer for nothing."""
    used = {}
    for folder, rel in CASES:
        own = owner(folder, rel)
        for entry in imports(os.path.join(PLUGINS, folder, rel), folder, rel):
            used.setdefault(own, set()).add(entry[1])
    for pkg, rule in package_rules().items():
        targets = used.get(pkg, set())
        idle = sorted(e for e in rule if not any(t == e or t.startswith(e + ".") for t in targets))
        assert not idle, "plugins/%s/README.md may import %s, which none of its files imports: drop it from the " \
            "rule (and from docs/architecture.md's tree)" % (pkg.replace(".", "/"), ", ".join(idle))
