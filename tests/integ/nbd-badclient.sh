#!/usr/bin/env bash
# Clients that do everything wrong, on raw sockets: truncated and malformed handshakes,
# unknown and oversize options, bad magic, unknown commands, requests past the end and over
# the maximum, disconnects in the middle of a request, a client that never reads its replies,
# clients that stall, and 200 clients at once. The server must answer with the protocol's
# errors, keep serving everybody else, log one line per bad client, and leak nothing (its
# file descriptors return to where they were; the ASan build checks memory at exit).
source "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo

disk=$NBD_TMP/disk.raw
truncate -s 16M "$disk"
start_serve "$disk"
fds_before=$(ls /proc/"$SERVE_PID"/fd | wc -l)

python3 - "$NBD_SOCK" <<'PY' || fail "raw-socket checks"
import socket, struct, sys, time

SOCK = sys.argv[1]
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3e889045565a9
REQ, SIMPLE, STRUCT = 0x25609513, 0x67446698, 0x668e33ef
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_TOO_BIG = (1 << 31) + 1, (1 << 31) + 3, (1 << 31) + 6, (1 << 31) + 9
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO, OPT_SR, OPT_SET_META = 1, 2, 3, 7, 8, 10

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(SOCK)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError(f"closed after {len(b)} of {n} bytes")
        b += c
    return b

def closed_by_server(s):
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def hello(s, flags=3):
    m, o, hf = struct.unpack(">QQH", recvn(s, 18))
    assert m == NBDMAGIC and o == IHAVEOPT and hf & 1, (hex(m), hex(o), hf)
    s.sendall(struct.pack(">I", flags))

def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data)) + data)

def reply(s):
    m, o, t, n = struct.unpack(">QIII", recvn(s, 20))
    assert m == REPMAGIC, hex(m)
    return o, t, recvn(s, n)

def replies_until_end(s):
    out = []
    while True:
        o, t, d = reply(s)
        out.append((t, d))
        if t == 1 or t & (1 << 31):
            return out

def go(s, name=b"disk", structured=False):
    if structured:
        opt(s, OPT_SR)
        assert reply(s)[1] == 1
    opt(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    r = replies_until_end(s)
    assert r[-1][0] == 1, r
    info = [d for t, d in r if t == 3 and struct.unpack(">H", d[:2])[0] == 0][0]
    return struct.unpack(">QH", info[2:12])

def request(s, typ, off, length, flags=0, cookie=7, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + payload)

def simple_reply(s):
    m, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert m == SIMPLE, hex(m)
    return err, cookie

def good(s=None):
    s = s or conn()
    hello(s)
    size, flags = go(s)
    assert size == 16 << 20
    request(s, 0, 4096, 512, cookie=99)
    err, cookie = simple_reply(s)
    assert err == 0 and cookie == 99
    recvn(s, 512)
    request(s, 2, 0, 0)                      # DISC
    assert closed_by_server(s)
    s.close()

# -- handshake phase --
s = conn(); s.close()                                           # connect, leave
s = conn(); recvn(s, 18); s.sendall(b"\0\0"); s.close()         # truncated client flags
s = conn(); recvn(s, 18); s.sendall(struct.pack(">I", 0xffffffff))   # unknown client flags
assert closed_by_server(s); s.close()
s = conn(); hello(s); s.sendall(b"NOTMAGIC" + b"\0" * 8)        # bad option magic
assert closed_by_server(s); s.close()
s = conn(); hello(s); s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 0x7fffffff))  # huge option
assert closed_by_server(s); s.close()
s = conn(); hello(s); s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 20) + b"\0" * 5)
s.close()                                                       # truncated option payload
s = conn(); hello(s); s.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, 5) + b"wrong")
assert closed_by_server(s); s.close()                           # unknown export, oldstyle
s = conn(); hello(s); s.sendall(struct.pack(">QI", IHAVEOPT, OPT_GO)); s.close()  # half a header

# error replies, after which the same client goes on to a good GO
s = conn(); hello(s)
opt(s, OPT_GO, b"\0" * 100000)                                  # over 64 KiB: TOO_BIG
assert reply(s)[1] == ERR_TOO_BIG
opt(s, 999, b"abc")
assert reply(s)[1] == ERR_UNSUP
opt(s, 5)                                                       # STARTTLS: not here
assert reply(s)[1] == ERR_UNSUP
opt(s, OPT_GO, struct.pack(">I", 1000) + b"disk" + b"\0\0")    # name length lies
assert reply(s)[1] == ERR_INVALID
opt(s, OPT_GO, struct.pack(">I", 4) + b"disk" + struct.pack(">H", 5) + b"\0\0")  # ninfo lies
assert reply(s)[1] == ERR_INVALID
opt(s, OPT_GO, struct.pack(">I", 4) + b"nope" + b"\0\0")
assert reply(s)[1] == ERR_UNKNOWN
opt(s, OPT_SR, b"x")
assert reply(s)[1] == ERR_INVALID
opt(s, OPT_SET_META, struct.pack(">II", 0, 0))                 # before STRUCTURED_REPLY
assert reply(s)[1] == ERR_INVALID
opt(s, OPT_LIST, b"x")
assert reply(s)[1] == ERR_INVALID
opt(s, OPT_SR)
assert reply(s)[1] == 1
opt(s, OPT_SET_META, struct.pack(">II", 0, 3) + struct.pack(">I", 100) + b"x")   # truncated query
assert reply(s)[1] == ERR_INVALID
size, flags = go(s)
assert size == 16 << 20 and flags & (1 << 8), flags              # CAN_MULTI_CONN

