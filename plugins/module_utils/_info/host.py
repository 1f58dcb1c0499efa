# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Per-host ABI facts for the fleet audit (target side of lqos.bpf.abi_info).

One call gathers: kernel, toolchain versions, the current build (object hash,
skeleton names, from the pipeline's ``current/manifest.json``), the last ABI
check recorded for that build, the programs attached to each configured
interface (netns-aware) against what the deploy recorded, and the audit of
every pinned map (the same code as lqos.bpf.pinned_maps). Read-only: nothing
is loaded, pinned, attached or written. A section that cannot be read is
reported in ``errors`` (or in the section's own ``error``) instead of failing
the host, so one broken host still appears in the fleet report.
"""

from __future__ import annotations

import json
import os

from .._common import (
    ABI_CHECK_FILE,
    check_bpf_object,
    LqosError,
    possible_cpus,
)
from .._bpffs import is_bpffs, require_bpffs
from .._build.builds import link as _link
from .._build.pipeline import CHAIN_TOOLS, MANIFEST

DEPLOYED_FILE = "deployed.json"
KERNEL_NAME_LEN = 15  # BPF_OBJ_NAME_LEN - 1: the kernel keeps the first 15 characters of a program's name


def same_program_name(live: str | None, wanted: str | None) -> bool:
    """The kernel truncates program names; compare as it stores them."""
    if live is None or wanted is None:
        return live == wanted
    return live[:KERNEL_NAME_LEN] == wanted[:KERNEL_NAME_LEN]


def read_json(path: str):
    """The parsed file, or None when it is missing; ValueError text when it is not JSON."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError("cannot read %s: %s" % (path, exc))


# ---------------------------------------------------------------------------
# Pure parts (plain data in, plain data out)
# ---------------------------------------------------------------------------

def describe_build(build_root: str, build_dir: str | None, record: dict | None, object_key: str = "object") -> dict | None:
    """The ``build`` section from the pipeline's manifest record of the current build."""
    if not build_dir:
        return None
    record = record or {}
    outputs = record.get("outputs") or {}
    obj = outputs.get(object_key) or {}
    skel = record.get("skeleton") or {}
    return {
        "build_root": build_root,
        "build_dir": build_dir,
        "build_id": os.path.basename(build_dir),
        "manifest_hash": (record.get("manifest") or {}).get("hash"),
        "built_at": record.get("built_at"),
        "object": {"path": os.path.join(build_dir, obj["name"]) if obj.get("name") else None,
                   "sha256": obj.get("sha256"), "size": obj.get("size")},
        "skeleton": {"object": skel.get("object"), "programs": list(skel.get("programs") or []),
                     "maps": list(skel.get("maps") or [])},
    }


def summarize_abi_check(doc) -> dict | None:
    """The ``abi_check`` section from the recorded check (as the build role writes it)."""
    if not isinstance(doc, dict):
        return None
    return {
        "ok": bool(doc.get("ok")),
        "build_id": doc.get("build_id"),
        "object_sha256": doc.get("object_sha256"),
        "summary": doc.get("summary"),
        "problems": [str(p) for p in doc.get("problems") or []],
        "drift": list(doc.get("drift") or []),
        "pairs": [{"rust": p.get("rust"), "c": p.get("c"), "status": p.get("status")}
                  for p in doc.get("pairs") or [] if isinstance(p, dict)],
        "checked_at": doc.get("checked_at"),
    }


def deployed_hooks(deployed, interface: str, netns: str | None) -> dict | None:
    """What the deploy recorded for one interface: {"xdp": {program, tag} | None,
    "tc": {(direction, handle, priority): {program, tag}}}, or None when it recorded nothing."""
    if not isinstance(deployed, dict):
        return None
    for entry in deployed.get("interfaces") or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("name") == interface and (entry.get("netns") or None) == (netns or None):
            xdp = entry.get("xdp") or None
            tc = {}
            for row in entry.get("tc") or []:
                if isinstance(row, dict) and row.get("tag"):
                    tc[(row.get("direction"), int(row.get("handle") or 0), int(row.get("priority") or 0))] = row
            return {"xdp": xdp if xdp and xdp.get("tag") else None, "tc": tc}
    return None


def _where(row: dict) -> str:
    return row["interface"] + (" (netns %s)" % row["netns"] if row.get("netns") else "")


def _hook_problem(where: str, hook: str, entry: dict) -> str | None:
    if entry.get("matches") is not False:
        return None
    if entry.get("name") is None:
        return "%s %s: nothing attached, the deploy attached %s (tag %s)" % (
            where, hook, entry.get("expected_program"), entry.get("expected_tag"))
    return "%s %s: %s (id %s, tag %s) is attached, the deploy attached %s (tag %s)" % (
        where, hook, entry.get("name"), entry.get("id"), entry.get("tag"), entry.get("expected_program"),
        entry.get("expected_tag"))


def problems(facts: dict) -> list:
    """What is wrong on the host now: an ABI check of the current build that failed, hooks that do not
    hold what the deploy recorded, interfaces that cannot be read, incompatible pins."""
    out = []
    build, check = facts.get("build"), facts.get("abi_check")
    if build and check and check.get("build_id") in (None, build.get("build_id")) and not check.get("ok"):
        out.append("the ABI check of build %s failed: %s" % (build.get("build_id"), check.get("summary")))
    for row in facts.get("attached") or []:
        where = _where(row)
        if row.get("error"):
            out.append("%s: %s" % (where, row["error"]))
        if row.get("xdp"):
            text = _hook_problem(where, "XDP", row["xdp"])
            if text:
                out.append(text)
        for tc in row.get("tc") or []:
            text = _hook_problem(where, "TC %s" % tc.get("direction"), tc)
            if text:
                out.append(text)
    for prog in facts.get("programs") or []:
        if prog.get("role") == "required" and not prog.get("loadable"):
            out.append("required program %s cannot load on this kernel (%s): %s"
                       % (prog.get("name"), prog.get("class"), prog.get("reason")))
    pins = facts.get("pins") or {}
    if pins.get("error"):
        out.append("pins: %s" % pins["error"])
    attached = [e.get("id") for row in facts.get("attached") or []
                for e in [row.get("xdp") or {}] + list(row.get("tc") or []) if e.get("id")]
    for pin in pins.get("maps") or []:
        if pin.get("status") == "incompatible":
            out.append("pinned map %s is incompatible: %s" % (pin.get("name"), pin.get("reason")))
        elif pin.get("status") == "unreadable":
            out.append("pin %s could not be audited: %s" % (pin.get("name"), pin.get("reason")))
        elif pin.get("status") == "missing" and attached:
            out.append("pinned map %s is missing while programs are attached: the map they use is reachable by "
                       "no pin (run the deploy again: lqos.bpf.attach pins it again)" % pin.get("name"))
    return out


def judge(live: dict | None, expected_program: str | None, recorded: dict | None, deployed_known: bool):
    """(expected_tag, matches) of one hook.

    With a deploy record for the interface, the live program must be the recorded
    program with the recorded tag (``matches`` True/False). Without one, nothing is
    asserted (``matches`` None)."""
    if not deployed_known:
        return None, None
    if recorded is None:
        return None, None if live is None else (same_program_name(live.get("name"), expected_program) or None)
    tag = recorded.get("tag")
    program = recorded.get("program") or recorded.get("name") or expected_program
    if live is None:
        return tag, False
    return tag, bool(same_program_name(live.get("name"), program) and live.get("tag") == tag)


def hook_entries(attached: list) -> list:
    """Every hook entry (the ``xdp`` dict and each ``tc`` dict) of the ``attached`` rows, in order."""
    return [e for row in attached or [] for e in [row.get("xdp")] + list(row.get("tc") or []) if e]


def mark_owners(attached: list, collection_ids, holders: dict) -> dict:
    """Add ``owner`` (``collection``, ``service``, ``foreign``, or None for an empty hook) and ``holders`` (the
    processes holding a service's program: [{pid, comm, unit}], else None) to every hook entry of ``attached``
    (``_ownership.owners.owner_of``), and return the host's ``loader`` summary (``_ownership.owners.loader_summary``)."""
    from .._ownership.owners import loader_summary, owner_of, SERVICE

    hooks = hook_entries(attached)
    for entry in hooks:
        owner, detail = owner_of(entry["id"], collection_ids, holders) if entry.get("id") else (None, None)
        entry["owner"], entry["holders"] = owner, detail if owner == SERVICE else None
    return loader_summary(hooks)


# ---------------------------------------------------------------------------
# Sections that read the host
# ---------------------------------------------------------------------------

def owner_facts(attached: list, pin_root: str, errors: list) -> dict:
    """Who owns each program on the hooks (``mark_owners``): the collection's pins under ``<pin_root>/lqos_bpf/``,
    the processes of /proc holding the rest. Returns the ``loader`` summary."""
    from .._ownership import owners as _owners

    ids = {e["id"] for e in hook_entries(attached) if e.get("id")}
    ours, held = set(), {}
    try:
        if ids and is_bpffs(pin_root):
            ours = _owners.collection_prog_ids(os.path.realpath(pin_root))
        held = _owners.holders(ids - ours)
    except Exception as exc:  # pylint: disable=broad-except  # a part that cannot be read never fails the host
        errors.append("owners: %s" % getattr(exc, "msg", exc))
    return mark_owners(attached, ours, held)


def kernel_facts() -> dict:
    facts = {"release": os.uname().release, "machine": os.uname().machine,
             "btf": os.path.isfile("/sys/kernel/btf/vmlinux"), "possible_cpus": None}
    try:
        facts["possible_cpus"] = possible_cpus()
    except (OSError, ValueError):
        pass
    return facts


def toolchain_facts(module, errors: list) -> dict:
    from .._build.toolchain import tool_versions

    out = {}
    try:
        # No version cache here: abi_info never writes on the host.
        for name, info in tool_versions(module, CHAIN_TOOLS).items():
            out[name] = info["version"] if info["found"] else None
    except Exception as exc:  # pylint: disable=broad-except
        errors.append("toolchain: %s" % exc)
    try:
        from .._kernel import libbpf as _libbpf
        out["libbpf"] = _libbpf.libbpf_version()
    except Exception as exc:  # pylint: disable=broad-except
        out["libbpf"] = None
        errors.append("libbpf: %s" % getattr(exc, "msg", exc))
    return out


def _prog(L, prog_id: int) -> dict | None:
    if not prog_id:
        return None
    try:
        from .._kernel import maps as _kmaps
        info = _kmaps.prog_info_by_id(prog_id)
        return {"id": prog_id, "name": info["name"], "tag": info["tag"]}
    except L.LibbpfError as exc:
        return {"id": prog_id, "name": None, "tag": None, "error": exc.msg}


def interface_facts(iface: dict, spec: dict, deployed) -> dict:
    """Programs on one interface: XDP (mode, id, tag) and each TC hook of the spec."""
    from .._kernel import libbpf as L
    from .._kernel import hooks as H

    name, ns = iface["name"], iface.get("netns") or None
    row = {"interface": name, "netns": ns, "ifindex": None, "present": False, "error": None,
           "xdp": None, "tc": []}
    recorded = deployed_hooks(deployed, name, ns)
    known = recorded is not None
    attach = spec.get("attach") or {}
    try:
        ctx = H.netns(ns) if ns else None
        if ctx:
            ctx.__enter__()
        try:
            idx = H.ifindex(name)
            row["ifindex"], row["present"] = idx, True
            xq = H.xdp_query(idx)
            live_tc = []
            for hook in attach.get("tc") or []:
                live_tc.append((hook, H.tc_query(idx, hook["direction"], hook["handle"], hook["priority"])))
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
    except L.LibbpfError as exc:
        row["error"] = exc.msg
        return row
    if attach.get("xdp") or xq["prog_id"]:
        live = _prog(L, xq["prog_id"])
        tag, matches = judge(live, attach.get("xdp"), recorded["xdp"] if known else None, known)
        row["xdp"] = {"mode": xq["attach_mode"], "id": xq["prog_id"] or None,
                      "name": live["name"] if live else None, "tag": live["tag"] if live else None,
                      "expected_program": attach.get("xdp"), "expected_tag": tag, "matches": matches}
    for hook, prog_id in live_tc:
        live = _prog(L, prog_id)
        rec = recorded["tc"].get((hook["direction"], hook["handle"], hook["priority"])) if known else None
        if live is None and rec is None and hook.get("optional"):
            continue
        tag, matches = judge(live, hook["program"], rec, known)
        row["tc"].append({"interface": name, "netns": ns, "direction": hook["direction"],
                          "handle": hook["handle"], "priority": hook["priority"],
                          "id": prog_id or None, "name": live["name"] if live else None,
                          "tag": live["tag"] if live else None, "expected_program": hook["program"],
                          "expected_tag": tag, "matches": matches})
    return row


def pin_facts(pin_root: str, spec: dict, object_path: str | None) -> dict:
    """The pinned-map audit of lqos.bpf.pinned_maps, read-only."""
    from .._kernel import libbpf as L
    from .._kernel import objects as BO
    from .._maps import audit as PA
    from .._maps import expectations as PE

    out = {"pin_root": pin_root, "error": None, "maps": [], "summary": {}}
    if not is_bpffs(pin_root):
        out["error"] = "pin_root %s is not a bpffs mount" % pin_root
        return out
    root = os.path.realpath(pin_root)
    try:
        if not os.path.isdir(root):
            require_bpffs(pin_root)  # a pin given as pin_root: its own message
        tables = [PE.expectations_from_spec(spec)]
        if object_path and os.path.isfile(object_path):
            check_bpf_object(object_path, "the current build's object")
            cpu_sized = [c["map"] for c in spec.get("cpu_sized_maps", [])]
            tables.append(PE.expectations_from_object(BO.object_info(object_path, root), cpu_sized,
                                                      L.possible_cpus() if cpu_sized else None))
        pins = PA.audit(root, PE.merge_expectations(*tables))
    except L.LibbpfError as exc:
        out["error"] = exc.msg
        return out
    except LqosError as exc:
        out["error"] = str(exc)
        return out
    keep = ("name", "path", "kind", "status", "reason", "differences", "id", "type", "key_size", "value_size",
            "max_entries", "used_by")
    out["maps"] = [{k: p.get(k) for k in keep if k in p} for p in pins]
    out["summary"] = PA.summarise(pins)
    return out


def program_facts(spec: dict, object_path: str | None, errors: list) -> list | None:
    """Every program of the current build, trial-loaded alone on this kernel (nothing pinned or attached):
    [{name, section, role, loadable, class, reason, fix, verifier}] (``verifier``: _kernel.verifier.figures, or
    "not loaded: refused" / "not loaded: left out" without figures), or None without a build."""
    if not object_path or not os.path.isfile(object_path):
        return None
    from .._kernel import objects as _objects
    from .._kernel.libbpf import LibbpfError, possible_cpus
    from .._kernel.programs import program_roles
    from .._kernel.verifier import LEFT_OUT, not_loaded

    try:
        resize = {item["map"]: possible_cpus() for item in spec.get("cpu_sized_maps") or []}
        rows = _objects.probe_programs(object_path, resize=resize)
    except LibbpfError as exc:
        errors.append("programs: %s" % exc.msg)
        return None
    roles = program_roles(spec, [{"name": r["name"], "type_name": r["type_name"]} for r in rows])
    keys = ("name", "section", "loadable", "class", "reason", "fix", "verifier")
    out = [dict({k: r.get(k) for k in keys}, role=roles.get(r["name"], "optional")) for r in rows]
    for row in out:
        if row["role"] == "disabled":   # never loaded by the deploy: no figures to watch
            row["verifier"] = not_loaded(LEFT_OUT, (row["verifier"] or {}).get("kernel"))
    return out


def gather(module, spec: dict, build_root: str, pin_root: str, interfaces: list, toolchain: bool = True,
           programs: bool = True) -> dict:
    errors: list = []
    facts = {"kernel": kernel_facts(), "toolchain": toolchain_facts(module, errors) if toolchain else {},
             "build_root": build_root, "spec_name": spec["name"]}
    current = _link(build_root, "current")
    record = None
    if current:
        try:
            record = read_json(os.path.join(current, MANIFEST))
        except ValueError as exc:
            errors.append(str(exc))
    build = describe_build(build_root, current, record)
    previous = _link(build_root, "previous")
    if build is not None:
        build["previous_build_id"] = os.path.basename(previous) if previous else None
    facts["build"] = build
    check = None
    if current:
        try:
            check = summarize_abi_check(read_json(os.path.join(current, ABI_CHECK_FILE)))
        except ValueError as exc:
            errors.append(str(exc))
    facts["abi_check"] = check
    try:
        deployed = read_json(os.path.join(build_root, DEPLOYED_FILE))
    except ValueError as exc:
        errors.append(str(exc))
        deployed = None
    facts["deployed"] = deployed if isinstance(deployed, dict) else None
    facts["attached"] = [interface_facts(i, spec, facts["deployed"]) for i in interfaces]
    facts["loader"] = owner_facts(facts["attached"], pin_root, errors)
    facts["pins"] = pin_facts(pin_root, spec, build["object"]["path"] if build else None)
    facts["programs"] = program_facts(spec, build["object"]["path"] if build else None, errors) if programs else None
    facts["errors"] = errors
    facts["problems"] = problems(facts)
    return facts
