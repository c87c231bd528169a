#!/usr/bin/env bash
# Installs every Debian package qtrain needs to build, test, benchmark and run its demo.
# Idempotent: does nothing when all packages are present. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build make pkg-config ccache clang-format clang-tidy
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libdnnl-dev ocl-icd-opencl-dev libgtest-dev libgmock-dev
  libbenchmark-dev nlohmann-json3-dev zlib1g-dev libre2-dev
  # data for tests and the demo; promtool checks the /metrics scrape
  dataset-fashion-mnist bible-kjv prometheus
)

if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(python3-torch python3-numpy libopenblas0-openmp)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
