#!/usr/bin/env bash
# Install every Debian package that the build, the tests and the benchmarks need.
# Idempotent: when everything is there it prints nothing and touches nothing.
set -euo pipefail

pkgs=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  liburing-dev libaio-dev libnbd-dev libssl-dev libcmocka-dev
  # peers the tests and benchmarks run for real
  qemu-utils nbdkit libnbd-bin fio e2fsprogs coreutils util-linux iproute2 procps
  python3 python3-libnbd openssl
)

missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
