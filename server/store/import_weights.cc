#include "server/store/import_weights.h"

#include <array>
#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "kernels/status_macros.h"

namespace qtrain::store {
namespace {

// Up to 10 entries and the total.
std::string List(const std::vector<std::string>& items) {
  std::vector<std::string> shown(items.begin(), items.begin() + std::min<size_t>(items.size(), 10));
  std::string out = absl::StrJoin(shown, ", ");
  if (items.size() > shown.size()) absl::StrAppend(&out, ", ... (", items.size(), " in all)");
  return out;
}

}  // namespace

// (a, b) -> (b, a), of any element size.
Tensor Transpose2(const Tensor& t) {
  const int64_t rows = t.dim(0), cols = t.dim(1);
  const size_t size = DTypeSize(t.dtype());
  Tensor out = Tensor::Empty(t.dtype(), {cols, rows});
  const char* src = static_cast<const char*>(t.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      std::memcpy(dst + (c * rows + r) * size, src + (r * cols + c) * size, size);
    }
  }
  return out;
}

namespace {

// out[perm applied] = t: out's axis a is t's axis perm[a] (rank 4, any dtype).
Tensor Permute4(const Tensor& t, const std::array<int, 4>& perm) {
  const Shape& in = t.shape();
  const Shape out_shape = {in[perm[0]], in[perm[1]], in[perm[2]], in[perm[3]]};
  Tensor out = Tensor::Empty(t.dtype(), out_shape);
  std::array<int64_t, 4> stride_in = {in[1] * in[2] * in[3], in[2] * in[3], in[3], 1};
  const size_t size = DTypeSize(t.dtype());
  const char* src = static_cast<const char*>(t.raw());
  char* dst = static_cast<char*>(out.raw());
  int64_t at = 0;
  for (int64_t a = 0; a < out_shape[0]; ++a) {
    for (int64_t b = 0; b < out_shape[1]; ++b) {
      for (int64_t c = 0; c < out_shape[2]; ++c) {
        for (int64_t d = 0; d < out_shape[3]; ++d) {
          const int64_t from = a * stride_in[perm[0]] + b * stride_in[perm[1]] +
                               c * stride_in[perm[2]] + d * stride_in[perm[3]];
          std::memcpy(dst + (at++) * size, src + from * size, size);
        }
      }
    }
  }
  return out;
}

// The rows of a kernel (H·W·C, out) as an (H, W, C, out) array, permuted by Permute4 (`perm`:
// out axis a is in axis perm[a]), back to rank 2.
Tensor PermuteKernelRows(const Tensor& kernel, const Shape& maps, const std::array<int, 4>& perm) {
  Tensor t = kernel;
  t.Reshape({maps[0], maps[1], maps[2], kernel.dim(1)});
  Tensor out = Permute4(t, perm);
  out.Reshape(kernel.shape());
  return out;
}

// The feature maps `module` reads flattened, when its rows need reordering for this kernel.
const Shape* FlattenedMaps(const engine::Model& model, const std::string& module,
                           const Tensor& kernel) {
  auto it = model.flattened_inputs().find(module);
  if (it == model.flattened_inputs().end() || kernel.rank() != 2 ||
      kernel.dim(0) != NumElements(it->second.hwc)) {
    return nullptr;
  }
  return &it->second.hwc;
}

}  // namespace

Tensor KernelInTorchOrder(const engine::Model& model, const std::string& module,
                          const Tensor& kernel) {
  const Shape* hwc = FlattenedMaps(model, module, kernel);
  return hwc ? PermuteKernelRows(kernel, *hwc, {2, 0, 1, 3}) : kernel;  // (h,w,c) -> (c,h,w)
}

Tensor TorchLinearWeight(const engine::Model& model, const std::string& module,
                         const Tensor& kernel) {
  return Transpose2(KernelInTorchOrder(model, module, kernel));
}

Tensor KernelFromTorchLinear(const engine::Model& model, const std::string& module,
                             const Tensor& weight) {
  Tensor kernel = Transpose2(weight);
  const Shape* hwc = FlattenedMaps(model, module, kernel);
  if (hwc == nullptr) return kernel;
  const Shape chw = {(*hwc)[2], (*hwc)[0], (*hwc)[1]};
  return PermuteKernelRows(kernel, chw, {1, 2, 0, 3});  // (c,h,w) -> (h,w,c)
}

Tensor OihwToHwio(const Tensor& t) { return Permute4(t, {2, 3, 1, 0}); }

Tensor HwioToOihw(const Tensor& t) { return Permute4(t, {3, 2, 0, 1}); }

