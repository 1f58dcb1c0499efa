"""802.1Q in user space, for tests on kernels without VLAN interfaces (no 8021q, no bridge VLAN filtering).

Two things: reading a frame's VLAN tag as the kernel delivers it to a packet socket (in the frame's bytes, or
out of band in PACKET_AUXDATA: veth's rx-vlan offload moves the tag into the skb, and AF_PACKET then hands it
beside the frame, as libpcap puts it back; see packet(7)), and a small VLAN switch - one trunk port carrying
tagged frames, access ports carrying one VLAN each untagged - run as its own process in a network namespace
of the test (``VlanSwitch``): test infrastructure in the place of a VM's switch, so a shaper on a stick meets
real tagged frames from plain (untagged) client and upstream interfaces.

Run as a script (``VlanSwitch`` does): ``vlan_switch.py TRUNK PORT=VID [PORT=VID ...]`` in the namespace that
holds the interfaces. It relays every frame (ARP and IPv6 neighbour discovery included): untagged from an
access port -> tagged with its VID onto the trunk; tagged from the trunk -> tag stripped, to the access port
of that VID (other VIDs and untagged trunk frames are dropped). It prints ``ready`` once its sockets are bound
and, on SIGTERM, its counters as JSON on one line before it exits 0.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys

SOL_PACKET, PACKET_AUXDATA, ETH_P_ALL = 263, 8, 0x0003
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
PACKET_OUTGOING = 4   # sll_pkttype of a frame this host sent (a packet socket sees its own sends)
TPIDS = (0x8100, 0x88A8)


def packet_socket(ifname: str) -> socket.socket:
    """A packet socket on ifname (in the caller's netns) for every protocol, with PACKET_AUXDATA on."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((ifname, ETH_P_ALL))
    return sock


def listener(ns: str, ifname: str) -> socket.socket:
    """packet_socket(ifname) made in network namespace ns (the socket stays in ns; the caller does not)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import hooks as H
    with H.netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((ifname, ETH_P_ALL))
    return sock


def split_tag(frame: bytes, ancillary: list) -> tuple:
    """(tag, untagged frame) of a frame read with recvmsg: tag is (TPID, TCI) - from PACKET_AUXDATA when the
    kernel held it out of band, else from the frame's own outer 802.1Q/802.1ad header - or None."""
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 20:
            status, _len, _snap, _mac, _net, tci, tpid = struct.unpack("=IIIHHHH", data[:20])
            if status & TP_STATUS_VLAN_VALID:
                return (tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100, tci), frame
    if len(frame) >= 18 and struct.unpack("!H", frame[12:14])[0] in TPIDS:
        return struct.unpack("!HH", frame[12:16]), frame[:12] + frame[16:]
    return None, frame


def read_frame(sock: socket.socket) -> tuple:
    """(tag, untagged frame, sll_pkttype) of the next frame on a packet_socket."""
    frame, ancillary, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(20))
    tag, frame = split_tag(frame, ancillary)
    return tag, frame, addr[2]


def with_tag(frame: bytes, vid: int) -> bytes:
    """frame (untagged) with an 802.1Q tag of VID vid (priority 0) after its MAC addresses."""
    return frame[:12] + struct.pack("!HH", 0x8100, vid) + frame[12:]


def relay(trunk: str, ports: dict) -> dict:
    """Switch frames between trunk and the access ports {ifname: vid} until SIGTERM; returns the counters."""
    socks = {name: packet_socket(name) for name in [trunk] + list(ports)}
    by_vid = {vid: name for name, vid in ports.items()}
    counts = {"to_trunk": 0, "from_trunk": 0, "dropped": 0, "send_errors": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("ready", flush=True)
    by_fd = {s.fileno(): name for name, s in socks.items()}
    while not stop:
        try:
            ready = select.select(list(socks.values()), [], [], 0.5)[0]
        except InterruptedError:
            continue
        for sock in ready:
            name = by_fd[sock.fileno()]
            tag, frame, pkttype = read_frame(sock)
            if pkttype == PACKET_OUTGOING:   # our own send (or the stack's) seen on the way out
                continue
            if name == trunk:   # by VID, the tag stripped (read_frame took it off)
                out, key = by_vid.get(tag[1] & 0x0FFF) if tag and tag[0] == 0x8100 else None, "from_trunk"
            elif tag is None:   # an access port carries its VLAN untagged
                out, frame, key = trunk, with_tag(frame, ports[name]), "to_trunk"
            else:
                out = None
            if out is None:
                counts["dropped"] += 1
                continue
            try:
                socks[out].send(frame)
                counts[key] += 1
            except OSError:
                counts["send_errors"] += 1
    return counts


class VlanSwitch:
    """``vlan_switch.py`` running in network namespace ns (``ip netns exec``): trunk carries ports' VIDs."""

    def __init__(self, ns: str, trunk: str, ports: dict):
        self.ns, self.trunk, self.ports = ns, trunk, dict(ports)
        self.proc = None
        self.counts = None

    def start(self, timeout: float = 10.0) -> None:
        argv = ["ip", "netns", "exec", self.ns, sys.executable, os.path.abspath(__file__), self.trunk]
        self.proc = subprocess.Popen(argv + ["%s=%d" % p for p in self.ports.items()], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if not select.select([self.proc.stdout], [], [], timeout)[0] or self.proc.stdout.readline() != "ready\n":
            self.stop()
            raise AssertionError("the VLAN switch in %s did not start: %s" % (self.ns, self.proc.stderr.read()))

    def stop(self) -> None:
        """SIGTERM, then wait (reaped: no process left behind); the counters it printed go to self.counts."""
        if self.proc is None or self.counts is not None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        self.counts = json.loads(lines[-1]) if lines else {"stderr": err}

    def alive(self) -> bool:
        """Whether the process still exists (not yet reaped counts as existing)."""
        return self.proc is not None and os.path.exists("/proc/%d" % self.proc.pid)


def main(argv: list) -> int:
    ports = {}
    for arg in argv[1:]:
        name, vid = arg.split("=", 1)
        ports[name] = int(vid)
    counts = relay(argv[0], ports)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
