"""The fleet ABI report: classification, grouping, drift and the three renderings, on plain data."""
from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.lqos.bpf.plugins.plugin_utils._report import report as R
from ansible_collections.lqos.bpf.plugins.plugin_utils._report import render as RR

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "roles", "audit",
                         "templates")
MD = os.path.join(TEMPLATES, "fleet-abi-report.md.j2")
HTML = os.path.join(TEMPLATES, "fleet-abi-report.html.j2")
META = {"generated_at": "2026-11-30T05:00:00Z", "spec": "reference", "collection": {"name": "lqos.bpf",
                                                                                    "version": "0.1.0"}}
SHA_A = "a" * 64
SHA_B = "b" * 64


def host(sha=SHA_A, build_id="1111aaaa2222bbbb", check_ok=True, check_build=None, pins=(), xdp=None, tc=(),
         error=None):
    """An abi_info result as the module returns it (only the keys the report reads)."""
    return {
        "kernel": {"release": "6.1.0-27-amd64"},
        "toolchain": {"clang": "14.0.6", "libbpf": "1.1"},
        "build": None if sha is None else {
            "build_id": build_id, "object": {"sha256": sha},
            "skeleton": {"object": "shaper_kern", "programs": ["xdp_shaper"]}},
        "abi_check": None if check_ok is None else {
            "ok": check_ok, "build_id": check_build or build_id, "summary": "spec 'reference': summary",
            "problems": [] if check_ok else ["struct flow_key: size 40 in C, 48 in Rust: fix FlowKey"]},
        "attached": [{"interface": "eth1", "netns": None, "error": error, "xdp": xdp,
                      "tc": [dict(t, interface="eth1", netns=None) for t in tc]}],
        "pins": {"error": None, "summary": {"total": len(pins), "compatible": 0},
                 "maps": [{"name": n, "status": s, "reason": r} for n, s, r in pins]},
        "errors": [],
    }


def xdp(tag="0a0a", expected="0a0a", matches=True, name="xdp_shaper"):
    return {"name": name, "id": 7, "tag": tag, "mode": "native", "expected_program": "xdp_shaper",
            "expected_tag": expected, "matches": matches}


@pytest.mark.parametrize("result,status", [
    (host(), "built"),                              # built and checked, nothing attached
    (host(pins=[("flow_table", "missing", "")] * 8), "built"),
    (host(check_ok=None), "unchecked"),
    (host(check_build="9999"), "unchecked"),       # the recorded check is for another build
    (host(sha=None, check_ok=None), "not_built"),
    (None, "no_data"),
    ({"failed": True, "msg": "boom"}, "no_data"),
    ({"unreachable": True, "msg": "ssh: no route"}, "no_data"),
    ({"changed": False, "msg": "failed_when: false kept it"}, "no_data"),
    (host(check_ok=False), "drift"),
    (host(pins=[("host_traffic", "incompatible", "value_size: expected 112, pinned 128")]), "drift"),
    (host(pins=[("maps.debug", "not_a_map", "")], xdp=xdp()), "deployed"),
    (host(pins=[("flow_table", "missing", "")], xdp=xdp()), "drift"),  # missing under attached programs
    (host(xdp=xdp(tag="ffff", matches=False)), "drift"),
    (host(xdp=xdp(matches=None)), "deployed"),      # no deploy record: nothing asserted
    (host(sha=None, check_ok=None, pins=[("x", "incompatible", "key")]), "drift"),
])
def test_host_status(result, status):
    assert R.host_summary("h1", result)["status"] == status


