#!/usr/bin/env bash
# The README's first command (an approved deploy.yml on the embedded default) with the ansible-core of the
# venv on PATH, in a sandbox of its own: its own network namespaces, interface names, addresses, bpffs,
# state folders, inside a private mount namespace, and removed afterwards. Exit status: the deploy's
# (preflight, build, ABI check, trial load, pins, attach, health check must all pass).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${LQOS_SANDBOX_PRIVATE_NS:-}" ]; then
  LQOS_SANDBOX_PRIVATE_NS=1 exec unshare -m --propagation private bash "${BASH_SOURCE[0]}" "$@"
fi
work=$(mktemp -d /tmp/lqos-deploy-sandbox.XXXXXX)
tag=$(printf '%04x' $(($$ % 65536)))
cat > "$work/vars.json" <<JSON
{"lqos_bpf_sandbox_netns": "lqos-ci-$tag-a", "lqos_bpf_sandbox_peer_netns": "lqos-ci-$tag-b",
 "lqos_bpf_sandbox_interface": "lqci${tag}0", "lqos_bpf_sandbox_peer_interface": "lqci${tag}1",
 "lqos_bpf_sandbox_address": "10.253.201.1/24", "lqos_bpf_sandbox_peer_address": "10.253.201.2/24",
 "lqos_bpf_sandbox_pin_root": "$work/bpffs", "lqos_bpf_state_dir": "$work/state",
 "lqos_bpf_attach_state_dir": "$work/attach"}
JSON
cleanup() {
  ansible-playbook deploy.yml -e "@$work/vars.json" -e lqos_bpf_sandbox_state=absent >"$work/absent.log" 2>&1 ||
    { echo "removing the sandbox failed:" >&2; cat "$work/absent.log" >&2; }
  rm -rf "$work"
}
trap cleanup EXIT
cd "$here"
echo "$(ansible --version | head -1), $(python --version): approved deploy on the sandbox lqci${tag}0"
ansible-playbook deploy.yml -e "@$work/vars.json" -e lqos_bpf_approve=true
