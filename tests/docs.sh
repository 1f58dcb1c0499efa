#!/usr/bin/env bash
# The collection's documentation as antsibull-docs sees it: `lint-collection-docs --plugin-docs` (every
# M(), O(), RV(), P() reference must resolve), then a docsite from `antsibull-docs sphinx-init` built with
# Sphinx warnings as errors (-W), offline: no intersphinx inventory is fetched. A broken reference fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-docsite.XXXXXX)
trap 'rm -rf "$work"' EXIT
# antsibull-docs finds lqos.bpf through the checkout's collections folder (tests/bootstrap.sh links it).
export ANSIBLE_COLLECTIONS_PATH="$here/.collections"
cd "$here/.collections/ansible_collections/lqos/bpf"
antsibull-docs lint-collection-docs --plugin-docs .
mkdir "$work/site"
antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error --dest-dir "$work/site" lqos.bpf >/dev/null
# Offline, no intersphinx: the Ansible docsite's labels the generated pages point at (action_plugins,
# ansible.builtin modules, ...) get stub targets on one orphan page; every lqos.bpf label must be real.
cd "$work/site"
mkdir -p rst && chmod og-w rst
antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --fail-on-error --use-current \
  --squash-hierarchy --dest-dir rst lqos.bpf
python3 - rst <<'PY'
import os, re, sys
labels = set()
for base, _, files in os.walk(sys.argv[1]):
    for name in files:
        if name.endswith(".rst"):
            with open(os.path.join(base, name)) as fh:
                labels.update(re.findall(r":ref:`(?:[^`<]*<)?([^`<>]+)>?`", fh.read()))
external = sorted(l for l in labels if not l.startswith("ansible_collections.lqos.bpf."))
with open(os.path.join(sys.argv[1], "external_targets.rst"), "w") as fh:
    fh.write(":orphan:\n\nTargets on docs.ansible.com (offline build)\n" + "=" * 43 + "\n\n")
    for label in external:
        fh.write(".. _%s:\n\n%s\n%s\n\n" % (label, label, "-" * len(label)))
print("docsite: %d external Ansible labels stubbed: %s" % (len(external), ", ".join(external)))
PY
printf '\nintersphinx_mapping = {}\n' >> conf.py
sphinx-build -M html rst build -c . -W --keep-going -q
test -s "$work/site/build/html/lqos/bpf/index.html" || test -s "$work/site/build/html/index.html"
echo "docsite: $(find "$work/site/build/html" -name '*.html' | wc -l) pages built with -W"
