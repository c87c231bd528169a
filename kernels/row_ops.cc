#include "kernels/row_ops.h"

#include <cmath>

#include "kernels/simd.h"

namespace qtrain::rowops {

QTRAIN_TARGET_CLONES float AbsMax(const float* x, int64_t n) {
  float m = 0.0f;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a > m ? a : m;
  }
  return m;
}

QTRAIN_TARGET_CLONES void MinMax0(const float* x, int64_t n, float* lo, float* hi) {
  float mn = 0.0f;
  float mx = 0.0f;
#pragma omp simd reduction(min : mn) reduction(max : mx)
  for (int64_t i = 0; i < n; ++i) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  *lo = mn;
  *hi = mx;
}

QTRAIN_TARGET_CLONES double SumSquares(const float* x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

QTRAIN_TARGET_CLONES void AbsMaxInto(const float* x, int64_t n, float* acc) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    acc[i] = a > acc[i] ? a : acc[i];
  }
}

QTRAIN_TARGET_CLONES void MinMaxInto(const float* x, int64_t n, float* lo, float* hi) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    lo[i] = x[i] < lo[i] ? x[i] : lo[i];
    hi[i] = x[i] > hi[i] ? x[i] : hi[i];
  }
}

QTRAIN_TARGET_CLONES void SumSquaresInto(const float* x, int64_t n, double* acc) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(x[i]) * x[i];
}

namespace {

// One element of numerics.md §3: division (not reciprocal), then zero point, then noise.
inline float QuantValue(const QuantRowArgs& a, int64_t i) {
  float v = a.x[i] / a.scale[i * a.scale_stride];
  if (a.zero_point != nullptr) v += a.zero_point[i * a.scale_stride];
  if (a.noise != nullptr) v += a.noise[i * a.noise_stride];
  v = v < a.qmin ? a.qmin : (v > a.qmax ? a.qmax : v);
  return __builtin_roundevenf(v);
}

}  // namespace

// The common case (symmetric, no noise, one scale per row) gets a branch-free loop.
QTRAIN_TARGET_CLONES void QuantizeRowS8(const QuantRowArgs& a, int8_t* out) {
  if (a.zero_point == nullptr && a.noise == nullptr && a.scale_stride == 0) {
    const float s = a.scale[0];
    const float qmin = a.qmin;
    const float qmax = a.qmax;
#pragma omp simd
    for (int64_t i = 0; i < a.n; ++i) {
      float v = a.x[i] / s;
      v = v < qmin ? qmin : (v > qmax ? qmax : v);
      out[i] = static_cast<int8_t>(__builtin_roundevenf(v));
    }
    return;
  }
  for (int64_t i = 0; i < a.n; ++i) out[i] = static_cast<int8_t>(QuantValue(a, i));
}

QTRAIN_TARGET_CLONES void QuantizeRowU8(const QuantRowArgs& a, uint8_t* out) {
  for (int64_t i = 0; i < a.n; ++i) out[i] = static_cast<uint8_t>(QuantValue(a, i));
}

void QuantizeRowF32(const QuantRowArgs& a, float* out) {
  for (int64_t i = 0; i < a.n; ++i) out[i] = QuantValue(a, i);
}

QTRAIN_TARGET_CLONES void DequantizeRowS8(const int8_t* q, int64_t n, const float* scale,
                                          int64_t scale_stride, const float* zero_point,
                                          float* out) {
  if (zero_point == nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale[i * scale_stride];
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = (static_cast<float>(q[i]) - zero_point[i * scale_stride]) * scale[i * scale_stride];
  }
}

}  // namespace qtrain::rowops
