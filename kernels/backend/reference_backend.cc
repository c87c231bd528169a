// The reference backend: straightforward loops in the obvious order, float accumulation for
// float ops and int32 for integer ones.
#include <algorithm>

#include "kernels/backend/host_backend.h"
#include "kernels/backend/reference_ops.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

class ReferenceBackend final : public HostBackend {
 public:
  const char* name() const override { return "reference"; }

  absl::Status MatmulF32(const MatmulDesc& d, const float* a, const float* b, float* c) override {
    QTRAIN_RETURN_IF_ERROR(ValidateMatmulDesc(d));
    const int64_t lda = Lda(d), ldb = Ldb(d), ldc = Ldc(d);
    for (int64_t i = 0; i < d.m; ++i) {
      for (int64_t j = 0; j < d.n; ++j) {
        float acc = 0.0f;
        for (int64_t p = 0; p < d.k; ++p) {
          const float av = d.trans_a ? a[p * lda + i] : a[i * lda + p];
          const float bv = d.trans_b ? b[j * ldb + p] : b[p * ldb + j];
          acc += av * bv;
        }
        c[i * ldc + j] = d.accumulate ? c[i * ldc + j] + acc : acc;
      }
    }
    return absl::OkStatus();
  }

  absl::Status MatmulInt8(const Int8MatmulDesc& d, const void* a, const int8_t* b,
                          const float* row_scale, const float* col_scale, float* c) override {
    const MatmulDesc& m = d.mm;
    QTRAIN_RETURN_IF_ERROR(ValidateInt8MatmulDesc(d));
    const int64_t lda = Lda(m), ldb = Ldb(m), ldc = Ldc(m);
    const auto* a_s8 = static_cast<const int8_t*>(a);
    const auto* a_u8 = static_cast<const uint8_t*>(a);
    for (int64_t i = 0; i < m.m; ++i) {
      for (int64_t j = 0; j < m.n; ++j) {
        int32_t acc = 0;
        for (int64_t p = 0; p < m.k; ++p) {
          const int32_t av = d.a_unsigned ? a_u8[i * lda + p] : a_s8[i * lda + p];
          acc += av * (m.trans_b ? b[j * ldb + p] : b[p * ldb + j]);
        }
        float v = static_cast<float>(acc);
        if (row_scale) {
          v *= row_scale[i];
        }
        if (col_scale) {
          v *= col_scale[j];
        }
        c[i * ldc + j] = m.accumulate ? c[i * ldc + j] + v : v;
      }
    }
    return absl::OkStatus();
  }

  absl::Status ConvFwdF32(const ConvDesc& d, const float* src, const float* weights,
                          float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    ForEachOutput(
        d,
        [&](int64_t dst_index, int64_t src_index, int64_t w_index) {
          dst[dst_index] += src[src_index] * weights[w_index];
        },
        dst);
    return absl::OkStatus();
  }

  absl::Status ConvFwdInt8(const ConvDesc& d, const int8_t* src, const int8_t* weights,
                           int32_t* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    ForEachOutput(
        d,
        [&](int64_t dst_index, int64_t src_index, int64_t w_index) {
          dst[dst_index] += static_cast<int32_t>(src[src_index]) * weights[w_index];
        },
        dst);
    return absl::OkStatus();
  }

