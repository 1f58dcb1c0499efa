"""Re-align continuation lines pycodestyle reports as E128 (under-indented for visual indent) with their bracket.

usage: fix_e128.py FILE [FILE ...]   (after a rewrite such as self.x -> self.att.x moved the brackets right)
"""
import ast
import io
import subprocess
import sys
import tokenize


def fix(path):
    out = subprocess.run([sys.executable, "-m", "pycodestyle", "--select=E128,E127", path], capture_output=True, text=True).stdout
    flagged = sorted({int(x.split(":")[1]) for x in out.splitlines() if x.strip()})
    if not flagged:
        return 0
    src = open(path, encoding="utf-8").read()
    lines = src.split("\n")
    tree = ast.parse(src)
    stmts = [n for n in ast.walk(tree) if isinstance(n, ast.stmt)]
    for n in flagged:
        enclosing = [s for s in stmts if s.lineno < n <= s.end_lineno]
        stmt = min(enclosing, key=lambda s: s.end_lineno - s.lineno)
        # the innermost statement whose own first lines hold the bracket: tokens from its start to line n-1
        text = "\n".join(lines[stmt.lineno - 1:n - 1]) + "\n"
        stack = []
        try:
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.OP and tok.string in "([{":
                    stack.append(tok.start)
                elif tok.type == tokenize.OP and tok.string in ")]}":
                    stack.pop()
        except tokenize.TokenError:
            pass   # the statement goes on past line n-1
        if not stack:
            continue
        row, col = stack[-1]
        line = lines[n - 1]
        lines[n - 1] = " " * (col + 1) + line.lstrip()
    open(path, "w", encoding="utf-8").write("\n".join(lines))
    return len(flagged)


for p in sys.argv[1:]:
    print(p, fix(p))
