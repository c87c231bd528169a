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
  # the Python client (Debian's grpcio, protobuf, numpy; health / reflection protos)
  python3-grpcio python3-protobuf python3-numpy grpc-proto
)

# The Node.js example needs node and npm; the machine may already have newer ones.
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  PACKAGES+=(nodejs npm)
fi

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
