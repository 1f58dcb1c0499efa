"""Shared helpers: pin confinement, CPU lists, atomic writes, errors."""
from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import (
    atomic_symlink,
    atomic_write,
    check_bpf_object,
    count_cpu_list,
    LqosError,
    os_fault,
    run_module,
)
from ansible_collections.lqos.bpf.plugins.module_utils._bpffs import confine_pin, require_bpffs


@pytest.mark.parametrize("text,count", [("0-1\n", 2), ("0", 1), ("0,2-3", 3), ("0-127", 128), ("", 0)])
def test_count_cpu_list(text, count):
    assert count_cpu_list(text) == count


def test_error_carries_its_fix():
    err = LqosError("bpffs not mounted.", "mount -t bpf bpf /sys/fs/bpf", rc=1)
    assert str(err) == "bpffs not mounted. Fix: mount -t bpf bpf /sys/fs/bpf"
    assert err.details == {"rc": 1}
    assert str(LqosError("plain")) == "plain"


def test_confine_pin_accepts_names_under_the_root(tmp_path):
    root = str(tmp_path)
    (tmp_path / "lqos").mkdir()
    assert confine_pin(root, "map_traffic") == os.path.join(root, "map_traffic")
    assert confine_pin(root, "lqos/flows") == os.path.join(root, "lqos", "flows")
    assert confine_pin(root, os.path.join(root, "x")) == os.path.join(root, "x")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b", "/etc/passwd"])
def test_confine_pin_refuses_escapes(tmp_path, name):
    with pytest.raises(LqosError) as err:
        confine_pin(str(tmp_path), name)
    assert str(err.value) == ("pin path %r leaves the pin root %s. Fix: name pins relative to pin_root, "
                              "without '..'." % (name, tmp_path))


def test_confine_pin_refuses_symlinks(tmp_path):
    os.symlink("/etc", tmp_path / "escape")
    with pytest.raises(LqosError) as err:
        confine_pin(str(tmp_path), "escape/passwd")
    assert str(err.value) == ("pin path %s/escape is a symlink (-> /etc); symlinks are never followed under the "
                              "pin root. Fix: remove the symlink or name the real pin." % tmp_path)


