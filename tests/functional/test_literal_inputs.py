"""Inputs taken as written (issue 25, items 10-15 where the kernel or the toolchain is involved): build flags
reach the tools literally, without the shell-style expansion AnsibleModule.run_command does by default."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from lqos_testlib import REPO, copy_bpf, edit, run_module

pytestmark = pytest.mark.usefixtures("tools")

LITERAL_FLAGS = ["-DLQOS_D$HOME=1", "-DLQOS_B=${HOME}", "-DLQOS_T=~/x"]


def test_build_flags_reach_clang_literally(tmp_path):
    """-DX$HOME, ${HOME} and ~/ reach clang as written (as cargo's build.rs passes them): the macro named
    LQOS_D$HOME is defined in the compile, clang's argv holds the three flags unchanged, and the manifest and
    the result show the same."""
    crate = copy_bpf(tmp_path)
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        spec = yaml.safe_load(fh)
    spec["flags"]["clang"] = spec["flags"]["clang"] + LITERAL_FLAGS
    spec_file = tmp_path / "literal.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    edit(os.path.join(crate, "src", "bpf", "shaper_kern.c"), "#include <linux/types.h>",
         '#ifndef LQOS_D$HOME\n#error "-DLQOS_D$HOME=1 did not reach clang as written"\n#endif\n'
         "#include <linux/types.h>")
    log = tmp_path / "argv.log"
    shims = tmp_path / "shims"
    shims.mkdir()
    import shutil
    (shims / "clang").write_text("#!/bin/sh\nprintf '%%s\\n' \"$@\" >> %s\nexec %s \"$@\"\n"
                                 % (log, shutil.which("clang")))
    (shims / "clang").chmod(0o755)
    env = {"PATH": "%s:%s" % (shims, os.environ["PATH"]), "HOME": str(tmp_path / "home")}
    result = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=str(tmp_path / "out")), env=env)
    assert result["_rc"] == 0, result.get("msg")
    argv = log.read_text().split("\n")
    for flag in LITERAL_FLAGS:
        assert flag in argv, (flag, [a for a in argv if a.startswith("-DLQOS")])
    assert not [a for a in argv if str(tmp_path / "home") in a]
    assert result["flags"]["clang"][-3:] == LITERAL_FLAGS
    with open(os.path.join(result["build_dir"], "manifest.json")) as fh:
        assert json.load(fh)["manifest"]["flags"]["clang"][-3:] == LITERAL_FLAGS
