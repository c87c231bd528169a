#include "kernels/backend/exact_int8_ops.h"

#include <cstring>
#include <vector>

#include "kernels/status_macros.h"

namespace qtrain {

absl::Status ExactInt8Matmul(int8gemm::Kernel kernel, const Int8MatmulDesc& d, const void* a,
                             const int8_t* b, const float* row_scale, const float* col_scale,
                             float* c) {
  QTRAIN_RETURN_IF_ERROR(ValidateInt8MatmulDesc(d));
  int8gemm::Args g;
  g.m = d.mm.m;
  g.n = d.mm.n;
  g.k = d.mm.k;
  g.a = a;
  g.lda = Lda(d.mm);
  g.a_unsigned = d.a_unsigned;
  g.b = b;
  g.ldb = Ldb(d.mm);
  g.trans_b = d.mm.trans_b;
  g.row_scale = row_scale;
  g.col_scale = col_scale;
  g.c_f32 = c;
  g.ldc = Ldc(d.mm);
  g.accumulate = d.mm.accumulate;
  int8gemm::Gemm(kernel, g);
  return absl::OkStatus();
}

absl::Status ExactInt8Conv(int8gemm::Kernel kernel, const ConvDesc& d, const int8_t* src,
                           const int8_t* weights, int32_t* dst) {
  QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
  const int64_t oh = d.out_h(), ow = d.out_w(), taps = d.kh * d.kw * d.c;
  const bool pointwise = d.kh == 1 && d.kw == 1 && d.stride_h == 1 && d.stride_w == 1 &&
                         d.pad_top == 0 && d.pad_left == 0 && d.pad_bottom == 0 && d.pad_right == 0;
  std::vector<int8_t> cols;
  const int8_t* a = src;  // a 1x1 stride-1 convolution is already a matrix
  if (!pointwise) {
    cols.assign(d.n * oh * ow * taps, 0);
    for (int64_t b = 0; b < d.n; ++b) {
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t x = 0; x < ow; ++x) {
          int8_t* row = cols.data() + ((b * oh + y) * ow + x) * taps;
          for (int64_t ky = 0; ky < d.kh; ++ky) {
            const int64_t iy = y * d.stride_h - d.pad_top + ky;
            if (iy < 0 || iy >= d.h) continue;
            for (int64_t kx = 0; kx < d.kw; ++kx) {
              const int64_t ix = x * d.stride_w - d.pad_left + kx;
              if (ix < 0 || ix >= d.w) continue;
              std::memcpy(row + (ky * d.kw + kx) * d.c, src + ((b * d.h + iy) * d.w + ix) * d.c,
                          d.c);
            }
          }
        }
      }
    }
    a = cols.data();
  }
  int8gemm::Args g;
  g.m = d.n * oh * ow;
  g.n = d.o;
  g.k = taps;
  g.a = a;
  g.lda = taps;
  g.b = weights;
  g.ldb = d.o;
  g.c_s32 = dst;
  g.ldc = d.o;
  int8gemm::Gemm(kernel, g);
  return absl::OkStatus();
}

}  // namespace qtrain