def test_atomic_write_and_symlink(tmp_path):
    path = tmp_path / "f"
    atomic_write(str(path), "one")
    atomic_write(str(path), b"two", mode=0o600)
    assert path.read_bytes() == b"two"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    atomic_symlink("a", str(tmp_path / "link"))
    atomic_symlink("b", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "b"


def _elf(machine=247, cls=2, data=1, shoff=64, shnum=2, shentsize=64, size=None) -> bytes:
    order = "little" if data == 1 else "big"
    head = bytearray(64)
    head[0:4] = b"\x7fELF"
    head[4], head[5], head[6] = cls, data, 1
    head[16:18] = (1).to_bytes(2, order)          # ET_REL
    head[18:20] = machine.to_bytes(2, order)
    head[40:48] = shoff.to_bytes(8, order)
    head[58:60] = shentsize.to_bytes(2, order)
    head[60:62] = shnum.to_bytes(2, order)
    body = bytes(head) + b"\0" * (shnum * shentsize)
    return body if size is None else body[:size]


FIX = (" Fix: give the BPF object built by lqos.bpf.pipeline (its outputs.object.path, e.g. "
       "<dest>/current/<spec outputs.object>); rebuild it if it was damaged.")


@pytest.mark.parametrize("content,problem", [
    (b"SEC(\"xdp\") int prog(void) { return 2; }\n", "is not an ELF object (it starts with b'SEC(\"xdp')."),
    (bytes(range(200, 256)) * 3, "is not an ELF object (it starts with b'\\xc8\\xc9\\xca\\xcb\\xcc\\xcd\\xce\\xcf')."),
    (b"", "is not an ELF object (it starts with b'')."),
    (_elf(machine=62), "is an ELF object for machine 62, not BPF (EM_BPF = 247)."),
    (_elf(cls=1), "is not a 64-bit ELF object (32-bit, 192 bytes), as BPF objects are."),
    (_elf(size=40), "is not a 64-bit ELF object (64-bit, 40 bytes), as BPF objects are."),
    (_elf(size=100), "is truncated: its section headers end at byte 192, but the file has 100 bytes."),
    (_elf(shnum=0), "has no section headers, so it holds no BPF programs or maps."),
])
def test_check_bpf_object_says_what_the_file_is_instead(tmp_path, content, problem):
    path = tmp_path / "shaper_kern.o"
    path.write_bytes(content)
    with pytest.raises(LqosError) as err:
        check_bpf_object(str(path))
    assert str(err.value) == "object %s %s%s" % (path, problem, FIX)


def test_check_bpf_object_accepts_both_byte_orders_and_names_folders(tmp_path):
    for data in (1, 2):
        path = tmp_path / ("ok%d.o" % data)
        path.write_bytes(_elf(data=data))
        assert check_bpf_object(str(path)) == str(path)
    with pytest.raises(LqosError) as err:
        check_bpf_object(str(tmp_path), "object")
    assert str(err.value) == "object %s is a folder, not a BPF object file.%s" % (tmp_path, FIX)
    with pytest.raises(LqosError) as err:
        check_bpf_object(str(tmp_path / "none.o"), "object")
    assert str(err.value) == "object %s/none.o does not exist.%s" % (tmp_path, FIX)


@pytest.mark.parametrize("num,fix", [
    (errno.ENOSPC, "free space on the filesystem holding /d (df -h /d) and run again."),
    (errno.EROFS, "/d is on a read-only filesystem: remount it read-write or choose another folder."),
    (errno.EACCES, "run the task as root (become: true) or fix the permissions of /d."),
])
def test_os_fault_names_path_errno_and_fix(num, fix):
    err = os_fault(OSError(num, os.strerror(num)), "writing /d failed", "/d")
    assert str(err) == "writing /d failed: %s (%s) on /d. Fix: %s" % (os.strerror(num), errno.errorcode[num], fix)


def test_pin_root_that_is_a_file(tmp_path):
    path = tmp_path / "pin"
    path.write_text("")
    with pytest.raises(LqosError) as err:
        require_bpffs(str(path))
    assert str(err.value) == ("pin_root %s is a file, not a folder. Fix: give the bpffs mount point (e.g. "
                              "/sys/fs/bpf), not a pin in it." % path)


class FakeModule:
    """What run_module uses of AnsibleModule; fail_json drops a string traceback like
    ansible-core 2.19 does when ANSIBLE_DISPLAY_TRACEBACK is not set."""

    _name = "pipeline"

    def __init__(self):
        self.result = None
        self.rc = None

    def exit_json(self, **kw):
        self.result = kw
        raise SystemExit(0)

    def fail_json(self, msg, exception=None, **kw):
        self.result = dict(kw, failed=True, msg=msg)
        raise SystemExit(1)


def _run(fn):
    module = FakeModule()
    with pytest.raises(SystemExit) as done:
        run_module(module, fn)
    module.rc = done.value.code
    return module


def test_an_internal_error_always_returns_its_traceback():
    def broken(module):
        return {}["missing"]

    module = _run(broken)
    assert module.rc == 1
    assert module.result["failed"] is True
    assert module.result["msg"] == (
        "internal error in pipeline: KeyError: 'missing'. This is a bug in lqos.bpf: please report it with the "
        "traceback in this result's `exception` (ANSIBLE_DISPLAY_TRACEBACK=error prints it).")
    assert module.result["exception"].startswith("Traceback (most recent call last):")
    assert "in broken\n" in module.result["exception"]


@pytest.mark.parametrize("num,fix", [
    (errno.ENOSPC, "free space on the filesystem holding /var/lib/x (df -h /var/lib/x) and run again."),
    (errno.EROFS, "/var/lib/x is on a read-only filesystem: remount it read-write or choose another folder."),
])
def test_an_environment_oserror_is_not_an_internal_error(num, fix):
    def full(module):
        raise OSError(num, os.strerror(num), "/var/lib/x")

    module = _run(full)
    assert module.rc == 1
    assert module.result["msg"] == "%s (%s) on /var/lib/x. Fix: %s" % (os.strerror(num), errno.errorcode[num], fix)
    assert module.result["errno"] == errno.errorcode[num]


def test_a_known_error_is_one_message():
    def refused(module):
        raise LqosError("dest /x is a file, not a folder.", "move it.", step="dest")

    module = _run(refused)
    # Every failed result says whether the host was left changed (issue 25: changed means changed).
    assert module.result == {"failed": True, "msg": "dest /x is a file, not a folder. Fix: move it.", "step": "dest",
                             "changed": False}


def test_a_failure_that_left_changes_says_changed():
    def half(module):
        raise LqosError("step 2 failed.", "fix it.", changed=True, changes_left=[{"change": "a", "undo": "b"}])

    module = _run(half)
    assert module.result["changed"] is True and module.result["changes_left"] == [{"change": "a", "undo": "b"}]


def test_os_fault_without_a_path():
    err = os_fault(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "writing the lock")
    assert str(err) == ("writing the lock: No space left on device (ENOSPC). Fix: free space on the target (df -h "
                        "shows the full filesystem) and run again.")


def test_a_file_where_a_folder_belongs_is_not_an_internal_error(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("")

    def makes_state_dir(module):
        os.makedirs(str(blocker), exist_ok=True)

    module = _run(makes_state_dir)
    assert module.result["msg"] == ("File exists (EEXIST) on %s. Fix: %s exists but is not a folder: remove it or give "
                                    "another folder." % (blocker, blocker))
