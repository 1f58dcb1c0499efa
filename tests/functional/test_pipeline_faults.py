"""lqos.bpf.pipeline under faults, on the real toolchain: forced rebuilds while a
reader polls ``current``, kill -9 at every publishing step, a full disk, wrong
file types, a file name that is not UTF-8, check mode on an existing build
folder, and an internal error's traceback."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from lqos_testlib import copy_bpf, edit, module_args_file, run_module, sh, run_pipeline

pytestmark = pytest.mark.usefixtures("tools")
OBJECT = "shaper_kern.o"


@pytest.fixture
def crate(tmp_path):
    return copy_bpf(tmp_path)


@pytest.fixture
def dest(tmp_path):
    return str(tmp_path / "out")


build = run_pipeline


def sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def assert_current_is_complete(dest):
    """current points at a folder whose every output matches its manifest."""
    current = os.path.realpath(os.path.join(dest, "current"))
    with open(os.path.join(current, "manifest.json")) as fh:
        record = json.load(fh)
    for out in record["outputs"].values():
        assert sha(os.path.join(current, out["name"])) == out["sha256"], out["name"]
    return current


def tree(path):
    """Every entry under ``path`` (hidden ones too) with its type, size and mtime."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    st = os.stat(path)
    out["."] = (st.st_mode, st.st_mtime_ns)
    return out


# A reader in its own process: opens and hashes current/<object> in a tight loop until the stop file
# exists, then prints {"reads": n, "misses": [errors], "seen": [distinct sha256]}.
READER = r'''
import hashlib, json, os, sys
path, stop = sys.argv[1], sys.argv[2]
reads, misses, seen = 0, [], set()
while not os.path.exists(stop):
    try:
        with open(path, "rb") as fh:
            seen.add(hashlib.sha256(fh.read()).hexdigest())
        reads += 1
    except OSError as exc:
        misses.append(exc.strerror)
print(json.dumps({"reads": reads, "misses": misses, "seen": sorted(seen)}))
'''


