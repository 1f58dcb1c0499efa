"""Bad inputs and environment faults of pinned_maps, abi_check and abi_info on the
real kernel: unreadable folders and pins under a private bpffs (the module runs
without CAP_DAC_OVERRIDE), a pin given as pin_root, objects that are no BPF ELF,
damaged backups, and an ABI check that compares nothing."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from lqos_testlib import REPO, copy_bpf, module_args_file, run_module, sh

from ansible_collections.lqos.bpf.plugins.module_utils._kernel import libbpf as L
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import btf as B
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import maps as M

pytestmark = pytest.mark.usefixtures("tools")

FIX = (" Fix: give the BPF object built by lqos.bpf.pipeline (its outputs.object.path, e.g. "
       "<dest>/current/<spec outputs.object>); rebuild it if it was damaged.")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The reference pipeline built once: (build folder, object path)."""
    work = tmp_path_factory.mktemp("faults_ref")
    crate = copy_bpf(work)
    result = run_module("pipeline", dict(spec="reference", src=crate, dest=str(work / "out")))
    assert result["_rc"] == 0, result
    return result["build_dir"], result["outputs"]["object"]["path"]


def pin_map(path, key_size=4, value_size=4):
    fd = M.map_create("hash", key_size, value_size, 4, name=os.path.basename(path)[:15])
    try:
        L.obj_pin(fd, path)
    finally:
        L.close(fd)
    return path


def run_without_dac_override(name, args):
    """Run a module as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (permissions apply to it)."""
    argfile = module_args_file(name, args)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                               sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules." + name, argfile],
                              capture_output=True, text=True, env=env, cwd="/", check=False)
    finally:
        os.unlink(argfile)
    result = json.loads(proc.stdout)
    result["_rc"] = proc.returncode
    return result


def by_name(result):
    return {p["name"]: p for p in result["pins"]}


def test_an_unreadable_folder_or_pin_is_reported_and_the_audit_goes_on(bpffs):
    good = pin_map(os.path.join(bpffs, "good"))
    locked = os.path.join(bpffs, "locked")
    os.mkdir(locked)
    pin_map(os.path.join(locked, "inside"))
    closed = pin_map(os.path.join(bpffs, "closed"))
    os.chmod(locked, 0)
    os.chmod(closed, 0)
    result = run_without_dac_override("pinned_maps", dict(pin_root=bpffs))
    assert result["_rc"] == 0, result
    pins = by_name(result)
    assert pins["good"]["status"] == "unknown" and pins["good"]["kind"] == "map" and pins["good"]["path"] == good
    assert pins["locked"]["status"] == "unreadable"
    assert pins["locked"]["reason"] == (
        "cannot list this folder: Permission denied (EACCES); the pins inside it were not audited; run the task as "
        "root (become: true, with CAP_DAC_OVERRIDE) or fix the permissions of %s" % locked)
    assert pins["closed"]["status"] == "unreadable"
    assert pins["closed"]["reason"].startswith("cannot open this pin: ")
    assert pins["closed"]["reason"].endswith("(EACCES); run the task as root (become: true, with CAP_DAC_OVERRIDE) "
                                             "or fix the permissions of %s" % closed)
    # Without CAP_DAC_OVERRIDE even the kernel's preload iterators (0400) cannot be opened: reported the same way.
    unreadable = {p["name"] for p in result["pins"] if p["status"] == "unreadable"}
    assert unreadable - {"maps.debug", "progs.debug"} == {"locked", "closed"}
    assert result["summary"]["unreadable"] == len(unreadable) and result["summary"]["total"] == len(result["pins"])
    assert result["msg"].startswith("%d pin(s) under %s: " % (len(result["pins"]), bpffs))
    assert result["msg"].endswith("%d unreadable" % len(unreadable))


