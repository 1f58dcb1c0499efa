"""Fuzzing the pipeline spec validator with generated malformed specs.

Each generated spec is the built-in ``reference`` spec with one fault: a value
of the wrong type at some key path, or an unknown key in some section. The
validator must answer every one with one ``LqosError`` that names exactly that
key path and a fix, never another exception. Free-form garbage specs must also
end in an ``LqosError`` (or validate), never a traceback.
"""
from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as _fh:
    BASE = yaml.safe_load(_fh)
# Mappings whose keys are user names (programs, variables, tools), not a fixed schema.
OPEN_MAPPINGS = {("expect", "programs"), ("programs",), ("attach", "rodata"), ("attach", "data"), ("toolchain", "minimum_versions")}
# Variables: their values are integers or special words.
VARIABLES = {("attach", "rodata"), ("attach", "data")}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def key_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += "[%d]" % part if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def nodes(value, path=()):
    """Every (path, value) below the root of a spec tree."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + (k,), v
            yield from nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield path + (i,), v
            yield from nodes(v, path + (i,))


def mappings(value, path=()):
    if isinstance(value, dict):
        yield path
        for k, v in value.items():
            yield from mappings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from mappings(v, path + (i,))


def put(tree, path, value):
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


ALL_NODES = [p for p, _value in nodes(BASE)]
ALL_MAPPINGS = [p for p in mappings(BASE) if p not in OPEN_MAPPINGS]

SCALARS = {
    "int": st.integers(min_value=-2 ** 70, max_value=2 ** 70),
    "bool": st.booleans(),
    "float": st.floats(allow_nan=False),
    "str": st.text(min_size=1, max_size=8).filter(lambda s: s not in ("possible_cpus", "ifindex")),
    "list": st.lists(st.integers(), min_size=1, max_size=3),
    "dict": st.dictionaries(st.text(max_size=4), st.integers(), min_size=1, max_size=2),
}


def kind_of(value) -> str:
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list), ("dict", dict)):
        if isinstance(value, typ):
            return name
    raise AssertionError(value)


def wrong_kinds(path: tuple, value) -> list:
    """Kinds of value that are never valid at ``path`` (whose valid value is ``value``)."""
    kind = kind_of(value)
    bad = [k for k in SCALARS if k != kind]
    if kind == "str" and (isinstance(path[-1], int) or path[:-1] in VARIABLES):
        bad.remove("int")  # names and flags in lists, and variables, may be written as numbers
    return bad


def named(path: tuple, value) -> set:
    """The key paths an error about ``value`` at ``path`` may name."""
    names = {key_path(path)}
    if isinstance(path[-1], int) and not isinstance(BASE_AT[path], dict):
        names.add(key_path(path[:-1]))  # an item of a list of names/flags: the list is named
    if len(path) == 3 and path[0] == "mirrors" and not value:
        names.add(key_path(path[:-1]))  # an empty `rust`/`c`: "must have both"
    return names


BASE_AT = dict(nodes(BASE))


@st.composite
def wrong_type_specs(draw):
    path = draw(st.sampled_from(ALL_NODES))
    kind = draw(st.sampled_from(wrong_kinds(path, BASE_AT[path])))
    value = draw(SCALARS[kind])
    spec = copy.deepcopy(BASE)
    put(spec, path, value)
    return path, value, spec


_KNOWN = {}


def known_keys(path) -> set:
    """The keys the validator knows at ``path`` (a key the base spec leaves out, such as ``counter``, is known too):
    read from its own message for a key no schema has."""
    if path not in _KNOWN:
        spec = copy.deepcopy(BASE)
        target = spec
        for part in path:
            target = target[part]
        target["zz_no_such_key"] = 1
        try:
            validate_spec(spec)
            _KNOWN[path] = set()
        except LqosError as e:
            text = str(e)
            _KNOWN[path] = set(text.split("known keys under", 1)[1].split(":", 1)[1].split(".")[0]
                               .replace(",", " ").split()) if "known keys under" in text else set()
    return _KNOWN[path]


@st.composite
def unknown_key_specs(draw):
    path = draw(st.sampled_from(ALL_MAPPINGS))
    node = BASE
    for part in path:
        node = node[part]
    known = known_keys(path)
    key = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
               .filter(lambda k: k not in node and k not in known))
    spec = copy.deepcopy(BASE)
    target = spec
    for part in path:
        target = target[part]
    target[key] = draw(st.one_of(*SCALARS.values()))
    return path + (key,), spec


def test_the_base_spec_is_valid():
    assert validate_spec(copy.deepcopy(BASE))["name"] == "reference"


def _error(spec) -> str:
    with pytest.raises(LqosError) as err:
        validate_spec(spec)
    text = str(err.value)
    assert text.startswith("pipeline spec"), text
    assert " Fix: " in text, text
    return text


@SETTINGS
@given(wrong_type_specs())
def test_a_wrong_type_anywhere_names_its_key(case):
    path, value, spec = case
    text = _error(spec)
    assert any("`%s`" % name in text for name in named(path, value)), (key_path(path), text)


@SETTINGS
@given(unknown_key_specs())
def test_an_unknown_key_anywhere_names_itself(case):
    path, spec = case
    text = _error(spec)
    if len(path) == 1:
        assert "key(s) `%s` are not known" % path[0] in text, text
    else:
        assert "`%s` is not a known key" % key_path(path) in text, text


# Everything yaml.safe_load can return: also dates, timestamps, !!binary bytes, NaN.
YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.dates() | st.datetimes()
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers()), children, max_size=3),
    max_leaves=12)


@st.composite
def garbled_specs(draw):
    spec = copy.deepcopy(BASE)
    for _fault in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(ALL_NODES))
        try:
            put(spec, path, draw(YAMLISH))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier replacement removed this path
    return spec


@SETTINGS
@given(garbled_specs())
def test_garbage_never_escapes_as_a_traceback(spec):
    try:
        validate_spec(spec)
    except LqosError as exc:
        assert str(exc).startswith("pipeline spec") and " Fix: " in str(exc)


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(BASE)) | st.text(max_size=5), YAMLISH, max_size=6))
def test_free_form_mappings_never_escape_as_a_traceback(raw):
    try:
        validate_spec(raw)
    except LqosError as exc:
        assert str(exc).startswith("pipeline spec") and " Fix: " in str(exc)
