// QDotBackward: QAT (float gradients + clipped STE) and QT (numerics.md §5.3).
#include "absl/strings/str_cat.h"
#include "kernels/qdot.h"
#include "kernels/qdot_internal.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

using qdot_internal::BatchedMatmulF32;
using qdot_internal::DotDims;
using qdot_internal::GatherScales;
using qdot_internal::GetDims;

// dx = g · wᵀ, dw = xᵀ · g on float operands, batched.
absl::Status FloatGradients(Backend& backend, const DotDims& d, const float* g_for_dx,
                            const float* w, const float* x, const float* g_for_dw,
                            QDotGradients& out) {
  if (!out.dx.empty()) {  // empty: the caller needs no dx (QDotConfig::skip_dx)
    MatmulDesc dx_desc{d.m, d.n, d.k};
    dx_desc.trans_b = true;  // w (K,N) read as (N,K)
    QTRAIN_RETURN_IF_ERROR(BatchedMatmulF32(backend, d, dx_desc, g_for_dx, d.m * d.n, w, d.k * d.n,
                                            out.dx.data<float>(), d.m * d.k));
  }
  MatmulDesc dw_desc{d.k, d.m, d.n};
  dw_desc.trans_a = true;  // x (M,K) read as (K,M)
  return BatchedMatmulF32(backend, d, dw_desc, x, d.m * d.k, g_for_dw, d.m * d.n,
                          out.dw.data<float>(), d.k * d.n);
}

// The rounding noise tensor of §5.3 for g's shape, or an empty tensor.
Tensor MakeNoise(const Shape& g_shape, const QDotConfig& c, const CounterRng* rng,
                 uint64_t counter) {
  if (c.stochastic_rounding == StochasticRounding::kNone) return Tensor();
  Shape s = g_shape;
  const int r = static_cast<int>(s.size());
  if (!c.noise_varies_rows) {
    for (int a = 0; a < r - 1; ++a) s[a] = 1;
  }
  if (!c.noise_varies_cols) s[r - 1] = 1;
  Tensor noise = Tensor::Empty(DType::kF32, s);
  float* p = noise.data<float>();
  for (int64_t i = 0; i < noise.numel(); ++i) {
    p[i] = rng->Noise(c.stochastic_rounding, counter + static_cast<uint64_t>(i));
  }
  return noise;
}

// Quantizes a gradient-side tensor with the bwd qtype/method over `spec`.
absl::StatusOr<QuantizedTensor> QuantizeGrad(const Tensor& t, const ReduceSpec& spec,
                                             const QDotConfig& c, const Tensor& noise) {
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(t.shape(), spec));
  QTRAIN_ASSIGN_OR_RETURN(
      QuantParams params,
      ComputeQuantParams(Calibrate(t, layout, c.bwd_method, *c.bwd_qtype), *c.bwd_qtype));
  return Quantize(t, layout, params, *c.bwd_qtype, RoundingNoise{noise.empty() ? nullptr : &noise});
}

ReduceSpec RowSpec(int rank) { return ReduceSpec{{rank - 1}}; }
ReduceSpec ColSpec(int rank, int64_t tile) {
  ReduceSpec spec{{rank - 2}};
  if (tile > 0) {
    spec.tile_axis = rank - 2;
    spec.tile_size = tile;
  }
  return spec;
}

// QT without integer residuals (tiled / weight-only / fp8 forward): g is quantized per row
// for dx and per column for dw, then dotted with the float operands.
absl::Status QtFloatFallback(Backend& backend, const DotDims& d, const Tensor& x, const Tensor& w,
                             const Tensor& g, const Tensor& noise, const QDotConfig& c,
                             QDotGradients& out) {
  Tensor gr;
  if (!out.dx.empty()) {
    QTRAIN_ASSIGN_OR_RETURN(QuantizedTensor g_rows, QuantizeGrad(g, RowSpec(g.rank()), c, noise));
    gr = Dequantize(g_rows);
  }
  QTRAIN_ASSIGN_OR_RETURN(
      QuantizedTensor g_cols,
      QuantizeGrad(g, ColSpec(g.rank(), c.bwd_weight_grad_tile_size), c, noise));
  const Tensor gc = Dequantize(g_cols);
  return FloatGradients(backend, d, gr.empty() ? nullptr : gr.data<float>(), w.data<float>(),
                        x.data<float>(), gc.data<float>(), out);
}

