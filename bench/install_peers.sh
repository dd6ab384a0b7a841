#!/usr/bin/env bash
# Install the peer tools the benchmarks compare against (Debian packages). Idempotent:
# does nothing when all are present; runs apt-get update only when something is missing.
set -euo pipefail
pkgs=(restic borgbackup b3sum zstd time)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "peers installed: ${pkgs[*]}"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing: ${missing[*]}"
$sudo apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
