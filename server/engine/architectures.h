// Named architectures: a model family from another library (torchvision's builders) expanded into
// a ModelSpec whose module names are that library's, so that its state dict imports without a
// module_map (ImportWeights) and exports back under the same names.
//
// Architecture names are "<library>:<builder>" ("torchvision:resnet18"); options take the
// builder's own parameter names. Pure functions; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/config.h"

namespace qtrain::engine {

// The spec of `arch`. InvalidArgument naming the architecture (with the list of known ones), an
// unknown option (with the builder's options), or a value out of range.
absl::StatusOr<proto::ModelSpec> ExpandArchitecture(const proto::Architecture& arch);

// The names ExpandArchitecture knows, sorted.
std::vector<std::string> ArchitectureNames();

namespace arch {

// What one builder reads: its options by name, each read at most once, so that unknown ones are
// reported. Used by the builders under architectures/.
class Options {
 public:
  Options(std::string arch, const proto::Architecture& a);
  // The option `name` as an integer in [lo, hi] (default `def`).
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def, int64_t lo, int64_t hi);
  absl::StatusOr<double> Real(const std::string& name, double def, double lo, double hi);
  // The input shape [H, W, C] (default [def_hw, def_hw, 3]), each dim in [1, 4096].
  absl::StatusOr<std::vector<int64_t>> InputShape(int64_t def_hw);
  // InvalidArgument naming every option no builder read.
  absl::Status CheckAllRead() const;
  // The raw input_shape and the Hugging Face config text, for the "hf" builder.
  const std::vector<int64_t>& raw_input_shape() const { return input_shape_; }
  const std::string& hf_config() const { return hf_config_; }

 private:
  std::string arch_;
  std::map<std::string, double> options_;
  std::vector<int64_t> input_shape_;
  std::string hf_config_;
  std::map<std::string, bool> read_;
};

// Builders of model.proto messages, for the architectures' files.
proto::Module Named(const std::string& name, proto::Module m);
// A k×k convolution with symmetric padding `pad` in `groups` groups, as torch.nn.Conv2d's.
proto::Module Conv(int64_t features, int64_t k, int64_t stride, int64_t pad, bool bias,
                   int64_t groups = 1);
proto::Module BatchNorm(float eps = 1e-5f);
proto::Module Act(proto::Activation::Kind kind);
proto::Module Seq(std::vector<proto::Module> layers);
proto::Module Dense(int64_t features, bool bias = true);
// A bias-free dense layer whose kernel is embedding `table`'s (features, in) table transposed.
proto::Module TiedDense(int64_t features, const std::string& table);
// HF Conv1D: a dense layer whose PyTorch weight is stored (in, out).
proto::Module Conv1D(int64_t features);

// Builders, one per file under architectures/.
absl::StatusOr<proto::ModelSpec> TorchvisionResnet(int depth, Options& options);
absl::StatusOr<proto::ModelSpec> TorchvisionMobilenetV2(Options& options);
// A Hugging Face model from its config.json (options.hf_config()), module paths equal to HF's
// parameter names (architectures/hf_config.h); input_shape [T] (default
// min(max_position_embeddings, 512)); option pad_id.
absl::StatusOr<proto::ModelSpec> HfModel(Options& options);
// The defaults of one of torchvision's vit_* builders (every one is an option too).
struct VitDefaults {
  int64_t patch, layers, heads, hidden, mlp;
};
absl::StatusOr<proto::ModelSpec> TorchvisionVit(const VitDefaults& defaults, Options& options);

}  // namespace arch
}  // namespace qtrain::engine
