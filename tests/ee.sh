#!/usr/bin/env bash
# The execution environment: `ansible-builder create` of the shipped definition (execution-environment.yml) must
# produce a build context carrying the controller's requirements and system packages (and no target toolchain),
# and ansible-builder's introspection of the installed collection (meta/execution-environment.yml, read from the
# collection root as an EE build reads it) must find the same two files.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-ee.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$here"
ansible-builder create -f execution-environment.yml --context "$work/context" --output-filename Containerfile >/dev/null
for f in Containerfile _build/requirements.txt _build/bindep.txt _build/scripts/introspect.py; do
  if [ ! -f "$work/context/$f" ] || [ -L "$work/context/$f" ]; then
    echo "ee: $f missing from the build context" >&2
    exit 1
  fi
done
cmp requirements.txt "$work/context/_build/requirements.txt"
cmp bindep.txt "$work/context/_build/bindep.txt"
if grep -Eiq '^(clang|llvm|bpftool|libbpf|bindgen|gcc|iproute2|python3-cffi)\b' "$work/context/_build/bindep.txt"; then
  echo "ee: the target toolchain is in bindep.txt; it belongs to the lqos.bpf.toolchain role" >&2
  exit 1
fi
# bindep parses the file and names packages for both package families.
for platform in dpkg rpm; do
  python - "$platform" bindep.txt <<'PY'
import sys
from bindep.depends import Depends
with open(sys.argv[2]) as fh:
    deps = Depends(fh.read())
names = [rule[0] for rule in deps.active_rules(["platform:" + sys.argv[1]])]
assert names, "bindep.txt names no package for platform:%s" % sys.argv[1]
PY
done
python "$work/context/_build/scripts/introspect.py" introspect --sanitize "$here/.collections" > "$work/introspect.yml"
python - "$work/introspect.yml" <<'PY'
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
python = " ".join(str(x) for x in data.get("python", []))
system = " ".join(str(x) for x in data.get("system", []))
assert "jmespath" in python and "tree-sitter" in python, data
assert "tar" in system and "clang" not in system, data
print("ee: build context created; introspection of lqos.bpf finds python: %s | system: %s" % (python, system))
PY
