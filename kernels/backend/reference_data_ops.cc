// Plain loops for the data-movement and small float ops: the yardstick of backend.h's contract.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/backend/reference_ops.h"

namespace qtrain::reference {

void Copy(const CopyDesc& d, const float* src, float* dst) {
  for (int64_t i = 0; i < d.count[0]; ++i) {
    for (int64_t j = 0; j < d.count[1]; ++j) {
      for (int64_t k = 0; k < d.count[2]; ++k) {
        const float* from =
            src + d.src_offset + i * d.src_stride[0] + j * d.src_stride[1] + k * d.src_stride[2];
        float* to =
            dst + d.dst_offset + i * d.dst_stride[0] + j * d.dst_stride[1] + k * d.dst_stride[2];
        for (int64_t e = 0; e < d.block; ++e) {
          to[e] = d.accumulate ? to[e] + from[e] : from[e];
        }
      }
    }
  }
}

void ReduceRows(const RowsDesc& d, const float* src, float* dst) {
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t c = 0; c < d.cols; ++c) {
      float sum = 0.0f;
      for (int64_t r = 0; r < d.rows; ++r) {
        sum += src[(b * d.rows + r) * d.cols + c];
      }
      float& out = dst[b * d.cols + c];
      out = d.accumulate ? out + sum / d.divisor : sum / d.divisor;
    }
  }
}

void BroadcastRows(const RowsDesc& d, const float* src, float* dst) {
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t r = 0; r < d.rows; ++r) {
      for (int64_t c = 0; c < d.cols; ++c) {
        float& out = dst[(b * d.rows + r) * d.cols + c];
        const float v = src[b * d.cols + c] / d.divisor;
        out = d.accumulate ? out + v : v;
      }
    }
  }
}

void Axpby(int64_t n, float alpha, const float* x, float beta, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    y[i] = x != nullptr ? alpha * x[i] + beta * y[i] : beta * y[i];
  }
}

void Fill(int64_t n, float value, float* dst) { std::fill(dst, dst + n, value); }

void RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src, const float* gamma,
                float* dst, float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    double sq = 0;
    for (int64_t j = 0; j < cols; ++j) sq += static_cast<double>(x[j]) * x[j];
    rstd[r] = 1.0f / std::sqrt(static_cast<float>(sq / static_cast<double>(cols)) + eps);
    for (int64_t j = 0; j < cols; ++j) dst[r * cols + j] = x[j] * rstd[r] * gamma[j];
  }
}

// y = x·r·γ with r = (mean(x²) + eps)^(-1/2): dx = r·γ·dy − x·r³·Σ(dy·γ·x)/cols, dγ = Σ_rows
// dy·x·r.
void RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd, const float* gamma,
                const float* diff_dst, float* diff_src, float* diff_gamma) {
  std::fill(diff_gamma, diff_gamma + cols, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    const float* g = diff_dst + r * cols;
    double dot = 0;
    for (int64_t j = 0; j < cols; ++j) {
      dot += static_cast<double>(g[j]) * gamma[j] * x[j];
      diff_gamma[j] += g[j] * x[j] * rstd[r];
    }
    const float k =
        rstd[r] * rstd[r] * rstd[r] * static_cast<float>(dot) / static_cast<float>(cols);
    for (int64_t j = 0; j < cols; ++j)
      diff_src[r * cols + j] = rstd[r] * g[j] * gamma[j] - k * x[j];
  }
}

void DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate, float* mask) {
  const float scale = 1.0f / (1.0f - rate);
  const auto threshold = static_cast<uint64_t>(static_cast<double>(rate) * 0x1p32);
  for (int64_t i = 0; i < n; ++i) {
    mask[i] = (rng.Bits(base + static_cast<uint64_t>(i)) >> 32) >= threshold ? scale : 0.0f;
  }
}

void Gather(int64_t n, int64_t cols, const float* table, const int32_t* ids, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(table + static_cast<int64_t>(ids[i]) * cols, cols, dst + i * cols);
  }
}

void ScatterAdd(int64_t n, int64_t cols, const int32_t* ids, const float* src, float* table) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = table + static_cast<int64_t>(ids[i]) * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] += src[i * cols + j];
  }
}

void AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding, float value, float* scores) {
  for (int64_t n = 0; n < d.batch * d.heads; ++n) {
    const int64_t flags = d.t - d.prefix;  // padding flags per example
    const uint8_t* pad = padding != nullptr ? padding + (n / d.heads) * flags : nullptr;
    for (int64_t i = 0; i < d.t; ++i) {
      for (int64_t j = 0; j < d.t; ++j) {
        if ((d.causal && j > i) || (pad != nullptr && j >= d.prefix && pad[j - d.prefix] != 0))
          scores[(n * d.t + i) * d.t + j] = value;
      }
    }
  }
}