std::string TorchName(const std::string& name, const std::string& torch_leaf,
                      const std::map<std::string, std::string>& module_map,
                      const std::optional<std::string>& torch_module) {
  const size_t slash = name.rfind('/');
  const std::string module = torch_module                 ? *torch_module
                             : slash == std::string::npos ? ""
                                                          : name.substr(0, slash);
  const std::string leaf = !torch_leaf.empty()          ? torch_leaf
                           : slash == std::string::npos ? name
                                                        : name.substr(slash + 1);
  auto it = module_map.find(module);
  const std::string prefix =
      it != module_map.end() ? it->second : absl::StrReplaceAll(module, {{"/", "."}});
  return prefix.empty() ? leaf : absl::StrCat(prefix, ".", leaf);
}

std::string SourceName(const engine::Param& param,
                       const std::map<std::string, std::string>& module_map) {
  return TorchName(param.name, param.torch_leaf, module_map, param.torch_module);
}

Tensor ToTorchLayout(const engine::Model& model, const engine::Param& p, const Tensor& value) {
  switch (p.torch_layout) {
    case engine::TorchLayout::kLinearKernel:
      return TorchLinearWeight(model, p.name.substr(0, p.name.rfind('/')), value);
    case engine::TorchLayout::kConvKernel:
      return HwioToOihw(value);
    case engine::TorchLayout::kSame:
      break;
  }
  return value;
}

absl::Status CheckModuleMap(const engine::Model& model,
                            const std::map<std::string, std::string>& module_map) {
  std::set<std::string> modules;
  for (const engine::Param* p : model.params()) {
    modules.insert(p->torch_module ? *p->torch_module : p->name.substr(0, p->name.rfind('/')));
  }
  std::vector<std::string> unknown, empty, clashes;
  for (const auto& [module, name] : module_map) {
    if (!modules.count(module)) unknown.push_back(module);
    if (name.empty()) empty.push_back(module);
  }
  std::map<std::string, std::string> owner;  // file name -> the first module it names
  for (const std::string& module : modules) {
    auto it = module_map.find(module);
    const std::string name =
        it != module_map.end() ? it->second : absl::StrReplaceAll(module, {{"/", "."}});
    if (name.empty()) continue;
    auto [at, fresh] = owner.emplace(name, module);
    if (!fresh) clashes.push_back(absl::StrCat(at->second, " and ", module, " -> \"", name, "\""));
  }
  std::vector<std::string> parts;
  if (!unknown.empty()) {
    parts.push_back(
        absl::StrCat("module_map names modules the model does not have: ", List(unknown),
                     " (it has: ", List({modules.begin(), modules.end()}), ")"));
  }
  if (!empty.empty()) parts.push_back("module_map maps to an empty name: " + List(empty));
  if (!clashes.empty()) parts.push_back("module_map gives two modules one name: " + List(clashes));
  if (parts.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(parts, "; "));
}

namespace {

// Published checkpoints of one model differ in naming: GPT-2's files with and without the
// "transformer." prefix, BERT task models' "bert." prefix, legacy LayerNorm "gamma" / "beta".
// Maps an expected name to the file's name for it, for every file name the model does not expect
// that becomes an expected name (one the file lacks) by renaming the legacy leaf, adding the
// model's first path segment or dropping the file's. Names that two file tensors would take are
// left out (both stay unused, and the error names them).
std::map<std::string, std::string> NameAliases(const std::set<std::string>& expected,
                                               const std::vector<std::string>& in_file) {
  const std::set<std::string> present(in_file.begin(), in_file.end());
  std::set<std::string> roots;
  for (const std::string& e : expected) roots.insert(e.substr(0, e.find('.')));
  std::map<std::string, std::vector<std::string>> claims;
  for (const std::string& n : in_file) {
    if (expected.count(n)) continue;
    std::vector<std::string> forms = {n};
    for (auto [legacy, now] :
         {std::pair<const char*, const char*>{".gamma", ".weight"}, {".beta", ".bias"}}) {
      if (absl::EndsWith(n, legacy)) {
        forms.push_back(absl::StrCat(n.substr(0, n.size() - strlen(legacy)), now));
      }
    }
    std::set<std::string> targets;
    for (const std::string& f : forms) {
      std::vector<std::string> candidates = {f};
      for (const std::string& r : roots) candidates.push_back(absl::StrCat(r, ".", f));
      if (f.find('.') != std::string::npos) candidates.push_back(f.substr(f.find('.') + 1));
      for (const std::string& c : candidates) {
        if (expected.count(c) && !present.count(c)) targets.insert(c);
      }
    }
    if (targets.size() == 1) claims[*targets.begin()].push_back(n);
  }
  std::map<std::string, std::string> aliases;
  for (const auto& [target, names] : claims) {
    if (names.size() == 1) aliases[target] = names[0];
  }
  return aliases;
}

}  // namespace

