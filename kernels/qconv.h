// Quantized 2-D convolution (numerics.md §4–5): NHWC activations x (N,H,W,C), HWIO weights
// w (KH,KW,C/groups,O). QAT forward with one activation scale per example and one weight scale per
// output channel, on the backend's int8 convolution when both operands are symmetric int2..int8;
// otherwise dequantize and convolve in float. Backward: classic fake-quant STE, the float
// convolution backward with the quantized (dequantized) operands as residuals, no mask.
//
// Thread-safety and errors as kernels/qdot.h.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "kernels/qdot.h"

namespace qtrain {

struct QConvConfig {
  QOperand lhs;  // activations
  QOperand rhs;  // weights
  bool disable_channelwise = false;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t groups = 1;  // w is (KH, KW, C / groups, O): ConvDesc's grouping
  int64_t dilation_h = 1, dilation_w = 1;
  QDotImpl impl = QDotImpl::kInteger;
  bool skip_dx = false;  // as QDotConfig::skip_dx
  // False when no backward follows (inference): the result's residuals stay empty, so the
  // integer path makes no dequantized copies of x and w.
  bool keep_residuals = true;
};

// The backend descriptor of x ⊛ w under `config`; InvalidArgument for ranks other than 4,
// channel mismatch, non-positive strides, negative padding, an empty output.
absl::StatusOr<ConvDesc> MakeConvDesc(const Shape& x, const Shape& w, const QConvConfig& config);

struct QConvResiduals {
  Tensor x_used;  // the forward's activation operand (dequantized when quantized)
  Tensor w_used;  // likewise for the weights
};

struct QConvForwardResult {
  Tensor y;  // (N, OH, OW, O)
  QConvResiduals residuals;
  std::optional<Calibration> x_dynamic_calibration;  // per example, for SRQ statistics
};

absl::StatusOr<QConvForwardResult> QConvForward(Backend& backend, const Tensor& x, const Tensor& w,
                                                const QConvConfig& config);

// dx = conv_bwd_data(g, w_used), dw = conv_bwd_weights(x_used, g).
absl::StatusOr<QDotGradients> QConvBackward(Backend& backend, const Tensor& g,
                                            const QConvResiduals& residuals,
                                            const QConvConfig& config);

}  // namespace qtrain
