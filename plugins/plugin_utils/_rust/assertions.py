# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
"""Size assertions in a crate's sources: ``const _: [(); N] = [(); size_of::<T>()];`` and
``assert_eq!(size_of::<T>(), N)``, the part of a ``crate.RustCrate`` that finds them."""
from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    RustLayoutError,
    SizeAssertion,
    _ASSERT_MACROS,
    _Ctx,
    _last_segment,
    _line,
    _named,
    _norm,
    _size_of_target,
    _text,
)


class AssertionFinder:
    """The size-assertion part of a ``crate.RustCrate`` (``crate``: the crate whose files, definitions and
    caches it reads)."""

    def __init__(self, crate):
        self.crate = crate

    def _find_assertions(self, f, root, out):
        stack = [root]
        found = []
        while stack:
            node = stack.pop()
            if node.type == "const_item":
                self._const_assertion(f, node, found)
            elif node.type == "macro_invocation":
                self._macro_assertion(f, node, found)
            stack.extend(reversed(node.named_children))
        found.sort(key=lambda a: a.line)
        out.extend(found)

    def _pair(self, f, a, b, style, line, out):
        """One of a/b is size_of::<T>(), the other a constant expression."""
        ta, tb = _size_of_target(a), _size_of_target(b)
        if (ta is None) == (tb is None):
            return
        target, other = (ta, b) if ta is not None else (tb, a)
        try:
            size = self.crate._evaluator._eval(other, _Ctx(f, {}, None))
        except RustLayoutError:
            return  # a runtime value, not a size assertion
        out.append(SizeAssertion(_norm(_text(target)), size, style, f.path, line))

    def _const_assertion(self, f, node, out):
        ctype = node.child_by_field_name("type")
        value = node.child_by_field_name("value")
        if ctype is None or value is None or ctype.type != "array_type" or value.type != "array_expression":
            return
        a = ctype.child_by_field_name("length")
        b = value.child_by_field_name("length")
        if a is not None and b is not None:
            self._pair(f, a, b, "const_array", _line(node), out)

    def _macro_assertion(self, f, node, out):
        mac = node.child_by_field_name("macro")
        if mac is None or _last_segment(mac) not in _ASSERT_MACROS:
            return
        tt = [c for c in node.named_children if c.type == "token_tree"]
        if not tt or b"size_of" not in tt[-1].text:
            return
        inner = tt[-1].text[1:-1]
        tree = self.crate._parser.parse(b"fn __lqos_probe() { __lqos_args(" + inner + b"); }")
        calls = []
        stack = [tree.root_node]
        while stack:
            n = stack.pop()
            if n.type == "call_expression" and _text(n.child_by_field_name("function")) == "__lqos_args":
                calls.append(n)
                break
            stack.extend(n.named_children)
        if not calls:
            return
        args = _named(calls[0].child_by_field_name("arguments"))
        if len(args) >= 2:
            self._pair(f, args[0], args[1], "assert_eq", _line(node), out)
