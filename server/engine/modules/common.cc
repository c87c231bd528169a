#include "server/engine/modules/common.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {

absl::Status CheckF32(const std::string& path, const Tensor& x, int rank) {
  if (x.dtype() != DType::kF32 || (rank > 0 && x.rank() != rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("module \"", path, "\": expected an f32 input", rank > 0 ? " of rank " : "",
                     rank > 0 ? absl::StrCat(rank) : "", ", got ", DTypeName(x.dtype()), " ",
                     ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

absl::Status CheckFeatures(const std::string& path, const Tensor& x, int64_t features,
                           int min_rank) {
  if (x.dtype() != DType::kF32 || x.rank() < min_rank || x.shape().back() != features) {
    return absl::InvalidArgumentError(absl::StrCat(
        "module \"", path, "\": expected f32 input with ", features,
        " features in the last axis, got ", DTypeName(x.dtype()), " ", ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

Param MakeParam(const std::string& name, Tensor value, std::string torch_leaf) {
  Param p;
  p.name = name;
  p.torch_leaf = std::move(torch_leaf);
  p.grad = Tensor::Zeros(DType::kF32, value.shape());
  p.value = std::move(value);
  return p;
}

void TorchNameIsModulePath(Param& p, const std::string& module_path) {
  const size_t slash = module_path.rfind('/');
  p.torch_module = slash == std::string::npos ? "" : module_path.substr(0, slash);
  p.torch_leaf = slash == std::string::npos ? module_path : module_path.substr(slash + 1);
}

absl::Status CheckTokens(const std::string& path, const Tensor& x, int64_t tokens, int64_t d) {
  if (x.dtype() != DType::kF32 || x.rank() != 3 || x.dim(1) != tokens || x.dim(2) != d) {
    return absl::InvalidArgumentError(absl::StrCat("module \"", path, "\": expected f32 (N, ",
                                                   tokens, ", ", d, "), got ", DTypeName(x.dtype()),
                                                   " ", ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

absl::StatusOr<float> NormEpsilon(ModuleSite& site, float epsilon) {
  if (site.shape().empty()) {
    return site.Bad("normalization needs a feature axis");
  }
  if (epsilon < 0 || !std::isfinite(epsilon)) {
    return site.Bad("epsilon must be >= 0");
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({2, site.shape().back()}));
  return epsilon > 0 ? epsilon : 1e-6f;
}

std::pair<int64_t, int64_t> WindowPadding(int64_t in, int64_t k, int64_t s, bool same) {
  if (!same) {
    return {0, 0};
  }
  const int64_t out = (in + s - 1) / s;
  const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
  return {total / 2, total - total / 2};
}

}  // namespace qtrain::engine
