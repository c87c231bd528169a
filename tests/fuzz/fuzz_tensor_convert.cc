// Fuzz target: wire tensors and batches → engine tensors (every Train, Evaluate, Calibrate and
// Forward request). A tensor that converts must convert back to the same wire form; model inputs
// (InputsFromWire: U8 / F16 / BF16 with scale and offset) convert to finite F32 or I32 tokens of
// the wire shape.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "server/rpc/session_convert.h"
#include "server/rpc/tensor_convert.h"
#include "tests/fuzz/fuzz_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qtrain;
  constexpr int64_t kMaxBytes = int64_t{1} << 20;
  if (size < 1) return 0;
  const bool batch = data[0] & 1;
  if (batch) {
    v1::Batch wire;
    if (!wire.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    (void)rpc::BatchFromWire(wire, kMaxBytes).status();
    return 0;
  }
  v1::Tensor wire;
  if (!wire.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (absl::StatusOr<Tensor> in = rpc::InputsFromWire(wire, "inputs", kMaxBytes); in.ok()) {
    if (in->dtype() != DType::kF32 && in->dtype() != DType::kS32) std::abort();
    if (in->rank() != wire.shape_size()) std::abort();
    if (in->dtype() == DType::kF32) {
      for (int64_t i = 0; i < in->numel(); ++i) {
        if (!std::isfinite(in->data<float>()[i])) std::abort();
      }
    }
  }
  absl::StatusOr<Tensor> t = rpc::FromWire(wire, "inputs", kMaxBytes);
  if (!t.ok()) return 0;
  const v1::Tensor back = rpc::ToWire(*t);
  if (back.dtype() != wire.dtype() || back.data() != wire.data() ||
      back.shape_size() != wire.shape_size()) {
    std::abort();
  }
  return 0;
}
