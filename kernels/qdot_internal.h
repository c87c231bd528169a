// Helpers shared by qdot.cc (forward) and qdot_backward.cc. Not a public API.
#pragma once

#include <array>
#include <vector>

#include "kernels/qdot.h"

namespace qtrain::qdot_internal {

// Sizes of a (batched) dot: x (B,M,K) · w (B,K,N); B = 1 for rank-2 operands.
struct DotDims {
  int64_t b = 1, m = 0, k = 0, n = 0;
  bool batched = false;
};
DotDims GetDims(const Shape& x, const Shape& w);

// Scales of `q` along padded axis `axis` (0..3), starting at padded index `base`, `count` long.
std::vector<float> GatherScales(const QuantizedTensor& q, std::array<int64_t, 4> base, int axis,
                                int64_t count);

// y_b = op(a_b) · op(b_b) for every batch, float.
absl::Status BatchedMatmulF32(Backend& backend, const DotDims& dims, const MatmulDesc& d,
                              const float* a, int64_t a_batch_stride, const float* b,
                              int64_t b_batch_stride, float* c, int64_t c_batch_stride);

// x[i] *= (lo[s] <= orig[i] <= hi[s]) with s the scale index of element i under `layout`.
void ApplyClipMask(const Tensor& orig, const ScaleLayout& layout, const Calibration& clip,
                   Tensor& grad);

// A quantized operand with its STE clip range and its dynamic calibration (for SRQ stats).
struct QuantizedOperand {
  QuantizedTensor q;
  std::optional<Calibration> clip;
  std::optional<Calibration> dynamic;
};

// Quantizes `t` as `op` says: dynamic calibration over `spec`, or op.static_calibration whose
// shape decides the layout (`tile_axis` may be tiled, -1 for none).
absl::StatusOr<QuantizedOperand> QuantizeOperand(const Tensor& t, const QOperand& op,
                                                 const ReduceSpec& spec, int tile_axis);

// Row-major transpose of `rows` x `cols` bytes.
void TransposeBytes(const void* src, int64_t rows, int64_t cols, void* dst);

}  // namespace qtrain::qdot_internal
