#include "kernels/qdot.h"

#include <emmintrin.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/qdot_internal.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace qdot_internal {

DotDims GetDims(const Shape& x, const Shape& w) {
  DotDims d;
  d.batched = x.size() == 3;
  if (d.batched) d.b = x[0];
  d.m = x[x.size() - 2];
  d.k = x[x.size() - 1];
  d.n = w[w.size() - 1];
  return d;
}

std::vector<float> GatherScales(const QuantizedTensor& q, std::array<int64_t, 4> base, int axis,
                                int64_t count) {
  std::vector<float> out(count);
  const float* s = q.params.scale.data<float>();
  for (int64_t i = 0; i < count; ++i) {
    std::array<int64_t, 4> idx = base;
    idx[axis] += i;
    out[i] = s[q.layout.ScaleIndex(idx[0], idx[1], idx[2], idx[3])];
  }
  return out;
}

absl::Status BatchedMatmulF32(Backend& backend, const DotDims& dims, const MatmulDesc& d,
                              const float* a, int64_t a_batch_stride, const float* b,
                              int64_t b_batch_stride, float* c, int64_t c_batch_stride) {
  for (int64_t i = 0; i < dims.b; ++i) {
    QTRAIN_RETURN_IF_ERROR(backend.MatmulF32(d, a + i * a_batch_stride, b + i * b_batch_stride,
                                             c + i * c_batch_stride));
  }
  return absl::OkStatus();
}

void ApplyClipMask(const Tensor& orig, const ScaleLayout& l, const Calibration& clip,
                   Tensor& grad) {
  const float* lo = clip.symmetric ? clip.absmax.data<float>() : clip.lo.data<float>();
  const float* hi = clip.symmetric ? clip.absmax.data<float>() : clip.hi.data<float>();
  const float sign = clip.symmetric ? -1.0f : 1.0f;
  const float* x = orig.data<float>();
  float* g = grad.data<float>();
  int64_t offset = 0;
  for (int64_t i0 = 0; i0 < l.dims[0]; ++i0) {
    for (int64_t i1 = 0; i1 < l.dims[1]; ++i1) {
      for (int64_t i2 = 0; i2 < l.dims[2]; ++i2) {
        for (int64_t i3 = 0; i3 < l.dims[3]; ++i3, ++offset) {
          const int64_t s = l.ScaleIndex(i0, i1, i2, i3);
          const bool inside = x[offset] >= sign * lo[s] && x[offset] <= hi[s];
          if (!inside) g[offset] = 0.0f;
        }
      }
    }
  }
}

// The layout implied by a static (SRQ) calibration's shape: dims equal to the operand's are
// channelwise, 1s are reduced, and the contracting axis may be tiled.
absl::StatusOr<ScaleLayout> LayoutFromCalibration(const Shape& x, const Shape& cal, int tile_axis) {
  if (cal.size() != x.size()) {
    return absl::InvalidArgumentError(absl::StrCat("static calibration of shape ", ShapeString(cal),
                                                   " does not match operand ", ShapeString(x)));
  }
  ReduceSpec spec;
  for (int a = 0; a < static_cast<int>(x.size()); ++a) {
    if (cal[a] == x[a] && x[a] != 1) continue;
    if (cal[a] == 1) {
      spec.axes.push_back(a);
    } else if (a == tile_axis && x[a] % cal[a] == 0) {
      spec.axes.push_back(a);
      spec.tile_axis = a;
      spec.tile_size = x[a] / cal[a];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("static calibration of shape ", ShapeString(cal),
                       " does not broadcast to operand ", ShapeString(x)));
    }
  }
  return MakeScaleLayout(x, spec);
}

