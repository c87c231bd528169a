// Hot contiguous-row loops behind calibration, quantization and the optimizer update. Each is
// compiled three times (kernels/row_ops/: baseline x86-64, AVX2+FMA, AVX-512) and the variant of
// the active ISA runs (QTRAIN_MAX_ISA caps it, so tests reach every variant on one machine); all
// variants give the same bits. All pointers are to `n` contiguous elements unless stated; no
// aliasing.
#pragma once

#include <cstdint>

namespace qtrain::rowops {

// max |x[i]| (0 for n == 0).
float AbsMax(const float* x, int64_t n);
// min and max of x, each starting from 0 (so lo <= 0 <= hi).
void MinMax0(const float* x, int64_t n, float* lo, float* hi);
// Sum of squares, accumulated in double.
double SumSquares(const float* x, int64_t n);

// Columnwise accumulation: acc[i] = max(acc[i], |x[i]|), and the min/max/sum-of-squares analogues.
void AbsMaxInto(const float* x, int64_t n, float* acc);
void MinMaxInto(const float* x, int64_t n, float* lo, float* hi);
void SumSquaresInto(const float* x, int64_t n, double* acc);

// Integer quantization of a row: out[i] = clamp(roundeven(x[i] / s + zp + noise), qmin, qmax).
// `scale` is one value (ScalarScale) or n values (VectorScale); `zp` likewise (may be null:
// 0); `noise` may be null, a single value (noise_stride 0) or n values (noise_stride 1).
struct QuantRowArgs {
  const float* x;
  int64_t n;
  const float* scale;
  int64_t scale_stride;     // 0: one scale for the row; 1: one per element
  const float* zero_point;  // null for symmetric
  const float* noise;       // null for none
  int64_t noise_stride;
  float qmin;
  float qmax;
};
void QuantizeRowS8(const QuantRowArgs& args, int8_t* out);
void QuantizeRowU8(const QuantRowArgs& args, uint8_t* out);
// Same values as floats (used for int16 and as the reference of the above).
void QuantizeRowF32(const QuantRowArgs& args, float* out);

// out[i] = (q[i] - zp) * s with the same scale/zero-point conventions.
void DequantizeRowS8(const int8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                     const float* zero_point, float* out);

// The optimizer updates, element-wise over one parameter (optax's adamw / sgd, decoupled weight
// decay). `clip` multiplies the gradient first (global-norm clipping); c1, c2 are AdamW's bias
// corrections 1 - beta^t. Threads over OpenMP for large n. Each returns the largest |w|, |m|
// and v it wrote (the optimizer bounds the next update with them); each *IsFinite twin computes
// the same values without writing and says whether all would be finite.
struct UpdateMax {
  float w = 0, m = 0, v = 0;
};
struct AdamWArgs {
  float* w;
  float* m;
  float* v;
  const float* g;
  int64_t n;
  float clip, lr, wd, b1, b2, eps, c1, c2;
};
UpdateMax AdamWUpdate(const AdamWArgs& args);
bool AdamWUpdateIsFinite(const AdamWArgs& args);
struct SgdArgs {
  float* w;
  float* m;  // momentum slot; null: plain SGD
  const float* g;
  int64_t n;
  float clip, lr, wd, mu;
  bool nesterov;
};
UpdateMax SgdUpdate(const SgdArgs& args);
bool SgdUpdateIsFinite(const SgdArgs& args);

// numerics.md §9 mse for integer qtypes: err[k] = Σ (x[i] − clamp(roundeven(x[i] / scales[k]),
// qmin, qmax) · scales[k])² over the finite x[i], each term in double, summed in element order,
// for k < m (|qmin|, |qmax| < 2^22).
void MseErrors(const float* x, int64_t n, const float* scales, int64_t m, float qmin, float qmax,
               double* err);

}  // namespace qtrain::rowops
