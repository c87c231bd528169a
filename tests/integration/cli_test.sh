#!/usr/bin/env bash
# The `qtrain` CLI against a real qtrain-server: every subcommand, every data format, --json
# output and the documented exit codes. Usage: cli_test.sh BUILD_DIR
set -uo pipefail
BUILD=${1:?usage: cli_test.sh BUILD_DIR}
source "$(dirname "$0")/server_env.sh"
TMP=$(mktemp -d)
start_server "$BUILD" "$TMP/data" || exit 1
Q="$BUILD/bin/qtrain"
FM=/usr/share/datasets/fashion-mnist
FAILS=0

# expect CODE CMD...: runs CMD, checks its exit status, keeps stdout in $OUT.
expect() {
  local want=$1
  shift
  OUT=$("$@" 2> "$TMP/stderr")
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: exit $rc (want $want): $*" >&2
    echo "$OUT" >&2
    cat "$TMP/stderr" >&2
    FAILS=$((FAILS + 1))
  fi
}
# contains TEXT: the last command's stdout contains TEXT.
contains() {
  if ! grep -qF -- "$1" <<< "$OUT"; then
    echo "FAIL: output lacks \"$1\":" >&2
    echo "$OUT" >&2
    FAILS=$((FAILS + 1))
  fi
}
# json_check EXPR: a Python expression over the last stdout, parsed as JSON into `j`.
json_check() {
  if ! /usr/bin/python3 -c "import json,sys; j=json.loads(sys.stdin.read()); sys.exit(0 if ($1) else 1)" <<< "$OUT"; then
    echo "FAIL: JSON check $1 on: $OUT" >&2
    FAILS=$((FAILS + 1))
  fi
}

expect 0 "$Q" health
contains SERVING
expect 0 "$Q" --help
contains "exit codes"
# The server's CPU, ISA and int8 kernels (exact ones only: oneDNN's only as VNNI kernels).
expect 0 "$Q" info --verbose
contains "int8 kernels"
contains "matmul s8xs8 256x1024x1024"
contains "+ reference"
# The float matmul candidates (oneDNN, OpenBLAS) for a representative layer, with their reasons.
contains "float kernels (matmul policy auto)"
contains "matmul f32 256x1024x1024 B^T"
contains " openblas:"
expect 0 "$Q" info --json
json_check 'j["float_gemm"] == "auto" and all(k["chosen"] in [c["name"] for c in k["candidates"]] for k in j["implementations"]) and len([k for k in j["implementations"] if k["op"].startswith("matmul f32")]) == 3 and all(k["candidates"][1]["name"].startswith("openblas:") and k["candidates"][1]["reason"] for k in j["implementations"] if k["op"].startswith("matmul f32")) and {"conv f32 backward weights", "layer norm 2048x512", "rotary 2048x64"} <= {k["op"] for k in j["implementations"]}'
json_check 'j["active_isa"] in ("avx2", "avx2_vnni", "avx512", "avx512_vnni", "amx") and all(k["chosen"].startswith("exact_") or "vnni" in k["chosen"] or "amx" in k["chosen"] for k in j["int8_kernels"])'

# Backends are configuration: info lists them; a session runs on the one it names.
expect 0 "$Q" info
contains "reference  cpu:0"
contains "memory budget"
expect 0 "$Q" session create onref --preset=mlp --backend=reference --json
json_check 'j["backend"] == "reference"'
expect 0 "$Q" train onref --data=$FM --steps=2 --batch_size=16 --json
json_check 'j["steps"] == 2 and 0 < j["loss"] < 5'
expect 0 "$Q" session delete onref
expect 6 "$Q" session create nope --preset=mlp --backend=cuda
grep -q 'backend \"cuda\" is not one of onednn, reference' "$TMP/stderr" || { echo "FAIL: unknown backend message" >&2; cat "$TMP/stderr" >&2; FAILS=$((FAILS + 1)); }

