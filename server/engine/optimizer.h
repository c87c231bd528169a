// Optimizers (SGD with momentum / Nesterov, AdamW), weight decay, global-norm gradient clipping
// and learning-rate schedules. Owned by a Trainer; not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/row_ops.h"
#include "server/engine/config.h"
#include "server/engine/module.h"

namespace qtrain::engine {

// Learning rate of `schedule` at (0-based) `step`.
float LearningRate(const proto::LrSchedule& schedule, int64_t step);

// The global L2 norm of the parameters' gradients (inf / nan when any gradient is), on the
// backend that holds them.
absl::StatusOr<float> GlobalGradNorm(Backend& backend, const std::vector<Param*>& params);

class Optimizer {
 public:
  // Validates and fills defaults (an unset kind is AdamW; AdamW betas 0.9 / 0.999, eps 1e-8;
  // an unset learning rate is 1e-3). InvalidArgument naming the field: negative or non-finite
  // rates, momentum / betas outside [0, 1), negative clip or weight decay, negative step counts.
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(const proto::OptimizerConfig& config);

  struct StepInfo {
    float learning_rate = 0;
    float grad_norm = 0;  // global L2 norm of the gradients before clipping
  };
  // Updates every parameter from its gradient; `step` is the 0-based update count and
  // `grad_norm` the gradients' global norm (GlobalGradNorm), used for clipping.
  // FailedPrecondition, with nothing changed, when the update would make a weight or an
  // optimizer slot infinite or NaN (e.g. an extreme learning rate): checked exactly, by a dry
  // run, unless a bound from the previous update's largest values proves every value finite.
  absl::StatusOr<StepInfo> Apply(Backend& backend, const std::vector<Param*>& params, int64_t step,
                                 float grad_norm);

  // Optimizer state as named tensors ("<param>/<slot>") on the backend's device, created lazily
  // (zeros) for `params`. The tensors may be written (a checkpoint load), so the next Apply
  // checks exactly again. The backend's errors (ResourceExhausted) when a slot cannot be made.
  absl::StatusOr<std::map<std::string, Tensor*>> State(Backend& backend,
                                                       const std::vector<Param*>& params);
  const proto::OptimizerConfig& config() const { return config_; }

 private:
  explicit Optimizer(proto::OptimizerConfig config) : config_(std::move(config)) {}
  absl::StatusOr<Tensor*> Slot(Backend& backend, const Param& p, const char* slot);

  // True when the update of `p` provably leaves every value finite, from maxima_.
  bool ProvablyFinite(const Param& p, float clip, float grad_norm, float lr) const;

  proto::OptimizerConfig config_;
  std::map<std::string, Tensor> slots_;
  // The largest |w|, |m| and v each parameter's last update wrote; absent: unknown.
  std::map<std::string, rowops::UpdateMax> maxima_;
};

}  // namespace qtrain::engine
