// Quantize / dequantize of numerics.md §3–4 over any channelwise axes and an optional tile.
//
// Pure functions; thread-safe. Results are owned by the caller.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/calibration.h"
#include "kernels/qtype.h"
#include "kernels/scale_layout.h"
#include "kernels/tensor.h"

namespace qtrain {

// Quantized values plus everything needed to dequantize them.
struct QuantizedTensor {
  QType qtype = QType::kInt8;
  // s8 for int2..int8, u8 for uint8, s16 for int16, f32 (grid values) for fp8.
  Tensor q;
  QuantParams params;
  ScaleLayout layout;
};

// The storage dtype of `qtype`'s quantized values.
DType StorageDType(QType qtype);

// Stochastic-rounding noise: one value per index of `values`' shape, broadcast over the input's
// other axes. `values` has the input's rank with each dim 1 or equal to the input's.
struct RoundingNoise {
  const Tensor* values = nullptr;
};

// q = convert(x / s [+ zp] [+ noise]) with the scales of `params` laid out by `layout`.
// InvalidArgument: x not f32, params' shape not layout.scale_shape, noise for an fp8 qtype or
// with a shape that does not broadcast.
absl::StatusOr<QuantizedTensor> Quantize(const Tensor& x, const ScaleLayout& layout,
                                         const QuantParams& params, QType qtype,
                                         RoundingNoise noise = {});

// Calibrates x with `method` under `layout` and quantizes it; the calibration (the statistic
// before scale computation) is stored in `*calibration` when non-null. Per-row absmax into 8-bit
// storage runs as one fused pass per row (the row is still in L1 when it is quantized); the
// results equal Calibrate → ComputeQuantParams → Quantize bit for bit.
// Errors: those of ComputeQuantParams and Quantize.
absl::StatusOr<QuantizedTensor> CalibrateAndQuantize(const Tensor& x, const ScaleLayout& layout,
                                                     QType qtype, const CalibrationMethod& method,
                                                     Calibration* calibration = nullptr);

// Calibrates x with `method` over `spec` and quantizes it (the dynamic-range path).
// Errors: those of MakeScaleLayout, ComputeQuantParams and Quantize.
absl::StatusOr<QuantizedTensor> QuantizeDynamic(const Tensor& x, const ReduceSpec& spec,
                                                QType qtype, const CalibrationMethod& method);

// deq = (q - zp) · s, an f32 tensor of q's shape.
Tensor Dequantize(const QuantizedTensor& qt);

// The quantized values as f32 (integers, or fp8 grid values): for tests and reference paths.
Tensor QValuesAsFloat(const QuantizedTensor& qt);

}  // namespace qtrain
