#!/usr/bin/env bash
# The changelog: `antsibull-changelog lint` (every fragment, also those other changes add), then the release
# notes the next `antsibull-changelog release` would write, made in a throw-away copy: before the first release
# they must list every module, role and plugin as new and no breaking change, deprecation, removal or fix (there
# is no earlier release to break or fix). `tests/changelog.sh --update` writes that CHANGELOG.md into the checkout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-changelog.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$here"
antsibull-changelog lint
git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf "%s\0" "$f"; done |
  tar --null -cf - -T - | tar -xf - -C "$work"
version=$(python -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')
(cd "$work" && antsibull-changelog release --version "$version" --date 2026-01-01 >/dev/null)
python - "$work" "$version" <<'PY'
import os, sys, yaml
root, version = sys.argv[1:3]
with open(os.path.join(root, "changelogs", "changelog.yaml")) as fh:
    releases = yaml.safe_load(fh)["releases"]
first = len(releases) == 1
rel = releases[version]
changes = rel.get("changes", {})
modules = sorted(f[:-3] for f in os.listdir(os.path.join(root, "plugins", "modules")) if f.endswith(".py"))
roles = sorted(os.listdir(os.path.join(root, "roles")))
listed_modules = sorted(m["name"] for m in rel.get("modules", []))
listed_roles = sorted(r["name"] for r in rel.get("objects", {}).get("role", []))
problems = []
if first:
    if listed_modules != modules:
        problems.append("new modules %s, expected %s (version_added of each module)" % (listed_modules, modules))
    if listed_roles != roles:
        problems.append("new roles %s, expected %s (version_added of each role's argument spec)" % (listed_roles, roles))
    # Nothing was released before: a fix is a feature of the first release, never a bugfix against it.
    for section in ("breaking_changes", "deprecated_features", "removed_features", "bugfixes", "security_fixes"):
        if changes.get(section):
            problems.append("a first release has no %s: %s" % (section, changes[section]))
    if not changes.get("release_summary"):
        problems.append("no release_summary for the first release")
if problems:
    sys.exit("changelog: " + "; ".join(problems))
print("changelog: %s notes: %d new modules, %d new roles, sections %s" % (
    version, len(listed_modules), len(listed_roles), ", ".join(sorted(changes)) or "none"))
PY
if [ "${1:-}" = "--update" ]; then
  cp "$work/CHANGELOG.md" "$here/CHANGELOG.md"
  echo "changelog: CHANGELOG.md written"
fi