def test_drift_items_name_the_host_the_kind_and_the_detail():
    row = R.host_summary("shaper3", host(
        check_ok=False,
        pins=[("host_traffic", "incompatible", "value_size: expected 112, pinned 128")],
        xdp=xdp(tag="ffff", matches=False),
        tc=[{"direction": "egress", "name": "other_prog", "id": 9, "tag": "cc", "expected_program": "tc_classify",
             "expected_tag": "dd", "matches": False},
            {"direction": "ingress", "name": None, "id": None, "tag": None,
             "expected_program": "tc_bridge_redirect", "expected_tag": "ee", "matches": False}]))
    assert row["drift"] == [
        {"host": "shaper3", "kind": "abi", "subject": "build 1111aaaa2222bbbb",
         "detail": "struct flow_key: size 40 in C, 48 in Rust: fix FlowKey"},
        {"host": "shaper3", "kind": "pin", "subject": "host_traffic",
         "detail": "value_size: expected 112, pinned 128"},
        {"host": "shaper3", "kind": "program", "subject": "eth1 xdp",
         "detail": "xdp_shaper runs tag ffff, the deploy recorded 0a0a"},
        {"host": "shaper3", "kind": "program", "subject": "eth1 tc-egress",
         "detail": "other_prog (id 9) is attached where tc_classify is expected"},
        {"host": "shaper3", "kind": "program", "subject": "eth1 tc-ingress",
         "detail": "nothing attached where tc_bridge_redirect is expected"},
    ]


def test_truncated_kernel_program_names_still_match():
    row = R.host_summary("h", host(tc=[{"direction": "ingress", "name": "tc_bridge_redir", "id": 3, "tag": "aa",
                                        "expected_program": "tc_bridge_redirect", "expected_tag": "bb",
                                        "matches": False}]))
    assert row["drift"][0]["detail"] == "tc_bridge_redir runs tag aa, the deploy recorded bb"


def test_stale_check_and_interface_errors_are_warnings_not_drift():
    row = R.host_summary("h", host(check_build="0000", error="interface eth1 does not exist"))
    assert row["status"] == "unchecked"
    assert row["drift"] == []
    assert row["warnings"] == ["the recorded ABI check is for build 0000, not the current build 1111aaaa2222bbbb",
                               "interface eth1: interface eth1 does not exist"]


def test_aggregate_groups_by_object_hash_and_status():
    results = {
        "s1": host(xdp=xdp()), "s2": host(xdp=xdp()), "s3": host(sha=SHA_B, build_id="bbbb", xdp=xdp()),
        "s4": host(pins=[("flow_table", "incompatible", "key_size")]),
        "s5": None, "s6": host(sha=None, check_ok=None),
    }
    report = R.aggregate(results)
    assert report["hosts_total"] == 6
    assert report["ok"] is False
    assert report["status_counts"] == {"drift": 1, "deployed": 3, "built": 0, "unchecked": 0, "not_built": 1,
                                       "no_data": 1}
    assert report["drifted_hosts"] == ["s4"]
    assert [(g["status"], g["object_sha256"], g["hosts"]) for g in report["groups"]] == [
        ("drift", SHA_A, ["s4"]),
        ("deployed", SHA_A, ["s1", "s2"]),
        ("deployed", SHA_B, ["s3"]),
        ("not_built", None, ["s6"]),
        ("no_data", None, ["s5"]),
    ]
    assert report["by_object"] == {SHA_A: ["s1", "s2", "s4"], SHA_B: ["s3"], "none": ["s5", "s6"]}
    assert report["objects"] == 2
    assert R.summary_line(report) == ("fleet ABI audit: 6 host(s), 2 object hash(es): 1 drift, 3 deployed, 1 not_built, "
                                      "1 no_data; 1 drift finding(s) on s4")


def test_a_fleet_without_drift_is_ok():
    report = R.aggregate({"a": host(), "b": host(check_ok=None)})
    assert report["ok"] is True and report["drift"] == [] and report["drifted_hosts"] == []


def test_aggregate_does_not_modify_its_input():
    results = {"a": host(pins=[("m", "incompatible", "x")]), "b": None}
    before = copy.deepcopy(results)
    R.aggregate(results)
    assert results == before


def test_json_rendering_round_trips():
    report = R.aggregate({"a": host(), "b": host(check_ok=False)}, META)
    assert json.loads(RR.to_json(report)) == json.loads(json.dumps(report))
    assert report["generated_at"] == META["generated_at"] and report["spec"] == "reference"
    assert report["collection"] == {"name": "lqos.bpf", "version": "0.1.0"}
    assert set(report["legend"]) == set(R.STATUSES)
    from ansible_collections.lqos.bpf.plugins.module_utils._maps.audit import STATUSES as PIN_STATUSES
    assert list(report["pin_legend"]) == list(PIN_STATUSES)  # every pin status the audit can count is explained


