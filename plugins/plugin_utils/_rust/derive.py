# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""What the Rust side of an lqos_sys-shaped crate says about its BPF object,
read from the code itself (tree-sitter, on the controller).

Facts come from these constructs (docs/modules/abi_check.md, "Derivation"):

- **map openings**: a call through a generic map type the crate defines with
  two type parameters (key, value), written with a turbofish and a pin path
  under ``/sys/fs/bpf/``: ``BpfMap::<IpHashKey, IpHashData>::from_path(P)``.
  ``P`` is a string literal, a ``const NAME: &str`` of the crate, or a local
  ``let`` bound to a literal (or to an ``if``/``else`` of literals: one
  opening per literal).
- **iterator readers**: ``Iter::new(skel.progs.PROG, skel.maps.MAP)`` on such
  a two-parameter type without a turbofish; key and value come from the one
  ``static`` of type ``...Iter<K, V>...`` the enclosing function uses.
- **binding calls**: calls ``M::name(args)`` (or names imported with
  ``use ...::M::name``) where ``M`` is the module whose body is
  ``include!(concat!(env!("OUT_DIR"), "/bindings.rs"))``.
- **skeleton uses**: field accesses ``X.progs.NAME`` and ``X.maps.NAME``.
- **pins named in the tree's own explicit list**: string literals
  ``"/sys/fs/bpf/NAME"`` in ``lqos_kernel.rs`` (LibreQoS checks those pins'
  key/value sizes at start-up).
- **``#[repr(C)]`` structs**: candidates for pairing by name with a C map
  key/value type (``TcClassifyControl`` <-> ``tc_classify_control``).

A construct the derivation cannot follow (a pin path computed at run time, an
iterator whose key/value types are not visible) is returned in
``unsupported`` with file, line, construct and fix; it is never guessed.
"""

from __future__ import annotations

import os
import re

from ansible_collections.lqos.bpf.plugins.plugin_utils._rust.parse import _line, _norm, _text

PIN_PREFIX = "/sys/fs/bpf/"
EXPLICIT_LIST_FILE = "lqos_kernel.rs"
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``TcClassifyControl`` -> ``tc_classify_control``."""
    return _CAMEL.sub("_", name).lower()


def _walk(node, skip=("macro_invocation",)):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if n.type not in skip:
            stack.extend(reversed(n.named_children))


def _string(node) -> str | None:
    if node is not None and node.type == "string_literal":
        parts = [c for c in node.named_children if c.type == "string_content"]
        if len(parts) == len(node.named_children):
            return "".join(_text(c) for c in parts)
    return None


def _enclosing_fn(node):
    while node is not None and node.type != "function_item":
        node = node.parent
    return node


def _last_segment(node) -> str:
    if node.type == "scoped_identifier":
        return _text(node.child_by_field_name("name"))
    return _text(node)


class _Unsupported(Exception):
    def __init__(self, construct: str, message: str, fix: str):
        super().__init__(message)
        self.construct = construct
        self.message = message
        self.fix = fix


