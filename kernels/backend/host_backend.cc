#include "kernels/backend/host_backend.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend/reference_ops.h"
#include "kernels/row_ops.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

constexpr int64_t kParallelElements = int64_t{1} << 16;  // below this, threads cost more

}  // namespace

absl::Status HostBackend::Copy(const CopyDesc& d, const float* src, float* dst) {
  int64_t src_end = 0, dst_end = 0;
  QTRAIN_RETURN_IF_ERROR(ValidateCopyDesc(d, &src_end, &dst_end));
  for (int64_t i = 0; i < d.count[0]; ++i) {
    for (int64_t j = 0; j < d.count[1]; ++j) {
      for (int64_t k = 0; k < d.count[2]; ++k) {
        const float* __restrict from =
            src + d.src_offset + i * d.src_stride[0] + j * d.src_stride[1] + k * d.src_stride[2];
        float* __restrict to =
            dst + d.dst_offset + i * d.dst_stride[0] + j * d.dst_stride[1] + k * d.dst_stride[2];
        if (!d.accumulate) {
          std::copy_n(from, d.block, to);
          continue;
        }
#pragma omp simd
        for (int64_t e = 0; e < d.block; ++e) to[e] += from[e];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HostBackend::ReduceRows(const RowsDesc& d, const float* src, float* dst) {
  QTRAIN_RETURN_IF_ERROR(ValidateRowsDesc(d));
  // An accumulated plain sum (a bias gradient) adds straight into dst, keeping its running
  // order; otherwise each batch's sum is formed apart, then divided.
  const bool in_place = d.accumulate && d.divisor == 1.0f;
  std::vector<float> sum(in_place ? 0 : static_cast<size_t>(d.cols));
  for (int64_t b = 0; b < d.batch; ++b) {
    float* __restrict acc = in_place ? dst + b * d.cols : sum.data();
    if (!in_place) std::fill(sum.begin(), sum.end(), 0.0f);
    for (int64_t r = 0; r < d.rows; ++r) {
      const float* __restrict row = src + (b * d.rows + r) * d.cols;
#pragma omp simd
      for (int64_t c = 0; c < d.cols; ++c) acc[c] += row[c];
    }
    if (in_place) continue;
    float* out = dst + b * d.cols;
    for (int64_t c = 0; c < d.cols; ++c) {
      out[c] = d.accumulate ? out[c] + sum[c] / d.divisor : sum[c] / d.divisor;
    }
  }
  return absl::OkStatus();
}

absl::Status HostBackend::BroadcastRows(const RowsDesc& d, const float* src, float* dst) {
  QTRAIN_RETURN_IF_ERROR(ValidateRowsDesc(d));
  const int64_t rows = d.batch * d.rows;
#pragma omp parallel for if (rows * d.cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict v = src + (r / d.rows) * d.cols;
    float* __restrict out = dst + r * d.cols;
    if (d.accumulate && d.divisor == 1.0f) {
#pragma omp simd
      for (int64_t c = 0; c < d.cols; ++c) out[c] += v[c];
    } else {
      for (int64_t c = 0; c < d.cols; ++c) {
        out[c] = d.accumulate ? out[c] + v[c] / d.divisor : v[c] / d.divisor;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HostBackend::Axpby(int64_t n, float alpha, const float* x, float beta, float* y) {
  if (x == nullptr) {
#pragma omp parallel for simd if (n >= kParallelElements)
    for (int64_t i = 0; i < n; ++i) y[i] *= beta;
    return absl::OkStatus();
  }
#pragma omp parallel for simd if (n >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i] + beta * y[i];
  return absl::OkStatus();
}

absl::Status HostBackend::Fill(int64_t n, float value, float* dst) {
  std::fill(dst, dst + std::max<int64_t>(n, 0), value);
  return absl::OkStatus();
}

absl::Status HostBackend::RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                                     const float* gamma, float* dst, float* rstd) {
#pragma omp parallel for if (rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict x = src + r * cols;
    double sq = 0;
    for (int64_t j = 0; j < cols; ++j) sq += x[j] * x[j];
    const float s = 1.0f / std::sqrt(static_cast<float>(sq / static_cast<double>(cols)) + eps);
    rstd[r] = s;
    float* __restrict y = dst + r * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) y[j] = x[j] * s * gamma[j];
  }
  return absl::OkStatus();
}

absl::Status HostBackend::RmsNormBwd(int64_t rows, int64_t cols, const float* src,
                                     const float* rstd, const float* gamma, const float* diff_dst,
                                     float* diff_src, float* diff_gamma) {
  std::fill(diff_gamma, diff_gamma + cols, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict x = src + r * cols;
    const float* __restrict g = diff_dst + r * cols;
    const float s = rstd[r];
    double dot = 0;  // Σ g·γ·x
    for (int64_t j = 0; j < cols; ++j) {
      dot += g[j] * gamma[j] * x[j];
      diff_gamma[j] += g[j] * x[j] * s;
    }
    const float k = s * s * s * static_cast<float>(dot) / static_cast<float>(cols);
    float* __restrict dx = diff_src + r * cols;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) dx[j] = s * g[j] * gamma[j] - k * x[j];
  }
  return absl::OkStatus();
}

absl::Status HostBackend::DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate,
                                      float* mask) {
  reference::DropoutMask(n, rng, base, rate, mask);
  return absl::OkStatus();
}

absl::Status HostBackend::Gather(int64_t n, int64_t rows, int64_t cols, const float* table,
                                 const int32_t* ids, float* dst) {
  QTRAIN_RETURN_IF_ERROR(ValidateIds(n, rows, ids));
  reference::Gather(n, cols, table, ids, dst);
  return absl::OkStatus();
}

absl::Status HostBackend::ScatterAdd(int64_t n, int64_t rows, int64_t cols, const int32_t* ids,
                                     const float* src, float* table) {
  QTRAIN_RETURN_IF_ERROR(ValidateIds(n, rows, ids));
  reference::ScatterAdd(n, cols, ids, src, table);
  return absl::OkStatus();
}

absl::Status HostBackend::AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding,
                                        float value, float* scores) {
  QTRAIN_RETURN_IF_ERROR(ValidateAttentionMaskDesc(d));
  reference::AttentionMask(d, padding, value, scores);
  return absl::OkStatus();
}

absl::StatusOr<UpdateResult> HostBackend::AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) {
  if (dry_run) return UpdateResult{rowops::AdamWUpdateIsFinite(a), {}};
  return UpdateResult{true, rowops::AdamWUpdate(a)};
}

