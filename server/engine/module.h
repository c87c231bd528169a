// Module: one node of a model's module tree (Flax-style). Modules own their parameters and the
// residuals of their last forward pass; a model runs one step at a time on its session's
// executor thread, so modules are not thread-safe and need not be.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "kernels/qdot.h"
#include "kernels/rng.h"
#include "kernels/srq.h"
#include "kernels/tensor.h"
#include "server/engine/rules.h"

namespace qtrain::engine {

class Collective;
class GradReducer;
class OnnxGraph;

// How a parameter is laid out in PyTorch's state dict, when that differs from qtrain's.
enum class TorchLayout {
  kSame,
  kLinearKernel,  // qtrain (in, out), PyTorch (out, in)
  kConvKernel,    // qtrain HWIO, PyTorch OIHW
};

// A trainable tensor and its gradient (same shape; accumulated by Backward).
struct Param {
  std::string name;  // "<module path>/<leaf>", e.g. "Dense_0/kernel"
  // The leaf's name in a PyTorch state dict ("weight" for a kernel), and its layout there.
  std::string torch_leaf;
  TorchLayout torch_layout = TorchLayout::kSame;
  // The module whose PyTorch name prefixes torch_leaf when it is not the one holding the param:
  // nn.MultiheadAttention's packed in_proj_weight belongs to the attention module, not to
  // qtrain's in_proj child; torchvision ViT's class_token to the model itself ("").
  std::optional<std::string> torch_module;
  Tensor value;
  Tensor grad;
  // false when Backward assigns the whole gradient (matmul / conv kernels), so the trainer need
  // not zero it before each step; true when Backward adds into it.
  bool accumulates = true;
};

// Non-trainable state a module owns (BatchNorm's running statistics: Flax's batch_stats,
// PyTorch's buffers): saved and restored with the parameters, never touched by the optimizer.
struct StateTensor {
  std::string name;        // "<module path>/<leaf>", e.g. "bn1/mean"
  std::string torch_leaf;  // its PyTorch buffer name, e.g. "running_mean"
  Tensor value;
};

// quant_stats: (module path, "<op_id>_lhs|rhs") → running SRQ statistic.
using QuantStatsMap = std::map<std::pair<std::string, std::string>, SrqStat>;

// What one forward/backward pass needs besides the data. Borrowed pointers live for the step.
struct StepContext {
  Backend* backend = nullptr;
  bool training = false;      // dropout active; residuals kept for Backward
  bool update_stats = false;  // SRQ statistics are updated (training, calibration)
  QuantStatsMap* stats = nullptr;
  const CounterRng* rng = nullptr;  // session-seeded; dropout masks and rounding noise
  uint64_t step = 0;                // the session step (noise counters derive from it)
  // kFakeQuant runs every quantized op as quantize → dequantize → float (tests, comparisons).
  QDotImpl impl = QDotImpl::kInteger;
  // (N·T) flags of the batch's token positions, 1 where the input holds the spec's pad_id
  // (InputSpec.pad_id); null without one. Attention masks those keys.
  const Tensor* padding = nullptr;  // u8
  // Tokens prepended since the padding flags were made (class tokens): never padding.
  int64_t padding_prefix = 0;
  // Data-parallel steps (null: one process): SRQ statistics are averaged across the ranks,
  // each weighted by `shard_weight` (its share of the global batch's examples), and containers
  // tell `reducer` each child whose backward has finished.
  Collective* collective = nullptr;
  float shard_weight = 1.0f;
  GradReducer* reducer = nullptr;
};

class Module {
 public:
  explicit Module(std::string path) : path_(std::move(path)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // "" for the root, else "parent/name".
  const std::string& path() const { return path_; }

  // y = f(x) for a batch. InvalidArgument for inputs of the wrong shape or dtype.
  virtual absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) = 0;
  // dx for dy (the gradient of the last Forward's output); adds parameter gradients to
  // Param::grad. FailedPrecondition without a training Forward first.
  virtual absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) = 0;

  // Appends this module's parameters, then its children's, in a stable order.
  virtual void CollectParams(std::vector<Param*>* out) {
    for (Module* child : Children()) {
      child->CollectParams(out);
    }
  }
  virtual std::vector<Module*> Children() { return {}; }
  // Appends this module's non-trainable state, then its children's, in a stable order.
  virtual void CollectState(std::vector<StateTensor*>* out) {
    for (Module* child : Children()) {
      child->CollectState(out);
    }
  }

  // Appends "path/leaf" of the buffers a PyTorch state dict of this module may hold that qtrain
  // derives rather than stores (a rotary embedding's inv_freq): ImportWeights accepts and drops
  // them. Recursive.
  virtual void CollectTorchBuffers(std::vector<std::string>* out) {
    for (Module* child : Children()) {
      child->CollectTorchBuffers(out);
    }
  }

  // Resolves this module's quantizable ops against `rules` (nullptr: all float), recursively.
  // InvalidArgument as CompiledRules::Plan; on error the previous plans may be partly replaced,
  // so callers re-plan with the old rules.
  virtual absl::Status PlanOps(const CompiledRules* rules) {
    for (Module* child : Children()) {
      absl::Status s = child->PlanOps(rules);
      if (!s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  // Declares whether Backward's dx is used. The trainer turns it off for the modules that read
  // the model's input, which then skip their input-gradient dots (and return dx empty).
  virtual void SetInputGradNeeded(bool needed) { (void)needed; }

  // Appends (rule index or -1, "path:op_id") for every quantizable op, recursively.
  virtual void ReportOps(std::vector<std::pair<int, std::string>>* out) {
    for (Module* child : Children()) {
      child->ReportOps(out);
    }
  }

  // Writes this module's inference graph reading value `x` into `g`; returns the output value's
  // name. Unimplemented for kinds without an ONNX form; errors of `g` pass through.
  virtual absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x);

 protected:
  std::string ChildPath(const std::string& name) const {
    return path_.empty() ? name : path_ + "/" + name;
  }

 private:
  std::string path_;
};

// Error for Backward without a kept forward.
absl::Status NoForwardError(const std::string& path);

}  // namespace qtrain::engine
