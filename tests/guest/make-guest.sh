#!/usr/bin/env bash
# make-guest.sh OUTDIR: build the test guest from Debian packages, once per build tree.
#
# OUTDIR gets:
#   vmlinux       Debian's stock kernel (the package linux-image-amd64 points at, fetched with
#                 `apt-get download` and unpacked with `dpkg -x`: nothing is installed on the
#                 host), decompressed to the ELF that QEMU boots directly through its PVH note;
#                 under TCG that skips the firmware and the in-kernel decompressor (seconds)
#   initramfs.gz  busybox-static, the virtio modules and tests/guest/init (the workload)
#   pattern.bin   the random data the guest writes (the host keeps it to check the disk)
#   kernel-version, and .complete (a digest of this builder's inputs: a change rebuilds)
# Several tests share one OUTDIR (ctest -j): a lock makes the first one build and the others
# wait for it. Needs apt-get, dpkg, cpio, gzip, python3 and busybox-static; as root it runs
# `apt-get update` once when the package lists do not know the kernel yet.
# Env: GUEST_PATTERN_KIB (default 2048, a multiple of 64): the size of one pass's data.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: make-guest.sh OUTDIR" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "$0")" && pwd)
pattern_kib=${GUEST_PATTERN_KIB:-2048}
if ! [[ "$pattern_kib" =~ ^[0-9]+$ ]] || [ "$pattern_kib" -eq 0 ] || [ $((pattern_kib % 64)) -ne 0 ]; then
  echo "make-guest: GUEST_PATTERN_KIB=$pattern_kib must be a positive multiple of 64" >&2
  exit 2
fi
die() { echo "make-guest: $*" >&2; exit 1; }
for t in apt-get apt-cache dpkg cpio gzip python3 flock sha256sum; do
  command -v "$t" >/dev/null || die "$t is missing (tools/install-deps.sh installs it)"
done
bb=/bin/busybox
# a dynamic busybox would need the host's libc inside the initramfs
# (grep reads all of the list: with -q it could stop early and fail the pipe with SIGPIPE)
[ -x "$bb" ] && "$bb" --list | grep -x insmod >/dev/null && ! ldd "$bb" >/dev/null 2>&1 ||
  die "$bb is not busybox-static: apt-get install busybox-static"

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
digest=$(cat "$0" "$here/init" | sha256sum | cut -c1-16)-$pattern_kib
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$digest" ]; then
  exit 0
fi
rm -f "$out/.complete"

work=$(mktemp -d "${TMPDIR:-/tmp}/svm-guest-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The kernel package: the one the meta-package linux-image-amd64 depends on today.
kpkg_of() { apt-cache depends linux-image-amd64 2>/dev/null |
              awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !k { k = $2 } END { print k }'; }
kpkg=$(kpkg_of)
if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  kpkg=$(kpkg_of)
fi
[ -n "$kpkg" ] || die "apt-cache cannot resolve linux-image-amd64: run apt-get update"
# apt's sandbox user must be able to write the download directory
chmod 0755 "$work"
(cd "$work" && apt-get download -qq "$kpkg" >/dev/null 2>"$work/apt.err") ||
  die "apt-get download $kpkg failed: $(tail -n 3 "$work/apt.err")"
dpkg -x "$work/$kpkg"_*.deb "$work/pkg"
kver=$(ls "$work/pkg/lib/modules")
[ -f "$work/pkg/boot/vmlinuz-$kver" ] || die "$kpkg has no /boot/vmlinuz-$kver"

# 2. vmlinux: Debian's bzImage carries the kernel as one xz stream; its end is the end of the
#    stream (lzma stops there and leaves the bzImage's trailer unread).
python3 - "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinux" <<'PY' || die "cannot extract vmlinux"
import lzma, sys
img = open(sys.argv[1], "rb").read()
at = img.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no xz stream in the bzImage")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(img[at:])
if elf[:4] != b"\x7fELF":
    sys.exit("the xz stream is not an ELF kernel")
open(sys.argv[2], "wb").write(elf)
PY

# 3. The initramfs: busybox, the modules virtio_pci and virtio_blk need (in dependency order,
#    from each module's own depends=), the workload and its data.
root=$work/root
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/lib/modules"
cp "$bb" "$root/bin/busybox"
for a in sh mount insmod dd cmp head cat printf sleep poweroff; do ln -s busybox "$root/bin/$a"; done
python3 - "$work/pkg/lib/modules/$kver" "$root/lib/modules" virtio_pci virtio_blk <<'PY' ||
import lzma, os, re, shutil, subprocess, sys
moddir, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
# No modules.dep in the package (depmod makes it at install): each module names its own
# dependencies in its .modinfo strings ("depends=a,b").
def load(src):
    if src.endswith(".ko.xz"):
        return lzma.open(src).read()
    if src.endswith(".ko.zst"):
        return subprocess.run(["zstd", "-qdc", src], check=True, stdout=subprocess.PIPE).stdout
    if src.endswith(".ko"):
        return open(src, "rb").read()
    sys.exit(f"unknown module format: {src}")
path = {}
for d, _, files in os.walk(os.path.join(moddir, "kernel")):
    for f in files:
        if ".ko" in f:
            path[f.split(".ko")[0].replace("-", "_")] = os.path.join(d, f)
def deps(m):
    hit = re.search(rb"\0depends=([^\0]*)\0", b"\0" + load(path[m]))
    return [x for x in hit.group(1).decode().split(",") if x] if hit else []
order = []
def visit(m):
    if m not in path:
        sys.exit(f"module {m} is not in the kernel package")
    for d in deps(m):
        visit(d)
    if m not in order:
        order.append(m)
for m in wanted:
    visit(m)
for m in order:
    open(os.path.join(dest, m + ".ko"), "wb").write(load(path[m]))
open(os.path.join(dest, "order"), "w").write("".join(m + ".ko\n" for m in order))
PY
  die "cannot collect the virtio modules of $kpkg"
install -m 0755 "$here/init" "$root/init"
head -c $((pattern_kib * 1024)) /dev/urandom >"$work/pattern.bin"
cp "$work/pattern.bin" "$root/pattern.bin"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz"

for f in vmlinux initramfs.gz pattern.bin; do mv -f "$work/$f" "$out/$f"; done
echo "$kver ($kpkg)" >"$out/kernel-version"
echo "$digest" >"$out/.complete"
echo "make-guest: $out: kernel $kver, pattern $pattern_kib KiB" >&2