# -- transmission phase (structured replies on) --
request(s, 99, 0, 512, cookie=1)                                # unknown command
assert simple_reply(s) == (22, 1)
request(s, 5, 0, 512, cookie=2)                                 # CACHE: not offered
assert simple_reply(s) == (22, 2)
request(s, 1, 0, 512, flags=0x40, cookie=3, payload=b"q" * 512) # unknown flag on WRITE
assert simple_reply(s) == (22, 3)
request(s, 7, 0, 512, cookie=4)                                 # BLOCK_STATUS, no context
m, fl, typ, cookie, n = struct.unpack(">IHHQI", recvn(s, 20))
assert (m, fl, typ, cookie) == (STRUCT, 1, 32769, 4), (hex(m), fl, typ, cookie)
assert struct.unpack(">I", recvn(s, n)[:4])[0] == 22
request(s, 0, (16 << 20) - 1, 2, cookie=5)                      # READ past the end
m, fl, typ, cookie, n = struct.unpack(">IHHQI", recvn(s, 20))
assert typ == 32769 and cookie == 5 and struct.unpack(">I", recvn(s, n)[:4])[0] == 22
request(s, 0, 0, 64 << 20, cookie=6)                            # READ over the maximum
m, fl, typ, cookie, n = struct.unpack(">IHHQI", recvn(s, 20))
assert typ == 32769 and cookie == 6 and struct.unpack(">I", recvn(s, n)[:4])[0] == 75
request(s, 1, 1 << 20, 40 << 20, cookie=8, payload=b"w" * (40 << 20))  # WRITE over max: drained
assert simple_reply(s) == (75, 8)
request(s, 0, 1 << 20, 8, cookie=9)                             # still in sync
m, fl, typ, cookie, n = struct.unpack(">IHHQI", recvn(s, 20))
assert typ == 1 and cookie == 9 and recvn(s, n)[8:] == b"\0" * 8
s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 10, 0, 512))  # bad request magic
assert closed_by_server(s); s.close()

s = conn(); hello(s); go(s)
request(s, 1, 0, 1000, payload=b"x" * 500); s.close()           # WRITE cut mid-payload
s = conn(); hello(s); go(s)
s.sendall(struct.pack(">IHHQ", REQ, 0, 0, 1)); s.close()        # header cut short
s = conn(); hello(s); go(s)
request(s, 1, 0, 100 << 20)                                     # WRITE too large to drain
assert closed_by_server(s); s.close()
s = conn(); hello(s); go(s)
request(s, 0, 0, 1 << 20); s.close()                            # READ, gone before the reply

# a client that pipelines 2 GiB of reads and never reads the replies, then leaves
s = conn(); hello(s); go(s)
s.setblocking(False)
sent = 0
req = struct.pack(">IHHQQI", REQ, 0, 0, 1, 0, 1 << 20)
deadline = time.time() + 1
while sent < 2048 and time.time() < deadline:
    try:
        s.send(req); sent += 1
    except BlockingIOError:
        time.sleep(0.01)
s.close()

# stalled clients hold no one up
stalled = [conn() for _ in range(20)]
good()

# 200 clients at once: all connect, then all handshake, then each reads
many = [conn() for _ in range(200)]
for c in many:
    hello(c)
for c in many:
    opt(c, OPT_GO, struct.pack(">I", 4) + b"disk" + b"\0\0")
for c in many:
    r = replies_until_end(c)
    assert r[-1][0] == 1
for i, c in enumerate(many):
    request(c, 0, i * 4096, 4096, cookie=i)
for i, c in enumerate(many):
    assert simple_reply(c) == (0, i)
    recvn(c, 4096)
for c in many:
    c.close()
for c in stalled:
    c.close()
good()
print("raw-socket checks: ok")
PY

kill -0 "$SERVE_PID" || fail "the server died"
nbdinfo "$NBD_URI" >/dev/null || fail "nbdinfo after the bad clients"
for what in 'unknown client flags' 'bad option magic' 'option 7 with a 2147483647-byte payload' \
            'disconnected during the handshake' "unknown export 'wrong'" \
            'bad request magic 0xdeadbeef' 'disconnected in the middle of a request' \
            'WRITE of 104857600 bytes' 'CMD#99 offset 0 length 512 flags 0x0: answered with NBD error 22'; do
  grep -q "nbd: client unix#[0-9]*: .*$what" "$NBD_TMP/serve.log" || fail "no log line for: $what"
done
# every client is gone: the server holds the descriptors it held before
for _ in $(seq 1 100); do
  fds_now=$(ls /proc/"$SERVE_PID"/fd | wc -l)
  [ "$fds_now" -eq "$fds_before" ] && break
  sleep 0.1
done
[ "$fds_now" -eq "$fds_before" ] || fail "file descriptors: $fds_before before, $fds_now after"
stop_serve
echo "nbd-badclient: ok ($(wc -l <"$NBD_TMP/serve.log") log lines)"
