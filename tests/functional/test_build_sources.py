"""A build is tied to its sources: abi_check and pipeline's check refuse a build made from other sources, and
pipeline's ``check`` is read the same in every argument form Ansible allows (YAML mapping, key=value, JSON)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from lqos_testlib import REPO, copy_bpf, edit, run_module

from ansible_collections.lqos.bpf.plugins.plugin_utils._abi_controller import prepare_args
from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

pytestmark = pytest.mark.usefixtures("tools")
IP_HASH = os.path.join("src", "bpf", "common", "ip_hash.h")


def abi(crate, build_dir, **kw):
    args = prepare_args(dict(spec=resolve_spec_option("reference", REPO), src=crate, build_dir=build_dir, **kw), REPO)
    return run_module("abi_check", args)


def test_a_build_from_other_sources_is_refused_not_compared(tmp_path):
    """The build was made before a C-only change that breaks the ABI (the Rust mirror does not follow):
    comparing the old object with this tree's Rust gave a false pass; now it is refused, naming the file."""
    crate = copy_bpf(tmp_path)
    built = run_module("pipeline", dict(spec="reference", src=crate, dest=str(tmp_path / "out")))
    assert built["_rc"] == 0, built.get("msg")
    build_dir = os.path.join(str(tmp_path / "out"), "current")
    assert abi(crate, build_dir)["ok"] is True
    edit(os.path.join(crate, IP_HASH), "__u32 tc_handle;  /* major", "__u64 tc_handle;  /* major")
    stale = abi(crate, build_dir)
    assert stale["_rc"] == 1
    assert stale["msg"] == ("build %s was made from other sources (file %s changed): rebuild first. Fix: build %s "
                            "with lqos.bpf.pipeline (or the build role), then check the new build; nothing was "
                            "compared." % (built["build_id"], IP_HASH, crate))
    assert "pairs" not in stale
    # A new file in the sources is another tree too.
    shutil.copy(os.path.join(crate, IP_HASH), os.path.join(crate, "src", "bpf", "common", "extra.h"))
    assert "file src/bpf/common/extra.h added" in abi(crate, build_dir)["msg"]
    # Rebuilt from these sources: compared, and the drift is found.
    rebuilt = run_module("pipeline", dict(spec="reference", src=crate, dest=str(tmp_path / "out")))
    assert rebuilt["_rc"] == 0 and rebuilt["changed"] is True
    fresh = abi(crate, build_dir)
    assert fresh["_rc"] == 1 and fresh["msg"].startswith("ABI check failed for spec 'reference'")


def test_pipeline_check_reads_the_same_in_every_argument_form(tmp_path):
    """check as a YAML mapping, in key=value task arguments (check='record=false ...'), and as a JSON string:
    the action plugin computes the Rust side for each, and each gives the same check."""
    crate = copy_bpf(tmp_path)
    out = str(tmp_path / "results.json")
    tasks = [
        {"name": "yaml", "lqos.bpf.pipeline": {"spec": "reference", "src": crate, "dest": str(tmp_path / "yaml"),
                                               "check": {"record": False, "trial_load": False}},
         "register": "r_yaml"},
        {"name": "key=value", "lqos.bpf.pipeline": "spec=reference src=%s dest=%s check='record=false trial_load=false'"
         % (crate, tmp_path / "kv"), "register": "r_kv"},
        {"name": "json", "lqos.bpf.pipeline": {"spec": "reference", "src": crate, "dest": str(tmp_path / "js"),
                                               "check": '{"record": false, "trial_load": false}'},
         "register": "r_json"},
        {"ansible.builtin.copy": {"content": "{{ {'yaml': r_yaml, 'key=value': r_kv, 'json': r_json} | to_json }}",
                                  "dest": out, "mode": "0644"}},
    ]
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {"ansible_python_interpreter": sys.executable}, "tasks": tasks}]
    with open(str(tmp_path / "play.yml"), "w") as fh:
        yaml.safe_dump(play, fh)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with open(out) as fh:
        results = json.load(fh)
    for form, res in results.items():
        assert res["abi_check"]["ok"] is True, (form, res["abi_check"].get("problems"))
    summaries = {form: res["abi_check"]["summary"] for form, res in results.items()}
    assert len(set(summaries.values())) == 1, summaries
    pairs = {form: [p["rust"] for p in res["abi_check"]["pairs"]] for form, res in results.items()}
    assert pairs["key=value"] == pairs["yaml"] == pairs["json"] and pairs["yaml"]
