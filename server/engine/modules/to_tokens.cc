// ToTokens: (H, W, C) feature maps → (H·W, C) tokens. NHWC memory is already in token order, so
// both directions are reshapes.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class ToTokens final : public Module {
 public:
  ToTokens(std::string path, Shape map) : Module(std::move(path)), map_(std::move(map)) {}

  absl::StatusOr<Tensor> Forward(StepContext&, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, map_[2], 4));
    if (x.dim(1) != map_[0] || x.dim(2) != map_[1]) {
      return absl::InvalidArgumentError(absl::StrCat("module \"", path(), "\": expected (N, ",
                                                     map_[0], ", ", map_[1], ", ", map_[2],
                                                     "), got ", ShapeString(x.shape())));
    }
    Tensor y = x.Share();
    y.Reshape({x.dim(0), map_[0] * map_[1], map_[2]});
    return y;
  }
  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (dy.empty()) return Tensor();
    Tensor dx = dy.Share();
    dx.Reshape({dy.dim(0), map_[0], map_[1], map_[2]});
    return dx;
  }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    return g.Op("Reshape", {x, g.Ints("tokens", {0, -1, map_[2]})}, path());
  }

 private:
  Shape map_;  // (H, W, C)
};

absl::StatusOr<std::unique_ptr<Module>> BuildToTokens(const proto::Module&, ModuleSite& site) {
  const Shape map = site.shape();
  if (map.size() != 3) {
    return site.Bad(absl::StrCat("to_tokens needs (H, W, C) feature maps, got ", ShapeString(map)));
  }
  site.shape() = {map[0] * map[1], map[2]};
  return std::make_unique<ToTokens>(site.path(), map);
}

}  // namespace

extern const ModuleKind kToTokensKind = {proto::Module::kToTokens, "to_tokens", "ToTokens",
                                         FlattenUse::kBreaks, BuildToTokens};

}  // namespace qtrain::engine
