# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Integer ``#define``s of C headers: a tiny evaluator for the constant
expressions lqos_sys-style headers use (never ``eval``).

May import: nothing."""

from __future__ import annotations

import re

_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)\s+(.+?)\s*(?://.*|/\*.*)?$", re.M)


def header_constants(text: str) -> dict:
    """Integer ``#define``s of a header, with simple arithmetic on earlier ones
    (``#define MAX_FLOWS (MAX_TRACKED_IPS * 2)``). Non-integer defines are skipped."""
    values: dict = {}
    for match in _DEFINE.finditer(text):
        name, expr = match.group(1), match.group(2)
        value = eval_int_expr(expr, values)
        if value is not None:
            values[name] = value
    return values


_TOKEN = re.compile(r"\s*(0[xX][0-9a-fA-F]+|\d+|[A-Za-z_][A-Za-z0-9_]*|<<|>>|[-+*/()%|&])")


def eval_int_expr(expr: str, names: dict):
    """Evaluate a small C integer expression (literals with U/L suffixes, + - * / % << >> | &,
    parentheses, known names). Returns None for anything else; never calls eval()."""
    expr = re.sub(r"(?<=[0-9a-fA-F])[uUlL]+\b", "", expr.strip())
    tokens = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    try:
        value, rest = _parse_or(tokens, names)
    except (ValueError, KeyError, ZeroDivisionError, IndexError):
        return None
    return value if not rest else None


def _parse_or(t, n):
    v, t = _parse_shift(t, n)
    while t and t[0] in ("|", "&"):
        op = t[0]
        r, t = _parse_shift(t[1:], n)
        v = v | r if op == "|" else v & r
    return v, t


def _parse_shift(t, n):
    v, t = _parse_add(t, n)
    while t and t[0] in ("<<", ">>"):
        op = t[0]
        r, t = _parse_add(t[1:], n)
        v = v << r if op == "<<" else v >> r
    return v, t


def _parse_add(t, n):
    v, t = _parse_mul(t, n)
    while t and t[0] in ("+", "-"):
        op = t[0]
        r, t = _parse_mul(t[1:], n)
        v = v + r if op == "+" else v - r
    return v, t


def _parse_mul(t, n):
    v, t = _parse_atom(t, n)
    while t and t[0] in ("*", "/", "%"):
        op = t[0]
        r, t = _parse_atom(t[1:], n)
        v = v * r if op == "*" else (v // r if op == "/" else v % r)
    return v, t


def _parse_atom(t, n):
    tok = t[0]
    if tok == "(":
        v, rest = _parse_or(t[1:], n)
        if not rest or rest[0] != ")":
            raise ValueError("unbalanced")
        return v, rest[1:]
    if tok == "-":
        v, rest = _parse_atom(t[1:], n)
        return -v, rest
    if tok[0].isdigit():
        return int(tok, 0), t[1:]
    return n[tok], t[1:]
