// Backend's quantized ops on host memory: kernels/qdot.cc, qconv.cc and calibration.cc composed
// over the backend's own matmuls and convolutions. A device backend overrides these.
#include "kernels/backend/backend.h"
#include "kernels/calibration.h"
#include "kernels/qconv.h"
#include "kernels/qdot.h"

namespace qtrain {

absl::StatusOr<QDotForwardResult> Backend::QuantizedDotForward(const Tensor& x, const Tensor& w,
                                                               const QDotConfig& config) {
  return QDotForward(*this, x, w, config);
}

absl::StatusOr<QDotGradients> Backend::QuantizedDotBackward(
    const Tensor& x, const Tensor& w, const Tensor& g, const QDotResiduals& residuals,
    const QDotConfig& config, const CounterRng* rng, uint64_t noise_counter) {
  return QDotBackward(*this, x, w, g, residuals, config, rng, noise_counter);
}

absl::StatusOr<QConvForwardResult> Backend::QuantizedConvForward(const Tensor& x, const Tensor& w,
                                                                 const QConvConfig& config) {
  return QConvForward(*this, x, w, config);
}

absl::StatusOr<QDotGradients> Backend::QuantizedConvBackward(const Tensor& g,
                                                             const QConvResiduals& residuals,
                                                             const QConvConfig& config) {
  return QConvBackward(*this, g, residuals, config);
}

absl::StatusOr<Calibration> Backend::CalibrateOperand(const Tensor& x, const ScaleLayout& layout,
                                                      const CalibrationMethod& method,
                                                      QType qtype) {
  if (x.dtype() != DType::kF32 || !x.device().is_host()) {
    return absl::InvalidArgumentError("calibration: expected an f32 host tensor");
  }
  return Calibrate(x, layout, method, qtype);
}

}  // namespace qtrain
