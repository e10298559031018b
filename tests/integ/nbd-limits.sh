#!/usr/bin/env bash
# Bounded resources per client, on raw sockets:
#  - a client that pipelines large READs and never reads its replies stops being read once it
#    holds its share (requests and bytes per client, svm/nbd/internal.h): the server's memory
#    stays bounded and other clients are served meanwhile;
#  - a handshake has one deadline for the whole of it: a client that trickles a byte at a time
#    (each recv() succeeding) is still dropped when the deadline passes;
#  - likewise a request whose header or WRITE payload trickles in.
# The deadlines are shortened for the test (SVM_NBD_HANDSHAKE_TIMEOUT_S, SVM_NBD_REQUEST_TIMEOUT_S).
source "$(dirname "$0")/nbd-lib.sh"
requires nbdsh

disk=$NBD_TMP/disk.raw
truncate -s 256M "$disk"
export SVM_NBD_HANDSHAKE_TIMEOUT_S=2 SVM_NBD_REQUEST_TIMEOUT_S=2
start_serve "$disk"

python3 - "$NBD_SOCK" "$SERVE_PID" "$NBD_URI" <<'PY' || fail "limits"
import socket, struct, subprocess, sys, time

SOCK, PID, URI = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NBDMAGIC, IHAVEOPT, REQ = 0x4e42444d41474943, 0x49484156454F5054, 0x25609513

def rss_mib():
    for l in open(f"/proc/{PID}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) // 1024

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

def hello_go(s):
    recvn(s, 18)
    s.sendall(struct.pack(">I", 3))
    name = b"disk"
    s.sendall(struct.pack(">QII", IHAVEOPT, 7, 4 + len(name) + 2) + struct.pack(">I", len(name))
              + name + b"\0\0")
    while True:
        m, o, t, n = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, n)
        if t == 1:
            return

def dropped_within(s, seconds, trickle):
    """Feed trickle() one piece at a time; True if the server closes within `seconds`."""
    s.settimeout(0.3)
    end = time.time() + seconds
    for piece in trickle:
        if time.time() > end:
            return False
        try:
            s.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            return True
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionResetError:
            return True
    return False

def served():
    out = subprocess.run(["nbdsh", "-u", URI, "-c",
                          "h.pwrite(b'ok' * 2048, 4096); assert h.pread(4096, 4096) == b'ok' * 2048"],
                         timeout=20)
    return out.returncode == 0

# -- a client that never reads its replies --
before = rss_mib()
hogs = []
for _ in range(2):
    s = conn(); hello_go(s)
    s.setblocking(False)
    req = struct.pack(">IHHQQI", REQ, 0, 0, 1, 0, 8 << 20)     # READ 8 MiB at 0, again and again
    sent, last = 0, time.time()
    while time.time() - last < 1.0 and sent < 20000:
        try:
            s.send(req); sent += 1; last = time.time()
        except BlockingIOError:
            time.sleep(0.02)
    assert sent < 20000, "the server kept reading requests whose replies nobody reads"
    hogs.append((s, sent))
    print(f"non-reading client: the server stopped reading after {sent} requests")
assert served(), "another client was not served while the non-reading ones held their share"
grown = rss_mib() - before
print(f"server RSS grew by {grown} MiB for two non-reading clients")
assert grown < 400, f"server RSS grew by {grown} MiB: the non-reading clients grew the server"
for s, _ in hogs:
    s.close()

# -- one deadline for the whole handshake: a byte every 0.25 s never trips a per-recv timeout --
s = conn(); recvn(s, 18)
opt = struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 7, 200) + b"\0" * 200
assert dropped_within(s, 12, (opt[i:i + 1] for i in range(len(opt)))), \
    "a trickling handshake was not dropped at its deadline"
s.close()

# -- and for a request: its header, or its WRITE payload, trickling in --
hdr = struct.pack(">IHHQQI", REQ, 0, 1, 1, 0, 4096)
s = conn(); hello_go(s)
assert dropped_within(s, 12, (hdr[i:i + 1] for i in range(len(hdr)))), \
    "a trickling request header was not dropped at its deadline"
s.close()
s = conn(); hello_go(s)
s.sendall(hdr)
assert dropped_within(s, 12, (b"x" for _ in range(4096))), \
    "a trickling WRITE payload was not dropped at its deadline"
s.close()
assert served(), "not served after the slow clients"

# -- log lines: what a client sends is escaped, and many failing clients do not flood --
s = conn(); recvn(s, 18); s.sendall(struct.pack(">I", 3))
name = b"\x1b[2J\nsvm-nbd-serve: FORGED line\x07"
s.sendall(struct.pack(">QII", IHAVEOPT, 1, len(name)) + name)   # EXPORT_NAME: unknown
try:
    s.recv(1)
except OSError:
    pass
s.close()
for _ in range(300):                      # connect and leave at once: a failed handshake each
    conn().close()
assert served()
print("limits: ok")
PY
kill -0 "$SERVE_PID" || fail "the server died"
grep -q "timed out" "$NBD_TMP/serve.log" || fail "no log line for the deadlines"
! grep -q '^svm-nbd-serve: FORGED' "$NBD_TMP/serve.log" || fail "a client forged a log line"
! grep -q $'\x1b' "$NBD_TMP/serve.log" || fail "a control character from a client reached the log"
grep -qF "unknown export '\\x1b[2J\\x0asvm-nbd-serve: FORGED line\\x07'" "$NBD_TMP/serve.log" ||
  fail "the unknown export's name is not in the log, escaped"
n=$(grep -c "nbd: client unix#" "$NBD_TMP/serve.log" || true)
echo "log lines about clients, 300 failed handshakes included: $n"
[ "$n" -le 60 ] || fail "$n log lines: 300 failed handshakes were not rate-limited"
stop_serve
echo OK
