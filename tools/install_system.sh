#!/usr/bin/env bash
# System packages: Debian's Fashion-MNIST and Chromium (browser test). Only as root, only when missing; never fatal.
set -u
need=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "note: not root, so not installing ${need[*]}; tests that need them will skip and say why." >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q "${need[@]}" >/dev/null 2>&1; } \
  || echo "note: apt-get could not install ${need[*]}; tests that need them will skip and say why." >&2
exit 0
