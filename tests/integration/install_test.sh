#!/usr/bin/env bash
# install_test.sh BUILD_DIR: `cmake --install` into a scratch prefix, then uses only what was
# installed: builds client/cpp/examples/quickstart as a standalone project through
# find_package(qtrain), and runs it, the installed CLI and the installed Python package against the
# installed qtrain-server.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
source tests/integration/server_env.sh
WORK=$(mktemp -d)
PREFIX=$WORK/prefix
fail() { echo "install_test: $*" >&2; exit 1; }

cmake --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log"
# GNUInstallDirs picks lib/ or lib/<multiarch>/ depending on the prefix.
LIB=$(dirname "$(find "$PREFIX" -name libqtrain_client.a)")
LIB=${LIB#"$PREFIX/"}
for f in bin/qtrain-server bin/qtrain bin/qtrain-demo include/qtrain/client.h \
  include/qtrain/v1/trainer_service.grpc.pb.h $LIB/libqtrain_client.a $LIB/libqtrain_proto.a \
  $LIB/cmake/qtrain/qtrainConfig.cmake $LIB/cmake/qtrain/qtrainConfigVersion.cmake \
  share/qtrain/proto/qtrain/v1/trainer_service.proto; do
  [ -e "$PREFIX/$f" ] || fail "cmake --install did not install $f"
done
PYDIR=$(dirname "$(find "$PREFIX" -path '*/dist-packages/qtrain/__init__.py')")
[ -f "$PYDIR/v1/trainer_service_pb2_grpc.py" ] || fail "no Python stubs under $PYDIR"
[ -z "$(find "$PREFIX" -name __pycache__)" ] || fail "__pycache__ installed"

echo "== the quickstart example as a standalone project against $PREFIX"
cmake -S client/cpp/examples/quickstart -B "$WORK/qs" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON > "$WORK/configure.log" ||
  { cat "$WORK/configure.log"; fail "configure against the installed package failed"; }
# Headers must come from the prefix, never from this tree or its build directory.
INCLUDES=$(grep -Eo -- "-(I|isystem) ?[^ ]*" "$WORK/qs/compile_commands.json")
if grep -qE "$PWD|$BUILD" <<< "$INCLUDES"; then
  fail "the example compiled against the source tree"
fi
cmake --build "$WORK/qs" > "$WORK/build.log" || { cat "$WORK/build.log"; fail "build failed"; }

start_server "$PREFIX" "$WORK/data"
"$WORK/qs/qtrain-quickstart" "$QTRAIN_SERVER" "$WORK/quickstart.safetensors" | tee "$WORK/out.txt"
accuracy=$(sed -n 's/^held-out accuracy \([0-9.]*\).*/\1/p' "$WORK/out.txt")
awk -v a="$accuracy" 'BEGIN { exit !(a >= 0.9) }' || fail "held-out accuracy $accuracy < 0.9"
grep -q '^calibrated head dot_general0_lhs: count 10' "$WORK/out.txt" || fail "no calibration"
# The example deletes its session; the installed CLI sees none.
SESSIONS=$("$PREFIX/bin/qtrain" session list --json) || fail "the installed CLI failed"
! grep -q quickstart <<< "$SESSIONS" || fail "session left behind: $SESSIONS"

echo "== the installed Python package reads the example's checkpoint"
env -u PYTHONPATH PYTHONPATH="$(dirname "$PYDIR")" /usr/bin/python3 - "$WORK/quickstart.safetensors" "$PYDIR" <<'PY'
import sys
import qtrain
assert qtrain.__file__.startswith(sys.argv[2]), qtrain.__file__
with qtrain.Client() as c:  # $QTRAIN_SERVER
    assert c.health() == "SERVING", c.health()
arrays, _ = qtrain.load_safetensors(sys.argv[1])
assert arrays["params/head/kernel"].shape == (64, 4), {k: v.shape for k, v in arrays.items()}
print("python:", sorted(k for k in arrays if k.startswith("params/")))
PY
rm -rf "$WORK"
echo "install_test: ok"
