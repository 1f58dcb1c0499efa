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