def test_an_unreadable_pin_root_is_one_clear_error(bpffs):
    sub = os.path.join(bpffs, "root")
    os.mkdir(sub)
    os.chmod(sub, 0)
    result = run_without_dac_override("pinned_maps", dict(pin_root=sub))
    assert result["_rc"] == 1
    assert result["msg"] == ("cannot list pin_root %s: Permission denied (EACCES). Fix: run the task as root "
                             "(become: true) with CAP_SYS_ADMIN/CAP_BPF." % sub)


def test_a_pin_given_as_pin_root(bpffs):
    pin = pin_map(os.path.join(bpffs, "map_traffic"))
    result = run_module("pinned_maps", dict(pin_root=pin))
    assert result["failed"] is True
    assert result["msg"] == ("pin_root %s is a pinned object inside a bpffs, not a folder. Fix: give the bpffs mount "
                             "point (e.g. %s), not a pin in it." % (pin, bpffs))


def _bad_objects(tmp_path, obj):
    text = tmp_path / "text.o"
    text.write_text("int main(void) { return 0; }\n")
    noise = tmp_path / "noise.o"
    noise.write_bytes(bytes((i * 73 + 11) % 256 for i in range(4096)))
    with open(obj, "rb") as fh:
        data = fh.read()
    truncated = tmp_path / "truncated.o"
    truncated.write_bytes(data[:len(data) // 2])
    folder = tmp_path / "folder.o"
    folder.mkdir()
    return [
        (str(text), "is not an ELF object (it starts with b'int main')."),
        (str(noise), "is not an ELF object (it starts with b'\\x0bT\\x9d\\xe6/x\\xc1\\n')."),
        (str(truncated), "is truncated: its section headers end at byte %d, but the file has %d bytes."
         % (len(data), len(data) // 2)),
        (str(folder), "is a folder, not a BPF object file."),
    ]


def test_objects_that_are_no_bpf_elf_are_named_by_pinned_maps_and_abi_check(bpffs, built, tmp_path):
    build_dir, obj = built
    with open(obj, "rb") as fh:
        head = fh.read(64)
    # the section header table is the end of a clang-built object
    assert int.from_bytes(head[40:48], "little") + 64 * int.from_bytes(head[60:62], "little") == os.path.getsize(obj)
    for path, problem in _bad_objects(tmp_path, obj):
        result = run_module("pinned_maps", dict(pin_root=bpffs, spec="reference", object=path))
        assert result["msg"] == "object %s %s%s" % (path, problem, FIX)
        result = run_module("abi_check", dict(spec="reference", object=path, build_dir=build_dir))
        assert result["msg"] == "object %s %s%s" % (path, problem, FIX)
        assert "BTF" not in result["msg"] and "4001" not in result["msg"]


def _backup(bpffs, tmp_path):
    """A real backup of a real map, written by state=clean."""
    pin_map(os.path.join(bpffs, "m"), 4, 4)
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["expect"]["maps"] = ["m"]
    raw["pinned_maps"] = [{"name": "m", "key_size": 4, "value_size": 8}]
    done = run_module("pinned_maps", dict(pin_root=bpffs, state="clean", approve=True, spec=raw,
                                          backup_dir=str(tmp_path / "b")))
    assert done["_rc"] == 0, done
    pin_map(os.path.join(bpffs, "m"), 4, 4)
    with open(done["backups"][0]["file"]) as fh:
        return json.load(fh)


@pytest.mark.parametrize("field,value,problem", [
    ("value_size", None, "has no layout.value_size, not a byte count"),
    ("value_size", "4", "has '4' as layout.value_size, not a byte count"),
    ("key_size", -1, "has -1 as layout.key_size, not a byte count"),
    ("value_bytes", True, "has True as layout.value_bytes, not a byte count"),
    ("percpu", "no", "has 'no' as layout.percpu, not true or false"),
])
def test_a_backup_with_a_damaged_layout_names_the_field(bpffs, tmp_path, field, value, problem):
    doc = copy.deepcopy(_backup(bpffs, tmp_path))
    if value is None:
        del doc["layout"][field]
    else:
        doc["layout"][field] = value
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(doc))
    result = run_module("pinned_maps", dict(pin_root=bpffs, state="restored", backup=str(path), approve=True))
    assert result["failed"] is True
    assert result["msg"] == ("backup %s %s. Fix: give a file written by lqos.bpf.pinned_maps state=clean (format "
                             "lqos.bpf.map-backup/1)." % (path, problem))


@pytest.mark.parametrize("fail_on_drift", [True, False])
def test_an_abi_check_that_compares_nothing_is_not_a_pass(built, fail_on_drift):
    build_dir = built[0]
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["mirrors"] = []
    raw["constants"] = []
    problem = ("no mirror pair was compared (the spec's `mirrors` list is empty), so Rust/C ABI parity is unproven: "
               "list the Rust types that mirror C types under `mirrors:` in the spec (see docs/pipeline-spec.md)")
    result = run_module("abi_check", dict(spec=raw, build_dir=build_dir, fail_on_drift=fail_on_drift))
    assert result["ok"] is False
    assert result["problems"] == [problem]
    assert result["summary"] == ("spec 'reference': ABI parity NOT checked: 0 mirror pairs compared (the spec's "
                                 "`mirrors` list is empty), 0 chain drift finding(s)")
    if fail_on_drift:
        assert result["_rc"] == 1 and result["msg"] == "ABI check failed for spec 'reference': " + problem
    else:
        assert result["_rc"] == 0
        warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in result["warnings"]]
        assert warnings == [problem]


def test_pins_whose_names_are_not_utf8_are_reported_escaped_and_never_touched(bpffs, tmp_path):
    pin_map(os.path.join(bpffs, "plain"))
    named = pin_map(os.path.join(bpffs, "m"))
    os.rename(named, os.path.join(os.fsencode(bpffs), b"y\xfe"))
    os.mkdir(os.path.join(os.fsencode(bpffs), b"d\xff"))
    pin_map(os.path.join(bpffs, "inner"))
    os.rename(os.path.join(bpffs, "inner"), os.path.join(os.fsencode(bpffs), b"d\xff/inner"))
    result = run_module("pinned_maps", dict(pin_root=bpffs, state="clean", approve=True,
                                            backup_dir=str(tmp_path / "b")))
    assert result["_rc"] == 0, result
    pins = by_name(result)
    reason = ("its name is not valid UTF-8 (shown with \\x escapes); never touched: rename or remove it by hand if "
              "it is yours")
    for name in ("y\\xfe", "d\\xff"):
        assert (pins[name]["status"], pins[name]["kind"], pins[name]["reason"]) == ("not_a_map", "other", reason)
        assert pins[name]["path"] == os.path.join(bpffs, name)
    assert pins["plain"]["status"] == "unknown"
    assert result["changed"] is False and result["removed"] == []
    assert L.pinned_kind(os.path.join(os.fsencode(bpffs), b"y\xfe").decode("utf-8", "surrogateescape")) == "map"


def test_backup_dir_that_is_a_file(bpffs, tmp_path):
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["expect"]["maps"] = ["m"]
    raw["pinned_maps"] = [{"name": "m", "key_size": 4, "value_size": 8}]
    path = pin_map(os.path.join(bpffs, "m"), 4, 4)
    blocker = tmp_path / "backups"
    blocker.write_text("x")
    result = run_module("pinned_maps", dict(pin_root=bpffs, state="clean", approve=True, spec=raw,
                                            backup_dir=str(blocker)))
    assert result["msg"] == ("backup_dir %s is a file, not a folder; nothing was removed. Fix: give a folder on a "
                             "persistent filesystem, e.g. /var/lib/lqos-bpf/map-backups." % blocker)
    assert L.pinned_kind(path) == "map"


def test_abi_info_names_a_pin_given_as_pin_root_and_an_unreadable_folder(bpffs, tmp_path):
    pin = pin_map(os.path.join(bpffs, "map_traffic"))
    facts = run_module("abi_info", dict(spec="reference", pin_root=pin, build_root=str(tmp_path / "none"),
                                        toolchain=False))
    assert facts["_rc"] == 0, facts
    assert facts["pins"]["error"] == ("pin_root %s is a pinned object inside a bpffs, not a folder. Fix: give the "
                                      "bpffs mount point (e.g. %s), not a pin in it." % (pin, bpffs))
    assert "pins: " + facts["pins"]["error"] in facts["problems"]
    locked = os.path.join(bpffs, "locked")
    os.mkdir(locked)
    os.chmod(locked, 0)
    facts = run_without_dac_override("abi_info", dict(spec="reference", pin_root=bpffs,
                                                      build_root=str(tmp_path / "none"), toolchain=False))
    assert facts["_rc"] == 0, facts
    assert facts["pins"]["error"] is None
    assert [p["status"] for p in facts["pins"]["maps"] if p["name"] == "locked"] == ["unreadable"]
    assert ("pin locked could not be audited: cannot list this folder: Permission denied (EACCES); the pins inside "
            "it were not audited; run the task as root (become: true, with CAP_DAC_OVERRIDE) or fix the permissions "
            "of %s" % locked) in facts["problems"]


def test_abi_check_build_dir_that_is_a_file(tmp_path):
    path = tmp_path / "build"
    path.write_text("x")
    result = run_module("abi_check", dict(spec="reference", build_dir=str(path)))
    assert result["msg"] == ("build_dir %s is a file, not a build folder. Fix: give the folder lqos.bpf.pipeline "
                             "built (its build_dir, or <dest>/current)." % path)


def test_attach_names_an_object_that_is_no_bpf_elf(bpffs, netns_pair, tmp_path):
    text = tmp_path / "text.o"
    text.write_text("int main(void) { return 0; }\n")
    result = run_module("attach", dict(spec="reference", object=str(text), interface=netns_pair.if_a,
                                       netns=netns_pair.ns_a, pin_root=bpffs))
    assert result["msg"] == "object %s is not an ELF object (it starts with b'int main').%s" % (text, FIX)


@pytest.mark.parametrize("content", [b"int main(void) { return 0; }\n", b"\x7fELF\x02\x01\x01" + b"\0" * 40])
def test_libbpf_btf_of_a_non_object_says_what_it_is(tmp_path, content):
    path = tmp_path / "thing.o"
    path.write_bytes(content)
    with pytest.raises(L.LibbpfError) as err:
        B.Btf.from_file(str(path))
    assert str(path) in err.value.msg
    assert "Unknown error 4001" not in err.value.msg and "compile with clang -g" not in err.value.msg


def test_toolchain_info_does_not_take_a_pin_for_the_bpffs(bpffs):
    pin = pin_map(os.path.join(bpffs, "map_traffic"))
    result = run_module("toolchain_info", dict(pin_root=pin))
    row = [c for c in result["checks"] if c["name"] == "bpffs"][0]
    assert row["ok"] is False and "mkdir -p" not in (row["fix"] or "")


def test_attach_refuses_a_tc_handle_beyond_u32_before_touching_anything(bpffs, netns_pair, built):
    with open(os.path.join(REPO, "bpf", "specs", "reference.yml")) as fh:
        raw = yaml.safe_load(fh)
    raw["attach"]["tc"][0]["handle"] = 2 ** 40
    before = sorted(os.listdir(bpffs))
    result = run_module("attach", dict(spec=raw, object=built[1], interface=netns_pair.if_a, netns=netns_pair.ns_a,
                                       pin_root=bpffs, approve=True), resolve_spec=False)
    assert result["failed"] is True
    assert result["msg"] == ("pipeline spec 'reference': `attach.tc[0].handle` must be an integer from 1 to 4294967295 "
                             "(0xffffffff), got 1099511627776. Fix: write a number in that range (hex like 0xC02F is "
                             "fine in YAML)")
    assert sorted(os.listdir(bpffs)) == before
    link = sh("ip", "-n", netns_pair.ns_a, "-d", "link", "show", "dev", netns_pair.if_a).stdout
    assert "xdp" not in link and "prog/xdp" not in link
