"""A service's own programs: program ids from fdinfo texts, the BPF object embedded in a binary (plain data;
the real daemon is in tests/functional/test_standin_daemon.py)."""
from __future__ import annotations

import struct

import pytest

from ansible_collections.lqos.bpf.plugins.module_utils._common import LqosError
from ansible_collections.lqos.bpf.plugins.module_utils._ownership.processes import (
    EM_BPF, elf_image_size, embedded_object, embedded_objects, held_prog_ids, prog_id_of_fdinfo,
)

PROG_FDINFO = ("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t6\nprog_jited:\t1\n"
               "prog_tag:\tb2c7b85e2ccd5913\nmemlock:\t4096\nprog_id:\t709\nrun_time_ns:\t0\nrun_cnt:\t0\n")
LINK_FDINFO = "pos:\t0\nflags:\t02000000\nlink_type:\tperf\nlink_id:\t5\nprog_tag:\t0011223344556677\nprog_id:\t31\n"
MAP_FDINFO = "pos:\t0\nflags:\t02000002\nmap_type:\t11\nkey_size:\t20\nvalue_size:\t24\nmap_id:\t88\n"


def elf(machine: int, sections: list, wide: bool = True, big: bool = False, table_first: bool = False) -> bytes:
    """A minimal ELF image: header, then the section contents and the section header table (in either
    order). ``sections``: [(sh_type, bytes or NOBITS size)]; a null section 0 is prepended."""
    order = ">" if big else "<"
    ehsize, shentsize = (64, 64) if wide else (52, 40)
    shnum = len(sections) + 1
    table_size = shnum * shentsize
    body, placed = b"", []
    start = ehsize + (table_size if table_first else 0)
    for sh_type, content in sections:
        if sh_type == 8:
            placed.append((sh_type, start + len(body), content))
            continue
        placed.append((sh_type, start + len(body), len(content)))
        body += content
    shoff = ehsize if table_first else ehsize + len(body)
    table = b"\0" * shentsize
    for sh_type, off, size in placed:
        if wide:
            table += struct.pack(order + "IIQQQQIIQQ", 1, sh_type, 0, 0, off, size, 0, 0, 1, 0)
        else:
            table += struct.pack(order + "IIIIIIIIII", 1, sh_type, 0, 0, off, size, 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 2 if big else 1, 1]) + b"\0" * 9
    if wide:
        head = ident + struct.pack(order + "HHIQQQIHHHHHH", 1, machine, 1, 0, 0, shoff, 0, ehsize, 0, 0,
                                   shentsize, shnum, 0)
    else:
        head = ident + struct.pack(order + "HHIIIIIHHHHHH", 1, machine, 1, 0, 0, shoff, 0, ehsize, 0, 0,
                                   shentsize, shnum, 0)
    return head + (table + body if table_first else body + table)


BPF_OBJ = elf(EM_BPF, [(1, b"\x95" + b"\0" * 15), (8, 4096), (3, b"\0.text\0license\0")])


def test_fdinfo_of_a_program_gives_its_id_other_fds_none():
    assert prog_id_of_fdinfo(PROG_FDINFO) == 709
    assert prog_id_of_fdinfo(LINK_FDINFO) == 31  # a bpf_link holds its program too
    assert prog_id_of_fdinfo(MAP_FDINFO) is None
    assert prog_id_of_fdinfo("pos:\t0\nflags:\t02\n") is None


def test_held_prog_ids_reads_every_fd_sorted_distinct(tmp_path):
    fdinfo = tmp_path / "4242" / "fdinfo"
    fdinfo.mkdir(parents=True)
    for fd, text in {"3": PROG_FDINFO, "4": MAP_FDINFO, "5": PROG_FDINFO.replace("709", "12"),
                     "6": PROG_FDINFO, "0": "pos:\t0\nflags:\t02\n"}.items():
        (fdinfo / fd).write_text(text)
    assert held_prog_ids(4242, str(tmp_path)) == [12, 709]


def test_held_prog_ids_of_a_missing_process_says_so(tmp_path):
    with pytest.raises(LqosError) as err:
        held_prog_ids(4243, str(tmp_path))
    assert "process 4243 does not exist" in str(err.value)
    assert "MainPID" in str(err.value)


@pytest.mark.parametrize("pid", [0, -1, True, "12"])
def test_held_prog_ids_refuses_what_is_not_a_pid(pid):
    with pytest.raises(LqosError, match="is not a process id"):
        held_prog_ids(pid)


def test_image_size_counts_sections_and_table_not_nobits():
    assert elf_image_size(BPF_OBJ, 0) == len(BPF_OBJ)
    first = elf(EM_BPF, [(1, b"x" * 100)], table_first=True)
    assert elf_image_size(first, 0) == len(first)


@pytest.mark.parametrize("wide,big", [(True, False), (False, False), (True, True), (False, True)])
def test_one_object_found_inside_a_host_binary(wide, big):
    obj = elf(EM_BPF, [(1, b"prog" * 8), (3, b"\0.strtab\0")], wide=wide, big=big)
    host = elf(62, [(1, b"\x90" * 64)])
    binary = host + b"junk\x7fELFnot-a-header" + b"\0" * 7 + obj + b"tail bytes of .rodata"
    found = embedded_objects(binary)
    assert found == [{"offset": binary.index(obj), "size": len(obj)}]
    assert embedded_object(binary) == obj


def test_a_truncated_object_is_not_an_object():
    binary = elf(62, [(1, b"\x90" * 8)]) + BPF_OBJ[:-10]
    with pytest.raises(LqosError) as err:
        embedded_object(binary, "/opt/shaperd/shaperd")
    assert "/opt/shaperd/shaperd embeds no BPF object" in str(err.value)


def test_identical_copies_are_one_object():
    binary = b"\0" * 8 + BPF_OBJ + b"\0" * 3 + BPF_OBJ
    assert [f["offset"] for f in embedded_objects(binary)] == [8, 8 + len(BPF_OBJ) + 3]
    assert embedded_object(binary) == BPF_OBJ


def test_two_different_objects_are_named_not_guessed():
    other = elf(EM_BPF, [(1, b"\x95" + b"\1" * 15)])
    binary = b"\0" * 8 + BPF_OBJ + other
    with pytest.raises(LqosError, match="embeds 2 different BPF objects \\(at offsets 8, %d\\)" % (8 + len(BPF_OBJ))):
        embedded_object(binary)
