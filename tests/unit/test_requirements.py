"""The controller's runtime ranges (requirements.txt) and the pinned test stack agree; the declared
oldest ansible-core is the one CI tests."""
from __future__ import annotations

import os

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_requirements(path: str) -> dict:
    out = {}
    with open(os.path.join(REPO, path)) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                out[req.name.lower()] = req
    return out


def test_every_runtime_requirement_has_a_range_and_the_test_pin_is_inside_it():
    runtime = read_requirements("requirements.txt")
    pinned = read_requirements("tests/requirements.txt")
    assert set(runtime) == {"ansible-core", "jmespath", "pyyaml", "tree-sitter", "tree-sitter-rust"}
    for name, req in runtime.items():
        ops = {spec.operator for spec in req.specifier}
        # ansible-core: a floor only (the oldest CI tests); a cap would downgrade a user's newer ansible-core.
        want = {">="} if name == "ansible-core" else {">=", "<"}
        assert ops == want, "%s: want the operators %s: %s" % (name, sorted(want), req)
        [pin] = list(pinned[name].specifier)
        assert pin.operator == "==", pinned[name]
        assert req.specifier.contains(pin.version), "tests pin %s %s outside %s" % (name, pin.version, req)


def test_the_newest_ansible_core_ci_tests_is_inside_the_declared_range_and_newer_than_the_main_stack():
    runtime = read_requirements("requirements.txt")["ansible-core"]
    [newest] = list(read_requirements("tests/requirements-newest.txt")["ansible-core"].specifier)
    [main] = list(read_requirements("tests/requirements.txt")["ansible-core"].specifier)
    assert newest.operator == "==" and runtime.specifier.contains(newest.version)
    assert Version(newest.version) >= Version(main.version)
    # The same pins for everything else both venvs share: one tested set of packages.
    shared = read_requirements("tests/requirements.txt")
    for name, req in read_requirements("tests/requirements-newest.txt").items():
        if name != "ansible-core" and name in shared:
            assert str(req.specifier) == str(shared[name].specifier), (name, req, shared[name])


def test_requires_ansible_is_the_oldest_ansible_core_ci_tests():
    with open(os.path.join(REPO, "meta", "runtime.yml")) as fh:
        requires = yaml.safe_load(fh)["requires_ansible"]
    oldest = read_requirements("tests/requirements-oldest.txt")["ansible-core"]
    [pin] = list(oldest.specifier)
    assert requires == ">=%s" % pin.version
    assert read_requirements("requirements.txt")["ansible-core"].specifier.contains(pin.version)
