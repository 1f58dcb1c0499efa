"""The collection as users get it: built with ansible-galaxy, installed, run by FQCN."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from lqos_testlib import REPO, sh

MODULES = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))


def source_files() -> list:
    """The checkout's own files: tracked, or new and not ignored."""
    files = sh("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).stdout.split("\n")
    return sorted(f for f in files if f and os.path.isfile(os.path.join(REPO, f)))


def copy_tree(dest) -> list:
    files = source_files()
    dest.mkdir()
    sh("tar", "-cf", str(dest) + ".tar", *files, cwd=REPO)
    sh("tar", "-xf", str(dest) + ".tar", "-C", str(dest))
    os.unlink(str(dest) + ".tar")
    return files


def build(tree, out) -> str:
    sh("ansible-galaxy", "collection", "build", "--output-path", str(out), str(tree))
    tarball = glob.glob(str(out / "lqos-bpf-*.tar.gz"))
    assert len(tarball) == 1
    return tarball[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("galaxy")
    copy_tree(tmp / "tree")
    tarball = build(tmp / "tree", tmp)
    sh("ansible-galaxy", "collection", "install", "--force", "-p", str(tmp / "colls"), tarball,
       env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp / "colls")))
    return str(tmp / "colls")


# What a checkout accumulates: test caches, build outputs, VM images, reports, an earlier tarball.
GENERATED = [
    ".hypothesis/examples/0a/1b", "tests/.hypothesis/x", ".pytest_cache/v/cache/lastfailed",
    "tests/unit/__pycache__/test_x.cpython-311.pyc", "plugins/modules/__pycache__/x.pyc", "tests/output/.tmp/x",
    "benchmarks/results/run.json", "bpf/shaper_sys/target/x", "bpf/shaper_sys/src/bpf/shaper_kern.o",
    "bpf/shaper_sys/src/bpf/shaper_kern.ll", "bpf/shaper_sys/src/bpf/shaper_kern_skel.h",
    "bpf/shaper_sys/src/bpf/libshaper.a", "bpf/shaper_sys/src/bindings.rs", "molecule/default/image/disk.qcow2",
    "molecule/default/image/root.raw", ".ansible/tmp/x", ".cache/x", "lqos-bpf-0.0.9.tar.gz",
    "changelogs/.plugin-cache.yaml",
]


def test_the_tarball_holds_exactly_the_source_files_after_real_runs(tmp_path):
    tree = tmp_path / "tree"
    files = copy_tree(tree)
    # The checkout as a developer leaves it: the audit run (embedded default) writes ./reports ...
    link = tree / ".collections" / "ansible_collections" / "lqos" / "bpf"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../..")
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    proc = subprocess.run([shutil.which("ansible-playbook"), "audit.yml"], cwd=str(tree), capture_output=True,
                          text=True, env=dict(os.environ, ANSIBLE_INVENTORY=str(empty)), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(str(tree / "reports"))) == ["fleet-abi-report.html", "fleet-abi-report.json",
                                                         "fleet-abi-report.md"]
    # ... and the other tools leave their files.
    for rel in GENERATED:
        os.makedirs(os.path.dirname(str(tree / rel)), exist_ok=True)
        (tree / rel).write_text("generated\n")
    tarball = build(tree, tmp_path)
    with tarfile.open(tarball) as tar:
        shipped = sorted(m.name for m in tar.getmembers() if m.isfile())
    # galaxy.yml becomes MANIFEST.json; .ci and .gitignore are repository plumbing.
    expected = sorted(set(files) - {".gitignore", "galaxy.yml"} - {f for f in files if f.startswith(".ci/")}
                      | {"MANIFEST.json", "FILES.json"})
    assert shipped == expected, (sorted(set(shipped) - set(expected)), sorted(set(expected) - set(shipped)))
    for rel in ("LICENSE", "requirements.txt", "bindep.txt", "meta/execution-environment.yml",
                "changelogs/config.yaml", "playbooks/deploy.yml", "playbooks/audit.yml"):
        assert rel in shipped, rel


def test_tarball_holds_the_pipeline_and_installs(installed):
    root = os.path.join(installed, "ansible_collections", "lqos", "bpf")
    for rel in ("plugins/modules/pipeline.py", "plugins/module_utils/_kernel/libbpf.py", "bpf/specs/reference.yml",
                "bpf/shaper_sys/src/bpf/wrapper.c", "meta/runtime.yml"):
        assert os.path.isfile(os.path.join(root, rel)), rel
    assert not glob.glob(os.path.join(root, "**", "*.o"), recursive=True)


