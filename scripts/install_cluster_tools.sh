#!/usr/bin/env bash
# Installs, where missing, the Debian packages that tests/test_cluster.py starts for real:
# iproute2 (`ip netns`, veth pairs), slurm-wlm (slurmctld, slurmd, srun, sbatch) and munge.
# Needs root (or sudo). Nothing is started or configured here: the tests do that in
# temporary folders of their own and stop what they started.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -eq 0 ]; then
  echo "[cluster tools] iproute2, Slurm and munge are installed"
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "[cluster tools] error: installing ${need[*]} needs root or sudo" >&2; exit 1; }
  sudo=(sudo)
fi
echo "[cluster tools] installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
