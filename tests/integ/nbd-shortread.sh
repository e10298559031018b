#!/usr/bin/env bash
# A disk file that shrinks behind a running export (another tool truncated it): every read
# through the export must answer the bytes the file still has, zeros past its end (or EIO),
# never the heap's contents. The heap is primed first with a recognisable pattern (written
# and read back through the same connection, so the worker's arena holds freed buffers full
# of it): a reply buffer sent before it was filled would show that pattern.
source "$(dirname "$0")/nbd-lib.sh"
requires nbdsh

disk=$NBD_TMP/disk.raw
truncate -s 16M "$disk"
start_serve "$disk"

NBD_URI=$NBD_URI DISK=$disk nbdsh -u "$NBD_URI" -c - <<'PY' || fail "short reads leaked data or failed wrongly"
import os, sys
disk = os.environ["DISK"]
CH = 256 * 1024
KEEP = 1024 * 1024 + 4096 + 512          # the file keeps this much; not chunk-aligned
pat = bytes([0xA5]) * CH
for rnd in range(4):                     # prime the server's heap with the pattern
    for off in range(0, 16 * 1024 * 1024, CH):
        h.pwrite(pat, off)
        assert h.pread(CH, off) == pat
os.truncate(disk, KEEP)
for sr in (False, True):
    bad = 0
    for off in range(0, 16 * 1024 * 1024, CH):
        try:
            d = h.pread(CH, off)
        except nbd.Error as e:
            assert e.errnum == 5, f"offset {off}: {e} (expected EIO or data)"
            continue
        want = bytes(max(0, min(CH, KEEP - off)))
        want = pat[:len(want)] + bytes(CH - len(want))
        if d != want:
            bad += 1
            print(f"offset {off}: {sum(1 for b in d if b == 0xA5)} pattern bytes in the "
                  f"reply, {sum(1 for b in d[max(0, KEEP - off):] if b)} non-zero past the "
                  f"end of the file", file=sys.stderr)
    assert bad == 0, f"{bad} replies with wrong bytes"
    # the same with simple replies (no structured reply negotiated)
    if not sr:
        h.shutdown()
        h = nbd.NBD()
        h.set_request_structured_replies(False)
        h.connect_uri(os.environ["NBD_URI"])
PY
echo OK
