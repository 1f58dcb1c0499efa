"""abi_info's ``service`` section, the pure parts with plain data: the running programs, the tag comparison (through
the service module's own verification), the ABI check verdict from the deploy role's record, the problems lines."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from ansible_collections.lqos.bpf.plugins.module_utils._info import service as S

CONFIG = {"path": "/etc/shaperd.conf", "kind": "shaperd", "mode": "bridge", "use_xdp_bridge": False,
          "interfaces": [{"name": "wan0", "role": "internet", "netns": None},
                         {"name": "lan0", "role": "isp", "netns": None}]}
TAGS = {"xdp_shaper": "00000000000000aa", "tc_classify": "00000000000000bb"}
EMB, OTHER = "e" * 64, "f" * 64
REC = "/var/lib/lqos-bpf/service/lqosd/abi-check.json"


def prog(pid, name, tag, owner="service"):
    return {"id": pid, "name": name, "tag": tag, "owner": owner}


def hooks(xdp_tag="00000000000000aa", owner="service"):
    return [{"interface": "wan0", "netns": None, "xdp": dict(prog(1, "xdp_shaper", xdp_tag, owner), mode="native"),
             "tc_egress": prog(2, "tc_classify", "00000000000000bb"), "tc_ingress": None},
            {"interface": "lan0", "netns": "ns", "xdp": dict(prog(3, "xdp_shaper", "00000000000000aa"), mode="skb"),
             "tc_egress": prog(4, "tc_classify", "00000000000000bb"), "tc_ingress": prog(5, "other", "01", "foreign")}]


def test_running_programs_are_the_ones_the_main_process_holds_in_configuration_order():
    assert S.running_programs(hooks(owner="foreign")) == [
        {"interface": "wan0", "netns": None, "hook": "tc_egress", "id": 2, "name": "tc_classify",
         "tag": "00000000000000bb"},
        {"interface": "lan0", "netns": "ns", "hook": "xdp", "id": 3, "name": "xdp_shaper", "tag": "00000000000000aa"},
        {"interface": "lan0", "netns": "ns", "hook": "tc_egress", "id": 4, "name": "tc_classify",
         "tag": "00000000000000bb"}]
    assert S.running_programs([]) == [] and S.running_programs(None) == []


def test_compare_match_differ_and_unknown():
    assert S.compare(CONFIG, hooks(), TAGS, 812, "the embedded object") == ("match", [], None)
    verdict, diffs, why = S.compare(CONFIG, hooks(xdp_tag="00000000000000cc"), TAGS, 812, "the embedded object")
    assert verdict == "differ" and why is None
    assert diffs == ["wan0 XDP: xdp_shaper (id 1, owner service) has tag 00000000000000cc; expected 00000000000000aa "
                     "(the tag of xdp_shaper in the embedded object)."]
    assert S.compare(CONFIG, hooks(), TAGS, 0, "x") == (
        "unknown", [], "the service is not running, so no programs of it run")
    assert S.compare(CONFIG, hooks(), "the trial load failed", 812, "x") == ("unknown", [], "the trial load failed")
    assert S.compare(CONFIG, hooks(), None, 812, "x")[0] == "unknown"


@pytest.mark.parametrize("record,embedded,pid,vs,verdict,reason", [
    ({"object_sha256": EMB, "ok": True}, EMB, 812, "match", "passed", None),
    ({"object_sha256": EMB, "ok": False, "summary": "1 mismatch"}, EMB, 812, "match", "failed",
     "the ABI check recorded at %s failed: 1 mismatch" % REC),
    (None, EMB, 812, "match", "unknown", "no ABI check of the embedded object is recorded at %s (the deploy role's "
                                         "service loader writes it when it checks the installed build)" % REC),
    ("the ABI check record x cannot be read: bad", EMB, 812, "match", "unknown",
     "the ABI check record x cannot be read: bad"),
    ({"object_sha256": OTHER, "ok": True}, EMB, 812, "match", "unknown",
     "the ABI check recorded at %s is of object ffffffffffff, not of the object embedded in the installed binary "
     "(eeeeeeeeeeee): this build was not checked by the deploy" % REC),
    ({"object_sha256": None, "ok": True}, EMB, 812, "match", "unknown",
     "the ABI check recorded at %s is of object none, not of the object embedded in the installed binary "
     "(eeeeeeeeeeee): this build was not checked by the deploy" % REC),
    ({"object_sha256": EMB, "ok": False}, EMB, 0, "unknown", "unknown",
     "the service is not running (its embedded object failed the ABI check recorded at %s)" % REC),
    ({"object_sha256": EMB, "ok": True}, EMB, 812, "differ", "unknown",
     "the running programs are not known to be the embedded object's (tags_vs_embedded: differ), so its check "
     "(passed) does not speak for them"),
    ({"object_sha256": EMB, "ok": True}, None, 812, "unknown", "unknown",
     "no check can be said to be of the object the service runs: the object its binary embeds is not known"),
])
def test_the_abi_check_verdict(record, embedded, pid, vs, verdict, reason):
    assert S.abi_check_verdict(record, REC, embedded, pid, vs) == (verdict, reason)


def test_the_abi_check_verdict_names_why_there_is_no_object():
    assert S.abi_check_verdict({"object_sha256": EMB, "ok": True}, REC, None, 812, "unknown", "it embeds none") == (
        "unknown", "no check can be said to be of the object the service runs: it embeds none")


def test_problems_name_the_unit_and_the_fix():
    base = {"unit": "lqosd.service", "binary": {"path": "/opt/libreqos/src/bin/lqosd"},
            "tags_vs_embedded": "match", "abi_check": "passed", "differences": {"embedded": [], "build": ["b"]},
            "reasons": {"abi_check": None}}
    assert S.service_problems(base) == []
    assert S.service_problems(dict(base, tags_vs_build="differ")) == []   # a newer build, not deployed yet
    assert S.service_problems(dict(base, tags_vs_embedded="unknown", abi_check="unknown")) == []
    assert S.service_problems(None) == []
    differ = dict(base, tags_vs_embedded="differ", abi_check="unknown",
                  differences={"embedded": ["wan0 XDP: a.", "lan0 XDP: b."], "build": []})
    assert S.service_problems(differ) == [
        "service lqosd.service does not run the object embedded in its installed binary /opt/libreqos/src/bin/lqosd "
        "(2 difference(s): wan0 XDP: a. lan0 XDP: b.). Fix: run the deploy (lqos_bpf_loader: service) so the "
        "installed build is checked and the service restarted in its window, or reinstall the build it runs."]
    failed = dict(base, abi_check="failed", reasons={"abi_check": "the ABI check recorded at r failed: s"})
    assert S.service_problems(failed) == [
        "service lqosd.service runs an object that failed the ABI check: the ABI check recorded at r failed: s. "
        "Fix: install a build whose embedded object passes (the Rust mirrors and the C agree) and deploy it, or "
        "roll back to the previous build."]


def test_the_record_is_read_where_the_deploy_role_writes_it(tmp_path):
    assert S.record_path("/var/lib/lqos-bpf", "lqosd.service") == REC
    path = tmp_path / "abi-check.json"
    assert S.read_record(str(path)) is None
    path.write_text(json.dumps({"object_sha256": EMB, "ok": True}))
    assert S.read_record(str(path)) == {"object_sha256": EMB, "ok": True}
    path.write_text("[1]")
    assert S.read_record(str(path)) == "the ABI check record %s is not a JSON object" % path
    path.write_text("{")
    assert S.read_record(str(path)).startswith("the ABI check record %s cannot be read: " % path)


def _tasks(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def test_the_deploy_role_records_its_check_of_the_embedded_object_where_abi_info_reads_it():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "roles", "deploy", "tasks",
                        "service.yml")
    with open(path) as fh:
        tasks = list(_tasks(yaml.safe_load(fh)))
    [where] = [t["ansible.builtin.set_fact"]["deploy_svc_dir"] for t in tasks
               if "deploy_svc_dir" in (t.get("ansible.builtin.set_fact") or {})]
    assert where == "{{ lqos_bpf_state_dir }}/service/{{ lqos_bpf_service | regex_replace('[.]service$', '') }}"
    name = "Service loader - ABI-check and trial-load the object the service will run"
    [check] = [t for t in tasks if t.get("name") == name]
    assert check["lqos.bpf.abi_check"]["object"] == "{{ deploy_svc_dir }}/embedded.o"
    assert check["lqos.bpf.abi_check"]["record"] == "{{ deploy_svc_dir }}/" + S.ABI_CHECK_RECORD
    # abi_info's unit is the service module's (``.service`` appended); both name the folder without it.
    assert S.record_path("{{ lqos_bpf_state_dir }}", "shaperd.service") == (
        "{{ lqos_bpf_state_dir }}/service/shaperd/abi-check.json")
