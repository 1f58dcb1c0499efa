# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
#
# BTF through libbpf: types, sizes, alignment, struct layouts and global
# variables of an object file or of a kernel BTF object (btf__*).
from __future__ import annotations

import errno as _errno
import os
from .libbpf import (
    LibbpfError,
    _STATE,
    _b,
    _fail,
    _ffi_lib,
    _log_mark,
    _log_since,
    _s,
)
from .open_object import _Closable, _open_object
from .declarations import (
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FUNC,
    BTF_KIND_FUNC_PROTO,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_NAMES,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPEDEF,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_UNION,
    BTF_KIND_UNKN,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    _BTF_MODIFIERS,
)


BTF_MAGIC_LE, BTF_MAGIC_BE = b"\x9f\xeb", b"\xeb\x9f"   # 0xEB9F in either byte order (linux/btf.h)
_KERNEL_BTF_NAMES: dict = {}   # btf_id -> {type_id: readable name}


class Btf(_Closable):
    """BTF of an object file (or of a kernel BTF object); a context manager.

    ``Btf.from_file`` opens ELF objects through ``bpf_object__open_file``
    (without loading) so DATASEC offsets are laid out the way libbpf lays them
    out (clang leaves them zero); raw BTF files fall back to ``btf__parse``.
    """

    def __init__(self, btf, source: str, obj=None, owned: bool = True):
        self._btf = btf
        self._obj = obj
        self._owned = owned
        self.source = source

    # -- construction / lifetime ------------------------------------------
    @classmethod
    def from_file(cls, path: str) -> "Btf":
        ffi, lib = _ffi_lib()
        if not os.path.exists(path):
            _fail("BTF source %s does not exist: build the object first" % path, _errno.ENOENT)
        mark = _log_mark()
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError as exc:
            _fail("cannot read %s" % path, exc.errno)
        if head[:4] == b"\x7fELF":
            obj = _open_object(path, None)          # an ELF libbpf cannot open: its own error, not a BTF guess
            btf = lib.bpf_object__btf(obj)
            if btf != ffi.NULL:
                return cls(btf, path, obj=obj, owned=False)
            lib.bpf_object__close(obj)
            _fail("%s is a BPF object without BTF: compile it with clang -g (and -target bpf)" % path, _errno.ENODATA)
        if head[:2] not in (BTF_MAGIC_LE, BTF_MAGIC_BE):
            _fail("%s is neither a BPF ELF object nor raw BTF (it starts with %r): give the object built by "
                  "lqos.bpf.pipeline" % (path, head), _errno.EINVAL)
        btf = lib.btf__parse(_b(path), ffi.NULL)
        if btf == ffi.NULL:
            err = ffi.errno
            hint = "; ".join(_log_since(mark, 5))
            _fail("%s has no usable BTF: compile with clang -g (and -target bpf)%s"
                  % (path, (" (libbpf: %s)" % hint) if hint else ""), err)
        return cls(btf, path)

    @classmethod
    def from_kernel_id(cls, btf_id: int) -> "Btf":
        ffi, lib = _ffi_lib()
        btf = lib.btf__load_from_kernel_by_id(btf_id)
        if btf == ffi.NULL:
            _fail("cannot load kernel BTF object id %d: it was freed, or this needs root (CAP_SYS_ADMIN)"
                  % btf_id, ffi.errno)
        return cls(btf, "kernel BTF id %d" % btf_id)

    def close(self) -> None:
        if self._btf is None:
            return
        ffi, lib = _ffi_lib()
        if self._obj is not None:
            lib.bpf_object__close(self._obj)
        elif self._owned:
            lib.btf__free(self._btf)
        self._btf = None
        self._obj = None

    # -- low level ---------------------------------------------------------
    def _check(self):
        if self._btf is None:
            raise LibbpfError("BTF of %s is closed: open it again with Btf.from_file" % self.source)

    def type_count(self) -> int:
        self._check()
        return _STATE["lib"].btf__type_cnt(self._btf)

    def _t(self, tid: int):
        ffi, lib = _STATE["ffi"], _STATE["lib"]
        t = lib.btf__type_by_id(self._btf, tid)
        if t == ffi.NULL:
            raise LibbpfError("type id %d does not exist in BTF of %s" % (tid, self.source), _errno.ENOENT)
        return t

    @staticmethod
    def _kind(t) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t) -> int:
        return t.info & 0xFFFF

    @staticmethod
    def _kflag(t) -> bool:
        return bool(t.info >> 31)

    def _name(self, t) -> str:
        return _s(_STATE["lib"].btf__name_by_offset(self._btf, t.name_off)) or ""

    def kind(self, tid: int) -> str:
        self._check()
        if tid == 0:
            return "void"
        k = self._kind(self._t(tid))
        return BTF_KIND_NAMES[k] if k < len(BTF_KIND_NAMES) else "unknown"

    def _skip_mods(self, tid: int) -> int:
        seen = 0
        while tid and seen < 64:
            t = self._t(tid)
            if self._kind(t) not in _BTF_MODIFIERS:
                break
            tid = t.type
            seen += 1
        return tid

    def _array(self, t):
        ffi = _STATE["ffi"]
        return ffi.cast("const struct btf_array *", ffi.cast("const struct btf_type *", t) + 1)

    def _members(self, t):
        ffi = _STATE["ffi"]
        return ffi.cast("const struct btf_member *", ffi.cast("const struct btf_type *", t) + 1)

    def size_of(self, tid: int) -> int:
        self._check()
        size = _STATE["lib"].btf__resolve_size(self._btf, tid)
        if size < 0:
            _fail("cannot resolve the size of type %s in BTF of %s" % (self.type_name(tid), self.source), -size)
        return size

    def align_of(self, tid: int) -> int:
        self._check()
        align = _STATE["lib"].btf__align_of(self._btf, tid)
        if align <= 0:
            _fail("cannot resolve the alignment of type %s in BTF of %s" % (self.type_name(tid), self.source),
                  -align if align < 0 else None)
        return align

    def type_name(self, tid: int) -> str:
        """A readable C spelling of a type: "__u32", "struct in6_addr", "__u8[5]", "char *"."""
        self._check()
        return self._type_name(tid, 0)

    def _type_name(self, tid: int, depth: int) -> str:
        if tid == 0:
            return "void"
        if depth > 32:
            return "..."
        t = self._t(tid)
        k = self._kind(t)
        name = self._name(t)
        if k in (BTF_KIND_INT, BTF_KIND_FLOAT, BTF_KIND_TYPEDEF, BTF_KIND_VAR, BTF_KIND_DATASEC,
                 BTF_KIND_FUNC):
            return name
        if k in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_FWD):
            if k == BTF_KIND_FWD:
                word = "union" if self._kflag(t) else "struct"
            else:
                word = {BTF_KIND_STRUCT: "struct", BTF_KIND_UNION: "union"}.get(k, "enum")
            return "%s %s" % (word, name) if name else "%s {...}" % word
        if k == BTF_KIND_PTR:
            inner = self._type_name(t.type, depth + 1)
            return inner + ("*" if inner.endswith("*") else " *")
        if k == BTF_KIND_ARRAY:
            dims = []
            cur = t
            while self._kind(cur) == BTF_KIND_ARRAY and len(dims) < 32:
                arr = self._array(cur)
                dims.append(arr.nelems)
                elem = arr.type
                cur = self._t(elem) if elem else None
                if cur is None:
                    break
            return self._type_name(elem, depth + 1) + "".join("[%d]" % n for n in dims)
        if k in (BTF_KIND_CONST, BTF_KIND_VOLATILE, BTF_KIND_RESTRICT):
            word = {BTF_KIND_CONST: "const", BTF_KIND_VOLATILE: "volatile", BTF_KIND_RESTRICT: "restrict"}[k]
            return "%s %s" % (word, self._type_name(t.type, depth + 1))
        if k in (BTF_KIND_TYPE_TAG, BTF_KIND_DECL_TAG):
            return self._type_name(t.type, depth + 1)
        if k == BTF_KIND_FUNC_PROTO:
            ffi = _STATE["ffi"]
            params = ffi.cast("const struct btf_param *", ffi.cast("const struct btf_type *", t) + 1)
            args = [self._type_name(params[i].type, depth + 1) for i in range(self._vlen(t))]
            return "%s (%s)" % (self._type_name(t.type, depth + 1), ", ".join(args) or "void")
        return name or "<kind %d>" % k

    # -- lookups -----------------------------------------------------------
    def find(self, name: str) -> int:
        """Type id of a struct/union by tag name, else of a typedef resolved to its struct/union.
        ``#<id>`` names a type by id (anonymous nested structs have no name)."""
        self._check()
        lib = _STATE["lib"]
        want = name.strip()
        if want.startswith("#") and want[1:].isdigit():
            return self._skip_mods(int(want[1:]))
        kinds = (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_TYPEDEF)
        if want.startswith("struct "):
            want, kinds = want[7:].strip(), (BTF_KIND_STRUCT,)
        elif want.startswith("union "):
            want, kinds = want[6:].strip(), (BTF_KIND_UNION,)
        for kind in kinds:
            tid = lib.btf__find_by_name_kind(self._btf, _b(want), kind)
            if tid <= 0:
                continue
            if kind != BTF_KIND_TYPEDEF:
                return tid
            target = self._skip_mods(tid)
            tk = self._kind(self._t(target)) if target else BTF_KIND_UNKN
            if tk not in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                raise LibbpfError("%s in BTF of %s is a typedef of %s, not of a struct or union: name the "
                                  "struct instead" % (name, self.source, self.type_name(target)))
            return target
        raise LibbpfError("type %s not found in BTF of %s: give a struct/union tag name or a typedef of one "
                          "(and make sure the object was compiled with -g and the type is used)"
                          % (name, self.source), _errno.ENOENT)

    def layout(self, name: str) -> dict:
        """Size, alignment and members of a struct/union (by tag or typedef name)."""
        tid = self.find(name)
        t = self._t(tid)
        kind = self._kind(t)
        members = []
        mems = self._members(t)
        kflag = self._kflag(t)
        for i in range(self._vlen(t)):
            m = mems[i]
            if kflag:
                bit_offset, bitfield_size = m.offset & 0xFFFFFF, m.offset >> 24
            else:
                bit_offset, bitfield_size = m.offset, 0
            resolved = self._skip_mods(m.type)
            rkind = self.kind(resolved)
            entry = {
                "name": _s(_STATE["lib"].btf__name_by_offset(self._btf, m.name_off)) or "",
                "offset": bit_offset // 8,
                "bit_offset": bit_offset,
                "bitfield_size": bitfield_size,
                "size": self.size_of(m.type),
                "align": self.align_of(m.type),
                "type": self.type_name(m.type),
                "kind": rkind,
                "type_id": m.type,
            }
            if rkind == "array":
                dims, elem = [], resolved
                while len(dims) < 32:
                    arr = self._array(self._t(elem))
                    dims.append(arr.nelems)
                    elem = arr.type
                    nxt = self._skip_mods(elem)
                    if not nxt or self._kind(self._t(nxt)) != BTF_KIND_ARRAY:
                        break
                    elem = nxt
                entry["nelems"] = dims
                entry["elem_type"] = self.type_name(elem)
            members.append(entry)
        return {
            "name": name,
            "c_type": self.type_name(tid),
            "type_id": tid,
            "kind": "union" if kind == BTF_KIND_UNION else "struct",
            "size": self.size_of(tid),
            "align": self.align_of(tid),
            "members": members,
        }

    def datasecs(self) -> list:
        self._check()
        out = []
        for tid in range(1, self.type_count()):
            t = self._t(tid)
            if self._kind(t) == BTF_KIND_DATASEC:
                out.append(self._name(t))
        return out

    def datasec_vars(self, section: str = ".rodata") -> dict:
        """{variable: (offset, size)} of a data section (".rodata", ".data", ".bss", ...)."""
        self._check()
        ffi, lib = _STATE["ffi"], _STATE["lib"]
        tid = lib.btf__find_by_name_kind(self._btf, _b(section), BTF_KIND_DATASEC)
        if tid <= 0:
            raise LibbpfError("section %s not found in BTF of %s: the object defines no such variables (sections: "
                              "%s)" % (section, self.source, ", ".join(self.datasecs()) or "none"), _errno.ENOENT)
        t = self._t(tid)
        infos = ffi.cast("const struct btf_var_secinfo *", ffi.cast("const struct btf_type *", t) + 1)
        out = {}
        for i in range(self._vlen(t)):
            vs = infos[i]
            out[self._name(self._t(vs.type))] = (vs.offset, vs.size)
        if self._obj is None and t.size == 0 and len(out) > 1:
            raise LibbpfError("section %s in %s has no laid-out offsets (raw clang BTF): open the ELF object with "
                              "Btf.from_file so libbpf lays the section out" % (section, self.source))
        return out

    def var_info(self, var: str) -> dict | None:
        """{section, offset, size, type_id, type} of a global variable, or None."""
        self._check()
        ffi = _STATE["ffi"]
        for tid in range(1, self.type_count()):
            t = self._t(tid)
            if self._kind(t) != BTF_KIND_DATASEC:
                continue
            infos = ffi.cast("const struct btf_var_secinfo *", ffi.cast("const struct btf_type *", t) + 1)
            for i in range(self._vlen(t)):
                vs = infos[i]
                vt = self._t(vs.type)
                if self._kind(vt) == BTF_KIND_VAR and self._name(vt) == var:
                    return {"section": self._name(t), "offset": vs.offset, "size": vs.size,
                            "type_id": vt.type, "type": self.type_name(vt.type)}
        return None

    def shape(self, tid: int, depth: int = 0) -> dict:
        """A plain-data description of a type, for copying values field by field (``_maps.migrate``).

        {"kind": "int", "size", "signed", "name"} for integers, enums and bools;
        {"kind": "struct", "size", "name", "members": [{"name", "offset" (bytes), "shape"}]};
        {"kind": "array", "size", "nelems", "elem": shape, "name"}; anything else (unions, floats,
        pointers, structs with bitfields) is {"kind": "bytes", "size", "name"}: copied only whole.
        Sizes are bytes, from btf__resolve_size; the source is this BTF (object file or kernel)."""
        self._check()
        ffi = _STATE["ffi"]
        rid = self._skip_mods(tid)
        size = self.size_of(rid) if rid else 0
        name = self.type_name(tid) if tid else "void"
        if not rid or depth > 16:
            return {"kind": "bytes", "size": size, "name": name}
        t = self._t(rid)
        k = self._kind(t)
        if k == BTF_KIND_INT:
            enc = ffi.cast("const __u32 *", ffi.cast("const struct btf_type *", t) + 1)[0]
            if (enc & 0xFF) != size * 8 or (enc >> 16) & 0xFF:
                return {"kind": "bytes", "size": size, "name": name}
            return {"kind": "int", "size": size, "signed": bool((enc >> 24) & 1), "name": name}
        if k in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return {"kind": "int", "size": size, "signed": self._kflag(t), "name": name}
        if k == BTF_KIND_ARRAY:
            arr = self._array(t)
            return {"kind": "array", "size": size, "nelems": arr.nelems, "elem": self.shape(arr.type, depth + 1),
                    "name": name}
        if k == BTF_KIND_STRUCT:
            mems = self._members(t)
            members = []
            for i in range(self._vlen(t)):
                m = mems[i]
                bit_offset = m.offset & 0xFFFFFF if self._kflag(t) else m.offset
                if (self._kflag(t) and m.offset >> 24) or bit_offset % 8:
                    return {"kind": "bytes", "size": size, "name": name}  # bitfields: only whole
                mname = _s(_STATE["lib"].btf__name_by_offset(self._btf, m.name_off)) or ""
                if not mname:
                    return {"kind": "bytes", "size": size, "name": name}  # anonymous members: only whole
                members.append({"name": mname, "offset": bit_offset // 8, "shape": self.shape(m.type, depth + 1)})
            return {"kind": "struct", "size": size, "members": members, "name": name}
        return {"kind": "bytes", "size": size, "name": name}

    def map_types(self, map_name: str) -> tuple:
        """(key type id, value type id) of a BTF-defined map (``__type(key, ...)`` in SEC(".maps")) of an
        object file; 0 for a side given only as a size (``__uint(key_size, ...)``). Raises LibbpfError
        (ENOENT) when the object defines no such map."""
        self._check()
        info = self.var_info(map_name)
        if info is None or info["section"] != ".maps":
            raise LibbpfError("map %s is not defined in the .maps section of %s" % (map_name, self.source),
                              _errno.ENOENT)
        t = self._t(self._skip_mods(info["type_id"]))
        out = {"key": 0, "value": 0}
        if self._kind(t) == BTF_KIND_STRUCT:
            mems = self._members(t)
            for i in range(self._vlen(t)):
                mname = _s(_STATE["lib"].btf__name_by_offset(self._btf, mems[i].name_off))
                if mname in out:
                    ptr = self._t(self._skip_mods(mems[i].type))
                    if self._kind(ptr) == BTF_KIND_PTR:
                        out[mname] = ptr.type
        return out["key"], out["value"]

    def endianness(self) -> str:
        self._check()
        return "big" if _STATE["lib"].btf__endianness(self._btf) == 1 else "little"


def _kernel_btf_type_name(btf_id: int, type_id: int) -> str | None:
    if not btf_id or not type_id:
        return None
    names = _KERNEL_BTF_NAMES.get(btf_id)
    if names is None:
        if len(_KERNEL_BTF_NAMES) > 256:
            _KERNEL_BTF_NAMES.clear()
        names = {}
        try:
            with Btf.from_kernel_id(btf_id) as btf:
                for tid in range(1, btf.type_count()):
                    names[tid] = btf.type_name(tid)
        except LibbpfError:
            return None
        _KERNEL_BTF_NAMES[btf_id] = names
    return names.get(type_id)
