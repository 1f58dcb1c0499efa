"""Partial fleet reports (AWX job slices, one audit per site) merged into one, on plain data."""
from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.lqos.bpf.plugins.plugin_utils._report import report as R
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import render as RR

META = {"generated_at": "2026-12-06T03:00:00Z", "spec": "reference", "collection": {"name": "lqos.bpf",
                                                                                    "version": "0.1.0"}}


def result(sha="a" * 64, check_ok=True, build_id="1111aaaa2222bbbb"):
    """An abi_info result (only the keys the report reads): built and ABI-checked, nothing attached."""
    return {"kernel": {"release": "6.1.0-27-amd64"}, "toolchain": {"clang": "14.0.6"},
            "build": {"build_id": build_id, "object": {"sha256": sha}, "skeleton": {"programs": ["xdp_shaper"]}},
            "abi_check": {"ok": check_ok, "build_id": build_id, "summary": "s",
                          "problems": [] if check_ok else ["struct flow_key: size 40 in C, 48 in Rust"]},
            "attached": [], "pins": {"error": None, "summary": {}, "maps": []}, "errors": []}


def as_json(report: dict) -> dict:
    """A partial report as the next job reads it back: the written JSON file, or the job artifact."""
    return json.loads(RR.to_json(R.artifact(report)))


def test_two_slices_merge_into_the_report_of_one_run_over_every_host():
    fleet = {"s1": result(), "s2": result(check_ok=False), "s3": None, "s4": result(sha="b" * 64)}
    whole = R.aggregate(fleet, META)
    part1 = as_json(R.aggregate({h: fleet[h] for h in ("s1", "s2")}, META))
    part2 = as_json(R.aggregate({h: fleet[h] for h in ("s3", "s4")}, META))
    merged = R.merge([part1, part2], meta=META)
    assert merged == whole
    assert merged["schema_version"] == R.REPORT_VERSION and merged["ok"] is False
    assert merged["drifted_hosts"] == ["s2"] and merged["hosts_total"] == 4
    assert merged["status_counts"]["no_data"] == 1 and merged["objects"] == 2
    assert R.summary_line(merged) == R.summary_line(whole)


def test_this_runs_hosts_join_the_parts_and_a_part_is_not_modified():
    part = as_json(R.aggregate({"s1": result()}, META))
    kept = copy.deepcopy(part)
    merged = R.merge([part], [R.host_summary("s2", result())], META)
    assert sorted(merged["hosts"]) == ["s1", "s2"] and merged["ok"] is True
    assert part == kept


def test_a_host_in_two_parts_with_different_rows_is_refused_by_name():
    one = as_json(R.aggregate({"s1": result()}, META))
    other = as_json(R.aggregate({"s1": result(check_ok=False)}, META))
    assert R.merge([one, copy.deepcopy(one)], meta=META)["hosts_total"] == 1   # the same audit twice is fine
    with pytest.raises(R.ReportMergeError, match="host s1 is in input 1 and in input 2 with different results"):
        R.merge([one, other], meta=META)


@pytest.mark.parametrize("part, error", [
    ({"schema_version": 2, "hosts": {}}, "input 1 has report schema_version 2; this collection reads %d"),
    ({"version": 2, "hosts": {}}, "input 1 has report schema_version 2"),
    ({"schema_version": 3}, "input 1 is not a fleet ABI report"),
    ("reports/x.json", "input 1 is not a fleet ABI report"),
])
def test_a_part_of_another_schema_or_no_report_is_one_clear_error(part, error):
    with pytest.raises(R.ReportMergeError) as exc:
        R.merge([part], meta=META)
    assert str(exc.value).startswith(error.replace("%d", str(R.REPORT_VERSION)))