absl::Status ImportWeights(const SafetensorsFile& file,
                           const std::map<std::string, std::string>& module_map,
                           engine::Trainer& trainer) {
  QTRAIN_RETURN_IF_ERROR(CheckModuleMap(trainer.model(), module_map));
  std::vector<std::string> missing, misshaped, wrong_type;
  std::set<std::string> used;
  std::map<std::string, Tensor> state;
  const engine::Model& model = trainer.model();
  std::set<std::string> expected;
  for (const engine::Param* p : model.params()) expected.insert(SourceName(*p, module_map));
  for (const engine::StateTensor* s : model.state()) {
    expected.insert(TorchName(s->name, s->torch_leaf, module_map));
    expected.insert(TorchName(s->name, "num_batches_tracked", module_map));
  }
  for (const std::string& b : model.torch_buffers()) expected.insert(TorchName(b, "", module_map));
  std::vector<std::string> in_file;
  for (const auto& [name, t] : file.tensors) in_file.push_back(name);
  for (const auto& [name, tag] : file.unloaded) in_file.push_back(name);
  const std::map<std::string, std::string> aliases = NameAliases(expected, in_file);
  // The file's name for expected name `name`.
  const auto in_file_as = [&](const std::string& name) {
    auto it = aliases.find(name);
    return it == aliases.end() ? name : it->second;
  };
  // Reads tensor `name` (torch leaf `leaf`, layout `layout`) for `key` of `shape`.
  auto take = [&](const std::string& name, const std::string& leaf,
                  const std::optional<std::string>& torch_module, engine::TorchLayout layout,
                  const Shape& shape, const std::string& key) {
    const std::string source = in_file_as(TorchName(name, leaf, module_map, torch_module));
    auto it = file.tensors.find(source);
    if (it == file.tensors.end()) {
      if (auto other = file.unloaded.find(source); other != file.unloaded.end()) {
        used.insert(source);
        wrong_type.push_back(absl::StrCat(source, " is ", other->second));
        return;
      }
      missing.push_back(absl::StrCat(source, " (for ", name, ", ", ShapeString(shape), ")"));
      return;
    }
    used.insert(source);
    const Tensor& t = it->second;
    if (t.dtype() != DType::kF32) {
      wrong_type.push_back(absl::StrCat(source, " is ", DTypeName(t.dtype())));
      return;
    }
    Tensor converted = t;
    if (layout == engine::TorchLayout::kLinearKernel && t.rank() == 2) {
      converted = KernelFromTorchLinear(model, name.substr(0, name.rfind('/')), t);
    }
    if (layout == engine::TorchLayout::kConvKernel && t.rank() == 4) converted = OihwToHwio(t);
    if (converted.shape() != shape) {
      const bool converts = layout != engine::TorchLayout::kSame;
      misshaped.push_back(absl::StrCat(source, " is ", ShapeString(t.shape()), ", ", name,
                                       " needs ", ShapeString(shape),
                                       converts ? " (after PyTorch's layout is converted)" : ""));
      return;
    }
    state[key] = std::move(converted);
  };
  for (const engine::Param* p : model.params()) {
    take(p->name, p->torch_leaf, p->torch_module, p->torch_layout, p->value.shape(),
         "params/" + p->name);
  }
  for (const engine::StateTensor* s : model.state()) {
    take(s->name, s->torch_leaf, std::nullopt, engine::TorchLayout::kSame, s->value.shape(),
         "batch_stats/" + s->name);
    // BatchNorm's step counter: PyTorch reads it only with momentum=None (a cumulative average),
    // which qtrain does not offer.
    const std::string counter = in_file_as(TorchName(s->name, "num_batches_tracked", module_map));
    if (file.tensors.count(counter) || file.unloaded.count(counter)) used.insert(counter);
  }
  for (const std::string& buffer : model.torch_buffers()) {
    const std::string torch = in_file_as(TorchName(buffer, "", module_map));
    if (file.tensors.count(torch) || file.unloaded.count(torch)) used.insert(torch);
  }
  std::vector<std::string> extra;
  for (const auto& [name, t] : file.tensors) {
    if (!used.count(name)) extra.push_back(name);
  }
  for (const auto& [name, tag] : file.unloaded) {
    if (!used.count(name)) extra.push_back(absl::StrCat(name, " (", tag, ")"));
  }
  if (!missing.empty() || !misshaped.empty() || !wrong_type.empty() || !extra.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back("missing: " + List(missing));
    if (!misshaped.empty()) parts.push_back("mis-shaped: " + List(misshaped));
    if (!wrong_type.empty()) parts.push_back("not a float dtype: " + List(wrong_type));
    if (!extra.empty()) parts.push_back("not used by the model: " + List(extra));
    return absl::InvalidArgumentError(absl::StrCat(
        "the weights do not fit the model spec (module_map renames modules; unlisted ones are "
        "looked up by path with '.' for '/'): ",
        absl::StrJoin(parts, "; ")));
  }
  return trainer.ImportState(state, 0);
}

}  // namespace qtrain::store
