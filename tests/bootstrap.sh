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
# the whole pinned test stack (tests/requirements.txt), a second venv with the oldest declared
# ansible-core (tests/requirements-oldest.txt) and a third with the newest ansible-core
# (tests/requirements-newest.txt) on a Python >= 3.12 it finds (python3.13/python3.12 on PATH, pyenv's
# versions; LQOS_NEWEST_PYTHON names one) or, where only pyenv is there, installs with pyenv.
# Idempotent; safe to rerun.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LQOS_VENV:-/opt/lqos-bpf/venv}
oldest_venv=${LQOS_OLDEST_VENV:-/opt/lqos-bpf/venv-oldest}
newest_venv=${LQOS_NEWEST_VENV:-/opt/lqos-bpf/venv-newest}
tests=false
case "${1:-}" in
  -h|--help)
    # The header of this file is its help.
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    echo "It also links .collections/ansible_collections/lqos/bpf to the checkout, so lqos.bpf resolves from it."
    exit 0
    ;;
esac
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

# A Python >= 3.12 with venv and ensurepip (the newest ansible-core's floor).
python_ok() {
  "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 12))' 2>/dev/null
}
find_python312() {
  local cand pyenv_root
  pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  # shellcheck disable=SC2012
  for cand in "${LQOS_NEWEST_PYTHON:-}" python3.13 python3.12 python3 \
              $(ls -d "$pyenv_root"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
    [ -n "$cand" ] || continue
    cand=$(command -v "$cand" 2>/dev/null) || continue
    if python_ok "$cand"; then echo "$cand"; return 0; fi
  done
  # pyenv without a 3.12+: build one (needs a compiler and python.org).
  if [ -x "$pyenv_root/bin/pyenv" ] && PYENV_ROOT=$pyenv_root "$pyenv_root/bin/pyenv" install -s 3.12 >&2; then
    # shellcheck disable=SC2012
    cand=$(ls -d "$pyenv_root"/versions/3.12*/bin/python3 2>/dev/null | sort -rV | head -1)
    if [ -n "$cand" ] && python_ok "$cand"; then echo "$cand"; return 0; fi
  fi
  return 1
}

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
  # The newest ansible-core needs Python >= 3.12 (Debian 12 has 3.11): sanity, unit tests and one deploy on it.
  newest_python=$(find_python312) || {
    echo "bootstrap: the newest ansible-core needs Python >= 3.12 and none was found or installed:" \
         "set LQOS_NEWEST_PYTHON to one (README: Python 3.12 for the newest ansible-core)" >&2
    exit 1
  }
  if [ -x "$newest_venv/bin/python" ] && ! python_ok "$newest_venv/bin/python"; then
    echo "bootstrap: $newest_venv has a Python older than 3.12: recreating it"
    rm -rf "$newest_venv"
  fi
  if [ ! -x "$newest_venv/bin/python" ]; then
    echo "bootstrap: creating $newest_venv with $newest_python"
    "$newest_python" -m venv "$newest_venv"
  fi
  if ! "$newest_venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/tests/requirements-newest.txt"; then
    echo "bootstrap: pip install -r tests/requirements-newest.txt failed" >&2
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
  # (2.21 asks for pip 25.2, 2.19 for pip 24.2, 2.16 for pip 23.1.2.)
  mkdir -p "$HOME/.ansible/test/cache"
  for v in 25_2 24_2 23_1_2; do
    cp "$here/tests/sanity/get_pip_offline.py" "$HOME/.ansible/test/cache/get_pip_$v.py"
  done
fi

export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
cd "$here"
if [ $# -gt 0 ]; then
  exec "$@"
fi
