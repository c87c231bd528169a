// Calibration methods of numerics.md §3 and §9 (percentile, mse; entropy keeps a histogram in
// SRQ: srq.h) and the statistic they compute over a ScaleLayout's groups, plus the scale / zero
// point derived from it.
//
// Pure functions; thread-safe. Tensors returned are owned by the caller.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/qtype.h"
#include "kernels/scale_layout.h"
#include "kernels/tensor.h"

namespace qtrain {

enum class CalibrationKind : uint8_t {
  kAbsMax,
  kMinMax,
  kRms,
  kFixed,
  kPercentile,  // §9: the p-th percentile of |x|
  kMse,         // §9: the clipping bound (of n candidates) with the least quantization MSE
  kEntropy,     // §9: KL-divergence threshold of a histogram; SRQ activations only
};

struct CalibrationMethod {
  CalibrationKind kind = CalibrationKind::kAbsMax;
  float k = 1.0f;         // multiplier of absmax / minmax / rms
  float fixed_lo = 0.0f;  // fixed range [fixed_lo, fixed_hi]
  float fixed_hi = 0.0f;
  double percentile = 100.0;  // kPercentile: p in (0, 100], kept as the string's double
  int candidates = 64;        // kMse: n >= 1
  int bins = 2048;            // kEntropy: histogram bins >= 2

  // Symmetric methods produce a scale only; asymmetric ones a scale and a zero point.
  bool IsSymmetric() const;
  // True when the forward calibration clips values, so the STE masks gradients (§5.2):
  // absmax,k / minmax,k with k < 1, rms, fixed.
  bool Clips() const;
  // Canonical string: "absmax", "absmax,0.5", "rms,3", "fixed,-1,3", "percentile,99.9", "mse",
  // "mse,16", "entropy", "entropy,64"...
  std::string ToString() const;
};

// Parses "name[,args]" (lower-cased first): absmax[,k], minmax[,k], rms,k, fixed,a[,b],
// percentile,p, mse[,n], entropy[,bins]. InvalidArgument naming the string: unknown name, wrong
// argument count, a non-numeric or non-finite argument, k <= 0, fixed with a >= b (or a <= 0 in
// the one-argument form), p outside (0, 100], n or bins not a whole number >= 1 (bins >= 2).
absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(absl::string_view text);

// The statistic of each scale group. Symmetric: `absmax` holds A (k applied). Asymmetric: `lo`
// and `hi` (min(min x, 0)·k and max(max x, 0)·k). Shapes are the layout's scale_shape.
struct Calibration {
  bool symmetric = true;
  Tensor absmax;
  Tensor lo;
  Tensor hi;
};

// Computes `method`'s statistic of f32 tensor `x` laid out by `layout` (built from x's shape), for
// quantization to `qtype` (mse evaluates its candidates in it). `fixed` ignores the data and
// yields a per-tensor (all-ones shape) statistic. `entropy` yields absmax: its threshold comes
// from the histogram of SRQ (srq.h); absmax is its fallback when no histogram exists yet.
Calibration Calibrate(const Tensor& x, const ScaleLayout& layout, const CalibrationMethod& method,
                      QType qtype);

// Scale and zero point of numerics.md §3. `zero_point` is empty for symmetric calibrations;
// otherwise f32 holding integers.
struct QuantParams {
  Tensor scale;
  Tensor zero_point;
  bool symmetric() const { return zero_point.empty(); }
};

// InvalidArgument for an asymmetric calibration with a qtype that only supports symmetric
// quantization (fp8, uint8, int2/3/5/6/7).
absl::StatusOr<QuantParams> ComputeQuantParams(const Calibration& calibration, QType qtype);

// True when `qtype` accepts asymmetric (zero-point) quantization: int4, int8, int16.
bool SupportsAsymmetric(QType qtype);

// Validates a (qtype, method) pair as a rule would use it: asymmetric methods need a qtype that
// supports them. InvalidArgument naming both otherwise.
absl::Status ValidateQTypeMethod(QType qtype, const CalibrationMethod& method);

// The smallest allowed scale: sqrt(FLT_MIN); smaller scales become 1 (numerics.md §3).
float MinScale();

}  // namespace qtrain
