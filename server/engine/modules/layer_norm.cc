// LayerNorm (Flax LayerNorm, torch.nn.LayerNorm): normalises the last axis, then scale and bias.
// Float, never quantized.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class LayerNorm final : public Module {
 public:
  LayerNorm(std::string path, int64_t features, float eps)
      : Module(std::move(path)), features_(features), eps_(eps) {
    scale_ = MakeParam(ChildPath("scale"), Constant({features}, 1.0f), "weight");
    bias_ = MakeParam(ChildPath("bias"), Constant({features}, 0.0f), "bias");
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, features_, 2));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y,
                            ctx.backend->LayerNorm(eps_, x, scale_.value, bias_.value, saved_));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    absl::StatusOr<Tensor> dx =
        ctx.backend->NormGrad(Backend::NormKind::kLayer, eps_, input_, saved_, scale_.value, dy,
                              scale_.grad, &bias_.grad);
    input_ = Tensor();
    return dx;
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&scale_);
    out->push_back(&bias_);
  }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    return g.Op("LayerNormalization", {x, g.Param(scale_), g.Param(bias_)}, path(),
                {OnnxGraph::IntAttr("axis", -1), OnnxGraph::FloatAttr("epsilon", eps_)});
  }

 private:
  int64_t features_;
  float eps_;
  Param scale_, bias_;
  Tensor input_;
  Backend::NormSaved saved_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildLayerNorm(const proto::Module& m, ModuleSite& site) {
  QTRAIN_ASSIGN_OR_RETURN(const float eps, NormEpsilon(site, m.layer_norm().epsilon()));
  return site.Allocate(
      [&] { return std::make_unique<LayerNorm>(site.path(), site.shape().back(), eps); });
}

}  // namespace

extern const ModuleKind kLayerNormKind = {proto::Module::kLayerNorm, "layer_norm", "LayerNorm",
                                          FlattenUse::kBreaks, BuildLayerNorm};

}  // namespace qtrain::engine