# A session from a preset, trained a few steps in float, then QAT, QT, SRQ calibration.
expect 0 "$Q" session create fm --preset=mlp
contains "Dense_0:dot_general0"
expect 0 "$Q" train fm --data=$FM --steps=30 --json
json_check 'j["steps"] == 30 and j["last_step"] == 30 and 0 < j["loss"] < 3 and 0 <= j["accuracy"] <= 1'
expect 0 "$Q" train fm --data=$FM --steps=20 --rules=qat-int8 --progress=lines --log_every=10
contains "train 10/20"
contains "trained session fm: steps 31-50"
expect 0 "$Q" rules set fm qt-int8
contains "QT weights int8, activations int8, gradients int8"
expect 0 "$Q" train fm --data=$FM --steps=10
expect 0 "$Q" eval fm --data=$FM --split=t10k --limit=1000 --json
json_check 'j["examples"] == "1000" and float(j["accuracy"]) > 0.5'
expect 0 "$Q" calibrate fm --data=$FM --steps=5 --rules=srq-int8
contains "dot_general0_lhs"
expect 0 "$Q" stats fm --json
json_check 'all(s["count"] == "5" and "scale" in s for s in j["stats"])'
# Scales come as numbers too ("values" beside the base64 "data").
json_check 'all(len(s["scale"]["values"]) >= 1 and all(v > 0 for v in s["scale"]["values"]) for s in j["stats"])'
expect 0 "$Q" forward fm --data=$FM --split=t10k --batch_size=50
contains "accuracy"

# Sensitivity: int2 everywhere misses a 1-point budget; the chosen rules meet it when applied.
expect 0 "$Q" sensitivity fm --data=$FM --split=t10k --limit=1000 --rules=qat-int4 \
  --qtypes=int2,int4,int8 --max_accuracy_drop=0.01 --rules_out="$TMP/mixed.json"
contains "only Dense_0 dot_general in int2"
contains "mixed precision: "
contains "within the budget"
expect 0 "$Q" sensitivity fm --data=$FM --split=t10k --limit=1000 --rules=qat-int4 \
  --qtypes=int2,int4,int8 --max_accuracy_drop=0.01 --json
json_check 'j["mixed_precision"]["within_budget"] and len(j["ops"]) == 2 and j["quantized"]["accuracy"] < j["float_model"]["accuracy"] - 0.01'
FLOAT_ACC=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["float_model"]["accuracy"])' <<< "$OUT")
expect 0 "$Q" rules set fm "$TMP/mixed.json"
expect 0 "$Q" eval fm --data=$FM --split=t10k --limit=1000 --json
json_check "float(j['accuracy']) >= $FLOAT_ACC - 0.01 - 1e-9"
expect 6 "$Q" sensitivity fm --data=$FM --limit=100 --qtypes=int9 --max_loss_increase=0.1
expect 2 "$Q" sensitivity fm --data=$FM --limit=100 --rules_out="$TMP/x.json"
expect 0 "$Q" rules set fm srq-int8

# Checkpoints: save on the server, pull, push into a new session, same outputs.
expect 0 "$Q" checkpoint save fm
contains "saved session fm at step 60"
expect 0 "$Q" checkpoint pull fm "$TMP/fm.safetensors"
[ -s "$TMP/fm.safetensors" ] || { echo "FAIL: no checkpoint file" >&2; FAILS=$((FAILS + 1)); }
expect 0 "$Q" checkpoint push copy "$TMP/fm.safetensors"
contains "into session copy at step 60"
expect 0 "$Q" forward fm --data=$FM --split=t10k --batch_size=20 --json
A=$OUT
expect 0 "$Q" forward copy --data=$FM --split=t10k --batch_size=20 --json
[ "$A" = "$OUT" ] || { echo "FAIL: pushed checkpoint gives other outputs" >&2; FAILS=$((FAILS + 1)); }
# import: float weights with PyTorch naming and layouts (written by numpy here), renamed by --map.
PYTHONPATH="$BUILD/python" /usr/bin/python3 - "$TMP/torch.safetensors" <<'PY'
import sys
import numpy as np
import qtrain
rng = np.random.default_rng(0)
qtrain.save_safetensors({"1.weight": rng.normal(0, 0.05, (256, 784)).astype(np.float32),
                         "1.bias": np.zeros(256, np.float32),
                         "3.weight": rng.normal(0, 0.05, (10, 256)).astype(np.float32),
                         "3.bias": np.zeros(10, np.float32)}, sys.argv[1])
