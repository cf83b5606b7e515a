#!/usr/bin/env bash
# Installs the Debian packages of a single-host Slurm (controller, compute daemon, client, munge).
# Idempotent: when they are all installed it only checks (well under a second) and installs nothing.
# Verified with Debian 12: Slurm 22.05, munge 0.5.15 (docs/cluster.md, "The local Slurm of CI").
set -euo pipefail
PACKAGES=(slurmctld slurmd slurm-client munge)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "slurm packages already installed"; exit 0; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]}"
$SUDO apt-get update -qq
# Service starts are refused without systemd; ci/slurm/up.sh starts the daemons itself.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
