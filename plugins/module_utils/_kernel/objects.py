# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# BPF object files: what they hold (without loading), loading them with
# load-time values, and explaining why a load failed.


from __future__ import annotations

import errno as _errno
import os
import re
import time

from .libbpf import (
    LibbpfError,
    _STATE,
    _b,
    _errno_of,
    _fail,
    _ffi_lib,
    _log_mark,
    _log_since,
    _obj_get,
    _s,
    _strerror,
    map_type_id,
    pinned_kind,
    possible_cpus,
)
from .open_object import (
    _internal_section,
    _iter_maps,
    _iter_progs,
    _map_def,
    _open_object,
    _prog_def,
)
from .declarations import MAP_TYPES
from . import verifier as V
from .._common import int_bytes, LqosError
from .btf import Btf
from .maps import map_info_by_path
from .programs import (
    classify_refusal,
    kernel_facts,
    kprobe_target,
    verifier_ran,
)
from .loaded import LoadedObject


# Map types whose max_entries the verifier never reads: a trial load may shrink them.
SHRINKABLE_MAP_TYPES = frozenset(MAP_TYPES[n] for n in (
    "hash", "percpu_hash", "lru_hash", "lru_percpu_hash", "lpm_trie", "hash_of_maps", "devmap_hash", "sockhash"))


def object_info(path: str, pin_root: str | None = None) -> dict:
    """Programs and maps of a BPF object file, without loading it.

    {"programs": [{name, section, type, type_name, autoload}],
     "maps": [{name, type, type_name, key_size, value_size, max_entries, flags,
               map_extra, pinning, pin_path}],
     "internal_maps": [... same keys + "section" (".rodata", ".bss", ...)]}
    ``pin_path`` is where LIBBPF_PIN_BY_NAME maps would be pinned
    (pin_root, default /sys/fs/bpf).
    """
    ffi, lib = _ffi_lib()
    obj = _open_object(path, pin_root)
    try:
        progs = [_prog_def(p) for p in _iter_progs(obj)]
        maps, internal = [], []
        for m in _iter_maps(obj):
            d = _map_def(m)
            if lib.bpf_map__is_internal(m):
                d["section"] = _internal_section(d["name"])
                internal.append(d)
            else:
                maps.append(d)
        return {"programs": progs, "maps": maps, "internal_maps": internal}
    finally:
        lib.bpf_object__close(obj)


