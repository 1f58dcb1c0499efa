#!/usr/bin/env bash
# ansible-test sanity, locally (no containers), on a copy of the tracked tree laid out
# as ansible_collections/lqos/bpf (the layout ansible-test requires).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/lqos/bpf"
mkdir -p "$dest"
cd "$here"
git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf "%s\0" "$f"; done | tar --null -cf - -T - | tar -xf - -C "$dest"
cd "$dest"
git init -q && git add -A
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ansible-test sanity --local --python "$py" --color no "$@"
