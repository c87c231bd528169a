#include "kernels/backend/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace qtrain::reference {
namespace {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluA = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;    // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.3989422804014327f;  // 1/sqrt(2 pi)

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Calls fn(dst_index, src_index) for every in-bounds (output, window element) pair, window by
// window; begin(dst_index) / end(dst_index, count) bracket each window.
template <typename Begin, typename Fn, typename End>
void ForEachWindow(const PoolDesc& d, Begin&& begin, Fn&& fn, End&& end) {
  const int64_t oh = d.out_h(), ow = d.out_w();
  for (int64_t b = 0; b < d.n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t x = 0; x < ow; ++x) {
        for (int64_t ch = 0; ch < d.c; ++ch) {
          const int64_t out = ((b * oh + y) * ow + x) * d.c + ch;
          begin(out);
          int64_t count = 0;
          for (int64_t ky = 0; ky < d.kh; ++ky) {
            const int64_t iy = y * d.stride_h - d.pad_top + ky;
            if (iy < 0 || iy >= d.h) {
              continue;
            }
            for (int64_t kx = 0; kx < d.kw; ++kx) {
              const int64_t ix = x * d.stride_w - d.pad_left + kx;
              if (ix < 0 || ix >= d.w) {
                continue;
              }
              fn(out, ((b * d.h + iy) * d.w + ix) * d.c + ch);
              ++count;
            }
          }
          end(out, count);
        }
      }
    }
  }
}

}  // namespace

void EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = src[i];
    switch (kind) {
      case EltwiseKind::kRelu:
        dst[i] = x > 0.0f ? x : 0.0f;
        break;
      case EltwiseKind::kGeluTanh:
        dst[i] = 0.5f * x * (1.0f + std::tanh(kGeluC * (x + kGeluA * x * x * x)));
        break;
      case EltwiseKind::kSilu:
        dst[i] = x * Sigmoid(x);
        break;
      case EltwiseKind::kTanh:
        dst[i] = std::tanh(x);
        break;
      case EltwiseKind::kRelu6:
        dst[i] = std::min(std::max(x, 0.0f), 6.0f);
        break;
      case EltwiseKind::kHardSwish:
        dst[i] = x * std::min(std::max(x + 3.0f, 0.0f), 6.0f) / 6.0f;
        break;
      case EltwiseKind::kSigmoid:
        dst[i] = Sigmoid(x);
        break;
      case EltwiseKind::kGeluErf:
        dst[i] = 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
        break;
    }
  }
}

void EltwiseBwd(EltwiseKind kind, int64_t n, const float* src, const float* diff_dst,
                float* diff_src) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = src[i];
    float grad = 0.0f;
    switch (kind) {
      case EltwiseKind::kRelu:
        grad = x > 0.0f ? 1.0f : 0.0f;
        break;
      case EltwiseKind::kGeluTanh: {
        const float t = std::tanh(kGeluC * (x + kGeluA * x * x * x));
        grad = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluC * (1.0f + 3 * kGeluA * x * x);
        break;
      }
      case EltwiseKind::kSilu: {
        const float s = Sigmoid(x);
        grad = s * (1.0f + x * (1.0f - s));
        break;
      }
      case EltwiseKind::kTanh: {
        const float t = std::tanh(x);
        grad = 1.0f - t * t;
        break;
      }
      case EltwiseKind::kRelu6:
        grad = x > 0.0f && x < 6.0f ? 1.0f : 0.0f;
        break;
      case EltwiseKind::kHardSwish:
        grad = x < -3.0f ? 0.0f : x > 3.0f ? 1.0f : (2.0f * x + 3.0f) / 6.0f;
        break;
      case EltwiseKind::kSigmoid: {
        const float s = Sigmoid(x);
        grad = s * (1.0f - s);
        break;
      }
      case EltwiseKind::kGeluErf:
        grad = 0.5f * (1.0f + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
        break;
    }
    diff_src[i] = grad * diff_dst[i];
  }
}

void LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src, const float* gamma,
                  const float* beta, float* dst, float* mean, float* var) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    double sum = 0, sq = 0;
    for (int64_t c = 0; c < cols; ++c) {
      sum += x[c];
    }
    const float m = static_cast<float>(sum / cols);
    for (int64_t c = 0; c < cols; ++c) {
      sq += (x[c] - m) * (x[c] - m);
    }
    const float v = static_cast<float>(sq / cols);
    const float rstd = 1.0f / std::sqrt(v + eps);
    for (int64_t c = 0; c < cols; ++c) {
      dst[r * cols + c] = (x[c] - m) * rstd * gamma[c] + beta[c];
    }
    mean[r] = m;
    var[r] = v;
  }
}

void LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src, const float* mean,
                  const float* var, const float* gamma, const float* diff_dst, float* diff_src,
                  float* diff_gamma, float* diff_beta) {
  std::fill(diff_gamma, diff_gamma + cols, 0.0f);
  std::fill(diff_beta, diff_beta + cols, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    const float* dy = diff_dst + r * cols;
    const float rstd = 1.0f / std::sqrt(var[r] + eps);
    double mean_dxhat = 0, mean_dxhat_xhat = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float xhat = (x[c] - mean[r]) * rstd;
      diff_gamma[c] += dy[c] * xhat;
      diff_beta[c] += dy[c];
      mean_dxhat += dy[c] * gamma[c];
      mean_dxhat_xhat += dy[c] * gamma[c] * xhat;
    }
    mean_dxhat /= cols;
    mean_dxhat_xhat /= cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float xhat = (x[c] - mean[r]) * rstd;
      diff_src[r * cols + c] = rstd * (dy[c] * gamma[c] - static_cast<float>(mean_dxhat) -
                                       xhat * static_cast<float>(mean_dxhat_xhat));
    }
  }
}

