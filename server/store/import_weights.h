// Import of a float model trained elsewhere (issue: calibration-as-a-service): a standard
// safetensors file — a PyTorch state_dict, say — into a session's parameters.
//
// Each qtrain parameter "<module path>/<leaf>" is looked up as "<source module>.<source leaf>":
// the source module is `module_map[module path]`, else the path with '/' as '.'; the leaf is
// the one the module kind gives (Param::torch_leaf: a kernel, a norm's scale and an embedding are
// "weight"). Layouts are converted from PyTorch's: a rank-2 kernel is (out, in) there and
// (in, out) here; a rank-4 kernel is OIHW there and HWIO here. A linear layer that reads a flatten
// of feature maps (engine::FlattenedInput) also has its inputs reordered from PyTorch's (c, h, w)
// to qtrain's (h, w, c). Everything else is copied as is.
//
// Published checkpoints of one model name it differently; a tensor the model does not expect
// stands for an expected one the file lacks when it becomes that name by renaming a legacy
// LayerNorm leaf (gamma → weight, beta → bias), by adding the model's first path segment
// ("h.0.attn..." → "transformer.h.0.attn...") or by dropping the file's ("bert.embeddings..." →
// "embeddings..."), and only one tensor does.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "server/engine/trainer.h"
#include "server/store/safetensors.h"

namespace qtrain::store {

// Loads every parameter and non-trainable state tensor (BatchNorm's running_mean / running_var;
// a num_batches_tracked beside them is accepted and not used) of `trainer` from `file` (step 0,
// fresh optimizer state). On error
// nothing changes and the InvalidArgument message lists every missing, extra, mis-shaped or
// non-f32 tensor (up to 10 of each kind, with the total), by its name in the file.
absl::Status ImportWeights(const SafetensorsFile& file,
                           const std::map<std::string, std::string>& module_map,
                           engine::Trainer& trainer);

// Checks a module_map against `model` (ImportWeights and the compressed-tensors export):
// InvalidArgument naming the entries that name a module the model does not have (up to 10 and
// the count, with the modules it has), map to an empty name, or give two modules one name (also
// an unlisted module's default name).
absl::Status CheckModuleMap(const engine::Model& model,
                            const std::map<std::string, std::string>& module_map);

// The PyTorch name of qtrain tensor `name` ("<module path>/<leaf>") whose PyTorch leaf is
// `torch_leaf` ("" keeps qtrain's): the module's mapped name, '.', the leaf. `torch_module`, when
// set, replaces the module path taken from `name` (Param::torch_module).
std::string TorchName(const std::string& name, const std::string& torch_leaf,
                      const std::map<std::string, std::string>& module_map,
                      const std::optional<std::string>& torch_module = std::nullopt);

// The name in the file that parameter `param` ("Dense_0/kernel") is read from: its module's
// name, then its PyTorch leaf (Param::torch_leaf).
std::string SourceName(const engine::Param& param,
                       const std::map<std::string, std::string>& module_map);

// `value` (parameter `p`'s, or an array of its shape) in PyTorch's layout (Param::torch_layout).
Tensor ToTorchLayout(const engine::Model& model, const engine::Param& p, const Tensor& value);

// The PyTorch (out, in) weight of linear module `module`'s kernel (in, out) — any dtype —
// with the inputs in PyTorch's order (engine::FlattenedInput), and its inverse.
Tensor TorchLinearWeight(const engine::Model& model, const std::string& module,
                         const Tensor& kernel);
Tensor KernelFromTorchLinear(const engine::Model& model, const std::string& module,
                             const Tensor& weight);

// Linear module `module`'s kernel (in, out) with its input rows in PyTorch's order: (c, h, w)
// when it reads flattened feature maps (engine::FlattenedInput), else the kernel itself.
Tensor KernelInTorchOrder(const engine::Model& model, const std::string& module,
                          const Tensor& kernel);

// Layout conversions between PyTorch and qtrain (f32 or s8 tensors).
Tensor Transpose2(const Tensor& t);  // (a, b) -> (b, a)
Tensor OihwToHwio(const Tensor& t);
Tensor HwioToOihw(const Tensor& t);

}  // namespace qtrain::store