absl::StatusOr<QuantizedOperand> QuantizeOperand(const Tensor& t, const QOperand& op,
                                                 const ReduceSpec& spec, int tile_axis) {
  QuantizedOperand out;
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(t.shape(), spec));
  if (op.static_calibration == nullptr) {
    Calibration cal;
    QTRAIN_ASSIGN_OR_RETURN(out.q, CalibrateAndQuantize(t, layout, *op.qtype, op.method, &cal));
    if (op.method.kind != CalibrationKind::kFixed) out.dynamic = cal;
    if (op.method.Clips()) out.clip = std::move(cal);
    return out;
  }
  // SRQ: the static calibration decides the layout; the dynamic one still feeds the statistics.
  if (op.method.kind != CalibrationKind::kFixed)
    out.dynamic = Calibrate(t, layout, op.method, *op.qtype);
  const Calibration& cal = *op.static_calibration;
  const Tensor& any = cal.symmetric ? cal.absmax : cal.lo;
  QTRAIN_ASSIGN_OR_RETURN(layout, LayoutFromCalibration(t.shape(), any.shape(), tile_axis));
  QTRAIN_ASSIGN_OR_RETURN(QuantParams params, ComputeQuantParams(cal, *op.qtype));
  QTRAIN_ASSIGN_OR_RETURN(out.q, Quantize(t, layout, params, *op.qtype));
  if (op.method.Clips()) out.clip = cal;
  return out;
}

namespace {

// Transposes one 16x16 byte block (SSE2, baseline x86-64) through four unpack stages.
void Transpose16x16(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride) {
  __m128i x[16], t[16];
  for (int i = 0; i < 16; ++i) {
    x[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride));
  }
  for (int i = 0; i < 8; ++i) {  // byte pairs of rows (2i, 2i+1)
    t[i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
    t[i + 8] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // 4-byte column pieces of rows 4i..4i+3
    for (int i = 0; i < 4; ++i) {
      x[h * 8 + i] = _mm_unpacklo_epi16(t[h * 8 + 2 * i], t[h * 8 + 2 * i + 1]);
      x[h * 8 + 4 + i] = _mm_unpackhi_epi16(t[h * 8 + 2 * i], t[h * 8 + 2 * i + 1]);
    }
  }
  for (int g = 0; g < 4; ++g) {  // group g holds columns 4g..4g+3
    t[g * 4 + 0] = _mm_unpacklo_epi32(x[g * 4 + 0], x[g * 4 + 1]);
    t[g * 4 + 1] = _mm_unpackhi_epi32(x[g * 4 + 0], x[g * 4 + 1]);
    t[g * 4 + 2] = _mm_unpacklo_epi32(x[g * 4 + 2], x[g * 4 + 3]);
    t[g * 4 + 3] = _mm_unpackhi_epi32(x[g * 4 + 2], x[g * 4 + 3]);
  }
  for (int g = 0; g < 4; ++g) {
    const __m128i c[4] = {_mm_unpacklo_epi64(t[g * 4 + 0], t[g * 4 + 2]),
                          _mm_unpackhi_epi64(t[g * 4 + 0], t[g * 4 + 2]),
                          _mm_unpacklo_epi64(t[g * 4 + 1], t[g * 4 + 3]),
                          _mm_unpackhi_epi64(t[g * 4 + 1], t[g * 4 + 3])};
    for (int k = 0; k < 4; ++k) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (g * 4 + k) * dst_stride), c[k]);
    }
  }
}

}  // namespace

void TransposeBytes(const void* src, int64_t rows, int64_t cols, void* dst) {
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  constexpr int64_t kBlock = 16;
  const int64_t full_rows = rows / kBlock * kBlock, full_cols = cols / kBlock * kBlock;
  const bool parallel = rows * cols >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r0 = 0; r0 < full_rows; r0 += kBlock) {
    for (int64_t c0 = 0; c0 < full_cols; c0 += kBlock) {
      Transpose16x16(s + r0 * cols + c0, cols, d + c0 * rows + r0, rows);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {  // ragged right and bottom edges
    const int64_t c_begin = r < full_rows ? full_cols : 0;
    for (int64_t c = c_begin; c < cols; ++c) d[c * rows + r] = s[r * cols + c];
  }
}

}  // namespace qdot_internal

