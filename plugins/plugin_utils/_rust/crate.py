# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
"""The crate walk: the Rust sources under the spec's roots parsed with tree-sitter and indexed (types,
integer consts, ``use`` of std names), and the public API of the layout engine (``RustCrate``),
composed with its parts ``layout.LayoutEngine``, ``consts.ConstEvaluator`` and
``assertions.AssertionFinder``."""
from __future__ import annotations

import dataclasses
import os

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import (
    Layout,
    RustLayoutError,
    SizeAssertion,
    _ConstDef,
    _Ctx,
    _Def,
    _File,
    _INT_TYPES,
    _STD_ROOTS,
    _line,
    _parser,
    _text,
)
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.repr_rules import (
    _parse_repr,
)
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.assertions import AssertionFinder
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.consts import ConstEvaluator
from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.layout import LayoutEngine

__all__ = ["RustCrate"]


class RustCrate:
    """The Rust sources found under ``roots`` (folders scanned for ``*.rs``,
    skipping ``target/`` and hidden folders)."""

    def __init__(self, roots: list[str]):
        if isinstance(roots, str):
            roots = [roots]
        self.roots = list(roots)
        self._parser = _parser()
        self._files = []
        self._types = {}    # name -> [_Def]
        self._consts = {}   # name -> [_ConstDef]
        self._cache = {}
        self._const_cache = {}
        self._in_progress = set()
        self._infos = {}    # id(Layout) -> _Info, for layouts used as field types
        self._engine = LayoutEngine(self)
        self._evaluator = ConstEvaluator(self)
        self._finder = AssertionFinder(self)
        for root in self.roots:
            for path in self._scan(root):
                self._load(path)

    @staticmethod
    def _scan(root):
        if os.path.isfile(root) and root.endswith(".rs"):
            return [root]
        if not os.path.isdir(root):
            raise RustLayoutError("Rust root `%s` does not exist or is not a folder: fix spec rust.roots" % root)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "target" and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".rs"):
                    found.append(os.path.normpath(os.path.join(dirpath, name)))
        return found

    def _load(self, path):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise RustLayoutError("cannot read Rust source %s (%s): fix its permissions or spec rust.roots"
                                  % (path, exc.strerror or exc)) from exc
        f = _File(path, self._parser.parse(data))
        self._files.append(f)
        self._index(f, f.tree.root_node)

    def _index(self, f, container):
        for item in container.named_children:
            kind = item.type
            if kind in ("struct_item", "union_item", "enum_item", "type_item"):
                name = item.child_by_field_name("name")
                if name is None:
                    continue
                d = _Def({"struct_item": "struct", "union_item": "union", "enum_item": "enum",
                          "type_item": "alias"}[kind], _text(name), item, f)
                self._types.setdefault(d.name, []).append(d)
            elif kind == "const_item":
                name = item.child_by_field_name("name")
                ctype = item.child_by_field_name("type")
                value = item.child_by_field_name("value")
                if name is None or value is None or ctype is None or _text(name) == "_":
                    continue
                if ctype.type == "primitive_type" and _text(ctype) in _INT_TYPES:
                    c = _ConstDef(_text(name), value, f, _line(item))
                    self._consts.setdefault(c.name, []).append(c)
            elif kind == "mod_item":
                body = item.child_by_field_name("body")
                if body is not None:
                    self._index(f, body)
            elif kind == "use_declaration":
                arg = item.child_by_field_name("argument")
                if arg is not None:
                    self._index_use(f, arg, [])

    def _index_use(self, f, node, prefix):
        kind = node.type
        if kind in ("scoped_identifier", "identifier"):
            path = prefix + _text(node).replace(" ", "").split("::")
            self._add_use(f, path, path[-1])
        elif kind == "use_as_clause":
            path = prefix + _text(node.child_by_field_name("path")).replace(" ", "").split("::")
            self._add_use(f, path, _text(node.child_by_field_name("alias")))
        elif kind == "scoped_use_list":
            p = node.child_by_field_name("path")
            sub = prefix + (_text(p).replace(" ", "").split("::") if p is not None else [])
            lst = node.child_by_field_name("list")
            if lst is not None:
                self._index_use(f, lst, sub)
        elif kind == "use_list":
            for child in node.named_children:
                if child.type == "self":
                    if prefix:
                        self._add_use(f, prefix, prefix[-1])
                else:
                    self._index_use(f, child, prefix)

    @staticmethod
    def _add_use(f, path, local):
        path = [p for p in path if p]
        if path and path[0] in _STD_ROOTS:
            f.std_names[local] = "::".join(path)

    def layout(self, type_expr: str) -> Layout:
        """The layout of a Rust type written as in source, e.g. ``HostCounter``,
        ``DownUpOrder<u64>``, ``ip_mapping::IpHashKey`` or ``[u8; 16]``."""
        node = self._engine._parse_type(type_expr)
        ctx = _Ctx(None, {}, None)
        res = self._engine._resolve(node, ctx)
        if isinstance(res, Layout):
            return dataclasses.replace(res, fields=[dataclasses.replace(f) for f in res.fields])
        return Layout(name=res.text, size=res.size, align=res.align, fields=[], file="", line=0,
                      packed=False, repr_align=None)

    def sources(self) -> list:
        """[(path, tree-sitter root node)] of every parsed file, in scan order."""
        return [(f.path, f.tree.root_node) for f in self._files]

    def type_params(self, name: str) -> int | None:
        """Number of generic type parameters of a struct/union/enum the crate
        defines once under ``name``; None when it is not defined (or twice)."""
        defs = [d for d in self._types.get(name, []) if d.kind != "alias"]
        if len(defs) != 1:
            return None
        return sum(1 for p in defs[0].params if p.kind == "type")

    def repr_c_structs(self) -> list:
        """[(name, path, line)] of the ``#[repr(C)]`` structs the crate defines."""
        out = []
        for name, defs in sorted(self._types.items()):
            for d in defs:
                try:
                    is_c = d.kind == "struct" and _parse_repr(d).c
                except RustLayoutError:
                    is_c = False  # reported when the layout itself is asked for
                if is_c:
                    out.append((name, d.file.path, d.line))
        return out

    def constant_defs(self) -> list:
        """[(name, path, line)] of the integer ``const`` items (module level)."""
        return [(c.name, c.file.path, c.line) for defs in self._consts.values() for c in defs]

    def size_assertions(self) -> list[SizeAssertion]:
        """Compile-time and test size assertions found in the sources:
        ``const _: [(); N] = [(); size_of::<T>()];`` (either side, any array
        shape) and ``assert_eq!(size_of::<T>(), N)`` (either order). Only
        assertions whose number is a constant expression are returned."""
        out = []
        for f in self._files:
            self._finder._find_assertions(f, f.tree.root_node, out)
        return out

    def constants(self) -> dict[str, int]:
        """Integer ``const`` items (module level, pub or not) whose value is a
        constant expression. A name defined in several files with different
        values is left out (use :meth:`constant` with ``file``)."""
        out = {}
        for name, defs in sorted(self._consts.items()):
            values = set()
            for c in defs:
                try:
                    values.add(self._evaluator._const_value(c, _Ctx(c.file, {}, None)))
                except RustLayoutError:
                    values.add(None)
            if len(values) == 1 and None not in values:
                out[name] = values.pop()
        return out

    def constant(self, name: str, file: str | None = None) -> int:
        """One integer const; ``file`` picks among definitions in several files."""
        f = None
        if file is not None:
            want = os.path.normpath(file)
            for cand in self._files:
                if cand.path == want or os.path.abspath(cand.path) == os.path.abspath(want):
                    f = cand
                    break
            if f is None:
                raise RustLayoutError("Rust file %s is not under spec rust.roots: add its folder to rust.roots" % file)
        return self._evaluator._lookup_const(name, _Ctx(f, {}, None), name)
