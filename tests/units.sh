#!/usr/bin/env bash
# ansible-test units, locally (no containers), on a copy of the tracked tree laid out as
# ansible_collections/lqos/bpf, with --requirements (ansible-test's own unit-test stack and
# tests/unit/requirements.txt; tests/bootstrap.sh has already installed them pinned, so pip changes nothing).
# ansible-test exits 0 when it collects nothing: the JUnit report it writes must show tests, none failed.
set -euo pipefail
# shellcheck source=tests/collection-tree.sh
source "$(dirname "${BASH_SOURCE[0]}")/collection-tree.sh" lqos-units
ansible-test units --local --python "$py" --requirements --color no "$@"
python3 - tests/output/junit <<'PY'
import glob, sys, xml.etree.ElementTree as ET
tests = failures = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        tests += int(suite.get("tests", 0))
        failures += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
print("ansible-test units: %d tests, %d failed or errored" % (tests, failures))
sys.exit(0 if tests > 0 and failures == 0 else 1)
PY
