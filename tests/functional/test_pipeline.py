"""lqos.bpf.pipeline on the real toolchain: the reference crate, broken copies of it,
and the guarantees (idempotence, atomic outputs, lock, rollback)."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lqos_testlib import copy_bpf, edit, libreqos_crate, run_module, sh, run_pipeline

pytestmark = pytest.mark.usefixtures("tools")


@pytest.fixture
def crate(tmp_path):
    """A private copy of bpf/ (shaper_sys + its sibling shaper_utils) to break at will."""
    return copy_bpf(tmp_path)


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "out")


build = run_pipeline


def snapshot(dest):
    """Where current points and the hash of every file in it."""
    current = os.path.realpath(os.path.join(dest, "current"))
    files = {}
    for name in sorted(os.listdir(current)):
        with open(os.path.join(current, name), "rb") as fh:
            files[name] = fh.read()
    return current, files


def shim_dir(tmp_path, log, overrides=None):
    """A PATH folder whose tools log each call and then run the real tool (or an override)."""
    bindir = tmp_path / "shims"
    bindir.mkdir()
    for tool in ("clang", "llc", "bpftool", "bindgen", "ar"):
        real = shutil.which(tool)
        body = (overrides or {}).get(tool, 'exec %s "$@"' % real)
        script = bindir / tool
        script.write_text('#!/bin/sh\necho "%s $*" >> %s\n%s\n' % (tool, log, body))
        script.chmod(0o755)
    return str(bindir)


def test_cold_build_publishes_every_output(crate, dest):
    result = build(crate, dest)
    assert result["_rc"] == 0, result
    assert result["changed"] is True
    assert result["rebuild_reasons"] == ["no previous build in %s" % dest]
    spec = __import__("ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader",
                      fromlist=["x"]).resolve_spec_option("reference")
    assert sorted(result["programs"]) == sorted(spec["expect"]["programs"])
    # The pinned maps the spec expects, and the xmit kprobe's own per-CPU counter (not pinned).
    assert sorted(result["maps"]) == sorted(spec["expect"]["maps"] + ["xmit_calls"])
    for key, name in spec["outputs"].items():
        path = os.path.join(dest, "current", name)
        assert os.path.getsize(path) > 0, key
        assert result["outputs"][key]["path"] == os.path.join(result["build_dir"], name)
    # The object is a real BPF ELF, the archive a real ar archive holding the wrapper object.
    with open(os.path.join(dest, "current", spec["outputs"]["object"]), "rb") as fh:
        assert fh.read(4) == b"\x7fELF"
    members = sh("ar", "t", os.path.join(dest, "current", spec["outputs"]["archive"])).stdout.split()
    assert members == [spec["outputs"]["wrapper_object"]]
    with open(os.path.join(dest, "current", spec["outputs"]["bindings"])) as fh:
        assert "pub fn " in fh.read()
    assert set(result["timings"]) >= {"clang", "llc", "skeleton", "wrapper", "ar", "bindgen", "total"}
    assert result["previous_build_dir"] is None


def test_unchanged_tree_runs_no_tool(crate, dest, tmp_path):
    log = str(tmp_path / "calls.log")
    env = {"PATH": shim_dir(tmp_path, log) + ":" + os.environ["PATH"]}
    first = build(crate, dest, env=env)
    assert first["changed"] is True
    with open(log) as fh:
        calls = fh.read().split("\n")
    assert any(c.startswith("clang -S") for c in calls)
    os.unlink(log)
    second = build(crate, dest, env=env)
    assert second["_rc"] == 0, second
    assert second["changed"] is False
    assert second["rebuild_reasons"] == []
    assert not os.path.exists(log), "a tool ran on an unchanged tree: " + open(log).read()
    assert second["build_dir"] == first["build_dir"]


def test_synced_from_builds_only_sources_of_that_archive(crate, dest, tmp_path):
    stamp = str(tmp_path / ".lqos-bpf-src.sha1")
    synced = {"stamp": stamp, "sha1": "a" * 40}
    for text in (None, "b" * 40 + "\n"):   # no stamp yet, then another archive's
        if text is not None:
            with open(stamp, "w") as fh:
                fh.write(text)
        stale = run_pipeline(crate, dest, synced_from=synced)
        assert stale["_rc"] == 0 and stale["changed"] is False and stale["sources_current"] is False, stale
        assert "nothing was built" in stale["msg"] and not os.path.exists(dest)
    with open(stamp, "w") as fh:
        fh.write("a" * 40 + "\n")
    built = run_pipeline(crate, dest, synced_from=synced)
    assert built["_rc"] == 0 and built["changed"] is True and built["sources_current"] is True, built
    assert os.path.isfile(built["outputs"]["object"]["path"])
    again = run_pipeline(crate, dest, synced_from=synced)
    assert again["changed"] is False and again["sources_current"] is True and again["build_dir"] == built["build_dir"]


def test_check_mode_reports_changed_input_and_builds_nothing(crate, dest):
    build(crate, dest)
    before = snapshot(dest)
    header = os.path.join(crate, "src", "bpf", "common", "maximums.h")
    with open(header, "a") as fh:
        fh.write("/* touched */\n")
    result = build(crate, dest, check_mode=True, diff=True)
    assert result["changed"] is True
    assert result["rebuild_reasons"] == ["input src/bpf/common/maximums.h: changed"]
    assert result["msg"] == "would rebuild: input src/bpf/common/maximums.h: changed"
    assert result["diff"]["before"].startswith("src/bpf/common/maximums.h ")
    assert result["diff"]["after"].startswith("src/bpf/common/maximums.h ")
    assert result["diff"]["before"] != result["diff"]["after"]
    assert snapshot(dest) == before


def test_check_mode_on_a_fresh_host_creates_nothing(crate, dest):
    result = build(crate, dest, check_mode=True)
    assert result["changed"] is True
    assert result["rebuild_reasons"] == ["no previous build in %s" % dest]
    assert not os.path.exists(dest)


def test_rebuild_keeps_previous_for_rollback(crate, dest):
    first = build(crate, dest)
    edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v2 */\n#define")
    second = build(crate, dest)
    assert second["changed"] is True
    assert second["build_dir"] != first["build_dir"]
    assert second["previous_build_dir"] == first["build_dir"]
    back = run_module("pipeline", dict(spec="reference", src=crate, dest=dest, state="rolled_back"))
    assert back["changed"] is True
    assert os.path.realpath(os.path.join(dest, "current")) == first["build_dir"]
    assert os.path.realpath(os.path.join(dest, "failed")) == second["build_dir"]
    again = run_module("pipeline", dict(spec="reference", src=crate, dest=dest, state="rolled_back"))
    assert again["changed"] is False
    assert again["msg"] == "no previous build to roll back to in %s" % dest


@pytest.mark.parametrize("case", ["syntax", "werror", "missing_header"])
def test_compile_errors_are_fatal_and_keep_previous_outputs(crate, dest, case):
    build(crate, dest)
    before = snapshot(dest)
    kern = os.path.join(crate, "src", "bpf", "shaper_kern.c")
    with open(kern) as fh:
        lines = fh.read().split("\n")
    # Insert the fault after the includes, at a known line.
    at = max(i for i, line in enumerate(lines) if line.startswith("#include")) + 1
    fault = {
        "syntax": "int broken(void) { return 1 }",
        "werror": "static int unused_fn(void) { int x; return 0; }",
        "missing_header": '#include "common/no_such_header.h"',
    }[case]
    lines.insert(at, fault)
    with open(kern, "w") as fh:
        fh.write("\n".join(lines))
    line_no = at + 1
    result = build(crate, dest)
    assert result["_rc"] != 0 and result["failed"] is True
    msg = result["msg"]
    assert msg.startswith("build step clang failed: clang ")
    expected = {
        "syntax": "shaper_kern.c:%d:28: error: expected ';' after return statement" % line_no,
        "werror": "shaper_kern.c:%d:34: error: unused variable 'x' [-Werror,-Wunused-variable]" % line_no,
        "missing_header": "shaper_kern.c:%d:10: fatal error: 'common/no_such_header.h' file not found" % line_no,
    }[case]
    assert expected in msg
    assert "Fix: fix the C error at the file:line above (warnings are errors: -Werror)." in msg
    assert result["step"] == "clang"
    assert result["cmd"].startswith(shutil.which("clang").rsplit("/", 1)[0]) or "clang" in result["cmd"]
    assert "-Werror" in result["cmd"] and "-emit-llvm" in result["cmd"]
    assert "Traceback" not in msg
    assert snapshot(dest) == before
    assert not [n for n in os.listdir(dest) if n.startswith(".staging-")]


def test_tool_missing_from_path(crate, dest, tmp_path):
    bindir = tmp_path / "partial"
    bindir.mkdir()
    for tool in ("clang", "llc", "bpftool", "ar"):
        os.symlink(shutil.which(tool), bindir / tool)
    result = build(crate, dest, env={"PATH": str(bindir)})
    assert result["failed"] is True
    assert result["msg"] == ("build tool(s) not found in PATH: bindgen. Fix: apt-get install bindgen "
                             "(lqos.bpf.toolchain_info lists every miss).")


def test_preflight_stops_before_the_build_with_its_own_message(crate, dest, tmp_path):
    # The build role's one call: the toolchain preflight first. A host without bindgen stops before anything is
    # read or built, with the preflight's summary (not the build's own tool check).
    bindir = tmp_path / "partial"
    bindir.mkdir()
    for tool in ("clang", "llc", "bpftool", "ar"):
        os.symlink(shutil.which(tool), bindir / tool)
    plain = tmp_path / "notbpf"
    plain.mkdir()
    result = build(crate, dest, preflight=dict(pin_root=str(plain), ignore=["bpffs"]), env={"PATH": str(bindir)})
    assert result["failed"] is True
    assert result["msg"] == ("preflight found 1 problem(s) on this host:\n"
                             "- bindgen: bindgen not found in PATH. Fix: apt-get install bindgen")
    assert not os.path.exists(dest)


def test_preflight_reports_an_ignored_bpffs_and_builds(crate, dest, tmp_path):
    plain = tmp_path / "notbpf"
    plain.mkdir()
    result = build(crate, dest, preflight=dict(pin_root=str(plain), ignore=["bpffs"]))
    assert result["_rc"] == 0, result
    assert result["changed"] is True and os.path.isfile(result["outputs"]["object"]["path"])
    assert result["preflight"]["kernel"]["bpffs"] == {"pin_root": str(plain), "mounted": False, "mountable": True}
    assert [p["name"] for p in result["preflight"]["problems"]] == ["bpffs"]
    # Not ignored, the same bpffs stops the run before the build.
    again = build(crate, str(tmp_path / "out2"), preflight=dict(pin_root=str(plain)))
    assert again["failed"] is True
    assert again["msg"] == ("preflight found 1 problem(s) on this host:\n- bpffs: bpffs not mounted at %s (the "
                            "kernel supports it). Fix: mkdir -p %s && mount -t bpf bpf %s" % (plain, plain, plain))
    assert not os.path.exists(str(tmp_path / "out2"))


def test_unwritable_output_folder(crate, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    sh("mount", "--bind", str(ro), str(ro))
    sh("mount", "-o", "remount,bind,ro", str(ro))
    try:
        result = build(crate, str(ro / "out"))
    finally:
        sh("umount", str(ro))
    assert result["failed"] is True
    assert result["msg"] == ("cannot write the build folder %s/out: Read-only file system. Fix: choose a "
                             "writable `dest` or fix its permissions/mount." % ro)


@pytest.mark.parametrize("text,expected", [
    ("name: broken\nsources: [\n", "is not valid YAML at line 3 column 1"),
    ("name: broken\nsorces: {}\n", "pipeline spec 'broken': key(s) `sorces` are not known. Fix: remove them"),
    ("name: broken\noutputs: {}\n", "pipeline spec 'broken': `sources` is missing. Fix: add the `sources:` mapping"),
    ("name: broken\nsources: {kern: k.c}\noutputs: {object: a/b.o}\n",
     "pipeline spec 'broken': `outputs.object` must be a plain file name"),
])
def test_malformed_spec(crate, dest, tmp_path, text, expected):
    spec = tmp_path / "spec.yml"
    spec.write_text(text)
    from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
    with pytest.raises(LqosError) as err:
        run_module("pipeline", dict(spec=str(spec), src=crate, dest=dest))
    assert expected in str(err.value)
    assert not os.path.exists(dest)


def test_malformed_spec_mapping_fails_in_the_module(crate, dest):
    result = run_module("pipeline", dict(spec={"name": "x", "sources": {"kern": "/abs.c"}}, src=crate, dest=dest),
                        resolve_spec=False)
    assert result["failed"] is True
    assert result["msg"] == ("pipeline spec 'x': `sources.kern` must be relative, got '/abs.c'. Fix: give it "
                             "relative to the crate root (the module's `src`)")


def test_corrupt_object_given_to_skeleton_step(crate, dest, tmp_path):
    build(crate, dest)
    before = snapshot(dest)
    edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v3 */\n#define")
    log = str(tmp_path / "calls.log")
    # llc "succeeds" but writes garbage where the BPF object should be.
    llc = 'out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n' \
          'printf "not an ELF object" > "$out"'
    env = {"PATH": shim_dir(tmp_path, log, {"llc": llc}) + ":" + os.environ["PATH"]}
    result = build(crate, dest, env=env)
    assert result["failed"] is True
    assert result["msg"].startswith("build step skeleton failed: bpftool exited with ")
    assert "failed to open BPF object file" in result["msg"] or "Error" in result["msg"]
    assert result["msg"].endswith("Fix: the BPF object is not valid for bpftool; check the llc step and the object file.")
    assert snapshot(dest) == before


def test_lock_refuses_a_concurrent_build(crate, dest):
    os.makedirs(dest)
    fd = os.open(os.path.join(dest, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4242", 0)
    try:
        result = build(crate, dest, lock_timeout=1)
    finally:
        os.close(fd)
    assert result["failed"] is True
    assert result["msg"] == ("another build of %s is running (pid 4242 holds %s/.lock) and did not finish within "
                             "1s. Fix: wait for it, or raise lock_timeout." % (dest, dest))
    assert not os.path.exists(os.path.join(dest, "current"))


def test_killed_build_leaves_previous_outputs_usable(crate, dest, tmp_path):
    from lqos_testlib import module_args_file
    build(crate, dest)
    before = snapshot(dest)
    edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v4 */\n#define")
    log = str(tmp_path / "calls.log")
    marker = str(tmp_path / "bindgen-started")
    env = dict(os.environ)
    # Hang in the real bindgen step (not in the version probe) until the test kills the build.
    hang = 'case "$1" in --version) exec %s "$@";; esac\ntouch %s; sleep 30' % (shutil.which("bindgen"), marker)
    env["PATH"] = shim_dir(tmp_path, log, {"bindgen": hang}) + ":" + env["PATH"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    argfile = module_args_file("pipeline", dict(spec="reference", src=crate, dest=dest))
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pipeline", argfile],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), "the build never reached bindgen"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshot(dest) == before
    assert [n for n in os.listdir(dest) if n.startswith(".staging-")], "the killed build left no staging folder"
    result = build(crate, dest)
    assert result["changed"] is True
    assert not [n for n in os.listdir(dest) if n.startswith(".staging-")]


def test_libreqos_checkout_builds_with_the_builtin_spec(tmp_path):
    dest = str(tmp_path / "out")
    first = run_module("pipeline", dict(spec="libreqos", src=libreqos_crate(), dest=dest))
    assert first["_rc"] == 0, first.get("msg")
    # Any release: the programs and maps are the object's, the flags build.rs's own.
    assert {"xdp_prog", "tc_iphash_to_cpu", "bifrost"} <= set(first["programs"])
    assert {"map_ip_to_cpu_and_tc", "map_traffic", "cpu_map"} <= set(first["maps"])
    assert first["flags_source"].startswith("build.rs:")
    assert os.path.basename(first["outputs"]["archive"]["path"]) == "libshrinkwrap.a"
    second = run_module("pipeline", dict(spec="libreqos", src=libreqos_crate(), dest=dest))
    assert second["changed"] is False


def test_header_outside_the_crate_rebuilds_and_is_named(crate, dest, tmp_path):
    """A header the compile reaches through an -I flag (like linux/bpf.h from linux-libc-dev) is recorded
    from clang's and bindgen's dependency output: changing it rebuilds, with that file as the reason."""
    import yaml
    from lqos_testlib import REPO
    extinc = tmp_path / "extinc"
    extinc.mkdir()
    header = extinc / "lqos_ext.h"
    header.write_text("#define LQOS_EXT_VERSION 1\n")
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        spec = yaml.safe_load(fh)
    spec["flags"]["clang"] = spec["flags"]["clang"] + ["-I", str(extinc)]
    spec_file = tmp_path / "ext.yml"
    spec_file.write_text(yaml.safe_dump(spec))
    edit(os.path.join(crate, "src", "bpf", "shaper_kern.c"), "#include <linux/types.h>",
         "#include <lqos_ext.h>\n#include <linux/types.h>")

    first = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=dest))
    assert first["_rc"] == 0, first
    with open(os.path.join(first["build_dir"], "manifest.json")) as fh:
        deps = __import__("json").load(fh)["deps"]
    # The system headers of linux-libc-dev and libbpf-dev are recorded too, and nothing of the crate or the build.
    assert str(header) in deps
    assert "/usr/include/linux/bpf.h" in deps and "/usr/include/bpf/bpf_helpers.h" in deps
    assert not [p for p in deps if p.startswith((crate, first["build_dir"]))]
    assert not [n for n in os.listdir(first["build_dir"]) if n.endswith(".d")]

    again = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=dest))
    assert (again["changed"], again["rebuild_reasons"]) == (False, [])

    header.write_text("#define LQOS_EXT_VERSION 2\n")
    reason = "dependency %s (read by the compile, outside the crate): changed" % header
    plan = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=dest), check_mode=True)
    assert (plan["changed"], plan["rebuild_reasons"]) == (True, [reason])
    rebuilt = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=dest))
    assert rebuilt["_rc"] == 0, rebuilt
    assert (rebuilt["changed"], rebuilt["rebuild_reasons"]) == (True, [reason])
    assert rebuilt["build_dir"] != first["build_dir"]
    assert rebuilt["previous_build_dir"] == first["build_dir"]
    third = run_module("pipeline", dict(spec=str(spec_file), src=crate, dest=dest))
    assert (third["changed"], third["rebuild_reasons"]) == (False, [])


def test_parse_depfile_joins_continuations_and_escaped_spaces():
    from ansible_collections.lqos.bpf.plugins.module_utils._build.pipeline import parse_depfile
    text = "out/k.ll: k.c /usr/include/linux/bpf.h \\\n  common/a\\ b.h \\\n  /x/$$y.h\n"
    assert parse_depfile(text, "/crate/src/bpf") == [
        "/crate/src/bpf/k.c", "/usr/include/linux/bpf.h", "/crate/src/bpf/common/a b.h", "/x/$y.h"]
