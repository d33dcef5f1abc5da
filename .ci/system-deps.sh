#!/usr/bin/env bash
# Debian packages the stack needs outside pip: an offscreen GL for MuJoCo rendering (EGL via Mesa).
set -euo pipefail
PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libosmesa6)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