def _int_bytes(value, size: int, order: str, var: str, section: str, signed: bool | None = None) -> bytes:
    """The bytes of a load-time value; ``signed`` is the variable's BTF integer signedness (None: not an
    integer type, either range). The range check is _common.int_bytes, the one map_entries uses too."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != size:
            raise LibbpfError("value for %s variable %s must be %d bytes, not %d" % (section, var, size, len(value)),
                              _errno.EINVAL)
        return bytes(value)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise LibbpfError("value for %s variable %s must be an integer or bytes, not %r" % (section, var, value),
                          _errno.EINVAL)
    if size not in (1, 2, 4, 8):
        raise LibbpfError("%s variable %s is %d bytes wide, not an integer: pass its value as bytes"
                          % (section, var, size), _errno.EINVAL)
    try:
        return int_bytes(value, size, signed, "%s variable %s" % (section, var), order)
    except LqosError as exc:
        raise LibbpfError(exc.msg.rstrip("."), _errno.ERANGE)


def _pin_incompatibilities(obj) -> list:
    """[(map name, pin path, [differences])] for pinned-by-name maps whose existing pin libbpf cannot reuse."""
    lib = _STATE["lib"]
    out = []
    for m in _iter_maps(obj):
        pin_path = _s(lib.bpf_map__pin_path(m))
        if not pin_path or not os.path.lexists(pin_path):
            continue
        want = _map_def(m)
        kind = pinned_kind(pin_path)
        if kind != "map":
            what = ("a " + kind) if kind else "not a BPF object"
            out.append((want["name"], pin_path, ["the pin is %s, not a map" % what]))
            continue
        try:
            have = map_info_by_path(pin_path)
        except LibbpfError as exc:
            out.append((want["name"], pin_path, [exc.msg]))
            continue
        diffs = []
        for key in ("type_name", "key_size", "value_size", "max_entries", "flags", "map_extra"):
            if have[key] != want[key]:
                diffs.append("%s pinned %s, object %s" % (key, have[key], want[key]))
        if diffs:
            out.append((want["name"], pin_path, diffs))
    return out


def _prepare(path: str, pin_root: str | None, resize: dict, rodata: dict, data: dict, disabled, log_size: int,
             no_pins: bool = False, shrink_to: int | None = None, pin_paths: dict | None = None):
    """Open ``path`` and apply everything before bpf_object__load: resizes,
    load-time values, autoload off for ``disabled``, one verifier log buffer per
    loaded program. no_pins: pin nothing and reuse no pin (a trial load).
    shrink_to: hash-like maps get at most that many entries (a trial load: the
    verifier does not look at their size). Returns (obj, [(program, buffer)])."""
    ffi, lib = _ffi_lib()
    if log_size < 128:
        raise LibbpfError("log_size %d is too small: use at least 128 bytes (default 1 MiB)" % log_size)
    obj = _open_object(path, pin_root)
    try:
        maps = {_s(lib.bpf_map__name(m)): m for m in _iter_maps(obj)}
        for name, entries in resize.items():
            if name not in maps:
                raise LibbpfError("cannot resize map %s: %s has no such map (it has %s)"
                                  % (name, path, ", ".join(n for n in maps)), _errno.ENOENT)
            ret = lib.bpf_map__set_max_entries(maps[name], int(entries))
            if ret < 0:
                _fail("resizing map %s to %s entries failed" % (name, entries), _errno_of(ret))
        if no_pins or shrink_to:
            for name, m in maps.items():
                if no_pins and not lib.bpf_map__is_internal(m):
                    lib.bpf_map__set_pin_path(m, ffi.NULL)
                if shrink_to and name not in resize and lib.bpf_map__type(m) in SHRINKABLE_MAP_TYPES \
                        and lib.bpf_map__max_entries(m) > shrink_to:
                    lib.bpf_map__set_max_entries(m, shrink_to)
        for name, pin in (pin_paths or {}).items():
            if name not in maps:
                raise LibbpfError("cannot pin map %s at %s: %s has no such map" % (name, pin, path), _errno.ENOENT)
            ret = lib.bpf_map__set_pin_path(maps[name], _b(pin))
            if ret < 0:
                _fail("setting the pin path of map %s to %s failed" % (name, pin), _errno_of(ret))
        if pin_root and not no_pins:
            _reuse_pins(maps, pin_root)
        if rodata or data:
            _set_globals(obj, path, maps, rodata, data)
        progs = {_s(lib.bpf_program__name(p)): p for p in _iter_progs(obj)}
        unknown = sorted(set(disabled) - set(progs))
        if unknown:
            raise LibbpfError("cannot leave out program(s) %s: %s has no such program (it has %s)"
                              % (", ".join(unknown), path, ", ".join(progs)), _errno.ENOENT)
        alloc = ffi.new_allocator(should_clear_after_alloc=False)
        log_bufs = []
        for name, p in progs.items():
            if name in disabled:
                lib.bpf_program__set_autoload(p, False)
                continue
            buf = alloc("char[]", log_size)
            buf[0] = b"\0"
            ret = lib.bpf_program__set_log_buf(p, buf, log_size)
            if ret < 0:
                _fail("setting the verifier log buffer failed", _errno_of(ret))
            log_bufs.append((name, buf))
        return obj, log_bufs
    except BaseException:
        lib.bpf_object__close(obj)
        raise


def _reuse_pins(maps: dict, pin_root: str) -> None:
    """Before libbpf reuses pins by name: refuse a pin that is a symlink or leads out of ``pin_root`` (libbpf
    would follow it, and the programs would use a map nobody audited), and hand libbpf the fd of a pin that
    differs from the object only in flags the kernel sets itself (libbpf 1.1 refuses to reuse those)."""
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    root = os.path.realpath(pin_root)
    for name, m in maps.items():
        pin = _s(lib.bpf_map__pin_path(m))
        if not pin or lib.bpf_map__is_internal(m) or not os.path.lexists(pin):
            continue
        real = os.path.realpath(pin)
        if os.path.islink(pin) or not real.startswith(root + "/"):
            raise LibbpfError("map %s: its pin %s is a symbolic link to %s, %s the pin root %s; libbpf would follow "
                              "it and the programs would use that map, so nothing was loaded. Remove the link "
                              "(lqos.bpf.pinned_maps reports it) and pin the real map under the pin root"
                              % (name, pin, os.readlink(pin) if os.path.islink(pin) else real,
                                 "inside" if real.startswith(root + "/") else "outside", pin_root), _errno.ELOOP)
        if pinned_kind(pin) != "map":
            continue
        have = map_info_by_path(pin)
        want = _map_def(m)
        same = all(have[k] == want[k] for k in ("type_name", "key_size", "value_size", "max_entries", "flags"))
        if same and have["kernel_flags"] != want["flags"]:
            fd = _obj_get(pin)
            try:
                ret = lib.bpf_map__reuse_fd(m, fd)
                if ret < 0:
                    _fail("reusing the pin %s of map %s failed" % (pin, name), _errno_of(ret))
            finally:
                os.close(fd)
            lib.bpf_map__set_pin_path(m, ffi.NULL)   # already pinned; libbpf 1.1 would re-check the flags


def load_object(path: str, pin_root: str | None = None, resize: dict | None = None, rodata: dict | None = None,
                data: dict | None = None, log_size: int = 1 << 20, disabled=(), pin_paths: dict | None = None
                ) -> LoadedObject:
    """Open, adjust and load a BPF object.

    pin_root: where LIBBPF_PIN_BY_NAME maps are pinned or reused (libbpf default
    /sys/fs/bpf). resize: {map: max_entries}. rodata / data: {variable: int or
    bytes} written into .rodata* / .data*/.bss* before load (integers in the
    object's byte order, the variable's width). disabled: program names left
    out (autoload off). pin_paths: {map: pin path} for maps pinned (or reused)
    somewhere else than pin_root/NAME. Every loaded program gets a verifier log buffer of
    log_size bytes (filled only when its load fails).

    Raises LoadError (a LibbpfError with ``program`` and ``refusal`` set when
    one program was refused) or LibbpfError.
    """
    ffi, lib = _ffi_lib()
    obj, log_bufs = _prepare(path, pin_root, dict(resize or {}), dict(rodata or {}), dict(data or {}),
                             set(disabled or ()), log_size, pin_paths=pin_paths)
    ok = False
    try:
        mark = _log_mark()
        ret = lib.bpf_object__load(obj)
        if ret < 0:
            _explain_load_failure(obj, path, pin_root, _errno_of(ret), log_bufs, _log_since(mark, 40))
        loaded = LoadedObject(obj, path, pin_root, log_bufs)
        ok = True
        return loaded
    finally:
        if not ok:
            lib.bpf_object__close(obj)


def probe_programs(path: str, names=None, resize: dict | None = None, rodata: dict | None = None,
                   data: dict | None = None, kernel: dict | None = None, figures: bool = True) -> list:
    """Trial-load each program alone: no pin made or reused, nothing attached,
    everything closed again (a load changes nothing on the host).

    names: the programs to probe (default all). resize/rodata/data: as for
    load_object. kernel: _kernel.programs.kernel_facts() (read once when None).
    Returns [{"name", "section", "type_name", "loadable", "class", "reason",
    "fix", "errno", "log_tail", "verifier"}] in object order; the refusal keys
    are None for a loadable program. A kprobe whose kernel function is missing
    is reported as ``attach_target`` even though the kernel loads it.
    ``verifier``: what the verifier said of the program (_kernel.verifier.figures:
    instructions, stack, headroom, load time), or ``status`` "not loaded:
    refused" without figures; None with ``figures=False`` (loads at log level
    0, as before the figures were kept).
    """
    ffi, lib = _ffi_lib()
    progs = object_info(path)["programs"]
    wanted = [p for p in progs if names is None or p["name"] in names]
    kernel = kernel if kernel is not None else kernel_facts()
    shrink = max(possible_cpus(), 64)
    out = []
    for p in wanted:
        row = {"name": p["name"], "section": p["section"], "type_name": p["type_name"], "loadable": True,
               "class": None, "reason": None, "fix": None, "errno": None, "log_tail": None, "verifier": None}
        others = {q["name"] for q in progs if q["name"] != p["name"]}
        # First at the verifier's statistics level (its figures, no instruction trace: V.figures); a program the
        # verifier rejected is loaded again the way libbpf explains a failure (log level 1), so it keeps its trace.
        for stats in ((True, False) if figures else (False,)):
            obj, log_bufs = _prepare(path, None, dict(resize or {}), dict(rodata or {}), dict(data or {}), others,
                                     64 * 1024, no_pins=True, shrink_to=shrink)
            try:
                prog = next(q for q in _iter_progs(obj) if _s(lib.bpf_program__name(q)) == p["name"])
                if stats:
                    lib.bpf_program__set_log_level(prog, V.LOG_STATS)
                mark = _log_mark()
                start = time.monotonic()
                ret = lib.bpf_object__load(obj)
                load_ms = (time.monotonic() - start) * 1000
                log = ffi.string(log_bufs[0][1]).decode("utf-8", "replace") if log_bufs else ""
                if ret >= 0:
                    if figures:
                        row["verifier"] = V.read_figures(ffi, lib, prog, log, load_ms, kernel.get("release"))
                    break
                if stats and (verifier_ran(log) or not log.strip()):
                    # rejected by the verifier (load again at log level 1 for the instruction trace), or the kernel
                    # wrote no log (refused before bpf_check, or it took exception to the log level): load again
                    # exactly as without the figures
                    continue
                # refused inside bpf_check before verifying anything: level 1 would say the same "processed 0 insns"
                row.update(classify_refusal(p["name"], p["section"], p["type_name"], _errno_of(ret),
                                            V.without_stats(log), _log_since(mark, 40), kernel))
                row["loadable"] = False
                if figures:
                    row["verifier"] = V.not_loaded(V.REFUSED, kernel.get("release"), load_ms)
                break
            finally:
                lib.bpf_object__close(obj)
        sym = kprobe_target(p["section"])
        config = kernel.get("config") or {}
        if row["loadable"] and sym and config and config.get("CONFIG_KPROBES") not in ("y", "m"):
            row.update(loadable=False, errno=None, log_tail=None, **{
                "class": "kernel_policy",
                "reason": "program %s (SEC(\"%s\")) is a kprobe and this kernel is built without CONFIG_KPROBES=y: "
                          "it loads but can never be attached" % (p["name"], p["section"]),
                "fix": "boot a kernel with CONFIG_KPROBES=y, or leave it out (spec programs: {%s: optional or "
                       "disabled})" % p["name"]})
        elif row["loadable"] and sym and not kernel_has_symbol(sym):
            row.update(loadable=False, errno=None, log_tail=None, **{
                "class": "attach_target",
                "reason": "program %s (SEC(\"%s\")) probes kernel function %s, which this kernel does not have "
                          "(not in /proc/kallsyms)" % (p["name"], p["section"], sym),
                "fix": "run it on a kernel that has %s, or leave it out (spec programs: {%s: optional or "
                       "disabled})" % (sym, p["name"])})
        out.append(row)
    return out


def probe_map_types(type_names) -> dict:
    """{map type name: supported} through libbpf_probe_bpf_map_type."""
    ffi, lib = _ffi_lib()
    out = {}
    for name in sorted(set(type_names)):
        ret = lib.libbpf_probe_bpf_map_type(map_type_id(name), ffi.NULL)
        out[name] = ret == 1
    return out


def kernel_has_symbol(name: str, path: str = "/proc/kallsyms") -> bool:
    """Is ``name`` a kernel text symbol (kallsyms; module symbols too)? True when unreadable."""
    try:
        with open(path, "rb") as fh:
            want = b" " + name.encode() + b"\n"
            want_mod = b" " + name.encode() + b"\t"
            for line in fh:
                if line.endswith(want) or want_mod in line:
                    return True
    except OSError:
        return True
    return False


def _signedness(btf, type_id: int) -> bool | None:
    """Whether a variable's BTF type is a signed integer (True), an unsigned one (False), or no integer (None)."""
    shape = btf.shape(type_id)
    return shape["signed"] if shape["kind"] == "int" else None


