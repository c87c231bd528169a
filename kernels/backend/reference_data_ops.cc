// Plain loops for the data-movement and small float ops: the yardstick of backend.h's contract.
#include <algorithm>
#include <cmath>

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
    const uint8_t* pad = padding != nullptr ? padding + (n / d.heads) * d.t : nullptr;
    for (int64_t i = 0; i < d.t; ++i) {
      for (int64_t j = 0; j < d.t; ++j) {
        if ((d.causal && j > i) || (pad != nullptr && pad[j] != 0))
          scores[(n * d.t + i) * d.t + j] = value;
      }
    }
  }
}

}  // namespace qtrain::reference
