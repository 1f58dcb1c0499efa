"""Every command this collection runs is taken literally (issue 25, item 10): the modules run tools only
through _common.run_literal (run_command with expand_user_and_vars=False), and every
ansible.builtin.command task of the roles sets expand_argument_vars: false."""
from __future__ import annotations

import glob
import os
import re

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if "ansible.builtin.command" in node or "command" in node or "ansible.builtin.shell" in node:
            yield node
        for key in ("block", "rescue", "always"):
            yield from _tasks(node.get(key))


def test_role_command_tasks_do_not_expand_arguments():
    found = 0
    for path in glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml")):
        with open(path) as fh:
            for task in _tasks(yaml.safe_load(fh)):
                assert "ansible.builtin.shell" not in task, (path, task.get("name"))
                args = task.get("ansible.builtin.command") or task.get("command")
                assert isinstance(args, dict) and args.get("expand_argument_vars") is False, (path, task.get("name"))
                assert "argv" in args, (path, task.get("name"))
                found += 1
    assert found >= 16


def test_modules_run_commands_only_through_run_literal():
    calls = []
    for path in glob.glob(os.path.join(REPO, "plugins", "**", "*.py"), recursive=True):
        with open(path) as fh:
            for number, line in enumerate(fh, 1):
                if re.search(r"\.run_command\(", line):
                    calls.append("%s:%d" % (os.path.relpath(path, REPO), number))
    assert calls == ["plugins/module_utils/_common.py:%d" % _run_literal_line()], calls


def _run_literal_line():
    with open(os.path.join(REPO, "plugins", "module_utils", "_common.py")) as fh:
        for number, line in enumerate(fh, 1):
            if "module.run_command(argv, expand_user_and_vars=False" in line:
                return number
    raise AssertionError("run_literal does not pass expand_user_and_vars=False")
