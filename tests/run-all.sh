#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine as root: installs what is needed
# (tests/bootstrap.sh --tests), then runs sanity, lint, unit + functional tests and molecule on the newest
# ansible-core, and sanity, lint and unit tests on the oldest one meta/runtime.yml declares.
#
#   bash tests/run-all.sh            # everything
#   LQOS_SKIP_MOLECULE=1 bash tests/run-all.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${LQOS_BOOTSTRAPPED:-}" ]; then
  LQOS_BOOTSTRAPPED=1 exec bash "$here/tests/bootstrap.sh" --tests bash "$here/tests/run-all.sh" "$@"
fi
cd "$here"
stage() { printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

core_version() { "$1" -c 'from ansible.release import __version__ as v; print("ansible-core " + v)'; }
stage "ansible-test sanity ($(core_version python))"
bash tests/sanity.sh

stage "ansible-lint"
ansible-lint --offline

# The oldest ansible-core the collection declares (meta/runtime.yml): sanity, lint and unit tests.
oldest=${LQOS_OLDEST_VENV:-/opt/lqos-bpf/venv-oldest}
stage "oldest ansible-core: sanity, lint, unit ($(core_version "$oldest/bin/python"))"
PATH="$oldest/bin:$PATH" VIRTUAL_ENV="$oldest" bash tests/sanity.sh
PATH="$oldest/bin:$PATH" VIRTUAL_ENV="$oldest" "$oldest/bin/ansible-lint" --offline
set +e
PATH="$oldest/bin:$PATH" VIRTUAL_ENV="$oldest" "$oldest/bin/python" -m pytest -p no:cacheprovider tests/unit
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no unit tests on the oldest ansible-core: that is a failure, not a pass" >&2
  exit 1
fi
[ $rc -eq 0 ] || exit $rc

stage "pytest: unit and functional (real toolchain, real kernel, private namespaces)"
set +e
python -m pytest -p no:cacheprovider -rs tests/unit tests/functional
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ $rc -eq 0 ] || exit $rc

if [ -z "${LQOS_SKIP_MOLECULE:-}" ]; then
  # The kernel matrix (docs/kernel-matrix.md): default = 6.12 + 6.1, kernels = 5.10 twice, one with the
  # BPF-LSM tracing refusal in force. One scenario at a time: at most two VMs run at once.
  stage "molecule default: real VMs under QEMU, kernels 6.12 and 6.1"
  molecule test -s default
  stage "molecule kernels: real VMs under QEMU, kernel 5.10 with and without a tracing refusal"
  molecule test -s kernels
fi
stage "all stages passed"