def _set_globals(obj, path, maps, rodata, data):
    ffi, lib = _STATE["ffi"], _STATE["lib"]
    btf_ptr = lib.bpf_object__btf(obj)
    if btf_ptr == ffi.NULL:
        raise LibbpfError("%s has no BTF, so its global variables cannot be set: compile with clang -g" % path)
    btf = Btf(btf_ptr, path, owned=False)
    order = btf.endianness()
    by_section = {}
    for want, allowed, what in ((rodata, (".rodata",), "rodata"), (data, (".data", ".bss"), "data")):
        for var, value in want.items():
            vi = btf.var_info(var)
            if vi is None:
                raise LibbpfError("global variable %s is not in %s: check the name (it must be a non-static global "
                                  "the programs use)" % (var, path), _errno.ENOENT)
            sec = vi["section"]
            if not any(sec == a or sec.startswith(a + ".") for a in allowed):
                other = "rodata" if sec.startswith(".rodata") else "data"
                raise LibbpfError("variable %s lives in section %s, not in %s: pass it under %s"
                                  % (var, sec, "/".join(allowed), other), _errno.EINVAL)
            raw = _int_bytes(value, vi["size"], order, var, sec, _signedness(btf, vi["type_id"]))
            by_section.setdefault(sec, []).append((var, vi, raw))
    internal = {}
    for name, m in maps.items():
        if lib.bpf_map__is_internal(m):
            internal[_internal_section(name)] = m
    for sec, items in by_section.items():
        m = internal.get(sec)
        if m is None:
            raise LibbpfError("section %s of %s has no map to set variables in" % (sec, path))
        psize = ffi.new("size_t *")
        cur = lib.bpf_map__initial_value(m, psize)
        if cur == ffi.NULL:
            raise LibbpfError("section %s of %s has no initial value to edit" % (sec, path))
        blob = bytearray(ffi.buffer(cur, psize[0]))
        for var, vi, raw in items:
            blob[vi["offset"]:vi["offset"] + vi["size"]] = raw
        ret = lib.bpf_map__set_initial_value(m, ffi.from_buffer(bytes(blob)), len(blob))
        if ret < 0:
            _fail("setting the variables of %s failed" % sec, _errno_of(ret))