class RustDerivation:
    """Walks the parsed files of a ``_rust.crate.RustCrate`` once.

    ``rel`` turns an absolute path into the path shown in messages.
    """

    def __init__(self, crate, rel=lambda p: p):
        self.crate = crate
        self.rel = rel
        self.str_consts: dict = {}     # NAME -> [literal]
        self.statics: dict = {}        # (path, NAME) -> type text
        self.bindings_modules: list = []   # [(module name, path, line)]
        self._sources = crate.sources()
        for path, root in self._sources:
            for n in _walk(root):
                if n.type == "const_item":
                    name, value = n.child_by_field_name("name"), n.child_by_field_name("value")
                    lit = _string(value)
                    if name is not None and lit is not None:
                        self.str_consts.setdefault(_text(name), []).append(lit)
                elif n.type == "static_item":
                    name, typ = n.child_by_field_name("name"), n.child_by_field_name("type")
                    if name is not None and typ is not None:
                        self.statics[(path, _text(name))] = _norm(_text(typ))
                elif n.type == "mod_item":
                    body = n.child_by_field_name("body")
                    if body is not None and b"bindings.rs" in body.text and b"include!" in body.text:
                        self.bindings_modules.append((_text(n.child_by_field_name("name")), path, _line(n)))

    # -- pin paths -----------------------------------------------------------
    def _literals(self, node, fn) -> list:
        """String values an expression can take: literal, const, local let, if/else."""
        lit = _string(node)
        if lit is not None:
            return [lit]
        if node.type in ("reference_expression", "parenthesized_expression", "block"):
            kids = [c for c in node.named_children if c.type not in ("line_comment", "block_comment")]
            if node.type == "block":
                kids = kids[-1:]
            if len(kids) == 1:
                return self._literals(kids[-1], fn)
            return []
        if node.type == "expression_statement" and node.named_child_count == 1:
            return self._literals(node.named_children[0], fn)
        if node.type == "if_expression":
            cons = node.child_by_field_name("consequence")
            alt = node.child_by_field_name("alternative")
            out = self._literals(cons, fn) if cons is not None else []
            if alt is not None:
                inner = list(alt.named_children)
                out += self._literals(inner[0], fn) if inner else []
            return out
        if node.type == "identifier":
            name = _text(node)
            if fn is not None:
                for n in _walk(fn):
                    if n.type == "let_declaration" and n.start_byte < node.start_byte:
                        pat, value = n.child_by_field_name("pattern"), n.child_by_field_name("value")
                        if pat is not None and _text(pat) == name and value is not None:
                            return self._literals(value, fn)
            values = self.str_consts.get(name, [])
            if len(set(values)) == 1:
                return values[:1]
        return []

    # -- constructs ----------------------------------------------------------
    def _map_call(self, path, call):
        """One map opening / iterator call, or None when the call is not one."""
        func = call.child_by_field_name("function")
        if func is None or func.type != "scoped_identifier":
            return None
        owner = func.child_by_field_name("path")
        if owner is None:
            return None
        targs = None
        if owner.type == "generic_type":
            tname = _text(owner.child_by_field_name("type"))
            targs = [c for c in owner.child_by_field_name("type_arguments").named_children
                     if c.type not in ("lifetime", "line_comment", "block_comment")]
        elif owner.type in ("identifier", "type_identifier", "scoped_identifier"):
            tname = _last_segment(owner)
        else:
            return None
        if self.crate.type_params(tname) != 2:
            return None
        args = call.child_by_field_name("arguments")
        args = [a for a in args.named_children if a.type not in ("line_comment", "block_comment")] if args else []
        fn = _enclosing_fn(call)
        construct = _norm(_text(call))
        if len(construct) > 120:
            construct = construct[:117] + "..."
        skel_maps = [a for a in args if a.type == "field_expression"
                     and a.child_by_field_name("value").type == "field_expression"
                     and _text(a.child_by_field_name("value").child_by_field_name("field")) == "maps"]
        if skel_maps:
            maps = [_text(a.child_by_field_name("field")) for a in skel_maps]
            progs = [_text(a.child_by_field_name("field")) for a in args if a.type == "field_expression"
                     and a.child_by_field_name("value").type == "field_expression"
                     and _text(a.child_by_field_name("value").child_by_field_name("field")) == "progs"]
            if targs is None:
                targs = self._static_args(path, tname, fn, construct)
            return [{"map": m, "key": _norm(_text(targs[0])) if not isinstance(targs[0], str) else targs[0],
                     "value": _norm(_text(targs[1])) if not isinstance(targs[1], str) else targs[1],
                     "via": "%s::new (iterator%s)" % (tname, " " + progs[0] if progs else "")} for m in maps]
        for a in args:
            values = self._literals(a, fn)
            pins = [v for v in values if v.startswith(PIN_PREFIX)]
            if not pins:
                continue
            if targs is None or len(targs) != 2:
                raise _Unsupported(
                    construct, "opens pinned map(s) %s through `%s` without its key and value types written "
                    "at the call" % (", ".join(pins), tname),
                    "write the call as `%s::<Key, Value>::...`, or add mirrors entries for this map to the spec"
                    % tname)
            return [{"map": p[len(PIN_PREFIX):], "key": _norm(_text(targs[0])), "value": _norm(_text(targs[1])),
                     "via": "%s::%s" % (tname, _text(func.child_by_field_name("name")))} for p in pins]
        if targs is not None and args:
            raise _Unsupported(
                construct, "opens a `%s<%s>` from a path that is neither a string literal, a `const &str` "
                "nor a local `let` of literals" % (tname, ", ".join(_norm(_text(t)) for t in targs)),
                "pass the pin path as a literal or a const, or add mirrors entries for this map's key and value "
                "types to the spec")
        return None

    def _static_args(self, path, tname, fn, construct):
        pattern = re.compile(r"\b%s\s*<\s*([^<>,]+(?:<[^<>]*>)?)\s*,\s*([^<>,]+(?:<[^<>]*>)?)\s*>" % re.escape(tname))
        found = set()
        used = {_text(n) for n in _walk(fn) if n.type == "identifier"} if fn is not None else set()
        for (spath, name), typ in self.statics.items():
            if spath == path and name in used:
                m = pattern.search(typ)
                if m:
                    found.add((m.group(1).strip(), m.group(2).strip()))
        if len(found) != 1:
            raise _Unsupported(
                construct, "creates a `%s` over a skeleton map, but its key and value types are not visible: %s"
                % (tname, "no static of type `%s<K, V>` is used in the same function" % tname if not found else
                   "the function uses several statics of type `%s<K, V>`" % tname),
                "write the call as `%s::<Key, Value>::new(...)`, or add mirrors entries for this map to the spec"
                % tname)
        return list(found.pop())

    def _binding_names(self, root) -> set:
        """Bare names a file imports from a bindings module (``use ...::bpf::{a, b}``)."""
        mods = {m for m, _p, _l in self.bindings_modules}
        out = set()
        for n in _walk(root):
            if n.type != "use_declaration":
                continue
            text = _norm(_text(n.child_by_field_name("argument"))).replace(" ", "")
            for mod in mods:
                m = re.search(r"(?:^|::)%s::(\{[^}]*\}|\w+)$" % re.escape(mod), text)
                if m:
                    names = m.group(1).strip("{}").split(",")
                    out.update(x.split("as")[0] for x in names if x and x != "*" and x != "self")
        return out

    def derive(self) -> dict:
        """Everything found, as plain data (paths shown through ``rel``):

        {"maps": [{map, key, value, via, file, line}],
         "unsupported": [{file, line, construct, message, fix}],
         "calls": [{name, arity, file, line}], "bindings_module": "file:line" or None,
         "skeleton_uses": [{kind: progs|maps, name, file, line}],
         "explicit_pins": [{name, file, line}],
         "repr_c": [{name, snake, file, line}]}
        """
        out = {"maps": [], "unsupported": [], "calls": [], "skeleton_uses": [], "explicit_pins": [],
               "bindings_module": None, "repr_c": []}
        mods = {m for m, _p, _l in self.bindings_modules}
        if self.bindings_modules:
            m, p, line = self.bindings_modules[0]
            out["bindings_module"] = "%s:%d (mod %s)" % (self.rel(p), line, m)
        seen_uses = set()
        for path, root in self._sources:
            rel = self.rel(path)
            imported = self._binding_names(root) if mods else set()
            explicit = os.path.basename(path) == EXPLICIT_LIST_FILE
            for n in _walk(root):
                if n.type == "call_expression":
                    try:
                        found = self._map_call(path, n)
                    except _Unsupported as exc:
                        out["unsupported"].append({"file": rel, "line": _line(n), "construct": exc.construct,
                                                   "message": exc.message, "fix": exc.fix})
                        found = None
                    for item in found or []:
                        item.update(file=rel, line=_line(n))
                        out["maps"].append(item)
                    func = n.child_by_field_name("function")
                    name = None
                    if func is not None and func.type == "scoped_identifier" and mods:
                        owner = func.child_by_field_name("path")
                        if owner is not None and _last_segment(owner) in mods:
                            name = _text(func.child_by_field_name("name"))
                    elif func is not None and func.type == "identifier" and _text(func) in imported:
                        name = _text(func)
                    if name:
                        args = n.child_by_field_name("arguments")
                        arity = len([a for a in args.named_children
                                     if a.type not in ("line_comment", "block_comment")]) if args else 0
                        out["calls"].append({"name": name, "arity": arity, "file": rel, "line": _line(n)})
                elif n.type == "field_expression":
                    value = n.child_by_field_name("value")
                    if value is not None and value.type == "field_expression":
                        kind = _text(value.child_by_field_name("field"))
                        if kind in ("progs", "maps", "links"):
                            key = (kind, _text(n.child_by_field_name("field")), rel)
                            if key not in seen_uses:
                                seen_uses.add(key)
                                out["skeleton_uses"].append({"kind": kind, "name": key[1], "file": rel,
                                                             "line": _line(n)})
                elif explicit and n.type == "string_literal":
                    lit = _string(n)
                    if lit and lit.startswith(PIN_PREFIX) and "/" not in lit[len(PIN_PREFIX):]:
                        name = lit[len(PIN_PREFIX):]
                        if name not in {e["name"] for e in out["explicit_pins"]}:
                            out["explicit_pins"].append({"name": name, "file": rel, "line": _line(n)})
        for name, path, line in self.crate.repr_c_structs():
            out["repr_c"].append({"name": name, "snake": snake_case(name), "file": self.rel(path), "line": line})
        return out


def restated_constants(crate, header_values: dict, rel=lambda p: p) -> list:
    """[{name, file, line}] of the Rust integer consts whose name is a ``#define``
    of the header (``header_values``: name -> int, from ``_spec.header_constants``)."""
    out = []
    for name, path, line in sorted(crate.constant_defs(), key=lambda c: (c[1], c[2])):
        if name in header_values:
            out.append({"name": name, "file": rel(path), "line": line})
    return out