def test_markdown_template_lists_groups_drift_hosts_and_the_legend_with_short_hashes():
    report = R.aggregate({"a|b": host(pins=[("m", "incompatible", "key_size | value_size")]),
                          "c": host(sha=SHA_B, xdp=xdp())}, META)
    md = RR.render(report, MD)
    assert md.startswith("# Fleet ABI report\n")
    assert "| 2026-11-30T05:00:00Z | reference | lqos.bpf 0.1.0 | 2 |" in md
    assert "| drift | `aaaaaaaaaaaa` | 1111aaaa2222bbbb | a\\|b |" in md
    assert "| deployed | `bbbbbbbbbbbb` |" in md
    assert "| a\\|b | pin | m | key_size \\| value_size |" in md
    assert "| c | deployed | - | - | - | - | - | 6.1.0-27-amd64 | `bbbbbbbbbbbb` | eth1 xdp xdp_shaper 0a0a |" in md
    assert "| built | %s |" % R.LEGEND["built"] in md
    assert "| not_a_map | %s |" % R.PIN_LEGEND["not_a_map"] in md
    assert SHA_A not in md and SHA_B not in md  # short everywhere


def test_html_template_is_self_contained_escaped_with_full_hashes_on_hover():
    report = R.aggregate({"<b>evil</b>": host(pins=[("m", "incompatible", "<script>alert(1)</script>")])}, META)
    page = RR.render(report, HTML)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "<style>" in page
    assert '<code title="%s">%s</code>' % (SHA_A, SHA_A[:12]) in page
    assert "<td>2026-11-30T05:00:00Z</td>" in page and "<td>lqos.bpf 0.1.0</td>" in page
    assert '<tr class="built"><td>built</td><td>%s</td></tr>' % R.LEGEND["built"] in page


def test_no_drift_renders_no_drift():
    report = R.aggregate({"a": host()}, META)
    assert "No drift." in RR.render(report, MD)
    assert "<p>No drift.</p>" in RR.render(report, HTML)


def test_a_users_template_replaces_the_built_in_one_and_its_errors_are_one_message(tmp_path):
    mine = tmp_path / "mine.md.j2"
    mine.write_text("{{ report.hosts_total }} hosts, {{ report.status_counts.deployed }} deployed\n")
    report = R.aggregate({"a": host(xdp=xdp()), "b": host()}, META)
    assert RR.render(report, str(mine)) == "2 hosts, 1 deployed\n"
    mine.write_text("{{ report.no_such_key }}")
    with pytest.raises(RR.ReportTemplateError) as err:
        RR.render(report, str(mine))
    assert str(err.value).startswith("cannot render the report template %s: UndefinedError: " % mine)


def test_collection_version_from_galaxy_yml_or_manifest(tmp_path):
    (tmp_path / "galaxy.yml").write_text("namespace: lqos\nversion: 1.2.3\n")
    assert RR.collection_version(str(tmp_path)) == "1.2.3"
    (tmp_path / "MANIFEST.json").write_text('{"collection_info": {"version": "1.2.4"}}')
    assert RR.collection_version(str(tmp_path)) == "1.2.4"
    assert RR.collection_version(str(tmp_path / "nothing")) is None


def test_summary_line_names_at_most_ten_drifted_hosts():
    report = R.aggregate({"h%02d" % i: host(check_ok=False) for i in range(12)})
    assert R.summary_line(report).endswith("12 drift finding(s) on h00, h01, h02, h03, h04, h05, h06, h07, h08, h09 "
                                           "and 2 more")


def verified(pct, insns_pct, stack_pct, kernel):
    return {"status": "verified", "kernel": kernel, "headroom_pct": pct,
            "insns": {"used": 2436, "headroom_pct": insns_pct}, "stack": {"used": 192, "headroom_pct": stack_pct,
                                                                          "method": "call_graph"}}