class LoadError(LibbpfError):
    """A load that failed on one program: ``program`` and ``refusal`` (classify_refusal's dict) say which and why."""

    def __init__(self, msg: str, errno: int | None, program: str, refusal: dict):
        super().__init__(msg, errno)
        self.program = program
        self.refusal = refusal


def _failed_program(log_bufs, said):
    """(name, verifier log) of the program whose load failed, or (None, "")."""
    ffi = _STATE["ffi"]
    joined = "\n".join(said)
    m = re.search(r"prog '([^']+)': (?:failed to load|BPF program load failed|failed to find kernel BTF type ID)",
                  joined)
    logs = {name: ffi.string(buf).decode("utf-8", "replace") for name, buf in log_bufs if buf[0] != b"\0"}
    if m:
        return m.group(1), logs.get(m.group(1), "")
    for name, log in logs.items():
        return name, log
    return None, ""


def _explain_load_failure(obj, path, pin_root, err, log_bufs, said):
    lib = _STATE["lib"]
    # 1. an existing pin libbpf cannot reuse
    bad = _pin_incompatibilities(obj)
    if bad:
        parts = ["map %s: existing pin %s is incompatible (%s)" % (n, p, "; ".join(d)) for n, p, d in bad]
        raise LibbpfError("loading %s failed: %s. libbpf reuses pins only when type, key_size, value_size, "
                          "max_entries and flags all match: migrate or remove the old pin with the "
                          "lqos.bpf.pinned_maps module (or choose another pin_root)" % (path, "; ".join(parts)),
                          err or _errno.EINVAL)
    # 2. one program was refused: by policy before verification, for a missing attach target, or by the verifier
    name, log = _failed_program(log_bufs, said)
    if name is not None:
        p = next(q for q in _iter_progs(obj) if _s(lib.bpf_program__name(q)) == name)
        d = _prog_def(p)
        refusal = classify_refusal(name, d["section"], d["type_name"], err, log, said, kernel_facts())
        refusal.update(name=name, section=d["section"], type_name=d["type_name"], loadable=False)
        if refusal["class"] == "verifier":
            msg = ("the verifier rejected program %s of %s [errno %d: %s]; last lines of the verifier log:\n%s"
                   % (name, path, err, _strerror(err), refusal["log_tail"]))
        else:
            msg = "loading %s failed: %s [errno %d: %s]" % (path, refusal["reason"], err, _strerror(err))
        raise LoadError(msg, err, name, refusal)
    # 3. pinning under pin_root failed
    joined = "\n".join(said)
    m = re.search(r"map '([^']+)': failed to auto-pin at '([^']+)'", joined)
    if m or "not on BPF FS" in joined:
        where = m.group(2) if m else pin_root
        name = m.group(1) if m else "?"
        if "not on BPF FS" in joined:
            raise LibbpfError("loading %s failed: cannot pin map %s at %s: pin_root %s is not on a bpffs; mount one "
                              "there (mount -t bpf bpf DIR) or use a directory under /sys/fs/bpf"
                              % (path, name, where, pin_root), err)
        _fail("loading %s failed: cannot pin map %s at %s: check that pin_root %s is a writable bpffs directory"
              % (path, name, where, pin_root), err)
    # 4. a map the kernel refused to create
    m = re.search(r"map '([^']+)': failed to create", joined)
    if m:
        d = next((_map_def(x) for x in _iter_maps(obj) if _s(lib.bpf_map__name(x)) == m.group(1)), None)
        if d is not None:
            hint = "check its definition (type, sizes, flags) against this kernel"
            if err == _errno.E2BIG or d["type_name"] == "cpumap":
                hint = ("max_entries %d is more than this kernel allows; size it to the possible CPUs, e.g. "
                        "resize={'%s': %d}" % (d["max_entries"], d["name"], possible_cpus()))
            raise LibbpfError("loading %s failed: the kernel refused to create map %s (%s, max_entries %d) "
                              "[errno %d: %s]: %s" % (path, d["name"], d["type_name"], d["max_entries"], err,
                                                      _strerror(err), hint), err)
    if err in (_errno.EPERM, _errno.EACCES):
        raise LibbpfError("loading %s failed: permission denied; run as root (CAP_BPF, CAP_NET_ADMIN, "
                          "CAP_SYS_ADMIN) and check the memlock limit" % path, err)
    _fail("loading %s failed%s" % (path, ("; libbpf said: " + " | ".join(said[-10:])) if said else ""), err)
