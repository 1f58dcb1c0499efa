"""Messages that point at the real cause (issue 25, items 16, 19-21): each case run for real, in the private
bpffs of the functional tests, and its exact text asserted."""
from __future__ import annotations

import os

import pytest

from lqos_testlib import run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

pytestmark = pytest.mark.usefixtures("tools")


def pin_hash(path, name="m"):
    fd = M.map_create("hash", 4, 8, 16, name=name)
    try:
        L.obj_pin(fd, path)
    finally:
        L.close(fd)


def test_a_maps_entry_through_a_symlinked_folder_is_refused_as_going_through_a_symlink(bpffs):
    os.makedirs(os.path.join(bpffs, "real"))
    pin_hash(os.path.join(bpffs, "real", "flows"), "flows")
    os.symlink("real", os.path.join(bpffs, "link"))
    result = run_module("pinned_maps", dict(pin_root=bpffs, maps=["link/flows"]))
    assert result["_rc"] == 0, result
    [pin] = [p for p in result["pins"] if p["name"] == "link/flows"]
    assert pin["status"] == "not_a_map" and pin["kind"] == "symlink", pin
    assert pin["reason"] == ("refused: the path goes through the symlink %s/link (-> real); symlinks are never "
                             "followed or touched. Name the real pin instead" % bpffs), pin
    assert os.path.exists(os.path.join(bpffs, "real", "flows"))


@pytest.mark.parametrize("root", ["/", "/usr", "/etc", "/proc", "/sys", "/sys/fs"])
def test_a_pin_root_that_is_a_system_folder_is_never_given_a_mount_over_it(root):
    result = run_module("pinned_maps", dict(pin_root=root))
    assert result["failed"], result
    assert result["msg"] == (
        "pin_root %s is not a bpffs mount (statfs magic is not BPF_FS_MAGIC). Fix: set pin_root to a bpffs mount "
        "point such as /sys/fs/bpf (mounted by systemd; else mkdir -p /sys/fs/bpf && mount -t bpf bpf "
        "/sys/fs/bpf). Never mount a bpffs over %s: it is a system folder and the mount would hide what it "
        "holds." % (root, root)), result
    assert "mount -t bpf bpf %s " % root not in result["msg"] + " "
    info = run_module("toolchain_info", dict(pin_root=root, fail_on_missing=True, ignore=["bpffs"]))
    assert info["failed"], info  # the role, which ignores bpffs to mount it, stops here instead
    assert info["msg"] == (
        "preflight found 1 problem(s) on this host:\n- pin_root: pin_root %s is not a bpffs and no place to mount "
        "one. Fix: set pin_root to a bpffs mount point such as /sys/fs/bpf (mounted by systemd; else mkdir -p "
        "/sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf). Never mount a bpffs over %s: it is a system folder and the "
        "mount would hide what it holds." % (root, root)), info