absl::StatusOr<UpdateResult> HostBackend::SgdUpdate(const rowops::SgdArgs& a, bool dry_run) {
  if (dry_run) return UpdateResult{rowops::SgdUpdateIsFinite(a), {}};
  return UpdateResult{true, rowops::SgdUpdate(a)};
}

absl::StatusOr<double> HostBackend::SumOfSquares(
    absl::Span<const std::pair<const float*, int64_t>> arrays) {
  constexpr int64_t kChunk = 1 << 16;
  std::vector<std::pair<const float*, int64_t>> chunks;
  for (const auto& [x, n] : arrays) {
    for (int64_t i = 0; i < n; i += kChunk) chunks.emplace_back(x + i, std::min(kChunk, n - i));
  }
  std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < chunks.size(); ++c) {
    partial[c] = rowops::SumSquares(chunks[c].first, chunks[c].second);
  }
  double sum = 0;
  for (double v : partial) sum += v;
  return sum;
}

absl::StatusOr<CrossEntropyResult> HostBackend::SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                                    const float* logits,
                                                                    const int32_t* targets,
                                                                    const uint8_t* padding,
                                                                    float* grad) {
  if (d.rows < 0 || d.classes <= 0 || d.shift_seq < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cross-entropy needs classes > 0: rows ", d.rows, ", classes ", d.classes));
  }
  // A pooled tensor, not a vector: language models' logits are large, and fresh memory
  // page-faults in every step.
  QTRAIN_ASSIGN_OR_RETURN(Tensor logp, Allocate(DType::kF32, {d.rows, d.classes}));
  float* lp = static_cast<float*>(logp.raw());
  QTRAIN_RETURN_IF_ERROR(SoftmaxFwd(d.rows, d.classes, /*log=*/true, logits, lp));
  return reference::CrossEntropyFromLogp(d, lp, targets, padding, grad);
}

absl::StatusOr<double> HostBackend::SquaredError(int64_t n, const float* y, const float* t,
                                                 float* grad) {
  return reference::SquaredError(n, y, t, grad);
}

absl::Status HostBackend::CheckLabels(int64_t n, int64_t classes, const int32_t* labels,
                                      bool has_ignore, int32_t ignore_index) {
  return reference::CheckLabels(n, classes, labels, has_ignore, ignore_index);
}

absl::Status HostBackend::CheckFinite(int64_t n, const float* x) {
  return reference::CheckFinite(n, x);
}

absl::Status HostBackend::EqualTo(int64_t n, const int32_t* x, int64_t value, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] == value;
  return absl::OkStatus();
}

}  // namespace qtrain
