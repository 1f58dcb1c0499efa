# PRIVATE: internal helper of the lqos.bpf collection, NOT a public API.
# It may change without notice. Controller side only (used by action plugins).
#
# Parsing of Rust "mirror" sources with tree-sitter (loaded lazily), the layout
# model the engine returns (Field, Layout, SizeAssertion, RustLayoutError) and the
# helpers over syntax nodes the crate walk, the layout engine, the constant
# evaluator and the assertion finder share.
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "RustLayoutError",
    "Field",
    "Layout",
    "SizeAssertion",
]

# ---------------------------------------------------------------------------
# Integer types and the names the crate walk knows (sizes: repr_rules.py).
# ---------------------------------------------------------------------------

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


def _int_literal(text):
    m = _INT_LITERAL.match(text)
    if not m:
        return None
    num = m.group("num").replace("_", "")
    return int(num, 0) if num[:2].lower() in ("0x", "0o", "0b") else int(num, 10)


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