def test_a_pin_root_folder_that_holds_files_is_not_mounted_over_but_a_new_one_is(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    result = run_module("pinned_maps", dict(pin_root=str(busy)))
    assert result["msg"].endswith("Never mount a bpffs over %s: it is a folder that already holds files and the "
                                  "mount would hide what it holds." % busy), result
    fresh = tmp_path / "fresh"
    result = run_module("pinned_maps", dict(pin_root=str(fresh)))
    assert result["msg"] == ("pin_root %s does not exist. Fix: mount bpffs there: mkdir -p %s && mount -t bpf bpf "
                             "%s" % (fresh, fresh, fresh)), result


def test_map_entries_naming_a_folder_says_it_is_a_folder(bpffs):
    assert os.geteuid() == 0  # the old message said "permission denied ... run as root" to root
    os.makedirs(os.path.join(bpffs, "shaper"))
    result = run_module("map_entries", dict(pin_root=bpffs, map="shaper", entries=[{"key": 1, "value": 2}],
                                            approve=True))
    assert result["failed"], result
    assert result["msg"] == ("%s/shaper is a folder, not a pinned map. Fix: name the map pin itself in map (a path "
                             "relative to pin_root, e.g. shaper/<map name>)." % bpffs), result


def test_an_argument_list_too_long_names_the_step_the_size_and_the_limit(tmp_path):
    import yaml
    from lqos_testlib import REPO, copy_bpf
    crate = copy_bpf(tmp_path / "src")
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        spec = yaml.safe_load(fh)
    spec["flags"]["clang"] = spec["flags"]["clang"] + ["-DLQOS_FLAG_%06d=1" % i for i in range(200000)]
    spec_file = tmp_path / "huge.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    result = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=str(tmp_path / "out")))
    assert result["failed"], result
    limit = os.sysconf("SC_ARG_MAX")
    msg = result["msg"]
    assert msg.startswith("build step clang: the kernel refused to start clang: its %d arguments take "
                          % (len(spec["flags"]["clang"]) + 7)), msg
    assert "over the limit ARG_MAX of " in msg and "(%d bytes, getconf ARG_MAX) [E2BIG: Argument list too long]. " \
        % limit in msg, msg
    assert msg.endswith("Fix: shorten flags.clang in the spec (the limit counts every argument and the environment): "
                        "put -D definitions in a header the source includes, fold -I folders into fewer ones."), msg
    # No command dump: only Ansible's echo of the module's own arguments (shown at -vvv) holds the flags.
    shown = {k: v for k, v in result.items() if k != "invocation"}
    assert len(msg) < 1000 and "LQOS_FLAG_000001" not in repr(shown), len(repr(shown))


WRAPPER = """#!/bin/sh
# What Ubuntu's linux-tools-common wrapper prints when the running kernel's linux-tools package is missing.
echo "WARNING: bpftool not found for kernel 6.8.0-45" >&2
echo "" >&2
echo "  You may need to install the following packages for this specific kernel:" >&2
echo "    linux-tools-6.8.0-45-generic" >&2
exit 2
"""


def _wrapper_path(tmp_path):
    import shutil
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bpftool").write_text(WRAPPER)
    os.chmod(str(bindir / "bpftool"), 0o755)
    for tool in ("clang", "llc", "bindgen", "ar"):
        os.symlink(shutil.which(tool), str(bindir / tool))
    return str(bindir)


def _wrapper_fix():
    release = os.uname().release
    return ("install the package that provides bpftool for kernel %s: on Ubuntu linux-tools-%s (apt-get install "
            "linux-tools-$(uname -r)) or linux-tools-generic to follow the kernel; on Debian the bpftool package "
            "(apt-get install bpftool)" % (release, release))


def test_a_bpftool_wrapper_without_bpftool_for_this_kernel_is_named_with_the_package(tmp_path, bpffs):
    bindir = _wrapper_path(tmp_path)
    problem = ("bpftool at %s/bpftool is a distribution wrapper that found no bpftool for this kernel (6.8.0-45): "
               "bpftool not found for kernel 6.8.0-45" % bindir)
    # Ansible searches /usr/sbin after PATH, so the fake wrapper is first on PATH and found there.
    result = run_module("toolchain_info", dict(pin_root=bpffs), env={"PATH": bindir + ":/usr/bin:/bin"})
    assert result["_rc"] == 0, result
    [row] = [c for c in result["checks"] if c["name"] == "bpftool"]
    assert row["ok"] is False and row["message"] == problem, row
    assert row["fix"] == _wrapper_fix(), row
    assert "older than" not in row["message"]
    assert result["toolchain"]["bpftool"]["wrapper"] is True

    from lqos_testlib import copy_bpf
    crate = copy_bpf(tmp_path / "src")
    built = run_module("pipeline", dict(spec="reference", src=crate, dest=str(tmp_path / "out")),
                       env={"PATH": bindir + ":/usr/bin:/bin"})
    assert built["failed"], built
    assert built["msg"] == "build tool(s) that cannot run: %s. Fix: %s." % (problem, _wrapper_fix()), built["msg"]
    assert "llc" not in built["msg"]
    assert not os.path.exists(str(tmp_path / "out" / "builds")) or not os.listdir(str(tmp_path / "out" / "builds"))