// Statistics in double, one channel at a time: slow and plain, as a yardstick should be.
void BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats, const float* src,
                  const float* gamma, const float* beta, float* mean, float* var, float* dst) {
  for (int64_t c = 0; c < channels; ++c) {
    if (batch_stats) {
      double sum = 0, sq = 0;
      for (int64_t r = 0; r < rows; ++r) sum += src[r * channels + c];
      const double m = sum / static_cast<double>(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const double d = src[r * channels + c] - m;
        sq += d * d;
      }
      mean[c] = static_cast<float>(m);
      var[c] = static_cast<float>(sq / static_cast<double>(rows));
    }
    const float rstd = 1.0f / std::sqrt(var[c] + eps);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * channels + c;
      dst[i] = (src[i] - mean[c]) * rstd * gamma[c] + beta[c];
    }
  }
}

// dx = γ·rstd·(dy − mean(dy) − x̂·mean(dy·x̂)), the means over the rows.
void BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src, const float* mean,
                  const float* var, const float* gamma, const float* diff_dst, float* diff_src,
                  float* diff_gamma, float* diff_beta) {
  for (int64_t c = 0; c < channels; ++c) {
    const float rstd = 1.0f / std::sqrt(var[c] + eps);
    double dbeta = 0, dgamma = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * channels + c;
      dbeta += diff_dst[i];
      dgamma += diff_dst[i] * (src[i] - mean[c]) * rstd;
    }
    diff_gamma[c] = static_cast<float>(dgamma);
    diff_beta[c] = static_cast<float>(dbeta);
    const double n = static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * channels + c;
      const double xhat = (src[i] - mean[c]) * rstd;
      diff_src[i] =
          static_cast<float>(gamma[c] * rstd * (diff_dst[i] - dbeta / n - xhat * dgamma / n));
    }
  }
}

void SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    float* y = dst + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < cols; ++c) {
      mx = std::max(mx, x[c]);
    }
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      sum += std::exp(x[c] - mx);
    }
    const float lse = static_cast<float>(std::log(sum));
    for (int64_t c = 0; c < cols; ++c) {
      y[c] = log ? x[c] - mx - lse : static_cast<float>(std::exp(x[c] - mx) / sum);
    }
  }
}

void SoftmaxBwd(int64_t rows, int64_t cols, const float* dst, const float* diff_dst,
                float* diff_src) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* y = dst + r * cols;
    const float* dy = diff_dst + r * cols;
    double dot = 0;
    for (int64_t c = 0; c < cols; ++c) {
      dot += dy[c] * y[c];
    }
    for (int64_t c = 0; c < cols; ++c) {
      diff_src[r * cols + c] = y[c] * (dy[c] - static_cast<float>(dot));
    }
  }
}

void PoolFwd(const PoolDesc& d, const float* src, float* dst) {
  ForEachWindow(
      d, [&](int64_t out) { dst[out] = d.max ? -std::numeric_limits<float>::infinity() : 0.0f; },
      [&](int64_t out, int64_t in) {
        dst[out] = d.max ? std::max(dst[out], src[in]) : dst[out] + src[in];
      },
      [&](int64_t out, int64_t count) {
        if (!d.max) {
          dst[out] /= static_cast<float>(count);
        }
      });
}

void PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst, float* diff_src) {
  std::fill(diff_src, diff_src + d.n * d.h * d.w * d.c, 0.0f);
  int64_t arg = -1;
  float best = 0;
  std::vector<int64_t> window;
  ForEachWindow(
      d,
      [&](int64_t) {
        arg = -1;
        window.clear();
      },
      [&](int64_t, int64_t in) {
        if (arg < 0 || src[in] > best) {
          arg = in;
          best = src[in];
        }
        window.push_back(in);
      },
      [&](int64_t out, int64_t count) {
        if (d.max) {
          diff_src[arg] += diff_dst[out];
        } else {
          for (int64_t in : window) {
            diff_src[in] += diff_dst[out] / static_cast<float>(count);
          }
        }
      });
}

void Binary(BinaryKind kind, int64_t n, const float* a, const float* b, float* dst) {
  if (kind == BinaryKind::kAdd) {
    for (int64_t i = 0; i < n; ++i) dst[i] = a[i] + b[i];
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = a[i] * b[i];
  }
}

void Transpose(int64_t rows, int64_t cols, const float* src, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

void Rotary(const RotaryDesc& d, const float* cos, const float* sin, const float* src, float* dst) {
  const int64_t h = d.dim / 2;
  const float sign = d.inverse ? -1.0f : 1.0f;
#pragma omp parallel for if (d.rows * d.dim >= (1 << 16))
  for (int64_t r = 0; r < d.rows; ++r) {
    const float* c = cos + (r % d.positions) * h;
    const float* s = sin + (r % d.positions) * h;
    const float* x = src + r * d.dim;
    float* y = dst + r * d.dim;
    for (int64_t i = 0; i < h; ++i) {
      y[i] = x[i] * c[i] - sign * x[i + h] * s[i];
      y[i + h] = x[i + h] * c[i] + sign * x[i] * s[i];
    }
  }
}

}  // namespace qtrain::reference
