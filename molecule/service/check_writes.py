"""Compare shaperd's write log with the map it writes (molecule/service/verify.yml, run on the VM).

    python3 check_writes.py LOG PIN [AFTER_SEQ VALUE_BYTES]

LOG: shaperd's write log ("SEQ KEYHEX VALUEHEX ok|errno=N" per line, docs/standin-daemon.md); PIN: the pinned
ip_to_shaper. The map is read with ``bpftool -j map dump pinned PIN``. A value is compared by its fields
(cpu, tc_handle, circuit_id, device_id) in either layout: 24 bytes (cpu __u32) or 32 bytes (cpu __u64, the v2
of tests/functional/variants.py), so an entry migrated into the wider layout still matches its logged write.
Prints one JSON object: logged (ok lines), failed (errno lines), present, and each missing or different write
as {seq, value_bytes} (at most 50 of each listed, totals beside). With AFTER_SEQ and VALUE_BYTES, a missing write
of a later sequence number and that value size is counted in not_carried_back instead: what the daemon of a
failed build wrote into the new maps before the rollback put the old maps back (docs/service-loader.md).
"""
import json
import struct
import subprocess
import sys


def fields(raw: bytes):
    if len(raw) == 24:
        return struct.unpack("<IIQQ", raw)
    if len(raw) == 32:
        cpu, handle, circuit, device = struct.unpack("<QI4xQQ", raw)
        return cpu, handle, circuit, device
    raise SystemExit("unexpected value size %d" % len(raw))


def main(log_path: str, pin: str, after: int = -1, excused_bytes: int = 0) -> None:
    # The log first, then the map: the daemon appends a line after its update returned, so every line read here
    # was in the map before the dump below began (a daemon still writing adds lines this run does not see).
    with open(log_path) as fh:
        lines = fh.readlines()
    dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "pinned", pin], check=True,
                                     capture_output=True, text=True).stdout)
    in_map = {bytes(int(b, 16) for b in e["key"]).hex(): bytes(int(b, 16) for b in e["value"]) for e in dump}
    logged = failed = present = not_carried_back = 0
    missing, different = [], []
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        seq, key, value, outcome = int(parts[0]), parts[1], bytes.fromhex(parts[2]), parts[3]
        if outcome != "ok":
            failed += 1
            continue
        logged += 1
        got = in_map.get(key)
        if got is None and seq > after and len(value) == excused_bytes:
            not_carried_back += 1
        elif got is None:
            missing.append({"seq": seq, "value_bytes": len(value)})
        elif fields(got) != fields(value):
            different.append({"seq": seq, "value_bytes": len(value), "map_bytes": len(got)})
        else:
            present += 1
    print(json.dumps({"logged": logged, "failed": failed, "present": present, "map_entries": len(in_map),
                      "missing_total": len(missing), "missing": missing[:50],
                      "different_total": len(different), "different": different[:50],
                      "not_carried_back": not_carried_back}))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
