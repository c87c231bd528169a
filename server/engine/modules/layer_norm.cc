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
    const int64_t rows = x.numel() / features_;
    Tensor y = Tensor::Empty(DType::kF32, x.shape());
    mean_ = Tensor::Empty(DType::kF32, {rows});
    var_ = Tensor::Empty(DType::kF32, {rows});
    QTRAIN_RETURN_IF_ERROR(ctx.backend->LayerNormFwd(
        rows, features_, eps_, x.data<float>(), scale_.value.data<float>(),
        bias_.value.data<float>(), y.data<float>(), mean_.data<float>(), var_.data<float>()));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    const int64_t rows = dy.numel() / features_;
    Tensor dx = Tensor::Empty(DType::kF32, dy.shape());
    Tensor dscale = Tensor::Empty(DType::kF32, {features_}), dbias = dscale;
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->LayerNormBwd(rows, features_, eps_, input_.data<float>(), mean_.data<float>(),
                                  var_.data<float>(), scale_.value.data<float>(), dy.data<float>(),
                                  dx.data<float>(), dscale.data<float>(), dbias.data<float>()));
    for (int64_t j = 0; j < features_; ++j) {
      scale_.grad.data<float>()[j] += dscale.data<float>()[j];
      bias_.grad.data<float>()[j] += dbias.data<float>()[j];
    }
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
  Tensor input_, mean_, var_;
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
