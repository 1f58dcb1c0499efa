# shellcheck shell=bash
# Sourced by tests/sanity.sh and tests/units.sh: lay a copy of the tree (tracked and untracked, not ignored)
# out as ansible_collections/lqos/bpf in a temporary folder removed at exit, the layout ansible-test requires,
# and cd into it. Sets: here (the checkout), work (the temporary folder), dest (the collection copy), py (X.Y).
# $1: the temporary folder's name prefix.
# shellcheck disable=SC2034  # here, work and dest are the callers' too
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "/tmp/$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/lqos/bpf"
mkdir -p "$dest"
cd "$here" || exit 1
git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf "%s\0" "$f"; done | tar --null -cf - -T - | tar -xf - -C "$dest"
cd "$dest" || exit 1
git init -q && git add -A
py=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export py
