# shellcheck shell=bash
# tests/guest/guest-lib.sh: run the test guest (make-guest.sh, init) from a test. Source it
# after a library that defines fail and a private temp dir $T (tests/integ/agent-lib.sh).
#
#   guest_build                  build or reuse the guest in $GUEST_DIR ($SVM_BUILD/guest)
#   guest_start NBD_SOCK EXPORT  boot QEMU (TCG) with the data disk on that NBD export and a
#                                4 KiB control disk; the serial console goes to $GUEST_LOG with
#                                a host time stamp per line
#   guest_passes                 passes the guest has completed (written and verified)
#   guest_wait_pass N [SECONDS]  wait until the guest has completed N passes
#   guest_stop [SECONDS]         write STOP on the control disk, wait for the verdict and exit;
#                                fails unless the guest said GUEST-OK
#   guest_check_disk FILE        the disk file holds exactly what the guest's last pass of
#                                every slot wrote (data and stamp), from the host's side
# The guest writes slot after slot in a loop (tests/guest/init), so its I/O spans whatever the
# test does meanwhile, and stops only when told: no sleep stands for an event.

GUEST_DIR=${GUEST_DIR:-${SVM_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}/guest}
GUEST_SLOTS=${GUEST_SLOTS:-8}
GUEST_PID=
GUEST_LOG=$T/guest-serial.log

guest_build() {
  command -v qemu-system-x86_64 >/dev/null ||
    fail "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (tools/install-deps.sh)"
  bash "$(dirname "${BASH_SOURCE[0]}")/make-guest.sh" "$GUEST_DIR" || fail "make-guest.sh failed"
}

# The slot layout the init uses; the data disk must hold GUEST_SLOTS slots.
guest_bytes() {
  local pat
  pat=$(stat -c %s "$GUEST_DIR/pattern.bin")
  echo $((GUEST_SLOTS * (pat + 65536)))
}

_guest_stop_qemu() {
  if [ -n "$GUEST_PID" ] && kill -0 "$GUEST_PID" 2>/dev/null; then
    kill "$GUEST_PID" 2>/dev/null || true
    wait "$GUEST_PID" 2>/dev/null || true
  fi
  GUEST_PID=
}

guest_start() {
  local sock=$1 export=$2
  truncate -s 4096 "$T/guest-ctl.raw"
  : >"$GUEST_LOG"
  # KVM is not assumed (a /dev/kvm may exist and still not boot a stock kernel): TCG always.
  # The control disk is a host file opened with O_DIRECT (cache.direct) so the guest's
  # O_DIRECT reads see what the host writes there.
  qemu-system-x86_64 -accel tcg -cpu qemu64 -M pc -m 192 -smp 1 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$GUEST_DIR/vmlinux" -initrd "$GUEST_DIR/initramfs.gz" \
    -append "console=ttyS0 panic=-1 quiet guest.slots=$GUEST_SLOTS" \
    -blockdev "driver=nbd,node-name=data,server.type=unix,server.path=$sock,export=$export" \
    -device virtio-blk-pci,drive=data \
    -blockdev "driver=file,node-name=ctl,filename=$T/guest-ctl.raw,cache.direct=on" \
    -device virtio-blk-pci,drive=ctl \
    </dev/null > >(while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done \
                     >>"$GUEST_LOG") 2>&1 &
  GUEST_PID=$!
}

guest_passes() { grep -c ' GUEST-PASS ' "$GUEST_LOG" || true; }

_guest_dump() {
  echo "---- guest serial console ----" >&2
  sed 's/^[0-9.]* //' "$GUEST_LOG" | tail -n 40 >&2
}

guest_wait_pass() {
  local want=$1 secs=${2:-120} i
  for ((i = 0; i < secs * 20; i++)); do
    [ "$(guest_passes)" -ge "$want" ] && return 0
    if grep -qE ' GUEST-(FAIL|MISMATCH)' "$GUEST_LOG"; then
      _guest_dump; fail "the guest failed before pass $want"
    fi
    kill -0 "$GUEST_PID" 2>/dev/null || { _guest_dump; fail "QEMU exited before pass $want"; }
    sleep 0.05
  done
  _guest_dump
  fail "the guest did not complete $want passes in ${secs}s"
}

guest_stop() {
  local secs=${1:-60} i
  printf 'STOP%4092s' '' | dd of="$T/guest-ctl.raw" bs=4096 conv=notrunc,fsync status=none
  for ((i = 0; i < secs * 20; i++)); do
    grep -qE ' GUEST-(OK|FAIL)' "$GUEST_LOG" && break
    kill -0 "$GUEST_PID" 2>/dev/null || break
    sleep 0.05
  done
  for ((i = 0; i < 100; i++)); do kill -0 "$GUEST_PID" 2>/dev/null || break; sleep 0.05; done
  _guest_stop_qemu
  if ! grep -q ' GUEST-OK ' "$GUEST_LOG"; then
    _guest_dump
    fail "the guest did not report GUEST-OK"
  fi
  GUEST_PASSES_DONE=$(sed -n 's/.* GUEST-OK passes=\([0-9]*\).*/\1/p' "$GUEST_LOG")
}

# guest_pass_times: "host-time pass" per completed pass, for tests that place passes in time
guest_pass_times() { awk '$2 == "GUEST-PASS" { print $1, $3 }' "$GUEST_LOG"; }

guest_check_disk() {
  python3 - "$1" "$GUEST_DIR/pattern.bin" "$GUEST_LOG" "$GUEST_SLOTS" <<'PY' ||
import sys
disk, pattern, log, slots = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3], int(sys.argv[4])
C = 65536
chunks = len(pattern) // C
passes = [int(l.split()[2]) for l in open(log, errors="replace") if l.split()[1:2] == ["GUEST-PASS"]]
if not passes:
    sys.exit("the guest completed no pass")
last = {}
for p in passes:
    last[p % slots] = p
with open(disk, "rb") as f:
    for s, p in sorted(last.items()):
        r = p % chunks
        base = s * (chunks + 1) * C
        f.seek(base)
        got = f.read(chunks * C)
        if got != pattern[r * C:] + pattern[:r * C]:
            bad = next(i for i in range(0, len(got), 4096) if got[i:i+4096] != (pattern[r * C:] + pattern[:r * C])[i:i+4096])
            sys.exit(f"{disk}: slot {s} does not hold pass {p}'s data (first bad 4 KiB at offset {base + bad})")
        stamp = f.read(C)
        want = (b"GUEST-STAMP %d\n" % p).ljust(C, b"\0")
        if stamp != want:
            sys.exit(f"{disk}: slot {s}'s stamp is {stamp[:24]!r}, want pass {p}")
print(f"guest_check_disk: {len(last)} slots hold the data of passes {sorted(last.values())}")
PY
    fail "the disk file does not hold the guest's data"
}
