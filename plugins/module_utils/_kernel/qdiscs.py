# -*- coding: utf-8 -*-
# PRIVATE module_utils of the lqos.bpf collection: not a public API, it may
# change without notice. Only this collection's modules and plugins import it.
"""The ingress slot of an interface through rtnetlink (linux/rtnetlink.h, linux/pkt_sched.h), just enough of it:
the qdiscs an interface has, which qdisc takes the ingress slot (ingress or clsact), and removing an ingress
qdisc. A raw NETLINK_ROUTE socket, no iproute2."""

from __future__ import annotations

import os
import socket
import struct

from .libbpf import LibbpfError, _fail


# rtnetlink (linux/rtnetlink.h, linux/pkt_sched.h): just enough to read and delete a qdisc.
_RTM_DELQDISC, _RTM_GETQDISC = 37, 38
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCA_KIND = 1
TC_H_INGRESS = 0xFFFFFFF1      # the slot both the `ingress` and the `clsact` qdisc take
_NLMSG = struct.Struct("=IHHII")
_TCMSG = struct.Struct("=BxxxiIII")
_RTA = struct.Struct("=HH")


def _nl_request(msg_type: int, flags: int, ifindex: int, parent: int = 0, handle: int = 0,
                kind: str | None = None) -> list:
    """Send one rtnetlink tc request; return [(ifindex, handle, parent, kind)] of the answers.
    Raises LibbpfError with the kernel's errno."""
    attrs = b""
    if kind is not None:
        data = kind.encode() + b"\0"
        attrs = _RTA.pack(_RTA.size + len(data), _TCA_KIND) + data
        attrs += b"\0" * (-len(attrs) % 4)
    body = _TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, 0) + attrs
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sk:
        sk.bind((0, 0))
        sk.send(_NLMSG.pack(_NLMSG.size + len(body), msg_type, flags, 1, 0) + body)
        while True:
            data = sk.recv(65536)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, mtype, dummy_flags, dummy_seq, dummy_pid = _NLMSG.unpack_from(data, off)
                if length < _NLMSG.size:
                    return out
                if mtype == _NLMSG_DONE:
                    return out
                if mtype == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                    if err:
                        raise LibbpfError("rtnetlink tc request failed [errno %d: %s]" % (err, os.strerror(err)), err)
                    return out
                if off + _NLMSG.size + _TCMSG.size <= off + length:
                    dummy_fam, idx, hdl, par, dummy_info = _TCMSG.unpack_from(data, off + _NLMSG.size)
                    kind_found, a = None, off + _NLMSG.size + _TCMSG.size
                    while a + _RTA.size <= off + length:
                        alen, atype = _RTA.unpack_from(data, a)
                        if alen < _RTA.size:
                            break
                        if atype == _TCA_KIND:
                            kind_found = data[a + _RTA.size:a + alen].split(b"\0", 1)[0].decode("ascii", "replace")
                        a += (alen + 3) & ~3
                    out.append((idx, hdl, par, kind_found))
                off += (length + 3) & ~3


def qdiscs(ifindex: int) -> list:
    """[{"kind", "handle", "parent"}] of the qdiscs on ``ifindex`` in this network namespace (RTM_GETQDISC)."""
    rows = _nl_request(_RTM_GETQDISC, _NLM_F_REQUEST | _NLM_F_DUMP, 0)
    return [{"kind": k, "handle": h, "parent": p} for i, h, p, k in rows if i == ifindex]


def ingress_slot_kind(ifindex: int) -> str | None:
    """"clsact", "ingress" (the legacy qdisc: a TC egress filter attached to it runs on ingress) or None."""
    for q in qdiscs(ifindex):
        if q["parent"] == TC_H_INGRESS:
            return q["kind"]
    return None


def qdisc_delete_ingress(ifindex: int) -> None:
    """Delete the legacy `ingress` qdisc of ``ifindex`` (and with it every filter it holds)."""
    try:
        _nl_request(_RTM_DELQDISC, _NLM_F_REQUEST | _NLM_F_ACK, ifindex, TC_H_INGRESS, 0xFFFF0000, "ingress")
    except LibbpfError as exc:
        _fail("deleting the ingress qdisc of ifindex %d failed" % ifindex, exc.errno)