def with_programs(result, kernel, xdp_pct):
    result = copy.deepcopy(result)
    result["kernel"]["release"] = kernel
    result["programs"] = [
        {"name": "xdp_shaper", "role": "required", "verifier": verified(xdp_pct, 99.75, xdp_pct, kernel)},
        {"name": "flow_reader", "role": "optional", "verifier": {"status": "not loaded: refused", "kernel": kernel}},
        {"name": "off", "role": "disabled", "verifier": {"status": "not loaded: left out", "kernel": kernel}},
    ]
    return result


def test_the_verifier_table_is_program_by_kernel_with_the_worst_host_per_kernel():
    report = R.aggregate({
        "a": with_programs(host(), "6.1.0-27-amd64", 62.5),
        "b": with_programs(host(), "6.1.0-27-amd64", 14.06),   # the same kernel, less room: it counts
        "c": with_programs(host(), "5.10.0-33-amd64", 70.0),
        "d": host(),                                            # abi_info without programs: no row
        "e": None,
    }, META)
    vh = report["verifier_headroom"]
    assert vh["kernels"] == ["5.10.0-33-amd64", "6.1.0-27-amd64"]
    assert vh["programs"] == ["flow_reader", "off", "xdp_shaper"]
    assert vh["cells"]["xdp_shaper"]["6.1.0-27-amd64"] == {
        "status": "verified", "headroom_pct": 14.06, "insns_headroom_pct": 99.75, "stack_headroom_pct": 14.06,
        "insns": 2436, "stack": 192, "hosts": ["a", "b"]}
    assert vh["cells"]["xdp_shaper"]["5.10.0-33-amd64"]["headroom_pct"] == 70.0
    assert vh["cells"]["flow_reader"]["6.1.0-27-amd64"]["status"] == "not loaded: refused"
    assert vh["cells"]["off"]["5.10.0-33-amd64"] == {
        "status": "not loaded: left out", "headroom_pct": None, "insns_headroom_pct": None,
        "stack_headroom_pct": None, "insns": None, "stack": None, "hosts": ["c"]}
    assert report["hosts"]["a"]["verifier"][0] == {
        "program": "xdp_shaper", "kernel": "6.1.0-27-amd64", "role": "required", "status": "verified",
        "headroom_pct": 62.5, "insns_headroom_pct": 99.75, "stack_headroom_pct": 62.5, "insns": 2436, "stack": 192,
        "stack_method": "call_graph"}
    assert report["hosts"]["e"]["verifier"] == []
    md = RR.render(report, MD)
    assert "| program | 5.10.0-33-amd64 | 6.1.0-27-amd64 |\n|---|---|---|\n| flow_reader |" in md
    assert "| xdp_shaper | 70.0 % (insns 99.75 %, stack 70.0 %) | 14.06 % (insns 99.75 %, stack 14.06 %) |" in md
    assert "| flow_reader | not loaded: refused | not loaded: refused |" in md
    page = RR.render(report, HTML)
    assert '<td title="a, b">14.06 % (insns 99.75 %, stack 14.06 %)</td>' in page
    assert "<th>5.10.0-33-amd64</th><th>6.1.0-27-amd64</th>" in page


def test_no_programs_no_verifier_table():
    report = R.aggregate({"a": host()}, META)
    assert report["verifier_headroom"] == {"kernels": [], "programs": [], "cells": {}}
    assert "No verifier figures (no host reported its programs)." in RR.render(report, MD)


# ---------------------------------------------------------------------------
# Escaping by output kind, the basename, the set written all or none (issue 25, items 6-9 and 23)
# ---------------------------------------------------------------------------

EVIL_HOST = "<script>alert(1)</script>|`x`\nnext"
EVIL_IFACE = "<img src=x onerror=alert(2)>"
EVIL_MAP = "m|`y`\n<b>z</b>"


def evil_report():
    bad = host(pins=[(EVIL_MAP, "incompatible", "<i>why</i> | `code`")],
               xdp=dict(xdp(), name="[a](javascript:alert(3))"))
    bad["attached"][0]["interface"] = EVIL_IFACE
    return R.aggregate({EVIL_HOST: bad}, META)


