#!/usr/bin/env bash
# Installs everything standby needs on a fresh Debian 12 machine: system packages and a venv in .venv.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils          # VMs, qcow2, qemu-nbd, qemu-io
  sblim-wbemcli                       # a standard WBEM client for the interop tests
  busybox-static cpio xz-utils kmod   # building the test guest's initramfs
  e2fsprogs zstd iproute2 gcc libc6-dev  # ext4 guest disks, static workload writer, network namespaces
  genisoimage                         # cloud-init NoCloud seed ISOs for failover IP settings (isoinfo too)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import standby, pywbem, qemu.qmp" >/dev/null
echo "setup: ok ($(.venv/bin/python --version), $(qemu-system-x86_64 --version | head -1))" >&2
