# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
#
# Parses Rust "mirror" sources with tree-sitter and computes the #[repr(C)]
# layouts they describe, so they can be compared with a BPF object's BTF.
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

__all__ = [
    "RustLayoutError",
    "Field",
    "Layout",
    "SizeAssertion",
    "RustCrate",
]

# ---------------------------------------------------------------------------
# Target model.
#
# Layouts are computed for x86_64 Linux (LP64), the controller/shaper host that
# runs the Rust side; its pointer and integer sizes match the 64-bit BPF target.
# u128/i128 are 16 bytes with 16-byte alignment: that is what Rust >= 1.77 uses on
# x86_64 (matching C's __int128 and clang's BPF target). Older Rust toolchains
# aligned them to 8; mirrors of C structs holding __int128 need Rust >= 1.77.
# A field-less #[repr(C)] enum is treated like a C `int`-sized enum (4 bytes).
# ---------------------------------------------------------------------------

_PRIMITIVES = {
    "u8": (1, 1), "i8": (1, 1), "bool": (1, 1),
    "u16": (2, 2), "i16": (2, 2),
    "u32": (4, 4), "i32": (4, 4), "f32": (4, 4), "char": (4, 4),
    "u64": (8, 8), "i64": (8, 8), "f64": (8, 8), "usize": (8, 8), "isize": (8, 8),
    "u128": (16, 16), "i128": (16, 16),
}
_INT_TYPES = {
    "u8": (8, False), "u16": (16, False), "u32": (32, False), "u64": (64, False),
    "u128": (128, False), "usize": (64, False),
    "i8": (8, True), "i16": (16, True), "i32": (32, True), "i64": (64, True),
    "i128": (128, True), "isize": (64, True),
}
_STD_ROOTS = ("std", "core", "alloc")
# Standard-library names that are commonly used unqualified (prelude or typical
# imports). If the crate does not define them, they are reported as std types.
_WELL_KNOWN_STD = frozenset((
    "String", "Vec", "Box", "Option", "Result", "Rc", "Arc", "Cell", "RefCell",
    "Mutex", "RwLock", "HashMap", "HashSet", "BTreeMap", "BTreeSet", "VecDeque",
    "Duration", "Instant", "SystemTime", "IpAddr", "Ipv4Addr", "Ipv6Addr",
    "SocketAddr", "SocketAddrV4", "SocketAddrV6", "AtomicBool", "AtomicU8",
    "AtomicU16", "AtomicU32", "AtomicU64", "AtomicUsize", "AtomicI8", "AtomicI16",
    "AtomicI32", "AtomicI64", "AtomicIsize", "NonNull", "MaybeUninit",
    "NonZeroU8", "NonZeroU16", "NonZeroU32", "NonZeroU64", "NonZeroUsize",
))
_ZST_GENERICS = frozenset(("PhantomData", "PhantomPinned"))
_ASSERT_MACROS = frozenset(("assert_eq", "debug_assert_eq", "const_assert_eq"))
_INT_LITERAL = re.compile(
    r"^(?P<num>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)"
    r"(?P<suffix>[ui](?:8|16|32|64|128|size))?$"
)
_PIP_HINT = "pip install tree-sitter tree-sitter-rust"
_MAX_DEPTH = 64


class RustLayoutError(Exception):
    """A Rust mirror layout cannot be computed; the message names the fix."""


@dataclass
class Field:
    name: str
    offset: int
    size: int
    align: int
    type: str


@dataclass
class Layout:
    name: str
    size: int
    align: int
    fields: list
    file: str
    line: int
    packed: bool
    repr_align: int | None


@dataclass
class SizeAssertion:
    type: str
    size: int
    style: str
    file: str
    line: int


# ---------------------------------------------------------------------------
# tree-sitter loading (lazy, so importing this module never needs it)
# ---------------------------------------------------------------------------

_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        try:
            import tree_sitter
            import tree_sitter_rust
        except ImportError as exc:
            raise RustLayoutError(
                "the Rust layout engine needs the Python packages tree-sitter and tree-sitter-rust, which are "
                "not importable on the controller: %s" % _PIP_HINT
            ) from exc
        language = tree_sitter.Language(tree_sitter_rust.language())
        try:
            parser = tree_sitter.Parser(language)
        except TypeError:  # tree-sitter < 0.22
            parser = tree_sitter.Parser()
            parser.set_language(language)
        _PARSER = parser
    return _PARSER


# ---------------------------------------------------------------------------
# Internal model
# ---------------------------------------------------------------------------

def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _line(node) -> int:
    return node.start_point[0] + 1


class _File:
    __slots__ = ("path", "tree", "std_names")

    def __init__(self, path, tree):
        self.path = path
        self.tree = tree
        self.std_names = {}  # local name -> std path, from `use std::...`


