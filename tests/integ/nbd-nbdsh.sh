#!/usr/bin/env bash
# libnbd's Python binding (what nbdsh runs) against svm-nbd-serve: handshake variants
# (option mode, LIST, INFO, LIST_META_CONTEXT, ABORT, oldstyle EXPORT_NAME, no structured
# replies, full info), FUA, flush, trim, zero with its flags, block status on two contexts,
# several connections, and the protocol's errors (past the end, over the maximum length,
# flags not allowed), after which the connection keeps working.
source "$(dirname "$0")/nbd-lib.sh"
requires nbdsh
python3 -c 'import nbd' 2>/dev/null || { echo "SKIP: python3-libnbd missing" >&2; exit 77; }

disk=$NBD_TMP/disk.raw
truncate -s 32M "$disk"
start_serve "$disk" --dirty-layer

# nbdsh itself, as an operator would use it
nbdsh -u "$NBD_URI" -c 'assert h.get_size() == 32 << 20' -c 'h.pwrite(b"x" * 512, 0)' \
  -c 'assert h.pread(512, 0) == b"x" * 512' || fail "nbdsh -u"

python3 - "$NBD_URI" "$NBD_SOCK" <<'PY' || fail "python3-libnbd checks"
import errno, sys
import nbd

uri, sock = sys.argv[1], sys.argv[2]
MiB = 1 << 20
SIZE = 32 * MiB

def expect_err(fn, want, what):
    try:
        fn()
    except nbd.Error as e:
        got = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), -1)
        if got != want:
            raise AssertionError(f"{what}: errno {e.errno} ({e}), expected {want}")
        return
    raise AssertionError(f"{what}: succeeded, expected errno {want}")

# --- option mode: LIST, INFO, LIST_META_CONTEXT, then GO
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append(name) or 0)
assert names == ["disk"], names
h.set_export_name("nosuch")
expect_err(h.opt_info, errno.ENOENT, "INFO for an unknown export")
h.set_export_name("disk")
h.set_full_info(True)
h.opt_info()
assert h.get_size() == SIZE
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB
assert h.get_block_size(nbd.SIZE_PREFERRED) == 4096
assert h.get_canonical_export_name() == "disk"
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
assert ctxs == ["base:allocation"], ctxs
h.add_meta_context("base:")
h.add_meta_context("svm-test:dirty")
h.add_meta_context("svm-test:")
h.add_meta_context("nosuch:x")
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
assert sorted(ctxs) == ["base:allocation", "svm-test:dirty"], ctxs
# SET selects exact names only (a bare namespace selects nothing, as in qemu-nbd)
h.opt_go()
assert not h.can_meta_context("base:allocation")
assert h.can_meta_context("svm-test:dirty")
h.shutdown()
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.add_meta_context("svm-test:dirty")
h.add_meta_context("nosuch:x")
h.connect_uri(uri)
assert h.can_meta_context("svm-test:dirty")
assert not h.can_meta_context("nosuch:x")
h.pwrite(b"\1" * 8192, 4 * MiB)
seen = {}
def ext(ctx, off, entries, err):
    seen.setdefault(ctx, []).extend(entries)
    return 0
h.block_status(8 * MiB, 0, ext)
# dirty: the nbdsh write at 0 and this one at 4 MiB, in 64 KiB grains
assert seen["svm-test:dirty"][:6] == [65536, 1, 4 * MiB - 65536, 0, 65536, 1], seen["svm-test:dirty"]
def flags_at(entries, where):
    off = 0
    for i in range(0, len(entries), 2):
        if off <= where < off + entries[i]:
            return entries[i + 1]
        off += entries[i]
    raise AssertionError(f"{where} not covered: {entries}")
al = seen["base:allocation"]
assert flags_at(al, 0) == 0 and flags_at(al, 4 * MiB) == 0 and flags_at(al, 4 * MiB + 8191) == 0
assert flags_at(al, 4 * MiB - 1) == 3 and flags_at(al, 4 * MiB + 8192) == 3, al
assert sum(al[0::2]) == 8 * MiB, al
h.shutdown()

# --- ABORT
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
h.opt_abort()
assert h.aio_is_closed() or h.aio_is_dead()

