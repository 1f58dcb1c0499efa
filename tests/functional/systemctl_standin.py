"""(Run as ``python3 systemctl_standin.py ARGS``.) A stand-in for systemd's ``systemctl`` on this machine, which has no systemd as PID 1: just enough of
``show``, ``start``, ``stop``, ``mask --runtime`` and ``unmask --runtime`` for the service module's systemd
states to run against the real shaperd, started as a plain process. The molecule VMs run the real systemd.

Units live in ``$LQOS_TEST_SYSTEMCTL_DIR/<unit>.json``: {"argv": [...], "active": bool, "pid": int, "masked":
"runtime" | "persistent" | null, "n_restarts": int}; a unit without a file is ``not-found``. Every call is
appended to ``calls.log`` there (one argv per line, JSON), so a test can assert the exact argument lists."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

DIR = os.environ["LQOS_TEST_SYSTEMCTL_DIR"]


def load(unit: str) -> dict | None:
    path = os.path.join(DIR, unit + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def save(unit: str, data: dict) -> None:
    with open(os.path.join(DIR, unit + ".json"), "w") as fh:
        json.dump(data, fh)


def alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list) -> int:
    with open(os.path.join(DIR, "calls.log"), "a") as fh:
        fh.write(json.dumps(argv) + "\n")
    verb, unit = argv[0], argv[-1]
    data = load(unit)
    if verb == "show":
        props = argv[1].split("=", 1)[1].split(",")
        if data is None:
            values = {"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead", "MainPID": "0",
                      "NRestarts": "0", "UnitFileState": "", "ExecStart": ""}
        else:
            running = data["active"] and alive(data["pid"])
            exe = data["argv"][0]
            file_state = {"runtime": "masked-runtime", "persistent": "masked"}.get(data["masked"], "enabled")
            values = {"LoadState": "masked" if data["masked"] else "loaded",
                      "ActiveState": "active" if running else ("failed" if data["active"] else "inactive"),
                      "SubState": "running" if running else ("failed" if data["active"] else "dead"),
                      "MainPID": str(data["pid"] if running else 0), "NRestarts": str(data["n_restarts"]),
                      "UnitFileState": file_state,
                      "ExecStart": "" if data["masked"] else "{ path=%s ; argv[]=%s ; ignore_errors=no ; "
                                   "start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
                                   % (exe, " ".join(data["argv"]))}
        for prop in props:
            sys.stdout.write("%s=%s\n" % (prop, values[prop]))
        return 0
    if data is None:
        sys.stderr.write("Unit %s not found.\n" % unit)
        return 5
    if verb == "start":
        if data["masked"]:
            sys.stderr.write("Failed to start %s: Unit %s is masked.\n" % (unit, unit))
            return 1
        if not (data["active"] and alive(data["pid"])):
            err = open(os.path.join(DIR, unit + ".stderr"), "a")
            proc = subprocess.Popen(data["argv"], stdout=subprocess.DEVNULL, stderr=err, cwd="/",
                                    start_new_session=True)
            data.update(active=True, pid=proc.pid)
            save(unit, data)
        return 0
    if verb == "stop":
        if data["pid"] and alive(data["pid"]):
            os.kill(data["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 30
            while alive(data["pid"]) and time.monotonic() < deadline:
                time.sleep(0.02)
        data.update(active=False, pid=0)
        save(unit, data)
        return 0
    if verb in ("mask", "unmask") and argv[1] == "--runtime":
        if verb == "mask" and not data["masked"]:
            data["masked"] = "runtime"
        elif verb == "unmask" and data["masked"] == "runtime":
            data["masked"] = None
        save(unit, data)
        return 0
    sys.stderr.write("systemctl stand-in: %s is not supported\n" % " ".join(argv))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
