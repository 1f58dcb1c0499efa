"""add_rule(path, text): put a 'May import: text' paragraph at the end of path's module docstring."""
import ast
import sys


def add_rule(path, text):
    src = open(path, encoding="utf-8").read()
    tree = ast.parse(src)
    node = tree.body[0]
    assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    lines = src.split("\n")
    end = node.end_lineno - 1  # line with closing quotes
    line = lines[end]
    i = line.rstrip().rfind('"""')
    before = line[:i].rstrip()
    para = "May import: %s." % text
    if before:
        lines[end:end+1] = [before, "", para + '"""']
    else:
        lines[end:end+1] = ["", para + "\"\"\""] if lines[end-1].strip() else [para + "\"\"\""]
    open(path, "w", encoding="utf-8").write("\n".join(lines))


if __name__ == "__main__":
    add_rule(sys.argv[1], sys.argv[2])
