#!/usr/bin/env bash
# Installs every Debian 12 package reckon needs to build, test and benchmark. Idempotent: when everything
# is already installed it prints one line and touches nothing. Run as root (or with sudo available).
#   scripts/setup.sh          build + test dependencies
#   scripts/setup.sh --peer   the same (the PyTorch peer, python3-torch + OpenBLAS, is part of the test packages)
set -euo pipefail

packages=(cmake g++ make libdnnl-dev ocl-icd-opencl-dev libgtest-dev libgmock-dev libbenchmark-dev
          libcli11-dev nlohmann-json3-dev libfmt-dev libtomlplusplus-dev
          python3 chromium  # the HTML report's browser test (tests/browser/check_report.py)
          python3-torch libopenblas0-openmp  # the PyTorch cross-check (tests/peer/) and bench/peer.sh
          libopenmpi-dev openmpi-bin)  # data parallelism over MPI (runtime/comm, mpirun in ctest)
# --peer: kept for the benchmark scripts' instructions; the test packages above already include the peer.

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
