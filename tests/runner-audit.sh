#!/usr/bin/env bash
# The audit as fleets run it, under ansible-runner (what AWX runs in an execution environment): the job's
# artifact (set_stats data of the playbook_on_stats event) must carry the fleet's verdict. Two partial audits,
# as AWX job slicing makes them: the second run merges the first one's artifact (lqos_bpf_report_inputs) with
# its own host into one report. Read-only on this machine: no report folder, a pin root that is no bpffs,
# sandbox names that do not exist.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/lqos-runner.XXXXXX)
trap 'rm -rf "$work"' EXIT
py=$(command -v python)
common='"lqos_bpf_report_dir": "", "lqos_bpf_audit_fail_on_drift": false, "lqos_bpf_pin_root": "'$work'/nobpffs",
 "lqos_bpf_sandbox_pin_root": "'$work'/nobpffs", "lqos_bpf_sandbox_netns": "lqos-runner-none",
 "lqos_bpf_state_dir": "'$work'/state"'
mkdir -p "$work/nobpffs" "$work/one/env" "$work/two/env" "$work/two/inventory"
printf '{%s}\n' "$common" > "$work/one/env/extravars"
# The first part: no inventory, the embedded default's sandbox host.
ansible-runner run "$work/one" --project-dir "$here" -p audit.yml --ident one -q >/dev/null ||
  { cat "$work/one/artifacts/one/stdout" >&2; exit 1; }
artifact() {
  python - "$1" <<'PY'
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/job_events/*.json")):
    with open(path) as fh:
        event = json.load(fh)
    if event.get("event") == "playbook_on_stats":
        print(json.dumps(event["event_data"]["artifact_data"]["lqos_bpf_audit_report"]))
        break
else:
    sys.exit("no playbook_on_stats event with artifact data in %s" % sys.argv[1])
PY
}
artifact "$work/one/artifacts/one" > "$work/one.json"
# The second part: another host, and the first part's artifact as an input.
printf 'slice2 ansible_connection=local ansible_python_interpreter=%s\n' "$py" > "$work/two/inventory/hosts"
python - "$work/one.json" "$common" > "$work/two/env/extravars" <<'PY'
import json, sys
extra = json.loads("{%s}" % sys.argv[2])
extra["lqos_bpf_report_inputs"] = [json.load(open(sys.argv[1]))]
extra["lqos_bpf_interfaces"] = []
print(json.dumps(extra))
PY
ansible-runner run "$work/two" --project-dir "$here" -p audit.yml --ident two -q >/dev/null ||
  { cat "$work/two/artifacts/two/stdout" >&2; exit 1; }
artifact "$work/two/artifacts/two" > "$work/two.json"
PYTHONPATH="$here/.collections${PYTHONPATH:+:$PYTHONPATH}" python - "$work/one.json" "$work/two.json" <<'PY'
import json, sys
from ansible_collections.lqos.bpf.plugins.plugin_utils._report.report import REPORT_VERSION, STATUSES
one, two = (json.load(open(p)) for p in sys.argv[1:3])
for name, report, hosts in (("first part", one, ["sandbox"]), ("merged", two, ["sandbox", "slice2"])):
    assert report["schema_version"] == REPORT_VERSION, (name, report.get("schema_version"))
    assert sorted(report["hosts"]) == hosts and report["hosts_total"] == len(hosts), (name, sorted(report["hosts"]))
    assert isinstance(report["ok"], bool) and report["ok"] == (not report["drifted_hosts"]), name
    assert sum(report["status_counts"].values()) == len(hosts), (name, report["status_counts"])
    assert all(report["hosts"][h]["status"] in STATUSES for h in hosts), name
assert two["hosts"]["sandbox"] == one["hosts"]["sandbox"]
print("ansible-runner: artifact verdicts - first part: ok=%s %s; merged (2 parts): ok=%s %s" % (
    one["ok"], one["status_counts"], two["ok"], two["status_counts"]))
PY
