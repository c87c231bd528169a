// HostBackend: the data-movement and small float ops of backend.h for backends whose tensors live
// in host memory (oneDNN's CPU backend, the reference backend). Rows and elementwise loops run
// vectorised and, for large tensors, on OpenMP threads; gathers, masks and dropout masks are the
// reference loops. Errors as backend.h's ops.
#pragma once

#include "kernels/backend/backend.h"

namespace qtrain {

class HostBackend : public Backend {
 public:
  // The tensor-level overloads stay visible next to the overrides below.
  using Backend::Axpby;
  using Backend::CheckFinite;
  using Backend::CheckLabels;
  using Backend::Fill;
  using Backend::SoftmaxCrossEntropy;
  using Backend::SquaredError;
  using Backend::SumOfSquares;
  absl::Status Copy(const CopyDesc& d, const float* src, float* dst) override;
  absl::Status ReduceRows(const RowsDesc& d, const float* src, float* dst) override;
  absl::Status BroadcastRows(const RowsDesc& d, const float* src, float* dst) override;
  absl::Status Axpby(int64_t n, float alpha, const float* x, float beta, float* y) override;
  absl::Status Fill(int64_t n, float value, float* dst) override;
  absl::Status RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                          const float* gamma, float* dst, float* rstd) override;
  absl::Status RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd,
                          const float* gamma, const float* diff_dst, float* diff_src,
                          float* diff_gamma) override;
  absl::Status DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate,
                           float* mask) override;
  absl::Status Gather(int64_t n, int64_t rows, int64_t cols, const float* table, const int32_t* ids,
                      float* dst) override;
  absl::Status ScatterAdd(int64_t n, int64_t rows, int64_t cols, const int32_t* ids,
                          const float* src, float* table) override;
  absl::Status AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding, float value,
                             float* scores) override;
  // The cross-entropy over the backend's own log-softmax (SoftmaxFwd); the label and finiteness
  // checks and the squared error are the reference loops.
  absl::StatusOr<CrossEntropyResult> SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                         const float* logits,
                                                         const int32_t* targets,
                                                         const uint8_t* padding,
                                                         float* grad) override;
  absl::StatusOr<double> SquaredError(int64_t n, const float* y, const float* t,
                                      float* grad) override;
  absl::Status CheckLabels(int64_t n, int64_t classes, const int32_t* labels, bool has_ignore,
                           int32_t ignore_index) override;
  absl::Status CheckFinite(int64_t n, const float* x) override;
  absl::Status EqualTo(int64_t n, const int32_t* x, int64_t value, uint8_t* out) override;
  // row_ops' per-ISA loops; the sum of squares in fixed 64 Ki-element chunks added in order, so
  // its bits do not depend on the thread count.
  absl::StatusOr<UpdateResult> AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) override;
  absl::StatusOr<UpdateResult> SgdUpdate(const rowops::SgdArgs& a, bool dry_run) override;
  absl::StatusOr<double> SumOfSquares(
      absl::Span<const std::pair<const float*, int64_t>> arrays) override;
};

}  // namespace qtrain
