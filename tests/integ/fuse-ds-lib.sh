# A datastore on a device the test controls (sourced after agent-lib.sh): $T/ds3 is an ext4
# file system on a loop device whose backing file is an NBD export (nbdfuse) of nbdkit, run
# with the arguments the test gives (a plugin, filters). The test can then make the device
# fail (nbdkit's error filter) or stop answering (SIGSTOP to $KIT_PID).
requires nbdkit nbdfuse losetup mkfs.ext4 mountpoint
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (loop device, mount)"; exit 77; }

LOOP=
FUSE_PID=
KIT_PID=

# fuse_ds_start NBDKIT-ARGS...: nbdkit -s NBDKIT-ARGS under nbdfuse, ext4 on it, mounted at
# $T/ds3; sets FUSE_PID, KIT_PID (nbdkit itself) and LOOP
fuse_ds_start() {
  mkdir -p "$T/fuse" "$T/ds3"
  nbdfuse "$T/fuse/disk" --command nbdkit -s "$@" 2>"$T/nbdkit.log" &
  FUSE_PID=$!
  for _ in $(seq 1 100); do [ -e "$T/fuse/disk" ] && break; sleep 0.05; done
  [ -e "$T/fuse/disk" ] || { echo "SKIP: nbdfuse did not start: $(cat "$T/nbdkit.log")"; exit 77; }
  KIT_PID=$(pgrep -P "$FUSE_PID" -x nbdkit) || fail "no nbdkit under nbdfuse $FUSE_PID"
  LOOP=$(losetup --show -f "$T/fuse/disk" 2>/dev/null) || { echo "SKIP: no loop device"; exit 77; }
  mkfs.ext4 -q "$LOOP" || fail "mkfs.ext4 $LOOP"
  mount "$LOOP" "$T/ds3" || { echo "SKIP: cannot mount $LOOP"; exit 77; }
}

# fuse_ds_stop: after svmd is gone (nothing holds the file system). ext4 first, then the loop
# device, then the FUSE file; a failing device can make a plain umount slow, so each step falls
# back to a lazy one. A stopped nbdkit is let go on first.
fuse_ds_stop() {
  [ -z "$KIT_PID" ] || kill -CONT "$KIT_PID" 2>/dev/null
  if mountpoint -q "$T/ds3"; then umount "$T/ds3" 2>/dev/null || umount -l "$T/ds3"; fi
  [ -z "$LOOP" ] || losetup -d "$LOOP" 2>/dev/null
  if mountpoint -q "$T/fuse"; then umount "$T/fuse" 2>/dev/null || umount -l "$T/fuse"; fi
  [ -z "$FUSE_PID" ] || { kill "$FUSE_PID" 2>/dev/null; wait "$FUSE_PID" 2>/dev/null; }
  LOOP= FUSE_PID= KIT_PID=
  true
}
