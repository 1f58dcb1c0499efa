#!/usr/bin/env bash
# Install what this collection needs on a Debian 12 / Ubuntu host, then run the command given
# after the options (if any) with the collection's Python environment.
#
#   bash tests/bootstrap.sh ansible-playbook deploy.yml   # what a deployment needs, then the command
#   bash tests/bootstrap.sh --tests                       # ... and the test stack (install only)
#   bash tests/bootstrap.sh --tests pytest tests/unit
#
# Always: the BPF toolchain (clang, llc, bpftool, libbpf, bindgen, gcc-multilib), iproute2, and a venv
# with the controller's packages (requirements.txt, at the versions tests/requirements.txt pins).
# With --tests (tests/run-all.sh passes it): also QEMU + debootstrap for the molecule VMs, shellcheck,
# the whole pinned test stack (tests/requirements.txt), and a second venv with the oldest declared
# ansible-core (tests/requirements-oldest.txt). Idempotent; safe to rerun.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LQOS_VENV:-/opt/lqos-bpf/venv}
oldest_venv=${LQOS_OLDEST_VENV:-/opt/lqos-bpf/venv-oldest}
tests=false
if [ "${1:-}" = "--tests" ]; then
  tests=true
  shift
fi
apt_packages=(
  clang llvm bpftool libbpf-dev libbpf1 bindgen gcc-multilib binutils
  iproute2 iputils-ping ca-certificates openssh-client
  python3 python3-venv python3-cffi
)
if $tests; then
  apt_packages+=(git shellcheck python3-ply qemu-system-x86 qemu-utils debootstrap e2fsprogs)
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (it installs packages and the tests load BPF programs)" >&2
  exit 1
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
if $tests; then
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/tests/requirements.txt"; then
    echo "bootstrap: pip install -r tests/requirements.txt failed" >&2
    exit 1
  fi
  # The oldest ansible-core the collection declares (meta/runtime.yml), for sanity, lint and unit tests on it.
  if [ ! -x "$oldest_venv/bin/python" ]; then
    echo "bootstrap: creating $oldest_venv"
    python3 -m venv "$oldest_venv"
  fi
  if ! "$oldest_venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/tests/requirements-oldest.txt"; then
    echo "bootstrap: pip install -r tests/requirements-oldest.txt failed" >&2
    exit 1
  fi
else
  # The controller's packages at the tested versions, and cffi: the embedded default runs its modules with
  # this venv's python.
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt" cffi \
       -c "$here/tests/requirements.txt"; then
    echo "bootstrap: pip install -r requirements.txt failed" >&2
    exit 1
  fi
fi

# ansible-playbook run from the checkout finds lqos.bpf through ansible.cfg's collections_path.
link="$here/.collections/ansible_collections/lqos/bpf"
mkdir -p "$(dirname "$link")"
# An installed copy there (e.g. from `ansible-galaxy collection install -p .collections`) would shadow the checkout.
if [ -e "$link" ] && [ ! -L "$link" ]; then rm -rf "$link"; fi
ln -sfn ../../.. "$link"

if $tests; then
  # ansible-test fetches its pip bootstrap from a host outside the package registries; use the offline stand-in.
  # (2.19 asks for pip 24.2, 2.16 for pip 23.1.2.)
  mkdir -p "$HOME/.ansible/test/cache"
  for v in 24_2 23_1_2; do
    cp "$here/tests/sanity/get_pip_offline.py" "$HOME/.ansible/test/cache/get_pip_$v.py"
  done
fi

export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
cd "$here"
if [ $# -gt 0 ]; then
  exec "$@"
fi