PY
expect 0 "$Q" import imported --preset=mlp --weights="$TMP/torch.safetensors" \
  --map='{"Dense_0": "1", "head": "3"}' --json
json_check 'j["session_id"] == "imported" and j["parameters"] == "203530"'
# export: calibrate static int8 scales, then the compressed-tensors files.
expect 0 "$Q" calibrate imported --data=$FM --split=t10k --steps=2 --rules=srq-int8
expect 0 "$Q" export imported --out="$TMP/export" --map='{"Dense_0": "1", "head": "3"}' --json
json_check 'j["quantized_layers"] == 2 and j["format"] == "compressed-tensors" and j["packing"] == "int-quantized"'
PYTHONPATH="$BUILD/python" /usr/bin/python3 - "$TMP/export" <<'PY' || { echo "FAIL: export files" >&2; FAILS=$((FAILS + 1)); }
import json, sys
import qtrain
config = json.load(open(sys.argv[1] + "/config.json"))["quantization_config"]
assert config["quant_method"] == "compressed-tensors", config
arrays, meta = qtrain.load_safetensors(sys.argv[1] + "/model.safetensors")
assert arrays["1.weight"].dtype.name == "int8" and arrays["1.weight"].shape == (256, 784)
assert arrays["3.input_scale"].shape == (1,) and arrays["3.weight_scale"].shape == (10, 1)
PY
expect 0 "$Q" export imported --out="$TMP/export" --format=onnx --json
json_check 'j["format"] == "onnx" and j["bytes"] > 200000'
/usr/bin/python3 -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' \
  "$TMP/export/model.onnx" || { echo "FAIL: the ONNX export fails onnx.checker" >&2; FAILS=$((FAILS + 1)); }
expect 6 "$Q" export imported --out="$TMP/export" --format=tflite
expect 2 "$Q" export imported --out="$TMP/export" --format=onnx --map='{"Dense_0": "1"}'
expect 2 "$Q" export imported
expect 0 "$Q" session delete imported
expect 6 "$Q" import wrong --preset=mlp --weights="$TMP/torch.safetensors"
grep -q "missing: Dense_0.weight" "$TMP/stderr" || { echo "FAIL: import error names no tensor" >&2; cat "$TMP/stderr" >&2; FAILS=$((FAILS + 1)); }
expect 2 "$Q" import wrong --preset=mlp --weights="$TMP/absent.safetensors"
expect 2 "$Q" import wrong --preset=mlp
expect 0 "$Q" session list --json
json_check 'sorted(s["session_id"] for s in j["sessions"]) == ["copy", "fm"]'

# The other presets and data formats: CNN on an uncompressed IDX file, MLP on CSV, LM on text.
gunzip -c $FM/t10k-images-idx3-ubyte.gz > "$TMP/t10k-images-idx3-ubyte"
gunzip -c $FM/t10k-labels-idx1-ubyte.gz > "$TMP/t10k-labels-idx1-ubyte"
expect 0 "$Q" session create cnn --preset=cnn
expect 0 "$Q" train cnn --data="$TMP/t10k-images-idx3-ubyte" --steps=3 --batch_size=32
contains "trained session cnn: steps 1-3"
# Named architectures with builder options: torchvision's MobileNetV2 (depthwise convolutions)
# at width 0.35 and a small ViT (patch 7, 2 layers) on 28x28x1 images, trained with QAT.
expect 0 "$Q" session create mnv2 --arch=torchvision:mobilenet_v2 --num_classes=10 \
  --width_mult=0.35 --arch_options=dropout=0 --input_shape=28,28,1 --rules=qat-int8 --json
