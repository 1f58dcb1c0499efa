"""Unit tests for reading the chain's flags from a crate's build.rs (module_utils/_build/buildrs.py)."""
from __future__ import annotations

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._build.buildrs import apply_build_rs_flags, build_rs_flags
from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._spec import validate_spec

BUILD_RS = '''fn main() {
    // clang -S ... (a comment with Command::new("llc") must not count)
    let r = Command::new("clang")
        .current_dir("src/bpf")
        .args(["-S", "-target", "bpf", "-emit-llvm", "-c", "-g", "-O2", "-o", &target, "kern.c"])
        .output();
    let l = Command::new("llc").args(["-march=bpf", "-filetype=obj", "-o", &obj, &ir]).output();
    let w = Command::new("clang")
        .args(["-c", "wrapper.c", &format!("-I{}", out), "-DX=1", "-o", &lib])
        .output();
}
'''


def spec(**derive):
    return validate_spec({"name": "t", "sources": {"kern": "kern.c"}, "outputs": {}, "derive": derive})


def test_flags_as_build_rs_passes_them(tmp_path):
    (tmp_path / "build.rs").write_text(BUILD_RS)
    assert build_rs_flags(str(tmp_path), spec(flags=True)) == {
        "clang": ["-S", "-target", "bpf", "-emit-llvm", "-c", "-g", "-O2"],
        "llc": ["-march=bpf", "-filetype=obj"], "wrapper": ["-DX=1"], "source": "build.rs:5,7,9"}


def test_apply_only_with_derive_flags(tmp_path):
    (tmp_path / "build.rs").write_text(BUILD_RS)
    off = apply_build_rs_flags(spec(), str(tmp_path))
    assert off["flags_source"] == "spec" and "-c" not in off["flags"]["clang"]
    on = apply_build_rs_flags(spec(flags=True), str(tmp_path))
    assert on["flags_source"] == "build.rs:5,7,9" and on["flags"]["llc"] == ["-march=bpf", "-filetype=obj"]


def test_unreadable_steps_are_named(tmp_path):
    (tmp_path / "build.rs").write_text(BUILD_RS.replace('Command::new("llc").args', 'Command::new(LLC).args'))
    with pytest.raises(LqosError) as exc:
        build_rs_flags(str(tmp_path), spec(flags=True))
    assert str(exc.value) == (
        "spec 't' derives its flags from build.rs, but %s/build.rs has no Command::new(\"llc\") with .args([...]): "
        "this build.rs spells its steps in a way the derivation does not understand. Fix: set derive.flags: false "
        "in the spec and give flags.clang/llc/wrapper as this build.rs passes them." % tmp_path)


def test_missing_build_rs(tmp_path):
    with pytest.raises(LqosError, match=r"derives its flags from build.rs, but .*/build.rs cannot be read"):
        build_rs_flags(str(tmp_path), spec(flags=True))


def test_derive_key_is_validated():
    with pytest.raises(LqosError, match=r"`derive.flags` must be true or false, got 'yes'"):
        spec(flags="yes")
    with pytest.raises(LqosError, match=r"`derive.pairs` is not a known key"):
        spec(pairs=True)
    assert spec()["derive"] == {"mirrors": True, "constants": True, "calls": True, "flags": False}
