"""A failed deploy says so once per host, with the rollback's outcome (issue 25, item 24): deploy.yml run with
ansible-playbook on the embedded sandbox (its own netns and private bpffs), an attach that fails for real."""
from __future__ import annotations

import json

from lqos_testlib import sh

from test_playbooks import playbook

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H


def test_a_failed_deploy_prints_its_error_once_with_the_rollbacks_outcome(tmp_path, tools):
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    sbx = str(tmp_path / "sbx")
    env = {"ANSIBLE_INVENTORY": str(empty)}
    extra = ("-e", "lqos_bpf_state_dir=%s/state" % sbx, "-e", "lqos_bpf_attach_state_dir=%s/attach" % sbx,
             "-e", "lqos_bpf_sandbox_pin_root=%s/bpffs" % sbx, "-e", "lqos_bpf_sandbox_netns=lqfail-a",
             "-e", "lqos_bpf_sandbox_peer_netns=lqfail-b")
    # A veth has no XDP offload: the attach in hw mode fails on the host itself.
    hw = json.dumps({"lqos_bpf_interfaces": [{"name": "lqsbx0", "netns": "lqfail-a", "xdp_mode": "hw"}]})
    try:
        run = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_approve=true", "-e", hw, env=env)
        assert run.rc == 2, run
        error = "hardware offload refused"
        # Printed by one task only, the host's failure at the end of the rollback (ansible-core 2.19 shows a
        # failed task as an [ERROR] line and its result line: at most these two), never by the attach, its loop
        # item or the rescue before it.
        before, sep, last = run.out.partition("TASK [lqos.bpf.deploy : Fail the host]")
        assert sep and error not in before, run
        assert 1 <= last.count(error) <= 2, last
        [failure] = run.failures("sandbox")
        assert failure["msg"].startswith(
            "deploy of %s failed on sandbox (attach on lqsbx0): attaching XDP program xdp_shaper to lqsbx0 in hw "
            "mode failed: XDP on lqsbx0: hardware offload refused" % failure["msg"].split()[2]), failure
        # ... with the rollback's outcome.
        assert failure["msg"].endswith("Nothing was rolled back (this run changed no build and attached nothing "
                                       "new)."), failure
        assert run.recap["sandbox"]["failed"] == 1 and run.recap["sandbox"]["rescued"] == 0, run.recap
        # A health check that fails (programs bound to another ifindex count nothing): once too, and the
        # rollback detached what this run attached.
        blind = json.dumps({"lqos_bpf_interfaces": [{"name": "lqsbx0", "netns": "lqfail-a",
                                                     "data": {"attach_ifindex": 999}}]})
        run = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_approve=true", "-e", blind, env=env)
        assert run.rc == 2, run
        error = "the attached programs did not count the probe's replies"
        before, sep, last = run.out.partition("TASK [lqos.bpf.deploy : Fail the host]")
        assert sep and error not in before, run
        [failure] = run.failures("sandbox")
        msg = " ".join(failure["msg"].split())
        assert "failed on sandbox (health check of the traffic): health check failed on sandbox: %s" % error in msg
        assert msg.endswith("No previous build: the programs attached by this run were detached."), msg
        with H.netns("lqfail-a"):
            assert H.xdp_query(H.ifindex("lqsbx0"))["prog_id"] == 0
    finally:
        down = playbook("deploy.yml", None, *extra, "-e", "lqos_bpf_sandbox_state=absent", env=env)
    assert down.rc == 0, down
    assert "lqfail-a" not in sh("ip", "netns", "list").stdout
