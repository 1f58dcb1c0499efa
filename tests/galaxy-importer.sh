#!/usr/bin/env bash
# The collection tarball through galaxy-importer with Automation Hub-like settings
# (tests/galaxy-importer/galaxy-importer.cfg): any WARNING or ERROR it logs (flake8, ansible-lint, metadata,
# docs) fails, as does a failed import.
#
# galaxy.yml has no `repository` until the project has a public home, and the importer requires one: the
# tarball checked here gets LQOS_BPF_REPOSITORY, else the checkout's git remote `origin`, else the
# checkout's file:// URL (said loudly: Galaxy would refuse the shipped galaxy.yml as it is).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-importer.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cd "$here"
git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf "%s\0" "$f"; done |
  tar --null -cf - -T - | tar -xf - -C "$work/src"
if ! grep -q '^repository:' galaxy.yml; then
  repo=${LQOS_BPF_REPOSITORY:-$(git remote get-url origin 2>/dev/null || true)}
  if [ -z "$repo" ]; then
    repo="file://$here"
    echo "NOTE: galaxy.yml has no repository (Galaxy/Hub require one); checking with $repo" >&2
  fi
  printf 'repository: %s\n' "$repo" >> "$work/src/galaxy.yml"
fi
ansible-galaxy collection build --output-path "$work" "$work/src" >/dev/null
tarball=$(ls "$work"/lqos-bpf-*.tar.gz)
cd "$work"
set +e
GALAXY_IMPORTER_CONFIG="$here/tests/galaxy-importer/galaxy-importer.cfg" \
  python -m galaxy_importer.main "$tarball" >"$work/import.log" 2>&1
rc=$?
set -e
findings=$(grep -E '^(WARNING|ERROR)' "$work/import.log" | grep -v '^WARNING: Location' || true)
if [ $rc -ne 0 ] || [ -n "$findings" ] || ! grep -q 'ansible-lint run complete' "$work/import.log"; then
  cat "$work/import.log" >&2
  echo "galaxy-importer: import failed (rc $rc) or logged findings:" >&2
  printf '%s\n' "$findings" >&2
  exit 1
fi
echo "galaxy-importer $(python -c 'import galaxy_importer; print(galaxy_importer.__version__)'):" \
     "$(grep -c 'via flake8' "$work/import.log") files through flake8, ansible-lint run, no finding"