json_check 'j["parameters"] == "408650" and j["non_trainable"] == "14080"'
expect 0 "$Q" train mnv2 --data="$TMP/t10k-images-idx3-ubyte" --steps=2 --batch_size=16
contains "trained session mnv2: steps 1-2"
expect 0 "$Q" session create vit --arch=torchvision:vit_b_16 --num_classes=10 --image_size=28 \
  --patch_size=7 --num_layers=2 --num_heads=4 --hidden_dim=32 --mlp_dim=64 --input_shape=28,28,1 \
  --rules=qat-int8
contains "encoder/layers/encoder_layer_1/self_attention/in_proj:dot_general0"
contains "encoder/layers/encoder_layer_1/self_attention:einsum0"
expect 0 "$Q" train vit --data="$TMP/t10k-images-idx3-ubyte" --steps=2 --batch_size=16
contains "trained session vit: steps 1-2"
expect 2 "$Q" session create x --arch=torchvision:mobilenet_v2 --arch_options=width_mult=x
expect 2 "$Q" session create x --arch=torchvision:mobilenet_v2 --width_mult=0.5 \
  --arch_options=width_mult=0.5
expect 6 "$Q" session create x --arch=torchvision:mobilenet_v2 --arch_options=width=2
expect 2 "$Q" session create x --preset=mlp --arch_options=width_mult=2
/usr/bin/python3 -c "
import random
random.seed(1)
print('x1,x2,x3,x4,label')
for i in range(200):
    c = i % 3
    print(','.join(str(round(random.gauss(c, 0.3), 3)) for _ in range(4)) + ',' + str(c))
" > "$TMP/blobs.csv"
expect 0 "$Q" session create blobs --preset=mlp --input_shape=4 --classes=3 --lr=0.01
expect 0 "$Q" train blobs --data="$TMP/blobs.csv" --epochs=20 --batch_size=20 --json
json_check 'j["accuracy"] > 0.9'
# --steps runs past one epoch (--limit=100 rows: batches of 64 and 36 per epoch).
expect 0 "$Q" train blobs --data="$TMP/blobs.csv" --limit=100 --batch_size=64 --steps=7 --json
json_check 'j["steps"] == 7 and j["examples"] == 4 * 64 + 3 * 36'
# IDX files are recognised by their magic bytes, whatever their names (Kaggle's MNIST names).
cp "$TMP/t10k-images-idx3-ubyte" "$TMP/t10k-images.idx3-ubyte"
cp "$TMP/t10k-labels-idx1-ubyte" "$TMP/t10k-labels.idx1-ubyte"
expect 0 "$Q" train cnn --data="$TMP/t10k-images.idx3-ubyte" --steps=1 --batch_size=32
contains "trained session cnn: step 4 (32 examples)"
# A QT rule on a convolution says that its backward stays float.
expect 0 "$Q" rules set cnn qt-int8
contains "gradients float (convolutions have no QT backward)"
contains "gradients int8"
# Regression: float targets in a CSV train a model with the MSE loss.
/usr/bin/python3 -c "
import random
random.seed(2)
print('a,b,target')
for _ in range(500):
    a, b = random.uniform(-1, 1), random.uniform(-1, 1)
    print(f'{a:.4f},{b:.4f},{2 * a - b + 0.5:.4f}')
" > "$TMP/reg.csv"
expect 0 "$Q" session create reg --optimizer=momentum --lr=0.05 --model='{"input": {"shape": [2]},
  "body": {"sequential": {"layers": [{"linear": {"features": 1}}]}}, "loss": {"kind": "MSE"}}'
