#include "kernels/qconv.h"

#include "absl/strings/str_cat.h"
#include "kernels/qdot_internal.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

ReduceSpec ConvSpec(std::vector<int> axes, bool per_tensor) {
  ReduceSpec spec;
  spec.axes = per_tensor ? std::vector<int>{0, 1, 2, 3} : std::move(axes);
  return spec;
}

bool IntegerEligible(const QuantizedTensor& xq, const QuantizedTensor& wq) {
  return xq.params.symmetric() && wq.params.symmetric() && xq.q.dtype() == DType::kS8 &&
         wq.q.dtype() == DType::kS8;
}

}  // namespace

absl::StatusOr<ConvDesc> MakeConvDesc(const Shape& x, const Shape& w, const QConvConfig& c) {
  if (x.size() != 4 || w.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("convolution needs x (N,H,W,C) and w (KH,KW,C,O); got x ", ShapeString(x),
                     " and w ", ShapeString(w)));
  }
  if (c.groups <= 0 || x[3] != w[2] * c.groups) {
    return absl::InvalidArgumentError(absl::StrCat("convolution input channels differ: x ",
                                                   ShapeString(x), ", w ", ShapeString(w), " in ",
                                                   c.groups, " groups"));
  }
  ConvDesc d{x[0],        x[1],       x[2],         x[3],        w[3],       w[0],
             w[1],        c.stride_h, c.stride_w,   c.pad_top,   c.pad_left, c.pad_bottom,
             c.pad_right, c.groups,   c.dilation_h, c.dilation_w};
  QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
  return d;
}

absl::StatusOr<QConvForwardResult> QConvForward(Backend& backend, const Tensor& x, const Tensor& w,
                                                const QConvConfig& c) {
  QTRAIN_ASSIGN_OR_RETURN(ConvDesc d, MakeConvDesc(x.shape(), w.shape(), c));
  if (x.dtype() != DType::kF32 || w.dtype() != DType::kF32) {
    return absl::InvalidArgumentError("quantized convolution takes f32 operands");
  }
  if (c.lhs.qtype) {
    QTRAIN_RETURN_IF_ERROR(ValidateQTypeMethod(*c.lhs.qtype, c.lhs.method));
  }
  if (c.rhs.qtype) {
    QTRAIN_RETURN_IF_ERROR(ValidateQTypeMethod(*c.rhs.qtype, c.rhs.method));
  }
  std::optional<qdot_internal::QuantizedOperand> xq, wq;
  if (c.lhs.qtype) {
    QTRAIN_ASSIGN_OR_RETURN(xq, qdot_internal::QuantizeOperand(
                                    x, c.lhs, ConvSpec({1, 2, 3}, c.disable_channelwise), -1));
  }
  if (c.rhs.qtype) {
    QTRAIN_ASSIGN_OR_RETURN(wq, qdot_internal::QuantizeOperand(
                                    w, c.rhs, ConvSpec({0, 1, 2}, c.disable_channelwise), -1));
  }
  QConvForwardResult out;
  out.y = Tensor::Empty(DType::kF32, {d.n, d.out_h(), d.out_w(), d.o});
  const bool integer = xq && wq && c.impl == QDotImpl::kInteger && IntegerEligible(xq->q, wq->q);
  if (!integer || c.keep_residuals) {  // the operands the float path convolves / backward uses
    out.residuals.x_used = xq ? Dequantize(xq->q) : x.Share();
    out.residuals.w_used = wq ? Dequantize(wq->q) : w.Share();
  }
  if (integer) {
    Tensor acc = Tensor::Empty(DType::kS32, out.y.shape());
    QTRAIN_RETURN_IF_ERROR(backend.ConvFwdInt8(d, xq->q.q.data<int8_t>(), wq->q.q.data<int8_t>(),
                                               acc.data<int32_t>()));
    const std::vector<float> sx = qdot_internal::GatherScales(xq->q, {0, 0, 0, 0}, 0, d.n);
    const std::vector<float> sw = qdot_internal::GatherScales(wq->q, {0, 0, 0, 0}, 3, d.o);
    const int32_t* pa = acc.data<int32_t>();
    float* py = out.y.data<float>();
    const int64_t per_example = d.out_h() * d.out_w();
    for (int64_t n = 0; n < d.n; ++n) {
      for (int64_t p = 0; p < per_example; ++p) {
        const int64_t row = (n * per_example + p) * d.o;
        for (int64_t o = 0; o < d.o; ++o) {
          py[row + o] = static_cast<float>(pa[row + o]) * sx[n] * sw[o];
        }
      }
    }
  } else {
    QTRAIN_RETURN_IF_ERROR(backend.ConvFwdF32(d, out.residuals.x_used.data<float>(),
                                              out.residuals.w_used.data<float>(),
                                              out.y.data<float>()));
  }
  if (!c.keep_residuals) {
    out.residuals = QConvResiduals();
  }
  if (xq) {
    out.x_dynamic_calibration = std::move(xq->dynamic);
  }
  return out;
}

absl::StatusOr<QDotGradients> QConvBackward(Backend& backend, const Tensor& g,
                                            const QConvResiduals& r, const QConvConfig& c) {
  QTRAIN_ASSIGN_OR_RETURN(ConvDesc d, MakeConvDesc(r.x_used.shape(), r.w_used.shape(), c));
  const Shape y_shape{d.n, d.out_h(), d.out_w(), d.o};
  if (g.dtype() != DType::kF32 || g.shape() != y_shape) {
    return absl::InvalidArgumentError(absl::StrCat("gradient of shape ", ShapeString(g.shape()),
                                                   " does not match the output shape ",
                                                   ShapeString(y_shape)));
  }
  QDotGradients out{Tensor::Empty(DType::kF32, r.x_used.shape()),
                    Tensor::Empty(DType::kF32, r.w_used.shape())};
  QTRAIN_RETURN_IF_ERROR(
      backend.ConvBwdData(d, g.data<float>(), r.w_used.data<float>(), out.dx.data<float>()));
  QTRAIN_RETURN_IF_ERROR(
      backend.ConvBwdWeights(d, r.x_used.data<float>(), g.data<float>(), out.dw.data<float>()));
  return out;
}

}  // namespace qtrain
