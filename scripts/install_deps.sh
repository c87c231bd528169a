#!/usr/bin/env bash
# Installs the Debian packages qtrain needs. Idempotent: does nothing when all are present.
# Needs root (or sudo).
#   install_deps.sh           build, test and run the demo (the default)
#   install_deps.sh --build   compile qtrain-server and the qtrain CLI only (the Docker image)
#   install_deps.sh --bench   the default, plus PyTorch and OpenBLAS for `make bench`
#   install_deps.sh --fuzz    the default, plus clang 14 with libFuzzer and its OpenMP runtime
set -euo pipefail

# Compiling: the toolchain and the -dev libraries (grpc-proto: the health stubs of the CLI).
PACKAGES=(
  g++ cmake ninja-build make pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev zlib1g-dev libre2-dev libssl-dev
  grpc-proto libonnx-dev libsentencepiece-dev libgloo-dev libhiredis-dev
  # the float GEMM candidate beside oneDNN (its OpenMP build shares oneDNN's threads)
  libopenblas-openmp-dev
)

if [ "${1:-}" != "--build" ]; then
  PACKAGES+=(
    # developer tools and the test / benchmark frameworks
    ccache clang-format clang-tidy libgtest-dev libgmock-dev libbenchmark-dev
    # data for tests and the demo; promtool checks the /metrics scrape; systemd-analyze checks
    # deploy/systemd
    dataset-fashion-mnist bible-kjv prometheus systemd curl python3-yaml openssl
    # a Redis rendezvous for the data-parallel tests; nginx, the consistent-hash proxy of the
    # routing test (deploy/nginx)
    redis-server nginx-light
    # spm_train / spm_encode: the independent side of the SentencePiece tokenizer test
    sentencepiece
    # the Python client (Debian's grpcio, protobuf, numpy)
    python3-grpcio python3-protobuf python3-numpy
    # PyTorch: the bring-your-own-model import test trains a model in it, and torchvision builds
    # the ResNet the architecture tests check against; ONNX's Python checker
    # checks the CLI's ONNX export (onnxruntime-node, from npm, runs it: tests/onnx)
    python3-torch python3-torchvision python3-onnx
  )
  # The Node.js example needs node and npm; the machine may already have newer ones.
  if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
    PACKAGES+=(nodejs npm)
  fi
fi

if [ "${1:-}" = "--fuzz" ]; then
  PACKAGES+=(clang-14 libclang-rt-14-dev libomp-14-dev)
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
