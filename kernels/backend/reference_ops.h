// Plain-loop elementwise, normalization, softmax and pooling ops behind the reference backend;
// also used where oneDNN has no primitive. Arguments as in backend.h; descriptors are validated
// by the caller.
#pragma once

#include <cstdint>

#include "kernels/backend/backend.h"

namespace qtrain::reference {

void EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst);
void EltwiseBwd(EltwiseKind kind, int64_t n, const float* src, const float* diff_dst,
                float* diff_src);
void LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src, const float* gamma,
                  const float* beta, float* dst, float* mean, float* var);
void LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src, const float* mean,
                  const float* var, const float* gamma, const float* diff_dst, float* diff_src,
                  float* diff_gamma, float* diff_beta);
void BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats, const float* src,
                  const float* gamma, const float* beta, float* mean, float* var, float* dst);
void BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src, const float* mean,
                  const float* var, const float* gamma, const float* diff_dst, float* diff_src,
                  float* diff_gamma, float* diff_beta);
void SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src, float* dst);
void SoftmaxBwd(int64_t rows, int64_t cols, const float* dst, const float* diff_dst,
                float* diff_src);
void Binary(BinaryKind kind, int64_t n, const float* a, const float* b, float* dst);
void Transpose(int64_t rows, int64_t cols, const float* src, float* dst);
void Rotary(const RotaryDesc& d, const float* cos, const float* sin, const float* src, float* dst);
void PoolFwd(const PoolDesc& d, const float* src, float* dst);
void PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst, float* diff_src);

// The data-movement and small float ops (reference_data_ops.cc).
void Copy(const CopyDesc& d, const float* src, float* dst);
void ReduceRows(const RowsDesc& d, const float* src, float* dst);
void BroadcastRows(const RowsDesc& d, const float* src, float* dst);
void Axpby(int64_t n, float alpha, const float* x, float beta, float* y);
void Fill(int64_t n, float value, float* dst);
void RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src, const float* gamma,
                float* dst, float* rstd);
void RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd, const float* gamma,
                const float* diff_dst, float* diff_src, float* diff_gamma);
void DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate, float* mask);
void Gather(int64_t n, int64_t cols, const float* table, const int32_t* ids, float* dst);
void ScatterAdd(int64_t n, int64_t cols, const int32_t* ids, const float* src, float* table);
void AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding, float value, float* scores);
UpdateResult AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run);
// Row i's label under d (shift, padding, ignore), or -1 when the row is not scored.
int64_t RowLabel(const CrossEntropyDesc& d, const int32_t* targets, const uint8_t* padding,
                 int64_t i);
// The cross-entropy from log-probabilities logp (rows, classes).
CrossEntropyResult CrossEntropyFromLogp(const CrossEntropyDesc& d, const float* logp,
                                        const int32_t* targets, const uint8_t* padding,
                                        float* grad);
double SquaredError(int64_t n, const float* y, const float* t, float* grad);
absl::Status CheckLabels(int64_t n, int64_t classes, const int32_t* labels, bool has_ignore,
                         int32_t ignore_index);
absl::Status CheckFinite(int64_t n, const float* x);
UpdateResult SgdUpdate(const rowops::SgdArgs& a, bool dry_run);

}  // namespace qtrain::reference
