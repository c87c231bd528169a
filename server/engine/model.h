// Model: a module tree built from a proto ModelSpec, with shape checking at build time, the
// list of its parameters, and the quantization plan of its ops under a rule set.
//
// Owned by a Trainer; not thread-safe (one step at a time).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "server/engine/module.h"
#include "server/engine/rules.h"

namespace qtrain::engine {

// Limits that keep a hostile spec from exhausting memory. Errors name the limit.
inline constexpr int64_t kMaxParameters = int64_t{1} << 30;         // elements
inline constexpr int64_t kMaxExampleActivation = int64_t{1} << 26;  // elements per example
inline constexpr int64_t kMaxDim = int64_t{1} << 24;
inline constexpr int kMaxDepth = 64;
inline constexpr int kMaxModules = 10000;  // modules in one spec, containers included

// What a model costs, known before it is built (Model::Estimate): its parameter count and the
// activation elements one example produces (the input and every module's output, plus attention
// scores), from the same shape inference and limits as Build.
struct ModelFootprint {
  int64_t parameters = 0;
  int64_t activations_per_example = 0;
};

// A linear layer whose input is a flatten of (H, W, C) feature maps with H·W > 1 and C > 1,
// directly or through activations and dropout (not across a residual). qtrain flattens NHWC maps
// in (h, w, c) order; PyTorch's nn.Flatten of NCHW maps gives (c, h, w): importing and exporting
// PyTorch weights reorders that layer's inputs.
struct FlattenedInput {
  std::string flatten_path;  // the flatten module
  Shape hwc;                 // (H, W, C)
};

class Model {
 public:
  // Builds and initialises (seeded) the model of `spec`. InvalidArgument naming the module path
  // and field: no input shape, unknown or empty module, shape mismatches (e.g. a Conv2D after a
  // flat input), non-positive or absurd sizes; ResourceExhausted over the limits above.
  static absl::StatusOr<std::unique_ptr<Model>> Build(const proto::ModelSpec& spec, uint64_t seed);
  // Build's validation without allocating anything: the footprint, or Build's errors.
  static absl::StatusOr<ModelFootprint> Estimate(const proto::ModelSpec& spec);

  const proto::ModelSpec& spec() const { return spec_; }
  Module& root() { return *root_; }
  const std::vector<Param*>& params() const { return params_; }
  int64_t num_parameters() const;
  // Non-trainable state (StateTensor), and its element count.
  const std::vector<StateTensor*>& state() const { return state_; }
  int64_t num_state_elements() const;
  // Module::CollectTorchBuffers over the whole model, and the spec's import_ignores.
  std::vector<std::string> torch_buffers() const {
    std::vector<std::string> out;
    root_->CollectTorchBuffers(&out);
    out.insert(out.end(), spec_.import_ignores().begin(), spec_.import_ignores().end());
    return out;
  }
  // The per-example output shape (without the batch axis).
  const Shape& output_shape() const { return output_shape_; }

  // Checks a batch of inputs: (N, input shape...), f32 or int32 per the spec, N >= 1, finite.
  // `backend` holds the inputs and checks their values.
  absl::Status ValidateInputs(Backend& backend, const Tensor& inputs) const;

  // Plans every quantizable op with `rules` (nullptr: float). On error the model keeps its
  // previous plan.
  absl::Status SetRules(std::shared_ptr<const CompiledRules> rules);
  const CompiledRules* rules() const { return rules_.get(); }
  std::shared_ptr<const CompiledRules> shared_rules() const { return rules_; }
  // Indices of rules that no op matched (Qwix get_unused_rules).
  std::vector<int> UnusedRules() const;
  // (rule index or -1, "module_path:op_id") for every quantizable op.
  std::vector<std::pair<int, std::string>> Ops() const;
  // Linear module path -> the flattened feature maps it reads (see FlattenedInput).
  const std::map<std::string, FlattenedInput>& flattened_inputs() const {
    return flattened_inputs_;
  }

 private:
  Model() = default;

  proto::ModelSpec spec_;
  std::unique_ptr<Module> root_;
  std::vector<Param*> params_;
  std::vector<StateTensor*> state_;
  Shape output_shape_;
  std::map<std::string, FlattenedInput> flattened_inputs_;
  std::shared_ptr<const CompiledRules> rules_;
};

}  // namespace qtrain::engine