  absl::Status ConvBwdData(const ConvDesc& d, const float* diff_dst, const float* weights,
                           float* diff_src) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    std::fill(diff_src, diff_src + d.n * d.h * d.w * d.c, 0.0f);
    ForEachTap(d, [&](int64_t dst_index, int64_t src_index, int64_t w_index) {
      diff_src[src_index] += diff_dst[dst_index] * weights[w_index];
    });
    return absl::OkStatus();
  }

  absl::Status ConvBwdWeights(const ConvDesc& d, const float* src, const float* diff_dst,
                              float* diff_weights) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    std::fill(diff_weights, diff_weights + d.weights_numel(), 0.0f);
    ForEachTap(d, [&](int64_t dst_index, int64_t src_index, int64_t w_index) {
      diff_weights[w_index] += src[src_index] * diff_dst[dst_index];
    });
    return absl::OkStatus();
  }

  absl::Status EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst) override {
    reference::EltwiseFwd(kind, n, src, dst);
    return absl::OkStatus();
  }
  absl::Status EltwiseBwd(EltwiseKind kind, int64_t n, const float* src, const float* diff_dst,
                          float* diff_src) override {
    reference::EltwiseBwd(kind, n, src, diff_dst, diff_src);
    return absl::OkStatus();
  }
  absl::Status BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats,
                            const float* src, const float* gamma, const float* beta, float* mean,
                            float* var, float* dst) override {
    reference::BatchNormFwd(rows, channels, eps, batch_stats, src, gamma, beta, mean, var, dst);
    return absl::OkStatus();
  }
  absl::Status BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    reference::BatchNormBwd(rows, channels, eps, src, mean, var, gamma, diff_dst, diff_src,
                            diff_gamma, diff_beta);
    return absl::OkStatus();
  }

  absl::Status LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* gamma, const float* beta, float* dst, float* mean,
                            float* var) override {
    reference::LayerNormFwd(rows, cols, eps, src, gamma, beta, dst, mean, var);
    return absl::OkStatus();
  }
  absl::Status LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    reference::LayerNormBwd(rows, cols, eps, src, mean, var, gamma, diff_dst, diff_src, diff_gamma,
                            diff_beta);
    return absl::OkStatus();
  }
  absl::Status SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src,
                          float* dst) override {
    reference::SoftmaxFwd(rows, cols, log, src, dst);
    return absl::OkStatus();
  }
  absl::Status SoftmaxBwd(int64_t rows, int64_t cols, const float* dst, const float* diff_dst,
                          float* diff_src) override {
    reference::SoftmaxBwd(rows, cols, dst, diff_dst, diff_src);
    return absl::OkStatus();
  }
  absl::Status Binary(BinaryKind kind, int64_t n, const float* a, const float* b,
                      float* dst) override {
    reference::Binary(kind, n, a, b, dst);
    return absl::OkStatus();
  }
  absl::Status Transpose(int64_t rows, int64_t cols, const float* src, float* dst) override {
    reference::Transpose(rows, cols, src, dst);
    return absl::OkStatus();
  }
  absl::Status Rotary(const RotaryDesc& d, const float* cos, const float* sin, const float* src,
                      float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateRotaryDesc(d));
    reference::Rotary(d, cos, sin, src, dst);
    return absl::OkStatus();
  }
  absl::Status PoolFwd(const PoolDesc& d, const float* src, float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
    reference::PoolFwd(d, src, dst);
    return absl::OkStatus();
  }
  absl::Status PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst,
                       float* diff_src) override {
    QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
    reference::PoolBwd(d, src, diff_dst, diff_src);
    return absl::OkStatus();
  }

  absl::StatusOr<UpdateResult> AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) override {
    return reference::AdamWUpdate(a, dry_run);
  }
  absl::StatusOr<UpdateResult> SgdUpdate(const rowops::SgdArgs& a, bool dry_run) override {
    return reference::SgdUpdate(a, dry_run);
  }
  absl::StatusOr<double> SumOfSquares(
      absl::Span<const std::pair<const float*, int64_t>> arrays) override {
    double sum = 0;
    for (const auto& [x, n] : arrays) {
      for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
    }
    return sum;
  }
  // The rows and elementwise ops as plain loops (HostBackend's vectorised ones are checked
  // against these); gathers and masks are HostBackend's, already the reference loops.
  absl::Status Copy(const CopyDesc& d, const float* src, float* dst) override {
    int64_t src_end = 0, dst_end = 0;
    QTRAIN_RETURN_IF_ERROR(ValidateCopyDesc(d, &src_end, &dst_end));
    reference::Copy(d, src, dst);
    return absl::OkStatus();
  }
  absl::Status ReduceRows(const RowsDesc& d, const float* src, float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateRowsDesc(d));
    reference::ReduceRows(d, src, dst);
    return absl::OkStatus();
  }
  absl::Status BroadcastRows(const RowsDesc& d, const float* src, float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateRowsDesc(d));
    reference::BroadcastRows(d, src, dst);
    return absl::OkStatus();
  }
  absl::Status Axpby(int64_t n, float alpha, const float* x, float beta, float* y) override {
    reference::Axpby(n, alpha, x, beta, y);
    return absl::OkStatus();
  }
  absl::Status RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                          const float* gamma, float* dst, float* rstd) override {
    reference::RmsNormFwd(rows, cols, eps, src, gamma, dst, rstd);
    return absl::OkStatus();
  }
  absl::Status RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd,
                          const float* gamma, const float* diff_dst, float* diff_src,
                          float* diff_gamma) override {
    reference::RmsNormBwd(rows, cols, src, rstd, gamma, diff_dst, diff_src, diff_gamma);
    return absl::OkStatus();
  }

 private:
  // Zeroes dst, then calls fn(dst_index, src_index, w_index) as ForEachTap.
  template <typename Fn, typename T>
  static void ForEachOutput(const ConvDesc& d, Fn&& fn, T* dst) {
    std::fill(dst, dst + d.n * d.out_h() * d.out_w() * d.o, T{0});
    ForEachTap(d, fn);
  }

  // Calls fn(dst_index, src_index, w_index) for every in-bounds (output, tap) pair, where w_index
  // indexes the HWIO weights (kh, kw, c / groups, o).
  template <typename Fn>
  static void ForEachTap(const ConvDesc& d, Fn&& fn) {
    const int64_t oh = d.out_h(), ow = d.out_w(), gc = d.group_c(), go = d.group_o();
    for (int64_t b = 0; b < d.n; ++b) {
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t x = 0; x < ow; ++x) {
          for (int64_t ky = 0; ky < d.kh; ++ky) {
            const int64_t iy = y * d.stride_h - d.pad_top + ky * d.dilation_h;
            if (iy < 0 || iy >= d.h) {
              continue;
            }
            for (int64_t kx = 0; kx < d.kw; ++kx) {
              const int64_t ix = x * d.stride_w - d.pad_left + kx * d.dilation_w;
              if (ix < 0 || ix >= d.w) {
                continue;
              }
              for (int64_t g = 0; g < d.groups; ++g) {
                for (int64_t ci = 0; ci < gc; ++ci) {
                  const int64_t src_index = ((b * d.h + iy) * d.w + ix) * d.c + g * gc + ci;
                  const int64_t row = ((ky * d.kw + kx) * gc + ci) * d.o;
                  for (int64_t o = g * go; o < (g + 1) * go; ++o) {
                    fn(((b * oh + y) * ow + x) * d.o + o, src_index, row + o);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
};

}  // namespace

std::unique_ptr<Backend> MakeReferenceBackend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace qtrain
