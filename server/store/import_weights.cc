#include "server/store/import_weights.h"

#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

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

Tensor OihwToHwio(const Tensor& t) {
  const int64_t o = t.dim(0), i = t.dim(1), h = t.dim(2), w = t.dim(3);
  Tensor out = Tensor::Empty(DType::kF32, {h, w, i, o});
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  for (int64_t a = 0; a < o; ++a) {
    for (int64_t b = 0; b < i; ++b) {
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          dst[((y * w + x) * i + b) * o + a] = src[((a * i + b) * h + y) * w + x];
        }
      }
    }
  }
  return out;
}

Tensor HwioToOihw(const Tensor& t) {
  const int64_t h = t.dim(0), w = t.dim(1), i = t.dim(2), o = t.dim(3);
  Tensor out = Tensor::Empty(DType::kF32, {o, i, h, w});
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  for (int64_t a = 0; a < o; ++a) {
    for (int64_t b = 0; b < i; ++b) {
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          dst[((a * i + b) * h + y) * w + x] = src[((y * w + x) * i + b) * o + a];
        }
      }
    }
  }
  return out;
}

std::string SourceName(const std::string& param,
                       const std::map<std::string, std::string>& module_map) {
  const size_t slash = param.rfind('/');
  const std::string module = slash == std::string::npos ? "" : param.substr(0, slash);
  const std::string leaf = slash == std::string::npos ? param : param.substr(slash + 1);
  auto it = module_map.find(module);
  const std::string prefix =
      it != module_map.end() ? it->second : absl::StrReplaceAll(module, {{"/", "."}});
  const std::string source_leaf =
      leaf == "kernel" || leaf == "scale" || leaf == "embedding" ? "weight" : leaf;
  return prefix.empty() ? source_leaf : absl::StrCat(prefix, ".", source_leaf);
}

absl::Status ImportWeights(const SafetensorsFile& file,
                           const std::map<std::string, std::string>& module_map,
                           engine::Trainer& trainer) {
  std::vector<std::string> missing, misshaped, wrong_type, unknown;
  std::set<std::string> used, modules;
  std::map<std::string, Tensor> state;
  for (const engine::Param* p : trainer.model().params()) {
    modules.insert(p->name.substr(0, p->name.rfind('/')));
  }
  for (const auto& [module, source] : module_map) {
    if (!modules.count(module)) unknown.push_back(module);
  }
  for (const engine::Param* p : trainer.model().params()) {
    const std::string source = SourceName(p->name, module_map);
    auto it = file.tensors.find(source);
    if (it == file.tensors.end()) {
      missing.push_back(
          absl::StrCat(source, " (for ", p->name, ", ", ShapeString(p->value.shape()), ")"));
      continue;
    }
    used.insert(source);
    const Tensor& t = it->second;
    if (t.dtype() != DType::kF32) {
      wrong_type.push_back(absl::StrCat(source, " is ", DTypeName(t.dtype())));
      continue;
    }
    const bool is_kernel = p->name.size() >= 7 && p->name.substr(p->name.size() - 7) == "/kernel";
    Tensor converted = t;
    if (is_kernel && t.rank() == 2 && p->value.rank() == 2) converted = Transpose2(t);
    if (is_kernel && t.rank() == 4 && p->value.rank() == 4) converted = OihwToHwio(t);
    if (converted.shape() != p->value.shape()) {
      misshaped.push_back(absl::StrCat(source, " is ", ShapeString(t.shape()), ", ", p->name,
                                       " needs ", ShapeString(p->value.shape()),
                                       is_kernel ? " (after PyTorch's layout is converted)" : ""));
      continue;
    }
    state["params/" + p->name] = std::move(converted);
  }
  std::vector<std::string> extra;
  for (const auto& [name, t] : file.tensors) {
    if (!used.count(name)) extra.push_back(name);
  }
  if (!missing.empty() || !misshaped.empty() || !wrong_type.empty() || !extra.empty() ||
      !unknown.empty()) {
    std::vector<std::string> parts;
    if (!unknown.empty()) {
      parts.push_back(
          absl::StrCat("module_map names modules the model does not have: ", List(unknown),
                       " (it has: ", List({modules.begin(), modules.end()}), ")"));
    }
    if (!missing.empty()) parts.push_back("missing: " + List(missing));
    if (!misshaped.empty()) parts.push_back("mis-shaped: " + List(misshaped));
    if (!wrong_type.empty()) parts.push_back("not f32: " + List(wrong_type));
    if (!extra.empty()) parts.push_back("not used by the model: " + List(extra));
    return absl::InvalidArgumentError(absl::StrCat(
        "the weights do not fit the model spec (module_map renames modules; unlisted ones are "
        "looked up by path with '.' for '/'): ",
        absl::StrJoin(parts, "; ")));
  }
  return trainer.ImportState(state, 0);
}

}  // namespace qtrain::store
