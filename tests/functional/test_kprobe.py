"""lqos.bpf.attach's kprobes option on the real kernel: the reference object's optional
transmit-path counter (xmit_counter, kprobe/dev_hard_start_xmit), attached only when asked,
its bpf_link pinned in a private bpffs, traffic between two test network namespaces.

On a kernel that cannot attach kprobes (this project's CI kernel is built without
CONFIG_KPROBES) the attach cycle is skipped with the kernel's reason, and the refusal itself
is tested: one line with the fix, nothing changed."""
from __future__ import annotations

import os
import struct
import time

import pytest

from lqos_testlib import build_reference, run_module

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O

pytestmark = pytest.mark.usefixtures("tools")

KPROBE = "xmit_counter"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("kprobe_objects"), "reference", "ref")


def kprobes_here():
    """(True, None) when this kernel can attach kprobe/dev_hard_start_xmit, else (False, why): the kernel's own
    answer (its config, /proc/kallsyms), as the module reads it."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kernel_facts
    config = kernel_facts().get("config") or {}
    if config and config.get("CONFIG_KPROBES") not in ("y", "m"):
        return False, "this kernel is built without CONFIG_KPROBES=y (%s)" % config.get("CONFIG_KPROBES", "unset")
    if not O.kernel_has_symbol("dev_hard_start_xmit"):
        return False, "this kernel has no dev_hard_start_xmit in /proc/kallsyms"
    return True, None


def attach(env, obj, check_mode=False, **kw):
    bpffs, pair, state = env
    args = dict(spec="reference", object=obj, pin_root=bpffs, interface=pair.if_a, netns=pair.ns_a,
                state_dir=state, approve=True)
    args.update(kw)
    return run_module("attach", args, check_mode=check_mode)


@pytest.fixture
def env(tmp_path, bpffs, netns_pair):
    return bpffs, netns_pair, str(tmp_path / "state")


def ok(res):
    assert res["_rc"] == 0 and not res.get("failed"), res
    return res


def link_pin(env):
    bpffs, pair, dummy = env
    return os.path.join(bpffs, "lqos_bpf", pair.ns_a, pair.if_a, KPROBE)


def kernel_links():
    """{link id: prog id} of every bpf_link the kernel holds."""
    ffi, lib = L._ffi_lib()     # pylint: disable=protected-access
    cur, out = ffi.new("__u32 *", 0), {}
    while lib.bpf_link_get_next_id(cur[0], cur) == 0:
        fd = lib.bpf_link_get_fd_by_id(cur[0])
        if fd >= 0:
            try:
                info = H.link_info_by_fd(fd)
                out[info["id"]] = info["prog_id"]
            finally:
                os.close(fd)
    return out


def xmit_calls(prog_id: int) -> int:
    """The sum over CPUs of the kprobe's per-CPU counter (map xmit_calls of the program)."""
    for map_id in M.prog_info_by_id(prog_id)["map_ids"]:
        if M.map_info_by_id(map_id)["name"] == "xmit_calls":
            fd = M.map_fd_by_id(map_id)
            try:
                blob = M.map_lookup(fd, struct.pack("<I", 0))
            finally:
                os.close(fd)
            return sum(struct.unpack_from("<Q", blob, 8 * cpu)[0] for cpu in range(L.possible_cpus()))
    raise AssertionError("program %d has no map xmit_calls" % prog_id)


def test_not_asked_the_kprobe_is_never_loaded(env, reference):
    res = ok(attach(env, reference))
    assert res["changed"] is True and res["kprobes"] == []
    assert not os.path.lexists(link_pin(env))
    assert all(M.prog_info_by_id(p)["name"] != KPROBE for p in kernel_links().values())
    assert not any(e["program"] == KPROBE for e in res["left_out"])


