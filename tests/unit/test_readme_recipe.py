"""The README's LibreQoS recipe against the roles' argument specs, and the install-step examples of
docs/service-loader.md as task lists (a real lqosd cannot be built on the test machines: it needs a newer rustc
than Debian 12's and crates from a registry they cannot reach)."""
from __future__ import annotations

import os
import re

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = ("toolchain", "build", "deploy")


def _read(*path) -> str:
    with open(os.path.join(REPO, *path)) as fh:
        return fh.read()


def yaml_blocks(text: str) -> list:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def recipe_vars() -> list:
    section = _read("README.md").split("## LibreQoS recipe", 1)[1].split("\n## ", 1)[0]
    return [b for b in yaml_blocks(section) if isinstance(b, dict) and any(k.startswith("lqos_bpf_") for k in b)]


def role_specs() -> dict:
    return {r: yaml.safe_load(_read("roles", r, "meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
            for r in ROLES}


def test_the_recipe_has_both_loaders():
    loaders = [b.get("lqos_bpf_loader", "collection") for b in recipe_vars()]
    assert loaders == ["collection", "service"], loaders


def test_every_recipe_variable_passes_the_argument_spec_of_each_role_that_takes_it():
    specs = role_specs()
    for block in recipe_vars():
        names = [k for k in block if k.startswith("lqos_bpf_")]
        for name in names:
            assert any(name in spec for spec in specs.values()), "%s is in no role's argument spec" % name
        for role, spec in specs.items():
            mine = {k: v for k, v in block.items() if k in spec}
            if not mine:
                continue
            # Templated values are checked for their type only where Ansible would template them first.
            mine = {k: ("/x/install.yml" if isinstance(v, str) and "{{" in v else v) for k, v in mine.items()}
            result = ArgumentSpecValidator({k: spec[k] for k in mine}).validate(mine)
            assert not result.error_messages, (role, result.error_messages)


def test_the_service_recipe_names_a_service_and_an_install_step():
    [service] = [b for b in recipe_vars() if b.get("lqos_bpf_loader") == "service"]
    assert service["lqos_bpf_service"] == "lqosd"
    assert service.get("lqos_bpf_service_install_tasks") or service.get("lqos_bpf_service_install_command")
    assert "lqos_bpf_interfaces" not in service   # the service's configuration decides its interfaces


def _tasks(tasks):
    for t in tasks:
        yield t
        for key in ("block", "rescue", "always"):
            yield from _tasks(t.get(key, []))


def test_the_install_step_examples_are_task_lists_that_never_restart_the_service():
    blocks = [b for b in yaml_blocks(_read("docs", "service-loader.md")) if isinstance(b, list)]
    assert len(blocks) == 2
    for tasks in blocks:
        for task in _tasks(tasks):
            assert isinstance(task, dict) and task.get("name"), task
            action = {k: v for k, v in task.items() if k != "name"}
            assert not {"ansible.builtin.systemd", "ansible.builtin.systemd_service", "ansible.builtin.service",
                        "systemd", "service"} & set(action), task
            assert "restarted" not in yaml.safe_dump(action), task
