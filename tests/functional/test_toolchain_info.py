"""lqos.bpf.toolchain_info against this machine's real toolchain and kernel."""
from __future__ import annotations

import os
import shutil

from lqos_testlib import REPO, run_module


def check(result, name):
    rows = [c for c in result["checks"] if c["name"] == name]
    assert len(rows) == 1, (name, result["checks"])
    return rows[0]


def test_complete_host_passes_on_a_bpffs(bpffs):
    result = run_module("toolchain_info", dict(pin_root=bpffs, fail_on_missing=True))
    assert result["_rc"] == 0, result
    assert result["changed"] is False
    assert result["ok"] is True and result["problems"] == []
    for tool in ("clang", "llc", "bpftool", "bindgen", "ar"):
        assert result["toolchain"][tool]["found"] is True
        assert result["toolchain"][tool]["meets_minimum"] is True
    assert result["libbpf"]["version"].startswith("1.")
    assert result["kernel"]["btf"] is True
    assert result["kernel"]["bpffs"] == {"pin_root": bpffs, "mounted": True, "mountable": True}
    assert result["kernel"]["possible_cpus"] == os.cpu_count() or result["kernel"]["possible_cpus"] >= 1
    assert check(result, "xdp")["ok"] and check(result, "tc")["ok"]


def test_bpffs_not_mounted_names_the_mount_command(tmp_path):
    plain = str(tmp_path / "notbpf")
    os.makedirs(plain)
    result = run_module("toolchain_info", dict(pin_root=plain))
    assert result["_rc"] == 0 and result["ok"] is False
    row = check(result, "bpffs")
    assert row["message"] == "bpffs not mounted at %s (the kernel supports it)" % plain
    assert row["fix"] == "mkdir -p %s && mount -t bpf bpf %s" % (plain, plain)


def test_fail_on_missing_gives_one_summary(tmp_path, bpffs):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("clang", "llc", "ar"):
        os.symlink(shutil.which(tool), bindir / tool)
    result = run_module("toolchain_info", dict(pin_root=bpffs, fail_on_missing=True),
                        env={"PATH": str(bindir)})
    assert result["failed"] is True
    # bpftool lives in /usr/sbin, which Ansible always searches; bindgen is in /usr/bin, left out of PATH.
    assert result["msg"] == ("preflight found 1 problem(s) on this host:\n"
                             "- bindgen: bindgen not found in PATH. Fix: apt-get install bindgen")


def test_ignore_keeps_a_named_problem_from_failing(tmp_path):
    plain = str(tmp_path / "notbpf")
    os.makedirs(plain)
    failed = run_module("toolchain_info", dict(pin_root=plain, fail_on_missing=True))
    assert failed["failed"] is True
    assert failed["msg"] == ("preflight found 1 problem(s) on this host:\n- bpffs: bpffs not mounted at %s (the "
                             "kernel supports it). Fix: mkdir -p %s && mount -t bpf bpf %s" % (plain, plain, plain))
    # The toolchain role mounts bpffs right after: the same miss, reported but not fatal.
    passed = run_module("toolchain_info", dict(pin_root=plain, fail_on_missing=True, ignore=["bpffs"]))
    assert passed["_rc"] == 0 and "failed" not in passed, passed
    assert passed["ok"] is False and [p["name"] for p in passed["problems"]] == ["bpffs"]
    assert passed["kernel"]["bpffs"]["mounted"] is False


def test_minimum_versions_are_enforced(bpffs):
    result = run_module("toolchain_info", dict(pin_root=bpffs, minimum_versions={"clang": "99"}))
    row = check(result, "clang")
    assert row["ok"] is False
    assert row["message"].startswith("clang 14") and row["message"].endswith("is older than 99")
    assert row["fix"] == "upgrade the clang package (or lower toolchain.minimum_versions.clang in the spec)"


def test_a_minimum_version_that_does_not_parse_is_an_error(bpffs):
    """clang: "abc" used to pass with meets_minimum: true (no digits compare as the empty tuple)."""
    result = run_module("toolchain_info", dict(pin_root=bpffs, minimum_versions={"clang": "abc", "llc": "14"}))
    assert result["failed"] is True and "checks" not in result
    assert result["msg"] == ("minimum version(s) that do not parse as a version: clang: 'abc' (minimum_versions). "
                             'Fix: give dot-separated numbers, e.g. clang: "14" or kernel: "5.10".')


def test_cpu_map_e2big_is_predicted(bpffs):
    src = os.path.join(REPO, "bpf", "shaper_sys")
    result = run_module("toolchain_info", dict(pin_root=bpffs, spec="reference", src=src))
    rows = [c for c in result["checks"] if c["name"].startswith("cpu-map:")]
    assert rows, result["checks"]
    possible = result["kernel"]["possible_cpus"]
    for row in rows:
        assert row["required"] is False
        if row["max_entries"] > possible:
            assert row["ok"] is False
            assert "a plain load fails with E2BIG" in row["message"]
            assert row["fix"].startswith("lqos.bpf.attach resizes it to %d before load" % possible)
            assert row in result["warnings_found"]
    assert result["ok"] is True
