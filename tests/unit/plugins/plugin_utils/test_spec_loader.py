"""Reading a spec file on the controller: every failure names the file."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import load_spec_file, resolve_spec_option


def test_a_byte_that_is_not_utf8_names_the_file_line_and_byte(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_bytes(b"name: broken\n# caf\xff\nsources: {kern: k.c}\n")
    with pytest.raises(LqosError) as err:
        load_spec_file(str(path))
    assert str(err.value) == ("pipeline spec %s is not UTF-8 text: byte 0xff at line 2 (offset 18) is not valid "
                              "UTF-8. Fix: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)." % path)


def test_a_control_character_is_a_yaml_error_naming_the_file(tmp_path):
    path = tmp_path / "spec.yml"
    path.write_bytes(b"name: broken\x07\n")
    with pytest.raises(LqosError) as err:
        resolve_spec_option(str(path))
    assert str(err.value).startswith("pipeline spec %s is not valid YAML" % path)
    assert "special characters are not allowed" in str(err.value)
    assert str(err.value).endswith("Fix: fix the YAML syntax there.")


def test_a_folder_given_as_spec(tmp_path):
    with pytest.raises(LqosError) as err:
        load_spec_file(str(tmp_path))
    assert str(err.value).startswith("cannot read pipeline spec %s: Is a directory. Fix: check the path;" % tmp_path)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys; a spec must not (issue 25, item 11)."""
    with open(_builtin("reference")) as fh:
        text = fh.read()
    path = tmp_path / "twice.yml"
    path.write_text("name: first\n" + text)
    with pytest.raises(LqosError) as err:
        load_spec_file(str(path))
    second = 1 + text.split("\n").index([line for line in text.split("\n") if line.startswith("name:")][0]) + 1
    assert str(err.value) == ("pipeline spec %s has a duplicate key: key 'name' is given twice, at line 1 and at "
                              "line %d (YAML would keep only the last one). Fix: give each key once; remove or "
                              "rename the other one." % (path, second))


def test_a_nested_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "nested.yml"
    path.write_text("name: x\nflags:\n  clang: [-O2]\n  llc: []\n  clang: [-O1]\n")
    with pytest.raises(LqosError) as err:
        load_spec_file(str(path))
    assert "key 'clang' is given twice, at line 3 and at line 5" in str(err.value)


def _builtin(name):
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import BUILTIN_DIR
    return __import__("os").path.join(BUILTIN_DIR, name + ".yml")
