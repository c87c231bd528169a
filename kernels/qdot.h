// Quantized dot (numerics.md §4–5): y = x · w for x (M,K), w (K,N), or batched x (B,M,K),
// w (B,K,N) (attention's act×act einsums), with Qwix's QAT forward, QAT backward (straight-
// through estimator with the clipped mask) and QT backward (scale shifting, integer gradient dots,
// stochastic rounding).
//
// The forward runs on the backend's int8 kernels where the contract allows (both operands
// symmetric int2..int8 / uint8 lhs, no tile or tiles >= 128) and otherwise dequantizes and runs a
// float matmul. QDotImpl::kFakeQuant forces the float path: the yardstick of the integer path.
//
// Thread-safety: functions are reentrant; the Backend passed in must not be used concurrently.
// Errors: InvalidArgument for bad shapes / ranks / dtypes / tiles / configs (messages name the
// field and value), FailedPrecondition for a QT backward without forward residuals, and the
// backend's errors.
#pragma once

#include <optional>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "kernels/calibration.h"
#include "kernels/quantize.h"
#include "kernels/rng.h"

namespace qtrain {

enum class QDotImpl : uint8_t {
  kInteger,    // integer kernels where possible (production)
  kFakeQuant,  // quantize → dequantize → float matmul, always
};

// One operand's quantization. `static_calibration` (SRQ, §6) replaces the dynamic calibration;
// its shape must broadcast to the operand (dims 1 or equal; the tiled axis K/tile).
struct QOperand {
  std::optional<QType> qtype;  // nullopt: stays float
  CalibrationMethod method;
  const Calibration* static_calibration = nullptr;  // borrowed for the call
};

struct QDotConfig {
  QOperand lhs;              // x, the activation: channelwise over M (and B)
  QOperand rhs;              // w, the weight (or the second activation): channelwise over N (and B)
  int64_t tile_size = 0;     // sub-channel tile on K; 0 = none
  bool untiled_lhs = false;  // tile_size tiles the rhs only; the lhs keeps one scale per row
  bool disable_channelwise = false;
  std::optional<QType> bwd_qtype;  // set: QT backward
  CalibrationMethod bwd_method;
  int64_t bwd_weight_grad_tile_size = 0;  // tile on M for the dw dot; 0 = none
  StochasticRounding stochastic_rounding = StochasticRounding::kNone;
  // channelwise_noise_axes of g (M,N): noise varies along rows (default) and/or columns.
  bool noise_varies_rows = true;
  bool noise_varies_cols = false;
  QDotImpl impl = QDotImpl::kInteger;
  // The caller needs no dx (the op reads the model's input): QDotBackward skips its dot and
  // returns dx empty.
  bool skip_dx = false;
};

// How an operand of rank `rank` contracted on `contracting_axis` is reduced into scales under
// `config`: the contracting axis (every axis with disable_channelwise), tiled by tile_size unless
// `lhs` and config.untiled_lhs.
ReduceSpec OperandReduceSpec(int rank, int contracting_axis, const QDotConfig& config,
                             bool lhs = false);

// Validates shapes and config (ranks 2/2 or 3/3, matching K and B, tiles dividing K, asymmetric
// methods only for qtypes that support them, stochastic rounding only for integer bwd_qtype).
absl::Status ValidateQDot(const Shape& x, const Shape& w, const QDotConfig& config);

// What the backward needs from the forward. Holds copies of the quantized operands.
struct QDotResiduals {
  std::optional<QuantizedTensor> xq;  // set when lhs was quantized
  std::optional<QuantizedTensor> wq;  // set when rhs was quantized
  // Clip ranges for the STE mask (set only when that operand's method clips), laid out like the
  // operand's scales.
  std::optional<Calibration> x_clip;
  std::optional<Calibration> w_clip;
  // Both operands are untiled int8-kernel quantized: QT uses scale shifting (§5.3).
  bool scale_shifting = false;
};

struct QDotForwardResult {
  Tensor y;
  QDotResiduals residuals;
  // The dynamic calibration of each activation operand with its normal channelwise axes (for
  // SRQ statistics); set when the operand is quantized with a data-driven method.
  std::optional<Calibration> x_dynamic_calibration;
  std::optional<Calibration> w_dynamic_calibration;
};

absl::StatusOr<QDotForwardResult> QDotForward(Backend& backend, const Tensor& x, const Tensor& w,
                                              const QDotConfig& config);

struct QDotGradients {
  Tensor dx;
  Tensor dw;
};

// Gradients for incoming g (…,M,N). QAT (no bwd_qtype): float gradients of the unquantized op
// with the original operands, times the clipped-STE mask. QT: §5.3. `rng` is required when
// stochastic rounding is on; `noise_counter` offsets its counter so each op/step draws fresh
// noise.
absl::StatusOr<QDotGradients> QDotBackward(Backend& backend, const Tensor& x, const Tensor& w,
                                           const Tensor& g, const QDotResiduals& residuals,
                                           const QDotConfig& config,
                                           const CounterRng* rng = nullptr,
                                           uint64_t noise_counter = 0);

}  // namespace qtrain
