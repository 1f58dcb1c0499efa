"""The controller's runtime ranges (requirements.txt) and the pinned test stack agree; the declared
oldest ansible-core is the one CI tests."""
from __future__ import annotations

import os

import yaml
from packaging.requirements import Requirement

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
        assert ">=" in ops and "<" in ops, "%s needs a lower and an upper bound: %s" % (name, req)
        [pin] = list(pinned[name].specifier)
        assert pin.operator == "==", pinned[name]
        assert req.specifier.contains(pin.version), "tests pin %s %s outside %s" % (name, pin.version, req)


def test_requires_ansible_is_the_oldest_ansible_core_ci_tests():
    with open(os.path.join(REPO, "meta", "runtime.yml")) as fh:
        requires = yaml.safe_load(fh)["requires_ansible"]
    oldest = read_requirements("tests/requirements-oldest.txt")["ansible-core"]
    [pin] = list(oldest.specifier)
    assert requires == ">=%s" % pin.version
    assert read_requirements("requirements.txt")["ansible-core"].specifier.contains(pin.version)
