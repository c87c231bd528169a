// Losses and metrics of a training / evaluation step.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "kernels/tensor.h"
#include "server/engine/config.h"

namespace qtrain::engine {

struct LossResult {
  double loss = 0;       // mean over counted examples / tokens
  double accuracy = -1;  // cross-entropy only; -1 otherwise
  int64_t count = 0;     // examples or tokens that counted (ignore_index excluded)
  Tensor grad;           // d loss / d output (same shape as the output), when asked
};

// Validates `targets` against the model output (per-example shape `output_shape`, batch N):
// cross-entropy wants int32 labels of shape (N, output_shape[:-1]) in [0, classes) (or the
// ignore index); MSE wants finite f32 targets of the output's shape. InvalidArgument naming the
// field and the value otherwise.
absl::Status ValidateTargets(Backend& backend, const proto::Loss& loss, const Shape& output_shape,
                             int64_t batch, const Tensor& targets);

// Loss (and its gradient when `want_grad`) of `output` against validated `targets`. `padding`
// (StepContext::padding): token-level labels at padded positions are not counted.
absl::StatusOr<LossResult> ComputeLoss(Backend& backend, const proto::Loss& loss,
                                       const Tensor& output, const Tensor& targets, bool want_grad,
                                       const Tensor* padding = nullptr);

}  // namespace qtrain::engine
