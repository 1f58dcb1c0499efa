# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
"""The layout engine: a Rust type expression resolved to its size, alignment and #[repr(C)] field
layout (structs, unions, enums, arrays, generics, aliases), the part of a ``crate.RustCrate`` that
computes layouts."""
from __future__ import annotations

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    Field,
    Layout,
    RustLayoutError,
    _Ctx,
    _Info,
    _MAX_DEPTH,
    _STD_ROOTS,
    _WELL_KNOWN_STD,
    _ZST_GENERICS,
    _first_segment,
    _last_segment,
    _line,
    _named,
    _norm,
    _text,
)
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.repr_rules import (
    _PRIMITIVES,
    _align_up,
    _parse_repr,
)


class LayoutEngine:
    """The layout part of a ``crate.RustCrate`` (``crate``: the crate whose files, definitions and
    caches it reads)."""

    def __init__(self, crate):
        self.crate = crate

    def _parse_type(self, type_expr):
        src = ("type __LqosLayoutProbe = %s;" % type_expr).encode("utf-8")
        tree = self.crate._parser.parse(src)
        items = tree.root_node.named_children
        node = items[0].child_by_field_name("type") if len(items) == 1 and items[0].type == "type_item" else None
        if node is None or tree.root_node.has_error or not type_expr.strip():
            raise RustLayoutError("cannot parse Rust type `%s`: write it as in Rust source, e.g. `DownUpOrder<u64>`"
                                  % type_expr)
        return node

    @staticmethod
    def _subject(written, ctx):
        s = "Rust type `%s`" % written
        if ctx.where:
            s += " used by %s" % ctx.where
        return s

    def _info(self, node, ctx):
        res = self._resolve(node, ctx)
        if isinstance(res, Layout):
            return self.crate._infos[id(res)]
        return res

    def _resolve(self, node, ctx):
        """Layout (named struct/union/enum) or _Info (anything else)."""
        if ctx.depth > _MAX_DEPTH:
            raise RustLayoutError("%s nests generics too deeply (more than %d levels): simplify the type"
                                  % (self._subject(_norm(_text(node)), ctx), _MAX_DEPTH))
        kind = node.type
        written = _norm(_text(node))
        if kind == "primitive_type":
            if written in _PRIMITIVES:
                size, align = _PRIMITIVES[written]
                return _Info(size, align, False, written)
            raise RustLayoutError("%s is unsized: use a fixed-size array [T; N]" % self._subject(written, ctx))
        if kind == "type_identifier":
            bound = ctx.subst.get(written)
            if bound is not None:
                if isinstance(bound, int):
                    raise RustLayoutError("%s is a const generic parameter, not a type: fix the field type"
                                          % self._subject(written, ctx))
                return bound
            return self._named_type(node, written, None, ctx)
        if kind == "scoped_type_identifier":
            return self._named_type(node, _last_segment(node), None, ctx)
        if kind == "generic_type":
            base = node.child_by_field_name("type")
            name = _last_segment(base)
            if name in _ZST_GENERICS and not self.crate._types.get(name):
                return _Info(0, 1, False, self._render(node, ctx))
            return self._named_type(base, name, node.child_by_field_name("type_arguments"), ctx, written)
        if kind == "array_type":
            length = node.child_by_field_name("length")
            if length is None:
                raise RustLayoutError("%s is unsized: use a fixed-size array [T; N]" % self._subject(written, ctx))
            elem = self._info(node.child_by_field_name("element"), ctx)
            count = self.crate._evaluator._eval(length, ctx)
            if count < 0:
                raise RustLayoutError("%s has a negative length (%d): fix the array length"
                                      % (self._subject(written, ctx), count))
            return _Info(elem.size * count, elem.align, elem.has_align, self._render(node, ctx))
        if kind == "unit_type":
            return _Info(0, 1, False, "()")
        if kind == "tuple_type":
            raise RustLayoutError("%s is a tuple, whose layout is unspecified: use a #[repr(C)] struct instead"
                                  % self._subject(written, ctx))
        if kind in ("pointer_type", "reference_type"):
            target = node.child_by_field_name("type")
            if target is not None and (target.type == "dynamic_type"
                                       or (target.type == "array_type"
                                           and target.child_by_field_name("length") is None)
                                       or (target.type == "primitive_type" and _text(target) == "str")):
                raise RustLayoutError("%s is a fat pointer (slice, str or dyn): use a thin pointer or a fixed array"
                                      % self._subject(written, ctx))
            return _Info(8, 8, False, self._render(node, ctx))
        if kind == "function_type":
            return _Info(8, 8, False, self._render(node, ctx))
        raise RustLayoutError("%s uses type syntax the layout engine does not support: use a primitive, "
                              "an array or a #[repr(C)] struct" % self._subject(written, ctx))

    def _named_type(self, name_node, name, args_node, ctx, written=None):
        written = written or _norm(_text(name_node))
        d = self._find_def(name_node, name, written, ctx)
        args = []
        if args_node is not None:
            args = [a for a in _named(args_node) if a.type != "lifetime"]
        params = d.params
        if len(args) > len(params) or any(p.default is None for p in params[len(args):]):
            need = sum(1 for p in params if p.default is None)
            shown = "%s<%s>" % (d.name, ", ".join(p.name for p in params)) if params else d.name
            raise RustLayoutError(
                "%s gives %d generic argument(s) but `%s` (%s) takes %s: write it as `%s` with concrete types"
                % (self._subject(written, ctx), len(args), d.name, d.where,
                   len(params) if need == len(params) else "%d to %d" % (need, len(params)), shown))
        subst = {}
        arg_texts = []
        for i, p in enumerate(params):
            if i < len(args):
                arg, actx = args[i], ctx
            else:
                arg, actx = p.default, _Ctx(d.file, dict(subst), "the default of `%s` in `%s` (%s)"
                                            % (p.name, d.name, d.where), ctx.depth + 1)
            if p.kind == "const":
                value = self.crate._evaluator._eval(arg, actx)
                subst[p.name] = value
                arg_texts.append(str(value))
            else:
                if arg.type in ("integer_literal", "block"):
                    raise RustLayoutError("%s passes `%s` where `%s` expects a type: fix the generic argument"
                                          % (self._subject(written, ctx), _norm(_text(arg)), d.name))
                info = self._info(arg, _Ctx(actx.file, actx.subst, actx.where, actx.depth + 1))
                info = _Info(info.size, info.align, info.has_align, self._render(arg, actx))
                subst[p.name] = info
                arg_texts.append(info.text)
        label = "%s<%s>" % (d.name, ", ".join(arg_texts)) if params else d.name
        key = (id(d), tuple((p, v) if isinstance(v, int) else (p, v.size, v.align, v.has_align, v.text)
                            for p, v in subst.items()))
        if key in self.crate._cache:
            return self.crate._cache[key]
        if key in self.crate._in_progress:
            raise RustLayoutError("`%s` (%s) contains itself by value: a type cannot hold itself; "
                                  "put it behind a pointer or fix the field type" % (label, d.where))
        self.crate._in_progress.add(key)
        try:
            inner = _Ctx(d.file, subst, None, ctx.depth + 1)
            if d.kind == "alias":
                target = d.node.child_by_field_name("type")
                inner.where = "type alias `%s` (%s)" % (d.name, d.where)
                res = self._resolve(target, inner)
            elif d.kind == "enum":
                res = self._enum_layout(d, label)
            else:
                res = self._struct_layout(d, label, inner)
        finally:
            self.crate._in_progress.discard(key)
        self.crate._cache[key] = res
        return res

    def _find_def(self, name_node, name, written, ctx):
        defs = self.crate._types.get(name, [])
        if not defs:
            first = _first_segment(name_node)
            std = (first in _STD_ROOTS
                   or (ctx.file is not None and (name in ctx.file.std_names or first in ctx.file.std_names))
                   or name in _WELL_KNOWN_STD)
            if std:
                raise RustLayoutError(
                    "%s is a standard-library type with no guaranteed layout: replace it with a #[repr(C)] "
                    "type, a primitive or a byte array" % self._subject(written, ctx))
            raise RustLayoutError("cannot resolve %s: add the folder that defines it to spec rust.roots"
                                  % self._subject(written, ctx))
        if len(defs) > 1 and ctx.file is not None:
            same = [d for d in defs if d.file is ctx.file]
            if same:
                defs = same
        if len(defs) > 1:
            raise RustLayoutError(
                "%s is defined more than once (%s): rename one, or keep only the folder with the wanted "
                "one in spec rust.roots" % (self._subject(written, ctx), ", ".join(d.where for d in defs)))
        return defs[0]

    def _render(self, node, ctx):
        """The node's text with generic parameters replaced by their arguments."""
        if not ctx.subst:
            return _norm(_text(node))
        edits = []
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type in ("type_identifier", "identifier") and _text(n) in ctx.subst:
                v = ctx.subst[_text(n)]
                edits.append((n.start_byte, n.end_byte, str(v) if isinstance(v, int) else v.text))
                continue
            stack.extend(n.children)
        raw = node.text
        base = node.start_byte
        out = raw
        for start, end, new in sorted(edits, reverse=True):
            out = out[:start - base] + new.encode("utf-8") + out[end - base:]
        return _norm(out.decode("utf-8", "replace"))

    def _finish(self, layout, has_align):
        self.crate._infos[id(layout)] = _Info(layout.size, layout.align, has_align, layout.name)
        return layout

    def _fields(self, d):
        body = d.node.child_by_field_name("body")
        out = []
        if body is None:  # unit struct
            return out
        if body.type == "field_declaration_list":
            for decl in body.named_children:
                if decl.type == "field_declaration":
                    out.append((_text(decl.child_by_field_name("name")), decl.child_by_field_name("type"),
                                _line(decl)))
        elif body.type == "ordered_field_declaration_list":
            for i, t in enumerate(body.children_by_field_name("type")):
                out.append((str(i), t, _line(t)))
        return out

    def _struct_layout(self, d, label, ctx):
        if d.node.has_error:
            raise RustLayoutError("`%s` (%s) has a syntax error the parser could not recover from: "
                                  "fix the Rust source" % (d.name, d.where))
        rep = _parse_repr(d)
        if rep.transparent:
            if rep.c or rep.packed is not None or rep.align is not None:
                raise RustLayoutError("`%s` (%s) combines #[repr(transparent)] with other reprs: Rust rejects "
                                      "that; keep only transparent" % (d.name, d.where))
        elif not rep.c:
            raise RustLayoutError("`%s` is not #[repr(C)]: its layout is unspecified; add #[repr(C)]" % d.name)
        if rep.packed is not None and rep.align is not None:
            raise RustLayoutError("`%s` (%s) has both packed and align reprs: Rust rejects that; keep one"
                                  % (d.name, d.where))
        fields = []
        infos = []
        for fname, ftype, fline in self._fields(d):
            fctx = _Ctx(ctx.file, ctx.subst, "field `%s` of `%s` (%s:%d)" % (fname, d.name, d.file.path, fline),
                        ctx.depth)
            info = self._info(ftype, fctx)
            if rep.packed is not None and info.has_align:
                raise RustLayoutError("`%s` (%s) is packed but field `%s` holds a #[repr(align)] type: Rust "
                                      "rejects that; drop one of the reprs" % (d.name, d.where, fname))
            infos.append((fname, _Info(info.size, info.align, info.has_align, self._render(ftype, fctx))))
        has_align = rep.align is not None or any(i.has_align for _name, i in infos)
        if rep.transparent:
            big = [n for n, i in infos if i.size != 0]
            if len(big) > 1 or not infos:
                raise RustLayoutError("`%s` (%s) is #[repr(transparent)] but has %d non-zero-sized fields: it "
                                      "must have exactly one" % (d.name, d.where, len(big)))
            size = max(i.size for _name, i in infos)
            align = max(i.align for _name, i in infos)
            fields = [Field(n, 0, i.size, i.align, i.text) for n, i in infos]
            return self._finish(Layout(label, size, align, fields, d.file.path, d.line, False, None), has_align)
        offset = 0
        align = 1
        is_union = d.kind == "union"
        for fname, info in infos:
            falign = info.align if rep.packed is None else min(info.align, rep.packed)
            align = max(align, falign)
            if is_union:
                fields.append(Field(fname, 0, info.size, info.align, info.text))
                offset = max(offset, info.size)
            else:
                offset = _align_up(offset, falign)
                fields.append(Field(fname, offset, info.size, info.align, info.text))
                offset += info.size
        if rep.align is not None:
            align = max(align, rep.align)
        size = _align_up(offset, align)
        return self._finish(Layout(label, size, align, fields, d.file.path, d.line,
                                   rep.packed is not None, rep.align), has_align)

    def _enum_layout(self, d, label):
        rep = _parse_repr(d)
        body = d.node.child_by_field_name("body")
        variants = [v for v in body.named_children if v.type == "enum_variant"] if body is not None else []
        if any(v.child_by_field_name("body") is not None for v in variants):
            raise RustLayoutError("`%s` (%s) is an enum with data-carrying variants: its layout is not supported; "
                                  "mirror it with a #[repr(C)] struct" % (d.name, d.where))
        if rep.int_type is not None:
            size, align = _PRIMITIVES[rep.int_type]
        elif rep.c:
            size, align = 4, 4
        else:
            raise RustLayoutError("`%s` is not #[repr(C)]: its layout is unspecified; add #[repr(C)] or an "
                                  "integer repr such as #[repr(u32)]" % d.name)
        if rep.align is not None:
            align = max(align, rep.align)
            size = _align_up(size, align)
        return self._finish(Layout(label, size, align, [], d.file.path, d.line, False, rep.align),
                            rep.align is not None)