@pytest.mark.parametrize("text,cell", [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("<img src=x onerror=alert(2)>", "&lt;img src=x onerror=alert(2)&gt;"),
    ("a|b", "a\\|b"),
    ("`x`", "\\`x\\`"),
    ("one\ntwo\r\nthree", "one<br>two<br>three"),
    ("[l](javascript:x) *b* _i_ ~~s~~", "\\[l\\](javascript:x) \\*b\\* \\_i\\_ \\~\\~s\\~\\~"),
    ("flow_table kernel's \"q\" & \\", "flow_table kernel's \"q\" &amp; \\\\"),
    (None, ""),
])
def test_md_cell_escapes_html_and_markdown(text, cell):
    assert RR.md_cell(text) == cell
    assert RR.md_cell(RR.md_cell(text)) == cell  # escaped once, never twice


def test_the_markdown_report_carries_no_html_and_no_broken_table_row_from_host_data():
    md = RR.render(evil_report(), MD)
    for raw in ("<script", "<img", "<b>", "<i>", "[a]"):
        assert raw not in md, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\`x\\`<br>next" in md
    assert "&lt;img src=x onerror=alert(2)&gt; xdp \\[a\\](javascript:alert(3))" in md
    assert "| m\\|\\`y\\`<br>&lt;b&gt;z&lt;/b&gt; | &lt;i&gt;why&lt;/i&gt; \\| \\`code\\` |" in md
    columns = None
    for line in md.splitlines():  # every table row keeps its header's column count
        if not line.startswith("|"):
            columns = None
            continue
        count = line.replace("\\|", "").count("|")
        columns = columns or count
        assert count == columns, line


def test_a_markdown_template_that_forgets_the_md_filter_is_escaped_all_the_same(tmp_path):
    mine = tmp_path / "mine.md.j2"
    mine.write_text("{% for name in report.hosts %}- {{ name }}\n{% endfor %}")
    assert RR.render(evil_report(), str(mine)) == "- &lt;script&gt;alert(1)&lt;/script&gt;\\|\\`x\\`<br>next\n"


@pytest.mark.parametrize("name", ["report.j2", "report.txt", "report.md.j2", "report"])
def test_html_output_is_escaped_whatever_the_templates_name(tmp_path, name):
    mine = tmp_path / name
    mine.write_text("<ul>{% for name in report.hosts %}<li>{{ name }}</li>{% endfor %}</ul>\n")
    page = RR.render(evil_report(), str(mine), kind="html")
    assert page == "<ul><li>&lt;script&gt;alert(1)&lt;/script&gt;|`x`\nnext</li></ul>\n"


@pytest.mark.parametrize("name", ["../../x", "a/b", "/etc/passwd", "..", ".", "", "x\0y"])
def test_a_basename_with_a_path_in_it_is_refused(tmp_path, name):
    with pytest.raises(RR.ReportError) as err:
        RR.render_set(R.aggregate({"a": host()}, META), str(tmp_path), name, ["json"], {})
    assert str(err.value).startswith("the report basename %r is not a plain file name: it must not hold a path"
                                     % name)
    assert "Fix: give a name such as fleet-abi-report" in str(err.value)
    assert os.listdir(str(tmp_path)) == []


def test_a_template_that_fails_leaves_the_older_set_untouched(tmp_path):
    report = R.aggregate({"a": host()}, META)
    old = {}
    for fmt, suffix in RR.SUFFIXES.items():
        (tmp_path / ("r" + suffix)).write_text("old " + fmt)
        old[fmt] = "old " + fmt
    broken = tmp_path / "broken.html.j2"
    broken.write_text("{{ report.no_such_key }}")
    with pytest.raises(RR.ReportTemplateError):
        RR.render_set(report, str(tmp_path), "r", ["json", "markdown", "html"], {"markdown": MD, "html": str(broken)})
    assert {fmt: (tmp_path / ("r" + s)).read_text() for fmt, s in RR.SUFFIXES.items()} == old
    files = RR.render_set(report, str(tmp_path), "r", ["json", "markdown", "html"], {"markdown": MD, "html": HTML})
    RR.write_set({path: text.encode() for path, text in files.values()})
    assert sorted(os.listdir(str(tmp_path))) == ["broken.html.j2", "r.html", "r.json", "r.md"]
    assert json.loads((tmp_path / "r.json").read_text())["hosts_total"] == 1
    assert (tmp_path / "r.md").read_text().startswith("# Fleet ABI report")


