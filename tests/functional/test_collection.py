"""The collection as users get it: built with ansible-galaxy, installed, run by FQCN."""
from __future__ import annotations

import glob
import json
import os
import subprocess

import pytest

from lqos_testlib import REPO, sh

MODULES = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("galaxy")
    tree = tmp / "tree"
    tree.mkdir()
    files = sh("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).stdout.split("\n")
    sh("tar", "-cf", str(tmp / "tree.tar"), *[f for f in files if f and os.path.exists(os.path.join(REPO, f))], cwd=REPO)
    sh("tar", "-xf", str(tmp / "tree.tar"), "-C", str(tree))
    sh("ansible-galaxy", "collection", "build", "--output-path", str(tmp), str(tree))
    tarball = glob.glob(str(tmp / "lqos-bpf-*.tar.gz"))
    assert len(tarball) == 1
    sh("ansible-galaxy", "collection", "install", "--force", "-p", str(tmp / "colls"), tarball[0],
       env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp / "colls")))
    return str(tmp / "colls")


def test_tarball_holds_the_pipeline_and_installs(installed):
    root = os.path.join(installed, "ansible_collections", "lqos", "bpf")
    for rel in ("plugins/modules/pipeline.py", "plugins/module_utils/_libbpf.py", "bpf/specs/reference.yml",
                "bpf/shaper_sys/src/bpf/wrapper.c", "meta/runtime.yml"):
        assert os.path.isfile(os.path.join(root, rel)), rel
    assert not glob.glob(os.path.join(root, "**", "*.o"), recursive=True)


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(installed, module):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=installed)
    proc = subprocess.run(["ansible-doc", "--json", "lqos.bpf." + module], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["lqos.bpf." + module]["doc"]
    assert doc["short_description"] and doc["options"] is not None


def test_modules_run_by_fqcn_from_the_installed_collection(installed, tmp_path, bpffs):
    root = os.path.join(installed, "ansible_collections", "lqos", "bpf")
    playbook = tmp_path / "play.yml"
    playbook.write_text("""
- hosts: localhost
  gather_facts: false
  tasks:
    - lqos.bpf.toolchain_info:
        pin_root: %(bpffs)s
        fail_on_missing: true
      register: pre
    - lqos.bpf.pipeline:
        spec: reference
        src: %(root)s/bpf/shaper_sys
        dest: %(dest)s
      register: first
    - lqos.bpf.pipeline:
        spec: reference
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
