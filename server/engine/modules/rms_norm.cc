// RMSNorm (Flax RMSNorm, Llama's LlamaRMSNorm): x / sqrt(mean(x²) + eps) · scale over the last
// axis. Float, never quantized.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

// y = x / sqrt(mean(x²) + eps) · scale. oneDNN 2.6 has no RMS normalization: plain loops.
class RmsNorm final : public Module {
 public:
  RmsNorm(std::string path, int64_t features, float eps)
      : Module(std::move(path)), features_(features), eps_(eps) {
    scale_ = MakeParam(ChildPath("scale"), Constant({features}, 1.0f), "weight");
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, features_, 2));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, ctx.backend->RmsNorm(eps_, x, scale_.value, saved_));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    absl::StatusOr<Tensor> dx = ctx.backend->NormGrad(Backend::NormKind::kRms, eps_, input_, saved_,
                                                      scale_.value, dy, scale_.grad, nullptr);
    input_ = Tensor();
    return dx;
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&scale_); }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string ms = g.Op("ReduceMean", {g.Op("Mul", {x, x}, path())}, path(),
                                {OnnxGraph::IntsAttr("axes", {-1})});
    const std::string rms =
        g.Op("Sqrt", {g.Op("Add", {ms, g.Scalar("eps", eps_)}, path())}, path());
    return g.Op("Mul", {g.Op("Div", {x, rms}, path()), g.Param(scale_)}, path());
  }

 private:
  int64_t features_;
  float eps_;
  Param scale_;
  Tensor input_;
  Backend::NormSaved saved_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildRmsNorm(const proto::Module& m, ModuleSite& site) {
  QTRAIN_ASSIGN_OR_RETURN(const float eps, NormEpsilon(site, m.rms_norm().epsilon()));
  return site.Allocate(
      [&] { return std::make_unique<RmsNorm>(site.path(), site.shape().back(), eps); });
}

}  // namespace

extern const ModuleKind kRmsNormKind = {proto::Module::kRmsNorm, "rms_norm", "RMSNorm",
                                        FlattenUse::kBreaks, BuildRmsNorm};

}  // namespace qtrain::engine