namespace {

using qdot_internal::DotDims;
using qdot_internal::GatherScales;
using qdot_internal::GetDims;
using qdot_internal::QuantizedOperand;
using qdot_internal::QuantizeOperand;

// The minimum tile length for which the forward runs one integer dot per tile (§5.1).
constexpr int64_t kMinIntegerTile = 128;

// True when the contract lets both operands run on the int8 kernels (whatever c.impl says).
bool IntegerEligible(const QDotConfig& c, const QuantizedOperand* xq, const QuantizedOperand* wq) {
  if (xq == nullptr || wq == nullptr) return false;
  if (c.tile_size > 0 && c.tile_size < kMinIntegerTile) return false;
  if (c.tile_size > 0 && c.untiled_lhs) return false;  // the tiled integer dot scales both
  if (!xq->q.params.symmetric() || !wq->q.params.symmetric()) return false;
  return RunsOnInt8Kernel(xq->q.qtype) && RunsOnInt8Kernel(wq->q.qtype) &&
         wq->q.qtype != QType::kUint8;
}

absl::Status IntegerForward(Backend& backend, const DotDims& d, const QuantizedTensor& xq,
                            const QuantizedTensor& wq, int64_t tile, Tensor& y) {
  const int64_t t = tile > 0 ? tile : d.k;
  const int64_t tiles = d.k / t;
  Int8MatmulDesc desc;
  desc.a_unsigned = xq.q.dtype() == DType::kU8;
  desc.mm = MatmulDesc{d.m, t, d.n, t, d.n, d.n, false, false, false};
  const auto* xb = static_cast<const uint8_t*>(xq.q.raw());
  const int8_t* wb = wq.q.data<int8_t>();
  float* yb = y.data<float>();
  // oneDNN's VNNI kernel needs a dense src: with tiles, copy each (M, t) column block out.
  std::vector<uint8_t> x_tile(tiles > 1 ? d.m * t : 0);
  for (int64_t b = 0; b < d.b; ++b) {
    for (int64_t j = 0; j < tiles; ++j) {
      const uint8_t* a = xb + b * d.m * d.k;
      if (tiles > 1) {
        for (int64_t i = 0; i < d.m; ++i) {
          std::memcpy(x_tile.data() + i * t, a + i * d.k + j * t, t);
        }
        a = x_tile.data();
      }
      const std::vector<float> sx = GatherScales(xq, {0, b, 0, j * t}, 2, d.m);
      const std::vector<float> sw = GatherScales(wq, {0, b, j * t, 0}, 3, d.n);
      desc.mm.accumulate = j > 0;
      QTRAIN_RETURN_IF_ERROR(backend.MatmulInt8(desc, a, wb + (b * d.k * d.n + j * t * d.n),
                                                sx.data(), sw.data(), yb + b * d.m * d.n));
    }
  }
  return absl::OkStatus();
}

}  // namespace

ReduceSpec OperandReduceSpec(int rank, int contracting_axis, const QDotConfig& c, bool lhs) {
  ReduceSpec spec;
  if (c.disable_channelwise) {
    for (int a = 0; a < rank; ++a) spec.axes.push_back(a);
  } else {
    spec.axes.push_back(contracting_axis);
  }
  if (c.tile_size > 0 && !(lhs && c.untiled_lhs)) {
    spec.tile_axis = contracting_axis;
    spec.tile_size = c.tile_size;
  }
  return spec;
}