expect 0 "$Q" train reg --data="$TMP/reg.csv" --epochs=30 --batch_size=50 --json
json_check 'j["loss"] < 0.01 and j["accuracy"] == -1'
expect 0 "$Q" forward reg --data="$TMP/reg.csv" --batch_size=4
contains "(target 1.4285)"
expect 2 "$Q" train reg --data="$TMP/reg.csv" --targets=class
expect 0 "$Q" session create zero --preset=mlp --json
json_check 'j["step"] == "0"'
bible -f Gen1:1-Gen2:25 > "$TMP/genesis.txt" 2>/dev/null || seq 1 3000 > "$TMP/genesis.txt"
expect 0 "$Q" session create lm --preset=transformer-lm --seq_len=32 --rules=qt-int8
contains "attn:einsum"
expect 0 "$Q" train lm --data="$TMP/genesis.txt" --steps=3 --batch_size=8 --json  # seq_len 32: the session's
json_check 'j["steps"] == 3 and j["loss"] > 0'
# Variable-length sequences: each line of text one sequence, right-padded with the pad id.
expect 2 "$Q" train lm --data="$TMP/genesis.txt" --sequences=lines --steps=1  # no pad id
grep -q "needs a pad id" "$TMP/stderr" || { echo "FAIL: no pad id message" >&2; FAILS=$((FAILS + 1)); }
PYTHONPATH="$BUILD/python" /usr/bin/python3 "$(dirname "$0")/../../scripts/make_tiny_llama.py" \
  "$TMP/tiny-llama" --layers=1 --hidden=32 > /dev/null
