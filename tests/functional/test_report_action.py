"""lqos.bpf.abi_report as ansible-playbook runs it on the controller: escaping by output kind, the basename, the
report set written all or none, a template that is a folder (issue 25, items 6-9 and 23). Plain abi_info results
are given through ``results``; no target is involved."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import yaml

from lqos_testlib import REPO

EVIL = "<script>alert(1)</script>"
RESULT = {"kernel": {"release": "6.1.0"}, "toolchain": {}, "build": None, "abi_check": None, "errors": [],
          "attached": [{"interface": "<img src=x onerror=alert(2)>", "netns": None, "error": None, "xdp": None,
                        "tc": []}],
          "pins": {"error": None, "summary": {"total": 0}, "maps": []}}


def report(tmp_path, **args):
    """Run one abi_report task; return (rc, the task's result)."""
    task = {"lqos.bpf.abi_report": dict({"hosts": [EVIL], "results": {EVIL: RESULT}, "dest": str(tmp_path / "out"),
                                         "fail_on_drift": False}, **args), "register": "r"}
    save = {"ansible.builtin.copy": {"content": "{{ r | to_json }}", "dest": str(tmp_path / "result.json")}}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [dict(task, ignore_errors=True), save]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    proc = subprocess.run([playbook if os.path.exists(playbook) else shutil.which("ansible-playbook"), "-i",
                           "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
                           str(tmp_path / "play.yml")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "result.json").read_text())


def test_host_data_is_escaped_in_markdown_and_in_html_whatever_the_templates_name(tmp_path):
    page = tmp_path / "page.j2"  # neither .html nor .html.j2: the output is HTML all the same
    page.write_text("<p>{% for h in report.hosts %}{{ h }}{% endfor %}</p>\n")
    result = report(tmp_path, templates={"html": str(page)})
    assert not result.get("failed"), result
    html = (tmp_path / "out" / "fleet-abi-report.html").read_text()
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    md = (tmp_path / "out" / "fleet-abi-report.md").read_text()
    assert "<script" not in md and "<img" not in md
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | not\\_built |" not in md  # status names stay readable
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | not_built |" in md
    assert "&lt;img src=x onerror=alert(2)&gt;" not in md  # nothing attached: the interface is not listed


def test_a_basename_with_a_path_in_it_is_refused_and_nothing_is_written(tmp_path):
    result = report(tmp_path, basename="../../x")
    assert result["failed"] and result["msg"] == (
        "the report basename '../../x' is not a plain file name: it must not hold a path (no '/', not '.' or "
        "'..'), the report files are written into dest only. Fix: give a name such as fleet-abi-report and put "
        "the folder in dest (lqos_bpf_report_dir).")
    assert sorted(os.listdir(str(tmp_path))) == ["play.yml", "result.json"]


def test_a_template_that_fails_leaves_the_older_report_set_untouched(tmp_path):
    first = report(tmp_path)
    assert not first.get("failed") and first["changed"], first
    out = tmp_path / "out"
    before = {name: (out / name).read_bytes() for name in os.listdir(str(out))}
    assert sorted(before) == ["fleet-abi-report.html", "fleet-abi-report.json", "fleet-abi-report.md"]
    broken = tmp_path / "broken.html.j2"
    broken.write_text("{{ report.no_such_key }}")
    result = report(tmp_path, spec="changed", templates={"html": str(broken)})
    assert result["failed"] and not result["changed"], result
    assert result["msg"].startswith("cannot render the report template %s: UndefinedError: " % broken), result
    assert result["msg"].endswith("Nothing was written."), result
    assert {name: (out / name).read_bytes() for name in os.listdir(str(out))} == before


def test_a_template_path_that_is_a_folder_says_it_is_a_folder(tmp_path):
    folder = tmp_path / "templates-folder"
    folder.mkdir()
    result = report(tmp_path, templates={"markdown": str(folder)})
    assert result["failed"], result
    assert result["msg"] == (
        "the markdown report template: the report template %s is a folder, not a template file. Fix: name a "
        "Jinja2 template file inside it (e.g. %s/fleet-abi-report.md.j2) in lqos_bpf_report_templates.markdown."
        % (folder, folder)), result
    assert "TemplateNotFound" not in result["msg"]