class _Param:
    __slots__ = ("name", "kind", "default")

    def __init__(self, name, kind, default):
        self.name = name
        self.kind = kind  # "type" | "const"
        self.default = default


class _Def:
    __slots__ = ("kind", "name", "node", "file", "line", "params")

    def __init__(self, kind, name, node, file):
        self.kind = kind  # "struct" | "union" | "enum" | "alias"
        self.name = name
        self.node = node
        self.file = file
        self.line = _line(node)
        self.params = _params(node)

    @property
    def where(self):
        return "%s:%d" % (self.file.path, self.line)


class _ConstDef:
    __slots__ = ("name", "value", "file", "line")

    def __init__(self, name, value, file, line):
        self.name = name
        self.value = value
        self.file = file
        self.line = line


class _Info:
    """Size/alignment of a resolved type, plus what packed structs must check."""

    __slots__ = ("size", "align", "has_align", "text")

    def __init__(self, size, align, has_align, text):
        self.size = size
        self.align = align
        self.has_align = has_align  # (transitively) holds a #[repr(align)] type
        self.text = text            # the type as written, generics substituted


class _Ctx:
    """Where a type expression is evaluated: its file, generic bindings, and a
    description of the user ("field `x` of `Foo` (src/a.rs:3)") for messages."""

    __slots__ = ("file", "subst", "where", "depth")

    def __init__(self, file, subst, where, depth=0):
        self.file = file
        self.subst = subst
        self.where = where
        self.depth = depth


def _params(node):
    out = []
    tp = node.child_by_field_name("type_parameters")
    if tp is None:
        return out
    for child in tp.named_children:
        if child.type == "type_parameter":
            out.append(_Param(_text(child.child_by_field_name("name")), "type",
                              child.child_by_field_name("default_type")))
        elif child.type == "const_parameter":
            out.append(_Param(_text(child.child_by_field_name("name")), "const",
                              child.child_by_field_name("value")))
        elif child.type in ("constrained_type_parameter", "optional_type_parameter"):
            # older grammar shapes
            name = child.child_by_field_name("left") or child.child_by_field_name("name")
            out.append(_Param(_text(name), "type", child.child_by_field_name("default_type")))
    return out


def _attributes(node):
    """(name, token_tree) of the outer attributes written before an item."""
    out = []
    sib = node.prev_sibling
    while sib is not None and sib.type in ("attribute_item", "line_comment", "block_comment"):
        if sib.type == "attribute_item":
            for attr in sib.named_children:
                if attr.type == "attribute" and attr.named_child_count:
                    out.append((_text(attr.named_children[0]), attr.child_by_field_name("arguments")))
        sib = sib.prev_sibling
    return out


class _Repr:
    __slots__ = ("c", "transparent", "packed", "align", "int_type")

    def __init__(self):
        self.c = False
        self.transparent = False
        self.packed = None      # cap in bytes, or None
        self.align = None       # requested minimum alignment, or None
        self.int_type = None    # enum discriminant type


def _parse_repr(d):
    rep = _Repr()
    for name, args in _attributes(d.node):
        if name != "repr" or args is None:
            continue
        kids = args.children
        for i, tok in enumerate(kids):
            if tok.type not in ("identifier", "primitive_type"):
                continue
            word = _text(tok)
            arg = None
            if i + 1 < len(kids) and kids[i + 1].type == "token_tree":
                inner = list(kids[i + 1].named_children)
                if len(inner) != 1 or inner[0].type != "integer_literal":
                    raise RustLayoutError(
                        "`%s` (%s) has repr `%s%s`: write %s(N) with an integer literal N"
                        % (d.name, d.where, word, _text(kids[i + 1]), word))
                arg = _int_literal(_text(inner[0]))
            if word == "C":
                rep.c = True
            elif word == "transparent":
                rep.transparent = True
            elif word == "packed":
                rep.packed = 1 if arg is None else arg
                _check_pow2(d, "packed", rep.packed)
            elif word == "align":
                if arg is None:
                    raise RustLayoutError("`%s` (%s) has repr `align` without a value: write align(N)"
                                          % (d.name, d.where))
                _check_pow2(d, "align", arg)
                rep.align = arg if rep.align is None else max(rep.align, arg)
            elif word in _INT_TYPES:
                rep.int_type = word
    return rep


def _check_pow2(d, word, value):
    if value is None or value <= 0 or value & (value - 1):
        raise RustLayoutError("`%s` (%s) has %s(%s): the value must be a power of two; fix the repr"
                              % (d.name, d.where, word, value))


def _int_literal(text):
    m = _INT_LITERAL.match(text)
    if not m:
        return None
    num = m.group("num").replace("_", "")
    return int(num, 0) if num[:2].lower() in ("0x", "0o", "0b") else int(num, 10)


def _align_up(value, align):
    return (value + align - 1) // align * align


