#!/usr/bin/env python3
"""qmp-mirror.py QMP_SOCKET SRC_NODE DST_FILE AIO: QEMU's live move, driven over QMP.

Adds DST_FILE (which must exist, at the source's size) as node "dst" with O_DIRECT
(cache.direct) and the AIO mode AIO, runs `blockdev-mirror` of SRC_NODE to it with
sync=full and copy-mode=write-blocking (a guest write to a region already copied completes
only once it is on the target: the same contract as svmotion's mirror), waits for
BLOCK_JOB_READY, then `block-job-complete` (the pivot: every parent of SRC_NODE, the NBD
export included, now uses "dst") and waits for BLOCK_JOB_COMPLETED. Prints one JSON object of
host times (time.time()): start, ready, complete (the pivot command sent), done.
Exit 1 when the job fails or ends without completing.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.f = self.sock.makefile("rw")
        self.events = []
        json.loads(self.f.readline())          # the greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            sys.exit("qmp-mirror: QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                sys.exit(f"qmp-mirror: {name}: {msg['error'].get('desc')}")
            elif "return" in msg:
                return msg["return"]

    def wait(self, *names):
        while True:
            while self.events:
                ev = self.events.pop(0)
                if ev["event"] == "BLOCK_JOB_ERROR":
                    sys.exit(f"qmp-mirror: job error: {ev.get('data')}")
                if ev["event"] in names:
                    return ev
            self.events.append(self._read())


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    path, src, dst, aio = sys.argv[1:]
    q = Qmp(path)
    q.cmd("blockdev-add", driver="file", **{"node-name": "dst-file"}, filename=dst,
          cache={"direct": True}, aio=aio)
    q.cmd("blockdev-add", driver="raw", **{"node-name": "dst"}, file="dst-file")
    t = {"start": time.time()}
    q.cmd("blockdev-mirror", **{"job-id": "move", "copy-mode": "write-blocking"},
          device=src, target="dst", sync="full")
    ev = q.wait("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
    if ev["event"] != "BLOCK_JOB_READY":
        sys.exit(f"qmp-mirror: the job ended before it was ready: {ev}")
    t["ready"] = time.time()
    q.cmd("block-job-complete", device="move")
    t["complete"] = time.time()
    ev = q.wait("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
    t["done"] = time.time()
    if ev["event"] != "BLOCK_JOB_COMPLETED" or ev["data"].get("error"):
        sys.exit(f"qmp-mirror: the job did not complete: {ev}")
    print(json.dumps(t))


if __name__ == "__main__":
    main()