// g ⊙ s (s broadcast along rows when `per_column`, along columns otherwise), per batch.
Tensor ShiftScales(const Tensor& g, const DotDims& d, const QuantizedTensor& q, bool per_column) {
  Tensor out = Tensor::Empty(DType::kF32, g.shape());
  const float* pg = g.data<float>();
  float* po = out.data<float>();
  for (int64_t b = 0; b < d.b; ++b) {
    const std::vector<float> s =
        per_column ? GatherScales(q, {0, b, 0, 0}, 3, d.n) : GatherScales(q, {0, b, 0, 0}, 2, d.m);
    const bool parallel = d.m * d.n >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < d.m; ++i) {
      const float* __restrict gr = pg + (b * d.m + i) * d.n;
      float* __restrict orow = po + (b * d.m + i) * d.n;
      if (per_column) {
        const float* __restrict sc = s.data();
#pragma omp simd
        for (int64_t j = 0; j < d.n; ++j) orow[j] = gr[j] * sc[j];
      } else {
        const float si = s[i];
#pragma omp simd
        for (int64_t j = 0; j < d.n; ++j) orow[j] = gr[j] * si;
      }
    }
  }
  return out;
}

// QT with integer residuals: scale shifting, two integer dots per batch.
absl::Status QtInteger(Backend& backend, const DotDims& d, const QuantizedTensor& xq,
                       const QuantizedTensor& wq, const Tensor& g, const Tensor& noise,
                       const QDotConfig& c, QDotGradients& out) {
  const bool need_dx = !out.dx.empty();
  const Tensor g2 = ShiftScales(g, d, xq, /*per_column=*/false);
  QuantizedTensor g1q;
  if (need_dx) {
    const Tensor g1 = ShiftScales(g, d, wq, /*per_column=*/true);
    QTRAIN_ASSIGN_OR_RETURN(g1q, QuantizeGrad(g1, RowSpec(g.rank()), c, noise));
  }
  const int64_t t = c.bwd_weight_grad_tile_size > 0 ? c.bwd_weight_grad_tile_size : d.m;
  QTRAIN_ASSIGN_OR_RETURN(
      QuantizedTensor g2q,
      QuantizeGrad(g2, ColSpec(g.rank(), c.bwd_weight_grad_tile_size), c, noise));
  // The int8 dots take symmetric gradients only; zero points go through the float path.
  const bool int_kernel = c.impl == QDotImpl::kInteger && g2q.q.dtype() == DType::kS8 &&
                          g2q.params.symmetric() &&
                          (!need_dx || (g1q.q.dtype() == DType::kS8 && g1q.params.symmetric()));
  if (!int_kernel) {
    // Same math in float: deq(g1q) · w_qᵀ and x_qᵀ · deq(g2q), then the operand scales shifted
    // back are already folded into g's scales.
    const Tensor g1d = need_dx ? Dequantize(g1q) : Tensor();
    const Tensor g2d = Dequantize(g2q);
    const Tensor wv = QValuesAsFloat(wq);
    const Tensor xv = QValuesAsFloat(xq);
    return FloatGradients(backend, d, need_dx ? g1d.data<float>() : nullptr, wv.data<float>(),
                          xv.data<float>(), g2d.data<float>(), out);
  }

  std::vector<uint8_t> x_t(d.k * t);
  const bool x_unsigned = xq.q.dtype() == DType::kU8;
  for (int64_t b = 0; b < d.b; ++b) {
    // dx (M,K) = float(g1_q (M,N) · w_qᵀ (N,K)) ⊙ s_g1 per row; w_q is read transposed.
    if (need_dx) {
      const std::vector<float> s_g1 = GatherScales(g1q, {0, b, 0, 0}, 2, d.m);
      Int8MatmulDesc dx_desc;
      dx_desc.mm = MatmulDesc{d.m, d.n, d.k};
      dx_desc.mm.trans_b = true;
      QTRAIN_RETURN_IF_ERROR(backend.MatmulInt8(dx_desc, g1q.q.data<int8_t>() + b * d.m * d.n,
                                                wq.q.data<int8_t>() + b * d.k * d.n, s_g1.data(),
                                                nullptr, out.dx.data<float>() + b * d.m * d.k));
    }

    // dw (K,N) = Σ_tiles float(x_qᵀ (K,t) · g2_q (t,N)) ⊙ s_g2 per column. Each tile of x_q's
    // rows is transposed into a dense (K,t) block: the VNNI kernel needs a dense src.
    const auto* xb = static_cast<const uint8_t*>(xq.q.raw()) + b * d.m * d.k;
    Int8MatmulDesc dw_desc;
    dw_desc.a_unsigned = x_unsigned;
    dw_desc.mm = MatmulDesc{d.k, t, d.n};
    for (int64_t j = 0; j < d.m / t; ++j) {
      qdot_internal::TransposeBytes(xb + j * t * d.k, t, d.k, x_t.data());
      const std::vector<float> s_g2 = GatherScales(g2q, {0, b, j * t, 0}, 3, d.n);
      dw_desc.mm.accumulate = j > 0;
      QTRAIN_RETURN_IF_ERROR(backend.MatmulInt8(
          dw_desc, x_t.data(), g2q.q.data<int8_t>() + b * d.m * d.n + j * t * d.n, nullptr,
          s_g2.data(), out.dw.data<float>() + b * d.k * d.n));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<QDotGradients> QDotBackward(Backend& backend, const Tensor& x, const Tensor& w,
                                           const Tensor& g, const QDotResiduals& res,
                                           const QDotConfig& c, const CounterRng* rng,
                                           uint64_t noise_counter) {
  QTRAIN_RETURN_IF_ERROR(ValidateQDot(x.shape(), w.shape(), c));
  const DotDims d = GetDims(x.shape(), w.shape());
  if (c.bwd_qtype && c.bwd_weight_grad_tile_size > 0 && d.m % c.bwd_weight_grad_tile_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bwd_weight_grad_tile_size ", c.bwd_weight_grad_tile_size,
        " does not divide this batch's token dim M=", d.m,
        " (the weight-gradient dot is tiled along M): train on batches whose token count is a "
        "multiple of it"));
  }
  const Shape g_shape = d.batched ? Shape{d.b, d.m, d.n} : Shape{d.m, d.n};
  if (g.dtype() != DType::kF32 || g.shape() != g_shape) {
    return absl::InvalidArgumentError(absl::StrCat("gradient of shape ", ShapeString(g.shape()),
                                                   " does not match the output shape ",
                                                   ShapeString(g_shape)));
  }
  if (c.stochastic_rounding != StochasticRounding::kNone && c.bwd_qtype && rng == nullptr) {
    return absl::InvalidArgumentError("stochastic rounding needs a random generator");
  }
  QDotGradients out{c.skip_dx ? Tensor() : Tensor::Empty(DType::kF32, x.shape()),
                    Tensor::Empty(DType::kF32, w.shape())};
  if (!c.bwd_qtype) {
    QTRAIN_RETURN_IF_ERROR(FloatGradients(backend, d, g.data<float>(), w.data<float>(),
                                          x.data<float>(), g.data<float>(), out));
  } else {
    const Tensor noise = MakeNoise(g_shape, c, rng, noise_counter);
    if (res.scale_shifting && res.xq && res.wq) {
      QTRAIN_RETURN_IF_ERROR(QtInteger(backend, d, *res.xq, *res.wq, g, noise, c, out));
    } else {
      QTRAIN_RETURN_IF_ERROR(QtFloatFallback(backend, d, x, w, g, noise, c, out));
    }
  }
  if (res.x_clip && res.xq && !out.dx.empty()) {
    qdot_internal::ApplyClipMask(x, res.xq->layout, *res.x_clip, out.dx);
  }
  if (res.w_clip && res.wq) qdot_internal::ApplyClipMask(w, res.wq->layout, *res.w_clip, out.dw);
  return out;
}

}  // namespace qtrain
