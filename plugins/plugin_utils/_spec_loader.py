# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: controller-side helper of the lqos.bpf action plugins, not a public API.
"""Turn a module's ``spec`` option into a validated mapping on the controller.

Targets stay light (no PyYAML needed there): the YAML is read here and the
module receives plain data.

May import: module_utils._common, module_utils._spec."""

from __future__ import annotations

import os

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILTIN_DIR = os.path.join(COLLECTION_ROOT, "bpf", "specs")


def builtin_specs() -> list:
    if not os.path.isdir(BUILTIN_DIR):
        return []
    return sorted(os.path.splitext(f)[0] for f in os.listdir(BUILTIN_DIR) if f.endswith(".yml"))


def _unique_key_loader():
    """(loader class, error class): a PyYAML SafeLoader that refuses a mapping holding the same key twice
    (plain PyYAML keeps the last one silently), and the error it raises (a ConstructorError whose
    ``problem`` names the key and both 1-based lines)."""
    import yaml

    class DuplicateKey(yaml.constructor.ConstructorError):
        pass

    class UniqueKeyLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = {}
                for key_node, _value in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: SafeLoader refuses it itself
                        continue
                    if first is not key_node:
                        raise DuplicateKey(
                            None, None, "key %r is given twice, at line %d and at line %d"
                            % (key, first.start_mark.line + 1, key_node.start_mark.line + 1), key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader, DuplicateKey


def load_spec_file(path: str) -> dict:
    """Read, parse and validate one YAML spec file; every failure names ``path``."""
    import yaml  # the controller always has PyYAML (ansible-core depends on it)

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise LqosError("cannot read pipeline spec %s: %s." % (path, exc.strerror),
                        "check the path; built-in specs are: %s." % ", ".join(builtin_specs()))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LqosError("pipeline spec %s is not UTF-8 text: byte 0x%02x at line %d (offset %d) is not valid UTF-8."
                        % (path, data[exc.start], line, exc.start),
                        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).")
    loader, duplicate = _unique_key_loader()
    try:
        raw = yaml.load(text, Loader=loader)  # nosec B506: a SafeLoader subclass
    except duplicate as exc:
        raise LqosError("pipeline spec %s has a duplicate key: %s (YAML would keep only the last one)."
                        % (path, exc.problem), "give each key once; remove or rename the other one.")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise LqosError("pipeline spec %s is not valid YAML%s: %s." % (path, where, getattr(exc, "problem", None) or exc),
                        "fix the YAML syntax there.")
    return validate_spec(raw)


def resolve_spec_option(value, basedir: str | None = None) -> dict:
    """``value`` is a built-in name, a YAML path (relative to ``basedir``) or a mapping."""
    if isinstance(value, dict):
        return validate_spec(value)
    if not isinstance(value, str) or not value:
        raise LqosError("spec must be a built-in name, a YAML file path or a mapping, got %r." % (value,),
                        "use e.g. `spec: reference` or `spec: files/myspec.yml`.")
    if "/" not in value and not value.endswith((".yml", ".yaml")):
        path = os.path.join(BUILTIN_DIR, value + ".yml")
        if not os.path.isfile(path):
            raise LqosError("no built-in pipeline spec named %r." % value,
                            "use one of: %s, or give a path to a YAML spec." % ", ".join(builtin_specs()))
        return load_spec_file(path)
    path = os.path.expanduser(value)
    if not os.path.isabs(path) and basedir:
        path = os.path.join(basedir, path)
    return load_spec_file(path)