absl::Status ValidateQDot(const Shape& x, const Shape& w, const QDotConfig& c) {
  const bool ranks_ok = (x.size() == 2 && w.size() == 2) || (x.size() == 3 && w.size() == 3);
  if (!ranks_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantized dot needs x (M,K)·w (K,N) or x (B,M,K)·w (B,K,N); got x ",
                     ShapeString(x), " and w ", ShapeString(w)));
  }
  for (int64_t v : x) {
    if (v <= 0) return absl::InvalidArgumentError("x " + ShapeString(x) + " has an empty dim");
  }
  for (int64_t v : w) {
    if (v <= 0) return absl::InvalidArgumentError("w " + ShapeString(w) + " has an empty dim");
  }
  const DotDims d = GetDims(x, w);
  if (w[w.size() - 2] != d.k || (d.batched && w[0] != d.b)) {
    return absl::InvalidArgumentError(
        absl::StrCat("contracting/batch dims differ: x ", ShapeString(x), ", w ", ShapeString(w)));
  }
  if (c.tile_size < 0 || (c.tile_size > 0 && d.k % c.tile_size != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tile_size ", c.tile_size, " does not divide the contracting dim K=", d.k));
  }
  // Whether it divides M matters only to the QT backward (QDotBackward checks it there): a
  // forward, Forward or Evaluate of any batch size must not fail on it.
  if (c.bwd_weight_grad_tile_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bwd_weight_grad_tile_size ", c.bwd_weight_grad_tile_size, " is negative"));
  }
  if (c.lhs.qtype) QTRAIN_RETURN_IF_ERROR(ValidateQTypeMethod(*c.lhs.qtype, c.lhs.method));
  if (c.rhs.qtype) QTRAIN_RETURN_IF_ERROR(ValidateQTypeMethod(*c.rhs.qtype, c.rhs.method));
  if (c.bwd_qtype) {
    QTRAIN_RETURN_IF_ERROR(ValidateQTypeMethod(*c.bwd_qtype, c.bwd_method));
    if (c.stochastic_rounding != StochasticRounding::kNone &&
        GetQTypeInfo(*c.bwd_qtype).is_float8) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bwd_stochastic_rounding needs an integer bwd_qtype, got ", QTypeName(*c.bwd_qtype)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<QDotForwardResult> QDotForward(Backend& backend, const Tensor& x, const Tensor& w,
                                              const QDotConfig& c) {
  QTRAIN_RETURN_IF_ERROR(ValidateQDot(x.shape(), w.shape(), c));
  if (x.dtype() != DType::kF32 || w.dtype() != DType::kF32) {
    return absl::InvalidArgumentError("quantized dot takes f32 operands");
  }
  const DotDims d = GetDims(x.shape(), w.shape());
  std::optional<QuantizedOperand> xq, wq;
  if (c.lhs.qtype) {
    QTRAIN_ASSIGN_OR_RETURN(
        xq, QuantizeOperand(x, c.lhs, OperandReduceSpec(x.rank(), x.rank() - 1, c, /*lhs=*/true),
                            x.rank() - 1));
  }
  if (c.rhs.qtype) {
    QTRAIN_ASSIGN_OR_RETURN(
        wq, QuantizeOperand(w, c.rhs, OperandReduceSpec(w.rank(), w.rank() - 2, c), w.rank() - 2));
  }

  QDotForwardResult out;
  Shape y_shape = d.batched ? Shape{d.b, d.m, d.n} : Shape{d.m, d.n};
  out.y = Tensor::Empty(DType::kF32, y_shape);
  const bool eligible = IntegerEligible(c, xq ? &*xq : nullptr, wq ? &*wq : nullptr);
  if (eligible && c.impl == QDotImpl::kInteger) {
    QTRAIN_RETURN_IF_ERROR(IntegerForward(backend, d, xq->q, wq->q, c.tile_size, out.y));
  } else {
    const Tensor xd = xq ? Dequantize(xq->q) : Tensor();
    const Tensor wd = wq ? Dequantize(wq->q) : Tensor();
    const float* a = xq ? xd.data<float>() : x.data<float>();
    const float* b = wq ? wd.data<float>() : w.data<float>();
    QTRAIN_RETURN_IF_ERROR(qdot_internal::BatchedMatmulF32(backend, d, MatmulDesc{d.m, d.k, d.n}, a,
                                                           d.m * d.k, b, d.k * d.n,
                                                           out.y.data<float>(), d.m * d.n));
  }
  out.residuals.scale_shifting = eligible && c.tile_size == 0;
  if (xq) {
    out.residuals.x_clip = std::move(xq->clip);
    out.x_dynamic_calibration = std::move(xq->dynamic);
    out.residuals.xq = std::move(xq->q);
  }
  if (wq) {
    out.residuals.w_clip = std::move(wq->clip);
    out.w_dynamic_calibration = std::move(wq->dynamic);
    out.residuals.wq = std::move(wq->q);
  }
  return out;
}

}  // namespace qtrain
