#!/usr/bin/env bash
# Damaged files on the datastores: a descriptor svmd cannot parse is reported with file:line
# and skipped, never rewritten; a .ctk of another disk or a corrupt one resets tracking (logged)
# and the old change IDs are refused with a clear message.
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io

start_svmd
svmctl vm create good --datastore ds1 --disk 4M >/dev/null
svmctl vm create twin --datastore ds1 --disk 4M --disk 4M >/dev/null
svmctl vm create bad --datastore ds2 --disk 4M >/dev/null
ID=$(svmctl cbt changeid twin 0)
IDG=$(svmctl cbt changeid good 0)
stop_svmd

# a syntax error on line 3, unknown keys elsewhere
sed -i '3s/.*/this line has no equals sign/' "$T/ds2/bad/bad.svm"
echo "vendor.note = kept" >>"$T/ds1/good/good.svm"
sum_bad=$(sha256sum <"$T/ds2/bad/bad.svm")
sum_good=$(sha256sum <"$T/ds1/good/good.svm")
# a descriptor in a folder of another name, and a truncated one
mkdir "$T/ds1/moved"
sed 's/^name = good$/name = good2/' "$T/ds1/good/good.svm" >"$T/ds1/moved/moved.svm"
mkdir "$T/ds2/cut"
printf 'svm.version = 1\nname = cut\nuuid = x' >"$T/ds2/cut/cut.svm"
# disk0 of twin gets disk1's tracking file; good's .ctk becomes garbage of the same size
cp "$T/ds1/twin/disk1.ctk" "$T/ds1/twin/disk0.ctk"
head -c "$(stat -c %s "$T/ds1/good/disk0.ctk")" /dev/urandom >"$T/ds1/good/disk0.ctk"

# a disk file of the wrong size, and a missing one: the VM is skipped, the files left alone
mkdir "$T/ds2/short" "$T/ds2/nodisk"
printf 'svm.version = 1\nname = short\nuuid = s\ndisk0.file = d.raw\ndisk0.size = 1048576\ndisk0.uuid = d\n' \
  >"$T/ds2/short/short.svm"
truncate -s 4096 "$T/ds2/short/d.raw"
sed 's/short/nodisk/' "$T/ds2/short/short.svm" >"$T/ds2/nodisk/nodisk.svm"

start_svmd
grep -qF "$T/ds2/short/short.svm: disk0: $T/ds2/short/d.raw is 4096 bytes, the descriptor says 1048576" "$LOG" \
  || fail "disk of the wrong size not reported"
grep -qF "$T/ds2/nodisk/nodisk.svm: disk0: $T/ds2/nodisk/d.raw: No such file or directory" "$LOG" \
  || fail "missing disk not reported"
[ "$(stat -c %s "$T/ds2/short/d.raw")" = 4096 ] || fail "short disk was touched"
[ ! -e "$T/ds2/short/disk0.ctk" ] || fail "a tracker was created for a skipped VM"
grep -qF "skipping VM folder $T/ds2/bad: $T/ds2/bad/bad.svm:3: expected 'key = value' but the line has no '='" "$LOG" \
  || fail "bad descriptor not reported with file:line"
grep -qF "$T/ds1/moved/moved.svm: name = good2 does not match its folder 'moved'" "$LOG" \
  || fail "misplaced descriptor not reported"
grep -qF "$T/ds2/cut/cut.svm:3: truncated file" "$LOG" || fail "truncated descriptor not reported"
[ "$(sha256sum <"$T/ds2/bad/bad.svm")" = "$sum_bad" ] || fail "bad descriptor was rewritten"
[ "$(sha256sum <"$T/ds1/good/good.svm")" = "$sum_good" ] || fail "good descriptor was rewritten"
svmctl vm list --json | json_get '[x["name"] for x in d["vms"]]' | grep -qxF '["good", "twin"]' \
  || fail "VM list with damaged files"
expect_fail 1 "no such VM 'bad'" svmctl vm show bad

grep -qF "twin/disk0: changed-block tracking was reset: $T/ds1/twin/disk0.ctk: belongs to another disk" "$LOG" \
  || fail "foreign .ctk: reset not logged"
grep -qF "good/disk0: changed-block tracking was reset" "$LOG" || fail "corrupt .ctk: reset not logged"
expect_fail 1 "twin disk0: change ID $ID is not one of this disk's" svmctl cbt query twin 0 --since "$ID"
expect_err "take a new change ID and do a full copy"
expect_fail 1 "good disk0: change ID $IDG is not one of this disk's (its tracking is" \
  svmctl cbt query good 0 --since "$IDG"
expect_err "restarted because"
expect_err "take a new change ID and do a full copy"
# after a reset everything counts as changed, so a full copy is what '*' asks for
check_query twin 0 '*' 0:4194304
check_query good 0 '*' 0:4194304
# the untouched disk keeps its history
check_query twin 1 '*'
# the reset tracker works: a new change ID and a write
ID2=$(svmctl cbt changeid twin 0)
qemu-io -f raw -c "write -P 7 1M 4k" "$(uri twin 0)" >/dev/null
check_query twin 0 "$ID2" 1048576:4096

# cbt info reads a tracking file without the agent
svmctl cbt info --json "$T/ds1/twin/disk1.ctk" >"$T/i.json"
[ "$(json_get 'd["disk-size"]' <"$T/i.json")" = 4194304 ] || fail "cbt info --json"
svmctl cbt info "$T/ds1/twin/disk1.ctk" | grep -q "^granularity: *65536" || fail "cbt info text"
head -c 100 /dev/urandom >"$T/junk.ctk"
expect_fail 1 "$T/junk.ctk: truncated: 100 bytes, not even a header" svmctl cbt info "$T/junk.ctk"
stop_svmd

# edit a VM's descriptor by hand (unknown keys kept) and delete it: all its files go
start_svmd
svmctl vm delete good >/dev/null
[ ! -e "$T/ds1/good" ] || fail "delete left files: $(ls -A "$T/ds1/good")"
stop_svmd
echo PASS
