#!/usr/bin/env bash
# ansible-test sanity, locally (no containers), on a copy of the tracked tree laid out
# as ansible_collections/lqos/bpf (the layout ansible-test requires).
set -euo pipefail
# shellcheck source=tests/collection-tree.sh
source "$(dirname "${BASH_SOURCE[0]}")/collection-tree.sh" lqos-sanity
ansible-test sanity --local --python "$py" --color no "$@"