def _last_segment(node):
    """Last path segment of an identifier/scoped node (`a::b::C` -> `C`)."""
    if node.type in ("scoped_identifier", "scoped_type_identifier"):
        return _text(node.child_by_field_name("name"))
    return _text(node)


def _first_segment(node):
    while node.type in ("scoped_identifier", "scoped_type_identifier"):
        path = node.child_by_field_name("path")
        if path is None:
            return ""
        node = path
    return _text(node)


def _named(node):
    return [c for c in node.named_children if c.type not in ("line_comment", "block_comment")]


def _unwrap(node):
    while node is not None and node.type in ("parenthesized_expression", "type_cast_expression"):
        if node.type == "type_cast_expression":
            node = node.child_by_field_name("value")
        else:
            kids = _named(node)
            node = kids[0] if len(kids) == 1 else None
    return node


def _size_of_target(node):
    """The T of `[path::]size_of::<T>()`, else None."""
    node = _unwrap(node)
    if node is None or node.type != "call_expression":
        return None
    func = node.child_by_field_name("function")
    args = node.child_by_field_name("arguments")
    if func is None or func.type != "generic_function" or args is None or _named(args):
        return None
    name = func.child_by_field_name("function")
    if name is None or _last_segment(name) != "size_of":
        return None
    targs = func.child_by_field_name("type_arguments")
    types = _named(targs) if targs is not None else []
    return types[0] if len(types) == 1 else None


# ---------------------------------------------------------------------------
# The crate
# ---------------------------------------------------------------------------

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
        for root in self.roots:
            for path in self._scan(root):
                self._load(path)

    # -- loading -----------------------------------------------------------

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

    # -- public API ----------------------------------------------------------

    def layout(self, type_expr: str) -> Layout:
        """The layout of a Rust type written as in source, e.g. ``HostCounter``,
        ``DownUpOrder<u64>``, ``ip_mapping::IpHashKey`` or ``[u8; 16]``."""
        node = self._parse_type(type_expr)
        ctx = _Ctx(None, {}, None)
        res = self._resolve(node, ctx)
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
            self._find_assertions(f, f.tree.root_node, out)
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
                    values.add(self._const_value(c, _Ctx(c.file, {}, None)))
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
        return self._lookup_const(name, _Ctx(f, {}, None), name)

    # -- type parsing / resolution ----------------------------------------

    def _parse_type(self, type_expr):
        src = ("type __LqosLayoutProbe = %s;" % type_expr).encode("utf-8")
        tree = self._parser.parse(src)
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
            return self._infos[id(res)]
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
            if name in _ZST_GENERICS and not self._types.get(name):
                return _Info(0, 1, False, self._render(node, ctx))
            return self._named_type(base, name, node.child_by_field_name("type_arguments"), ctx, written)
        if kind == "array_type":
            length = node.child_by_field_name("length")
            if length is None:
                raise RustLayoutError("%s is unsized: use a fixed-size array [T; N]" % self._subject(written, ctx))
            elem = self._info(node.child_by_field_name("element"), ctx)
            count = self._eval(length, ctx)
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
                value = self._eval(arg, actx)
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
        if key in self._cache:
            return self._cache[key]
        if key in self._in_progress:
            raise RustLayoutError("`%s` (%s) contains itself by value: a type cannot hold itself; "
                                  "put it behind a pointer or fix the field type" % (label, d.where))
        self._in_progress.add(key)
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
            self._in_progress.discard(key)
        self._cache[key] = res
        return res

    def _find_def(self, name_node, name, written, ctx):
        defs = self._types.get(name, [])
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

    # -- layouts ---------------------------------------------------------------

    def _finish(self, layout, has_align):
        self._infos[id(layout)] = _Info(layout.size, layout.align, has_align, layout.name)
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

    # -- constant expressions --------------------------------------------------

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
            if name in self._consts:
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
                return self._info(target, ctx).size
        raise self._eval_error(node, ctx)

    def _lookup_const(self, name, ctx, written):
        defs = self._consts.get(name, [])
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
        if key in self._const_cache:
            return self._const_cache[key]
        if key in self._in_progress:
            raise RustLayoutError("Rust const `%s` (%s:%d) is defined in terms of itself: fix its value"
                                  % (c.name, c.file.path, c.line))
        self._in_progress.add(key)
        try:
            value = self._eval(c.value, _Ctx(c.file, {}, "const `%s` (%s:%d)" % (c.name, c.file.path, c.line),
                                             ctx.depth + 1))
        finally:
            self._in_progress.discard(key)
        self._const_cache[key] = value
        return value

    # -- size assertions ---------------------------------------------------------

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
            size = self._eval(other, _Ctx(f, {}, None))
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
        tree = self._parser.parse(b"fn __lqos_probe() { __lqos_args(" + inner + b"); }")
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