def test_the_build_check_reports_an_unasked_kprobe_without_a_warning(reference):
    """The build role's trial load (toolchain's object checks) runs on every deploy: a kprobe nothing asked for is
    a fact in the checks, never a warning ("it will be left out" is what attach does to every unasked kprobe)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._build.toolchain import object_preflight
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option
    checks = object_preflight(resolve_spec_option("reference"), reference)
    [row] = [c for c in checks["checks"] if c["name"] == "program:" + KPROBE]
    assert row["role"] == "optional" and row["when_asked"] is True
    assert row not in checks["warnings_found"]
    assert not [c for c in checks["warnings_found"] if KPROBE in c["message"]]
    here, dummy = kprobes_here()
    if not row["ok"]:
        assert not here, "the trial load refused the kprobe on a kernel that has kprobes"
        assert row["message"].endswith("; nothing loads it unless asked (lqos.bpf.attach kprobes), and asking "
                                       "fails with this reason"), row["message"]


def test_asked_on_a_kernel_that_cannot_attach_it_fails_in_one_line_and_changes_nothing(env, reference):
    here, dummy = kprobes_here()
    if here:
        pytest.skip("this kernel can attach kprobe/dev_hard_start_xmit (test_kprobe_attach_cycle covers it)")
    res = attach(env, reference, kprobes=[KPROBE])
    assert res["_rc"] != 0 and res.get("failed"), res
    assert "\n" not in res["msg"] and "Traceback" not in res["msg"]
    assert res["msg"].startswith("kprobe program xmit_counter (kernel function dev_hard_start_xmit) cannot be "
                                 "attached on this host: program xmit_counter (SEC(\"kprobe/dev_hard_start_xmit\")) ")
    assert "; nothing was changed. Fix: " in res["msg"]
    assert "or take xmit_counter out of kprobes (deploy role: lqos_bpf_xmit_kprobe: false)." in res["msg"]
    bpffs, pair, state = env
    assert not os.path.exists(os.path.join(bpffs, "lqos_bpf"))
    assert not [f for f in (os.listdir(state) if os.path.isdir(state) else []) if f.endswith(".json")]
    with H.netns(pair.ns_a):
        assert H.xdp_query(H.ifindex(pair.if_a))["prog_id"] == 0     # the XDP program was not attached either


def test_a_name_that_is_no_kprobe_program_is_refused(env, reference):
    res = attach(env, reference, kprobes=["xdp_shaper"])
    assert res["_rc"] != 0
    assert res["msg"] == ("kprobes names xdp_shaper, which is no kprobe program of the object (it has "
                          "xmit_counter). Fix: name kprobe programs of the object or their sections (kprobe/<function>), "
                          "or leave kprobes out.")


def test_kprobe_attach_cycle(env, reference):
    here, why = kprobes_here()
    if not here:
        pytest.skip("this kernel cannot attach kprobe/dev_hard_start_xmit: %s" % why)
    bpffs, pair, state = env
    ok(attach(env, reference))
    plan = ok(attach(env, reference, approve=False, kprobes=[KPROBE]))
    assert plan["changed"] is True and plan["applied"] is False
    assert any(a.startswith("attach kprobe program xmit_counter to kernel function dev_hard_start_xmit")
               for a in plan["actions"])
    assert not os.path.lexists(link_pin(env))
    checked = ok(attach(env, reference, check_mode=True, kprobes=[KPROBE]))
    assert checked["applied"] is False and not os.path.lexists(link_pin(env))

    first = ok(attach(env, reference, kprobes=[KPROBE]))
    assert first["changed"] is True and [k["action"] for k in first["kprobes"]] == ["attach"]
    assert L.pinned_kind(link_pin(env)) == "link"
    with L._ObjFd(link_pin(env)) as fd:     # pylint: disable=protected-access
        link = H.link_info_by_fd(fd)
    assert link["type_name"] == "perf_event" and kernel_links()[link["id"]] == link["prog_id"]
    assert M.prog_info_by_id(link["prog_id"])["name"] == KPROBE
    before = xmit_calls(link["prog_id"])
    assert pair.ping(count=3).returncode == 0
    assert xmit_calls(link["prog_id"]) > before

    again = ok(attach(env, reference, kprobes=[KPROBE]))
    assert again["changed"] is False and again["loaded"] is False
    assert [k["action"] for k in again["kprobes"]] == ["keep"]

    off = ok(attach(env, reference, kprobes=[]))
    assert off["changed"] is True and [k["action"] for k in off["kprobes"]] == ["detach"]
    assert not os.path.lexists(link_pin(env))
    deadline = time.monotonic() + 5
    while link["id"] in kernel_links() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link["id"] not in kernel_links()
    assert ok(attach(env, reference, kprobes=[]))["changed"] is False
