// Flatten: (N, ...) → (N, prod(...)), in qtrain's (h, w, c) order for NHWC maps.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Flatten final : public Module {
 public:
  using Module::Module;

  absl::StatusOr<Tensor> Forward(StepContext&, const Tensor& x) override {
    if (x.rank() < 1) {
      return absl::InvalidArgumentError("flatten needs a batch axis");
    }
    in_shape_ = x.shape();
    Tensor y = x.Share();
    y.Reshape({x.dim(0), x.numel() / std::max<int64_t>(x.dim(0), 1)});
    return y;
  }
  // Feature maps a linear layer reads are flattened as PyTorch does, (c, h, w), and that layer's
  // kernel rows are exported in the same order (OnnxGraph::Weight).
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string in = g.FlattensForLinear(path()) ? g.ToNchw(x, path()) : x;
    return g.Op("Reshape", {in, g.Ints("flat", {0, -1})}, path());
  }
  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (dy.empty()) {
      return Tensor();
    }
    Tensor dx = dy.Share();
    dx.Reshape(in_shape_);
    return dx;
  }

 private:
  Shape in_shape_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildFlatten(const proto::Module&, ModuleSite& site) {
  site.shape() = {NumElements(site.shape())};
  return std::make_unique<Flatten>(site.path());
}

}  // namespace

extern const ModuleKind kFlattenKind = {proto::Module::kFlatten, "flatten", "Flatten",
                                        FlattenUse::kFlattens, BuildFlatten};

}  // namespace qtrain::engine
