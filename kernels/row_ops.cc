#include "kernels/row_ops.h"

#include <immintrin.h>

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
  for (int64_t i = 0; i < n; ++i) {
    s += static_cast<double>(x[i]) * x[i];
  }
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
  for (int64_t i = 0; i < n; ++i) {
    acc[i] += static_cast<double>(x[i]) * x[i];
  }
}

namespace {

// Round half to even for |v| <= 2^22 under the default rounding mode: adding and subtracting
// 1.5·2^23 leaves exactly the rounded integer. Unlike __builtin_roundevenf, GCC vectorizes it.
// Callers clamp to the qtype range first, so |v| <= 32768.
inline float RoundHalfEvenSmall(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define QTRAIN_HAVE_AVX512_PATH 1
// Symmetric, noise-free integer quantization of a row with one scale (scale_stride 0) or one
// per element (1): the hottest loop of the QAT forward. Explicit AVX-512 because GCC's
// auto-vectorizer packs float→int8 through 128-bit lanes. Rounds half to even (vcvtps2dq under
// the default MXCSR mode); NaN becomes qmin. Writes bytes: callers pass int8 or uint8 storage.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void QuantizeBytesAvx512(
    const float* x, int64_t n, const float* scale, int64_t scale_stride, float qmin, float qmax,
    void* out) {
  auto* o = static_cast<uint8_t*>(out);
  const __m512 lo = _mm512_set1_ps(qmin);
  const __m512 hi = _mm512_set1_ps(qmax);
  const __m512 one_scale = _mm512_set1_ps(scale[0]);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 s = scale_stride == 0 ? one_scale : _mm512_mask_loadu_ps(one_scale, m, scale + i);
    __m512 q = _mm512_div_ps(v, s);
    q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
    const __m512i qi = _mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(o + i, m, _mm512_cvtepi32_epi8(qi));
  }
}

bool CpuHasAvx512() {
  static const bool kHas = __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return kHas;
}
#endif

// One element of numerics.md §3: division (not reciprocal), then zero point, then noise.
inline float QuantValue(const QuantRowArgs& a, int64_t i) {
  float v = a.x[i] / a.scale[i * a.scale_stride];
  if (a.zero_point != nullptr) {
    v += a.zero_point[i * a.scale_stride];
  }
  if (a.noise != nullptr) {
    v += a.noise[i * a.noise_stride];
  }
  v = v < a.qmin ? a.qmin : (v > a.qmax ? a.qmax : v);
  return RoundHalfEvenSmall(v);
}

}  // namespace

// The common case (symmetric, no noise, one scale per row) gets a branch-free loop.
QTRAIN_TARGET_CLONES void QuantizeRowS8(const QuantRowArgs& a, int8_t* out) {
  // __restrict: int8_t may alias anything, which otherwise blocks vectorization.
  int8_t* __restrict o = out;
  const float* __restrict x = a.x;
  const int64_t n = a.n;
  const float qmin = a.qmin;
  const float qmax = a.qmax;
#ifdef QTRAIN_HAVE_AVX512_PATH
  if (a.zero_point == nullptr && a.noise == nullptr && CpuHasAvx512()) {
    QuantizeBytesAvx512(x, n, a.scale, a.scale_stride, qmin, qmax, o);
    return;
  }
#endif
  if (a.zero_point == nullptr && a.noise == nullptr && a.scale_stride == 0) {
    const float s = a.scale[0];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float v = x[i] / s;
      v = v < qmin ? qmin : (v > qmax ? qmax : v);
      o[i] = static_cast<int8_t>(static_cast<int32_t>(RoundHalfEvenSmall(v)));
    }
    return;
  }
  if (a.zero_point == nullptr && a.noise == nullptr) {  // one scale per element
    const float* __restrict s = a.scale;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float v = x[i] / s[i];
      v = v < qmin ? qmin : (v > qmax ? qmax : v);
      o[i] = static_cast<int8_t>(static_cast<int32_t>(RoundHalfEvenSmall(v)));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    o[i] = static_cast<int8_t>(static_cast<int32_t>(QuantValue(a, i)));
  }
}

QTRAIN_TARGET_CLONES void QuantizeRowU8(const QuantRowArgs& a, uint8_t* out) {
#ifdef QTRAIN_HAVE_AVX512_PATH
  if (a.zero_point == nullptr && a.noise == nullptr && CpuHasAvx512()) {
    QuantizeBytesAvx512(a.x, a.n, a.scale, a.scale_stride, a.qmin, a.qmax, out);
    return;
  }
#endif
  for (int64_t i = 0; i < a.n; ++i) {
    out[i] = static_cast<uint8_t>(static_cast<int32_t>(QuantValue(a, i)));
  }
}

void QuantizeRowF32(const QuantRowArgs& a, float* out) {
  for (int64_t i = 0; i < a.n; ++i) {
    out[i] = QuantValue(a, i);
  }
}

QTRAIN_TARGET_CLONES void DequantizeRowS8(const int8_t* q, int64_t n, const float* scale,
                                          int64_t scale_stride, const float* zero_point,
                                          float* out) {
  const int8_t* __restrict qr = q;
  float* __restrict o = out;
  if (zero_point == nullptr && scale_stride == 0) {
    const float s = scale[0];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      o[i] = static_cast<float>(qr[i]) * s;
    }
    return;
  }
  if (zero_point == nullptr) {
    const float* __restrict s = scale;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      o[i] = static_cast<float>(qr[i]) * s[i];
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float zp = zero_point ? zero_point[i * scale_stride] : 0.0f;
    o[i] = (static_cast<float>(qr[i]) - zp) * scale[i * scale_stride];
  }
}

}  // namespace qtrain::rowops