def test_write_set_writes_none_when_one_file_cannot_be_written(tmp_path):
    (tmp_path / "r.json").write_text("old json")
    (tmp_path / "r.md").write_text("old md")
    blocked = tmp_path / "sub"
    blocked.mkdir()
    (blocked / "r.html").mkdir()  # a folder where the file should go: its rename fails
    with pytest.raises(OSError):
        RR.write_set({str(tmp_path / "r.json"): b"new", str(blocked / "r.html"): b"new", str(tmp_path / "r.md"): b"new"})
    assert (tmp_path / "r.json").read_text() == "old json" and (tmp_path / "r.md").read_text() == "old md"
    assert sorted(os.listdir(str(tmp_path))) == ["r.json", "r.md", "sub"]
    assert os.listdir(str(blocked)) == ["r.html"]  # no temporary file left


def test_a_template_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(RR.ReportTemplateError) as err:
        RR.render(R.aggregate({"a": host()}, META), str(tmp_path), kind="markdown")
    assert str(err.value) == ("the report template %s is a folder, not a template file. Fix: name a Jinja2 template "
                              "file inside it (e.g. %s)" % (tmp_path, tmp_path / "fleet-abi-report.md.j2"))


@pytest.mark.parametrize("loader,cell", [
    ({"kind": "service", "units": ["lqosd.service"], "counts": {"service": 6}}, "service (lqosd.service)"),
    ({"kind": "collection", "units": [], "counts": {"collection": 3}}, "collection"),
    ({"kind": "mixed", "units": ["a.service", "b.service"]}, "mixed (a.service, b.service)"),
    ({"kind": "none", "units": []}, "none"),
    (None, None),
    ({"units": ["x.service"]}, None),
])
def test_the_loader_of_a_host_row(loader, cell):
    result = dict(host(xdp=xdp()), loader=loader) if loader is not None else host(xdp=xdp())
    row = R.host_summary("a", result)
    assert (row["loader"] or {}).get("text") == cell
    assert R.host_summary("b", None)["loader"] is None


def test_the_loader_column_in_both_renderings_escapes_host_data():
    evil = {"kind": "service", "units": ["<b>x|y</b>.service"]}
    report = R.aggregate({"a": dict(host(xdp=xdp()), loader={"kind": "service", "units": ["lqosd.service"]}),
                          "e": dict(host(), loader=evil), "old": host(), "gone": None}, META)
    md = RR.render(report, MD)
    assert ("| host | status | loader | service | vs embedded | vs build | ABI check | kernel | object | attached | pins "
            "| notes |") in md
    assert "| a | deployed | service (lqosd.service) | - | - | - | - | 6.1.0-27-amd64 |" in md
    assert "| e | built | service (&lt;b&gt;x\\|y&lt;/b&gt;.service) |" in md
    assert "| old | built | - |" in md and "| gone | no_data | - |" in md
    page = RR.render(report, HTML)
    assert ("<th>host</th><th>status</th><th>loader</th><th>service</th><th>vs embedded</th><th>vs build</th>"
            "<th>ABI check</th><th>kernel</th>") in page
    assert "<td>a</td><td>deployed</td><td>service (lqosd.service)</td>" in page
    assert "<td>service (&lt;b&gt;x|y&lt;/b&gt;.service)</td>" in page and "<b>x" not in page
    assert json.loads(RR.to_json(report))["hosts"]["a"]["loader"] == {
        "kind": "service", "units": ["lqosd.service"], "text": "service (lqosd.service)"}


SERVICE = {"unit": "lqosd.service", "active_state": "active", "sub_state": "running", "main_pid": 812,
           "n_restarts": 2, "binary": {"path": "/opt/libreqos/src/bin/lqosd", "sha256": "c" * 64},
           "embedded": {"sha256": "d" * 64, "size": 1}, "running": [], "tags_vs_embedded": "match",
           "tags_vs_build": "differ", "abi_check": "unknown", "differences": {"embedded": [], "build": ["x"]},
           "reasons": {"tags_vs_embedded": None, "tags_vs_build": None, "abi_check": "no ABI check is recorded"},
           "error": None}