expect 0 "$Q" import tl --hf="$TMP/tiny-llama" --seq_len=48 --arch_options=pad_id=0
expect 0 "$Q" train tl --data="$TMP/genesis.txt" --sequences=lines --steps=2 --batch_size=8 --json
json_check 'j["steps"] == 2 and j["loss"] > 0'
expect 0 "$Q" eval tl --data="$TMP/genesis.txt" --sequences=lines --limit=20 --json
# Scored tokens: each line's own (cut at 48), less its first (nothing predicts it).
WANT_TOKENS=$(/usr/bin/python3 -c '
import sys
lines = [l.rstrip("\r") for l in open(sys.argv[1], "rb").read().decode("latin-1").split("\n")]
print(sum(min(len(l.encode("latin-1")), 48) - 1 for l in [l for l in lines if l][:20]))' "$TMP/genesis.txt")
json_check "int(j['tokens']) == $WANT_TOKENS and j['perplexity'] > 1"
expect 0 "$Q" session delete tl

# Exit codes that scripts rely on.
expect 4 "$Q" session get nope
expect 4 "$Q" stats nope --json
json_check 'j["error"]["code"] == "NOT_FOUND" and j["error"]["exit"] == 4'
expect 5 "$Q" session create fm --preset=mlp
expect 6 "$Q" session create bad --model='{"input": {"shape": [4]}, "body": {"linear": {"features": 0}}}'
expect 6 "$Q" train fm --data="$TMP/blobs.csv"   # 4 features for a 28x28x1 model
expect 6 "$Q" rules set fm '{"rules": [{"module_path": "(", "weight_qtype": "int8"}]}'
expect 2 "$Q" rules set fm int3-please
expect 2 "$Q" train fm --data="$TMP/missing.csv"
expect 2 "$Q" session create x --model="$TMP/missing.json"
expect 2 "$Q" session frobnicate
expect 2 "$Q" session list --no_such_flag
expect 0 "$Q" session list --progress=none   # output flags apply to every command
expect 2 "$Q" train fm --data=$FM --batch_size=abc
expect 2 "$Q" train fm --data=$FM --progress=off
expect 2 "$Q" checkpoint pull fm "$TMP/no/such/dir/x.safetensors"
expect 8 "$Q" health --service=no.such.Service
contains SERVICE_UNKNOWN
expect 2 "$Q"
expect 2 "$Q" checkpoint push fm "$TMP/missing.safetensors"
expect 3 "$Q" --server=127.0.0.1:1 session list
expect 3 "$Q" --server=127.0.0.1:1 health --timeout=0.5
# Flags and arguments a command would ignore are usage errors; groups list their subcommands.
expect 2 "$Q" eval fm --data=$FM --rules=qat-int8
expect 2 "$Q" stats fm extra
expect 2 "$Q" checkpoint
expect 0 "$Q" session create mom --preset=mlp --optimizer=momentum --lr=0.05 --json
json_check 'j["optimizer"]["sgd"]["momentum"] == 0.9 and abs(j["optimizer"]["schedule"]["learning_rate"] - 0.05) < 1e-6'
expect 0 "$Q" session get mom
contains "sgd momentum 0.9 lr 0.05"
expect 0 "$Q" session delete mom
expect 2 "$Q" session create o --preset=mlp --optimizer=adagrad
expect 2 "$Q" session create o --preset=mlp --optimizer='{"sgd": {}}' --lr=0.1
expect 2 "$Q" train fm --data=$FM --targets=float
expect 2 "$Q" train fm --data=$FM --seq_len=8             # IDX data has no sequences
expect 2 "$Q" session create o --preset=transformer-lm --classes=5
expect 2 "$Q" session create o --preset=mlp --lr=0
expect 2 "$Q" session create o --preset=mlp --model='{}'
expect 2 "$Q" rules set fm qat-int8 --rules=qt-int8
expect 2 "$Q" checkpoint push fm2 "$TMP/blobs.csv"         # not a safetensors file
expect 2 "$Q" train fm --data=$FM --limit=-3
expect 2 "$Q" health --timeout=-1
expect 0 "$Q" help train
contains "--epochs (default 1)"
expect 0 "$Q" train --help
contains "usage: qtrain train ID"
expect 0 "$Q" health --service=qtrain.v1.Trainer
# Calibrating with no act_static_scale rule is a rejected request, not an empty table.
expect 0 "$Q" session create flt --preset=mlp
expect 0 "$Q" stats flt
contains "none yet: ops under a rule with act_static_scale collect them"
expect 6 "$Q" calibrate flt --data=$FM --steps=2
# Local paths that are directories are local errors.
expect 2 "$Q" checkpoint pull fm "$TMP"
expect 2 "$Q" checkpoint push fm "$TMP"
# Ctrl-C stops a long stream cleanly: a summary of the steps that ran, exit 130, session kept.
# interrupt CMD...: runs CMD in the background, sends SIGINT after its first progress line, and
# checks exit 130; leaves its output in $OUT. (Job control on: a script's background jobs
# otherwise start with SIGINT ignored, and qtrain keeps an ignored SIGINT ignored.)
interrupt() {
  set -m
  "$@" > "$TMP/int.out" 2>&1 &
  local pid=$!
  set +m
  for _ in $(seq 1 300); do grep -qE "^(train|calibrate) " "$TMP/int.out" && break; sleep 0.1; done
  kill -INT $pid
  wait $pid
  local rc=$?
  OUT=$(cat "$TMP/int.out")
  [ $rc -eq 130 ] || { echo "FAIL: Ctrl-C exit $rc, want 130: $OUT" >&2; FAILS=$((FAILS + 1)); }
}
interrupt "$Q" train fm --data=$FM --steps=1000000 --progress=lines --log_every=20
contains "trained session fm: steps 61-"
contains "interrupted; the steps that ran are kept"
expect 0 "$Q" session get fm
# Calibration stops within a few batches too (the client keeps 8 in flight), small as they are.
interrupt "$Q" calibrate fm --data=$FM --steps=100000 --batch_size=4 --rules=srq-int8 \
  --progress=lines --log_every=50
expect 0 "$Q" stats fm --json
json_check 'all(int(s["count"]) < 50000 for s in j["stats"])'
# A failed pull leaves no file behind.
expect 4 "$Q" checkpoint pull nope "$TMP/nope.safetensors"
[ ! -e "$TMP/nope.safetensors" ] && [ ! -e "$TMP/nope.safetensors.part" ] ||
  { echo "FAIL: failed pull left a file" >&2; FAILS=$((FAILS + 1)); }
expect 0 "$Q" session delete copy
expect 4 "$Q" session delete copy

rm -rf "$TMP"
if [ "$FAILS" -ne 0 ]; then
  echo "cli_test: $FAILS failures" >&2
  exit 1
fi
echo "cli_test: all checks passed"