namespace {

void Track(UpdateResult& r, bool dry_run, float w, float m, float v) {
  if (dry_run) {
    r.finite = r.finite && std::isfinite(w) && std::isfinite(m) && std::isfinite(v);
    return;
  }
  r.maxima.w = std::max(r.maxima.w, std::abs(w));
  r.maxima.m = std::max(r.maxima.m, std::abs(m));
  r.maxima.v = std::max(r.maxima.v, v);
}

}  // namespace

// optax.adamw with decoupled weight decay and bias corrections c1, c2 (numerics.md).
UpdateResult AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) {
  UpdateResult r;
  for (int64_t i = 0; i < a.n; ++i) {
    const float grad = a.g[i] * a.clip;
    const float m = a.b1 * a.m[i] + (1 - a.b1) * grad;
    const float v = a.b2 * a.v[i] + (1 - a.b2) * grad * grad;
    const float update = (m / a.c1) / (std::sqrt(v / a.c2) + a.eps);
    const float w = a.w[i] - a.lr * (update + a.wd * a.w[i]);
    Track(r, dry_run, w, m, v);
    if (!dry_run) {
      a.w[i] = w;
      a.m[i] = m;
      a.v[i] = v;
    }
  }
  return r;
}

// torch.optim.SGD: weight decay added to the gradient, momentum and Nesterov as PyTorch's.
UpdateResult SgdUpdate(const rowops::SgdArgs& a, bool dry_run) {
  UpdateResult r;
  for (int64_t i = 0; i < a.n; ++i) {
    float w, m = 0;
    if (a.m == nullptr) {
      w = a.w[i] - a.lr * (a.g[i] * a.clip + a.wd * a.w[i]);
    } else {
      const float grad = a.g[i] * a.clip + a.wd * a.w[i];
      m = a.mu * a.m[i] + grad;
      w = a.w[i] - a.lr * (a.nesterov ? grad + a.mu * m : m);
    }
    Track(r, dry_run, w, m, 0.0f);
    if (!dry_run) {
      a.w[i] = w;
      if (a.m != nullptr) a.m[i] = m;
    }
  }
  return r;
}

int64_t RowLabel(const CrossEntropyDesc& d, const int32_t* targets, const uint8_t* padding,
                 int64_t i) {
  if (d.shift_seq > 0) {
    if (i % d.shift_seq == d.shift_seq - 1) return -1;
    ++i;
  }
  if (padding != nullptr && padding[i] != 0) return -1;  // a token-level label at a padded position
  const int32_t l = targets[i];
  return d.has_ignore && l == d.ignore_index ? -1 : l;
}

CrossEntropyResult CrossEntropyFromLogp(const CrossEntropyDesc& d, const float* logp,
                                        const int32_t* targets, const uint8_t* padding,
                                        float* grad) {
  CrossEntropyResult r;
  double sum = 0;
  for (int64_t i = 0; i < d.rows; ++i) {
    const int64_t label = RowLabel(d, targets, padding, i);
    if (label < 0) continue;
    const float* lp = logp + i * d.classes;
    sum -= lp[label];
    int64_t arg = 0;
    for (int64_t c = 1; c < d.classes; ++c) {
      if (lp[c] > lp[arg]) arg = c;
    }
    r.correct += arg == label;
    ++r.count;
  }
  r.loss_sum = sum;
  if (grad == nullptr) return r;
  std::fill(grad, grad + d.rows * d.classes, 0.0f);
  const float inv = r.count ? 1.0f / static_cast<float>(r.count) : 0.0f;
  for (int64_t i = 0; i < d.rows; ++i) {
    const int64_t label = RowLabel(d, targets, padding, i);
    if (label < 0) continue;
    const float* lp = logp + i * d.classes;
    float* g = grad + i * d.classes;
    for (int64_t c = 0; c < d.classes; ++c) g[c] = std::exp(lp[c]) * inv;
    g[label] -= inv;
  }
  return r;
}

double SquaredError(int64_t n, const float* y, const float* t, float* grad) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(y[i]) - t[i];
    sum += d * d;
    if (grad != nullptr) grad[i] = static_cast<float>(2.0 * d / static_cast<double>(n));
  }
  return sum;
}

absl::Status CheckLabels(int64_t n, int64_t classes, const int32_t* labels, bool has_ignore,
                         int32_t ignore_index) {
  for (int64_t i = 0; i < n; ++i) {
    const bool ignored = has_ignore && labels[i] == ignore_index;
    if (!ignored && (labels[i] < 0 || labels[i] >= classes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", labels[i], " at position ", i, " is outside [0, ", classes, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckFinite(int64_t n, const float* x) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(absl::StrCat("element ", i, " is ", x[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace qtrain::reference
