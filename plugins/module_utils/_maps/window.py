# -*- coding: utf-8 -*-
# Copyright (c) lqos.bpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE: this module_util is an implementation detail of the lqos.bpf
# collection, not a public API. It may change or vanish without notice.
"""Writes made while a map is replaced: the journal, the copy-time snapshot and the catch-up.

The entries of an old map are copied into the new one at one instant; the old
programs, and user-space writers, keep writing the old map until the programs
are swapped (and a writer holding an fd on it, until it reopens the pin). The
snapshot taken at copy time keeps, per key, two digests (blake2b, 8 bytes each):
of the old map's value as converted, and of the new map's value, both the value
written at copy time (one digest computed); a counter map keeps the old value
too, to add up its fields. The old map's value now, converted the same way,
tells whether it changed since (a change only to a field the new layout drops is
no change); the new map's value now, whether a writer changed it. ``sync``
then carries over, key by key:

- old map changed since the snapshot, new map not (still what was written):
  the old value, converted, replaces it (a key deleted from the old map is
  deleted from the new one);
- both changed: the new map's value stays (it was written after the swap,
  so it is newer), or, for a counter map (``counter: true`` in the spec's
  ``pinned_maps``), every integer field gets the old map's increase added;
- old map unchanged: nothing moves, whatever the new map holds.

So a rerun never puts an older value over a newer one. After each pass the
snapshot says what both maps hold, so passes repeat safely (the attach runs one
right after the swap, the commit one more before the old map is unpinned).

State files live in ``state_dir`` (``/run``): ``replace-<hash>.json`` (which
new map was filled from which old one) and ``snap-<hash>-<map>.bin`` (the
snapshot: one JSON header line, then per key the key bytes and the two digests). Temporary files a killed run left are removed by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from itertools import chain, compress, repeat
from operator import itemgetter, ne

from .._common import (
    LqosError, MAP_STATE_DIR, atomic_write, remove_stale_temps,
)
from . import migrate as G

DIGEST = 8
SNAPSHOT_FORMAT = "lqos.bpf.map-snapshot/1"


def digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


def records(buf, n: int, size: int) -> list:
    """The n records of ``size`` bytes of a flat buffer, as bytes each (cut in one C loop:
    ``struct.Struct.iter_unpack``)."""
    if not n or not size:
        return [b""] * n
    return list(map(itemgetter(0), struct.Struct("%ds" % size).iter_unpack(memoryview(buf)[:n * size])))


def digests(buf, n: int, size: int) -> list:
    """``digest`` of each of the n records of ``size`` bytes of a flat buffer."""
    blake2b = hashlib.blake2b
    return [blake2b(r, digest_size=DIGEST).digest() for r in records(buf, n, size)]


def _root_hash(pin_root: str) -> str:
    return hashlib.sha256(pin_root.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------

def journal_path(state_dir: str, pin_root: str) -> str:
    return os.path.join(state_dir, "replace-%s.json" % _root_hash(pin_root))


def read_journal(state_dir: str, pin_root: str) -> dict:
    try:
        with open(journal_path(state_dir, pin_root)) as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _state_dir_ok(state_dir: str) -> None:
    if os.path.lexists(state_dir) and not os.path.isdir(state_dir):
        raise LqosError("state_dir %s is a file, not a folder; nothing was changed." % state_dir,
                        "give a folder (default %s)." % MAP_STATE_DIR)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)


def write_journal(state_dir: str, pin_root: str, doc: dict) -> None:
    """Record ``doc``; an empty one removes the record and every snapshot of ``pin_root`` (nothing under way
    leaves no file behind)."""
    if not doc:
        for path in [journal_path(state_dir, pin_root)] + _snapshots(state_dir, pin_root):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                pass  # state_dir is a file: reported by the next write that needs it
        return
    _state_dir_ok(state_dir)
    atomic_write(journal_path(state_dir, pin_root), json.dumps(doc, sort_keys=True), mode=0o600)


def remove_leftovers(state_dir: str, backup_dir: str | None = None) -> list:
    """Temporary journal, snapshot and backup files of a killed run (``.replace-*.json.<pid>.*``,
    ``.snap-*.bin.<pid>.*``, ``.<map>.<ts>.json.<pid>.*``) whose writer is gone."""
    out = remove_stale_temps(state_dir, r"(replace-[0-9a-f]+\.json|snap-[0-9a-f]+-.+\.bin)")
    if backup_dir:
        out += remove_stale_temps(backup_dir, r".+\.json")
    return out


# --------------------------------------------------------------------------
# Snapshot
# --------------------------------------------------------------------------

def snapshot_path(state_dir: str, pin_root: str, name: str) -> str:
    return os.path.join(state_dir, "snap-%s-%s.bin" % (_root_hash(pin_root), name.replace("/", "__")))


def _snapshots(state_dir: str, pin_root: str) -> list:
    prefix = "snap-%s-" % _root_hash(pin_root)
    try:
        return [os.path.join(state_dir, n) for n in os.listdir(state_dir) if n.startswith(prefix)]
    except OSError:
        return []


def drop_snapshot(state_dir: str, pin_root: str, name: str) -> None:
    try:
        os.unlink(snapshot_path(state_dir, pin_root, name))
    except OSError:
        pass


def save_snapshot(state_dir: str, pin_root: str, name: str, key_size: int, rows: dict, counter_bytes: int = 0
                  ) -> None:
    """rows: {new key: (digest of the old value converted, digest of the new map's value, old value or None)}
    as of the last pass; old values are kept only for a counter map (``counter_bytes``: their size)."""
    vals = rows.values()
    olds = [old for _do, _dn, old in vals] if counter_bytes else None
    _write_snapshot(state_dir, pin_root, name, key_size, list(rows), list(map(itemgetter(0), vals)),
                    list(map(itemgetter(1), vals)), olds, counter_bytes)


def _write_snapshot(state_dir: str, pin_root: str, name: str, key_size: int, keys: list, d_old: list, d_new: list,
                    olds: list | None, counter_bytes: int) -> None:
    """The snapshot file from its columns (lists of bytes, one item per key), joined in one C loop."""
    _state_dir_ok(state_dir)
    head = json.dumps({"format": SNAPSHOT_FORMAT, "name": name, "key_size": key_size, "entries": len(keys),
                       "counter_bytes": counter_bytes}, sort_keys=True).encode() + b"\n"
    if counter_bytes:
        zero = bytes(counter_bytes)
        cols = zip(keys, d_old, d_new, (old or zero for old in olds))
    else:
        cols = zip(keys, d_old, d_new)
    atomic_write(snapshot_path(state_dir, pin_root, name), b"".join(chain((head,), chain.from_iterable(cols))),
                 mode=0o600)


def load_snapshot(state_dir: str, pin_root: str, name: str) -> dict | None:
    """The rows save_snapshot wrote, or None (no snapshot, or not one this version wrote)."""
    try:
        with open(snapshot_path(state_dir, pin_root, name), "rb") as fh:
            raw = fh.read()
        head, body = raw.split(b"\n", 1)
        meta = json.loads(head.decode())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        return None
    ksz, cb = meta["key_size"], meta["counter_bytes"]
    rec = ksz + 2 * DIGEST + cb
    if len(body) != rec * meta["entries"]:
        return None
    if cb:
        cut = struct.Struct("%ds%ds%ds%ds" % (ksz, DIGEST, DIGEST, cb))
        return {k: (do, dn, old) for k, do, dn, old in cut.iter_unpack(body)}
    cut = struct.Struct("%ds%ds%ds" % (ksz, DIGEST, DIGEST))
    return {k: (do, dn, None) for k, do, dn in cut.iter_unpack(body)}


# Copies whose snapshot this process computes later: {(pin_root, name): (old table, new table, counter, state_dir)}.
# lqos.bpf.attach's pin step defers them (DEFER[0]) until its catch-up right after the swap has read the old map,
# so the digests are not computed between the copy and the swap; flush_snapshots() writes what is left.
DEFER = [False]
DEFERRED = {}


def keep_snapshot(state_dir: str, pin_root: str, name: str, key_size: int, old_table, new_table, counter: bool
                  ) -> None:
    """The snapshot of a copy: written now, or kept in this process when DEFER[0] (an older file is removed)."""
    drop_snapshot(state_dir, pin_root, name)
    if DEFER[0]:
        DEFERRED[(pin_root, name)] = (old_table, new_table, counter, state_dir)
        return
    _save_copy(state_dir, pin_root, name, old_table, new_table, counter)


def _save_copy(state_dir: str, pin_root: str, name: str, old_table, new_table, counter: bool) -> None:
    """The snapshot of a copy written from the two tables, without building its rows."""
    n = new_table.n
    ds = digests(new_table.values, n, new_table.value_bytes)
    _write_snapshot(state_dir, pin_root, name, new_table.key_size, records(new_table.keys, n, new_table.key_size),
                    ds, ds, records(old_table.values, n, old_table.value_bytes) if counter else None,
                    old_table.value_bytes if counter else 0)


def deferred_rows(pin_root: str, name: str):
    """A callable giving the rows of a deferred copy (taken out of DEFERRED), or None."""
    kept = DEFERRED.pop((pin_root, name), None)
    if kept is None:
        return None
    return lambda: snapshot_rows(kept[0], kept[1], kept[2])


def flush_snapshots() -> None:
    """Write every snapshot still deferred in this process."""
    while DEFERRED:
        (pin_root, name), (old_t, new_t, counter, state_dir) = DEFERRED.popitem()
        _save_copy(state_dir, pin_root, name, old_t, new_t, counter)


def snapshot_rows(old_table, new_table, counter: bool) -> dict:
    """The snapshot of a copy: the entries written (a _kernel.batch.Table), from ``old_table``'s, in order. A row
    is (digest of the old value converted, digest of the new map's value, old value for a counter map): at copy
    time both digests are of the value written, so one is computed."""
    n = new_table.n
    keys = records(new_table.keys, n, new_table.key_size)
    ds = digests(new_table.values, n, new_table.value_bytes)
    olds = records(old_table.values, n, old_table.value_bytes) if counter else repeat(None)
    return dict(zip(keys, zip(ds, ds, olds)))


# --------------------------------------------------------------------------
# Catch-up
# --------------------------------------------------------------------------

def int_leaves(shape: dict | None, off: int = 0) -> list:
    """[(offset, size, signed)] of every integer field of a BTF shape."""
    if not shape:
        return []
    if shape["kind"] == "int":
        return [(off, shape["size"], bool(shape.get("signed")))]
    out = []
    if shape["kind"] == "struct":
        for m in shape["members"]:
            out += int_leaves(m["shape"], off + m["offset"])
    elif shape["kind"] == "array":
        for i in range(shape["nelems"]):
            out += int_leaves(shape["elem"], off + i * shape["elem"]["size"])
    return out


def add_delta(new_now: bytes, conv_now: bytes, conv_then: bytes, leaves: list, stride: int) -> bytes:
    """new_now + (conv_now - conv_then) for every integer field (little-endian, wrapping at its width), in
    every per-CPU copy (``stride`` bytes apart)."""
    out = bytearray(new_now)
    for base in range(0, len(out), stride):
        for off, size, _signed in leaves:
            a, b = base + off, base + off + size
            mod = 1 << (8 * size)
            delta = int.from_bytes(conv_now[a:b], "little") - int.from_bytes(conv_then[a:b], "little")
            v = (int.from_bytes(new_now[a:b], "little") + delta) % mod
            out[a:b] = v.to_bytes(size, "little")
    return bytes(out)


def sync(old_path: str, new_path: str, plan: dict, old_side: dict, new_side: dict, rows: dict | None,
         counter: bool, ncpus: int, allow_narrowing: bool = False) -> tuple:
    """One catch-up pass from the old map into the new one (rules in the module docstring). ``rows``: the
    snapshot (None: none survived, so the new map's value wins for every key it holds; a callable: computed
    after both maps were read). Returns (new rows,
    {carried, deleted, kept_newer, added_up, old_read_at}); old_read_at: when the old map was read (seconds
    since the epoch; every write to it that returned before is carried over)."""
    from .._kernel import batch as BB  # kernel side, imported late
    read_at = time.time()
    old_t, new_t = BB.dump(old_path), BB.dump(new_path)
    if callable(rows):
        rows = rows()             # a snapshot deferred until the old map was read
    keep_old = counter            # a counter map's rows keep the old values for the next pass
    if rows is None:
        rows, counter = {}, False  # without the snapshot an increase cannot be told from the copied total
    stats = {"carried": 0, "deleted": 0, "kept_newer": 0, "added_up": 0, "old_read_at": read_at}
    # every old entry converted at once: a value is "changed" when its conversion differs from what was written
    # (the new map's capacity is the fill's to report, key by key)
    room = new_side if new_side["type"] in G.ARRAY_KINDS else \
        dict(new_side, max_entries=max(new_side["max_entries"], old_t.n))
    nk, nv = G.convert_table(plan, old_side, room, old_t.keys, old_t.values, old_t.n, ncpus,
                             allow_narrowing=allow_narrowing)
    kb, nb, ob, n = new_side["key_size"], new_t.value_bytes, old_t.value_bytes, old_t.n
    keys, vals = records(nk, n, kb), records(nv, n, nb)
    blake2b = hashlib.blake2b
    ds = [blake2b(v, digest_size=DIGEST).digest() for v in vals]
    ovals = records(old_t.values, n, ob) if keep_old else repeat(None, n)
    new_now = dict(zip(records(new_t.keys, new_t.n, new_t.key_size), records(new_t.values, new_t.n, nb)))
    seen = set(keys)
    # unchanged in the old map since the last pass (its digest is the snapshot's): found in C loops, kept as is
    snap = list(map(itemgetter(0), map(rows.get, keys, repeat((None,)))))
    changed = list(compress(range(n), map(ne, ds, snap)))
    if keep_old:
        ovals = list(ovals)
        out_rows = {k: (d, rows[k][1], ov) for k, d, ov, c in zip(keys, ds, ovals, map(ne, ds, snap)) if not c}
    else:
        same = seen.difference(keys[i] for i in changed)
        out_rows = dict(zip(same, map(rows.__getitem__, same)))
    todo_keys, todo_vals = [], []
    leaves = int_leaves(new_side.get("value_shape")) if counter else []
    stride = (new_side["value_size"] + 7) // 8 * 8 if new_side["type"] in G.PERCPU_KINDS else nb
    then = {}
    for i in changed:
        key, cv, d = keys[i], vals[i], ds[i]
        row = rows.get(key)
        old_value = ovals[i] if keep_old else None
        cur = new_now.get(key)
        if cur is None or (row is not None and digest(cur) == row[1]):
            write = cv                            # the new map still holds what was written (or nothing)
            stats["carried"] += 1
        elif counter and row is not None and row[2] is not None:
            then[key] = (i, row[2])
            continue                              # both changed: added up below, in bulk
        else:
            stats["kept_newer"] += 1              # written in the new map since: newer than the old map's value
            out_rows[key] = (d, digest(cur), old_value)
            continue
        todo_keys.append(key)
        todo_vals.append(write)
        out_rows[key] = (d, d, old_value)          # both maps now hold the same value
    if then:
        order = sorted(then, key=lambda k: then[k][0])
        _k, tc = G.convert_table(plan, old_side, new_side, b"".join(old_t.key(then[k][0]) for k in order),
                                 b"".join(then[k][1] for k in order), len(order), ncpus, allow_narrowing=True)
        for j, key in enumerate(order):
            i = then[key][0]
            write = add_delta(new_now[key], vals[i], tc[j * nb:(j + 1) * nb], leaves, stride)
            stats["added_up"] += 1
            todo_keys.append(key)
            todo_vals.append(write)
            out_rows[key] = (ds[i], digest(write), ovals[i])
    deletes = [k for k in set(rows).difference(seen) if k in new_now and digest(new_now[k]) == rows[k][1]]
    if todo_keys:
        BB.fill(new_path, BB.Table(b"".join(todo_keys), b"".join(todo_vals), new_t.key_size, new_t.value_bytes))
    if deletes:
        stats["deleted"] = BB.delete(new_path, deletes)
    return out_rows, stats
