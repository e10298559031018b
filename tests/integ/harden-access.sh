#!/usr/bin/env bash
# Who may talk to svmd: a `nobody` user is refused by the control socket, every NBD socket and
# every file; even when the socket's mode would let it connect, the control socket checks the
# peer's credentials (SO_PEERCRED): root, svmd's own user or --group only.
source "$(dirname "$0")/agent-lib.sh"
requires setpriv qemu-io
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root to become nobody"; exit 77; }
id nobody >/dev/null 2>&1 || { echo "SKIP: no user nobody"; exit 77; }
NOGROUP=$(id -gn nobody)
as_nobody() { setpriv --reuid nobody --regid "$NOGROUP" --clear-groups "$@"; }

chmod 755 "$T"
start_svmd
svmctl vm create vm1 --datastore ds1 --disk 1M >/dev/null
chmod 755 "$T/ds1"
U=$(uri vm1 0)

expect_fail 1 "control.sock" as_nobody "$SVM_BIN/svmctl" vm list
as_nobody qemu-io -f raw -c 'read 0 4k' "$U" >/dev/null 2>&1 && fail "nobody read the disk over NBD"
for f in "$T/ds1/vm1/disk0.raw" "$T/ds1/vm1/disk0.ctk" "$T/ds1/vm1/vm1.svm"; do
  as_nobody cat "$f" >/dev/null 2>&1 && fail "nobody read $f"
done

# the socket opened to everyone by mistake: SO_PEERCRED still refuses nobody
chmod 755 "$SVM_STATE"
chmod 777 "$SVM_STATE/control.sock"
expect_fail 1 "not allowed to control svmd" as_nobody "$SVM_BIN/svmctl" vm list
expect_err "uid $(id -u nobody)"
svmctl vm list >/dev/null || fail "root refused"
# the NBD socket's own mode (0600) holds with its directories opened up
chmod 755 "$SVM_STATE/nbd"
as_nobody qemu-io -f raw -c 'read 0 4k' "$U" >/dev/null 2>&1 && fail "nobody read the disk over the 0600 NBD socket"
qemu-io -f raw -c 'read 0 4k' "$U" >/dev/null || fail "root refused by the NBD socket"
echo "harden-access: ok"
