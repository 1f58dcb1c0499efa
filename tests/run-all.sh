#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine as root: installs what is needed
# (tests/bootstrap.sh --tests), then runs sanity, lint, unit + functional tests and molecule on the main
# ansible-core, sanity, lint and ansible-test units on the oldest one meta/runtime.yml declares, sanity,
# ansible-test units and one approved deploy on the embedded sandbox on the newest, and the ecosystem's
# packaging checks (docs, galaxy-importer, ansible-builder, ansible-runner, antsibull-changelog).
# Every stage prints how long it took.
#
#   bash tests/run-all.sh            # everything
#   LQOS_SKIP_MOLECULE=1 bash tests/run-all.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${LQOS_BOOTSTRAPPED:-}" ]; then
  LQOS_BOOTSTRAPPED=1 exec bash "$here/tests/bootstrap.sh" --tests bash "$here/tests/run-all.sh" "$@"
fi
cd "$here"

# Every stage prints its elapsed time when it ends, and the run ends with a table of all of them (and the
# test counts of every pytest pass).
suite_start=$(date +%s)
stage_name=""
stage_start=$suite_start
timings=()
elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
end_stage() {
  if [ -n "$stage_name" ]; then
    printf '==== %s: done in %s\n' "$stage_name" "$(elapsed "$stage_start")"
    timings+=("$(printf '%-9s %s%s' "$(elapsed "$stage_start")" "$stage_name" "${stage_counts:+ -- $stage_counts}")")
  fi
  stage_name=""
  stage_counts=""
}
stage() {
  end_stage
  stage_name=$1
  stage_start=$(date +%s)
  printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"
}
report() {
  local rc=$?
  end_stage
  printf '\n==== stage times (total %s)\n' "$(elapsed "$suite_start")"
  printf '  %s\n' "${timings[@]}"
  return $rc
}
trap report EXIT

# One pytest pass: its output as usual, its counts kept for the table. Exit code 5 (nothing collected) is a
# failure, never a pass.
pytest_pass() {
  local log rc
  log=$(mktemp)
  set +e
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  stage_counts=$(grep -E '^=+ .*(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" | tail -1 \
                 | sed -E 's/^=+ //; s/ =+$//')
  rm -f "$log"
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests ($stage_name): that is a failure, not a pass" >&2
    exit 1
  fi
  [ "$rc" -eq 0 ] || exit "$rc"
}
# Run a command with another venv first on PATH.
in_venv() { local venv=$1; shift; PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" "$@"; }

core_version() { "$1" -c 'from ansible.release import __version__ as v; print("ansible-core " + v)'; }
stage "ansible-test sanity ($(core_version python))"
bash tests/sanity.sh

stage "ansible-lint"
ansible-lint --offline

# The oldest ansible-core the collection declares (meta/runtime.yml): sanity, lint and ansible-test units.
oldest=${LQOS_OLDEST_VENV:-/opt/lqos-bpf/venv-oldest}
stage "oldest ansible-core: sanity, lint, units ($(core_version "$oldest/bin/python"))"
in_venv "$oldest" bash tests/sanity.sh
in_venv "$oldest" ansible-lint --offline
in_venv "$oldest" bash tests/units.sh

# The newest ansible-core (Python >= 3.12): sanity, ansible-test units, and the README's first command (an
# approved deploy on the embedded default) in a sandbox of its own, removed afterwards.
newest=${LQOS_NEWEST_VENV:-/opt/lqos-bpf/venv-newest}
stage "newest ansible-core: sanity, units ($(core_version "$newest/bin/python"))"
in_venv "$newest" bash tests/sanity.sh
in_venv "$newest" bash tests/units.sh
stage "newest ansible-core: approved deploy on the embedded sandbox"
in_venv "$newest" bash tests/deploy-sandbox.sh

stage "antsibull-docs: lint-collection-docs, docsite with -W"
bash tests/docs.sh

stage "galaxy-importer (Automation Hub-like: flake8, ansible-lint)"
bash tests/galaxy-importer.sh

stage "antsibull-changelog: lint, the next release's notes"
bash tests/changelog.sh

stage "ansible-builder: the execution environment's build context"
bash tests/ee.sh

stage "ansible-runner: the audit's artifact carries the verdict; two partial audits merged"
bash tests/runner-audit.sh

stage "pytest: unit and functional, the kernel's own policy (real toolchain, real kernel, private namespaces)"
pytest_pass python -m pytest -p no:cacheprovider -rs tests/unit tests/functional

# The same attach, pinned-map and deploy paths with tracing programs refused (EPERM before verification,
# staged by tests/functional/tracing_refusal.py), so a machine whose kernel loads iterators proves the
# refused path too (docs/kernel-policy.md).
stage "pytest: attach, pinned maps and deploy again with tracing programs refused"
LQOS_TEST_TRACING_REFUSED=1 pytest_pass python -m pytest -p no:cacheprovider -rs \
  tests/functional/test_kernel_policy.py tests/functional/test_attach.py tests/functional/test_attach_pin_step.py \
  tests/functional/test_pinned_maps.py tests/functional/test_deploy_migrate.py

if [ -z "${LQOS_SKIP_MOLECULE:-}" ]; then
  # The kernel matrix (docs/kernel-matrix.md): default = 6.12 + 6.1, kernels = 5.10 twice, one with the
  # BPF-LSM tracing refusal in force. One scenario at a time: at most two VMs run at once.
  stage "molecule default: real VMs under QEMU, kernels 6.12 and 6.1"
  molecule test -s default
  stage "molecule kernels: real VMs under QEMU, kernel 5.10 with and without a tracing refusal"
  molecule test -s kernels
  stage "molecule service: the service loader under systemd, the stand-in daemon writing through its pins"
  molecule test -s service
fi
end_stage
echo
echo "==== all stages passed"
