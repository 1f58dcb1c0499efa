# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
"""Constant expressions of a crate: integer ``const`` items, arithmetic, casts and ``size_of::<T>()``,
the part of a ``crate.RustCrate`` that evaluates them."""
from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    RustLayoutError,
    _Ctx,
    _INT_TYPES,
    _STD_ROOTS,
    _first_segment,
    _int_literal,
    _last_segment,
    _named,
    _norm,
    _size_of_target,
    _text,
)


class ConstEvaluator:
    """The constant part of a ``crate.RustCrate`` (``crate``: the crate whose files, definitions and
    caches it reads)."""

    def __init__(self, crate):
        self.crate = crate

    def _eval_error(self, node, ctx):
        s = "cannot evaluate `%s`" % _norm(_text(node))
        if ctx.where:
            s += " used by %s" % ctx.where
        return RustLayoutError(s + ": use an integer literal, a const, or simple arithmetic (+ - * / % << >>) of them")

    def _eval(self, node, ctx):
        kind = node.type
        if kind == "integer_literal":
            value = _int_literal(_text(node))
            if value is None:
                raise self._eval_error(node, ctx)
            return value
        if kind == "identifier":
            name = _text(node)
            bound = ctx.subst.get(name)
            if isinstance(bound, int):
                return bound
            return self._lookup_const(name, ctx, name)
        if kind == "type_identifier":  # const generic argument written as a bare name
            name = _text(node)
            bound = ctx.subst.get(name)
            if isinstance(bound, int):
                return bound
            if name in self.crate._consts:
                return self._lookup_const(name, ctx, name)
            raise self._eval_error(node, ctx)
        if kind == "scoped_identifier":
            path = node.child_by_field_name("path")
            last = _last_segment(node)
            if path is not None and _text(path) in _INT_TYPES and last in ("MAX", "MIN", "BITS"):
                bits, signed = _INT_TYPES[_text(path)]
                if last == "BITS":
                    return bits
                if last == "MAX":
                    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
                return -(1 << (bits - 1)) if signed else 0
            if path is not None and _first_segment(path) in _STD_ROOTS:
                raise self._eval_error(node, ctx)
            return self._lookup_const(last, ctx, _norm(_text(node)))
        if kind in ("parenthesized_expression", "block"):
            kids = _named(node)
            if len(kids) == 1:
                inner = kids[0]
                if inner.type == "expression_statement":
                    kids = _named(inner)
                    inner = kids[0] if len(kids) == 1 else None
                if inner is not None:
                    return self._eval(inner, ctx)
            raise self._eval_error(node, ctx)
        if kind == "type_cast_expression":
            return self._eval(node.child_by_field_name("value"), ctx)
        if kind == "unary_expression":
            kids = _named(node)
            op = _text(node.children[0])
            if op == "-" and len(kids) == 1:
                return -self._eval(kids[0], ctx)  # pylint: disable=invalid-unary-operand-type  # pylint 3.0 infers None
            raise self._eval_error(node, ctx)
        if kind == "binary_expression":
            left = self._eval(node.child_by_field_name("left"), ctx)
            right = self._eval(node.child_by_field_name("right"), ctx)
            op = _text(node.child_by_field_name("operator"))
            if op == "+":
                return left + right
            if op == "-":
                return left - right
            if op == "*":
                return left * right
            if op in ("/", "%"):
                if right == 0:
                    raise self._eval_error(node, ctx)
                q = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)
                return q if op == "/" else left - q * right
            if op == "<<":
                return left << right
            if op == ">>":
                return left >> right
            if op == "&":
                return left & right
            if op == "|":
                return left | right
            if op == "^":
                return left ^ right
            raise self._eval_error(node, ctx)
        if kind == "call_expression":
            target = _size_of_target(node)
            if target is not None:
                return self.crate._engine._info(target, ctx).size
        raise self._eval_error(node, ctx)

    def _lookup_const(self, name, ctx, written):
        defs = self.crate._consts.get(name, [])
        where = (" used by %s" % ctx.where) if ctx.where else ""
        if not defs:
            raise RustLayoutError("cannot resolve Rust const `%s`%s: add the folder that defines it to spec "
                                  "rust.roots" % (written, where))
        if len(defs) > 1 and ctx.file is not None:
            same = [c for c in defs if c.file is ctx.file]
            if same:
                defs = same
        values = [(c, self._const_value(c, ctx)) for c in defs]
        if len({v for _const, v in values}) > 1:
            raise RustLayoutError(
                "Rust const `%s`%s is defined more than once with different values (%s): rename one, or keep "
                "only the folder with the wanted one in spec rust.roots"
                % (written, where, ", ".join("%s:%d = %d" % (c.file.path, c.line, v) for c, v in values)))
        return values[0][1]

    def _const_value(self, c, ctx):
        key = id(c)
        if key in self.crate._const_cache:
            return self.crate._const_cache[key]
        if key in self.crate._in_progress:
            raise RustLayoutError("Rust const `%s` (%s:%d) is defined in terms of itself: fix its value"
                                  % (c.name, c.file.path, c.line))
        self.crate._in_progress.add(key)
        try:
            value = self._eval(c.value, _Ctx(c.file, {}, "const `%s` (%s:%d)" % (c.name, c.file.path, c.line),
                                             ctx.depth + 1))
        finally:
            self.crate._in_progress.discard(key)
        self.crate._const_cache[key] = value
        return value
