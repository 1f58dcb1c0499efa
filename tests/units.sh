#!/usr/bin/env bash
# ansible-test units, locally (no containers), on a copy of the tracked tree laid out as
# ansible_collections/lqos/bpf, with --requirements (ansible-test's own unit-test stack and
# tests/unit/requirements.txt; tests/bootstrap.sh has already installed them pinned, so pip changes nothing).
# ansible-test exits 0 when it collects nothing: the JUnit report it writes must show tests, none failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-units.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/lqos/bpf"
mkdir -p "$dest"
cd "$here"
git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf "%s\0" "$f"; done | tar --null -cf - -T - | tar -xf - -C "$dest"
cd "$dest"
git init -q && git add -A
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
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
