"""Put the generated folder tree between the markers of docs/architecture.md (adding the section once)."""
import subprocess
import sys

P = "docs/architecture.md"
s = open(P, encoding="utf-8").read()
tree = subprocess.run([sys.executable, "docs/layout-move/tree.py"], capture_output=True, text=True, check=True).stdout.rstrip()
BEGIN, END = "<!-- folder tree: one line per package and per file -->", "<!-- end of the folder tree -->"
if BEGIN not in s:
    s = s.replace("            └─ module_utils (plugins/module_utils/_*.py)   controller-only: plugins/plugin_utils/_*.py",
                  "            └─ module_utils (plugins/module_utils/<layer>/, shared _*.py)   controller-only: plugins/plugin_utils/")
    section = """## The folders: module_utils and plugin_utils by layer

`plugins/module_utils/` holds one private package per layer and the few files every layer shares
(`_common.py`, `_changes.py`, `_spec.py` with `_cexpr.py`). The kernel layer (`_kernel/`) imports none
of the others; the layers above it import it and never each other's internals. Each package's
`__init__.py` docstring says what it owns and, in its `May import:` paragraph, what it may import (a
shared file, a whole package, or one named file of another package); each shared file says the same in
its own docstring. `tests/unit/test_layers.py` walks every import (lazy ones included) and fails on one
the rule does not allow. `plugins/plugin_utils/` (controller only) follows the same rule; module_utils
never imports it.

%s
```
%s
```
%s

""" % (BEGIN, "%TREE%", END)
    s = s.replace("## Controller versus target", section + "## Controller versus target", 1)
start = s.index(BEGIN)
end = s.index(END)
s = s[:start] + BEGIN + "\n```\n" + tree + "\n```\n" + s[end:]
open(P, "w", encoding="utf-8").write(s)