@pytest.mark.parametrize("service,cell", [
    (SERVICE, {"unit": "lqosd.service", "active_state": "active", "main_pid": 812, "n_restarts": 2,
               "tags_vs_embedded": "match", "tags_vs_build": "differ", "abi_check": "unknown",
               "reasons": {"abi_check": "no ABI check is recorded"}, "error": None,
               "text": "lqosd.service active (pid 812)"}),
    (dict(SERVICE, active_state="inactive", main_pid=None, n_restarts=None, tags_vs_embedded="unknown",
          tags_vs_build="unknown", reasons={"tags_vs_embedded": "not running", "tags_vs_build": "not running"}),
     {"unit": "lqosd.service", "active_state": "inactive", "main_pid": None, "n_restarts": None,
      "tags_vs_embedded": "unknown", "tags_vs_build": "unknown", "abi_check": "unknown",
      "reasons": {"tags_vs_embedded": "not running", "tags_vs_build": "not running"}, "error": None,
      "text": "lqosd.service inactive"}),
    ({"unit": "shaperd.service", "error": "no config", "active_state": None, "main_pid": True},
     {"unit": "shaperd.service", "active_state": "unknown", "main_pid": None, "n_restarts": None,
      "tags_vs_embedded": "unknown", "tags_vs_build": "unknown", "abi_check": "unknown", "reasons": {},
      "error": "no config", "text": "shaperd.service unknown"}),
    ({"unit": "", "error": "name '' is not a systemd unit name."},
     {"unit": "?", "active_state": "unknown", "main_pid": None, "n_restarts": None, "tags_vs_embedded": "unknown",
      "tags_vs_build": "unknown", "abi_check": "unknown", "reasons": {},
      "error": "name '' is not a systemd unit name.", "text": "? unknown"}),
    (None, None),
    ({"active_state": "active"}, None),
])
def test_the_service_of_a_host_row(service, cell):
    result = dict(host(xdp=xdp()), service=service) if service is not None else host(xdp=xdp())
    assert R.host_summary("a", result)["service"] == cell
    assert R.host_summary("b", None)["service"] is None


def test_the_service_columns_in_every_rendering_escape_host_data_and_older_rows_show_a_dash():
    evil = dict(SERVICE, unit="<b>x|y</b>.service", abi_check="<i>failed</i>",
                reasons={"abi_check": "\"><script>alert(1)</script>"})
    report = R.aggregate({"a": dict(host(xdp=xdp()), service=SERVICE), "e": dict(host(), service=evil),
                          "old": host(), "gone": None}, META)
    # A row of an older part (merged, abi_report before this field) has no "service" key at all.
    del report["hosts"]["old"]["service"]
    md = RR.render(report, MD)
    assert "| a | deployed | - | lqosd.service active (pid 812) | match | differ | unknown | 6.1.0-27-amd64 |" in md
    assert ("| e | built | - | &lt;b&gt;x\\|y&lt;/b&gt;.service active (pid 812) | match | differ | "
            "&lt;i&gt;failed&lt;/i&gt; |") in md
    assert "| old | built | - | - | - | - | - | 6.1.0-27-amd64 |" in md
    assert "| gone | no_data | - | - | - | - | - | - |" in md
    page = RR.render(report, HTML)
    assert ("<td>a</td><td>deployed</td><td>-</td><td>lqosd.service active (pid 812)</td><td>match</td>"
            "<td>differ</td><td title=\"no ABI check is recorded\">unknown</td><td>6.1.0-27-amd64</td>") in page
    assert ("<td>&lt;b&gt;x|y&lt;/b&gt;.service active (pid 812)</td><td>match</td><td>differ</td>"
            "<td title=\"&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">&lt;i&gt;failed&lt;/i&gt;</td>") in page
    assert "<script>" not in page and "<b>x" not in page
    assert "<td>old</td><td>built</td><td>-</td><td>-</td><td>-</td><td>-</td><td>-</td><td>6.1.0-27-amd64</td>" in page
    doc = json.loads(RR.to_json(report))
    assert doc["hosts"]["a"]["service"]["tags_vs_build"] == "differ" and doc["hosts"]["gone"]["service"] is None
    assert doc["schema_version"] == 3
