#include "kernels/backend/exact_int8_ops.h"

#include <algorithm>
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

namespace {

// Calls fn(tap, pixel) for each kernel tap (ky·kw + kx) of output pixel (b, y, x) that lands
// inside the image; pixel points at the input's channels there. Padded taps contribute zero.
template <typename Fn>
void ForEachTap(const ConvDesc& d, const int8_t* src, int64_t b, int64_t y, int64_t x, Fn&& fn) {
  for (int64_t ky = 0; ky < d.kh; ++ky) {
    const int64_t iy = y * d.stride_h - d.pad_top + ky * d.dilation_h;
    if (iy < 0 || iy >= d.h) continue;
    for (int64_t kx = 0; kx < d.kw; ++kx) {
      const int64_t ix = x * d.stride_w - d.pad_left + kx * d.dilation_w;
      if (ix < 0 || ix >= d.w) continue;
      fn(ky * d.kw + kx, src + ((b * d.h + iy) * d.w + ix) * d.c);
    }
  }
}

// Depthwise (one input channel per group): for every output pixel, each tap's channels multiply
// the kernel's row element-wise. A channel multiplier (o = m·c) repeats each input channel m
// times first.
void DepthwiseConv(int8gemm::Kernel kernel, const ConvDesc& d, const int8_t* src,
                   const int8_t* weights, int32_t* dst) {
  const int64_t oh = d.out_h(), ow = d.out_w(), mult = d.group_o();
#pragma omp parallel for collapse(2) schedule(static) if (d.n * oh * ow * d.o >= (1 << 16))
  for (int64_t b = 0; b < d.n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      std::vector<int8_t> spread(mult == 1 ? 0 : d.o);
      for (int64_t x = 0; x < ow; ++x) {
        int32_t* acc = dst + ((b * oh + y) * ow + x) * d.o;
        std::fill(acc, acc + d.o, 0);
        ForEachTap(d, src, b, y, x, [&](int64_t tap, const int8_t* in) {
          if (mult != 1) {
            for (int64_t o = 0; o < d.o; ++o) spread[o] = in[o / mult];
            in = spread.data();
          }
          int8gemm::MultiplyAdd(kernel, in, weights + tap * d.o, d.o, acc);
        });
      }
    }
  }
}

// One group's im2col: rows (b, y, x), columns (ky, kx, channel of group g); padding stays 0.
void Im2col(const ConvDesc& d, const int8_t* src, int64_t g, int8_t* cols) {
  const int64_t oh = d.out_h(), ow = d.out_w(), gc = d.group_c(), taps = d.kh * d.kw * gc;
  for (int64_t b = 0; b < d.n; ++b) {
    for (int64_t y = 0; y < oh; ++y) {
      for (int64_t x = 0; x < ow; ++x) {
        int8_t* row = cols + ((b * oh + y) * ow + x) * taps;
        ForEachTap(d, src, b, y, x, [&](int64_t tap, const int8_t* in) {
          std::memcpy(row + tap * gc, in + g * gc, gc);
        });
      }
    }
  }
}

}  // namespace

absl::Status ExactInt8Conv(int8gemm::Kernel kernel, const ConvDesc& d, const int8_t* src,
                           const int8_t* weights, int32_t* dst) {
  QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
  if (d.groups > 1 && d.group_c() == 1) {
    DepthwiseConv(kernel, d, src, weights, dst);
    return absl::OkStatus();
  }
  const int64_t oh = d.out_h(), ow = d.out_w(), taps = d.kh * d.kw * d.group_c();
  const bool pointwise = d.kh == 1 && d.kw == 1 && d.stride_h == 1 && d.stride_w == 1 &&
                         d.pad_top == 0 && d.pad_left == 0 && d.pad_bottom == 0 &&
                         d.pad_right == 0 && d.groups == 1;
  std::vector<int8_t> cols(pointwise ? 0 : d.n * oh * ow * taps);
  for (int64_t g = 0; g < d.groups; ++g) {
    const int8_t* a = src;  // a 1x1 stride-1 convolution is already a matrix
    if (!pointwise) {
      std::fill(cols.begin(), cols.end(), 0);
      Im2col(d, src, g, cols.data());
      a = cols.data();
    }
    int8gemm::Args args;
    args.m = d.n * oh * ow;
    args.n = d.group_o();
    args.k = taps;
    args.a = a;
    args.lda = taps;
    args.b = weights + g * d.group_o();
    args.ldb = d.o;
    args.c_s32 = dst + g * d.group_o();
    args.ldc = d.o;
    int8gemm::Gemm(kernel, args);
  }
  return absl::OkStatus();
}

}  // namespace qtrain