# --- oldstyle option NBD_OPT_EXPORT_NAME (client without fixed newstyle)
h = nbd.NBD()
h.set_handshake_flags(0)
h.connect_uri(uri)
assert h.get_size() == SIZE
assert h.pread(8192, 4 * MiB) == b"\1" * 8192
h.shutdown()

# --- simple replies only
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(uri)
assert not h.get_structured_replies_negotiated()
assert h.pread(4096, 4 * MiB) == b"\1" * 4096
h.set_strict_mode(0)
expect_err(lambda: h.block_status(4096, 0, ext), errno.EINVAL, "BLOCK_STATUS without contexts")
assert h.pread(4096, 8 * MiB) == bytes(4096)
h.shutdown()

# --- data commands and flags
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
assert h.get_structured_replies_negotiated()
assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_fast_zero()
assert h.can_multi_conn() and h.can_df()
h.pwrite(b"\xab" * 65536, MiB, nbd.CMD_FLAG_FUA)
assert h.pread(65536, MiB) == b"\xab" * 65536
h.flush()
h.zero(4096, MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
assert h.pread(8192, MiB) == bytes(4096) + b"\xab" * 4096
h.zero(4096, MiB + 4096)
try:
    h.zero(4096, MiB + 8192, nbd.CMD_FLAG_FAST_ZERO)
except nbd.Error as e:
    assert e.errno in (errno.ENOTSUP, "ENOTSUP", "EOPNOTSUPP"), e    # allowed: fast zero not possible here
h.trim(16384, MiB + 16384, nbd.CMD_FLAG_FUA)
data = h.pread(65536, MiB)
assert data[:8192] == bytes(8192) and data[32768:] == b"\xab" * 32768
# unaligned I/O
h.pwrite(b"odd", 12345)
assert h.pread(5, 12344) == b"\0odd\0"

# --- errors the protocol defines; the connection stays usable after each
h.set_strict_mode(0)
expect_err(lambda: h.pread(4096, SIZE - 1), errno.EINVAL, "READ past the end")
expect_err(lambda: h.pread(1, SIZE), errno.EINVAL, "READ at the end")
expect_err(lambda: h.pwrite(b"x" * 4096, SIZE - 100), errno.ENOSPC, "WRITE past the end")
expect_err(lambda: h.zero(4096, SIZE), errno.ENOSPC, "WRITE_ZEROES past the end")
expect_err(lambda: h.trim(4096, SIZE), errno.EINVAL, "TRIM past the end")
expect_err(lambda: h.pread(33 * MiB, 0), errno.EOVERFLOW, "READ over the maximum")
expect_err(lambda: h.pwrite(b"y" * (33 * MiB), 16 * MiB - 1), errno.EOVERFLOW, "WRITE over the maximum")
expect_err(lambda: h.pwrite(b"z" * 512, 0, nbd.CMD_FLAG_NO_HOLE), errno.EINVAL, "WRITE+NO_HOLE")
expect_err(lambda: h.pread(512, 0, nbd.CMD_FLAG_FUA), errno.EINVAL, "READ+FUA")
expect_err(lambda: h.flush(nbd.CMD_FLAG_FUA), errno.EINVAL, "FLUSH+FUA")
expect_err(lambda: h.cache(4096, 0), errno.EINVAL, "CACHE (not offered)")
assert h.pread(65536, MiB)[32768:] == b"\xab" * 32768, "the connection survived the errors"
assert h.pread(4096, 16 * MiB) == bytes(4096), "an oversize WRITE must not have written anything"

# --- multi-conn: a write on one connection, FLUSH on another, read on a third
a, b, c = nbd.NBD(), nbd.NBD(), nbd.NBD()
for x in (a, b, c):
    x.connect_uri(uri)
a.pwrite(b"M" * 4096, 20 * MiB)
b.flush()
assert c.pread(4096, 20 * MiB) == b"M" * 4096
for x in (a, b, c, h):
    x.shutdown()
print("python3-libnbd checks: ok")
PY
stop_serve
# The errors above were each logged as one line naming the client.
grep -q 'nbd: client unix#[0-9]*: READ offset 33554431 length 4096 flags 0x0: answered with NBD error 22' \
  "$NBD_TMP/serve.log" || fail "no log line for a READ past the end"
echo "nbd-nbdsh: ok"
