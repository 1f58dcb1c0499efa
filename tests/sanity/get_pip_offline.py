"""Stand-in for ansible-test's pip bootstrap script (get-pip.py) on machines that reach
the package index but not ci-files.testing.ansible.com.

pip comes from the interpreter's own ensurepip; then the requested packages are
installed from the configured index. Arguments are pip-install arguments.
"""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; the next pip must see the site config.
os.environ.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