def test_forced_builds_never_hide_the_current_object(crate, dest, tmp_path):
    first = build(crate, dest)
    assert first["_rc"] == 0, first
    objects = {first["outputs"]["object"]["sha256"]}
    stop = tmp_path / "stop-reader"
    reader = subprocess.Popen([sys.executable, "-c", READER, os.path.join(dest, "current", OBJECT), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        for _round in range(4):
            forced = build(crate, dest, force=True)
            assert forced["_rc"] == 0, forced
            assert forced["rebuild_reasons"] == ["forced rebuild (force=true)"]
            objects.add(forced["outputs"]["object"]["sha256"])
    finally:
        stop.write_text("")
        out, _err = reader.communicate()
    polled = json.loads(out)
    assert polled["misses"] == []
    assert polled["reads"] > 0 and set(polled["seen"]) <= objects
    # The build in use and the one kept for rollback are the only folders left.
    links = {os.path.realpath(os.path.join(dest, n)) for n in ("current", "previous")}
    assert {os.path.join(dest, "builds", n) for n in os.listdir(os.path.join(dest, "builds"))} == links
    assert len(links) == 2
    assert build(crate, dest)["changed"] is False


@pytest.mark.parametrize("step", ["staged", "renamed", "previous", "current", "pruned"])
@pytest.mark.parametrize("force", [True, False], ids=["forced", "changed-input"])
def test_kill_9_at_any_publishing_step_leaves_current_complete(crate, dest, step, force):
    first = build(crate, dest)
    if not force:
        edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v9 */\n#define")
    argfile = module_args_file("pipeline", dict(spec="reference", src=crate, dest=dest, force=force))
    env = dict(os.environ, LQOS_BPF_TEST_KILL_AT=step, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        proc = subprocess.run([sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules.pipeline", argfile],
                              env=env, capture_output=True, check=False)
    finally:
        os.unlink(argfile)
    assert proc.returncode == -9, proc
    current = assert_current_is_complete(dest)
    published = step in ("current", "pruned")
    assert (current == first["build_dir"]) is not published
    again = build(crate, dest)
    assert again["_rc"] == 0, again
    assert again["changed"] is (not force and not published)
    assert_current_is_complete(dest)
    assert not [n for n in os.listdir(dest) if n.startswith(".staging-")]
    links = {os.path.realpath(os.path.join(dest, n)) for n in ("current", "previous")}
    assert {os.path.join(dest, "builds", n) for n in os.listdir(os.path.join(dest, "builds"))} <= links


def test_a_file_name_that_is_not_utf8_fails_before_anything_is_published(crate, dest):
    build(crate, dest)
    before = tree(dest)
    bad = os.path.join(os.fsencode(crate), b"src/bpf/common/y\xfe.h")
    with open(bad, "wb") as fh:
        fh.write(b"/* latin-1 name */\n")
    for _attempt in range(2):
        result = build(crate, dest)
        assert result["failed"] is True
        assert result["msg"] == (
            "the crate holds a file whose name is not valid UTF-8: src/bpf/common/y\\xfe.h under %s; nothing was "
            "built. Fix: rename or remove it (its bytes are shown with \\x escapes); file names must be UTF-8."
            % crate)
        assert tree(dest) == before
    check = build(crate, dest, check_mode=True)
    assert check["failed"] is True and check["msg"].startswith("the crate holds a file whose name is not valid UTF-8")


def test_check_mode_on_an_existing_dest_writes_nothing(crate, dest):
    build(crate, dest)
    os.unlink(os.path.join(dest, ".lock"))
    with open(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "a") as fh:
        fh.write("/* touched */\n")
    before = tree(dest)
    result = build(crate, dest, check_mode=True)
    assert result["changed"] is True
    assert result["msg"] == "would rebuild: input src/bpf/common/maximums.h: changed"
    assert tree(dest) == before
    assert not os.path.exists(os.path.join(dest, ".lock"))


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_dest_that_is_a_file(crate, tmp_path, check_mode):
    dest = tmp_path / "out"
    dest.write_text("not a folder")
    result = build(crate, str(dest), check_mode=check_mode)
    assert result["failed"] is True
    assert result["msg"] == ("dest %s is a file, not a folder. Fix: give a folder for the builds (the default is "
                             "/var/lib/lqos-bpf/<spec name>) or move the file away." % dest)
    assert dest.read_text() == "not a folder"
    under = build(crate, str(dest / "sub"), check_mode=check_mode)
    assert under["msg"].startswith("dest %s/sub lies under %s, which is a file, not a folder." % (dest, dest))
    dangling = tmp_path / "dangling"
    os.symlink(str(tmp_path / "gone"), str(dangling))
    result = build(crate, str(dangling), check_mode=check_mode)
    assert result["msg"] == ("dest %s is a symlink to %s/gone, which does not exist. Fix: create the folder it "
                             "points to, or give another dest." % (dangling, tmp_path))
    assert not os.path.exists(tmp_path / "gone")


def test_src_that_is_a_file_and_sources_of_the_wrong_type(crate, dest, tmp_path):
    src_file = tmp_path / "crate.tar"
    src_file.write_text("x")
    result = build(str(src_file), dest)
    assert result["msg"] == ("src %s is a file, not the crate folder. Fix: give the crate root (the folder holding "
                             "src/bpf, e.g. .../src/rust/lqos_sys)." % src_file)
    wrapper_c = os.path.join(crate, "src", "bpf", "wrapper.c")
    os.unlink(wrapper_c)
    os.mkdir(wrapper_c)
    result = build(crate, dest)
    assert result["msg"] == ("sources.wrapper_c %s is a folder, not a file. Fix: check the spec's sources section "
                             "against the crate." % wrapper_c)
    assert not os.path.exists(dest)


def _small_dest(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "lqos-test-small", str(small))
    return str(small / "out")


def _shim(tmp_path, tool, body):
    """A PATH folder where ``tool`` runs ``body`` before the real tool (its --version probe is untouched)."""
    bindir = tmp_path / ("shim-" + tool)
    bindir.mkdir()
    real = shutil.which(tool)
    script = bindir / tool
    script.write_text('#!/bin/sh\ncase "$1" in --version|version) exec %s "$@";; esac\n%s\nexec %s "$@"\n'
                      % (real, body, real))
    script.chmod(0o755)
    return {"PATH": str(bindir) + ":" + os.environ["PATH"]}


# Fill the filesystem of the build folder once the archive is complete (the wrapper side is done).
FILL_AFTER_ARCHIVE = r'''out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
dir=$(dirname "$out")
until ar t "$dir/libshaperwrap.a" 2>/dev/null | grep -q libshaperwrap.o; do sleep 0.05; done
cat /dev/zero > "$dir/../filler" 2>/dev/null'''


def test_full_disk_during_bindgen_names_the_folder_not_wrapper_h(crate, tmp_path):
    dest = _small_dest(tmp_path)
    try:
        result = build(crate, dest, env=_shim(tmp_path, "bindgen", FILL_AFTER_ARCHIVE))
        assert result["failed"] is True
        assert result["step"] == "bindgen"
        head = ("build step bindgen failed: bindgen exited with 101, because the filesystem of the build folder %s "
                "is full (ENOSPC) in %s/src/bpf:\n" % (dest, crate))
        fix = " Fix: free space on the filesystem holding %s (df -h %s) and run again." % (dest, dest)
        assert result["msg"].startswith(head) and result["msg"].endswith(fix), result["msg"]
        assert 'Unable to write output: Os { code: 28, kind: StorageFull, message: "No space left on device" }' \
            in result["msg"]
        assert "wrapper.h" not in result["msg"]
        assert not os.path.exists(os.path.join(dest, "current"))
        assert not [n for n in os.listdir(dest) if n.startswith(".staging-")]
    finally:
        sh("umount", "-l", os.path.dirname(dest))


def test_full_disk_while_writing_an_output_names_the_folder(crate, tmp_path):
    dest = _small_dest(tmp_path)
    try:
        first = build(crate, dest)
        assert first["_rc"] == 0, first
        edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v5 */\n#define")
        # bpftool prints the skeleton to stdout; the module writes it into a full folder.
        fill = 'cat /dev/zero > %s/filler 2>/dev/null' % dest
        result = build(crate, dest, env=_shim(tmp_path, "bpftool", fill))
        assert result["failed"] is True
        assert result["msg"] == (
            "writing the build into %s failed, nothing was published: No space left on device (ENOSPC) on %s. "
            "Fix: free space on the filesystem holding %s (df -h %s) and run again." % (dest, dest, dest, dest))
        assert "internal error" not in result["msg"]
        assert assert_current_is_complete(dest) == first["build_dir"]
        assert not [n for n in os.listdir(dest) if n.startswith(".staging-")]
    finally:
        sh("umount", "-l", os.path.dirname(dest))


def test_spec_name_dot_dot_never_reaches_the_filesystem(crate):
    spec = {"name": "..", "sources": {"kern": "shaper_kern.c", "workdir": "src/bpf"}, "outputs": {}}
    result = run_module("pipeline", dict(spec=spec, src=crate), resolve_spec=False)
    assert result["failed"] is True
    assert result["msg"] == ("pipeline spec: `name` must match [a-z0-9_-]+ (it names the build folder), got '..'. "
                             "Fix: add e.g. `name: reference` at the top of the spec.")
    assert not os.path.exists("/var/lib/.lock") and not os.path.exists("/var/lib/builds")


def test_an_internal_error_carries_its_traceback(crate, dest, tmp_path):
    """A bug (injected: plan() raises) is one line in msg and the whole traceback in `exception`,
    whatever ANSIBLE_DISPLAY_TRACEBACK says."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "from ansible_collections.lqos.bpf.plugins.module_utils._build import pipeline as _pipeline\n"
        "def plan(self, *args):\n"
        "    raise KeyError('injected')\n"
        "_pipeline.Pipeline.plan = plan\n")
    env = {"PYTHONPATH": os.pathsep.join([str(inject)] + [p for p in sys.path if p])}
    result = build(crate, dest, env=env)
    assert result["_rc"] == 1
    assert result["failed"] is True
    # (the module name is Ansible's; run outside Ansible, as here, AnsibleModule calls itself basic.py)
    assert re.fullmatch(r"internal error in [\w.]+: KeyError: 'injected'\. This is a bug in lqos\.bpf: please report "
                        r"it with the traceback in this result's `exception` \(ANSIBLE_DISPLAY_TRACEBACK=error prints "
                        r"it\)\.", result["msg"]), result["msg"]
    assert result["exception"].startswith("Traceback (most recent call last):")
    assert 'in run_pipeline\n' in result["exception"]
    assert result["exception"].rstrip().endswith("KeyError: 'injected'")


@pytest.mark.parametrize("display", ["never", "error"])
def test_an_internal_error_traceback_reaches_the_playbook(crate, dest, tmp_path, display):
    """Through ansible-playbook (2.19): the traceback is in the registered result's `exception`
    and printed with ANSIBLE_DISPLAY_TRACEBACK=error; -vvv alone no longer hides it silently."""
    inject = tmp_path / "inject"
    inject.mkdir()
    collections = os.environ["ANSIBLE_COLLECTIONS_PATH"]
    (inject / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.lqos.bpf.plugins.module_utils._build import pipeline as _pipeline\n"
        "def plan(self, *args):\n"
        "    raise KeyError('injected')\n"
        "_pipeline.Pipeline.plan = plan\n"
        "sys.path.remove(%r)\n" % (collections, collections))
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - lqos.bpf.pipeline:
        spec: reference
        src: %s
        dest: %s
      environment:
        PYTHONPATH: %s
      register: build
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ build | to_json }}"
        dest: %s
""" % (crate, dest, inject, tmp_path / "result.json"))
    env = dict(os.environ, ANSIBLE_DISPLAY_TRACEBACK=display)
    proc = subprocess.run(["ansible-playbook", "-vvv", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=" + sys.executable, str(playbook)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "result.json") as fh:
        result = json.load(fh)
    assert result["failed"] is True
    assert "KeyError: 'injected'. This is a bug in lqos.bpf" in result["msg"]
    printed = "KeyError: 'injected'\n" in proc.stdout + proc.stderr and "Traceback" in proc.stdout + proc.stderr
    assert printed is (display == "error")
    assert "ANSIBLE_DISPLAY_TRACEBACK=error prints it" in proc.stdout + proc.stderr


def test_a_forced_build_folder_is_reused_when_its_inputs_return(crate, dest, tmp_path):
    header = os.path.join(crate, "src", "bpf", "common", "maximums.h")
    with open(header) as fh:
        original = fh.read()
    log = str(tmp_path / "calls.log")
    env = _shim(tmp_path, "clang", 'echo "$@" >> %s' % log)  # the same clang path for every build
    first = build(crate, dest, env=env)
    forced = build(crate, dest, force=True, env=env)
    assert forced["build_id"] == first["build_id"] + ".1"
    assert forced["previous_build_dir"] == first["build_dir"]
    edit(header, "#define", "/* v6 */\n#define")
    changed = build(crate, dest, env=env)
    assert changed["previous_build_dir"] == forced["build_dir"]
    assert sorted(os.listdir(os.path.join(dest, "builds"))) == sorted([forced["build_id"], changed["build_id"]])
    with open(header, "w") as fh:
        fh.write(original)
    os.unlink(log)
    back = build(crate, dest, env=env)
    assert back["_rc"] == 0, back
    assert back["changed"] is True and back["reused_build"] is True, back["rebuild_reasons"]
    assert back["build_dir"] == forced["build_dir"]
    assert not os.path.exists(log), "a reused build ran clang"
    assert_current_is_complete(dest)


def test_rollback_waits_for_a_running_build(crate, dest):
    build(crate, dest)
    edit(os.path.join(crate, "src", "bpf", "common", "maximums.h"), "#define", "/* v7 */\n#define")
    second = build(crate, dest)
    fd = os.open(os.path.join(dest, ".lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"4343", 0)
    try:
        refused = run_module("pipeline", dict(spec="reference", src=crate, dest=dest, state="rolled_back",
                                              lock_timeout=1))
    finally:
        os.close(fd)
    assert refused["msg"] == ("another build of %s is running (pid 4343 holds %s/.lock) and did not finish within 1s. "
                              "Fix: wait for it, or raise lock_timeout." % (dest, dest))
    assert os.path.realpath(os.path.join(dest, "current")) == second["build_dir"]
    back = run_module("pipeline", dict(spec="reference", src=crate, dest=dest, state="rolled_back"))
    assert back["changed"] is True and back["build_dir"] == second["previous_build_dir"]