def _doc(installed, module) -> dict:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=installed)
    proc = subprocess.run(["ansible-doc", "--json", "lqos.bpf." + module], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["lqos.bpf." + module]["doc"]


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_with_requirements_and_no_internal_option(installed, module):
    doc = _doc(installed, module)
    assert doc["short_description"] and doc["options"] is not None
    assert doc.get("requirements"), "%s documents no requirements" % module
    assert [o for o in doc["options"] if o.startswith("_")] == []


def test_pinned_maps_restore_from_keeps_backup_as_a_deprecated_alias(installed):
    option = _doc(installed, "pinned_maps")["options"]["restore_from"]
    assert option["aliases"] == ["backup"]
    assert option["type"] == "path"


def test_modules_run_by_fqcn_from_the_installed_collection(installed, tmp_path, bpffs):
    root = os.path.join(installed, "ansible_collections", "lqos", "bpf")
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  # As meta/runtime.yml documents it: the spec once for the whole action group.
  module_defaults:
    group/lqos.bpf.bpf:
      spec: reference
  tasks:
    - lqos.bpf.toolchain_info:
        src: %(root)s/bpf/shaper_sys
        pin_root: %(bpffs)s
        fail_on_missing: true
      register: pre
    - lqos.bpf.pipeline:
        src: %(root)s/bpf/shaper_sys
        dest: %(dest)s
      register: first
    - lqos.bpf.pipeline:
        src: %(root)s/bpf/shaper_sys
        dest: %(dest)s
      register: second
    - ansible.builtin.assert:
        that:
          - not pre.changed and pre.ok
          - first.changed and first.programs | length > 0
          - not second.changed
""" % {"bpffs": bpffs, "root": root, "dest": tmp_path / "out"})
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=installed)
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                           "ansible_python_interpreter=" + __import__("sys").executable, str(playbook)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed=1" in proc.stdout and "failed=0" in proc.stdout


def test_a_fresh_project_runs_the_fqcn_playbooks_from_the_installed_tarball(installed, tmp_path, tools):
    """The README's path for fleet users: nothing but the installed collection, run by FQCN."""
    from test_playbooks import Run, xdp_on  # pylint: disable=import-outside-toplevel

    project, sbx, scratch = tmp_path / "project", tmp_path / "sbx", tmp_path / "controller-tmp"
    project.mkdir()
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=installed, ANSIBLE_INVENTORY=str(project / "none.yml"),
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CALLBACK_FORMAT_PRETTY="false", ANSIBLE_NOCOLOR="1",
               TMPDIR=str(scratch))
    # A fresh project has no inventory: Ansible's configured source does not exist, so the embedded default runs.
    extra = ["-e", "lqos_bpf_state_dir=%s/state" % sbx, "-e", "lqos_bpf_attach_state_dir=%s/attach" % sbx,
             "-e", "lqos_bpf_sandbox_pin_root=%s/bpffs" % sbx, "-e", "lqos_bpf_sandbox_netns=lqfp-a",
             "-e", "lqos_bpf_sandbox_peer_netns=lqfp-b", "-e", "ansible_python_interpreter=" + sys.executable]

    def play(name, *args):
        proc = subprocess.run(["ansible-playbook", name] + extra + list(args), cwd=str(project), env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        return Run(proc)

    def summary(run):
        found = [d["msg"] for status, h, item, d in run.results if h == "localhost" and item == "sandbox"]
        assert len(found) == 1, run
        return found[0]

    root = os.path.join(installed, "ansible_collections", "lqos", "bpf")
    try:
        check = play("lqos.bpf.deploy", "--check", "--diff")
        assert check.rc == 0, check
        assert not sbx.exists()
        assert summary(check)[0].startswith("check mode: nothing was changed"), check
        plan = play("lqos.bpf.deploy")
        assert plan.rc == 0, plan
        assert summary(plan)[0] == "plan only (lqos_bpf_approve is false): no live change was made"
        assert xdp_on("lqfp-a", "lqsbx0")["id"] == 0
        audit = play("lqos.bpf.audit")
        assert audit.rc == 0, audit
        report = json.load(open(str(project / "reports" / "fleet-abi-report.json")))
        assert report["hosts"]["sandbox"]["status"] == "built", report["hosts"]["sandbox"]
        live = play("lqos.bpf.deploy", "-e", "lqos_bpf_approve=true")
        assert live.rc == 0, live
        assert xdp_on("lqfp-a", "lqsbx0")["name"] == "xdp_shaper"
        audit = play("lqos.bpf.audit")
        assert audit.rc == 0, audit
        report = json.load(open(str(project / "reports" / "fleet-abi-report.json")))
        assert report["hosts"]["sandbox"]["status"] == "deployed", report["hosts"]["sandbox"]
    finally:
        down = play("lqos.bpf.deploy", "-e", "lqos_bpf_sandbox_state=absent")
    assert down.rc == 0, down
    # Nothing was written into the installed collection, nothing left in the controller's temp folder.
    assert not os.path.exists(os.path.join(root, "reports"))
    assert sorted(os.listdir(str(project))) == ["reports"]
    assert os.listdir(str(scratch)) == []
