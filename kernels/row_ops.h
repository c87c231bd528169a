// Hot contiguous-row loops behind calibration and quantization: the only hand-written loops on
// the quantized-training hot path. Each is compiled with AVX-512 / AVX2 / baseline clones
// (kernels/simd.h). All pointers are to `n` contiguous elements unless stated; no aliasing.
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

}  // namespace qtrain::rowops
